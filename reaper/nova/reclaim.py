"""The only writes the reaper makes to Nova's DB: claim, release and finalize a reclaim.

Mirrors nova-compute's ``_reclaim_queued_deletes`` -> ``_delete_instance`` ->
``instance_destroy`` (doc/design.md, "Teardown order"), with one difference made for
safety: the reaper first *claims* the row with a conditional UPDATE
(``task_state NULL -> 'deleting'`` only while the row is still ``soft-delete`` on our
host and expired). Nova's restore saves with ``expected_task_state=[None]``, so
whichever of the two writes first wins and the other changes nothing.

The claim is signed in its own transaction with an ``instance_system_metadata`` row
``reaper_claim = <host>:<time>:<pass id>`` (:class:`reaper.objects.ClaimMarker`).
A row at ``soft-delete`` / ``deleting`` is also what Nova's own force-delete looks
like, so only that marker tells a claim of this host from anything else: a pass
whose journal was lost can finish (:func:`adopt`) or :func:`release` its own claim,
and never touches one it cannot prove is its own. Release and finalize remove the
marker (hard-deleted, as Nova removes a system_metadata key).

All timestamps are naive UTC, as Nova stores them. Every function here raises
:class:`reaper.exception.NovaDBError` (with a message safe to log) when the database
fails; none returns a half-done state: finalize is one transaction.
"""
from __future__ import annotations

import datetime
import json
from typing import Any

import sqlalchemy as sa
from oslo_log import log as logging

from reaper import exception
from reaper.nova import db as nova_db
from reaper.nova import schema as s
from reaper.objects.nova import CLAIM_MARKER_KEY, CLAIM_MARKER_MAX, ClaimMarker

LOG = logging.getLogger(__name__)

SOFT_DELETED = "soft-delete"
DELETED = "deleted"
DELETING = "deleting"
NOSTATE = 0


def _naive_utc(now: datetime.datetime) -> datetime.datetime:
    if now.tzinfo is not None:
        now = now.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return now.replace(microsecond=0)   # MySQL DATETIME has no fraction in Nova's schema


def _db_error(exc: BaseException, engine: sa.Engine) -> exception.NovaDBError:
    return exception.NovaDBError(nova_db.describe_error(exc, engine))


def marker_for(host: str, now: datetime.datetime, pass_id: str) -> str:
    """The marker value :func:`claim` writes for this host, time and pass."""
    return ClaimMarker.make(host, _naive_utc(now), pass_id).value


def _marker_rows(uuid: str):
    """The live reclaim-claim markers of one instance (a WHERE clause)."""
    m = s.instance_system_metadata
    return sa.and_(m.c.instance_uuid == uuid, m.c.key == CLAIM_MARKER_KEY, m.c.deleted == 0)


def _ours(host: str, marker: str | None):
    """Marker rows this host wrote: exactly ``marker`` when given, else any of ``host``."""
    m = s.instance_system_metadata
    if marker is not None:
        return m.c.value == marker
    return m.c.value.startswith(host + ":", autoescape=True)


def claim(engine: sa.Engine, uuid: str, host: str, interval_s: float,
          now: datetime.datetime, pass_id: str = "-") -> bool:
    """Mark a reclaimable instance as being deleted by us. ONE transaction.

    A conditional UPDATE: True only if exactly one row changed: the row is live, on
    ``host``, still ``vm_state='soft-delete'`` with ``task_state`` NULL, and
    ``deleted_at`` is NULL (counts as old, as in Nova) or at least ``interval_s``
    seconds before ``now``. A concurrent restore (vm_state back to active, or
    task_state 'restoring') makes it return False and change nothing.

    In the same transaction the claim is signed: an ``instance_system_metadata`` row
    ``reaper_claim = <host>:<now>:<pass_id>`` (:class:`ClaimMarker`), after removing
    any marker left on the row (it was unclaimed, so any marker was stale). So the
    DB itself says whose claim a ``deleting`` row is, even if our journal is lost.
    """
    now = _naive_utc(now)
    marker = marker_for(host, now, pass_id)
    if len(marker) > CLAIM_MARKER_MAX:
        raise exception.NovaDBError(f"claim marker of host {host!r} is longer than "
                                    f"{CLAIM_MARKER_MAX} characters")
    cutoff = now - datetime.timedelta(seconds=max(0.0, float(interval_s)))
    i_, m = s.instances, s.instance_system_metadata
    stmt = (sa.update(i_)
            .where(i_.c.uuid == uuid, i_.c.host == host, i_.c.deleted == 0,
                   i_.c.vm_state == SOFT_DELETED, i_.c.task_state.is_(None),
                   sa.or_(i_.c.deleted_at.is_(None), i_.c.deleted_at <= cutoff))
            .values(task_state=DELETING, updated_at=now))
    try:
        with engine.begin() as conn:
            changed = conn.execute(stmt).rowcount
            if changed == 1:
                conn.execute(sa.delete(m).where(_marker_rows(uuid)))
                conn.execute(sa.insert(m).values(
                    instance_uuid=uuid, key=CLAIM_MARKER_KEY, value=marker, deleted=0,
                    created_at=now))
    except sa.exc.SQLAlchemyError as exc:
        raise _db_error(exc, engine) from None
    if changed not in (0, 1):       # uuid is unique: cannot happen on a Nova schema
        LOG.error("claim matched %d rows", changed, instance_uuid=uuid)
    return changed == 1


def _claimed_by(uuid: str, host: str, marker: str | None):
    """The instances row is claimed (soft-delete, 'deleting') on ``host`` and carries
    our marker: one WHERE clause, so the check and the write are one statement."""
    i_ = s.instances
    return sa.and_(
        i_.c.uuid == uuid, i_.c.host == host, i_.c.deleted == 0,
        i_.c.vm_state == SOFT_DELETED, i_.c.task_state == DELETING,
        sa.exists().where(_marker_rows(uuid), _ours(host, marker)))


def adopt(engine: sa.Engine, uuid: str, host: str, marker: str, now: datetime.datetime,
          pass_id: str = "-") -> bool:
    """Take over a stranded claim of this host: a compare-and-swap of its marker.

    ONE conditional UPDATE: the marker row whose value is exactly ``marker`` is
    rewritten to name this pass, only while the instance is still claimed on ``host``
    (live, soft-delete, 'deleting'). True if it was; False (nothing changed) if the
    claim is gone or is no longer that one.
    """
    now = _naive_utc(now)
    i_, m = s.instances, s.instance_system_metadata
    new = marker_for(host, now, pass_id)
    still_claimed = sa.exists().where(
        i_.c.uuid == uuid, i_.c.host == host, i_.c.deleted == 0,
        i_.c.vm_state == SOFT_DELETED, i_.c.task_state == DELETING)
    stmt = (sa.update(m).where(_marker_rows(uuid), m.c.value == marker, still_claimed)
            .values(value=new, updated_at=now))
    try:
        with engine.begin() as conn:
            return conn.execute(stmt).rowcount >= 1
    except sa.exc.SQLAlchemyError as exc:
        raise _db_error(exc, engine) from None


def release(engine: sa.Engine, uuid: str, host: str, now: datetime.datetime | None = None,
            marker: str | None = None) -> bool:
    """Undo :func:`claim`: give the row back to Nova. ONE transaction.

    Only OUR claim is released: the row must be live on ``host``, ``soft-delete``,
    ``task_state='deleting'`` AND carry a marker of ``host`` (exactly ``marker`` when
    given) -- checked in the same UPDATE that sets ``task_state`` back to NULL
    (reclaimable again, restorable again). Nova's own delete (no marker) or another
    host's claim is never touched. The marker rows are then hard-deleted, as Nova
    removes a system_metadata key. True if the claim was released.
    """
    i_, m = s.instances, s.instance_system_metadata
    values: dict[str, Any] = {"task_state": None}
    if now is not None:
        values["updated_at"] = _naive_utc(now)
    stmt = sa.update(i_).where(_claimed_by(uuid, host, marker)).values(**values)
    try:
        with engine.begin() as conn:
            if conn.execute(stmt).rowcount != 1:
                return False
            conn.execute(sa.delete(m).where(_marker_rows(uuid), _ours(host, marker)))
            return True
    except sa.exc.SQLAlchemyError as exc:
        raise _db_error(exc, engine) from None


def _row_state(conn: sa.Connection, uuid: str) -> dict[str, Any] | None:
    i_ = s.instances
    row = conn.execute(sa.select(i_.c.id, i_.c.host, i_.c.vm_state, i_.c.task_state,
                                 i_.c.deleted).where(i_.c.uuid == uuid)).first()
    return dict(row._mapping) if row is not None else None


def _markers(conn: sa.Connection, uuid: str) -> list[str]:
    m = s.instance_system_metadata
    return [r.value for r in conn.execute(sa.select(m.c.value).where(_marker_rows(uuid))
                                          .order_by(m.c.id))]


def _archived(conn: sa.Connection, uuid: str) -> bool:
    sh = s.shadow_instances
    try:
        return conn.execute(sa.select(sh.c.id).where(sh.c.uuid == uuid).limit(1)).first() \
            is not None
    except sa.exc.DBAPIError as exc:
        if nova_db.is_missing_table(exc):
            return False
        raise


CLEAN_ATTEMPTS_KEY = "clean_attempts"
EMPTY_NETWORK_INFO = "[]"


def _clean_attempts(conn: sa.Connection, uuid: str, now: datetime.datetime) -> str:
    """Count this delete in ``clean_attempts``, as the libvirt driver's ``_cleanup``
    does when it deletes the instance directory: the live value plus one (``"1"``
    the first time), updated in place or inserted. Nova's ``int()`` would raise on
    a value that is not a number; here it counts as 0 (a reclaim is not held up by
    a corrupt counter). Returns the value written."""
    m = s.instance_system_metadata
    live = sa.and_(m.c.instance_uuid == uuid, m.c.key == CLEAN_ATTEMPTS_KEY, m.c.deleted == 0)
    row = conn.execute(sa.select(m.c.id, m.c.value).where(live).order_by(m.c.id)).first()
    try:
        attempts = int(row.value) if row is not None else 0
    except (TypeError, ValueError):
        LOG.warning("clean_attempts %r is not a number: counted as 0", row.value,
                    instance_uuid=uuid)
        attempts = 0
    value = str(attempts + 1)
    if row is None:
        conn.execute(sa.insert(m).values(instance_uuid=uuid, key=CLEAN_ATTEMPTS_KEY,
                                          value=value, deleted=0, created_at=now))
    else:
        conn.execute(sa.update(m).where(m.c.id == row.id)
                     .values(value=value, updated_at=now))
    return value


def finalize(engine: sa.Engine, uuid: str, now: datetime.datetime,
             host: str | None = None, *, cleaned: bool = True,
             ports_released: bool = False) -> dict[str, Any]:
    """Finish a claimed reclaim in the DB exactly as Nova's own reclaim leaves it.

    ONE transaction, in the order of nova-compute's ``_delete_instance``:

    1. the libvirt driver's ``_cleanup`` after ``delete_instance_files``:
       ``system_metadata['clean_attempts']`` = its live value + 1 (``"1"`` the first
       time; updated in place or inserted, as ``Instance.save()`` writes a key) and
       ``instances.cleaned = 1`` when the instance's files are gone (``cleaned``;
       False leaves 0, so nova-compute's ``_run_pending_deletes`` retries the files,
       as after a failed ``delete_instance_files``);
    2. with ``ports_released`` (the Neutron step unbound or deleted the ports, as
       ``deallocate_for_instance`` does): ``instance_info_caches.network_info`` of the
       live row set to ``'[]'`` (``updated_at`` = now), what that function's
       ``update_instance_cache_with_nw_info(NetworkInfo([]))`` writes. Without it the
       cache keeps the ports, which the reclaim then reports as leftovers;
    3. ``_delete_instance``'s save: ``vm_state='deleted'``, ``task_state`` NULL,
       ``power_state=0``, ``terminated_at=updated_at=now``;
    4. ``instance_destroy``: the row soft-deleted (``deleted=id``, ``deleted_at=now``),
       every live row of each table in ``schema.DEPENDENT_TABLES`` naming the instance
       soft-deleted (``deleted`` = the row's own id, ``updated_at`` kept, as oslo.db's
       ``soft_delete`` does; the clean_attempts row too), and the rows of
       ``schema.HARD_DELETED_TABLES`` (``tags``, ``console_auth_tokens``: no
       ``deleted`` column) deleted, as ``instance_destroy`` deletes them (and
       ``_complete_deletion``'s ``clean_console_auths_for_instance`` before it).

    The claim markers are hard-deleted first, as Nova removes a system_metadata key.

    Nova's API database is not touched, because Nova's reclaim does not touch it:
    nova-compute has no API DB access; ``instance_mappings.queued_for_delete`` was set
    by nova-api's soft delete and stays; ``nova-manage db archive_deleted_rows``
    removes the mapping (and the request spec) when it archives the row.

    The instance row must still be claimed by us (live, ``soft-delete``,
    ``task_state='deleting'``, and, if ``host`` is given, on ``host`` with a
    ``reaper_claim`` marker of ``host``).

    Returns ``{"uuid", "result", "finalized", "already_finalized", "reason", "counts"}``
    where ``result`` is one of ``finalized`` (``counts`` per table, ``instances``
    included; plus ``clean_attempts`` and ``network_info_emptied``),
    ``already_finalized`` (nothing changed: a repeat is harmless), ``not_claimed`` or
    ``not_found`` (rolled back, nothing changed: the caller must not report the
    reclaim as done).
    """
    now = _naive_utc(now)
    i_ = s.instances
    out: dict[str, Any] = {"uuid": uuid, "result": None, "finalized": False,
                           "already_finalized": False, "reason": None, "counts": {}}
    where = [i_.c.uuid == uuid, i_.c.deleted == 0, i_.c.vm_state == SOFT_DELETED,
             i_.c.task_state == DELETING]
    if host is not None:
        where.append(i_.c.host == host)
        where.append(sa.exists().where(_marker_rows(uuid), _ours(host, None)))
    # _cleanup's save (cleaned), _delete_instance's save and instance_destroy's
    # soft_delete, in one statement: deleted = id is evaluated on the row itself.
    stmt = (sa.update(i_).where(*where)
            .values(vm_state=DELETED, task_state=None, power_state=NOSTATE,
                    cleaned=1 if cleaned else 0,
                    terminated_at=now, updated_at=now, deleted_at=now, deleted=i_.c.id))
    ic = s.instance_info_caches
    try:
        with engine.connect() as conn:
            trans = conn.begin()
            try:
                changed = conn.execute(stmt).rowcount
                if changed != 1:
                    state = _row_state(conn, uuid)
                    if state is not None:
                        state["markers"] = _markers(conn, uuid)
                    trans.rollback()
                    return _not_finalized(conn, out, uuid, state, host)
                counts = {"instances": 1}
                markers = conn.execute(sa.delete(s.instance_system_metadata)
                                       .where(_marker_rows(uuid))).rowcount
                attempts = _clean_attempts(conn, uuid, now)
                emptied = 0
                if ports_released:
                    emptied = conn.execute(
                        sa.update(ic).where(ic.c.instance_uuid == uuid, ic.c.deleted == 0)
                        .values(network_info=EMPTY_NETWORK_INFO, updated_at=now)).rowcount
                for table, col in s.DEPENDENT_TABLES:
                    res = conn.execute(
                        sa.update(table)
                        .where(table.c[col] == uuid, table.c.deleted == 0)
                        .values(deleted=table.c.id, deleted_at=now))
                    counts[table.name] = res.rowcount
                for table, col in s.HARD_DELETED_TABLES:
                    counts[table.name] = conn.execute(
                        sa.delete(table).where(table.c[col] == uuid)).rowcount
                trans.commit()
            except BaseException:
                if trans.is_active:
                    trans.rollback()
                raise
    except sa.exc.SQLAlchemyError as exc:
        raise _db_error(exc, engine) from None
    LOG.info("finalized reclaim: %s", counts, instance_uuid=uuid)
    out.update(result="finalized", finalized=True, counts=counts,
               claim_markers_removed=markers, clean_attempts=attempts,
               network_info_emptied=emptied)
    return out


def _not_finalized(conn: sa.Connection, out: dict[str, Any], uuid: str,
                   state: dict[str, Any] | None, host: str | None) -> dict[str, Any]:
    if state is None:
        if _archived(conn, uuid):
            out.update(result="already_finalized", already_finalized=True,
                       reason="the row is archived in shadow_instances")
        else:
            out.update(result="not_found", reason="no instances row with this uuid")
    elif state["deleted"] != 0:
        out.update(result="already_finalized", already_finalized=True,
                   reason=f"the row is already deleted (vm_state={state['vm_state']})")
    else:
        out.update(result="not_claimed",
                   reason=f"the row is not claimed by this reaper: vm_state="
                          f"{state['vm_state']} task_state={state['task_state']} "
                          f"host={state['host']}" + (f" (expected {host})" if host else "")
                          + f" claim markers={state.get('markers', [])}")
    conn.rollback()
    return out


def _port_ids(network_info: str | None) -> tuple[list[str], bool]:
    """Port ids of the VIFs in an info cache's network_info; (ids, unparsable)."""
    if network_info is None or network_info.strip() == "":
        return [], False
    try:
        vifs = json.loads(network_info)
    except (ValueError, TypeError, RecursionError, MemoryError):    # hostile values too
        return [], True
    if not isinstance(vifs, list):
        return [], True
    ids, bad = [], False
    for vif in vifs:
        if isinstance(vif, dict) and isinstance(vif.get("id"), str) and vif["id"]:
            ids.append(vif["id"])
        else:
            bad = True
    return ids, bad


def leftovers(engine: sa.Engine, uuid: str) -> dict[str, Any]:
    """What only controller APIs can finish after a reclaim; read BEFORE finalize.

    Two SELECTs on live rows (``deleted == 0``), never ``connection_info`` (it can
    hold CHAP secrets). Returns::

        {"instance_uuid": uuid,
         "volumes_delete_on_termination": [volume_id, ...],  # Cinder: delete
         "volumes_attached": [volume_id, ...],               # Cinder: detach
         "attachment_ids": [attachment_id, ...],             # Cinder attachments API
         "ports": [port_id, ...],                            # Neutron: unbind/delete
         "network_info_unparsable": bool,
         "allocations": {"consumer": uuid}}                  # Placement consumer
    """
    b, ic = s.block_device_mapping, s.instance_info_caches
    try:
        with engine.connect() as conn:
            bdms = list(conn.execute(
                sa.select(b.c.volume_id, b.c.attachment_id, b.c.destination_type,
                          b.c.delete_on_termination)
                .where(b.c.instance_uuid == uuid, b.c.deleted == 0).order_by(b.c.id)))
            cache = conn.execute(
                sa.select(ic.c.network_info)
                .where(ic.c.instance_uuid == uuid, ic.c.deleted == 0)).first()
    except sa.exc.SQLAlchemyError as exc:
        raise _db_error(exc, engine) from None
    volumes = [r for r in bdms if r.destination_type == "volume" and r.volume_id]
    ports, unparsable = _port_ids(cache.network_info if cache is not None else None)
    return {
        "instance_uuid": uuid,
        "volumes_delete_on_termination": [r.volume_id for r in volumes
                                          if r.delete_on_termination],
        "volumes_attached": [r.volume_id for r in volumes],
        "attachment_ids": [r.attachment_id for r in volumes if r.attachment_id],
        "ports": ports,
        "network_info_unparsable": unparsable,
        "allocations": {"consumer": uuid},
    }
