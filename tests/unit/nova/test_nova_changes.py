"""reaper.nova.changes (the change check) and the reclaim pass's first read, on SQLite.

The test functions that take only ``engine`` are also run against MariaDB by
tests/functional/test_nova_db_mariadb.py; keep them dialect-neutral.
"""
from __future__ import annotations

import contextlib
import datetime
import functools
import itertools
import json

import pytest
import sqlalchemy as sa

from reaper import exception
from reaper.nova import changes
from reaper.nova import db as nova_db
from reaper.nova import schema as s
from reaper.nova import view as nova_view
from reaper.kinds.instance import rules
from reaper.objects.nova import CLAIM_MARKER_KEY
from tests.fixtures import records
from tests.unit.nova.test_nova_view import (
    HOST, NOW, OTHER, add_compute_node, add_instance, add_migration, add_row, archive,
    new_uuid, sqlite_engine,
)


@pytest.fixture
def engine(tmp_path):
    eng = sqlite_engine(tmp_path / "nova.sqlite")
    yield eng
    eng.dispose()


def _update(engine, table, where, **values):
    with engine.begin() as conn:
        assert conn.execute(sa.update(table).where(where).values(**values)).rowcount >= 1


def _host(engine):
    """A host as a pass sees it: live rows with a BDM and an info cache, one row of
    ours soft-deleted, one deleted row seen locally, one of another host seen locally,
    a live migration to us of an instance not seen here yet, another host's rows."""
    add_compute_node(engine)
    live, _ = add_instance(engine)
    stopped, _ = add_instance(engine, vm_state="stopped")
    for u in (live, stopped):
        add_row(engine, s.block_device_mapping, instance_uuid=u, uuid=new_uuid(),
                source_type="volume", destination_type="volume", device_name="/dev/vdb",
                volume_id=new_uuid(), connection_info=json.dumps({"driver_volume_type": "iscsi"}))
        add_row(engine, s.instance_info_caches, instance_uuid=u,
                network_info=json.dumps([{"id": new_uuid()}]))
    soft, _ = add_instance(engine, vm_state="soft-delete", deleted_at=NOW)
    gone, _ = add_instance(engine, deleted=True)
    away, _ = add_instance(engine, host=OTHER)
    coming, _ = add_instance(engine, host=OTHER, task_state="migrating")
    add_migration(engine, coming, source=OTHER, dest=HOST, status="running")
    elsewhere, _ = add_instance(engine, host=OTHER)
    add_compute_node(engine, host=OTHER)
    never = new_uuid()                       # a domain here with no row at all
    local = [live, stopped, soft, gone, away, never]
    return dict(live=live, stopped=stopped, soft=soft, gone=gone, away=away, coming=coming,
                elsewhere=elsewhere, never=never, local=local)


def _base(engine, h):
    """The check read with the full view, and the uuid lists the next checks use."""
    fp = nova_view.load_view(engine, HOST, h["local"], fingerprint=True).fingerprint
    assert fp is not None and fp.missing == (h["never"],)
    assert set(fp.others) == {h["gone"], h["away"], h["never"], h["coming"]}
    return fp


def _fp(engine, base):
    return changes.read(engine, HOST, base.others, base.missing)


@contextlib.contextmanager
def _undone(engine):
    """Whatever the block changes in the Nova DB is undone after it (a savepoint-free
    undo: the tables are copied before and written back after)."""
    with engine.connect() as conn:
        before = {t.name: [dict(r._mapping) for r in conn.execute(sa.select(t))]
                  for t in s.metadata.sorted_tables}
    try:
        yield
    finally:
        with engine.begin() as conn:
            for t in reversed(s.metadata.sorted_tables):
                conn.execute(sa.delete(t))
            for t in s.metadata.sorted_tables:
                if before[t.name]:
                    conn.execute(sa.insert(t), before[t.name])


def _what_the_view_read(view):
    return (dict(view.instances), view.migrations, view.bdms, dict(view.info_caches),
            view.compute_nodes, dict(view.claim_markers))


# --------------------------------------------------------------------------
# The statement
# --------------------------------------------------------------------------

def test_the_check_is_one_statement_and_stable(engine):
    h = _host(engine)
    base = _base(engine, h)
    with nova_db.QueryCounter(engine) as qc:
        a = _fp(engine, base)
    assert qc.count == 1
    assert a == base == _fp(engine, base)
    parts = {p: n for p, n, _ in a.parts}
    assert parts["instances_here"] == 3 and parts["instances_others"] == 3
    assert parts["instances_moving"] == 1 and parts["archived_local"] == 0
    assert parts["compute_nodes"] == 1
    assert not {p for p in parts if p.startswith(("bdms", "caches"))}


def test_the_check_reads_no_bdm_and_no_info_cache(engine):
    """Block device mappings and info caches are left to the full view: finding them
    row by row through our instances was most of the check's cost (see the module's
    docstring for the delay that costs)."""
    h = _host(engine)
    base = _base(engine, h)
    stmt, _ = changes.statement(HOST, base.others, base.missing)
    read = {t.name for t in sa.sql.util.find_tables(stmt) if isinstance(t, sa.Table)}
    assert read == {"instances", "migrations", "shadow_instances", "compute_nodes",
                    "instance_system_metadata"}


def test_the_check_and_the_view_end_their_transaction_with_one_rollback(engine):
    """One ROLLBACK round trip each, not two (an explicit rollback before closing makes
    the pool send another on check-in)."""
    h = _host(engine)
    base = _base(engine, h)
    ends = []

    def rollback(conn):
        ends.append("rollback")

    def reset(dbapi_conn, record, state):
        if not state.transaction_was_reset:     # the pool's own ROLLBACK
            ends.append("pool reset")
    sa.event.listen(engine, "rollback", rollback)
    sa.event.listen(engine.pool, "reset", reset)
    try:
        assert _fp(engine, base) == base
        assert ends == ["rollback"]
        ends.clear()
        assert nova_view.load_view(engine, HOST, h["local"], fingerprint=True).ok
        assert ends == ["rollback"]
    finally:
        sa.event.remove(engine, "rollback", rollback)
        sa.event.remove(engine.pool, "reset", reset)


def test_the_view_reads_its_own_check_in_the_same_transaction(engine):
    h = _host(engine)
    with nova_db.QueryCounter(engine) as qc:
        view = nova_view.load_view(engine, HOST, h["local"], fingerprint=True)
    assert view.ok and view.fingerprint is not None
    plain = nova_view.load_view(engine, HOST, h["local"])
    assert view.queries == plain.queries + 1
    # SQLite: one more statement, the explicit BEGIN of the one snapshot
    assert qc.count == view.queries + (engine.dialect.name == "sqlite")
    assert view.fingerprint.missing == (h["never"],)
    assert view.fingerprint == _fp(engine, view.fingerprint)
    assert plain.fingerprint is None


def test_the_view_without_a_shadow_table_still_has_its_check(engine):
    h = _host(engine)
    s.shadow_instances.drop(engine)
    try:
        view = nova_view.load_view(engine, HOST, h["local"], fingerprint=True)
        assert view.ok and view.fingerprint is not None and view.fingerprint.missing == ()
        assert view.fingerprint == _fp(engine, view.fingerprint)
    finally:
        s.shadow_instances.create(engine)


def test_every_change_the_rules_could_read_changes_the_check(engine):
    """Each edge case: a change the view would see changes the fingerprint."""
    h = _host(engine)
    base = _base(engine, h)
    i_, m, cn = s.instances, s.migrations, s.compute_nodes
    old = datetime.datetime(2001, 1, 1)
    cases = {
        "vm_state of a live row": lambda: _update(engine, i_, i_.c.uuid == h["live"],
                                                  vm_state="paused"),
        "task_state": lambda: _update(engine, i_, i_.c.uuid == h["stopped"],
                                      task_state="powering-on"),
        # a writer whose clock is years behind: timestamps go backwards, not forwards
        "clock skew: deleted_at set in the past": lambda: _update(
            engine, i_, i_.c.uuid == h["soft"], deleted_at=old, updated_at=old),
        "clock skew: a change with an old updated_at": lambda: _update(
            engine, i_, i_.c.uuid == h["live"], power_state=4, updated_at=old),
        "row moved from this host": lambda: _update(engine, i_, i_.c.uuid == h["stopped"],
                                                    host=OTHER, node=OTHER),
        "row moved to this host (not seen locally)": lambda: _update(
            engine, i_, i_.c.uuid == h["elsewhere"], host=HOST, node=HOST),
        "row moved away then another moved here": lambda: (
            _update(engine, i_, i_.c.uuid == h["live"], host=OTHER),
            _update(engine, i_, i_.c.uuid == h["elsewhere"], host=HOST)),
        "soft delete": lambda: _update(engine, i_, i_.c.uuid == h["stopped"],
                                       vm_state="soft-delete", deleted_at=NOW),
        # Nova's soft delete of a row: deleted = id, updated_at left as it was
        "deleted = id": lambda: _update(engine, i_, i_.c.uuid == h["live"],
                                        deleted=i_.c.id, deleted_at=NOW,
                                        updated_at=i_.c.updated_at),
        "a deleted row seen locally is restored": lambda: _update(
            engine, i_, i_.c.uuid == h["gone"], deleted=0, vm_state="active"),
        "row of a locally seen uuid on another host changes": lambda: _update(
            engine, i_, i_.c.uuid == h["away"], vm_state="error"),
        "new evacuation from this host": lambda: add_migration(
            engine, h["live"], source=HOST, dest=OTHER, status="accepted",
            migration_type="evacuation"),
        "new migration to this host of an unseen instance": lambda: add_migration(
            engine, h["elsewhere"], source=OTHER, dest=HOST, status="pre-migrating"),
        "migration status": lambda: _update(engine, m, m.c.instance_uuid == h["coming"],
                                            status="post-migrating"),
        "migration soft-deleted (deleted = id)": lambda: _update(
            engine, m, m.c.instance_uuid == h["coming"], deleted=m.c.id),
        "a claimed row (the view then reads its markers)": lambda: _update(
            engine, i_, i_.c.uuid == h["soft"], task_state="deleting"),
        "compute node renamed": lambda: _update(engine, cn, cn.c.host == HOST,
                                                hypervisor_hostname="renamed"),
        "the missing uuid appears": lambda: add_instance(engine, uuid=h["never"], host=OTHER),
    }
    for what, change in cases.items():
        with _undone(engine):
            fp0 = _fp(engine, base)
            assert fp0 == base, what
            change()
            assert _fp(engine, base) != fp0, what
        assert _fp(engine, base) == fp0, f"{what}: undone"


def _columns_the_view_reads(engine, local) -> set[tuple[str, str]]:
    """(table, column) of every column a full view's statements select, recorded from
    the statements themselves (so a column the view starts to read is tested too)."""
    seen: set[tuple[str, str]] = set()

    def record(conn, clause, *args):
        for sel in getattr(clause, "selects", None) or [clause]:
            for col in getattr(sel, "selected_columns", ()):
                if isinstance(getattr(col, "table", None), sa.Table):
                    seen.add((col.table.name, col.name))
    sa.event.listen(engine, "before_execute", record)
    try:
        assert nova_view.load_view(engine, HOST, local).ok
    finally:
        sa.event.remove(engine, "before_execute", record)
    return seen


def _changed(col: sa.Column, value):
    """Another value of the column's type; strings keep their length (so neither a
    length nor a timestamp tells the two apart)."""
    if isinstance(col.type, sa.Enum):
        return next(v for v in col.type.enums if v != value)
    if value is None:
        if isinstance(col.type, sa.DateTime):
            return NOW
        if isinstance(col.type, sa.Boolean):
            return True
        return 1 if isinstance(col.type, sa.Integer) else "x"
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 100000 if col.primary_key else value + 1
    if isinstance(value, datetime.datetime):
        return value + datetime.timedelta(seconds=1)
    return value[:-1] + ("0" if value[-1:] != "0" else "1")


# The tables the check does not read (reaper.nova.changes: their changes wait for the
# next full view).
LEFT_TO_THE_FULL_VIEW = {"block_device_mapping", "instance_info_caches"}


def test_every_column_the_view_reads_is_in_the_check(engine):
    """For each column any statement of the full view selects (read from the
    statements), a change of it in a row the view reads, with updated_at kept and
    strings of the same length, changes what the view returns, and the check too
    unless the table is one the check leaves to the full view."""
    h = _host(engine)
    i_, md = s.instances, s.instance_system_metadata
    _update(engine, i_, i_.c.uuid == h["soft"], task_state="deleting")       # claimed
    add_row(engine, md, instance_uuid=h["soft"], key=CLAIM_MARKER_KEY,
            value=f"{HOST}:2024-05-01T00:00:00:req-1")
    archive(engine, h["gone"])               # so the view reads shadow_instances too
    columns = _columns_the_view_reads(engine, h["local"])
    base = _base_any(engine, h)
    assert {t for t, _ in columns} == {
        "instances", "migrations", "shadow_instances", "block_device_mapping",
        "instance_info_caches", "compute_nodes", "instance_system_metadata"}
    t = {tb.name: tb for tb in s.metadata.sorted_tables}
    bdm_of_live = t["block_device_mapping"].c.instance_uuid == h["live"]
    # the row of each table a change is made in (one the view reads)
    rows = {
        "instances": i_.c.uuid == h["soft"],
        "shadow_instances": t["shadow_instances"].c.uuid == h["gone"],
        "migrations": t["migrations"].c.instance_uuid == h["coming"],
        "block_device_mapping": bdm_of_live,
        "instance_info_caches": t["instance_info_caches"].c.instance_uuid == h["live"],
        "compute_nodes": t["compute_nodes"].c.host == HOST,
        "instance_system_metadata": md.c.instance_uuid == h["soft"],
    }
    # references to instances.uuid stay valid (foreign keys on MariaDB)
    moved_to = {"block_device_mapping": h["stopped"], "instance_info_caches": h["soft"],
                "migrations": h["elsewhere"], "instance_system_metadata": h["live"]}
    view0 = _what_the_view_read(nova_view.load_view(engine, HOST, h["local"]))
    dropped = set()
    for table, column in sorted(columns):
        tb = t[table]
        where = i_.c.uuid == h["away"] if (table, column) == ("instances", "uuid") \
            else rows[table]
        with _undone(engine):
            with engine.connect() as conn:
                value = conn.execute(sa.select(tb.c[column]).where(where)).scalar_one()
            new = moved_to[table] if column == "instance_uuid" \
                else _changed(tb.c[column], value)
            _update(engine, tb, where, **{column: new})
            view = nova_view.load_view(engine, HOST, h["local"])
            assert view.ok, f"{table}.{column}: {view.error}"
            view1 = _what_the_view_read(view)
            if view1 == view0:
                dropped.add((table, column))
            elif table in LEFT_TO_THE_FULL_VIEW:
                assert _fp(engine, base) == base, f"{table}.{column}"
            else:
                assert _fp(engine, base) != base, f"{table}.{column} changed unnoticed"
        assert _fp(engine, base) == base, f"{table}.{column}: undone"
    # selected only to order rows, not returned: the rules cannot read it
    assert dropped == {("instance_info_caches", "id")}


def _base_any(engine, h):
    fp = nova_view.load_view(engine, HOST, h["local"], fingerprint=True).fingerprint
    assert fp is not None
    return fp


VIF_PORT = "3f5a2c1e-9b7d-4e21-8a6f-0c1d2e3f4a5b"


def test_bdm_and_info_cache_changes_are_left_to_the_full_view(engine):
    """A change of a block device mapping or an info cache alone (added, detached,
    a same-length edit of what the network and iSCSI rules extract, updated_at kept)
    leaves the check as it was: the next full view reads it (the module's docstring
    says how late at most). The full view does see each one."""
    from reaper.kinds.iscsi import connection_info as vol_plan
    from reaper.kinds.network import rules as net_plan
    h = _host(engine)
    ic, b = s.instance_info_caches, s.block_device_mapping
    net = json.dumps([{"id": VIF_PORT, "address": "fa:16:3e:00:00:01", "type": "ovs",
                       "devname": f"tap{VIF_PORT[:11]}", "ovs_interfaceid": VIF_PORT,
                       "details": {"ovs_hybrid_plug": False},
                       "network": {"bridge": "br-int"}}])
    conn = json.dumps({"driver_volume_type": "iscsi", "data": {
        "target_portal": "192.0.2.10:3260", "target_iqn": "iqn.2010-10.org.openstack:vol-1",
        "target_lun": 1}})
    stamp = datetime.datetime(2024, 1, 1)
    _update(engine, ic, ic.c.instance_uuid == h["live"], network_info=net, updated_at=stamp)
    _update(engine, b, b.c.instance_uuid == h["live"], connection_info=conn,
            updated_at=stamp)
    base = _base(engine, h)
    view0 = _what_the_view_read(nova_view.load_view(engine, HOST, h["local"]))
    port2 = VIF_PORT[:-1] + "c"
    edits = {
        "port id and ovs_interfaceid": (ic, net.replace(VIF_PORT, port2)),
        "devname": (ic, net.replace(f"tap{VIF_PORT[:11]}", f"tap{VIF_PORT[:10]}0")),
        "bridge": (ic, net.replace("br-int", "br-ex0")),
        "hybrid plug": (ic, net.replace("false", "0    ")),
        "portal": (b, conn.replace("192.0.2.10", "192.0.2.11")),
        "iqn": (b, conn.replace("vol-1", "vol-2")),
        "lun": (b, conn.replace('"target_lun": 1', '"target_lun": 2')),
    }
    cases = {}
    for what, (table, text) in edits.items():
        col = "network_info" if table is ic else "connection_info"
        old = net if table is ic else conn
        assert len(text) == len(old) and text != old, what
        parse = net_plan.parse_network_info if table is ic else vol_plan.parse_connection_info
        assert parse(text) != parse(old), f"{what}: the rules read no difference"
        cases[what] = functools.partial(_update, engine, table, table.c.instance_uuid == h["live"],
                                        **{col: text, "updated_at": stamp})
    cases.update({
        "a BDM added": lambda: add_row(engine, b, instance_uuid=h["live"], uuid=new_uuid(),
                                       source_type="volume", destination_type="volume",
                                       volume_id=new_uuid(), device_name="/dev/vdc"),
        "a volume detached (BDM soft-deleted)": lambda: _update(
            engine, b, b.c.instance_uuid == h["stopped"], deleted=b.c.id),
        "network_info emptied": lambda: _update(engine, ic, ic.c.instance_uuid == h["stopped"],
                                                network_info="[]"),
    })
    deep = nova_view.load_view(engine, HOST, h["local"], fingerprint=True,
                               deep=True).fingerprint
    assert deep.deep and deep.light() == base
    assert _deep(engine, deep) == deep
    for what, change in cases.items():
        with _undone(engine):
            change()
            view = _what_the_view_read(nova_view.load_view(engine, HOST, h["local"]))
            assert view != view0, f"{what}: the full view does not see it"
            assert _fp(engine, base) == base, what
            # the deep check (deep_check_interval) sees it
            assert _deep(engine, deep) != deep, f"{what}: the deep check missed it"
        assert _deep(engine, deep) == deep, f"{what}: undone"


def _deep(engine, base):
    return changes.read(engine, HOST, base.others, base.missing, deep=True)


def test_a_deep_check_reads_what_the_light_one_reads_and_the_rest(engine):
    h = _host(engine)
    base = _base(engine, h)
    deep = _deep(engine, base)
    assert deep.light() == base and deep.light().light() == base
    names = {p for p, _, _ in deep.parts}
    assert names - {p for p, _, _ in base.parts} == changes.DEEP_PARTS
    assert {p: n for p, n, _ in deep.parts}["bdms_here"] == 2
    stmt, _ = changes.statement(HOST, base.others, base.missing, deep=True)
    read = {t.name for t in sa.sql.util.find_tables(stmt) if isinstance(t, sa.Table)}
    assert {"block_device_mapping", "instance_info_caches"} <= read


def test_claim_markers_of_claimed_rows_are_in_the_check(engine):
    """A claimed row's markers (the view reads them) are in the check: one added,
    changed, soft-deleted. A marker on a row that is not claimed is read by neither
    the view nor the check; claiming the row changes the check by itself."""
    h = _host(engine)
    i_, md = s.instances, s.instance_system_metadata
    _update(engine, i_, i_.c.uuid == h["live"], vm_state="soft-delete",
            task_state="deleting")
    marker = f"{HOST}:2024-05-01T00:00:00:req-1"
    add_row(engine, md, instance_uuid=h["live"], key=CLAIM_MARKER_KEY, value=marker)
    base = _base(engine, h)
    view0 = _what_the_view_read(nova_view.load_view(engine, HOST, h["local"]))
    assert view0[5] == {h["live"]: (marker,)}
    mine = sa.and_(md.c.instance_uuid == h["live"], md.c.key == CLAIM_MARKER_KEY)
    cases = {
        "a second marker": lambda: add_row(engine, md, instance_uuid=h["live"],
                                           key=CLAIM_MARKER_KEY, value="cmp9:x:req-2"),
        "the marker's value": lambda: _update(engine, md, mine, value=marker[:-1] + "2"),
        "the marker soft-deleted": lambda: _update(engine, md, mine, deleted=md.c.id),
    }
    for what, change in cases.items():
        with _undone(engine):
            change()
            assert _what_the_view_read(nova_view.load_view(engine, HOST, h["local"])) \
                != view0, what
            assert _fp(engine, base) != base, what
    # not claimed: neither the view nor the check reads its markers
    add_row(engine, md, instance_uuid=h["soft"], key=CLAIM_MARKER_KEY, value=marker)
    assert _what_the_view_read(nova_view.load_view(engine, HOST, h["local"])) == view0
    assert _fp(engine, base) == base
    _update(engine, i_, i_.c.uuid == h["soft"], task_state="deleting")
    assert _fp(engine, base) != base


def test_an_archived_local_row_changes_the_check(engine):
    h = _host(engine)
    base = _base(engine, h)
    archive(engine, h["gone"])               # instances -> shadow_instances
    assert _fp(engine, base) != base
    # and a missing uuid that shows up archived is seen by the archived part
    fp1 = _fp(engine, base)
    row = dict(uuid=h["never"], host=HOST, vm_state="deleted", deleted=99, id=9999)
    add_row(engine, s.shadow_instances, **row)
    assert _fp(engine, base) != fp1


def test_changed_then_changed_back_is_unchanged_and_so_is_the_view(engine):
    h = _host(engine)
    v0 = nova_view.load_view(engine, HOST, h["local"], fingerprint=True)
    i_ = s.instances
    _update(engine, i_, i_.c.uuid == h["live"], vm_state="stopped", task_state="x")
    assert _fp(engine, v0.fingerprint) != v0.fingerprint
    _update(engine, i_, i_.c.uuid == h["live"], vm_state="active", task_state=None)
    assert _fp(engine, v0.fingerprint) == v0.fingerprint
    v1 = nova_view.load_view(engine, HOST, h["local"], fingerprint=True)
    assert (v1.instances, v1.migrations, v1.bdms, v1.info_caches, v1.compute_nodes) == \
        (v0.instances, v0.migrations, v0.bdms, v0.info_caches, v0.compute_nodes)


def test_other_hosts_changes_leave_the_check_alone(engine):
    """So a busy fleet does not make every host read its whole view."""
    h = _host(engine)
    fp0 = _base(engine, h)
    i_ = s.instances
    _update(engine, i_, i_.c.uuid == h["elsewhere"], vm_state="stopped")
    add_instance(engine, host=OTHER)
    add_migration(engine, h["elsewhere"], source=OTHER, dest="cmp3", status="running")
    assert _fp(engine, fp0) == fp0


def test_the_check_is_not_available_past_one_batch(engine, monkeypatch):
    monkeypatch.setattr(nova_db, "max_in_params", lambda engine: 2)
    assert changes.read(engine, HOST, [new_uuid() for _ in range(3)]) is None
    assert changes.read(engine, HOST, [new_uuid() for _ in range(2)]) is not None


def test_a_failing_check_is_none(tmp_path):
    eng = nova_db.make_engine(f"sqlite:///{tmp_path}/empty.sqlite")
    assert changes.read(eng, HOST, [new_uuid()]) is None
    eng.dispose()


# --------------------------------------------------------------------------
# The reclaim pass's first read
# --------------------------------------------------------------------------

def test_load_soft_deleted_is_this_hosts_live_soft_deleted_rows(engine):
    mine, _ = add_instance(engine, vm_state="soft-delete", deleted_at=NOW)
    claimed, _ = add_instance(engine, vm_state="soft-delete", task_state="deleting")
    add_instance(engine)
    add_instance(engine, host=OTHER, vm_state="soft-delete", deleted_at=NOW)
    add_instance(engine, vm_state="soft-delete", deleted=True)
    with nova_db.QueryCounter(engine) as qc:
        rows = nova_view.load_soft_deleted(engine, HOST)
    assert qc.count == 1
    assert [r.uuid for r in rows] == [mine, claimed]
    assert rows[1].is_claimed


def test_load_soft_deleted_raises_a_safe_error(tmp_path):
    eng = nova_db.make_engine(f"sqlite:///{tmp_path}/empty.sqlite")
    with pytest.raises(exception.NovaDBError, match="no such table"):
        nova_view.load_soft_deleted(eng, HOST)
    eng.dispose()


_row = functools.partial(records.row, id=1, uuid="u", host=HOST, node=HOST,
                         vm_state="soft-delete", power_state=4, deleted_at=NOW,
                         display_name="vm", project_id="p", user_id="u")


def test_reclaim_candidates_cover_every_row_a_reclaim_rule_acts_on_or_reports():
    """Over a grid of rows: whenever is_reclaimable holds or classify_claim says
    anything (for any markers, journaled or not), the row is a candidate."""
    hour = datetime.timedelta(hours=1)
    grid = itertools.product(
        (HOST, OTHER, None), ("soft-delete", "active", "deleted"),
        (None, "deleting", "restoring"), (0, 7), (None, NOW - 2 * hour, NOW),
        (False, True), (0, 3600))
    seen = 0
    for host, vm, task, deleted, at, archived, interval in grid:
        row = _row(host=host, vm_state=vm, task_state=task, deleted=deleted, deleted_at=at,
                   archived=archived)
        acts = rules.is_reclaimable(row, HOST, interval, NOW) or any(
            rules.classify_claim(row, markers, HOST, journaled=j, reclaim_interval=interval,
                                 now=NOW) is not None
            for markers in ((), (f"{HOST}:2024-01-01T00:00:00:req-1",), ("x:y:z",))
            for j in (False, True))
        candidate = bool(rules.reclaim_candidates([row], HOST, interval, NOW))
        assert candidate or not acts, row
        seen += acts
    assert seen > 0
    # and the common case, a recent soft delete with reclaim on, is not one
    assert rules.reclaim_candidates([_row(deleted_at=NOW - datetime.timedelta(seconds=5))],
                                    HOST, 3600, NOW) == []
