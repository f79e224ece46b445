"""reaper: reconcile a compute host's real state with the Nova database."""
