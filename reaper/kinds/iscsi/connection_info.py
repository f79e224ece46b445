"""Cinder's iSCSI ``connection_info`` and the names in it: parsed, normalised. Pure.

A BDM's ``connection_info`` is JSON Nova stored from Cinder (``driver_volume_type``
``iscsi``/``iser``; single path ``target_portal/target_iqn/target_lun``, multipath
``target_portals/target_iqns/target_luns``); whatever it holds, hostile or truncated,
parses to a ``Conn`` (``error`` set) and never raises. CHAP credentials are never
copied out of it. Portals and iqns are compared in one canonical form
(``norm_portal``, ``norm_iqn``); by-path names and a domain's network disk sources
map to a ``TargetRef``.
"""
from __future__ import annotations

import dataclasses
import functools
import ipaddress
import json
import re
from typing import Any

from reaper import textmemo

DEFAULT_PORT = 3260
ISCSI_DRIVERS = frozenset({"iscsi", "iser"})
_BY_PATH_RE = re.compile(
    r"(?:^|/|-)ip-(?P<portal>.+?)-iscsi-(?P<iqn>.+)-lun-(?P<lun>\d+)(?:-part\d+)?$")


@functools.lru_cache(maxsize=65536)
def norm_portal(portal: str) -> str:
    """"10.0.0.1" / "10.0.0.1:3260,1" / "[FE80::1]:3260" / "fe80::1:3260" -> canonical."""
    p = portal.strip().lower().split(",", 1)[0]
    if p.startswith("["):
        addr, _, rest = p[1:].partition("]")
        port = rest[1:] if rest.startswith(":") and rest[1:] else str(DEFAULT_PORT)
        return f"[{addr}]:{port}"
    if p.count(":") == 0:
        return f"{p}:{DEFAULT_PORT}"
    if p.count(":") == 1:
        addr, port = p.split(":")
        return f"{addr}:{port or DEFAULT_PORT}"
    # Bare IPv6, as some Cinder drivers write "%s:%s" % (ip, port): the last group is
    # a port only if what precedes it is an address by itself ("fe80::1:3260");
    # "fe80::1" is an address with no port.
    addr, _, port = p.rpartition(":")
    if port.isdigit() and _is_ipv6(addr):
        return f"[{addr}]:{port}"
    return f"[{p}]:{DEFAULT_PORT}"


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
        return True
    except ValueError:
        return False


def norm_iqn(iqn: str) -> str:
    return iqn.strip().lower()      # RFC 3720: iSCSI names are case-insensitive


@dataclasses.dataclass(frozen=True)
class TargetRef:
    """(portal, iqn, lun) a BDM or domain names; None matches anything."""
    portal: str | None
    iqn: str | None
    lun: int | None

    def matches(self, portal: str, iqn: str, lun: int | None = None) -> bool:
        return ((self.portal is None or self.portal == portal)
                and (self.iqn is None or self.iqn == iqn)
                and (lun is None or self.lun is None or self.lun == lun))

    def as_dict(self) -> dict:
        return {"portal": self.portal, "iqn": self.iqn, "lun": self.lun}


@dataclasses.dataclass(frozen=True)
class Conn:
    """What a BDM's connection_info says about the host side, secrets left out."""
    driver: str | None
    refs: tuple[TargetRef, ...] = ()
    error: str | None = None
    empty: bool = False

    @property
    def iscsi(self) -> bool:
        return self.driver in ISCSI_DRIVERS


# Real connection_info is a few kB; anything this big is not one, and is not parsed.
MAX_CONNECTION_INFO = 1 << 20
_MAX_TARGETS = 64           # portals of one multipath volume
_MAX_NAME = 1024            # a portal or an iqn (iSCSI names are at most 223 bytes)
_MAX_LUN = 1 << 64


def _lun(value: Any) -> int:
    """An integer LUN, or a string of digits (some drivers write "1"); nothing else."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"LUN is a {type(value).__name__}, not an integer")
    if isinstance(value, str):
        if not value.strip().isdigit() or len(value) > 20:
            raise ValueError("LUN is not a number")
        value = int(value.strip())
    if not 0 <= value < _MAX_LUN:
        raise ValueError("LUN out of range")
    return value


def _name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_NAME:
        raise ValueError(f"{what} is not a usable string")
    return value


@textmemo.by_text
def parse_connection_info(text: str | None) -> Conn:
    """Never raises: unusable connection_info comes back with ``error`` set.
    Remembered by text (reaper.textmemo; Conn is immutable).

    Hostile or broken input (deep nesting that exhausts the recursion limit, huge
    values, wrong types) is unusable like garbage: the caller then keeps whatever
    the BDM might name."""
    try:
        return _parse_connection_info(text)
    except (RecursionError, MemoryError) as e:
        return Conn(driver=None, error=f"connection_info could not be parsed "
                                       f"({e.__class__.__name__}: nested or large beyond "
                                       f"limits)")
    except Exception as e:  # noqa: BLE001 - whatever it is, it is unusable
        return Conn(driver=None, error=f"unusable connection_info ({e.__class__.__name__})")


def _parse_connection_info(text: str | None) -> Conn:
    if text is None or (isinstance(text, (str, bytes)) and not text.strip()):
        return Conn(driver=None, empty=True)
    if not isinstance(text, (str, bytes)):
        return Conn(driver=None, error=f"connection_info is a {type(text).__name__}, "
                                       f"not JSON text")
    if len(text) > MAX_CONNECTION_INFO:
        return Conn(driver=None, error=f"connection_info is too large ({len(text)} "
                                       f"characters, limit {MAX_CONNECTION_INFO})")
    try:
        ci = json.loads(text)
    except (TypeError, ValueError) as e:
        return Conn(driver=None, error=f"connection_info is not valid JSON ({e.__class__.__name__})")
    if not isinstance(ci, dict):
        return Conn(driver=None, error="connection_info is not a JSON object")
    driver = ci.get("driver_volume_type")
    if not isinstance(driver, str) or len(driver) > _MAX_NAME:
        return Conn(driver=None, error="connection_info has no driver_volume_type")
    driver = driver.lower()
    if driver not in ISCSI_DRIVERS:
        return Conn(driver=driver)
    data = ci.get("data")
    if not isinstance(data, dict):
        return Conn(driver=driver, error="iSCSI connection_info has no 'data' object")
    refs: list[TargetRef] = []
    try:
        portals = data.get("target_portals")
        if portals is not None:
            if not isinstance(portals, list) or not portals or len(portals) > _MAX_TARGETS:
                raise ValueError("target_portals is not a list of portals")
            portals = [_name(p, "a target portal") for p in portals]
            iqns = data.get("target_iqns")
            luns = data.get("target_luns")
            if iqns is not None:
                if not isinstance(iqns, list) or len(iqns) != len(portals):
                    raise ValueError("target_iqns does not match target_portals")
                iqns = [_name(i, "a target iqn") for i in iqns]
            if luns is not None and (not isinstance(luns, list) or len(luns) != len(portals)):
                raise ValueError("target_luns does not match target_portals")
            if luns is None:
                luns = [data.get("target_lun", 0)] * len(portals)
            for i, portal in enumerate(portals):
                # Without target_iqns, os-brick discovers which iqn each portal
                # serves: any iqn at that portal may be this volume's.
                refs.append(TargetRef(norm_portal(portal),
                                      norm_iqn(iqns[i]) if iqns else None, _lun(luns[i])))
        if data.get("target_portal") is not None or data.get("target_iqn") is not None:
            portal = _name(data.get("target_portal"), "target_portal")
            iqn = _name(data.get("target_iqn"), "target_iqn")
            ref = TargetRef(norm_portal(portal), norm_iqn(iqn), _lun(data.get("target_lun", 0)))
            if ref not in refs:
                refs.append(ref)
        if not refs:
            raise ValueError("no target_portal(s)/target_iqn(s) in data")
    except (TypeError, ValueError) as e:
        return Conn(driver=driver, error=f"unusable iSCSI connection_info: {e}")
    return Conn(driver=driver, refs=tuple(refs))


@functools.lru_cache(maxsize=65536)
def by_path_ref(path: str) -> TargetRef | None:
    """``/dev/disk/by-path/ip-<portal>-iscsi-<iqn>-lun-<n>`` -> its target."""
    m = _BY_PATH_RE.search(path)
    if not m:
        return None
    return TargetRef(norm_portal(m.group("portal")), norm_iqn(m.group("iqn")),
                     int(m.group("lun")))


def _network_ref(source: str) -> TargetRef | None:
    """libvirt's own iSCSI disks, as the domain collector renders them: "iscsi:<iqn>/<lun>"."""
    if not source.startswith("iscsi:"):
        return None
    name = source[len("iscsi:"):]
    iqn, _, lun = name.rpartition("/")
    if not iqn or not lun.isdigit():
        return TargetRef(None, norm_iqn(name), None)
    return TargetRef(None, norm_iqn(iqn), int(lun))
