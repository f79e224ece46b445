"""Sphinx configuration of reaper's documentation (doc/).

Built with warnings as errors: ``tox -e docs``, or
``sphinx-build -W -b html doc doc/build/html`` (and ``-b man`` for the man pages);
tests/docs/test_docs_build.py builds both in the test run.
"""
from __future__ import annotations

import configparser
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))       # the reaper package of this tree

_cfg = configparser.ConfigParser()
_cfg.read(os.path.join(HERE, "..", "setup.cfg"))

project = "reaper"
author = "reaper maintainers"
copyright = "reaper maintainers, Apache-2.0"   # noqa: A001 - Sphinx's name
release = version = _cfg["metadata"]["version"]

extensions = [
    "myst_parser",                  # Markdown pages (the generated fault matrix)
    "oslo_config.sphinxext",        # .. show-options:: reaper
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["build", "_build", "Thumbs.db", ".DS_Store"]
myst_enable_extensions = ["deflist"]
myst_heading_anchors = 3
nitpicky = False
html_theme = "alabaster"
html_static_path: list[str] = []

# sphinx-build -b man: one page per command, section 8 (system administration).
man_pages = [
    ("man/reaper-agent", "reaper-agent",
     "reconcile this compute host with the Nova database, as a service", [author], 8),
    ("man/reaper-manage", "reaper-manage",
     "one-shot passes, approvals, audit-log reports and the nova-compute log watcher",
     [author], 8),
    ("man/reaper-ctl", "reaper-ctl", "ask reaper agents over RPC", [author], 8),
]
man_show_urls = False
