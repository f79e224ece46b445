"""Nova changes an instance between a pass's plan and its act (issue 9, the fault
matrix): a restore, a new migration.

The pass runs as its own process, held by the test launcher (killer.py) at the
point named, while the test changes the Nova DB as nova-api or nova-conductor would,
then released: a real race between two processes over a real DB, SQLite or MariaDB.
"""
from __future__ import annotations

import pytest
import sqlalchemy as sa

from reaper.nova import schema
from tests.fixtures import novadb
from tests.functional.faultmatrix import harness

pytestmark = pytest.mark.functional

DBS = [pytest.param("sqlite", id="sqlite"), pytest.param("mariadb", id="mariadb")]


def _restore(fm_host, uuid: str) -> int:
    """nova-api's restore: the row becomes active again, only while no task holds it.
    Returns the rows changed (0: the restore is refused, as Nova refuses it)."""
    with fm_host.db.engine.begin() as c:
        return c.execute(sa.update(schema.instances).where(
            schema.instances.c.uuid == uuid, schema.instances.c.task_state.is_(None))
            .values(vm_state="active", deleted_at=None, power_state=1)).rowcount


def _held(fm_host, **hold):
    """A reap pass held at ``hold`` (killer.py's options); returns it and its hold dir."""
    d = fm_host.hold_dir()
    p = fm_host.start("reap", hold_dir=d, **hold)
    fm_host.wait_held(p, d)
    return p, d


def _released(fm_host, p, d) -> harness.Pass:
    fm_host.release(d)
    return fm_host.finish(p)


def _untouched(fm_host, before: dict, role: str) -> None:
    """Nothing changed on the host but the role's row (the race changed that)."""
    assert harness.comparable(fm_host.snapshot(), role, row="changed") == \
        harness.comparable(before, role, row="changed")
    assert fm_host.journal() == []


@pytest.mark.parametrize("fm_db", DBS, indirect=True)
@pytest.mark.parametrize("when", [
    pytest.param("before-claim", id="restore-before-claim"),
    pytest.param("after-claim", id="restore-after-claim"),
])
def test_restore_between_plan_and_act(fm_host, when):
    """nova-api restores a soft-deleted instance after a reap pass planned its reclaim, either before the pass claims the row or after it did.

    Expect: before the claim the restore wins: the claim backs off (exit 3), nothing
    of the instance is touched (shut-off domain, directory, VIF, dependent rows), its
    row is active with no task and the next pass only logs it; after the claim
    the restore is refused (the row is claimed, task_state deleting) and the reclaim
    ends as an uninterrupted one (exit 4). The live instance is untouched either way.
    """
    fm_host.bystander()
    r = fm_host.build("reclaimable")
    before = fm_host.snapshot()
    if when == "before-claim":
        p, d = _held(fm_host, hold_before_act=True)
        assert _restore(fm_host, r.uuid) == 1
        done = _released(fm_host, p, d)
        assert done.rc == 3 and done.actions() == [("reclaimable", "backed_off")], done
        row = fm_host.row(r)
        assert (row["vm_state"], row["task_state"], row["deleted"]) == ("active", None, 0)
        _untouched(fm_host, before, "reclaimable")
        again = fm_host.run("reap")
        assert again.report["actions"] == [], again
        # a live instance again: at most a log-only finding (its volume BDM is not in
        # the shut-off domain's XML: attachment drift)
        assert {(f["classification"], f["action"]) for f in fm_host.own(
            again.report["findings"])} <= {("attachment_drift", "log")}, again
        _untouched(fm_host, before, "reclaimable")
    else:
        p, d = _held(fm_host, hold_after="claim")
        assert _restore(fm_host, r.uuid) == 0
        done = _released(fm_host, p, d)
        assert done.rc == 4 and done.actions() == [("reclaimable", "done")], done
        fm_host.assert_torn_down(before, "reclaimable")


def _start_migration(fm_host, uuid: str, source: str, migration_type: str) -> None:
    """nova-conductor starts moving the instance to this host."""
    novadb.add_migration(fm_host.db.engine, uuid, source, fm_host.name, "running",
                         migration_type)
    with fm_host.db.engine.begin() as c:
        c.execute(sa.update(schema.instances).where(schema.instances.c.uuid == uuid)
                  .values(task_state="migrating" if migration_type == "live-migration"
                          else "resize_migrating"))


@pytest.mark.parametrize("case", [
    pytest.param("orphan_dir", id="new-migration-orphan-dir"),
    pytest.param("evacuated", id="new-migration-evacuated"),
    pytest.param("leaked_vif", id="new-migration-leaked-vif"),
])
def test_new_migration_between_plan_and_act(fm_host, case):
    """After a reap pass planned a teardown, the instance starts moving to this host: a live migration back of an instance whose stale directory (or VIF plumbing) was left here, or a cold migration back of an evacuated instance whose guest still runs here.

    Expect: the compare-and-act re-read (or, for the VIF, the unplug step's re-check
    of the ports' claims) sees the move in flight and does nothing: the action is
    aborted, exit 3 (the VIF's is reported done with the VIF kept, exit 4), the
    directory, running guest or VIF devices and OVS port stay, the next pass leaves
    them alone (in flight), the live instance is untouched.
    """
    fm_host.bystander()
    if case == "evacuated":
        r = fm_host.evacuated()
        hold = {"hold_before_act": True}
        move = (harness.OTHER, "migration")
    else:
        r = fm_host.build(case, alive_on=harness.OTHER)
        hold = ({"hold_before": "unplug_vifs"} if case == "leaked_vif"
                else {"hold_before_act": True})
        move = (harness.OTHER, "live-migration")
    before = fm_host.snapshot()
    p, d = _held(fm_host, **hold)
    _start_migration(fm_host, r.uuid, *move)
    done = _released(fm_host, p, d)
    (act,) = done.report["actions"]
    # A leaked VIF claimed since the plan is kept by the unplug step's own check
    # (nothing unplugged: aborted, not done), the others by the re-verification.
    assert done.rc == 3 and (act["classification"], act["result"]) == (
        case, "aborted"), done
    _untouched(fm_host, before, case)
    again = fm_host.run("reap")
    assert again.report["actions"] == [], again
    _untouched(fm_host, before, case)
