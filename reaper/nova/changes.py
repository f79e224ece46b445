"""A cheap change check of Nova's DB for one host: one statement, one row per part.

The periodic passes of a fleet are mostly passes with nothing new: the same
domains, the same directories, the same rows. :func:`read` answers "could anything
the view read for this host have changed since the last full view?" in ONE
statement that returns a few aggregate rows instead of the rows themselves: for
each part of the view (``reaper.nova.view``: migrations, instances, archived rows,
block device mappings, info caches, compute nodes, claim markers) the number of
rows its WHERE clause selects and the sum of a hash of the columns the view reads
from them (CRC32 on MariaDB/MySQL; the same idea through a Python function
registered on the connection on SQLite). The same rows as the view (selected by this
host, its live instances through a subquery, and the view's few other instances by
uuid: see :func:`statement`) and the same columns, so the reaper's column grants
cover it.

What is hashed, exactly:

- each part's rows are selected by the view's own clause, and of each row the
  columns the view returns to the planner: ``reaper.nova.columns.INSTANCE_COLS``
  (instances and archived rows), ``_MIGRATION_COLS``, ``_BDM_COLS``; of info caches
  ``instance_uuid``, ``network_info`` (and ``id``); of compute nodes ``id``, ``uuid``,
  ``host``, ``hypervisor_hostname``; of claim markers ``instance_uuid``, ``value``
  (and ``id``). A column that the part's WHERE pins (``deleted = 0`` of BDMs, caches,
  nodes and markers, a marker's ``key``) is not hashed: a change of it takes the row
  out of the part, which changes the part's count;
- the two big texts, ``network_info`` and ``connection_info``, whole: on MariaDB/MySQL
  by ``CRC32`` on the column itself (no copy into a concatenation), packed with the
  CRC32 of the row's other columns into one 64-bit value (``small | blob << 32``), so
  a text stays tied to its row: two rows swapping their texts is a change too;
- claim markers only of this host's claimed rows (live, ``soft-delete``,
  ``task_state 'deleting'``): the only ones the view reads. A marker of any other
  row is read by neither; a row that becomes claimed changes ``instances_here``;
- ``instances_here`` and ``caches_here`` come from one select (our live instances
  LEFT JOIN their live info cache; ``instance_uuid`` is unique in both tables): the
  same rows as the view's ``instance_uuid IN (our live instances)``, one walk of
  the instances fewer.

So it sees any change of what the rules read, in a row the view reads: a state
change, a row moved to or from this host (``host`` is hashed, and each part is
selected by the same clause as the view's), a soft delete (``deleted`` becomes the
row's id), a new, finished or deleted migration touching this host or a locally
seen uuid, an archived row, a claim marker, a new compute node, and any edit of a
``network_info`` or ``connection_info`` (a port id, devname, ovs_interfaceid or
bridge; a portal, iqn or lun; the text becoming unparsable), whatever its length
and whatever the writer's clock. tests/unit/nova/test_nova_changes.py checks this for
every column the view's statements select (read from the statements themselves)
and for same-length edits of what the network and iSCSI rules extract, on SQLite
and (tests/functional/test_nova_db_mariadb.py) MariaDB.

Why the big texts are hashed whole rather than only what the rules take from them
(port ids, device names, portals) or their length plus ``updated_at``:

- the rules read more of them than a few keys: of ``network_info`` each VIF's
  ``id``, ``address``, ``type``, ``devname``, ``ovs_interfaceid``,
  ``details.ovs_hybrid_plug``, ``network.bridge``, whether the text is missing,
  empty, unparsable (and why), its first 512 characters as evidence; of
  ``connection_info`` the driver, every portal, iqn and lun, whether it parses, the
  stored host connector. Extracting those in SQL (``JSON_EXTRACT``) parses every
  text, more work than a CRC32 of it, with a second JSON parser whose reading can
  differ from Python's (double-encoded ``network_info``, duplicate keys);
- length plus ``updated_at`` is not enough, even though Nova bumps ``updated_at``
  on both writes (``instance_info_cache_update`` sets the column on the ORM object,
  ``block_device_mapping_update`` runs ``Query.update``; both get oslo.db's
  ``TimestampMixin`` ``onupdate=utcnow``): Nova's DATETIME columns keep whole
  seconds, so two writes in one second, the second of the same length (a port id
  replaced by another is always the same length), leave both as they were; a
  writer may also set ``updated_at`` itself (the reaper's finalize does; oslo.db's
  soft delete keeps the old one) or have a clock behind;
- and it would save little: on the benchmark's host (1,000 instances, MariaDB) the
  check's cost is finding the rows (each BDM and info cache through our instances,
  about 14 InnoDB page reads per instance), not hashing 1 KB of text per row; the
  copies of each text into ``CONCAT`` that the first version made are gone.

What it misses, and why that cannot matter:

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
   from it, as if there were no cache. So a missed change (a hash collision, a stale
   answer) can only lead to doing nothing, never to an action; and every action is
   still re-read at act time (the executor's compare-and-act; a reclaim's claim is a
   conditional UPDATE).
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


def available(engine: sa.Engine, others: Sequence[str], missing: Sequence[str] = ()) -> bool:
    return (engine.dialect.name in SUPPORTED_DIALECTS
            and len(others) <= nova_db.max_in_params(engine)
            and len(missing) <= nova_db.max_in_params(engine))


# Columns hashed per part: exactly the columns the view reads (reaper.nova.view), the
# big text first where there is one.
_IC_COLS = ("network_info", "id", "instance_uuid")
_CN_COLS = ("id", "uuid", "host", "hypervisor_hostname")
_MARKER_COLS = ("id", "instance_uuid", "value")


def _hash(table: sa.Table, cols: Sequence[str]):
    fn = _BlobRowHash if cols[0] in ("network_info", "connection_info") else _RowHash
    return fn(*[table.c[c] for c in cols])


def _zero():
    return sa.literal(0, sa.BigInteger)


def _part(name: str, table: sa.Table, cols: Sequence[str], where) -> sa.Select:
    return (sa.select(sa.literal(name).label("part"), sa.func.count().label("n"),
                      sa.func.coalesce(sa.func.sum(_hash(table, cols)), 0).label("h"),
                      _zero().label("n2"), _zero().label("h2"))
            .select_from(table).where(where))


def _instances_and_caches(name: str, where) -> sa.Select:
    """Two parts in one select: the instances ``where`` selects and, through a LEFT JOIN
    on ``instance_uuid`` (unique in both tables), their live info caches: the same rows
    as ``caches IN (SELECT uuid ... where)``, with one walk of the instances instead
    of two. ``n2``/``h2`` are the caches' count and hash sum."""
    from reaper.nova import columns as v

    i_, ic = s.instances, s.instance_info_caches
    j = i_.outerjoin(ic, sa.and_(ic.c.instance_uuid == i_.c.uuid, ic.c.deleted == 0))
    return (sa.select(sa.literal(name).label("part"), sa.func.count().label("n"),
                      sa.func.coalesce(sa.func.sum(_hash(i_, v.INSTANCE_COLS)), 0).label("h"),
                      sa.func.count(ic.c.id).label("n2"),
                      sa.func.coalesce(sa.func.sum(_hash(ic, _IC_COLS)), 0).label("h2"))
            .select_from(j).where(where))


# The parts read as one select with their info caches, and the name of the caches' part.
_WITH_CACHES = {"instances_here": "caches_here"}


@functools.lru_cache(maxsize=8)
def _statement(with_others: bool, with_missing: bool) -> sa.CompoundSelect:
    """Built once per shape; ``host``, ``others`` and ``missing`` are bound at execution
    (so SQLAlchemy's compiled cache serves every later check)."""
    from reaper.nova import columns as v     # the view's columns and clauses

    i_, m, b, ic, cn, md = (s.instances, s.migrations, s.block_device_mapping,
                            s.instance_info_caches, s.compute_nodes,
                            s.instance_system_metadata)
    host = sa.bindparam("host", type_=sa.String)
    others = sa.bindparam("others", expanding=True, type_=sa.String)
    missing = sa.bindparam("missing", expanding=True, type_=sa.String)
    ours = sa.select(i_.c.uuid).where(i_.c.host == host, i_.c.deleted == 0)
    # the rows whose claim markers the view reads: claimed live rows of this host
    claimed = sa.select(i_.c.uuid).where(i_.c.host == host, i_.c.deleted == 0,
                                         i_.c.vm_state == "soft-delete",
                                         i_.c.task_state == "deleting")
    moving = sa.select(m.c.instance_uuid).where(v.host_migrations_clause(host))
    bdm_cols = ("connection_info", *(c for c in v.BDM_COLS if c != "connection_info"))
    parts = [
        _part("migrations_here", m, v.MIGRATION_COLS, v.host_migrations_clause(host)),
        _part("migrations_ours", m, v.MIGRATION_COLS, m.c.instance_uuid.in_(ours)),
        _instances_and_caches("instances_here", sa.and_(i_.c.host == host,
                                                        i_.c.deleted == 0)),
        _part("instances_moving", i_, v.INSTANCE_COLS, i_.c.uuid.in_(moving)),
        _part("bdms_here", b, bdm_cols, sa.and_(b.c.instance_uuid.in_(ours),
                                                        b.c.deleted == 0)),
        _part("bdms_moving", b, bdm_cols, sa.and_(b.c.instance_uuid.in_(moving),
                                                          b.c.deleted == 0)),
        _part("caches_moving", ic, _IC_COLS, sa.and_(ic.c.instance_uuid.in_(moving),
                                                     ic.c.deleted == 0)),
        _part("compute_nodes", cn, _CN_COLS, sa.and_(cn.c.host == host, cn.c.deleted == 0)),
        _part("claim_markers", md, _MARKER_COLS,
              sa.and_(md.c.instance_uuid.in_(claimed), md.c.key == CLAIM_MARKER_KEY,
                      md.c.deleted == 0)),
    ]
    if with_others:
        parts += [
            _part("migrations_others", m, v.MIGRATION_COLS, m.c.instance_uuid.in_(others)),
            _part("instances_others", i_, v.INSTANCE_COLS, i_.c.uuid.in_(others)),
            _part("bdms_others", b, bdm_cols, sa.and_(b.c.instance_uuid.in_(others),
                                                              b.c.deleted == 0)),
            _part("caches_others", ic, _IC_COLS, sa.and_(ic.c.instance_uuid.in_(others),
                                                         ic.c.deleted == 0)),
        ]
    if with_missing:
        sh = s.shadow_instances
        parts.append(_part("archived_local", sh, v.INSTANCE_COLS, sh.c.uuid.in_(missing)))
    return sa.union_all(*parts)


def statement(host: str, others: Sequence[str], missing: Sequence[str] = ()):
    """The one statement and its parameters: a UNION ALL of one aggregate per part of
    the view.

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
    return _statement(bool(others), bool(missing)), params


def read_in(conn: sa.Connection, host: str, others: Iterable[str],
            missing: Iterable[str] = ()) -> Fingerprint:
    """The fingerprint, on ``conn`` (inside the caller's transaction). Raises what the
    database raises."""
    others, missing = sorted(set(others)), sorted(set(missing))
    if conn.dialect.name == "sqlite":
        _register_sqlite(conn)
    stmt, params = statement(host, others, missing)
    parts = []
    for r in conn.execute(stmt, params):
        parts.append((r.part, int(r.n), int(r.h)))
        if r.part in _WITH_CACHES:
            parts.append((_WITH_CACHES[r.part], int(r.n2), int(r.h2)))
    parts = tuple(sorted(parts))
    return Fingerprint(parts=parts, others=tuple(others), missing=tuple(missing))


def read(engine: sa.Engine, host: str, others: Iterable[str],
         missing: Iterable[str] = ()) -> Fingerprint | None:
    """The fingerprint in its own read-only transaction; None when unavailable or the
    database failed (the caller then reads the full view, which reports the error)."""
    others, missing = sorted(set(others)), sorted(set(missing))
    if not available(engine, others, missing):
        return None
    try:
        with engine.connect() as conn:
            fp = read_in(conn, host, others, missing)
            conn.rollback()
            return fp
    except Exception as exc:  # noqa: BLE001 - a failed check only means "read it all"
        LOG.debug("change check for host %s unavailable: %s", host,
                  nova_db.describe_error(exc, engine))
        return None
