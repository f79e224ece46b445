"""Sphinx configuration of the release notes (reno): ``tox -e releasenotes``."""
project = "reaper release notes"
author = "reaper maintainers"
copyright = "reaper maintainers, Apache-2.0"   # noqa: A001 - Sphinx's name
extensions = ["reno.sphinxext"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
