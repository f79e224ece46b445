"""Collector of the Linux side of Nova's VIFs: tap, qbr, qvb and qvo devices.

Read-only. One rtnetlink dump (``RTM_GETLINK``, statistics skipped) per pass, in
the host's network namespace or in ``[network] namespace``, on a plain netlink
socket that pyroute2 opens in the namespace (``raw_dump``; pyroute2's own dump
loop costs more per message than decoding it), or through pyroute2's IPRoute
where that socket cannot be had.
Devices named like a Nova VIF become records (``tap``/``qbr``/``qvb``/``qvo``
followed by the first 11 characters of a Neutron port id, 14 characters in all),
and so does every device stacked on or enslaved to one of them (a macvlan or
macvtap whose IFLA_LINK is a ``qvo``, a vlan on a ``tap``, a vxlan bound to one, a
port of a ``qbr``): they are users of Nova's devices, which the planner must
see to keep a VIF whole. The rest of the dump is used only to name masters, links
and bridge ports, and is not listed.

pyroute2's generic decoder builds an object for each of the ~40 attributes of
every link, which costs ~0.4 ms per device (1.7 s for 4,000 devices); the dump
here is decoded by a message class that reads only the seven attributes the
reaper needs (name, MAC, link, master, operstate, carrier, kind, link netnsid,
and a vxlan's underlay device) straight from the buffer, ~10x faster. ``decode_fast_equals_pyroute2`` in the
functional tests checks it against pyroute2's own decoder on a real dump.
The fast decoder plugs into pyroute2's internals (its message classes and the
socket's message map, which moved between 0.7 and 0.9); where they are not as
expected, the dump is read through pyroute2's public API (``get_attr``) instead,
slower but the same dicts (``link_from_message``).

The same handle deletes devices for the unplug step (``delete``, ``set_down``).
"""
from __future__ import annotations

import errno
import os
import re
import socket
import struct
import threading

from oslo_log import log as logging
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

try:    # pyroute2 internals the fast decoder builds on; without them: the public API
    from pyroute2.netlink import nlmsg
    from pyroute2.netlink.rtnl import RTM_NEWLINK
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfbase
except ImportError:     # pragma: no cover - depends on the pyroute2 release
    nlmsg = ifinfbase = RTM_NEWLINK = None

from reaper import exception
from reaper.kinds.network.objects import NetDevice
from reaper.objects.host import CollectorResult

LOG = logging.getLogger(__name__)

KIND = "vif"


# tap/qbr/qvb/qvo + 8 hex, '-', 2 hex: the first 11 characters of a port uuid.
NAME_RE = re.compile(r"^(tap|qbr|qvb|qvo)([0-9a-f]{8}-[0-9a-f]{2})$")
PREFIX_LEN = 11
ROLES = ("tap", "qbr", "qvb", "qvo")

OPERSTATES = {0: "unknown", 1: "notpresent", 2: "down", 3: "lowerlayerdown",
              4: "testing", 5: "dormant", 6: "up"}
# RTEXT_FILTER_SKIP_STATS: the kernel leaves out IFLA_STATS/IFLA_STATS64.
_SKIP_STATS = 1 << 3

_HDR = struct.Struct("=HH").unpack_from
_U32 = struct.Struct("=I").unpack_from
_S32 = struct.Struct("=i").unpack_from
_NLA_TYPE_MASK = 0x3FFF     # without NLA_F_NESTED / NLA_F_NET_BYTEORDER

IFLA_ADDRESS, IFLA_IFNAME, IFLA_LINK, IFLA_MASTER = 1, 3, 5, 10
IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_CARRIER, IFLA_LINK_NETNSID = 16, 18, 33, 37
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
IFLA_VXLAN_LINK = 3         # in a vxlan's IFLA_INFO_DATA: its underlay device
_WANTED = frozenset({IFLA_ADDRESS, IFLA_IFNAME, IFLA_LINK, IFLA_MASTER, IFLA_OPERSTATE,
                     IFLA_LINKINFO, IFLA_CARRIER, IFLA_LINK_NETNSID})


def _cstr(data, start: int, end: int) -> str:
    return bytes(data[start:end]).split(b"\0", 1)[0].decode("utf-8", "replace")


def _nested_u32(data, start: int, stop: int, want: int) -> int | None:
    o = start
    while o + 4 <= stop:
        length, typ = _HDR(data, o)
        if length < 4:
            return None
        if typ & _NLA_TYPE_MASK == want and length >= 8:
            return _U32(data, o + 4)[0]
        o += (length + 3) & ~3
    return None


def decode_link_attrs(data, offset: int, end: int) -> dict:
    """The attributes the reaper reads of one RTM_NEWLINK, from its NLAs at
    ``data[offset:end]``: a plain dict (ifname, mac, link, master, operstate,
    carrier, netnsid, kind, vxlan_link; absent keys: attribute not sent)."""
    last = end - 4
    hdr, want = _HDR, _WANTED
    out = {}
    while offset <= last:
        length, typ = hdr(data, offset)
        if length < 4:
            break
        typ &= _NLA_TYPE_MASK
        if typ in want:
            p, stop = offset + 4, min(offset + length, end)
            if typ == IFLA_IFNAME:
                out["ifname"] = _cstr(data, p, stop)
            elif typ == IFLA_ADDRESS:
                out["mac"] = bytes(data[p:stop]).hex(":")
            elif typ == IFLA_LINK:
                out["link"] = _U32(data, p)[0]
            elif typ == IFLA_MASTER:
                out["master"] = _U32(data, p)[0]
            elif typ == IFLA_OPERSTATE:
                out["operstate"] = data[p]
            elif typ == IFLA_CARRIER:
                out["carrier"] = data[p]
            elif typ == IFLA_LINK_NETNSID:
                out["netnsid"] = _S32(data, p)[0]
            else:       # IFLA_LINKINFO: its IFLA_INFO_KIND (and a vxlan's device)
                o = p
                while o + 4 <= stop:
                    ilen, ityp = hdr(data, o)
                    if ilen < 4:
                        break
                    ityp &= _NLA_TYPE_MASK
                    if ityp == IFLA_INFO_KIND:
                        out["kind"] = _cstr(data, o + 4, min(o + ilen, stop))
                        if out["kind"] != "vxlan":
                            break
                    elif ityp == IFLA_INFO_DATA and out.get("kind") == "vxlan":
                        dev = _nested_u32(data, o + 4, min(o + ilen, stop),
                                          IFLA_VXLAN_LINK)
                        if dev:
                            out["vxlan_link"] = dev
                        break
                    o += (ilen + 3) & ~3
        offset += (length + 3) & ~3
    return out


class _LinkMsg(nlmsg if nlmsg is not None else dict):
    """RTM_NEWLINK decoded into ``msg["reaper"]``, a plain dict of what we need."""

    fields = getattr(ifinfbase, "fields", ())
    nla_map = ((IFLA_IFNAME, "IFLA_IFNAME", "asciiz"),)   # non-empty: NLAs get decoded

    def decode_nlas(self, offset):
        dict.__setitem__(self, "reaper", decode_link_attrs(self.data, offset,
                                                           self.offset + self.length))


_OPERSTATE_CODES = {name: code for code, name in OPERSTATES.items()}


def link_from_message(m) -> dict:
    """The dict ``_LinkMsg`` makes, from a message pyroute2 decoded itself (its
    public ``get_attr``): the fallback when the fast decoder cannot be installed."""
    out = {"index": m["index"]}
    for key, attr in (("ifname", "IFLA_IFNAME"), ("mac", "IFLA_ADDRESS"),
                      ("link", "IFLA_LINK"), ("master", "IFLA_MASTER"),
                      ("carrier", "IFLA_CARRIER"), ("netnsid", "IFLA_LINK_NETNSID")):
        value = m.get_attr(attr)
        if value is not None:
            out[key] = value
    state = m.get_attr("IFLA_OPERSTATE")
    if state is not None:       # pyroute2 names it ("UP"); the fast decoder keeps the code
        out["operstate"] = (_OPERSTATE_CODES.get(state.lower(), 0) if isinstance(state, str)
                            else int(state))
    info = m.get_attr("IFLA_LINKINFO")
    kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
    if kind is not None:
        out["kind"] = kind
        data = info.get_attr("IFLA_INFO_DATA") if kind == "vxlan" else None
        dev = data.get_attr("IFLA_VXLAN_LINK") if hasattr(data, "get_attr") else None
        if dev:
            out["vxlan_link"] = dev
    return out


def install_fast_decoder(ipr) -> bool:
    """Make ``ipr`` decode links with ``_LinkMsg``: its own copy of the message map,
    found where this pyroute2 keeps it (``ipr.asyncore.marshal`` from 0.8,
    ``ipr.marshal`` before). False, and nothing changed, when it is not there."""
    if nlmsg is None or RTM_NEWLINK is None or not getattr(ifinfbase, "fields", None):
        return False
    for owner in (getattr(ipr, "asyncore", None), ipr):
        marshal = getattr(owner, "marshal", None)
        msg_map = getattr(marshal, "msg_map", None)
        if isinstance(msg_map, dict) and RTM_NEWLINK in msg_map:
            try:
                marshal.msg_map = {**msg_map, RTM_NEWLINK: _LinkMsg}
            except (AttributeError, TypeError):
                return False
            return True
    return False


# --------------------------------------------------------------------------
# The dump on a plain rtnetlink socket
# --------------------------------------------------------------------------

_NLMSG_HDR = struct.Struct("=IHHII")        # length, type, flags, seq, port id
_NLMSG_ERROR, _NLMSG_DONE, _RTM_NEWLINK, _RTM_GETLINK = 2, 3, 16, 18
_NLM_F_REQUEST, _NLM_F_DUMP, _NLM_F_DUMP_INTR = 0x1, 0x300, 0x10
_IFLA_EXT_MASK = 29
_IFINFOMSG_LEN = 16                          # family, pad, type, index, flags, change
_RECV_BUF = 1 << 20


def _open_raw(namespace: str | None) -> socket.socket:
    """An rtnetlink socket in ``namespace`` (None: ours); pyroute2 only makes it
    there (``netns.create_socket``), nothing of it is used after."""
    if namespace:
        from pyroute2 import netns as pnetns
        sock = pnetns.create_socket(namespace, socket.AF_NETLINK, socket.SOCK_RAW,
                                    _NETLINK_ROUTE)
    else:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_ROUTE)
    try:
        sock.bind((0, 0))
    except OSError:
        sock.close()
        raise
    return sock


_NETLINK_ROUTE = 0


def raw_dump(sock: socket.socket, seq: int) -> list[dict] | None:
    """One RTM_GETLINK dump (statistics skipped) on ``sock``: the links as
    ``Netlink.dump`` returns them, decoded straight from the received buffers by
    ``decode_link_attrs``. None when the kernel flags the dump as interrupted (the
    links changed meanwhile: the caller dumps again). Raises NetlinkError for an
    error the kernel answers, OSError for a broken socket."""
    body = (struct.pack("=BxHiII", socket.AF_UNSPEC, 0, 0, 0, 0)
            + struct.pack("=HHI", 8, _IFLA_EXT_MASK, _SKIP_STATS))
    sock.send(_NLMSG_HDR.pack(16 + len(body), _RTM_GETLINK, _NLM_F_REQUEST | _NLM_F_DUMP,
                              seq, 0) + body)
    buf = bytearray(_RECV_BUF)
    view = memoryview(buf)
    links, interrupted = [], False
    hdr, s32 = _NLMSG_HDR.unpack_from, _S32
    while True:
        size = sock.recv_into(buf)
        if size == 0:
            raise OSError(errno.EPIPE, "netlink socket closed during a dump")
        off = 0
        while off + 16 <= size:
            length, typ, flags, mseq, _ = hdr(buf, off)
            if length < 16 or off + length > size:
                raise OSError(errno.EPROTO, f"malformed netlink message ({length} bytes)")
            if mseq == seq:
                if flags & _NLM_F_DUMP_INTR:
                    interrupted = True
                if typ == _NLMSG_DONE:
                    return None if interrupted else links
                if typ == _NLMSG_ERROR:
                    code = -s32(buf, off + 16)[0]
                    if code:
                        raise NetlinkError(code, os.strerror(code))
                elif typ == _RTM_NEWLINK and length >= 16 + _IFINFOMSG_LEN:
                    index = s32(buf, off + 20)[0]
                    attrs = decode_link_attrs(view, off + 16 + _IFINFOMSG_LEN, off + length)
                    links.append({"index": index, **attrs})
            off += (length + 3) & ~3


class Netlink:
    """A long-lived rtnetlink socket in ``namespace`` (None: our own).

    Reopened when the namespace was deleted and created again (its inode changed)
    or after an error, so a pass never reads a namespace that no longer exists.
    Safe to share between threads.
    """

    def __init__(self, namespace: str | None = None, fast: bool = True, raw: bool = True):
        self.namespace = namespace or None
        self.fast = fast        # False: pyroute2's own decoder (tests compare the two)
        # Dumps on a plain rtnetlink socket (raw_dump); False, or where pyroute2 cannot
        # make a socket in a namespace: through pyroute2's IPRoute.
        self.raw = raw and fast
        self.decoder = None     # "raw", "fast" or "pyroute2" once a dump was made
        self._ext_mask = True   # the kernel leaves statistics out of the dump
        self._ipr = None
        self._ns_ino = None
        self._raw_sock = None
        self._raw_ino = None
        self._seq = 0
        self._lock = threading.Lock()

    def _ns_path(self) -> str:
        return os.path.join("/var/run/netns", self.namespace)

    def _current_ino(self):
        if self.namespace is None:
            return None
        try:
            return os.stat(self._ns_path()).st_ino
        except FileNotFoundError:
            raise exception.NetlinkUnavailable(f"network namespace {self.namespace!r} does not "
                                               f"exist") from None

    def _socket(self):
        ino = self._current_ino()
        if self._ipr is not None and ino == self._ns_ino:
            return self._ipr
        self._close()
        try:
            # flags=0: never create the namespace (pyroute2's default would).
            ipr = IPRoute(netns=self.namespace, flags=0) if self.namespace else IPRoute()
        except OSError as e:
            raise exception.NetlinkUnavailable(f"cannot open rtnetlink in namespace "
                                               f"{self.namespace or '(host)'}: {e}") from None
        # This socket's own copy of the message map: the fast decoder for links only.
        fast = self.fast and install_fast_decoder(ipr)
        if self.fast and not fast and self.decoder is None:
            LOG.info("pyroute2 %s: its internals are not where the fast link decoder "
                     "expects them; dumping links through its public API",
                     getattr(__import__("pyroute2"), "__version__", "?"))
        self.decoder = "fast" if fast else "pyroute2"
        self._ipr, self._ns_ino = ipr, ino
        return ipr

    def _close(self):
        if self._ipr is not None:
            try:
                self._ipr.close()
            except Exception:  # noqa: BLE001 - closing a broken socket
                pass
        self._ipr = None

    def _close_raw(self):
        if self._raw_sock is not None:
            try:
                self._raw_sock.close()
            except OSError:
                pass
        self._raw_sock = None

    def close(self) -> None:
        with self._lock:
            self._close()
            self._close_raw()

    def _raw_socket(self):
        ino = self._current_ino()
        if self._raw_sock is not None and ino == self._raw_ino:
            return self._raw_sock
        self._close_raw()
        try:
            sock = _open_raw(self.namespace)
        except (ImportError, AttributeError, TypeError) as e:
            LOG.info("pyroute2 %s cannot make a plain netlink socket in a namespace "
                     "(%s): dumping links through IPRoute",
                     getattr(__import__("pyroute2"), "__version__", "?"), e)
            self.raw = False
            return None
        except OSError as e:
            raise exception.NetlinkUnavailable(f"cannot open rtnetlink in namespace "
                                               f"{self.namespace or '(host)'}: {e}") from None
        self._raw_sock, self._raw_ino = sock, ino
        return sock

    def _dump_raw(self) -> list[dict] | None:
        """The links through raw_dump; None when the raw socket cannot be had."""
        for attempt in (1, 2):
            sock = self._raw_socket()
            if sock is None:
                return None
            try:
                for _ in range(3):
                    self._seq = self._seq % 0x7FFFFFFF + 1
                    links = raw_dump(sock, self._seq)
                    if links is not None:
                        self.decoder = "raw"
                        return links
                raise exception.NetlinkUnavailable("the link dump was interrupted three times in a "
                                                   "row (links changing)")
            except NetlinkError:
                raise
            except OSError as e:    # a broken socket: reopen once
                self._close_raw()
                if attempt == 2:
                    raise exception.NetlinkUnavailable(f"netlink dump failed: {e}") from None
        raise AssertionError("unreachable")

    def dump(self) -> list[dict]:
        """Every link: dicts with index, ifname, kind, mac, link, master, operstate,
        carrier, netnsid (absent keys: attribute not sent)."""
        with self._lock:
            if self.raw:
                links = self._dump_raw()
                if links is not None:
                    return links
            for attempt in (1, 2):
                ipr = self._socket()
                try:
                    msgs = ipr.get_links(ext_mask=_SKIP_STATS) if self._ext_mask else []
                    if not msgs:
                        # Every namespace has lo, so an empty dump is pyroute2 before
                        # 0.8 taking ext_mask for a userspace filter (no link has such
                        # a field): dump without it, statistics and all, from now on.
                        self._ext_mask = False
                        msgs = ipr.get_links()
                    # a message the fast decoder did not see decodes the slow way
                    return [{"index": m["index"], **m["reaper"]} if "reaper" in m
                            else link_from_message(m) for m in msgs]
                except NetlinkError:
                    raise
                except Exception as e:  # noqa: BLE001 - a broken socket: reopen once
                    self._close()
                    if attempt == 2:
                        raise exception.NetlinkUnavailable(f"netlink dump failed: {e}") from None
        raise AssertionError("unreachable")

    def set_down(self, ifindex: int) -> bool:
        """False when the device is already gone."""
        return self._link("set", index=ifindex, state="down")

    def delete(self, ifindex: int) -> bool:
        """Delete a device; False when it is already gone (idempotent)."""
        return self._link("del", index=ifindex)

    def _link(self, command: str, **kw) -> bool:
        with self._lock:
            ipr = self._socket()
            try:
                ipr.link(command, **kw)
            except NetlinkError as e:
                if e.code in (errno.ENODEV, errno.ENOENT):
                    return False
                raise
            return True


def links_to_devices(links: list[dict]) -> tuple[NetDevice, ...]:
    """Pure: the VIF-named devices of a dump, with master, link, peer and ports
    resolved, plus every other device stacked on or enslaved to one of them (its
    IFLA_LINK, a vxlan's device, or its master is a VIF-named device)."""
    by_index = {link["index"]: link for link in links}
    ports: dict[int, list[str]] = {}
    for link in links:
        master = link.get("master")
        if master:
            ports.setdefault(master, []).append(link.get("ifname", ""))

    def name_of(index) -> str | None:
        other = by_index.get(index or 0)
        return other.get("ifname") if other else None

    out = []
    for link in links:
        name = link.get("ifname") or ""
        m = NAME_RE.match(name)
        kind = link.get("kind")
        master = name_of(link.get("master"))
        # IFLA_LINK_NETNSID: the link is an ifindex of another namespace.
        lower = None if link.get("netnsid") is not None else (
            name_of(link.get("link")) or name_of(link.get("vxlan_link")))
        if m is None:
            if not (NAME_RE.match(lower or "") or NAME_RE.match(master or "")):
                continue        # neither Nova's nor stacked on Nova's: not listed
            role = prefix = ""
        else:
            role, prefix = m.group(1), m.group(2)
        peer = peer_nsid = None
        if kind == "veth":
            peer_nsid = link.get("netnsid")
            peer = lower
        carrier = link.get("carrier")
        out.append(NetDevice(
            name=name, ifindex=link["index"], role=role, port_prefix=prefix,
            kind=kind, mac=link.get("mac"),
            operstate=OPERSTATES.get(link.get("operstate"), None),
            carrier=None if carrier is None else bool(carrier),
            master=master, peer=peer, peer_netnsid=peer_nsid,
            ports=tuple(sorted(ports.get(link["index"], ()))) if kind == "bridge" else (),
            link=lower))
    return tuple(out)


def collect(handle: Netlink | None) -> CollectorResult:
    """One dump; ``ok=False`` (never an exception) when the namespace or netlink fails."""
    if handle is None:
        return CollectorResult(KIND, False, error="no netlink handle")
    try:
        links = handle.dump()
    except (exception.NetlinkUnavailable, NetlinkError, OSError) as e:
        return CollectorResult(KIND, False, error=f"netlink: {e}")
    return CollectorResult(KIND, True, links_to_devices(links))
