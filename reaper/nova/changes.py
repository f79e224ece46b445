"""A cheap change check of Nova's DB for one host: one statement, one row per part.

The periodic passes of a fleet are mostly passes with nothing new: the same
domains, the same directories, the same rows. :func:`read` answers "did any row
the check covers change since the last full view?" in ONE statement that returns a
few aggregate rows instead of the rows themselves: for each part (migrations,
instances, archived rows, compute nodes, claim markers) the number of rows the
view's WHERE clause selects and the sum of a hash of the columns the view reads
from them (CRC32 on MariaDB/MySQL; the same idea through a Python function
registered on the connection on SQLite). The same rows as the view (selected by
this host, its live instances through a subquery, and the view's few other
instances by uuid: see :func:`statement`) and the same columns, so the reaper's
column grants cover it.

What is hashed, exactly:

- each part's rows are selected by the view's own clause, and of each row the
  columns the view returns to the planner: ``reaper.nova.columns.INSTANCE_COLS``
  (instances and archived rows), ``MIGRATION_COLS``; of compute nodes ``id``,
  ``uuid``, ``host``, ``hypervisor_hostname``; of claim markers ``instance_uuid``,
  ``value`` (and ``id``). A column that the part's WHERE pins (``deleted = 0`` of
  nodes and markers, a marker's ``key``) is not hashed: a change of it takes the row
  out of the part, which changes the part's count;
- claim markers only of this host's claimed rows (live, ``soft-delete``,
  ``task_state 'deleting'``): the only ones the view reads. A marker of any other
  row is read by neither; a row that becomes claimed changes ``instances_here``.

So it sees, at the next pass, any change of those rows the rules read: a state
change, a row moved to or from this host (``host`` is hashed, and each part is
selected by the same clause as the view's), a soft delete (``deleted`` becomes the
row's id), a new, finished or deleted migration touching this host or a locally
seen uuid, an archived row, a claim marker, a new compute node, whatever the
writer's clock (no timestamp is compared). tests/unit/nova/test_nova_changes.py
checks this for every column the view's statements select from those tables (read
from the statements themselves), on SQLite and
(tests/functional/test_nova_db_mariadb.py) MariaDB.

What the (light) check leaves to the deep one: block device mappings and info
caches. A change that touches only those (a volume or a port detached or attached,
an edit of a ``connection_info`` or a ``network_info``) is seen by the next deep
check or full view, at most ``[reaper] deep_check_interval`` (3,600 s by default)
after the last one plus the wait for the next pass (up to one reconcile interval,
600 s), unless anything else makes a pass read in full first (a change above, a
teardown the cached view plans, a new or vanished domain or directory). The deep
check (``deep=True`` here) hashes them too (``bdms_*`` and ``caches_*``: ``connection_info`` and
``network_info`` by ``CRC32`` on the column itself, packed with the CRC32 of the
row's other columns into one 64-bit value, ``small | blob << 32``, so a text stays
tied to its row), and ``full_view_interval`` (a day by default) then only bounds
what both miss. Why the light check leaves them out:

- cost. The check's price is finding the rows, not hashing them: each BDM and info
  cache is found through our instances (an index dive on ``instance_uuid`` and a
  primary-key lookup, since no index of Nova's holds ``deleted`` or the texts).
  On the benchmark's host (1,000 instances, MariaDB) those two parts were 13 of the
  check's 17 ms; instances and migrations are about 3 ms. Per host and hour (five
  checks) that is the difference between the reaper's DB time staying above
  nova-compute's own periodic tasks for the same jobs or going below it;
- nothing cheaper tells a change of them: ``updated_at`` needs the same row lookups
  and is not enough anyway (Nova's DATETIME keeps whole seconds, a port id swapped
  for another keeps the text's length, oslo.db's soft delete keeps ``updated_at``,
  a writer's clock may be behind), and a partial hash of the texts saves nothing,
  the lookups being the cost;
- what a missed change of them delays is the clean-up of a leak whose last Nova
  reference just went away (an iSCSI session or a tap device left behind by a
  detach). A new local device or session not in the cached view is the opposite
  case: the plan made from the cached view has a teardown for it, so that pass reads
  the whole view at once.

What it misses besides, and why that cannot matter:

- columns the view does not read (``updated_at``, ``created_at``, every other
  column): no rule can read them;
- a row changed and changed back between two checks gives the same fingerprint:
  right, because the rules are functions of the rows as they are, and they are the
  rows the cached view holds;
- two changes whose hash sums cancel out, or a change that keeps a row's CRC32
  (about 1 in 2**32): the safety argument below does not rely on the fingerprint,
  and the next full view (``full_view_interval``) reads the change anyway.

The safety argument (the caller, ``reaper.reconcile``, holds to it):

1. Actions are only ever planned from a view read in full in the same pass. An
   "unchanged" answer lets a pass plan from the cached view only to conclude that
   there is nothing to do: if that plan (made now, with this pass's inventory, clock
   and policy) has any teardown at all, the pass reads the full view and plans again
   from it, as if there were no cache. So a missed change (a part the check does
   not cover, a hash collision, a stale answer) can only lead to doing nothing,
   never to an action; and every action is still re-read at act time (the
   executor's compare-and-act; a reclaim's claim is a conditional UPDATE).
2. Nothing derived from a cached view is recorded as an observation, so a missed
   change cannot bring a teardown's grace period forward either.
3. The cache is used only by untargeted passes of the same process, for the same
   host and the same set of locally seen uuids (the view's input), with no journaled
   teardown waiting, and for at most ``[reaper] full_view_interval`` seconds of the
   monotonic clock (a wall-clock jump neither extends nor shortens it): whatever a
   check misses is read at the latest by the next full view.
4. Time-dependent rules (running_deleted_timeout, reclaim_instance_interval, grace)
   are evaluated again at every pass on the cached rows with the current clock, so a
   row that becomes reclaimable without any write to the DB produces a teardown and
   therefore a full read.
5. On MariaDB/MySQL the view and its fingerprint are read in one transaction (one
   InnoDB snapshot), so the fingerprint describes exactly the rows of the cached
   view. On SQLite the caller opens an explicit transaction for the same reason.

The check is not available (None: the pass reads the full view) on other databases,
when a uuid list would need more than one ``IN`` batch, or on any error.
"""
from __future__ import annotations

import dataclasses
import functools
import zlib
from typing import Iterable, Sequence

import sqlalchemy as sa
from oslo_log import log as logging
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from reaper.nova import db as nova_db
from reaper.nova import schema as s
from reaper.objects.nova import CLAIM_MARKER_KEY

LOG = logging.getLogger(__name__)

SUPPORTED_DIALECTS = ("mysql", "sqlite")


class _RowHash(FunctionElement):
    """CRC32 of a row's columns, NULL told apart from any value."""
    type = sa.BigInteger()
    name = "reaper_rowhash"
    inherit_cache = True


class _BlobRowHash(_RowHash):
    """The same, for a row whose first column is a big text (``network_info``,
    ``connection_info``): on MariaDB/MySQL that one is hashed by ``CRC32`` on the
    column itself, with no copy into a concatenation, and the two CRCs are packed into
    one 64-bit value (``small | blob << 32``), so a row's blob stays tied to its other
    columns. Whether the blob is NULL is among the small columns. On SQLite the text
    is hashed with the rest of the row by the one Python function, as any column."""
    name = "reaper_rowhash"
    inherit_cache = True


def _small(compiler, clauses, **kw) -> list[str]:
    return [f"IFNULL(CONCAT('v', CAST({compiler.process(c, **kw)} AS CHAR)), 'n')"
            for c in clauses]


@compiles(_RowHash)
def _rowhash_default(element, compiler, **kw):      # SQLite: registered per connection
    return f"reaper_rowhash({compiler.process(element.clauses, **kw)})"


@compiles(_RowHash, "mysql")
def _rowhash_mysql(element, compiler, **kw):
    return f"CRC32(CONCAT_WS('|', {', '.join(_small(compiler, element.clauses, **kw))}))"


@compiles(_BlobRowHash, "mysql")
def _blob_rowhash_mysql(element, compiler, **kw):
    blob, *rest = list(element.clauses)
    b = compiler.process(blob, **kw)
    return (f"(CRC32(CONCAT_WS('|', {', '.join(_small(compiler, rest, **kw))}, ISNULL({b})))"
            f" | (IFNULL(CRC32({b}), 0) << 32))")


def _py_rowhash(*values) -> int:
    text = "|".join("n" if v is None else "v" + str(v) for v in values)
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def _register_sqlite(conn: sa.Connection) -> None:
    raw = conn.connection.driver_connection
    raw.create_function("reaper_rowhash", -1, _py_rowhash, deterministic=True)


@dataclasses.dataclass(frozen=True)
class Fingerprint:
    """What :func:`read` returned: ``parts`` is ((part, rows, hash sum), ...), and the
    uuid lists it was read for (the next check must read the same)."""
    parts: tuple[tuple[str, int, int], ...]
    # the view's other instances: seen locally or moving, not live on this host
    others: tuple[str, ...] = ()
    # the local uuids the archived-rows part covered (those missing from instances)
    missing: tuple[str, ...] = ()
    # a deep check: block device mappings and info caches hashed too
    deep: bool = False

    def light(self) -> "Fingerprint":
        """The parts a light check reads (the same fingerprint when already light)."""
        return dataclasses.replace(
            self, deep=False, parts=tuple(p for p in self.parts if p[0] not in DEEP_PARTS))


def available(engine: sa.Engine, others: Sequence[str], missing: Sequence[str] = ()) -> bool:
    return (engine.dialect.name in SUPPORTED_DIALECTS
            and len(others) <= nova_db.max_in_params(engine)
            and len(missing) <= nova_db.max_in_params(engine))


# Columns hashed per part: exactly the columns the view reads (reaper.nova.view), the
# big text first where there is one.
_CN_COLS = ("id", "uuid", "host", "hypervisor_hostname")
_MARKER_COLS = ("id", "instance_uuid", "value")
_IC_COLS = ("network_info", "id", "instance_uuid")
# The parts only a deep check reads.
DEEP_PARTS = frozenset({"bdms_here", "caches_here", "bdms_moving", "caches_moving",
                        "bdms_others", "caches_others"})


def _part(name: str, table: sa.Table, cols: Sequence[str], where) -> sa.Select:
    fn = _BlobRowHash if cols[0] in ("network_info", "connection_info") else _RowHash
    return (sa.select(sa.literal(name).label("part"), sa.func.count().label("n"),
                      sa.func.coalesce(sa.func.sum(fn(*[table.c[c] for c in cols])),
                                       0).label("h"))
            .select_from(table).where(where))


@functools.lru_cache(maxsize=16)
def _statement(with_others: bool, with_missing: bool,
               deep: bool = False) -> sa.CompoundSelect:
    """Built once per shape; ``host``, ``others`` and ``missing`` are bound at execution
    (so SQLAlchemy's compiled cache serves every later check)."""
    from reaper.nova import columns as v     # the view's columns and clauses

    i_, m, cn, md = s.instances, s.migrations, s.compute_nodes, s.instance_system_metadata
    host = sa.bindparam("host", type_=sa.String)
    others = sa.bindparam("others", expanding=True, type_=sa.String)
    missing = sa.bindparam("missing", expanding=True, type_=sa.String)
    ours = sa.select(i_.c.uuid).where(i_.c.host == host, i_.c.deleted == 0)
    # the rows whose claim markers the view reads: claimed live rows of this host
    claimed = sa.select(i_.c.uuid).where(i_.c.host == host, i_.c.deleted == 0,
                                         i_.c.vm_state == "soft-delete",
                                         i_.c.task_state == "deleting")
    moving = sa.select(m.c.instance_uuid).where(v.host_migrations_clause(host))
    parts = [
        _part("migrations_here", m, v.MIGRATION_COLS, v.host_migrations_clause(host)),
        _part("migrations_ours", m, v.MIGRATION_COLS, m.c.instance_uuid.in_(ours)),
        _part("instances_here", i_, v.INSTANCE_COLS, sa.and_(i_.c.host == host,
                                                             i_.c.deleted == 0)),
        _part("instances_moving", i_, v.INSTANCE_COLS, i_.c.uuid.in_(moving)),
        _part("compute_nodes", cn, _CN_COLS, sa.and_(cn.c.host == host, cn.c.deleted == 0)),
        _part("claim_markers", md, _MARKER_COLS,
              sa.and_(md.c.instance_uuid.in_(claimed), md.c.key == CLAIM_MARKER_KEY,
                      md.c.deleted == 0)),
    ]
    if with_others:
        parts += [
            _part("migrations_others", m, v.MIGRATION_COLS, m.c.instance_uuid.in_(others)),
            _part("instances_others", i_, v.INSTANCE_COLS, i_.c.uuid.in_(others)),
        ]
    if with_missing:
        sh = s.shadow_instances
        parts.append(_part("archived_local", sh, v.INSTANCE_COLS, sh.c.uuid.in_(missing)))
    if deep:
        b, ic = s.block_device_mapping, s.instance_info_caches
        bdm_cols = ("connection_info", *(c for c in v.BDM_COLS if c != "connection_info"))
        sets = [("here", ours), ("moving", moving)] + ([("others", others)]
                                                       if with_others else [])
        for name, uuids in sets:
            parts += [
                _part(f"bdms_{name}", b, bdm_cols,
                      sa.and_(b.c.instance_uuid.in_(uuids), b.c.deleted == 0)),
                _part(f"caches_{name}", ic, _IC_COLS,
                      sa.and_(ic.c.instance_uuid.in_(uuids), ic.c.deleted == 0)),
            ]
    return sa.union_all(*parts)


def statement(host: str, others: Sequence[str], missing: Sequence[str] = (),
              deep: bool = False):
    """The one statement and its parameters: a UNION ALL of one aggregate per part the
    check covers.

    The view selects its rows by this host (live rows, moves touching it) and by uuid
    lists (every locally seen uuid, and the other instances of the view). Here no list
    of this host's live instances travels: their rows are selected through the
    ``host = ... AND deleted = 0`` subquery (``ours``), and only ``others``, the
    view's instances that were not live on this host at the full read (usually a
    handful), go by uuid. Same rows: a row that was live here then and is not now (or
    the reverse) changes the ``instances_here`` part by itself. Each part is one
    indexed select (a UNION ALL member of its own where the view uses an OR)."""
    params = {"host": host}
    if others:
        params["others"] = list(others)
    if missing:
        params["missing"] = list(missing)
    return _statement(bool(others), bool(missing), deep), params


def read_in(conn: sa.Connection, host: str, others: Iterable[str],
            missing: Iterable[str] = (), deep: bool = False) -> Fingerprint:
    """The fingerprint, on ``conn`` (inside the caller's transaction). Raises what the
    database raises."""
    others, missing = sorted(set(others)), sorted(set(missing))
    if conn.dialect.name == "sqlite":
        _register_sqlite(conn)
    stmt, params = statement(host, others, missing, deep)
    parts = tuple(sorted((r.part, int(r.n), int(r.h)) for r in conn.execute(stmt, params)))
    return Fingerprint(parts=parts, others=tuple(others), missing=tuple(missing), deep=deep)


def read(engine: sa.Engine, host: str, others: Iterable[str],
         missing: Iterable[str] = (), deep: bool = False) -> Fingerprint | None:
    """The fingerprint in its own read-only transaction; None when unavailable or the
    database failed (the caller then reads the full view, which reports the error)."""
    others, missing = sorted(set(others)), sorted(set(missing))
    if not available(engine, others, missing):
        return None
    try:
        # Closing the connection rolls its transaction back (one ROLLBACK; an explicit
        # rollback first would make the pool send a second one on check-in).
        with engine.connect() as conn:
            return read_in(conn, host, others, missing, deep)
    except Exception as exc:  # noqa: BLE001 - a failed check only means "read it all"
        LOG.debug("change check for host %s unavailable: %s", host,
                  nova_db.describe_error(exc, engine))
        return None
