"""The rule table (R1-R13, doc/design.md "Classifications"), as pure functions.

Every function here takes records and returns records: no I/O, no clock (``now``
is an argument), so the whole table is unit-tested without libvirt or a DB.
Anything that cannot be classified with confidence ends as ``log``.
"""
from __future__ import annotations

import dataclasses
import datetime
from typing import Iterable, Mapping, Sequence

from reaper.kinds.instance.dirs import LOCAL_FS_TYPES, SHARED_FS_TYPES
from reaper.objects.fields import ENDED_MIGRATION_STATUSES, Action, Classification, DirKind
from reaper.objects.host import Domain, InstanceDir
from reaper.objects.nova import ClaimMarker, InstanceRow, MigrationRow

# The evacuation statuses nova-compute's _destroy_evacuated_instances acts on (read
# with read_deleted='yes'): the destination is rebuilding the instance (accepted,
# pre-migrating) or has rebuilt it (done). Two copies must never run at once.
EVACUATING_STATUSES = frozenset({"accepted", "pre-migrating"})
# A resize or cold migration that ended as Nova meant it to (confirmed or reverted):
# only then is a live instance's leftover _resize directory no copy of anything.
RESIZE_SETTLED_STATUSES = frozenset({"confirmed", "reverted"})
EVACUATED_STATUSES = frozenset({"done"})
EVACUATION_STATUSES = EVACUATING_STATUSES | EVACUATED_STATUSES
# An evacuation that ended without a copy elsewhere: the guest here is all there is.
FAILED_EVACUATION_STATUSES = frozenset({"error", "failed"})
IN_FLIGHT_TASK_STATES = frozenset({
    "migrating", "resize_migrating", "resize_migrated", "resize_finish", "resize_reverting",
    "resize_prep", "resize_confirming",
})


@dataclasses.dataclass(frozen=True)
class Verdict:
    classification: Classification
    reason: str
    evidence: dict
    # for classifications whose action comes from policy, None; otherwise fixed.
    fixed_action: Action | None = None
    # a stranded claim of this host: the exact marker the teardown adopts or releases
    claim_marker: str | None = None


def row_evidence(row: InstanceRow | None) -> dict:
    if row is None:
        return {"db_row": None}
    return {"db_row": {
        "id": row.id, "host": row.host, "node": row.node, "vm_state": row.vm_state,
        "task_state": row.task_state, "deleted": row.deleted,
        "deleted_at": row.deleted_at.isoformat() if row.deleted_at else None,
        "archived": row.archived,
    }}


def migration_evidence(migs: Iterable[MigrationRow]) -> list[dict]:
    return [{"id": m.id, "type": m.migration_type, "status": m.status,
             "source": m.source_compute, "dest": m.dest_compute, "deleted": m.deleted}
            for m in migs]


def old_enough(deleted_at: datetime.datetime | None, seconds: int,
               now: datetime.datetime) -> bool:
    """Nova's _deleted_old_enough: a NULL deleted_at counts as old."""
    return deleted_at is None or deleted_at <= now - datetime.timedelta(seconds=seconds)


def in_flight_migrations(migs: Iterable[MigrationRow], host: str) -> list[MigrationRow]:
    """Moves touching our host that have not reached a final status.

    An evacuation counts only when it comes to us (we are rebuilding the
    instance here); one leaving us is R2's business.
    """
    return [m for m in migs
            if m.deleted == 0
            and (m.status or "") not in ENDED_MIGRATION_STATUSES
            and (host == m.dest_compute if m.migration_type == "evacuation"
                 else host in (m.source_compute, m.dest_compute))]


def evacuations_from(migs: Iterable[MigrationRow], host: str,
                     statuses: frozenset[str] = EVACUATION_STATUSES) -> list[MigrationRow]:
    """R2: Nova reads these with read_deleted='yes', so deleted rows count."""
    return [m for m in migs
            if m.migration_type == "evacuation"
            and m.source_compute == host
            and m.status in statuses]


def row_in_flight(row: InstanceRow) -> bool:
    return row.vm_state == "resized" or (row.task_state or "") in IN_FLIGHT_TASK_STATES


def is_reclaimable(row: InstanceRow, host: str, interval: int,
                   now: datetime.datetime) -> bool:
    return (interval > 0 and row.deleted == 0 and not row.archived
            and row.host == host and row.vm_state == "soft-delete"
            and row.task_state is None
            and old_enough(row.deleted_at, interval, now))


def reclaim_candidates(rows: Iterable[InstanceRow], host: str, interval: int,
                       now: datetime.datetime) -> list[InstanceRow]:
    """The soft-deleted rows of this host a reclaim pass may act on or report now.

    A superset, on purpose: every row for which ``is_reclaimable`` holds (R7, with or
    without a domain) or ``classify_claim`` can say anything (R7a, R7b: a claimed row,
    task_state 'deleting') is in it, since both need a live ``soft-delete`` row of
    ``host`` and then either an expired one with no task (reclaim enabled) or a task.
    A row with any task_state is kept, whatever it is. So when this is empty the full
    planner would plan no reclaim and no release and report no reclaim finding: the
    reclaim pass may stop there, having acted on nothing.
    """
    return [r for r in rows
            if r.deleted == 0 and not r.archived and r.host == host
            and r.vm_state == "soft-delete"
            and (r.task_state is not None
                 or (interval > 0 and old_enough(r.deleted_at, interval, now)))]


def classify_instance(uuid: str, row: InstanceRow | None, migs: list[MigrationRow],
                      host: str, *, running_deleted_timeout: int,
                      reclaim_interval: int, now: datetime.datetime,
                      domain_active: bool = True) -> Verdict:
    """Classify a Nova instance seen on this host as a domain (R1-R7).

    ``domain_active``: whether its domain runs here; a failed evacuation is reported
    only for a guest that is not running while Nova still thinks it should.
    """
    if row is not None and row.host == host and row.deleted == 0 and not row.archived \
            and row.vm_state != "soft-delete" and not migs:
        return _LIVE        # the common case, on every pass for every guest
    ev = row_evidence(row)
    if migs:
        ev["migrations"] = migration_evidence(migs)
    if row is None:
        return Verdict(Classification.UNKNOWN,
                       "no instances row for this uuid in this cell's DB "
                       "(never existed, archived, or another cell)", ev)
    if row.archived:
        return Verdict(Classification.UNKNOWN,
                       "row only in shadow_instances (archived); cannot tell more", ev)
    if row.deleted != 0:
        if row.vm_state == "soft-delete":
            return Verdict(Classification.RUNNING_DELETED,
                           "deleted row still in soft-delete state; Nova excludes these",
                           ev, fixed_action=Action.LOG)
        if not old_enough(row.deleted_at, running_deleted_timeout, now):
            return Verdict(Classification.PENDING,
                           f"row deleted less than running_deleted_timeout "
                           f"({running_deleted_timeout}s) ago", ev, fixed_action=Action.LOG)
        return Verdict(Classification.RUNNING_DELETED,
                       "instance is deleted in Nova but its domain is still on this host", ev)
    # Anything in flight wins over an evacuation record: the domain here may be the
    # target of a move back.
    flying = in_flight_migrations(migs, host)
    if row.host == host:
        if is_reclaimable(row, host, reclaim_interval, now):
            return Verdict(Classification.RECLAIMABLE,
                           f"soft-deleted longer than reclaim_instance_interval "
                           f"({reclaim_interval}s)", ev, fixed_action=Action.RECLAIM)
        v = None if flying or row_in_flight(row) or row.vm_state == "soft-delete" else \
            _evacuation(row, migs, host, ev, domain_active)
        return v or Verdict(Classification.LIVE, "row is live on this host", ev,
                            fixed_action=Action.NONE)
    # Live row owned by another host (or no host).
    if flying or row_in_flight(row):
        return Verdict(Classification.IN_FLIGHT,
                       "a migration or resize touching this host is in progress",
                       ev, fixed_action=Action.NONE)
    return _evacuation(row, migs, host, ev, domain_active) or Verdict(
        Classification.FOREIGN,
        f"live row belongs to host {row.host!r} and no evacuation from this host "
        f"is recorded (hostname change or split brain?)", ev, fixed_action=Action.LOG)


def _evacuation(row: InstanceRow, migs: list[MigrationRow], host: str, ev: dict,
                domain_active: bool) -> Verdict | None:
    """R2 and its neighbours, from the newest evacuation from this host. None: the
    evacuations say nothing (the caller's default holds: live here, else foreign)."""
    evacs = evacuations_from(migs, host, EVACUATION_STATUSES | FAILED_EVACUATION_STATUSES)
    if not evacs:
        return None
    newest = max(evacs, key=lambda m: m.id)
    dest = newest.dest_compute
    ev["evacuation"] = migration_evidence([newest])[0]
    later = [m for m in migs if m.id > newest.id and host in (m.source_compute, m.dest_compute)]
    if later:
        # The instance came back towards us after that evacuation (even if that
        # move failed): the domain here may be its only copy.
        ev["later_migrations"] = migration_evidence(later)
        if row.host == host:
            return None
        return Verdict(Classification.FOREIGN,
                       "evacuated from this host earlier, but a later migration "
                       "touches this host again: not treating it as evacuated", ev,
                       fixed_action=Action.LOG)
    if newest.status in EVACUATING_STATUSES:
        return Verdict(Classification.EVACUATING,
                       f"an evacuation from this host to {dest} is {newest.status}: the "
                       f"destination is rebuilding the instance, so the guest here must not "
                       f"run (row on {row.host})", ev)
    if newest.status in EVACUATED_STATUSES:
        if row.host == host:
            return None     # back on our host without a later move: ours, as the row says
        return Verdict(Classification.EVACUATED, f"evacuated from this host to {dest}", ev)
    # A failed evacuation: no copy elsewhere. A guest that runs, or that Nova itself
    # calls stopped, is simply ours again; one that was powered off for the evacuation
    # stays off until an operator decides (start or rebuild it), and is never deleted.
    if row.host == host and (domain_active or row.vm_state == "stopped"):
        return None
    return Verdict(Classification.EVACUATION_FAILED,
                   f"the evacuation from this host to {dest} ended '{newest.status}' "
                   f"(vm_state {row.vm_state}, row on {row.host}): the guest here is left as "
                   f"it is and never deleted; an operator decides", ev,
                   fixed_action=Action.LOG)


def classify_claim(row: InstanceRow, markers: tuple[str, ...], host: str, *,
                   journaled: bool, reclaim_interval: int,
                   now: datetime.datetime) -> Verdict | None:
    """A claimed row of our host (soft-delete, task_state 'deleting') that no journal
    entry of ours drives. None when the row is not claimed on our host, or our journal
    still holds its teardown (that teardown resumes it).

    Only a single marker of this host makes it our claim: then the reclaim is
    finished (``reclaimable``, the claim step adopts the marker) while the row still
    justifies one, else the claim is released (``stranded_claim``). No marker is what
    Nova's own force-delete looks like; another host's marker is not ours either:
    ``foreign_claim``, log only, never released or finished.
    """
    if row.host != host or not row.is_claimed or journaled:
        return None
    ev = row_evidence(row)
    ev["claim_markers"] = list(markers)
    parsed = [ClaimMarker.parse(v) for v in markers]
    if len(markers) != 1 or parsed[0] is None or parsed[0].host != host:
        why = ("no reaper_claim marker: Nova's own delete of it may be in progress "
               "(force-delete), or a reaper without markers claimed it" if not markers else
               f"its reaper_claim markers are not this host's: {list(markers)}")
        return Verdict(Classification.FOREIGN_CLAIM,
                       f"soft-deleted row at task_state 'deleting' that this host cannot "
                       f"prove is its own claim ({why}): never released or finished here",
                       ev, fixed_action=Action.LOG)
    m = parsed[0]
    ev["stranded_claim"] = {"host": m.host, "claimed_at": m.claimed_at, "pass_id": m.pass_id}
    stranded = (f"this host claimed the reclaim at {m.claimed_at} (pass {m.pass_id}) and no "
                f"journal entry is left to finish it")
    if reclaim_interval > 0 and old_enough(row.deleted_at, reclaim_interval, now):
        return Verdict(Classification.RECLAIMABLE, f"{stranded}: finishing the reclaim", ev,
                       fixed_action=Action.RECLAIM, claim_marker=markers[0])
    why = ("reclaim is disabled (reclaim_instance_interval = 0)" if reclaim_interval <= 0 else
           f"it was soft-deleted less than reclaim_instance_interval ({reclaim_interval}s) ago")
    return Verdict(Classification.STRANDED_CLAIM,
                   f"{stranded}, and the row no longer justifies a reclaim ({why}): "
                   f"releasing the claim", ev, fixed_action=Action.RELEASE,
                   claim_marker=markers[0])


_LIVE = Verdict(Classification.LIVE, "row is live on this host", {}, fixed_action=Action.NONE)


def storage_shared(setting: str, fs_type: str | None) -> tuple[bool | None, str]:
    """Is instances_path shared with other hosts? None means unsure."""
    if setting == "true":
        return True, "instances_path_shared=true"
    if setting == "false":
        return False, "instances_path_shared=false"
    if fs_type in SHARED_FS_TYPES:
        return True, f"instances_path is on {fs_type}, a shared filesystem"
    if fs_type in LOCAL_FS_TYPES:
        return False, f"instances_path is on {fs_type}, a local filesystem"
    return None, f"cannot tell whether filesystem type {fs_type!r} is shared"


# --------------------------------------------------------------------------
# Which domain uses a directory (R8-R10 and every teardown that deletes files)
# --------------------------------------------------------------------------

FileIndex = Mapping[str, Sequence[tuple[Domain, str]]]


def file_index(domains: Iterable[Domain]) -> dict[str, list[tuple[Domain, str]]]:
    """Every directory holding a file of a domain, at any depth (and every path a
    domain names, for directory sources) -> [(domain, the file)].

    Built from ``Domain.files``, which the collector resolved to real paths; the
    instance directories are real paths too, so a lookup is one notion of path.
    """
    index: dict[str, list[tuple[Domain, str]]] = {}
    for dom in domains:
        for f in dom.files:
            p = f
            while True:
                index.setdefault(p, []).append((dom, f))
                parent = p.rsplit("/", 1)[0] or "/"
                if parent == p:
                    break
                p = parent
    return index


def dir_user(path: str, index: FileIndex, unreadable: Iterable[Domain] = (),
             own: tuple[str, str] | None = None) -> str | None:
    """Why ``path`` is in use by a domain, or None: a directory any defined domain
    uses is never deleted, whatever the domain's uuid or owner.

    ``own`` is the (uuid, name) of the one domain exempt: the very domain a
    teardown destroys and undefines itself. A domain whose XML could not be read
    may use any directory.
    """
    for dom, f in index.get(path, ()):
        if own is None or (dom.uuid, dom.name) != own:
            return f"domain {dom.name!r} ({dom.uuid}) uses {f}"
    for dom in unreadable:
        if own is None or (dom.uuid, dom.name) != own:
            return (f"the XML of domain {dom.name!r} ({dom.uuid}) could not be read, so it "
                    f"may use any directory")
    return None


def classify_dir(d: InstanceDir, row: InstanceRow | None, migs: list[MigrationRow],
                 host: str, *, domain_present: bool, shared: bool | None,
                 used_by_domain: str | None) -> Verdict | None:
    """Classify an instance directory (R8-R10). None: nothing to report.

    ``domain_present``: a domain with the directory's uuid is defined here.
    ``used_by_domain``: why a domain uses it (``dir_user``); such a directory is
    only ever logged.
    """
    ev = row_evidence(row)
    ev["dir"] = {"path": d.path, "size_bytes": d.size_bytes, "mtime": d.mtime}
    if migs:
        ev["migrations"] = migration_evidence(migs)
    verdict = _classify_dir(d, row, migs, host, domain_present, shared, ev)
    if verdict is not None and verdict.fixed_action is None and used_by_domain:
        ev["used_by_domain"] = used_by_domain
        return dataclasses.replace(
            verdict, fixed_action=Action.LOG,
            reason=f"{verdict.reason}; but {used_by_domain}: a directory a domain uses "
                   f"is never deleted")
    return verdict


def newest_resize(migs: Iterable[MigrationRow], host: str) -> MigrationRow | None:
    """The newest resize or cold migration touching this host (what made a _resize)."""
    moves = [m for m in migs if m.deleted == 0 and m.migration_type in ("resize", "migration")
             and host in (m.source_compute, m.dest_compute)]
    return max(moves, key=lambda m: m.id, default=None)


def _classify_dir(d, row, migs, host, domain_present, shared, ev) -> Verdict | None:
    if d.kind is DirKind.DELETING:
        return Verdict(Classification.INTERRUPTED_DELETE,
                       "an interrupted delete left this directory; finishing it", ev)
    if domain_present and d.kind is not DirKind.RESIZE:
        return None     # goes with its domain's classification and teardown
    live = row is not None and row.deleted == 0 and not row.archived
    flying = in_flight_migrations(migs, host)
    if live and (flying or row_in_flight(row)):
        return None
    if any(m.deleted == 0 for m in evacuations_from(migs, host, EVACUATING_STATUSES)):
        # The destination is rebuilding the instance from what it can reach; if the
        # evacuation fails, the files here may be its only copy. The domain (if any)
        # is powered off by R2a; the files wait until the evacuation is done.
        return None
    if d.kind is DirKind.RESIZE and domain_present:
        # The instance's own domain is here: only a live instance of this host whose
        # last resize is over leaves a stale _resize (a same-host resize confirmed
        # long ago); anything else goes with the domain's classification.
        if not (live and row.host == host and row.vm_state != "soft-delete"):
            return None
        last = newest_resize(migs, host)
        if last is None:
            return Verdict(Classification.STALE_RESIZE,
                           "_resize directory of a live instance, but no resize or "
                           "migration of it touching this host is recorded: only logging",
                           ev, fixed_action=Action.LOG)
        if (last.status or "") not in ENDED_MIGRATION_STATUSES:
            return None
        ev["newest_resize"] = migration_evidence([last])[0]
        if last.status not in RESIZE_SETTLED_STATUSES:
            # A resize that failed half way may have left the instance's only disk in
            # the _resize directory (renamed there before the copy, never moved back).
            return Verdict(Classification.STALE_RESIZE,
                           f"_resize directory of a live instance whose newest "
                           f"resize/migration ({last.migration_type} {last.id}) ended "
                           f"{last.status}: it may hold the only copy of the disk; "
                           f"only logging", ev, fixed_action=Action.LOG)
        cls, why = (Classification.STALE_RESIZE,
                    f"the instance is live here and its newest resize/migration "
                    f"({last.migration_type} {last.id}) is {last.status}")
    elif d.kind is DirKind.RESIZE:
        awaiting = [m for m in migs if m.deleted == 0 and m.source_compute == host
                    and m.migration_type in ("resize", "migration")
                    and (m.status or "") not in ENDED_MIGRATION_STATUSES]
        if awaiting or (live and row.vm_state == "resized"):
            return None
        cls, why = Classification.STALE_RESIZE, "no resize from this host awaits confirm/revert"
    else:
        if live and row.host == host:
            return None
        cls, why = Classification.ORPHAN_DIR, "no live instance on this host and no domain"
    # On shared (or possibly shared) storage the directory of an instance that is
    # alive elsewhere, or of a row this cell does not know, is someone else's disk.
    if shared is not False and (live or row is None or row.archived):
        return Verdict(cls, f"{why}; but instances_path may be shared and the instance "
                            f"may be alive on another host, so only logging", ev,
                       fixed_action=Action.LOG)
    return Verdict(cls, why, ev)


VOLUME_ID_LEN = 36


def attachment_drift(domain: Domain, volume_ids: set[str]) -> tuple[set[str], set[str]]:
    """R13: volumes in the XML with no live BDM, and live BDMs absent from the XML.

    Nova sets a volume disk's <serial> to the Cinder volume id; disks without a
    uuid-shaped serial are local image disks and are not compared.
    """
    in_xml = {disk.serial for disk in domain.disks
              if disk.serial and len(disk.serial) == VOLUME_ID_LEN}
    return in_xml - volume_ids, volume_ids - in_xml
