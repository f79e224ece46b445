"""Read side of Nova's DB: the per-pass view, compare-and-act re-reads, compute hosts.

``load_view`` costs the same number of round trips whatever the number of
instances: 5 statements, plus 1 (instances by uuid) only when some locally seen uuid
or some migration's instance is not a live row of our host, 1 (``shadow_instances``)
only when some locally seen uuid has no row in ``instances``, and 1 (claim markers)
only when a row of our host is claimed. Lists of uuids go in one expanding ``IN``
each, and only the few that our host's rows do not already cover: the locally seen
uuids that are live rows of our host (nearly all) are never sent. Only past
``db.max_in_params`` uuids (10,000) is a list split into batches, one more statement
per batch.

Statements, in order, all in one transaction (one consistent snapshot on InnoDB at
REPEATABLE READ, its default; pysqlite starts none for SELECTs unless the caller asks
for the change check, so there each statement sees the file as it is then):

1. instances: ``host = our host AND deleted = 0`` (instances_host_deleted_cleaned_idx).
2. migrations: live migrations whose source or destination is our host and whose
   status is not final (or NULL), UNION ALL every migration of a locally seen uuid,
   deleted rows included (Nova reads evacuations with ``read_deleted='yes'``): those
   of our live rows through a ``host = ... AND deleted = 0`` subquery (kept only for
   locally seen uuids), the others by uuid.
2b. instances: ``uuid IN (local + uuids of the migrations above)``, any ``deleted``
   (uniq_instances0uuid), leaving out the rows of statement 1; skipped when there is
   none. So ``instances`` may hold rows of other hosts: those seen locally and those
   migrating to or from us; callers must look at ``host``.
3. shadow_instances (archived rows) for the local uuids still missing; skipped when
   none is missing or the table does not exist.
4. live block_device_mapping rows and 5. live instance_info_caches rows of every
   instance found plus every local uuid: our host's live instances through a
   subquery, the few others by uuid.
6. live compute_nodes of our host.
7. only when some row of our host is claimed (``soft-delete`` with ``task_state
   'deleting'``): the live ``reaper_claim`` system_metadata markers of those rows,
   so the planner can tell this host's claims from Nova's own deletes.

With ``fingerprint=True`` (the agent, ``[reaper] full_view_interval``) one more
statement, the change check of ``reaper.nova.changes`` over these rows, ends the
same transaction: the light parts, and with ``deep=True`` (``[reaper]
deep_check_interval``) the block device mappings and info caches too, so that the
later deep checks have the full read's fingerprint to compare with.

Timestamps are Nova's naive UTC datetimes, returned as they are.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import sqlalchemy as sa
from oslo_log import log as logging

from reaper import exception
from reaper.nova import db as nova_db
from reaper.nova import schema as s
from reaper.nova.columns import (
    BDM_COLS as _BDM_COLS, INSTANCE_COLS as _INSTANCE_COLS, MIGRATION_COLS as _MIGRATION_COLS,
    host_migrations_clause as _host_migrations_clause)
from reaper.objects.nova import (
    CLAIM_MARKER_KEY,
    BdmRow,
    ComputeNodeRow,
    InfoCacheRow,
    InstanceRow,
    MigrationRow,
    NovaView,
)

LOG = logging.getLogger(__name__)




class _Runner:
    """Executes statements on one connection and counts them."""

    def __init__(self, conn: sa.Connection):
        self.conn = conn
        self.queries = 0

    def rows(self, stmt) -> list[sa.Row]:
        self.queries += 1
        return list(self.conn.execute(stmt))


def _cols(table: sa.Table, names: Sequence[str]) -> list[sa.ColumnElement]:
    return [table.c[n] for n in names]


def _batches(values: Sequence[str], size: int) -> list[list[str]]:
    """At least one batch (possibly empty), so statement counts do not depend on N."""
    values = list(values)
    if not values:
        return [[]]
    return [values[i:i + size] for i in range(0, len(values), size)]


def _uniq(values: Iterable[str]) -> list[str]:
    return sorted({v for v in values if v})


def _instance(row, archived: bool = False) -> InstanceRow:
    m = row._mapping
    return InstanceRow(
        id=m["id"], uuid=m["uuid"], host=m["host"], node=m["node"],
        vm_state=m["vm_state"], task_state=m["task_state"], power_state=m["power_state"],
        deleted=m["deleted"] or 0, deleted_at=m["deleted_at"],
        display_name=m["display_name"], project_id=m["project_id"], user_id=m["user_id"],
        archived=archived)


def _migration(row) -> MigrationRow:
    m = row._mapping
    return MigrationRow(
        id=m["id"], uuid=m["uuid"], instance_uuid=m["instance_uuid"],
        source_compute=m["source_compute"], dest_compute=m["dest_compute"],
        source_node=m["source_node"], dest_node=m["dest_node"], status=m["status"],
        migration_type=m["migration_type"], deleted=m["deleted"] or 0)


def _bdm(row) -> BdmRow:
    m = row._mapping
    return BdmRow(
        id=m["id"], instance_uuid=m["instance_uuid"], volume_id=m["volume_id"],
        source_type=m["source_type"], destination_type=m["destination_type"],
        device_name=m["device_name"], delete_on_termination=bool(m["delete_on_termination"]),
        connection_info=m["connection_info"], attachment_id=m["attachment_id"])


def _live_here(row: InstanceRow | None, host: str) -> bool:
    return row is not None and not row.archived and row.deleted == 0 and row.host == host


def _load_instances_here(run: _Runner, host: str) -> dict[str, InstanceRow]:
    """Our host's live rows: ``host = ... AND deleted = 0``."""
    i_ = s.instances
    return {r.uuid: _instance(r) for r in run.rows(
        sa.select(*_cols(i_, _INSTANCE_COLS)).where(i_.c.host == host, i_.c.deleted == 0))}


def _load_migrations(run: _Runner, host: str, local: list[str], here: dict[str, InstanceRow],
                     size: int) -> list[MigrationRow]:
    """Migrations touching our host (open ones) and every migration of a local uuid.

    The local uuids that are live rows of our host (nearly all of them) are not sent:
    their migrations come through the ``host = ... AND deleted = 0`` subquery and only
    those of local uuids are kept, so the rows are the same as with the whole list,
    without sending it (a list of 1,000 uuids cost more than the rest of the
    statement). Only the local uuids not in ``here`` go by uuid."""
    m, i_ = s.migrations, s.instances
    wanted = set(local)
    rest = [u for u in local if u not in here]
    cols = _cols(m, _MIGRATION_COLS)
    found: dict[int, MigrationRow] = {}
    for i, batch in enumerate(_batches(rest, size)):
        parts = []
        if i == 0:
            # Separate selects rather than one OR so each can use its own index
            # (deleted+source_compute / deleted+dest_compute, instance_uuid).
            ours = sa.select(i_.c.uuid).where(i_.c.host == host, i_.c.deleted == 0)
            parts += [sa.select(*cols, sa.literal(1).label("keep"))
                      .where(_host_migrations_clause(host)),
                      sa.select(*cols, sa.literal(0).label("keep"))
                      .where(m.c.instance_uuid.in_(ours))]
        if batch:
            parts.append(sa.select(*cols, sa.literal(1).label("keep"))
                         .where(m.c.instance_uuid.in_(batch)))
        for row in run.rows(sa.union_all(*parts)):
            if row.keep or row.instance_uuid in wanted:
                mig = _migration(row)
                found[mig.id] = mig
    return sorted(found.values(), key=lambda mg: mg.id)


def _load_instances(run: _Runner, uuids: list[str], size: int) -> dict[str, InstanceRow]:
    """The rows of ``uuids``, any host, any ``deleted``; none when the list is empty."""
    i_ = s.instances
    found: dict[str, InstanceRow] = {}
    for batch in _batches(uuids, size) if uuids else []:
        for row in run.rows(sa.select(*_cols(i_, _INSTANCE_COLS)).where(i_.c.uuid.in_(batch))):
            found[row.uuid] = _instance(row)
    return found


def _load_shadow(run: _Runner, missing: list[str], size: int) -> dict[str, InstanceRow]:
    sh = s.shadow_instances
    found: dict[str, InstanceRow] = {}
    for batch in _batches(missing, size):
        stmt = (sa.select(*_cols(sh, _INSTANCE_COLS)).where(sh.c.uuid.in_(batch))
                .order_by(sh.c.id))
        try:
            rows = run.rows(stmt)
        except sa.exc.DBAPIError as exc:
            if nova_db.is_missing_table(exc):
                LOG.debug("no shadow_instances table: archived rows cannot be seen")
                return found
            raise
        for row in rows:           # the newest archived row of a uuid wins
            found[row.uuid] = _instance(row, archived=True)
    return found


def _load_claim_markers(run: _Runner, uuids: list[str], size: int
                        ) -> dict[str, tuple[str, ...]]:
    m = s.instance_system_metadata
    found: dict[str, list[str]] = {}
    for batch in _batches(uuids, size):
        stmt = (sa.select(m.c.instance_uuid, m.c.value)
                .where(m.c.instance_uuid.in_(batch), m.c.key == CLAIM_MARKER_KEY,
                       m.c.deleted == 0)
                .order_by(m.c.id))
        for r in run.rows(stmt):
            found.setdefault(r.instance_uuid, []).append(r.value)
    return {u: tuple(v) for u, v in found.items()}


def _load_by_instance(run: _Runner, table: sa.Table, cols: Sequence[str], host: str,
                      others: list[str], size: int) -> list[sa.Row]:
    """Live rows of ``table`` for our host's live instances (a subquery, so no uuid
    list travels for them) and for ``others``, the other instances of the view."""
    i_ = s.instances
    ours = sa.select(i_.c.uuid).where(i_.c.host == host, i_.c.deleted == 0)
    out: list[sa.Row] = []
    for n, batch in enumerate(_batches(others, size)):
        match = [table.c.instance_uuid.in_(batch)] if batch else []
        if n == 0:
            match.append(table.c.instance_uuid.in_(ours))
        stmt = (sa.select(*_cols(table, cols))
                .where(sa.or_(*match), table.c.deleted == 0)
                .order_by(table.c.id))
        out.extend(run.rows(stmt))
    return out


def load_view(engine: sa.Engine, host: str, local_uuids: Iterable[str], *,
              fingerprint: bool = False, deep: bool = False) -> NovaView:
    """Everything the planner needs from Nova's DB for ``host``. Never raises.

    On any database error the view is ``ok=False`` with a one-line ``error`` that
    names the database without its password, and the planner must act on nothing.

    ``fingerprint``: also read, as the last statement of the same transaction, the
    change check of ``reaper.nova.changes`` for exactly these rows (one statement
    more; on SQLite the reads then run in one explicit transaction, so they see one
    state of the file). ``view.fingerprint`` stays None when it is unavailable.
    ``deep``: that check hashes the block device mappings and info caches too.
    """
    local = _uniq(local_uuids)
    size = nova_db.max_in_params(engine)
    run = None
    fp = None
    try:
        with engine.connect() as conn:
            run = _Runner(conn)
            if fingerprint and conn.dialect.name == "sqlite":
                conn.exec_driver_sql("BEGIN")   # one snapshot for the view and its check
            instances = _load_instances_here(run, host)
            migrations = _load_migrations(run, host, local, instances, size)
            wanted = _uniq(u for u in [*local, *(mg.instance_uuid for mg in migrations)]
                           if u not in instances)
            instances.update(_load_instances(run, wanted, size))
            missing = [u for u in local if u not in instances]
            if missing:
                instances.update(_load_shadow(run, missing, size))
            others = _uniq(u for u in [*instances, *local]
                           if not _live_here(instances.get(u), host))
            bdms = tuple(_bdm(r) for r in _load_by_instance(
                run, s.block_device_mapping, _BDM_COLS, host, others, size))
            caches = {r.instance_uuid: InfoCacheRow(instance_uuid=r.instance_uuid,
                                                    network_info=r.network_info)
                      for r in _load_by_instance(run, s.instance_info_caches,
                                                 ("id", "instance_uuid", "network_info"),
                                                 host, others, size)}
            cn = s.compute_nodes
            nodes = tuple(
                ComputeNodeRow(id=r.id, uuid=r.uuid, host=r.host,
                               hypervisor_hostname=r.hypervisor_hostname)
                for r in run.rows(sa.select(cn.c.id, cn.c.uuid, cn.c.host,
                                            cn.c.hypervisor_hostname)
                                  .where(cn.c.host == host, cn.c.deleted == 0)
                                  .order_by(cn.c.id)))
            claimed = _uniq(u for u, r in instances.items() if r.is_claimed and r.host == host)
            markers = _load_claim_markers(run, claimed, size) if claimed else {}
            if fingerprint:
                fp = _fingerprint(run, engine, host, others,
                                  [u for u in local if u not in instances or
                                   instances[u].archived], deep)
            # read only: closing the connection rolls the snapshot back (one ROLLBACK;
            # an explicit one first would make the pool send a second on check-in)
    except Exception as exc:  # the view reports, never raises
        msg = nova_db.describe_error(exc, engine)
        if isinstance(exc, sa.exc.SQLAlchemyError):
            LOG.warning("Nova DB view for host %s unavailable: %s", host, msg)
        else:
            LOG.exception("Nova DB view for host %s failed: %s", host, msg)
        return NovaView(ok=False, queries=run.queries if run else 0,
                        error=f"Nova DB unavailable: {msg}")
    return NovaView(ok=True, instances=instances, migrations=tuple(migrations), bdms=bdms,
                    info_caches=caches, compute_nodes=nodes, claim_markers=markers,
                    queries=run.queries, fingerprint=fp)


def _fingerprint(run: _Runner, engine: sa.Engine, host: str, others: list[str],
                 missing: list[str], deep: bool = False):
    """The change check of the rows just read, or None (never fails the view)."""
    from reaper.nova import changes

    if not changes.available(engine, others, missing):
        return None
    for archived in ((missing, ()) if missing else ((),)):
        run.queries += 1
        try:
            return changes.read_in(run.conn, host, others, archived, deep)
        except sa.exc.DBAPIError as exc:
            if archived and nova_db.is_missing_table(exc):
                continue        # no shadow_instances: the view read none either
            LOG.debug("change check unavailable: %s", nova_db.describe_error(exc, engine))
            return None
    return None


# --------------------------------------------------------------------------
# Compare-and-act re-reads and controller helpers. These raise NovaDBError.
# --------------------------------------------------------------------------

def load_soft_deleted(engine: sa.Engine, host: str) -> tuple[InstanceRow, ...]:
    """This host's soft-deleted rows (live, ``vm_state = 'soft-delete'``), oldest id
    first. One statement on instances_host_node_deleted_idx.

    Every row a reclaim rule can act on or report is one of them: R7 needs a live
    ``soft-delete`` row of this host, R7a and R7b a claimed one (the same, at
    ``task_state 'deleting'``); see ``rules.reclaim_candidates``. The reclaim pass
    reads these first and the whole view only when one of them is a candidate.
    """
    i_ = s.instances
    stmt = (sa.select(*_cols(i_, _INSTANCE_COLS))
            .where(i_.c.host == host, i_.c.deleted == 0, i_.c.vm_state == "soft-delete")
            .order_by(i_.c.id))
    return _reread(engine, lambda conn: tuple(_instance(r) for r in conn.execute(stmt)))


def reread_instance(engine: sa.Engine, uuid: str) -> InstanceRow | None:
    """The current row of ``uuid``: from ``instances``, else the newest archived one."""
    return _reread(engine, lambda conn: _instance_in(conn, uuid))


def reread_migrations(engine: sa.Engine, uuid: str) -> tuple[MigrationRow, ...]:
    """Every migration of ``uuid``, deleted ones included, oldest first. One statement."""
    return _reread(engine, lambda conn: _migrations_in(conn, uuid))


def reread(engine: sa.Engine, uuid: str) -> tuple[InstanceRow | None, tuple[MigrationRow, ...]]:
    """The row and the migrations of ``uuid`` read in one transaction, so on MariaDB/MySQL
    (InnoDB's REPEATABLE READ) the executor's compare-and-act judges one snapshot, never
    a row from before a move and migrations from after it. (pysqlite starts no
    transaction for SELECTs, so on SQLite these are two reads.)"""
    return _reread(engine, lambda conn: (_instance_in(conn, uuid), _migrations_in(conn, uuid)))


def reread_claim_markers(engine: sa.Engine, uuid: str) -> tuple[str, ...]:
    """The live ``reaper_claim`` markers of ``uuid``, oldest first. One statement."""
    return _reread(engine, lambda conn: tuple(
        _load_claim_markers(_Runner(conn), [uuid], 1).get(uuid, ())))


def _reread(engine: sa.Engine, read):
    try:
        with engine.connect() as conn:       # one autobegun transaction, rolled back
            return read(conn)
    except sa.exc.SQLAlchemyError as exc:
        raise exception.NovaDBError(nova_db.describe_error(exc, engine)) from None


def _instance_in(conn, uuid: str) -> InstanceRow | None:
    """``instances`` UNION ALL ``shadow_instances`` in one statement; without a shadow
    table, ``instances`` alone."""
    i_, sh = s.instances, s.shadow_instances
    live = sa.select(*_cols(i_, _INSTANCE_COLS), sa.literal(0).label("archived")) \
        .where(i_.c.uuid == uuid)
    shadow = sa.select(*_cols(sh, _INSTANCE_COLS), sa.literal(1).label("archived")) \
        .where(sh.c.uuid == uuid)
    try:
        rows = list(conn.execute(sa.union_all(live, shadow)))
    except sa.exc.DBAPIError as exc:
        if not nova_db.is_missing_table(exc):
            raise
        conn.rollback()
        rows = list(conn.execute(live))
    if not rows:
        return None
    # A row in instances wins over archived ones; among archived ones the newest.
    best = min(rows, key=lambda r: (r._mapping.get("archived", 0), -r.id))
    return _instance(best, archived=bool(best._mapping.get("archived", 0)))


def _migrations_in(conn, uuid: str) -> tuple[MigrationRow, ...]:
    m = s.migrations
    stmt = sa.select(*_cols(m, _MIGRATION_COLS)).where(m.c.instance_uuid == uuid).order_by(m.c.id)
    return tuple(_migration(r) for r in conn.execute(stmt))


def list_compute_hosts(engine: sa.Engine) -> list[str]:
    """Hosts with a live nova-compute service, sorted. One statement."""
    sv = s.services
    stmt = (sa.select(sv.c.host).distinct()
            .where(sv.c.binary == "nova-compute", sv.c.deleted == 0, sv.c.host.is_not(None))
            .order_by(sv.c.host))
    try:
        with engine.connect() as conn:
            return [r.host for r in conn.execute(stmt)]
    except sa.exc.SQLAlchemyError as exc:
        raise exception.NovaDBError(nova_db.describe_error(exc, engine)) from None
