"""The netlink dump on this host's own namespace (RTM_GETLINK needs no privilege),
with whatever pyroute2 is installed: the fast decoder where pyroute2's internals
are as it expects, pyroute2's public API where they are not (the floor run, on
pyroute2 0.7.2, takes this path), and both read the same."""
from __future__ import annotations

import pyroute2

from reaper.inventory import network as net_inv


def by_index(links):
    return {d["index"]: d for d in links}


def test_dump_reads_the_loopback_device():
    nl = net_inv.Netlink()
    try:
        lo = by_index(nl.dump())[1]
    finally:
        nl.close()
    assert lo["ifname"] == "lo" and nl.decoder in ("fast", "pyroute2")
    assert net_inv.OPERSTATES[lo["operstate"]] in ("unknown", "up")


def test_public_api_fallback_reads_what_the_fast_decoder_reads():
    fast, slow = net_inv.Netlink(), net_inv.Netlink(fast=False)
    try:
        a, b = by_index(fast.dump()), by_index(slow.dump())
    finally:
        fast.close()
        slow.close()
    assert slow.decoder == "pyroute2"
    common = set(a) & set(b)        # devices may come and go between the two dumps
    assert 1 in common
    for i in common:
        if a[i].get("ifname") == b[i].get("ifname"):
            assert a[i] == b[i], (pyroute2.__version__, a[i], b[i])


def test_fast_decoder_installs_on_this_pyroute2_or_falls_back_cleanly():
    """Where the internals are missing install_fast_decoder says so and changes nothing."""

    class Bare:
        pass

    assert net_inv.install_fast_decoder(Bare()) is False
    nl = net_inv.Netlink()
    try:
        nl.dump()
        ipr = nl._ipr
        marshal = getattr(getattr(ipr, "asyncore", None), "marshal", None) or \
            getattr(ipr, "marshal", None)
        installed = marshal is not None and net_inv._LinkMsg in marshal.msg_map.values()
        assert installed == (nl.decoder == "fast")
    finally:
        nl.close()
