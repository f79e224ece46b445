"""Fault matrix, grants slice: the Nova DB account may not write (issue 12, least
privilege). The Nova DB is MariaDB and reaper-manage connects with an account
``fmgrants_<role>_<hex>`` holding exactly what ``reaper-manage db-grants`` prints
(``ro``: the read grants; ``rc``: read + ``--reclaim``), or SQLite mounted read-only
in the pass's own mount namespace. The accounts are dropped after each scenario.
"""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from tests.conftest import service_unavailable
from tests.fixtures.grants import Accounts, db_dump
from tests.functional.faultmatrix import harness

pytestmark = pytest.mark.functional

MARIADB = pytest.mark.parametrize("fm_db", [pytest.param("mariadb", id="mariadb")],
                                  indirect=True)
# Everything a reap may tear down that needs no write to the Nova DB.
READ_ONLY_KINDS = ("evacuated", "running_deleted", "orphan_dir", "stale_resize",
                   "interrupted_delete", "leaked_vif", "leaked_iscsi")


@pytest.fixture
def accounts(request, fm_host):
    """The fm host's MariaDB database with accounts ``ro`` and ``rc`` on it."""
    server = request.getfixturevalue("_mariadb_server")
    if not isinstance(server, sa.Engine):
        service_unavailable("MariaDB", getattr(server, "orig", server))
    acc = Accounts(server, sa.make_url(fm_host.db.url).database)
    try:
        acc.account("ro", acc.sql("ro"))
        acc.account("rc", acc.sql("rc", reclaim=True))
        yield acc
    finally:
        acc.drop_users()


def use(fm_host, url: str, read_only: str | None = None) -> None:
    """Make the host's passes connect with ``url`` ([database] read_only if given)."""
    fm_host.db.url = url
    fm_host.write_conf()
    if read_only is not None:
        text = fm_host.conf_path.read_text()
        fm_host.conf_path.write_text(text.replace("[database]\n",
                                                  f"[database]\nread_only = {read_only}\n"))


def finding(p: harness.Pass, uuid: str) -> dict:
    (f,) = [f for f in p.report["findings"] if f["instance_uuid"] == uuid]
    return f


@MARIADB
def test_read_only_db_user_reaps_everything_that_needs_no_db_write(fm_host, accounts):
    """reaper-manage reap connects with an account holding only the read grants, on a host with one instance or leak of each kind next to a reclaimable instance and a live one.

    Expect: exit 4; the evacuated and running-deleted guests, the orphan, stale-resize and interrupted-delete directories, the leaked VIF and the leaked iSCSI session are torn down as usual; the reclaimable instance is reported reclaimable with action log and the read-only reason, its guest, directory, VIF and row untouched; not one row of the Nova DB changes; the live instance is untouched.
    """
    fm_host.bystander()
    for kind in READ_ONLY_KINDS + ("reclaimable",):
        fm_host.build(kind)
    use(fm_host, accounts.url("ro"))
    before, rows = fm_host.snapshot(), db_dump(fm_host.db.engine)
    p = fm_host.run("reap")
    assert p.rc == 4, p
    assert sorted(p.actions()) == sorted((k, "done") for k in READ_ONLY_KINDS), p
    f = finding(p, fm_host.roles["reclaimable"].uuid)
    assert (f["classification"], f["action"]) == ("reclaimable", "log")
    assert "not reclaimed: the Nova DB is read-only" in f["reason"]
    expected = before
    for kind in READ_ONLY_KINDS:
        expected = harness.without(expected, kind)
    assert fm_host.snapshot() == expected
    assert db_dump(fm_host.db.engine) == rows
    assert fm_host.journal() == []


@MARIADB
@pytest.mark.parametrize("read_only", [pytest.param("auto", id="detected"),
                                       pytest.param("false", id="forced-writable")])
def test_read_only_db_user_reclaim_changes_nothing(fm_host, accounts, read_only):
    """reaper-manage reclaim connects with an account holding only the read grants, with [database] read_only = auto (the default) or forced to false, on a host with a reclaimable instance and a live one.

    Expect: nothing changes on the host or in the Nova DB (every row as it was). auto: refused up front, exit 3, no action, the instance reported reclaimable with action log and the reason (the account holds none of the privileges a reclaim writes with). false: exit 1, one failed action whose claim step the DB refused (UPDATE command denied) and that went no further.
    """
    fm_host.bystander()
    r = fm_host.build("reclaimable")
    use(fm_host, accounts.url("ro"), read_only)
    before, rows = fm_host.snapshot(), db_dump(fm_host.db.engine)
    p = fm_host.run("reclaim")
    if read_only == "auto":
        assert p.rc == 3 and p.report["actions"] == [], p
        assert "holds none of the privileges" in p.report["db_read_only"]
        assert finding(p, r.uuid)["action"] == "log"
        assert fm_host.journal() == []
    else:
        assert p.rc == 1, p
        (act,) = p.report["actions"]
        assert act["result"] == "failed" and [s for s, _ in act["steps"]] == [
            "claim", "release_claim"], p
        assert "UPDATE command denied" in dict(act["steps"])["claim"]
    assert fm_host.snapshot() == before
    assert db_dump(fm_host.db.engine) == rows


@MARIADB
def test_partial_reclaim_grants_start_no_reclaim(fm_host, accounts):
    """The account holds the reclaim grants but one: UPDATE (deleted, deleted_at) on instance_faults, which only finalize needs; reaper-manage reclaim on a reclaimable instance.

    Expect: [database] read_only = auto counts the DB as read-only (naming what is missing), so no claim is made: exit 3, the instance reported with action log, the host and every row of the Nova DB unchanged; with the grant back, the same pass reclaims it (exit 4) to Nova's end state.
    """
    fm_host.bystander()
    r = fm_host.build("reclaimable")
    stmt = (f"UPDATE (`deleted`, `deleted_at`) ON `{accounts.name}`.`instance_faults` "
            f"{{}} '{accounts.user('rc')}'@'%'")
    accounts.execute("REVOKE " + stmt.format("FROM"))
    use(fm_host, accounts.url("rc"))
    before, rows = fm_host.snapshot(), db_dump(fm_host.db.engine)
    p = fm_host.run("reclaim")
    assert p.rc == 3 and p.report["actions"] == [], p
    assert "lacks UPDATE (deleted, deleted_at) ON" in p.report["db_read_only"]
    assert "instance_faults" in finding(p, r.uuid)["reason"]
    assert fm_host.snapshot() == before and db_dump(fm_host.db.engine) == rows
    accounts.execute("GRANT " + stmt.format("TO"))
    p = fm_host.run("reclaim")
    assert p.rc == 4 and p.actions() == [("reclaimable", "done")], p
    fm_host.assert_torn_down(before, "reclaimable")


@MARIADB
def test_reclaim_grants_reclaim_to_novas_end_state(fm_host, accounts):
    """reaper-manage reap connects with an account holding the read and reclaim grants, on a host with a reclaimable instance (a row in every dependent table), a running-deleted guest and a live instance.

    Expect: exit 4, both done: the reclaimable instance's guest, directory and VIF are gone and its row and dependent rows are soft-deleted as Nova does; the running-deleted guest is reaped; the live instance is untouched; no journal entry left.
    """
    fm_host.bystander()
    fm_host.build("reclaimable")
    fm_host.build("running_deleted")
    use(fm_host, accounts.url("rc"))
    before = fm_host.snapshot()
    p = fm_host.run("reap")
    assert p.rc == 4, p
    assert sorted(p.actions()) == [("reclaimable", "done"), ("running_deleted", "done")], p
    fm_host.assert_torn_down(harness.without(before, "running_deleted"), "reclaimable")


@MARIADB
def test_journaled_reclaim_waits_while_the_db_is_read_only(fm_host, accounts):
    """A reclaim (reclaim grants) is SIGKILLed after destroy_domain; the next passes connect with the read-only account, then with the reclaim account again.

    Expect: as the read-only account, reap leaves the journal entry waiting (action held_read_only, naming the DB-writing steps left), changes nothing (the claimed row keeps this host's marker, directory and VIF stay), exit 3; as the reclaim account, the entry resumes and the host ends exactly as an uninterrupted reclaim leaves it.
    """
    fm_host.bystander()
    r = fm_host.build("reclaimable")
    use(fm_host, accounts.url("rc"))
    before = fm_host.snapshot()
    killed = fm_host.run("reclaim", kill_after="destroy_domain")
    assert killed.killed, killed
    (entry,) = fm_host.journal()
    assert fm_host.row(r)["task_state"] == "deleting"
    use(fm_host, accounts.url("ro"))
    left, rows = fm_host.snapshot(), db_dump(fm_host.db.engine)
    p = fm_host.run("reap")
    assert [a["result"] for a in p.report["actions"]] == ["held_read_only"], p
    assert "finalize_db" in p.report["actions"][0]["reason"] and p.rc == 3, p
    assert fm_host.snapshot() == left and db_dump(fm_host.db.engine) == rows
    assert [e.id for e in fm_host.journal()] == [entry.id]
    use(fm_host, accounts.url("rc"))
    p = fm_host.run("reap")
    assert p.rc == 4 and p.actions() == [("reclaimable", "done")], p
    assert p.report["actions"][0]["resumed_from"] == entry.pass_id
    fm_host.assert_torn_down(before, "reclaimable")


def test_read_only_sqlite_nova_db_is_detected(fm_host):
    """The SQLite Nova DB file is mounted read-only for the pass (its own mount namespace); reaper-manage reap on a host with an orphan directory, a reclaimable instance and a live one.

    Expect: [database] read_only = auto sees the file is not writable: the orphan directory is reaped (exit 4), the reclaimable instance is only reported (action log, the reason names the file), its guest, directory, VIF and row untouched.
    """
    fm_host.bystander()
    fm_host.build("orphan_dir")
    r = fm_host.build("reclaimable")
    path = sa.make_url(fm_host.db.url).database
    before, rows = fm_host.snapshot(), db_dump(fm_host.db.engine)
    p = fm_host.run("reap", read_only=[path])
    assert p.rc == 4 and p.actions() == [("orphan_dir", "done")], p
    f = finding(p, r.uuid)
    assert f["action"] == "log" and "is not writable" in f["reason"], f
    assert fm_host.snapshot() == harness.without(before, "orphan_dir")
    assert db_dump(fm_host.db.engine) == rows
