"""Planner extension for iSCSI volumes: rule R12 (``leaked_iscsi``), the volume part of
every instance teardown (step 3, "disconnect volumes"), and R13 evidence.

Pure: records in, records out. ``extend`` is the ``iscsi`` kind's plan.

R12, per LUN of every iSCSI session on this host. A LUN is **in use**, and its
session is kept, when any of these holds:

* a live BDM (``block_device_mapping.deleted = 0``) of a *protected* instance
  references (portal, iqn, lun) in its ``connection_info`` (``driver_volume_type``
  ``iscsi``/``iser``; single path ``target_portal/target_iqn/target_lun``, multipath
  ``target_portals/target_iqns/target_luns``, all portals). Protected: a live row on
  our host, a live row with a migration touching our host in flight, or any instance
  seen locally (domain or directory) that no teardown of this plan removes;
* a disk of **any** domain on this host (Nova's or not, whatever its state) resolves
  to the LUN: its source is the disk, a partition of it, or a device stacked on it
  (``/dev/sdX``, ``/dev/sdXN``, a by-path/by-id/by-uuid link, ``-partN`` links,
  ``/dev/dm-N``, a mapper or LVM name), by the /dev links the collector found or by
  what the domain collector resolved the source to on this host (real path, device
  number), or names it by by-path (``ip-<portal>-iscsi-<iqn>-lun-<n>[-partN]``),
  except the domains this plan tears down: their devices go to their teardown;
* the LUN, any of its partitions, or anything stacked on them is open by a process,
  mounted (mountinfo, by device number) or swap, or held: by a device that is not a
  multipath map (dm-crypt, LVM, md, on the disk or on a partition), or by a multipath
  map that is itself open, mounted, swap, held or in a domain's XML.

A LUN with none of these is leaked. A session with no LUN at all, and a node record
with no session, are leaked when no protected BDM and no domain names their
(portal, iqn). Logging out of a session is allowed only when no LUN of its target is
in use and no protected BDM or domain names any LUN of it: otherwise only the leaked
LUN's devices are removed (multi-attach and shared targets keep their session).

Never touched at all, not even reported: flash (firmware) sessions, and the host's
own sessions: those whose target the boot firmware names (iBFT), and those with a
filesystem the host has mounted (the root, say, on LVM on a partition) or its swap on
a LUN or on anything stacked on one; nor the node records of a boot target.

Everything uncertain stays ``log``: the domain list unavailable, a migration touching
this host in flight, a protected BDM whose ``connection_info`` cannot be read or is
still empty (an attach in progress), whatever hostile JSON it holds. A session the
disconnect step found it could not log out by any means (no node record, and neither
os-brick nor a logout by its id worked: an ``IscsiOperatorNote``) is reported as
needing an operator, never planned again while that session lives.

Teardowns: after an evacuation the BDM describes the destination's connection, so an
instance's volumes are found from its own domain XML and this host's sysfs, never
from the BDM; for reclaim and running-deleted teardowns the instance's BDMs add the
LUNs they reference *and* that exist here. A LUN another instance still uses
(multi-attach) is left alone. CHAP credentials are never copied out of
``connection_info``.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import ipaddress
import json
import posixpath
import re
from typing import Any, Iterable

from reaper.planner import rules
from reaper.records import (
    Action, BlockPartition, Classification, DmMap, Domain, Finding, IscsiBootTarget,
    IscsiNode, IscsiOperatorNote, IscsiSession, Plan, ResourceKind, ScsiDevice,
    TeardownPlan,
)

KIND = "iscsi_session"
DEFAULT_PORT = 3260
ISCSI_DRIVERS = frozenset({"iscsi", "iser"})
# Teardowns whose volumes may also come from the instance's own BDMs (the row is on
# our host, or was); never evacuations, whose BDMs point at the destination.
BDM_TEARDOWNS = frozenset({Classification.RECLAIMABLE, Classification.RUNNING_DELETED})
_BY_PATH_RE = re.compile(
    r"(?:^|/|-)ip-(?P<portal>.+?)-iscsi-(?P<iqn>.+)-lun-(?P<lun>\d+)(?:-part\d+)?$")
_MAX_LISTED = 50

# reaper.inventory.libvirt.UNKNOWN_STATE: a domain whose XML could not be read.
UNREADABLE_DOMAIN_STATE = "unknown"


# --------------------------------------------------------------------------
# connection_info and names
# --------------------------------------------------------------------------

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


def parse_connection_info(text: str | None) -> Conn:
    """Never raises: unusable connection_info comes back with ``error`` set.

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


# --------------------------------------------------------------------------
# The host's iSCSI picture
# --------------------------------------------------------------------------

@dataclasses.dataclass
class Host:
    sessions: list[IscsiSession]
    nodes: list[IscsiNode]
    dms: dict[str, DmMap]
    devices: dict[str, tuple[IscsiSession, ScsiDevice]]
    path_index: dict[str, str]      # /dev path -> device, partition or stacked device name
    by_target: dict[tuple[str, str], IscsiSession] = dataclasses.field(default_factory=dict)
    parts: dict[str, BlockPartition] = dataclasses.field(default_factory=dict)
    boot: list[IscsiBootTarget] = dataclasses.field(default_factory=list)
    notes: dict[tuple[str, str, str], IscsiOperatorNote] = dataclasses.field(
        default_factory=dict)       # (portal, iqn, sid) -> why an operator must act
    by_devt: dict[str, str] = dataclasses.field(default_factory=dict)   # "8:17" -> "sdb1"
    # iqn -> (sid of the session that makes it the host's own, or None, why); lazily
    _own: dict[str, tuple[str | None, str]] | None = dataclasses.field(default=None,
                                                                       repr=False)

    @classmethod
    def from_items(cls, items: Iterable) -> "Host":
        sessions, nodes, dms, parts, boot, notes = [], [], {}, {}, [], {}
        for it in items:
            if isinstance(it, IscsiSession):
                sessions.append(it)
            elif isinstance(it, IscsiNode):
                nodes.append(it)
            elif isinstance(it, DmMap):
                dms[it.name] = it
            elif isinstance(it, BlockPartition):
                parts[it.name] = it
            elif isinstance(it, IscsiBootTarget):
                boot.append(it)
            elif isinstance(it, IscsiOperatorNote):
                notes[(norm_portal(it.portal), norm_iqn(it.iqn), str(it.sid))] = it
        devices, index, by_devt = {}, {}, {}
        for s in sessions:
            for d in s.devices:
                devices[d.name] = (s, d)
        for rec in (*(d for _, d in devices.values()), *parts.values(), *dms.values()):
            for p in rec.paths:
                index[p] = rec.name
            if rec.dev:
                by_devt[rec.dev] = rec.name
        by_target = {}
        for s in sessions:
            by_target.setdefault((norm_portal(s.portal), norm_iqn(s.iqn)), s)
        return cls(sessions, nodes, dms, devices, index, by_target, parts, boot, notes,
                   by_devt)

    def _lookup(self, path: str) -> str | None:
        p = posixpath.normpath(path) if path.startswith("/") else path
        hit = self.path_index.get(p)
        if hit is None and p.startswith("/dev/") and "/" not in p[5:]:
            name = p[5:]
            if name in self.devices or name in self.dms or name in self.parts:
                hit = name
        return hit

    def disks_under(self, name: str) -> set[str]:
        """The iSCSI disks a device name stands on: itself, the disk of a partition,
        the slaves of a stacked device, to any depth (LVM on a partition, dm-crypt on
        a multipath map...)."""
        out: set[str] = set()
        todo, seen = [name], set()
        while todo:
            n = todo.pop()
            if n in seen:
                continue
            seen.add(n)
            if n in self.devices:
                out.add(n)
            elif n in self.parts:
                todo.append(self.parts[n].disk)
            elif n in self.dms:
                todo.extend(self.dms[n].slaves)
        return out

    def resolve(self, source: str | None, resolved: str | None = None,
                devt: str | None = None) -> tuple[set[str], TargetRef | None]:
        """A domain disk source -> (iSCSI disks behind it, by-path/network ref).

        ``resolved`` and ``devt`` are what the domain collector found the source to
        be on this host (its real path's kernel name, its device number): a symlink
        anywhere, a partition, an LVM volume or a map over a LUN all lead to the LUN.
        """
        names: set[str] = set()
        hits = (self._lookup(source) if source else None,
                self._lookup("/dev/" + resolved) if resolved else None,
                self.by_devt.get(devt) if devt else None)
        for hit in hits:
            if hit is not None:
                names |= self.disks_under(hit)
        if not source:
            return names, None
        return names, by_path_ref(source) or _network_ref(source)

    def resolve_disk(self, disk) -> tuple[set[str], TargetRef | None]:
        return self.resolve(disk.source, getattr(disk, "resolved", None),
                            getattr(disk, "devt", None))

    def stack_of(self, dev: ScsiDevice) -> list:
        """Everything above a LUN: its partitions and the devices stacked on it or on
        them (dm, md, LVM), at any depth, as BlockPartition / DmMap records."""
        out, seen = [], {dev.name}
        todo = [*dev.partitions, *dev.holders]
        while todo:
            n = todo.pop(0)
            if n in seen:
                continue
            seen.add(n)
            rec = self.parts.get(n) or self.dms.get(n)
            if rec is None:
                continue
            out.append(rec)
            if isinstance(rec, DmMap):
                todo.extend((*rec.partitions, *rec.holders))
            else:
                todo.extend(rec.holders)
        return out

    def has_node(self, portal: str, iqn: str) -> bool:
        return any(norm_portal(n.portal) == portal and norm_iqn(n.iqn) == iqn
                   for n in self.nodes)

    def host_own(self, sess: IscsiSession) -> str | None:
        """Why a session is the host's own (never touched), or None: the firmware booted
        from its target (iBFT), or a filesystem or swap of the host is on one of its
        LUNs, their partitions or the devices stacked on them (the root on LVM on a
        partition, say), or it is another session (path) to such a target. Such a
        session may look unused to every other check."""
        own = self._own_targets().get(norm_iqn(sess.iqn))
        if own is None:
            return None
        sid, why = own
        if sid is None or sid == sess.sid:
            return why
        return f"same target as the host's own session {sid}: {why}"

    def own_iqn(self, iqn: str) -> bool:
        """Whether a target is the host's own (booted from, or carrying its mounts)."""
        return norm_iqn(iqn) in self._own_targets()

    def _own_targets(self) -> dict[str, tuple[str | None, str]]:
        if self._own is not None:
            return self._own
        out: dict[str, tuple[str | None, str]] = {}
        for b in self.boot:
            out.setdefault(norm_iqn(b.iqn), (None, f"the host booted from target {b.iqn} "
                                                   f"(firmware table {b.source}: {b.portal})"))
        for sess in self.sessions:
            iqn = norm_iqn(sess.iqn)
            for dev in sess.devices if iqn not in out else ():
                why = self._host_use(dev)
                if why:
                    out[iqn] = (sess.sid, why)
                    break
        self._own = out
        return out

    def _host_use(self, dev: ScsiDevice) -> str | None:
        for rec in (dev, *self.stack_of(dev)):
            label = rec.name if rec is dev else f"{rec.name} (over {dev.name})"
            if rec.mountpoints or getattr(rec, "mounted", False):
                where = ", ".join(rec.mountpoints[:3]) if rec.mountpoints else "?"
                return f"LUN {dev.lun}: {label} holds a filesystem the host has mounted on {where}"
            if rec.swap:
                return f"LUN {dev.lun}: {label} is the host's swap"
        return None

    def boot_iqn(self, iqn: str) -> IscsiBootTarget | None:
        iqn = norm_iqn(iqn)
        return next((b for b in self.boot if norm_iqn(b.iqn) == iqn), None)

    def note_for(self, sess: IscsiSession) -> IscsiOperatorNote | None:
        return self.notes.get((norm_portal(sess.portal), norm_iqn(sess.iqn), str(sess.sid)))


class Refs:
    """Who names what: devices by name, and target references, indexed by
    (portal, iqn); references with a wildcard portal or iqn are few and scanned."""

    def __init__(self):
        self.devices: dict[str, set[str]] = collections.defaultdict(set)
        self._exact: dict[tuple[str, str], list[tuple[int | None, str]]] = \
            collections.defaultdict(list)
        self._wild: list[tuple[TargetRef, str]] = []

    def add(self, ref: TargetRef, who: str) -> None:
        if ref.portal is None or ref.iqn is None:
            self._wild.append((ref, who))
        else:
            self._exact[(ref.portal, ref.iqn)].append((ref.lun, who))

    def add_domain(self, host: Host, dom: Domain) -> None:
        for disk in dom.disks:
            names, ref = host.resolve_disk(disk)
            for n in names:
                self.devices[n].add(f"domain {dom.name}")
            if ref is not None:
                self.add(ref, f"domain {dom.name}")

    def matching(self, portal: str, iqn: str, lun: int | None = None) -> set[str]:
        """Who names (portal, iqn, lun); any LUN of the target when ``lun`` is None."""
        out = {who for rl, who in self._exact.get((portal, iqn), ())
               if lun is None or rl is None or rl == lun}
        out.update(who for ref, who in self._wild if ref.matches(portal, iqn, lun))
        return out

    def users(self, portal: str, iqn: str, dev: ScsiDevice | None, lun: int | None) -> set[str]:
        out = set(self.devices.get(dev.name, ())) if dev else set()
        return out | self.matching(portal, iqn, lun)

    def on_target(self, portal: str, iqn: str) -> set[str]:
        return self.matching(portal, iqn)


def _own_use(label: str, rec) -> list[str]:
    why = []
    if rec.open_pids:
        why.append(f"{label}open by pid {', '.join(map(str, rec.open_pids))}")
    if rec.mountpoints:
        why.append(f"{label}mounted on {', '.join(rec.mountpoints[:3])}")
    elif getattr(rec, "mounted", False):
        why.append(f"{label}mounted")
    if rec.swap:
        why.append(f"{label}in use as swap")
    return why


def _holder(host: Host, name: str) -> str:
    dm = host.dms.get(name)
    if dm is None:
        return name
    what = dm.uuid or dm.dm_name or (dm.kind if dm.kind != "dm" else None)
    return f"{name} ({what})" if what else name


def _stacked_use(host: Host, dm: DmMap) -> list[str]:
    """Why a multipath map is in use: opened, mounted, swap, held, or a partition of it
    is."""
    why = _own_use("", dm)
    why += [f"held by {_holder(host, h)}" for h in dm.holders]
    for p in dm.partitions:
        part = host.parts.get(p)
        if part is not None:
            why += _own_use(f"partition {p} ", part)
            why += [f"partition {p} held by {_holder(host, h)}" for h in part.holders]
    return why


def device_use(host: Host, dev: ScsiDevice) -> list[str]:
    """Why a LUN is in use on the host itself: the disk, any of its partitions, or a
    device stacked on either (dm-crypt, LVM, md; a multipath map only when that map is
    itself in use) is open, mounted, swap or held."""
    why = _own_use("", dev)
    for p in dev.partitions:
        part = host.parts.get(p)
        if part is None:
            why.append(f"partition {p} (not described by sysfs)")
            continue
        why += _own_use(f"partition {p} ", part)
        why += [f"partition {p} held by {_holder(host, h)}" for h in part.holders]
    for h in dev.holders:
        dm = host.dms.get(h)
        if dm is None or not dm.multipath:
            why.append(f"held by {_holder(host, h)}, not a multipath map")
            continue
        used = _stacked_use(host, dm)
        if used:
            why.append(f"its multipath map {h} is " + "; ".join(used[:3]))
    return why


# --------------------------------------------------------------------------
# The extension
# --------------------------------------------------------------------------

def reverify_leak(plan, row, migrations, policy, now) -> tuple[bool, str]:
    """A leak belongs to no instance row; the disconnect step re-reads the host, the
    domains and the BDMs under os-brick's lock before it touches anything."""
    return True, "re-checked under os-brick's lock by the disconnect step"


def _protected_uuids(ctx, torn_down: set[str]) -> set[str]:
    host = ctx.policy.host
    migs = collections.defaultdict(list)
    for m in ctx.view.migrations:
        migs[m.instance_uuid].append(m)
    out = set(ctx.inv.local_uuids()) - torn_down
    for row in ctx.view.instances.values():
        if row.uuid in torn_down or row.deleted != 0 or row.archived:
            continue
        if row.host == host or rules.in_flight_migrations(migs.get(row.uuid, []), host):
            out.add(row.uuid)
    return out


def extend(ctx) -> Plan:
    """PlanContext -> Plan: R12 findings and leak teardowns, volumes on teardowns, R13."""
    plan: Plan = ctx.plan
    res = ctx.inv.extra.get(KIND)
    if not ctx.view.ok:
        return plan
    host = Host.from_items(res.items if res is not None and res.ok else ())
    iscsi_unknown = res is not None and not res.ok
    teardowns = {t.instance_uuid: t for t in plan.teardowns if t.destroys_instance
                 or (t.action is Action.RECLAIM)}
    torn_down = set(teardowns)
    protected = _protected_uuids(ctx, torn_down)
    domains = list(ctx.inv.domains.items) if ctx.inv.domains.ok else []
    dom_by_uuid = {d.uuid: d for d in domains}

    # -- BDMs: parse once; report the unusable ones (R13).
    conns: dict[int, Conn] = {}
    findings: list[Finding] = []
    protected_refs = Refs()
    bdm_refs: dict[str, list[tuple[Any, Conn]]] = collections.defaultdict(list)
    unsure: list[str] = []
    # volume id -> a kept instance whose BDM of it has no usable connection_info yet
    # (a multi-attach in progress): its LUN may be about to be theirs too.
    pending_attach: dict[str, str] = {}
    checked_bdms = 0
    for b in ctx.view.bdms:
        if b.destination_type != "volume":
            continue
        c = conns[b.id] = parse_connection_info(b.connection_info)
        bdm_refs[b.instance_uuid].append((b, c))
        relevant = b.instance_uuid in protected or b.instance_uuid in torn_down
        if c.error and relevant:
            dom = dom_by_uuid.get(b.instance_uuid)
            findings.append(Finding(
                ResourceKind.VOLUME_ATTACHMENT,
                f"{dom.name if dom else b.instance_uuid}:{b.volume_id}", b.instance_uuid,
                Classification.ATTACHMENT_DRIFT, Action.LOG,
                f"block_device_mapping {b.id} has {c.error}: it cannot be matched to this "
                f"host's sessions and nothing is disconnected for it",
                {"bdm_id": b.id, "volume_id": b.volume_id, "connection_info_error": c.error,
                 "protected_instance": b.instance_uuid in protected}))
        if b.instance_uuid not in protected:
            continue
        if (c.error or c.empty) and b.volume_id:
            pending_attach.setdefault(b.volume_id, b.instance_uuid)
        if c.error:
            unsure.append(f"block_device_mapping {b.id} of instance {b.instance_uuid} has "
                          f"unusable connection_info")
        elif c.empty:
            unsure.append(f"block_device_mapping {b.id} of instance {b.instance_uuid} has no "
                          f"connection_info yet (an attach in progress?)")
        elif c.iscsi:
            checked_bdms += 1
            for ref in c.refs:
                protected_refs.add(
                    ref, f"bdm {b.id} (instance {b.instance_uuid}, volume {b.volume_id})")

    # -- domains: everything not torn down here pins what it names.
    for dom in domains:
        if dom.uuid in torn_down:
            continue
        protected_refs.add_domain(host, dom)
        if dom.state == UNREADABLE_DOMAIN_STATE:
            unsure.append(f"the XML of domain {dom.name} could not be read: it may use "
                          f"any session")
    if not ctx.inv.domains.ok:
        unsure.append("the domain list is unavailable: a domain may use any session")
    flying = rules.in_flight_migrations(ctx.view.migrations, ctx.policy.host)
    if flying:
        unsure.append(f"{len(flying)} migration(s) touching this host in flight: their "
                      f"volumes may be connected here before any BDM says so")

    # -- teardowns: the volume step.
    new_teardowns = []
    claimed: dict[str, str] = {}    # device name -> uuid of the teardown disconnecting it
    claimed_targets = Refs()
    held: dict[str, str] = {}       # finding key -> why its teardown waits
    for t in plan.teardowns:
        if t.instance_uuid not in teardowns:
            new_teardowns.append(t)
            continue
        dom = dom_by_uuid.get(t.instance_uuid)
        if iscsi_unknown and dom is not None and any(
                (d.source or "").startswith("/dev/") for d in dom.disks):
            # Its block disks may be iSCSI LUNs only this domain's XML can tell apart
            # (after an evacuation the BDM names the destination's): wait for a pass
            # that can read the host's sessions rather than undefine that knowledge.
            why = (f"not torn down in this pass: the host's iSCSI state is unknown "
                   f"({res.error}) and this domain has block-device disks")
            held.update({f.key: why for f in t.findings})
            continue
        items = _teardown_volumes(t, host, dom_by_uuid.get(t.instance_uuid),
                                  bdm_refs.get(t.instance_uuid, []), protected_refs,
                                  pending_attach)
        for it in items:
            for tg in it["targets"]:
                if tg["device"]:
                    claimed[tg["device"]] = t.instance_uuid
                claimed_targets.add(TargetRef(tg["portal"], tg["iqn"], tg["lun"]),
                                    t.instance_uuid)
        new_teardowns.append(dataclasses.replace(t, volumes=tuple(items)) if items else t)

    # -- R12
    action = ctx.policy.action_for(Classification.LEAKED_ISCSI)
    leak_findings, leak_teardowns = _leaks(host, protected_refs, claimed, claimed_targets,
                                           action, unsure,
                                           {"bdms": checked_bdms, "domains": len(domains)})
    findings.extend(leak_findings)
    new_teardowns.extend(leak_teardowns)

    # -- R13: what the host says about each drift the core found.
    out_findings = [_drift_evidence(f, host, dom_by_uuid, bdm_refs)
                    if f.classification is Classification.ATTACHMENT_DRIFT
                    and f.kind is ResourceKind.VOLUME_ATTACHMENT else f
                    for f in plan.findings]
    out_findings = [dataclasses.replace(f, action=Action.LOG, reason=f"{f.reason}; {held[f.key]}")
                    if f.key in held else f for f in out_findings]
    return Plan(findings=tuple(out_findings) + tuple(findings),
                teardowns=tuple(new_teardowns))


def _target_entry(sess: IscsiSession, dev: ScsiDevice | None, lun: int | None,
                  logout: bool, host: Host | None = None) -> dict:
    portal, iqn = norm_portal(sess.portal), norm_iqn(sess.iqn)
    entry = {"portal": portal, "iqn": iqn,
             "session_portal": sess.portal, "session_iqn": sess.iqn, "sid": sess.sid,
             "lun": lun, "device": dev.name if dev else None,
             "hctl": dev.hctl if dev else None, "wwid": dev.wwid if dev else None,
             "logout": logout}
    if host is not None:
        # No node record: os-brick cannot find the target through the node database;
        # the disconnect step logs the session out by its id (see the executor).
        entry["node"] = host.has_node(portal, iqn)
    return entry


def _session_of(host: Host, portal: str, iqn: str) -> IscsiSession | None:
    return host.by_target.get((portal, iqn))


def _logout_ok(host: Host, sess: IscsiSession, removing: set[str],
               refs: Refs) -> tuple[bool, str]:
    """May this session be logged out once the devices in ``removing`` are gone?"""
    portal, iqn = norm_portal(sess.portal), norm_iqn(sess.iqn)
    own = host.host_own(sess)
    if own:
        return False, f"the host's own session: {own}"
    others = [d for d in sess.devices if d.name not in removing]
    if others:
        return False, (f"other LUNs of this target have devices here "
                       f"({', '.join(f'lun {d.lun} {d.name}' for d in others)})")
    named = refs.on_target(portal, iqn)
    if named:
        return False, f"LUNs of this target are still named by {_listed(named)}"
    return True, "no other LUN of this target is in use or named by a BDM or domain"


def _listed(items: Iterable[str]) -> str:
    items = sorted(items)
    head = ", ".join(items[:5])
    return head + (f" and {len(items) - 5} more" if len(items) > 5 else "")


def _teardown_volumes(t: TeardownPlan, host: Host, dom: Domain | None,
                      bdms: list[tuple[Any, Conn]], refs: Refs,
                      pending_attach: dict[str, str] | None = None) -> list[dict]:
    """The iSCSI volumes this instance's teardown disconnects, and how."""
    groups: list[tuple[str | None, str | None, set[str], list[TargetRef]]] = []
    seen: set[str] = set()
    if dom is not None:
        for disk in dom.disks:
            names, ref = host.resolve_disk(disk)
            names -= seen
            stale = []
            if ref is not None and ref.portal is not None and not names:
                # by-path link whose device is gone: the session may still be there
                if _session_of(host, ref.portal, ref.iqn) is not None:
                    stale.append(ref)
            if names or stale:
                seen.update(names)
                groups.append((disk.serial, disk.source, names, stale))
    if t.classification in BDM_TEARDOWNS:
        for b, c in bdms:
            if not c.iscsi or c.error:
                continue
            names = set()
            for ref in c.refs:
                s = _session_of(host, ref.portal, ref.iqn) if ref.iqn else None
                for d in (s.devices if s else ()):
                    if d.lun == ref.lun and d.name not in seen:
                        names.add(d.name)
            if names:
                seen.update(names)
                groups.append((b.volume_id, None, names, []))
    items = []
    for volume_id, source, names, stale in groups:
        shared = set()
        for n in names:
            sess, dev = host.devices[n]
            shared |= refs.users(norm_portal(sess.portal), norm_iqn(sess.iqn), dev, dev.lun)
        for ref in stale:
            shared |= refs.matching(ref.portal, ref.iqn, ref.lun)
        targets = []
        own = set()
        for n in sorted(names):
            sess, dev = host.devices[n]
            ok, _ = _logout_ok(host, sess, names, refs)
            targets.append(_target_entry(sess, dev, dev.lun, ok, host))
            if host.host_own(sess):
                own.add(host.host_own(sess))
        for ref in stale:
            sess = _session_of(host, ref.portal, ref.iqn)
            ok, _ = _logout_ok(host, sess, names, refs)
            targets.append(_target_entry(sess, None, ref.lun, ok, host))
            if host.host_own(sess):
                own.add(host.host_own(sess))
        dms = {h for n in names for h in host.devices[n][1].holders
               if h in host.dms and host.dms[h].multipath}
        keep = f"shared: still used by {_listed(shared)} (multi-attach)" if shared else None
        if own:
            keep = "the host's own session: " + "; ".join(sorted(own))
        other = (pending_attach or {}).get(volume_id or "")
        if other and other != t.instance_uuid and keep is None:
            keep = (f"shared: volume {volume_id} is being attached to instance {other} "
                    f"(its BDM has no usable connection_info yet)")
        items.append({
            "volume_id": volume_id, "origin": "domain_xml" if source else "bdm",
            "device_path": source or (f"/dev/{next(iter(dms))}" if len(dms) == 1 else
                                      f"/dev/{sorted(names)[0]}" if names else None),
            "multipath": bool(dms), "dm": sorted(dms)[0] if dms else None,
            "targets": targets,
            "keep": keep,
        })
    return items


def _leaks(host: Host, refs: Refs, claimed: dict[str, str],
           claimed_targets: Refs, action: Action, unsure: list[str],
           checked: dict) -> tuple[list[Finding], list[TeardownPlan]]:
    findings: list[Finding] = []
    teardowns: list[TeardownPlan] = []
    if action is Action.IGNORE:
        return findings, teardowns
    uncertain = "; ".join(unsure[:3]) + (f" (and {len(unsure) - 3} more)" if len(unsure) > 3
                                         else "")

    def verdict(reason: str, ev: dict, resource: str,
                note: IscsiOperatorNote | None = None) -> Finding:
        ev = {**ev, "checked": checked}
        act = Action.REAP if action is Action.REAP else Action.LOG
        if note is not None:
            # Tried once and it could not be done by any means we have: say so once
            # per pass as a finding, never retry it (until the session changes).
            act = Action.LOG
            reason = (f"{reason}; needs an operator: {note.reason} (since {note.since}; "
                      f"not retried)")
            ev = {**ev, "needs_operator": True,
                  "operator_note": {"reason": note.reason, "since": note.since}}
        elif act is Action.REAP and uncertain:
            act = Action.LOG
            reason = f"{reason}; only logging: {uncertain}"
        return Finding(ResourceKind.ISCSI_SESSION, resource, None,
                       Classification.LEAKED_ISCSI, act, reason, ev)

    groups: dict[str, list[tuple[IscsiSession, ScsiDevice]]] = collections.defaultdict(list)
    leaked_by_session: dict[str, list[ScsiDevice]] = collections.defaultdict(list)
    session_findings: dict[str, list[Finding]] = collections.defaultdict(list)
    for sess in host.sessions:
        if sess.node_type == "flash" or host.host_own(sess):
            continue        # firmware, boot or the host's own filesystems: never ours
        portal, iqn = norm_portal(sess.portal), norm_iqn(sess.iqn)
        note = host.note_for(sess)
        users_of = {}
        leaked = []
        for dev in sess.devices:
            if dev.name in claimed:
                continue
            users = refs.users(portal, iqn, dev, dev.lun)
            if not users and not device_use(host, dev):
                leaked.append(dev)
            users_of[dev.name] = users
        if sess.devices and not leaked:
            continue        # everything in use (the common case): nothing to say
        named = refs.on_target(portal, iqn)
        lun_state = {}
        for dev in sess.devices:
            if dev.name in claimed:
                lun_state[dev.lun] = f"disconnected by the teardown of {claimed[dev.name]}"
            elif dev in leaked:
                lun_state[dev.lun] = "leaked"
            else:
                lun_state[dev.lun] = "in use: " + _listed(
                    sorted(users_of[dev.name]) + device_use(host, dev))
        s_ev = {"sid": sess.sid, "portal": sess.portal, "tpgt": sess.tpgt, "iqn": sess.iqn,
                "transport": sess.transport,
                "luns": {str(k): v for k, v in sorted(lun_state.items())},
                "target_named_by": sorted(named)[:_MAX_LISTED],
                "node_record": host.has_node(portal, iqn)}
        if not sess.devices:
            if named or claimed_targets.on_target(portal, iqn):
                continue
            ok, why = _logout_ok(host, sess, set(), refs)
            f = verdict("iSCSI session with no LUN that no live BDM or domain names",
                        {**s_ev, "logout": ok, "logout_why": why},
                        f"{sess.portal} {sess.iqn} (no LUN)", note)
            findings.append(f)
            if f.action is Action.REAP:
                teardowns.append(_leak_plan(
                    [f], [_target_entry(sess, None, None, ok, host)], None, None, f.reason))
            continue
        for dev in leaked:
            leaked_by_session[sess.sid].append(dev)
            mp = [h for h in dev.holders if h in host.dms and host.dms[h].multipath]
            key = mp[0] if mp else dev.name
            groups[key].append((sess, dev))
            ok, why = _logout_ok(host, sess, {d.name for d in leaked}, refs)
            ev = {**s_ev, "lun": dev.lun,
                  "device": {"name": dev.name, "hctl": dev.hctl, "wwid": dev.wwid,
                             "state": dev.state, "paths": list(dev.paths),
                             "holders": list(dev.holders),
                             "partitions": list(dev.partitions)},
                  "logout": ok, "logout_why": why}
            f = verdict(f"LUN {dev.lun} ({dev.name}) of this session is named by no live BDM "
                        f"and no domain, and neither it nor a partition of it or a device "
                        f"on it is open, mounted, swap or held",
                        ev, f"{sess.portal} {sess.iqn} lun {dev.lun} ({dev.name})", note)
            findings.append(f)
            session_findings[dev.name].append(f)

    # one disconnect per volume: a multipath map with all its paths, or one device
    for key, members in sorted(groups.items()):
        if key in host.dms:
            dm = host.dms[key]
            member_names = {d.name for _, d in members}
            if set(dm.slaves) - member_names:
                continue        # a path of it is not leaked: leave the whole map
        fs = [f for _, d in members for f in session_findings[d.name]]
        if not fs or any(f.action is not Action.REAP for f in fs):
            continue
        targets = []
        for sess, dev in members:
            leaked_names = {d.name for d in leaked_by_session[sess.sid]}
            ok, _ = _logout_ok(host, sess, leaked_names, refs)
            targets.append(_target_entry(sess, dev, dev.lun, ok, host))
        dm_name = key if key in host.dms else None
        teardowns.append(_leak_plan(fs, targets, dm_name,
                                    f"/dev/{key}", "; ".join(f.reason for f in fs[:1])))

    # node records with no session
    live = {(norm_portal(s.portal), norm_iqn(s.iqn)) for s in host.sessions}
    for node in host.nodes:
        portal, iqn = norm_portal(node.portal), norm_iqn(node.iqn)
        if (portal, iqn) in live or host.own_iqn(iqn):
            continue        # the host's own target (another path of it, say)
        named = refs.on_target(portal, iqn)
        if named or claimed_targets.on_target(portal, iqn):
            continue
        f = verdict("node record with no session that no live BDM or domain names (iscsid "
                    "would log into it again at start-up)",
                    {"portal": node.portal, "tpgt": node.tpgt, "iqn": node.iqn, "node": True},
                    f"node {node.portal} {node.iqn}")
        findings.append(f)
        if f.action is Action.REAP:
            teardowns.append(_leak_plan([f], [{
                "portal": portal, "iqn": iqn, "session_portal": node.portal,
                "session_iqn": node.iqn, "sid": None, "lun": None, "device": None,
                "hctl": None, "wwid": None, "logout": True}], None, None, f.reason))
    return findings, teardowns


def _leak_plan(fs: list[Finding], targets: list[dict], dm: str | None,
               device_path: str | None, reason: str) -> TeardownPlan:
    item = {"volume_id": None, "origin": "leak", "device_path": device_path,
            "multipath": dm is not None, "dm": dm, "targets": targets, "keep": None,
            "resources": [f.resource for f in fs]}
    return TeardownPlan(
        instance_uuid=fs[0].resource, classification=Classification.LEAKED_ISCSI,
        action=Action.REAP, domain_name=None, dirs=(), destroy_disks=False,
        finalize_db=False, reason=reason, findings=tuple(fs), volumes=(item,))


def _drift_evidence(f: Finding, host: Host, dom_by_uuid: dict[str, Domain],
                    bdm_refs: dict[str, list]) -> Finding:
    vol = f.evidence.get("volume_id")
    host_ev: dict[str, Any] = {}
    dom = dom_by_uuid.get(f.instance_uuid or "")
    if f.evidence.get("in_domain_xml") and dom is not None:
        for disk in dom.disks:
            if disk.serial != vol:
                continue
            names, ref = host.resolve_disk(disk)
            host_ev = {"disk": {"target": disk.target, "source": disk.source},
                       "iscsi": [_dev_ev(host, n) for n in sorted(names)]
                       or ([ref.as_dict()] if ref else [])}
    elif f.evidence.get("live_bdm"):
        for b, c in bdm_refs.get(f.instance_uuid or "", []):
            if b.volume_id != vol:
                continue
            here = []
            for ref in c.refs:
                s = _session_of(host, ref.portal, ref.iqn) if ref.iqn else None
                devs = [d.name for d in (s.devices if s else ()) if d.lun == ref.lun]
                here.append({**ref.as_dict(), "session": s.sid if s else None,
                             "devices": devs})
            host_ev = {"bdm_id": b.id, "driver_volume_type": c.driver,
                       "connection_info_error": c.error, "targets": here}
    if not host_ev:
        return f
    return dataclasses.replace(f, evidence={**f.evidence, "host": host_ev})


def _dev_ev(host: Host, name: str) -> dict:
    sess, dev = host.devices[name]
    return {"device": name, "lun": dev.lun, "portal": sess.portal, "iqn": sess.iqn,
            "sid": sess.sid}
