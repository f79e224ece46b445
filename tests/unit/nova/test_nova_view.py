"""reaper.nova.view and reaper.nova.db against a real SQLite file built from schema.py.

The test functions that take only ``engine`` are also run against MariaDB by
tests/functional/test_nova_db_mariadb.py; keep them dialect-neutral.
"""
from __future__ import annotations

import datetime
import json
import uuid as uuidlib

import pytest
import sqlalchemy as sa

from reaper import exception
from reaper.conf import database as conf_database
from reaper.nova import db as nova_db
from reaper.nova import schema as s
from reaper.nova import view as nova_view

HOST = "cmp1"
OTHER = "cmp2"
NOW = datetime.datetime(2024, 5, 1, 12, 0, 0)


def new_uuid() -> str:
    return str(uuidlib.uuid4())


# --------------------------------------------------------------------------
# Seeding helpers (shared with test_nova_reclaim and the MariaDB functional test)
# --------------------------------------------------------------------------

def add_instance(engine, uuid=None, host=HOST, *, deleted=False, vm_state="active",
                 task_state=None, deleted_at=None, **kw) -> tuple[str, int]:
    """Insert an instances row; ``deleted=True`` soft-deletes it as Nova does (deleted=id)."""
    uuid = uuid or new_uuid()
    vals = dict(uuid=uuid, host=host, node=f"{host}.example" if host else None,
                vm_state=vm_state, task_state=task_state, power_state=1, deleted=0,
                deleted_at=deleted_at, display_name=f"vm-{uuid[:8]}", project_id="p1",
                user_id="u1", created_at=NOW - datetime.timedelta(days=10))
    vals.update(kw)
    with engine.begin() as conn:
        iid = conn.execute(sa.insert(s.instances).values(**vals)).inserted_primary_key[0]
        if deleted:
            conn.execute(sa.update(s.instances).where(s.instances.c.id == iid)
                         .values(deleted=iid, deleted_at=deleted_at or NOW, vm_state="deleted"))
    return uuid, iid


def add_many_instances(engine, n, host=HOST) -> list[str]:
    uuids = [new_uuid() for _ in range(n)]
    with engine.begin() as conn:
        conn.execute(sa.insert(s.instances), [
            dict(uuid=u, host=host, node=host, vm_state="active", power_state=1, deleted=0)
            for u in uuids])
        conn.execute(sa.insert(s.instance_info_caches), [
            dict(instance_uuid=u, network_info=json.dumps([{"id": new_uuid()}]), deleted=0)
            for u in uuids])
        conn.execute(sa.insert(s.block_device_mapping), [
            dict(instance_uuid=u, uuid=new_uuid(), source_type="image",
                 destination_type="local", device_name="/dev/vda", deleted=0)
            for u in uuids])
    return uuids


def add_row(engine, table, *, deleted=False, **vals) -> int:
    vals.setdefault("deleted", 0)
    with engine.begin() as conn:
        rid = conn.execute(sa.insert(table).values(**vals)).inserted_primary_key[0]
        if deleted:
            conn.execute(sa.update(table).where(table.c.id == rid)
                         .values(deleted=rid, deleted_at=NOW))
    return rid


def add_migration(engine, instance_uuid, *, source=OTHER, dest=HOST, status="running",
                  migration_type="live-migration", deleted=False) -> int:
    return add_row(engine, s.migrations, deleted=deleted, uuid=new_uuid(),
                   instance_uuid=instance_uuid, source_compute=source, dest_compute=dest,
                   source_node=source, dest_node=dest, status=status,
                   migration_type=migration_type)


def add_compute_node(engine, host=HOST, hypervisor_hostname=None, deleted=False) -> int:
    return add_row(engine, s.compute_nodes, deleted=deleted, uuid=new_uuid(), host=host,
                   hypervisor_hostname=hypervisor_hostname or host, vcpus=8, memory_mb=8192,
                   local_gb=100, vcpus_used=0, memory_mb_used=0, local_gb_used=0,
                   hypervisor_type="QEMU", hypervisor_version=8002000, cpu_info="{}")


def archive(engine, uuid):
    """What `nova-manage db archive_deleted_rows` does to a deleted instance row (its
    dependent rows go to their own shadow tables, which the slice does not model:
    they are removed, or MariaDB's foreign keys would refuse the delete)."""
    cols = [c.name for c in s.instances.columns]
    with engine.begin() as conn:
        for table, col in (*s.DEPENDENT_TABLES, *s.HARD_DELETED_TABLES):
            conn.execute(sa.delete(table).where(table.c[col] == uuid))
        row = conn.execute(sa.select(s.instances).where(s.instances.c.uuid == uuid)).one()
        conn.execute(sa.insert(s.shadow_instances).values(**{c: row._mapping[c] for c in cols}))
        conn.execute(sa.delete(s.instances).where(s.instances.c.uuid == uuid))


def sqlite_engine(path) -> sa.Engine:
    """A fresh Nova DB slice in a SQLite file."""
    eng = nova_db.make_engine(f"sqlite:///{path}")
    s.create_all(eng)
    return eng


@pytest.fixture
def engine(tmp_path):
    eng = sqlite_engine(tmp_path / "nova.sqlite")
    yield eng
    eng.dispose()


# --------------------------------------------------------------------------
# Query count
# --------------------------------------------------------------------------

def test_query_count_is_the_same_for_10_and_500_instances(engine):
    add_compute_node(engine)
    counts = []
    for n in (10, 500):
        existing = set(nova_view.load_view(engine, HOST, []).instances)
        add_many_instances(engine, n - len(existing))
        local = [*nova_view.load_view(engine, HOST, []).instances, new_uuid()]  # one unknown
        with nova_db.QueryCounter(engine) as qc:
            view = nova_view.load_view(engine, HOST, local)
        assert view.ok, view.error
        assert len([u for u in view.instances if view.instances[u].host == HOST]) == n
        assert len(view.bdms) == n and len(view.info_caches) == n
        assert view.queries == qc.count
        counts.append(qc.count)
    # 5 + the unknown uuid by uuid in instances, then in shadow_instances
    assert counts[0] == counts[1] == 7


def test_no_shadow_query_when_every_local_uuid_has_a_row(engine):
    uuids = add_many_instances(engine, 20)
    with nova_db.QueryCounter(engine) as qc:
        view = nova_view.load_view(engine, HOST, uuids)
    assert view.ok and view.queries == qc.count == 5
    empty = nova_view.load_view(engine, HOST, [])
    assert empty.ok and empty.queries == 5


def test_long_uuid_lists_are_batched(engine, monkeypatch):
    monkeypatch.setattr(nova_db, "max_in_params", lambda eng: 7)
    uuids = add_many_instances(engine, 20, host=OTHER)     # found only through local uuids
    view = nova_view.load_view(engine, HOST, uuids)
    assert view.ok
    assert set(view.instances) == set(uuids)
    assert len(view.bdms) == 20 and len(view.info_caches) == 20
    # our host's rows, 3 batches for each of migrations, instances, bdms, caches,
    # compute_nodes
    assert view.queries == 1 + 4 * 3 + 1


def test_query_counter_counts_statements(engine):
    with nova_db.QueryCounter(engine, keep_statements=True) as qc:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            conn.execute(sa.select(s.instances.c.id))
    assert qc.count == 2 and "SELECT 1" in qc.statements[0]
    with engine.connect() as conn:
        conn.execute(sa.text("SELECT 1"))
    assert qc.count == 2                         # stopped counting on exit


# --------------------------------------------------------------------------
# What the view holds
# --------------------------------------------------------------------------

def test_live_rows_of_our_host_and_local_uuids(engine):
    mine, _ = add_instance(engine)
    mine_not_local, _ = add_instance(engine)
    foreign_local, _ = add_instance(engine, host=OTHER)
    foreign, _ = add_instance(engine, host=OTHER)
    view = nova_view.load_view(engine, HOST, [mine, foreign_local])
    assert view.ok
    assert set(view.instances) == {mine, mine_not_local, foreign_local}
    assert view.instances[foreign_local].host == OTHER
    assert foreign not in view.instances
    row = view.instances[mine]
    assert row.vm_state == "active" and row.deleted == 0 and not row.archived


def test_migrations_are_those_touching_our_host_and_those_of_local_uuids(engine):
    """The same rows whether a local uuid is a live row of our host (its migrations
    come through a subquery of our rows) or not (sent by uuid): ended migrations of
    local uuids, open ones touching our host, and none of a row of ours not seen here."""
    mine, _ = add_instance(engine)
    mine_not_local, _ = add_instance(engine)
    foreign_local, _ = add_instance(engine, host=OTHER)
    kept = {add_migration(engine, mine, source=HOST, dest=OTHER, status="confirmed"),
            add_migration(engine, foreign_local, source=HOST, dest=OTHER, status="failed"),
            add_migration(engine, mine_not_local, source=OTHER, dest=HOST, status="running")}
    add_migration(engine, mine_not_local, source=HOST, dest=OTHER, status="confirmed")
    elsewhere, _ = add_instance(engine, host=OTHER)
    add_migration(engine, elsewhere, source=OTHER, dest="cmp3", status="running")
    view = nova_view.load_view(engine, HOST, [mine, foreign_local])
    assert view.ok and {mg.id for mg in view.migrations} == kept
    assert [mg.id for mg in view.migrations] == sorted(kept)


def test_deleted_rows_only_when_seen_locally(engine):
    gone_local, gid = add_instance(engine, deleted=True)
    gone_quiet, _ = add_instance(engine, deleted=True)
    view = nova_view.load_view(engine, HOST, [gone_local])
    assert gone_quiet not in view.instances
    row = view.instances[gone_local]
    assert row.deleted == gid and row.is_deleted and row.deleted_at == NOW
    assert row.deleted_at.tzinfo is None


def test_archived_rows_come_from_shadow_instances(engine):
    old, oid = add_instance(engine, deleted=True)
    archive(engine, old)
    never = new_uuid()
    view = nova_view.load_view(engine, HOST, [old, never])
    assert view.ok and view.queries == 7
    row = view.instances[old]
    assert row.archived and row.is_deleted and row.id == oid and row.deleted == oid
    assert never not in view.instances


def test_missing_shadow_table_counts_as_no_archived_rows(engine):
    mine, _ = add_instance(engine)
    s.shadow_instances.drop(engine)
    view = nova_view.load_view(engine, HOST, [mine, new_uuid()])
    assert view.ok, view.error
    assert set(view.instances) == {mine}


def test_soft_deleted_evacuation_migration_is_returned(engine):
    evacuated, _ = add_instance(engine, host=OTHER)
    mid = add_migration(engine, evacuated, source=HOST, dest=OTHER, status="done",
                        migration_type="evacuation", deleted=True)
    view = nova_view.load_view(engine, HOST, [evacuated])
    (mig,) = [m for m in view.migrations if m.instance_uuid == evacuated]
    assert mig.id == mid and mig.deleted == mid
    assert mig.migration_type == "evacuation" and mig.status == "done"
    assert mig.source_compute == HOST


def test_migrations_touching_our_host(engine):
    incoming, _ = add_instance(engine, host=OTHER)      # live migration to us, no domain yet
    add_row(engine, s.instance_info_caches, instance_uuid=incoming,
            network_info=json.dumps([{"id": "port-in"}]))
    running = add_migration(engine, incoming, source=OTHER, dest=HOST, status="running")
    finished_elsewhere, _ = add_instance(engine, host=OTHER)
    add_migration(engine, finished_elsewhere, source=HOST, dest=OTHER, status="confirmed")
    resize_wait, _ = add_instance(engine, host=OTHER, vm_state="resized")
    awaiting = add_migration(engine, resize_wait, source=HOST, dest=OTHER, status="finished",
                             migration_type="resize")
    unrelated, _ = add_instance(engine, host="cmp3")
    add_migration(engine, unrelated, source="cmp3", dest="cmp4", status="running")
    view = nova_view.load_view(engine, HOST, [])
    assert {m.id for m in view.migrations} == {running, awaiting}
    # The in-flight instances come with their rows and info caches (R3, R11).
    assert {incoming, resize_wait} <= set(view.instances)
    assert finished_elsewhere not in view.instances and unrelated not in view.instances
    assert "port-in" in view.info_caches[incoming].network_info


def test_local_uuid_migrations_include_final_and_deleted(engine):
    local, _ = add_instance(engine, host=OTHER)
    ids = {add_migration(engine, local, source=HOST, dest=OTHER, status="confirmed",
                         migration_type="resize"),
           add_migration(engine, local, source=OTHER, dest="cmp3", status="error",
                         deleted=True)}
    view = nova_view.load_view(engine, HOST, [local])
    assert {m.id for m in view.migrations} == ids
    assert nova_view.reread_migrations(engine, local) == tuple(
        sorted(view.migrations, key=lambda m: m.id))


def test_bdms_and_info_caches_are_live_rows_of_relevant_instances(engine):
    mine, _ = add_instance(engine)
    foreign, _ = add_instance(engine, host=OTHER)
    live_bdm = add_row(engine, s.block_device_mapping, instance_uuid=mine, uuid=new_uuid(),
                       volume_id="vol-1", source_type="volume", destination_type="volume",
                       device_name="/dev/vdb", delete_on_termination=True,
                       connection_info='{"driver_volume_type": "iscsi"}',
                       attachment_id="att-1")
    add_row(engine, s.block_device_mapping, deleted=True, instance_uuid=mine, uuid=new_uuid(),
            volume_id="vol-old", destination_type="volume")
    add_row(engine, s.block_device_mapping, instance_uuid=foreign, uuid=new_uuid(),
            volume_id="vol-foreign", destination_type="volume")
    add_row(engine, s.instance_info_caches, instance_uuid=mine, network_info="[]")
    add_row(engine, s.instance_info_caches, instance_uuid=foreign, network_info="[]")
    view = nova_view.load_view(engine, HOST, [])
    (bdm,) = view.bdms
    assert bdm.id == live_bdm and bdm.volume_id == "vol-1" and bdm.delete_on_termination is True
    assert bdm.attachment_id == "att-1" and "iscsi" in bdm.connection_info
    assert set(view.info_caches) == {mine}
    view2 = nova_view.load_view(engine, HOST, [foreign])
    assert {b.volume_id for b in view2.bdms} == {"vol-1", "vol-foreign"}
    assert set(view2.info_caches) == {mine, foreign}


def test_compute_nodes_of_our_host(engine):
    cid = add_compute_node(engine, hypervisor_hostname="cmp1.example")
    add_compute_node(engine, hypervisor_hostname="cmp1.old", deleted=True)
    add_compute_node(engine, host=OTHER)
    view = nova_view.load_view(engine, HOST, [])
    (cn,) = view.compute_nodes
    assert cn.id == cid and cn.host == HOST and cn.hypervisor_hostname == "cmp1.example"


def test_reread_instance(engine):
    live, _ = add_instance(engine, host=OTHER, vm_state="soft-delete")
    gone, gid = add_instance(engine, deleted=True)
    archive(engine, gone)
    assert nova_view.reread_instance(engine, live).vm_state == "soft-delete"
    row = nova_view.reread_instance(engine, gone)
    assert row.archived and row.deleted == gid and row.is_deleted
    assert nova_view.reread_instance(engine, new_uuid()) is None
    with nova_db.QueryCounter(engine) as qc:
        nova_view.reread_instance(engine, live)
        nova_view.reread_migrations(engine, live)
    assert qc.count == 2


def test_list_compute_hosts(engine):
    for host, binary, deleted in (("cmp1", "nova-compute", False), ("cmp2", "nova-compute", False),
                                  ("cmp3", "nova-compute", True), ("ctl", "nova-scheduler", False)):
        add_row(engine, s.services, deleted=deleted, host=host, binary=binary,
                topic=binary.split("-")[1], report_count=0)
    assert nova_view.list_compute_hosts(engine) == ["cmp1", "cmp2"]


# --------------------------------------------------------------------------
# Failures: the view never raises and never shows the password
# --------------------------------------------------------------------------

def test_missing_table_gives_not_ok(tmp_path):
    eng = nova_db.make_engine(f"sqlite:///{tmp_path}/empty.sqlite")
    view = nova_view.load_view(eng, HOST, [new_uuid()])
    assert not view.ok and "no such table" in view.error
    with pytest.raises(exception.NovaDBError):
        nova_view.reread_migrations(eng, new_uuid())


def test_sqlite_in_missing_directory_gives_not_ok(tmp_path):
    eng = nova_db.make_engine(f"sqlite:///{tmp_path}/no/such/dir/nova.sqlite")
    view = nova_view.load_view(eng, HOST, [new_uuid()])
    assert not view.ok and view.error and view.instances == {}
    with pytest.raises(exception.NovaDBError):
        nova_view.reread_instance(eng, new_uuid())


def test_unreachable_mysql_gives_not_ok_without_password():
    eng = nova_db.make_engine("mysql+pymysql://nova:s3cr3t-pw@127.0.0.1:1/nova",
                              connect_timeout=2)
    view = nova_view.load_view(eng, HOST, [new_uuid()])
    assert not view.ok
    assert "s3cr3t-pw" not in view.error and "***" in view.error
    assert "127.0.0.1" in view.error
    with pytest.raises(exception.NovaDBError) as exc:
        nova_view.list_compute_hosts(eng)
    assert "s3cr3t-pw" not in str(exc.value)
    with pytest.raises(exception.NovaDBError) as exc:
        nova_db.wait_for_db(eng, max_retries=1, retry_interval=0)
    assert "s3cr3t-pw" not in str(exc.value)


def test_describe_error_scrubs_an_echoed_password():
    eng = nova_db.make_engine("mysql+pymysql://nova:s3cr3t-pw@db/nova")
    exc = sa.exc.OperationalError("SELECT 1", {}, Exception("login s3cr3t-pw refused"))
    text = nova_db.describe_error(exc, eng)
    assert "s3cr3t-pw" not in text and "SELECT" not in text and "refused" in text


def test_engine_from_conf(tmp_path, conf):
    with pytest.raises(exception.NovaDBError):
        nova_db.engine_from_conf()
    conf.config(group="database", connection=f"sqlite:///{tmp_path}/n.sqlite")
    eng = nova_db.engine_from_conf()
    nova_db.wait_for_db(eng, max_retries=0)
    assert eng.pool._recycle == 3600
    conf.config(group="database", connection="not a url ://pw@")
    with pytest.raises(exception.NovaDBError) as exc:
        nova_db.engine_from_conf()
    assert "pw@" not in str(exc.value)
    assert any(o.name == "connection" and o.secret for _, opts in conf_database.list_opts()
               for o in opts)
