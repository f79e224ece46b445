"""The only writes the reaper makes to Nova's DB: claim, release and finalize a reclaim.

Mirrors nova-compute's ``_reclaim_queued_deletes`` -> ``_delete_instance`` ->
``instance_destroy`` (DESIGN.md section 4 step 6), with one difference made for
safety: the reaper first *claims* the row with a conditional UPDATE
(``task_state NULL -> 'deleting'`` only while the row is still ``soft-delete`` on our
host and expired). Nova's restore saves with ``expected_task_state=[None]``, so
whichever of the two writes first wins and the other changes nothing.

All timestamps are naive UTC, as Nova stores them. Every function here raises
:class:`reaper.nova.db.NovaDBError` (with a message safe to log) when the database
fails; none returns a half-done state: finalize is one transaction.
"""
from __future__ import annotations

import datetime
import json
from typing import Any

import sqlalchemy as sa
from oslo_log import log as logging

from reaper.nova import db as nova_db
from reaper.nova import schema as s

LOG = logging.getLogger(__name__)

SOFT_DELETED = "soft-delete"
DELETED = "deleted"
DELETING = "deleting"
NOSTATE = 0


def _naive_utc(now: datetime.datetime) -> datetime.datetime:
    if now.tzinfo is not None:
        now = now.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return now.replace(microsecond=0)   # MySQL DATETIME has no fraction in Nova's schema


def _db_error(exc: BaseException, engine: sa.Engine) -> nova_db.NovaDBError:
    return nova_db.NovaDBError(nova_db.describe_error(exc, engine))


def claim(engine: sa.Engine, uuid: str, host: str, interval_s: float,
          now: datetime.datetime) -> bool:
    """Mark a reclaimable instance as being deleted by us. ONE conditional UPDATE.

    True only if exactly one row changed: the row is live, on ``host``, still
    ``vm_state='soft-delete'`` with ``task_state`` NULL, and ``deleted_at`` is NULL
    (counts as old, as in Nova) or at least ``interval_s`` seconds before ``now``.
    A concurrent restore (vm_state back to active, or task_state 'restoring') makes
    it return False and change nothing.
    """
    now = _naive_utc(now)
    cutoff = now - datetime.timedelta(seconds=max(0.0, float(interval_s)))
    i_ = s.instances
    stmt = (sa.update(i_)
            .where(i_.c.uuid == uuid, i_.c.host == host, i_.c.deleted == 0,
                   i_.c.vm_state == SOFT_DELETED, i_.c.task_state.is_(None),
                   sa.or_(i_.c.deleted_at.is_(None), i_.c.deleted_at <= cutoff))
            .values(task_state=DELETING, updated_at=now))
    try:
        with engine.begin() as conn:
            changed = conn.execute(stmt).rowcount
    except sa.exc.SQLAlchemyError as exc:
        raise _db_error(exc, engine) from None
    if changed not in (0, 1):       # uuid is unique: cannot happen on a Nova schema
        LOG.error("claim of %s matched %d rows", uuid, changed)
    return changed == 1


def release(engine: sa.Engine, uuid: str, now: datetime.datetime | None = None) -> bool:
    """Undo :func:`claim` when the host teardown could not proceed. ONE UPDATE.

    Only a row still ``soft-delete`` with ``task_state='deleting'`` goes back to
    ``task_state`` NULL (reclaimable again, restorable again). True if it did.
    """
    i_ = s.instances
    values: dict[str, Any] = {"task_state": None}
    if now is not None:
        values["updated_at"] = _naive_utc(now)
    stmt = (sa.update(i_)
            .where(i_.c.uuid == uuid, i_.c.deleted == 0, i_.c.vm_state == SOFT_DELETED,
                   i_.c.task_state == DELETING)
            .values(**values))
    try:
        with engine.begin() as conn:
            return conn.execute(stmt).rowcount == 1
    except sa.exc.SQLAlchemyError as exc:
        raise _db_error(exc, engine) from None


def _row_state(conn: sa.Connection, uuid: str) -> dict[str, Any] | None:
    i_ = s.instances
    row = conn.execute(sa.select(i_.c.id, i_.c.host, i_.c.vm_state, i_.c.task_state,
                                 i_.c.deleted).where(i_.c.uuid == uuid)).first()
    return dict(row._mapping) if row is not None else None


def _archived(conn: sa.Connection, uuid: str) -> bool:
    sh = s.shadow_instances
    try:
        return conn.execute(sa.select(sh.c.id).where(sh.c.uuid == uuid).limit(1)).first() \
            is not None
    except sa.exc.DBAPIError as exc:
        if nova_db.is_missing_table(exc):
            return False
        raise


def finalize(engine: sa.Engine, uuid: str, now: datetime.datetime,
             host: str | None = None) -> dict[str, Any]:
    """Finish a claimed reclaim in the DB, as ``_delete_instance`` + ``instance_destroy``.

    ONE transaction. The instance row must still be claimed by us (live,
    ``soft-delete``, ``task_state='deleting'``, and on ``host`` if given); it becomes
    ``vm_state='deleted'``, ``task_state`` NULL, ``power_state=0``,
    ``terminated_at=updated_at=now`` and is soft-deleted (``deleted=id``,
    ``deleted_at=now``), and so is every live row of each table in
    ``schema.DEPENDENT_TABLES`` naming the instance (``deleted`` = that row's own id,
    ``updated_at`` left as it was, as oslo.db's ``soft_delete`` does).

    Returns ``{"uuid", "result", "finalized", "already_finalized", "reason", "counts"}``
    where ``result`` is one of ``finalized`` (``counts`` per table, ``instances``
    included), ``already_finalized`` (nothing changed: a repeat is harmless),
    ``not_claimed`` or ``not_found`` (rolled back, nothing changed: the caller must
    not report the reclaim as done).
    """
    now = _naive_utc(now)
    i_ = s.instances
    out: dict[str, Any] = {"uuid": uuid, "result": None, "finalized": False,
                           "already_finalized": False, "reason": None, "counts": {}}
    where = [i_.c.uuid == uuid, i_.c.deleted == 0, i_.c.vm_state == SOFT_DELETED,
             i_.c.task_state == DELETING]
    if host is not None:
        where.append(i_.c.host == host)
    # _delete_instance's save and instance_destroy's soft_delete, in one statement:
    # deleted = id is evaluated on the row itself.
    stmt = (sa.update(i_).where(*where)
            .values(vm_state=DELETED, task_state=None, power_state=NOSTATE,
                    terminated_at=now, updated_at=now, deleted_at=now, deleted=i_.c.id))
    try:
        with engine.connect() as conn:
            trans = conn.begin()
            try:
                changed = conn.execute(stmt).rowcount
                if changed != 1:
                    state = _row_state(conn, uuid)
                    trans.rollback()
                    return _not_finalized(conn, out, uuid, state, host)
                counts = {"instances": 1}
                for table, col in s.DEPENDENT_TABLES:
                    res = conn.execute(
                        sa.update(table)
                        .where(table.c[col] == uuid, table.c.deleted == 0)
                        .values(deleted=table.c.id, deleted_at=now))
                    counts[table.name] = res.rowcount
                trans.commit()
            except BaseException:
                if trans.is_active:
                    trans.rollback()
                raise
    except sa.exc.SQLAlchemyError as exc:
        raise _db_error(exc, engine) from None
    LOG.info("finalized reclaim of %s: %s", uuid, counts)
    out.update(result="finalized", finalized=True, counts=counts)
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
                          f"host={state['host']}" + (f" (expected {host})" if host else ""))
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
