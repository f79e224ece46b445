"""The long-running agent: schedule, sd_notify, signals, and the pass lock RPC shares."""
