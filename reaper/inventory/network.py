"""Collector of the Linux side of Nova's VIFs: tap, qbr, qvb and qvo devices.

Read-only. One rtnetlink dump (``RTM_GETLINK``, statistics skipped) per pass, in
the host's network namespace or in ``[network] namespace``, through pyroute2.
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
import struct
import threading

from oslo_config import cfg
from oslo_log import log as logging
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

try:    # pyroute2 internals the fast decoder builds on; without them: the public API
    from pyroute2.netlink import nlmsg
    from pyroute2.netlink.rtnl import RTM_NEWLINK
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfbase
except ImportError:     # pragma: no cover - depends on the pyroute2 release
    nlmsg = ifinfbase = RTM_NEWLINK = None

from reaper.records import CollectorResult, NetDevice

LOG = logging.getLogger(__name__)
CONF = cfg.CONF

KIND = "vif"

network_opts = [
    cfg.BoolOpt("enabled", default=True,
                help="Look after Nova's network plumbing: find leaked tap/qbr/qvb/qvo "
                     "devices and integration bridge ports (R11) and unplug the VIFs of "
                     "every instance teardown. Turn off on hosts without Open vSwitch."),
    cfg.StrOpt("namespace",
               help="Network namespace (a name under /var/run/netns) holding the VIF "
                    "devices (tap, qbr, qvb, qvo). Unset: the agent's own namespace, "
                    "where nova-compute and os-vif plug them."),
]
CONF.register_opts(network_opts, group="network")

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


class _LinkMsg(nlmsg if nlmsg is not None else dict):
    """RTM_NEWLINK decoded into ``msg["reaper"]``, a plain dict of what we need."""

    fields = getattr(ifinfbase, "fields", ())
    nla_map = ((IFLA_IFNAME, "IFLA_IFNAME", "asciiz"),)   # non-empty: NLAs get decoded

    def decode_nlas(self, offset):
        data = self.data
        end = self.offset + self.length
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
        dict.__setitem__(self, "reaper", out)


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


class NetlinkUnavailable(Exception):
    pass


class Netlink:
    """A long-lived rtnetlink socket in ``namespace`` (None: our own).

    Reopened when the namespace was deleted and created again (its inode changed)
    or after an error, so a pass never reads a namespace that no longer exists.
    Safe to share between threads.
    """

    def __init__(self, namespace: str | None = None, fast: bool = True):
        self.namespace = namespace or None
        self.fast = fast        # False: pyroute2's own decoder (tests compare the two)
        self.decoder = None     # "fast" or "pyroute2" once a socket is open
        self._ext_mask = True   # the kernel leaves statistics out of the dump
        self._ipr = None
        self._ns_ino = None
        self._lock = threading.Lock()

    def _ns_path(self) -> str:
        return os.path.join("/var/run/netns", self.namespace)

    def _current_ino(self):
        if self.namespace is None:
            return None
        try:
            return os.stat(self._ns_path()).st_ino
        except FileNotFoundError:
            raise NetlinkUnavailable(f"network namespace {self.namespace!r} does not "
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
            raise NetlinkUnavailable(f"cannot open rtnetlink in namespace "
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

    def close(self) -> None:
        with self._lock:
            self._close()

    def dump(self) -> list[dict]:
        """Every link: dicts with index, ifname, kind, mac, link, master, operstate,
        carrier, netnsid (absent keys: attribute not sent)."""
        with self._lock:
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
                        raise NetlinkUnavailable(f"netlink dump failed: {e}") from None
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
    except (NetlinkUnavailable, NetlinkError, OSError) as e:
        return CollectorResult(KIND, False, error=f"netlink: {e}")
    return CollectorResult(KIND, True, links_to_devices(links))
