"""reaper.nova.reclaim (the reaper's only DB writes) against a real SQLite file.

The test functions that take only ``engine`` are also run against MariaDB by
tests/functional/test_nova_db_mariadb.py; keep them dialect-neutral.
"""
from __future__ import annotations

import datetime
import json

import pytest
import sqlalchemy as sa

from reaper import exception
from reaper.nova import db as nova_db
from reaper.nova import reclaim
from reaper.nova import schema as s
from reaper.nova import view as nova_view
from tests.unit.nova.test_nova_view import (
    HOST,
    NOW,
    OTHER,
    add_compute_node,
    add_instance,
    add_migration,
    add_row,
    archive,
    new_uuid,
    sqlite_engine,
)

INTERVAL = 3600
OLD = NOW - datetime.timedelta(seconds=INTERVAL + 60)
RECENT = NOW - datetime.timedelta(seconds=INTERVAL - 60)
SECRET = "chap-s3cret-value"


@pytest.fixture
def engine(tmp_path):
    eng = sqlite_engine(tmp_path / "nova.sqlite")
    yield eng
    eng.dispose()


def soft_deleted(engine, host=HOST, deleted_at=OLD, **kw):
    return add_instance(engine, host=host, vm_state="soft-delete", deleted_at=deleted_at, **kw)


def instance_row(engine, uuid):
    with engine.connect() as conn:
        return conn.execute(sa.select(s.instances).where(s.instances.c.uuid == uuid)).one()


def add_dependents(engine, uuid) -> dict[str, int]:
    """One live row in every dependent table, as Nova would have them."""
    ids = {}
    for table, col in s.DEPENDENT_TABLES:
        vals = {col: uuid}
        if table is s.instance_info_caches:
            vals["network_info"] = json.dumps([{"id": "port-" + uuid[:8]}])
        elif table is s.block_device_mapping:
            vals.update(uuid=new_uuid(), volume_id="vol-" + uuid[:8], source_type="volume",
                        destination_type="volume", delete_on_termination=True,
                        connection_info=json.dumps({"data": {"auth_password": SECRET}}))
        elif table is s.instance_system_metadata:
            vals.update(key="image_base", value="x")
        elif table is s.instance_metadata:
            vals.update(key="k", value="v")
        elif table is s.instance_faults:
            vals.update(code=500, message="boom")
        elif table is s.virtual_interfaces:
            vals.update(address="fa:16:3e:" + uuid[:8], uuid=new_uuid())
        elif table is s.migrations:
            vals.update(uuid=new_uuid(), source_compute=HOST, dest_compute=OTHER,
                        status="confirmed", migration_type="resize")
        elif table is s.security_group_instance_association:
            vals.update(security_group_id=1)
        ids[table.name] = add_row(engine, table, **vals)
    add_hard_deleted(engine, uuid)
    return ids


def add_hard_deleted(engine, uuid, tag="prod") -> None:
    """A tag and a console token of the instance (tables without ``deleted``)."""
    with engine.begin() as conn:
        conn.execute(sa.insert(s.tags).values(resource_id=uuid, tag=tag))
        conn.execute(sa.insert(s.console_auth_tokens).values(
            token_hash=new_uuid().replace("-", "") * 2, console_type="novnc",
            host="127.0.0.1", port=5900, instance_uuid=uuid, expires=2000000000,
            created_at=NOW))


def hard_deleted_rows(engine, uuid) -> dict[str, int]:
    with engine.connect() as conn:
        return {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)
                                     .where(t.c[col] == uuid)).scalar()
                for t, col in s.HARD_DELETED_TABLES}


ALL_COUNTED = [*(t.name for t, _ in s.DEPENDENT_TABLES), *(t.name for t, _ in
                                                          s.HARD_DELETED_TABLES)]
# add_dependents' rows, each counted once; system_metadata twice: its own key and the
# clean_attempts key finalize writes before soft-deleting them all.
EXPECTED_COUNTS = {"instances": 1, **{name: 1 for name in ALL_COUNTED},
                   "instance_system_metadata": 2}


def snapshot(engine) -> dict[str, list[tuple]]:
    """Every row of every table finalize may write, in a stable order."""
    tables = [s.instances, *(t for t, _ in s.DEPENDENT_TABLES),
              *(t for t, _ in s.HARD_DELETED_TABLES)]
    with engine.connect() as conn:
        return {t.name: [tuple(r) for r in conn.execute(
            sa.select(t).order_by(*t.primary_key.columns))] for t in tables}


# --------------------------------------------------------------------------
# claim / release
# --------------------------------------------------------------------------

def markers(engine, uuid, deleted=False) -> list[str]:
    """The reaper_claim system_metadata values of an instance (live, or all)."""
    m = s.instance_system_metadata
    where = [m.c.instance_uuid == uuid, m.c.key == "reaper_claim"]
    if not deleted:
        where.append(m.c.deleted == 0)
    with engine.connect() as conn:
        return [r.value for r in conn.execute(sa.select(m.c.value).where(*where)
                                              .order_by(m.c.id))]


def add_marker(engine, uuid, value) -> int:
    return add_row(engine, s.instance_system_metadata, instance_uuid=uuid, key="reaper_claim",
                   value=value)


def nova_force_delete(engine, uuid):
    """What nova-api's force-delete of a soft-deleted instance writes before it casts
    terminate_instance: task_state 'deleting', and no marker."""
    with engine.begin() as conn:
        conn.execute(sa.update(s.instances).where(s.instances.c.uuid == uuid)
                     .values(task_state="deleting"))


def test_claim_wins_when_nothing_changed(engine):
    u, _ = soft_deleted(engine)
    assert nova_view.load_view(engine, HOST, [u]).instances[u].is_soft_deleted
    with nova_db.QueryCounter(engine) as qc:
        assert reclaim.claim(engine, u, HOST, INTERVAL, NOW, "req-1")
    assert qc.count == 3        # the conditional UPDATE, then the marker (stale ones out)
    row = instance_row(engine, u)
    assert row.task_state == "deleting" and row.vm_state == "soft-delete" and row.deleted == 0
    assert row.updated_at == NOW
    assert markers(engine, u) == [f"{HOST}:{NOW.isoformat()}:req-1"]
    with nova_db.QueryCounter(engine) as qc:
        assert not reclaim.claim(engine, u, HOST, INTERVAL, NOW)    # already claimed
    assert qc.count == 1 and len(markers(engine, u)) == 1


def test_claim_and_its_marker_are_one_transaction(engine):
    u, _ = soft_deleted(engine)
    with engine.begin() as conn:        # the marker insert fails: the claim must not stay
        conn.execute(sa.text("DROP TABLE instance_system_metadata"))
    with pytest.raises(exception.NovaDBError):
        reclaim.claim(engine, u, HOST, INTERVAL, NOW)
    assert instance_row(engine, u).task_state is None


def test_claim_replaces_a_stale_marker(engine):
    u, _ = soft_deleted(engine)
    # an old claim of another host was reset by an operator (task_state back to NULL)
    add_marker(engine, u, f"{OTHER}:2024-01-01T00:00:00:req-old")
    assert reclaim.claim(engine, u, HOST, INTERVAL, NOW, "req-2")
    assert markers(engine, u, deleted=True) == [f"{HOST}:{NOW.isoformat()}:req-2"]


def test_claim_loses_against_a_concurrent_restore(engine):
    u, _ = soft_deleted(engine)
    assert nova_view.load_view(engine, HOST, [u]).instances[u].is_soft_deleted
    # Between our load and our claim, Nova's restore runs.
    with engine.begin() as conn:
        conn.execute(sa.update(s.instances).where(s.instances.c.uuid == u)
                     .values(vm_state="active", task_state=None, deleted_at=None))
    before = snapshot(engine)
    assert not reclaim.claim(engine, u, HOST, INTERVAL, NOW)
    assert snapshot(engine) == before


def test_claim_loses_while_restoring_and_restore_loses_after_claim(engine):
    restoring, _ = soft_deleted(engine, task_state="restoring")
    assert not reclaim.claim(engine, restoring, HOST, INTERVAL, NOW)
    claimed, _ = soft_deleted(engine)
    assert reclaim.claim(engine, claimed, HOST, INTERVAL, NOW)
    # Nova's restore: instance.save(expected_task_state=[None]) matches nothing now.
    with engine.begin() as conn:
        res = conn.execute(sa.update(s.instances)
                           .where(s.instances.c.uuid == claimed,
                                  s.instances.c.task_state.is_(None))
                           .values(task_state="restoring"))
    assert res.rowcount == 0


def test_claim_respects_the_interval(engine):
    recent, _ = soft_deleted(engine, deleted_at=RECENT)
    old, _ = soft_deleted(engine, deleted_at=OLD)
    never, _ = soft_deleted(engine, deleted_at=None)           # NULL counts as old
    edge, _ = soft_deleted(engine, deleted_at=NOW - datetime.timedelta(seconds=INTERVAL))
    assert not reclaim.claim(engine, recent, HOST, INTERVAL, NOW)
    assert reclaim.claim(engine, old, HOST, INTERVAL, NOW)
    assert reclaim.claim(engine, never, HOST, INTERVAL, NOW)
    assert reclaim.claim(engine, edge, HOST, INTERVAL, NOW)
    assert reclaim.claim(engine, recent, HOST, INTERVAL, NOW + datetime.timedelta(minutes=2))


def test_claim_accepts_an_aware_now(engine):
    u, _ = soft_deleted(engine, deleted_at=RECENT)
    aware = (NOW + datetime.timedelta(minutes=2)).replace(tzinfo=datetime.timezone.utc)
    assert reclaim.claim(engine, u, HOST, INTERVAL, aware.astimezone(
        datetime.timezone(datetime.timedelta(hours=8))))
    assert instance_row(engine, u).updated_at == NOW + datetime.timedelta(minutes=2)


def test_claim_refuses_other_hosts_deleted_and_active_rows(engine):
    other, _ = soft_deleted(engine, host=OTHER)
    gone, _ = soft_deleted(engine, deleted=True)
    active, _ = add_instance(engine)
    for u in (other, gone, active, new_uuid()):
        assert not reclaim.claim(engine, u, HOST, INTERVAL, NOW)
    assert reclaim.claim(engine, other, OTHER, INTERVAL, NOW)


def test_release_undoes_only_our_claim(engine):
    u, _ = soft_deleted(engine)
    assert not reclaim.release(engine, u, HOST)                 # nothing to release
    assert reclaim.claim(engine, u, HOST, INTERVAL, NOW, "req-1")
    assert not reclaim.release(engine, u, OTHER)                # not OTHER's claim
    assert reclaim.release(engine, u, HOST, NOW)
    assert instance_row(engine, u).task_state is None
    # the marker is removed the way Nova removes a system_metadata key: no row left
    assert markers(engine, u, deleted=True) == []
    assert reclaim.claim(engine, u, HOST, INTERVAL, NOW)      # reclaimable again
    restoring, _ = soft_deleted(engine, task_state="restoring")
    assert not reclaim.release(engine, restoring, HOST)
    assert instance_row(engine, restoring).task_state == "restoring"


def test_release_never_touches_a_claim_that_is_not_ours(engine):
    forced, _ = soft_deleted(engine)
    nova_force_delete(engine, forced)                # Nova's own delete: no marker
    theirs, _ = soft_deleted(engine)
    nova_force_delete(engine, theirs)
    add_marker(engine, theirs, f"{OTHER}:{NOW.isoformat()}:req-9")
    tricky, _ = soft_deleted(engine)                 # a host whose name we prefix
    nova_force_delete(engine, tricky)
    add_marker(engine, tricky, f"{HOST}x:{NOW.isoformat()}:req-9")
    wildcard, _ = soft_deleted(engine, host="cmp_")  # LIKE wildcards are escaped
    nova_force_delete(engine, wildcard)
    add_marker(engine, wildcard, f"cmpX:{NOW.isoformat()}:req-9")
    before = snapshot(engine)
    for u in (forced, theirs, tricky):
        assert not reclaim.release(engine, u, HOST, NOW)
    assert not reclaim.release(engine, wildcard, "cmp_", NOW)
    assert snapshot(engine) == before


def test_release_of_an_exact_marker(engine):
    u, _ = soft_deleted(engine)
    assert reclaim.claim(engine, u, HOST, INTERVAL, NOW, "req-1")
    mine = reclaim.marker_for(HOST, NOW, "req-1")
    assert not reclaim.release(engine, u, HOST, NOW, marker=reclaim.marker_for(HOST, NOW, "req-2"))
    assert instance_row(engine, u).task_state == "deleting"
    assert reclaim.release(engine, u, HOST, NOW, marker=mine)
    assert instance_row(engine, u).task_state is None and markers(engine, u) == []


def test_adopt_is_a_compare_and_swap_of_our_marker(engine):
    u, _ = soft_deleted(engine)
    assert reclaim.claim(engine, u, HOST, INTERVAL, NOW, "req-lost")
    (old,) = markers(engine, u)
    later = NOW + datetime.timedelta(hours=1)
    assert not reclaim.adopt(engine, u, HOST, f"{HOST}:{NOW.isoformat()}:req-x", later, "p2")
    assert not reclaim.adopt(engine, u, OTHER, old, later, "req-2")
    assert reclaim.adopt(engine, u, HOST, old, later, "req-2")
    assert markers(engine, u) == [f"{HOST}:{later.isoformat()}:req-2"]
    assert not reclaim.adopt(engine, u, HOST, old, later, "req-3")     # it moved on
    # no longer claimed (an operator's reset-state): nothing to adopt
    new = markers(engine, u)[0]
    with engine.begin() as conn:
        conn.execute(sa.update(s.instances).where(s.instances.c.uuid == u)
                     .values(task_state=None))
    assert not reclaim.adopt(engine, u, HOST, new, later, "req-4")
    assert markers(engine, u) == [new]


def test_claim_markers_are_in_the_view_only_for_claimed_rows(engine):
    add_compute_node(engine)
    plain, _ = soft_deleted(engine)
    with nova_db.QueryCounter(engine) as qc:
        view = nova_view.load_view(engine, HOST, [plain])
    unclaimed_queries = qc.count
    assert view.claim_markers == {}
    mine, _ = soft_deleted(engine)
    assert reclaim.claim(engine, mine, HOST, INTERVAL, NOW, "req-1")
    forced, _ = soft_deleted(engine)
    nova_force_delete(engine, forced)
    with nova_db.QueryCounter(engine) as qc:
        view = nova_view.load_view(engine, HOST, [])
    assert qc.count == unclaimed_queries + 1
    assert view.claim_markers == {mine: (reclaim.marker_for(HOST, NOW, "req-1"),)}
    assert view.instances[forced].is_claimed and forced not in view.claim_markers
    assert nova_view.reread_claim_markers(engine, mine) == view.claim_markers[mine]
    assert nova_view.reread_claim_markers(engine, forced) == ()


# --------------------------------------------------------------------------
# finalize
# --------------------------------------------------------------------------

def test_finalize_soft_deletes_the_instance_and_its_dependents(engine):
    u, iid = soft_deleted(engine)
    bystander, _ = soft_deleted(engine)
    mine = add_dependents(engine, u)
    theirs = add_dependents(engine, bystander)
    old_fault = add_row(engine, s.instance_faults, deleted=True, instance_uuid=u, code=1)
    assert reclaim.claim(engine, u, HOST, INTERVAL, NOW)
    later = NOW + datetime.timedelta(minutes=5)
    before = snapshot(engine)
    res = reclaim.finalize(engine, u, later)
    assert res["result"] == "finalized" and res["finalized"] and not res["already_finalized"]
    assert res["counts"] == EXPECTED_COUNTS

    row = instance_row(engine, u)
    assert row.deleted == iid and row.deleted_at == later
    assert row.vm_state == "deleted" and row.task_state is None and row.power_state == 0
    assert row.terminated_at == later and row.updated_at == later
    with engine.connect() as conn:
        for table, _col in s.DEPENDENT_TABLES:
            rid = mine[table.name]
            r = conn.execute(sa.select(table).where(table.c.id == rid)).one()
            assert r.deleted == rid and r.deleted_at == later, table.name
            r = conn.execute(sa.select(table).where(table.c.id == theirs[table.name])).one()
            assert r.deleted == 0 and r.deleted_at is None, table.name
        r = conn.execute(sa.select(s.instance_faults)
                         .where(s.instance_faults.c.id == old_fault)).one()
        assert r.deleted == old_fault and r.deleted_at == NOW     # untouched
    # Nothing of the bystander changed at all.
    after = snapshot(engine)
    uuid_col = {"instances": "uuid", **{t.name: c for t, c in s.DEPENDENT_TABLES},
                **{t.name: c for t, c in s.HARD_DELETED_TABLES}}
    for name, rows in before.items():
        key = uuid_col[name]
        cols = list(s.metadata.tables[name].columns.keys())
        idx = cols.index(key)
        assert [r for r in rows if r[idx] == bystander] == \
            [r for r in after[name] if r[idx] == bystander], name
    # The view no longer sees it as live; its live BDMs and caches are gone.
    view = nova_view.load_view(engine, HOST, [u])
    assert view.instances[u].is_deleted and u not in view.info_caches
    assert all(b.instance_uuid != u for b in view.bdms)


def test_finalize_removes_our_marker_and_needs_it_when_host_is_given(engine):
    u, _ = soft_deleted(engine)
    ids = add_dependents(engine, u)
    assert reclaim.claim(engine, u, HOST, INTERVAL, NOW, "req-1")
    res = reclaim.finalize(engine, u, NOW, host=HOST)
    assert res["finalized"] and res["claim_markers_removed"] == 1
    assert res["counts"] == EXPECTED_COUNTS
    # The DB end state is Nova's own: no trace of the marker, not even soft-deleted;
    # the instance's own system_metadata is soft-deleted as instance_destroy does.
    assert markers(engine, u, deleted=True) == []
    with engine.connect() as conn:
        sm = s.instance_system_metadata
        rows = conn.execute(sa.select(sm.c.id, sm.c.key, sm.c.deleted)
                            .where(sm.c.instance_uuid == u).order_by(sm.c.id)).all()
    assert [(r.key, r.deleted == r.id) for r in rows] == [
        ("image_base", True), ("clean_attempts", True)]
    assert rows[0].id == ids["instance_system_metadata"]
    forced, _ = soft_deleted(engine)
    nova_force_delete(engine, forced)
    before = snapshot(engine)
    res = reclaim.finalize(engine, forced, NOW, host=HOST)
    assert res["result"] == "not_claimed" and "markers=[]" in res["reason"]
    assert snapshot(engine) == before


def test_finalize_is_idempotent(engine):
    u, _ = soft_deleted(engine)
    add_dependents(engine, u)
    assert reclaim.claim(engine, u, HOST, INTERVAL, NOW)
    assert reclaim.finalize(engine, u, NOW)["finalized"]
    before = snapshot(engine)
    res = reclaim.finalize(engine, u, NOW + datetime.timedelta(hours=1))
    assert res["result"] == "already_finalized" and res["already_finalized"]
    assert not res["finalized"] and res["counts"] == {}
    assert snapshot(engine) == before
    assert not reclaim.claim(engine, u, HOST, INTERVAL, NOW)


def test_finalize_after_archive_reports_already_finalized(engine):
    u, _ = soft_deleted(engine)
    assert reclaim.claim(engine, u, HOST, INTERVAL, NOW)
    assert reclaim.finalize(engine, u, NOW)["finalized"]
    archive(engine, u)
    assert reclaim.finalize(engine, u, NOW)["result"] == "already_finalized"


def test_finalize_without_our_claim_changes_nothing(engine):
    unclaimed, _ = soft_deleted(engine)
    add_dependents(engine, unclaimed)
    claimed_elsewhere, _ = soft_deleted(engine, host=OTHER)
    assert reclaim.claim(engine, claimed_elsewhere, OTHER, INTERVAL, NOW)
    before = snapshot(engine)
    res = reclaim.finalize(engine, unclaimed, NOW)
    assert res["result"] == "not_claimed" and not res["finalized"]
    assert "task_state=None" in res["reason"]
    res = reclaim.finalize(engine, claimed_elsewhere, NOW, host=HOST)
    assert res["result"] == "not_claimed" and "expected cmp1" in res["reason"]
    assert reclaim.finalize(engine, new_uuid(), NOW)["result"] == "not_found"
    assert snapshot(engine) == before


def test_finalize_is_one_transaction(engine):
    u, _ = soft_deleted(engine)
    add_dependents(engine, u)
    assert reclaim.claim(engine, u, HOST, INTERVAL, NOW)
    s.instance_id_mappings.drop(engine)           # the last dependent update fails
    with pytest.raises(exception.NovaDBError):
        reclaim.finalize(engine, u, NOW)
    row = instance_row(engine, u)
    assert row.deleted == 0 and row.vm_state == "soft-delete" and row.task_state == "deleting"
    with engine.connect() as conn:
        assert conn.execute(sa.select(s.instance_info_caches.c.deleted)
                            .where(s.instance_info_caches.c.instance_uuid == u)).scalar() == 0


def sysmeta(engine, uuid, key) -> list:
    sm = s.instance_system_metadata
    with engine.connect() as conn:
        return conn.execute(sa.select(sm).where(sm.c.instance_uuid == uuid, sm.c.key == key)
                            .order_by(sm.c.id)).all()


def info_cache(engine, uuid):
    ic = s.instance_info_caches
    with engine.connect() as conn:
        return conn.execute(sa.select(ic).where(ic.c.instance_uuid == uuid)).one()


def test_finalize_marks_the_row_cleaned_and_counts_the_clean_attempt(engine):
    u, _ = soft_deleted(engine)
    assert instance_row(engine, u).cleaned == 0
    assert reclaim.claim(engine, u, HOST, INTERVAL, NOW, "req-1")
    later = NOW + datetime.timedelta(minutes=5)
    res = reclaim.finalize(engine, u, later, host=HOST)
    assert res["finalized"] and res["clean_attempts"] == "1"
    assert instance_row(engine, u).cleaned == 1     # _run_pending_deletes leaves it be
    # Written as Instance.save() adds a key (created now), then soft-deleted by
    # instance_destroy with the rest of the instance's system_metadata.
    (row,) = sysmeta(engine, u, "clean_attempts")
    assert (row.value, row.created_at, row.updated_at) == ("1", later, None)
    assert (row.deleted, row.deleted_at) == (row.id, later)


def test_finalize_adds_one_to_an_earlier_clean_attempts_in_place(engine):
    for before, after in (("2", "3"), ("not-a-number", "1")):
        u, _ = soft_deleted(engine)
        rid = add_row(engine, s.instance_system_metadata, instance_uuid=u,
                      key="clean_attempts", value=before)
        old = add_row(engine, s.instance_system_metadata, deleted=True, instance_uuid=u,
                      key="clean_attempts", value="7")          # deleted: not counted
        assert reclaim.claim(engine, u, HOST, INTERVAL, NOW)
        assert reclaim.finalize(engine, u, NOW)["clean_attempts"] == after
        rows = {r.id: r for r in sysmeta(engine, u, "clean_attempts")}
        assert set(rows) == {rid, old}
        assert (rows[rid].value, rows[rid].updated_at, rows[rid].deleted) == (after, NOW, rid)
        assert rows[old].value == "7"


def test_finalize_with_files_kept_leaves_cleaned_0_but_counts_the_attempt(engine):
    u, _ = soft_deleted(engine)
    assert reclaim.claim(engine, u, HOST, INTERVAL, NOW)
    res = reclaim.finalize(engine, u, NOW, cleaned=False)
    assert res["finalized"] and res["clean_attempts"] == "1"
    row = instance_row(engine, u)
    assert row.cleaned == 0 and row.deleted == row.id       # Nova retries the files


def test_finalize_empties_network_info_only_once_the_ports_are_released(engine):
    kept, _ = soft_deleted(engine)
    released, _ = soft_deleted(engine)
    bystander, _ = soft_deleted(engine)
    for u in (kept, released, bystander):
        add_row(engine, s.instance_info_caches, instance_uuid=u,
                network_info=json.dumps([{"id": "port-" + u[:8]}]))
        assert u == bystander or reclaim.claim(engine, u, HOST, INTERVAL, NOW)
    later = NOW + datetime.timedelta(minutes=1)
    assert reclaim.finalize(engine, kept, later)["network_info_emptied"] == 0
    res = reclaim.finalize(engine, released, later, ports_released=True)
    assert res["network_info_emptied"] == 1
    c = info_cache(engine, kept)
    assert json.loads(c.network_info) == [{"id": "port-" + kept[:8]}] and c.updated_at is None
    assert c.deleted == c.id
    c = info_cache(engine, released)
    assert c.network_info == "[]" and c.updated_at == later     # as deallocate leaves it
    assert (c.deleted, c.deleted_at) == (c.id, later)
    c = info_cache(engine, bystander)
    assert c.network_info != "[]" and c.deleted == 0


def test_finalize_deletes_the_instances_tags_and_console_tokens(engine):
    u, _ = soft_deleted(engine)
    bystander, _ = soft_deleted(engine)
    add_hard_deleted(engine, u, "a")
    add_hard_deleted(engine, u, "b")
    add_hard_deleted(engine, bystander, "a")
    assert reclaim.claim(engine, u, HOST, INTERVAL, NOW)
    res = reclaim.finalize(engine, u, NOW)
    assert res["counts"]["tags"] == 2 and res["counts"]["console_auth_tokens"] == 2
    assert hard_deleted_rows(engine, u) == {"tags": 0, "console_auth_tokens": 0}
    assert hard_deleted_rows(engine, bystander) == {"tags": 1, "console_auth_tokens": 1}


def test_a_finalize_failing_part_way_changes_nothing(engine):
    """Every write of finalize is in one transaction: the last statements fail (their
    table is gone), and the claim, the marker, clean_attempts, cleaned, the emptied
    info cache and the soft deletes before them are all rolled back."""
    for fail_at in ("console_auth_tokens", "tags", "instance_id_mappings"):
        u, _ = soft_deleted(engine)
        add_dependents(engine, u)
        assert reclaim.claim(engine, u, HOST, INTERVAL, NOW, "req-1")
        before = snapshot(engine)
        s.metadata.tables[fail_at].drop(engine)
        try:
            with pytest.raises(exception.NovaDBError):
                reclaim.finalize(engine, u, NOW + datetime.timedelta(minutes=1), host=HOST,
                                 ports_released=True)
        finally:
            s.metadata.tables[fail_at].create(engine)
        after = snapshot(engine)
        for name, rows in before.items():
            if name != fail_at:
                assert after[name] == rows, (fail_at, name)
        row = instance_row(engine, u)
        assert (row.deleted, row.cleaned, row.task_state) == (0, 0, "deleting"), fail_at
        assert sysmeta(engine, u, "clean_attempts") == [] and len(markers(engine, u)) == 1
        assert info_cache(engine, u).network_info != "[]"


# --------------------------------------------------------------------------
# leftovers
# --------------------------------------------------------------------------

def test_leftovers_reports_volumes_ports_and_consumer(engine):
    u, _ = soft_deleted(engine)
    add_dependents(engine, u)          # vol-<u>, delete_on_termination, a CHAP secret
    add_row(engine, s.block_device_mapping, instance_uuid=u, uuid=new_uuid(),
            volume_id="vol-keep", source_type="volume", destination_type="volume",
            delete_on_termination=False, attachment_id="att-keep",
            connection_info=json.dumps({"data": {"auth_password": SECRET}}))
    add_row(engine, s.block_device_mapping, instance_uuid=u, uuid=new_uuid(),
            source_type="image", destination_type="local")
    add_row(engine, s.block_device_mapping, deleted=True, instance_uuid=u, uuid=new_uuid(),
            volume_id="vol-detached", destination_type="volume", delete_on_termination=True)
    out = reclaim.leftovers(engine, u)
    assert out["volumes_delete_on_termination"] == ["vol-" + u[:8]]
    assert out["volumes_attached"] == ["vol-" + u[:8], "vol-keep"]
    assert out["attachment_ids"] == ["att-keep"]
    assert out["ports"] == ["port-" + u[:8]] and out["network_info_unparsable"] is False
    assert out["allocations"] == {"consumer": u}
    assert SECRET not in json.dumps(out)


@pytest.mark.parametrize("network_info,ports,unparsable", [
    ("{not json", [], True),
    ('{"id": "p"}', [], True),
    ('[{"id": "p1"}, "junk", {"address": "fa:16:3e:00:00:01"}]', ["p1"], True),
    ("[]", [], False),
    (None, [], False),
])
def test_leftovers_with_odd_network_info(engine, network_info, ports, unparsable):
    u, _ = soft_deleted(engine)
    add_row(engine, s.instance_info_caches, instance_uuid=u, network_info=network_info)
    out = reclaim.leftovers(engine, u)
    assert out["ports"] == ports and out["network_info_unparsable"] is unparsable
    assert out["volumes_attached"] == [] and out["allocations"] == {"consumer": u}


def test_leftovers_without_info_cache(engine):
    u, _ = soft_deleted(engine)
    out = reclaim.leftovers(engine, u)
    assert out["ports"] == [] and out["network_info_unparsable"] is False


def test_writes_on_an_unreachable_db_raise_safely(tmp_path):
    eng = nova_db.make_engine("mysql+pymysql://nova:s3cr3t-pw@127.0.0.1:1/nova",
                              connect_timeout=2)
    u = new_uuid()
    for call in (lambda: reclaim.claim(eng, u, HOST, INTERVAL, NOW),
                 lambda: reclaim.release(eng, u, HOST),
                 lambda: reclaim.adopt(eng, u, HOST, "m", NOW),
                 lambda: reclaim.finalize(eng, u, NOW),
                 lambda: reclaim.leftovers(eng, u)):
        with pytest.raises(exception.NovaDBError) as exc:
            call()
        assert "s3cr3t-pw" not in str(exc.value)


def test_evacuation_migration_is_soft_deleted_with_the_instance(engine):
    u, _ = soft_deleted(engine)
    mid = add_migration(engine, u, source=OTHER, dest=HOST, status="done",
                        migration_type="evacuation")
    assert reclaim.claim(engine, u, HOST, INTERVAL, NOW)
    assert reclaim.finalize(engine, u, NOW)["counts"]["migrations"] == 1
    (mig,) = nova_view.reread_migrations(engine, u)
    assert mig.id == mid and mig.deleted == mid
