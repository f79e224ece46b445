"""The netlink dump on this host's own namespace (RTM_GETLINK needs no privilege),
with whatever pyroute2 is installed: the fast decoder where pyroute2's internals
are as it expects, pyroute2's public API where they are not (the floor run, on
pyroute2 0.7.2, takes this path), and both read the same."""
from __future__ import annotations

import pyroute2
import pytest

from reaper import exception
from reaper.kinds.network import collector as net_inv


def by_index(links):
    return {d["index"]: d for d in links}


def test_dump_reads_the_loopback_device():
    nl = net_inv.Netlink()
    try:
        lo = by_index(nl.dump())[1]
    finally:
        nl.close()
    assert lo["ifname"] == "lo" and nl.decoder in ("raw", "fast", "pyroute2")
    assert net_inv.OPERSTATES[lo["operstate"]] in ("unknown", "up")


def test_public_api_fallback_reads_what_the_fast_decoder_reads():
    fast, slow = net_inv.Netlink(raw=False), net_inv.Netlink(fast=False)
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
    nl = net_inv.Netlink(raw=False)
    try:
        nl.dump()
        ipr = nl._ipr
        marshal = getattr(getattr(ipr, "asyncore", None), "marshal", None) or \
            getattr(ipr, "marshal", None)
        installed = marshal is not None and net_inv._LinkMsg in marshal.msg_map.values()
        assert installed == (nl.decoder == "fast")
    finally:
        nl.close()


# --------------------------------------------------------------------------
# The dump on a plain netlink socket
# --------------------------------------------------------------------------

def test_raw_dump_reads_what_pyroute2_reads():
    raw, slow = net_inv.Netlink(), net_inv.Netlink(fast=False)
    try:
        a, b = by_index(raw.dump()), by_index(slow.dump())
    finally:
        raw.close()
        slow.close()
    assert raw.decoder == "raw" and slow.decoder == "pyroute2"
    common = set(a) & set(b)
    assert 1 in common
    for i in common:
        if a[i].get("ifname") == b[i].get("ifname"):
            assert a[i] == b[i], (a[i], b[i])


def _nlmsg(typ: int, seq: int, payload: bytes = b"", flags: int = 0) -> bytes:
    import struct
    body = payload + b"\0" * (-len(payload) % 4)
    return struct.pack("=IHHII", 16 + len(payload), typ, flags, seq, 0) + body


def _newlink(seq: int, index: int, name: str, flags: int = 0) -> bytes:
    import struct
    ifname = name.encode() + b"\0"
    nla = struct.pack("=HH", 4 + len(ifname), net_inv.IFLA_IFNAME) + ifname
    nla += b"\0" * (-len(nla) % 4)
    return _nlmsg(16, seq, struct.pack("=BxHiII", 0, 1, index, 0, 0) + nla, flags)


class FakeSock:
    """Answers a dump request with canned buffers (one recv each)."""

    def __init__(self, *buffers: bytes):
        self.buffers = list(buffers)
        self.sent = []

    def send(self, data):
        self.sent.append(bytes(data))
        return len(data)

    def recv_into(self, buf):
        data = self.buffers.pop(0)
        buf[:len(data)] = data
        return len(data)


def test_raw_dump_decodes_multipart_answers_and_skips_other_sequences():
    sock = FakeSock(_newlink(7, 1, "lo") + _newlink(6, 9, "stale"),
                    _newlink(7, 2, "tapbe000001-01") + _nlmsg(3, 7, b"\0" * 4))
    links = net_inv.raw_dump(sock, 7)
    assert links == [{"index": 1, "ifname": "lo"}, {"index": 2, "ifname": "tapbe000001-01"}]
    import struct
    length, typ, flags, seq, _ = struct.unpack_from("=IHHII", sock.sent[0])
    assert typ == 18 and seq == 7 and flags == 0x301 and length == len(sock.sent[0])


def test_raw_dump_interrupted_is_none_so_the_caller_dumps_again():
    sock = FakeSock(_newlink(3, 1, "lo", flags=0x10) + _nlmsg(3, 3, b"\0" * 4, flags=0x10))
    assert net_inv.raw_dump(sock, 3) is None


def test_raw_dump_kernel_error_raises_netlink_error():
    import struct

    from pyroute2.netlink.exceptions import NetlinkError
    sock = FakeSock(_nlmsg(2, 5, struct.pack("=i", -1) + b"\0" * 16))
    with pytest.raises(NetlinkError):
        net_inv.raw_dump(sock, 5)


def test_raw_dump_malformed_message_is_an_os_error():
    import struct
    sock = FakeSock(struct.pack("=IHHII", 8, 16, 0, 1, 0))
    with pytest.raises(OSError):
        net_inv.raw_dump(sock, 1)


def test_interrupted_three_times_is_unavailable_not_a_partial_list():
    nl = net_inv.Netlink()

    class Always(FakeSock):
        def recv_into(self, buf):
            seq = __import__("struct").unpack_from("=IHHII", self.sent[-1])[3]
            data = (_newlink(seq, 1, "lo", flags=0x10)
                    + _nlmsg(3, seq, b"\0" * 4, flags=0x10))
            buf[:len(data)] = data
            return len(data)

    nl._raw_sock, nl._raw_ino = Always(), None
    with pytest.raises(exception.NetlinkUnavailable, match="interrupted"):
        nl.dump()
    nl._raw_sock = None
    nl.close()
