"""reaper: reconcile a compute host's real state with the Nova database."""


def version_string() -> str:
    """The installed package's version (setup.cfg's ``version``, from its metadata:
    pbr is not used); "unknown" when the package is not installed (a bare source
    tree on ``PYTHONPATH``)."""
    from importlib import metadata
    try:
        return metadata.version("reaper")
    except metadata.PackageNotFoundError:
        return "unknown"
