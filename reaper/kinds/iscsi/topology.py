"""The host's iSCSI picture (``Host``: sessions, LUNs, partitions, what is stacked on
them and who uses them) and the references to targets (``Refs``). Pure: built from
the ``iscsi_session`` collector's records; the R12 rules (``rules``) and the
disconnect step's re-checks (``disconnect``) ask it the same questions.
"""
from __future__ import annotations

import collections
import dataclasses
import posixpath
from typing import Iterable

from reaper.kinds.iscsi.connection_info import (TargetRef, _network_ref, by_path_ref,
                                                norm_iqn, norm_portal)
from reaper.kinds.iscsi.objects import (
    BlockPartition,
    DmMap,
    IscsiBootTarget,
    IscsiNode,
    IscsiOperatorNote,
    IscsiSession,
    ScsiDevice,
)
from reaper.objects.host import Domain

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

    def session_of(self, portal: str, iqn: str) -> IscsiSession | None:
        """The session logged in to (portal, iqn), both normalised (norm_portal,
        norm_iqn); None: no session to that target."""
        return self.by_target.get((portal, iqn))

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


def logout_allowed(host: Host, sess: IscsiSession, removing: set[str],
                   refs: Refs) -> tuple[bool, str]:
    """May this session be logged out once the devices in ``removing`` are gone?
    (whether, and why not). R12 plans a logout only when it may, and the disconnect
    step asks again on the host as it is right before it acts."""
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
        return False, f"LUNs of this target are still named by {listed(named)}"
    return True, "no other LUN of this target is in use or named by a BDM or domain"


def listed(items: Iterable[str]) -> str:
    """Who uses something, for a reason text: sorted, the first five and a count."""
    items = sorted(items)
    head = ", ".join(items[:5])
    return head + (f" and {len(items) - 5} more" if len(items) > 5 else "")


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
