"""The Nova DB layer (view, claim, finalize, leftovers) against a real MariaDB.

Runs every dialect-neutral case of tests/unit/nova/test_nova_view.py,
tests/unit/nova/test_nova_changes.py and tests/unit/nova/test_nova_reclaim.py (those taking
only ``engine``, optionally
``monkeypatch``) on a throwaway database ``reaper_t_<random>``, plus the cases only
a server can show: InnoDB row locks between a restore and a claim, foreign keys, and
a wrong password.

Needs MariaDB on 127.0.0.1 with user reaper/reaper (``tools/testhost.sh start``).
Override the server URL with REAPER_TEST_MYSQL_URL. Unreachable: skipped, except
under CI=true, where it fails.
"""
from __future__ import annotations

import inspect
import os
import threading
import time
import uuid as uuidlib

import pytest
import sqlalchemy as sa

from reaper.nova import db as nova_db
from reaper.nova import reclaim
from reaper.nova import schema as s
from reaper.nova import view as nova_view
from tests.unit.nova import test_nova_changes as changes_cases
from tests.unit.nova import test_nova_reclaim as reclaim_cases
from tests.unit.nova import test_nova_view as view_cases

pytestmark = pytest.mark.functional

SERVER_URL = os.environ.get("REAPER_TEST_MYSQL_URL", "mysql+pymysql://reaper:reaper@127.0.0.1/")


def _cases():
    out = []
    for mod in (view_cases, changes_cases, reclaim_cases):
        for name, fn in sorted(vars(mod).items()):
            if name.startswith("test_") and callable(fn) and not hasattr(fn, "pytestmark"):
                params = set(inspect.signature(fn).parameters)
                if "engine" in params and params <= {"engine", "monkeypatch"}:
                    out.append(pytest.param(fn, id=f"{mod.__name__.rsplit('.', 1)[1]}::{name}"))
    return out


@pytest.fixture(scope="module")
def server():
    eng = nova_db.make_engine(SERVER_URL, connect_timeout=5)
    try:
        with eng.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.DBAPIError as exc:
        eng.dispose()
        msg = f"MariaDB not reachable: {nova_db.describe_error(exc, eng)}"
        if os.environ.get("CI"):
            pytest.fail(msg + " (CI: start it with tools/testhost.sh start)")
        pytest.skip(msg)
    yield eng
    eng.dispose()


@pytest.fixture
def engine(server):
    name = f"reaper_t_{uuidlib.uuid4().hex[:12]}"
    with server.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    eng = nova_db.make_engine(server.url.set(database=name, query={"charset": "utf8mb4"}))
    try:
        s.create_all(eng)
        yield eng
    finally:
        eng.dispose()
        with server.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))


@pytest.mark.parametrize("case", _cases())
def test_unit_case_on_mariadb(case, engine, monkeypatch):
    kwargs = {"engine": engine}
    if "monkeypatch" in inspect.signature(case).parameters:
        kwargs["monkeypatch"] = monkeypatch
    case(**kwargs)


def test_cases_were_found():
    assert len(_cases()) >= 30


def test_claim_waits_for_and_loses_to_an_uncommitted_restore(engine):
    u, _ = reclaim_cases.soft_deleted(engine)
    assert nova_view.load_view(engine, view_cases.HOST, [u]).instances[u].is_soft_deleted
    result = {}
    with engine.connect() as restore:
        trans = restore.begin()
        # Nova's restore: task_state -> restoring, expected_task_state None (row locked).
        assert restore.execute(
            sa.update(s.instances)
            .where(s.instances.c.uuid == u, s.instances.c.task_state.is_(None))
            .values(task_state="restoring")).rowcount == 1

        def _claim():
            result["claimed"] = reclaim.claim(engine, u, view_cases.HOST,
                                              reclaim_cases.INTERVAL, view_cases.NOW)
        t = threading.Thread(target=_claim)
        t.start()
        time.sleep(0.5)
        assert t.is_alive(), "the claim should wait on the restore's row lock"
        restore.execute(sa.update(s.instances).where(s.instances.c.uuid == u)
                        .values(vm_state="active", task_state=None, deleted_at=None))
        trans.commit()
        t.join(30)
    assert result == {"claimed": False}
    row = nova_view.reread_instance(engine, u)
    assert row.vm_state == "active" and row.task_state is None


def test_restore_waits_for_and_loses_to_an_uncommitted_claim(engine):
    u, _ = reclaim_cases.soft_deleted(engine)
    assert reclaim.claim(engine, u, view_cases.HOST, reclaim_cases.INTERVAL, view_cases.NOW)
    with engine.begin() as conn:
        restored = conn.execute(
            sa.update(s.instances)
            .where(s.instances.c.uuid == u, s.instances.c.task_state.is_(None))
            .values(task_state="restoring")).rowcount
    assert restored == 0


def test_empty_database_gives_not_ok(server):
    name = f"reaper_t_{uuidlib.uuid4().hex[:12]}"
    with server.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}`"))
    eng = nova_db.make_engine(server.url.set(database=name))
    try:
        view = nova_view.load_view(eng, "cmp1", [str(uuidlib.uuid4())])
        assert not view.ok and "1146" in view.error
    finally:
        eng.dispose()
        with server.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))


def test_wrong_password_gives_not_ok_without_it(server):
    eng = nova_db.make_engine(server.url.set(password="wr0ng-s3cret", database="mysql"))
    try:
        view = nova_view.load_view(eng, "cmp1", [])
        assert not view.ok and "Access denied" in view.error
        assert "wr0ng-s3cret" not in view.error
    finally:
        eng.dispose()


def test_dependent_rows_keep_foreign_keys_valid(engine):
    """Soft delete never removes a referenced row (tags and console tokens, which
    finalize deletes, reference nothing), so MariaDB's foreign keys stay satisfied."""
    u, _ = reclaim_cases.soft_deleted(engine)
    reclaim_cases.add_dependents(engine, u)
    assert reclaim.claim(engine, u, view_cases.HOST, reclaim_cases.INTERVAL, view_cases.NOW)
    res = reclaim.finalize(engine, u, view_cases.NOW)
    assert res["finalized"] and res["counts"] == reclaim_cases.EXPECTED_COUNTS
    with engine.connect() as conn:
        fks = conn.execute(sa.text(
            "SELECT COUNT(*) FROM information_schema.REFERENTIAL_CONSTRAINTS "
            "WHERE CONSTRAINT_SCHEMA = DATABASE()")).scalar()
    assert fks >= 5


def test_reread_sees_the_row_and_migrations_from_one_snapshot(engine):
    """A migration committed between the executor's two re-reads is not half seen:
    the row and the migrations come from the same REPEATABLE READ snapshot."""
    from tests.fixtures import novadb
    uuid = novadb.add_instance(engine, host="cmp-a")["uuid"]
    other = sa.create_engine(engine.url, poolclass=sa.pool.NullPool)
    fired = []

    def after_first_read(conn, cursor, statement, *args):
        if not fired and "FROM instances" in statement:
            fired.append(1)             # a move lands between the two statements
            novadb.add_migration(other, uuid, "cmp-a", "cmp-b", "accepted", "evacuation")
    sa.event.listen(engine, "after_cursor_execute", after_first_read)
    try:
        row, migs = nova_view.reread(engine, uuid)
    finally:
        sa.event.remove(engine, "after_cursor_execute", after_first_read)
        other.dispose()
    assert fired and row.host == "cmp-a" and migs == ()
    # a fresh read sees it
    assert [m.status for m in nova_view.reread(engine, uuid)[1]] == ["accepted"]
