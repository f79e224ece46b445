"""Every option of the reaper for oslo-config-generator (entry point ``oslo.config.opts``
``reaper``): the ``list_opts()`` of every module of this package, found by walking it,
so a new leaf module is listed without an edit here (as ``nova/conf/opts.py``).

Listing imports only this package's leaves: building the sample imports neither
libvirt, python-ovs, pyroute2 nor os-brick (os-brick's ``[os_brick]`` options
come from its own ``os_brick`` namespace in the generator's configuration).
"""
from __future__ import annotations

import collections
import importlib
import pkgutil

import reaper.conf

_SKIP = ("opts",)


def _leaf_modules():
    for info in sorted(pkgutil.iter_modules(reaper.conf.__path__), key=lambda i: i.name):
        if info.name in _SKIP or info.ispkg:
            continue
        mod = importlib.import_module(f"{reaper.conf.__name__}.{info.name}")
        if hasattr(mod, "list_opts"):
            yield mod


def list_opts() -> list[tuple[str, list]]:
    """(group, options) per group, groups in the order their leaves are found; the
    options of a group listed by several leaves are joined in that order."""
    groups: dict[str, list] = collections.OrderedDict()
    for mod in _leaf_modules():
        for group, opts in mod.list_opts():
            groups.setdefault(group, []).extend(opts)
    return list(groups.items())
