"""SIGKILL at every step boundary of every teardown kind, then a new pass (issue 9, the
fault matrix).

Each scenario builds a throwaway host (harness.FmHost) with a live instance (running
guest, directory, VIF, iSCSI volume) and one instance or leak of a teardown kind,
runs ``reaper-manage reap`` through the test launcher (killer.py), which SIGKILLs
the process at the named point of the named step, then runs a clean ``reaper-manage
reap``, and compares the whole host with what an uninterrupted pass leaves. Points:
``before`` (the journal says the step started, it has not acted), ``unjournaled``
(it acted, the journal does not know yet), ``after`` (acted and journaled as done).

The ``*-uninterrupted`` rows establish what an uninterrupted pass leaves, and that
each kind's teardown runs exactly the steps listed in harness.KIND_STEPS, every one
of which has its "before" and "after" kill rows below (checked at import).
"""
from __future__ import annotations

import pytest

from tests.functional.faultmatrix import harness

pytestmark = pytest.mark.functional

UNINTERRUPTED = [
    pytest.param("evacuated", id="evacuated-uninterrupted"),
    pytest.param("running_deleted", id="running-deleted-uninterrupted"),
    pytest.param("reclaimable", id="reclaim-uninterrupted"),
    pytest.param("orphan_dir", id="orphan-dir-uninterrupted"),
    pytest.param("stale_resize", id="stale-resize-uninterrupted"),
    pytest.param("interrupted_delete", id="interrupted-delete-uninterrupted"),
    pytest.param("leaked_vif", id="leaked-vif-uninterrupted"),
    pytest.param("leaked_iscsi", id="leaked-iscsi-uninterrupted"),
]

CRASHES = [
    # evacuated: destroy_domain, unplug_vifs, delete_files, undefine_domain
    pytest.param("evacuated", "before", "destroy_domain", id="evacuated-kill-before-destroy_domain"),
    pytest.param("evacuated", "unjournaled", "destroy_domain", id="evacuated-kill-unjournaled-destroy_domain"),
    pytest.param("evacuated", "after", "destroy_domain", id="evacuated-kill-after-destroy_domain"),
    pytest.param("evacuated", "before", "unplug_vifs", id="evacuated-kill-before-unplug_vifs"),
    pytest.param("evacuated", "unjournaled", "unplug_vifs", id="evacuated-kill-unjournaled-unplug_vifs"),
    pytest.param("evacuated", "after", "unplug_vifs", id="evacuated-kill-after-unplug_vifs"),
    pytest.param("evacuated", "before", "delete_files", id="evacuated-kill-before-delete_files"),
    pytest.param("evacuated", "unjournaled", "delete_files", id="evacuated-kill-unjournaled-delete_files"),
    pytest.param("evacuated", "after", "delete_files", id="evacuated-kill-after-delete_files"),
    pytest.param("evacuated", "before", "undefine_domain", id="evacuated-kill-before-undefine_domain"),
    pytest.param("evacuated", "unjournaled", "undefine_domain", id="evacuated-kill-unjournaled-undefine_domain"),
    pytest.param("evacuated", "after", "undefine_domain", id="evacuated-kill-after-undefine_domain"),
    # evacuating: power_off. The evacuating kind (an evacuation from this host still
    # 'accepted' or 'pre-migrating': the guest is powered off, nothing else) comes with
    # its own slice; when it lands, add its builder to harness.FmHost (role
    # "evacuating"), its steps to harness.KIND_STEPS, its uninterrupted row to
    # UNINTERRUPTED, and here:
    #   pytest.param("evacuating", "before", "power_off", id="evacuating-kill-before-power_off"),
    #   pytest.param("evacuating", "unjournaled", "power_off",
    #                id="evacuating-kill-unjournaled-power_off"),
    #   pytest.param("evacuating", "after", "power_off", id="evacuating-kill-after-power_off"),
    # (its end state is not "gone": assert_torn_down needs a variant that expects the
    # domain shut off and everything else kept).
    # running_deleted: destroy_domain, unplug_vifs, delete_files, undefine_domain
    pytest.param("running_deleted", "before", "destroy_domain", id="running-deleted-kill-before-destroy_domain"),
    pytest.param("running_deleted", "after", "destroy_domain", id="running-deleted-kill-after-destroy_domain"),
    pytest.param("running_deleted", "before", "unplug_vifs", id="running-deleted-kill-before-unplug_vifs"),
    pytest.param("running_deleted", "after", "unplug_vifs", id="running-deleted-kill-after-unplug_vifs"),
    pytest.param("running_deleted", "before", "delete_files", id="running-deleted-kill-before-delete_files"),
    pytest.param("running_deleted", "after", "delete_files", id="running-deleted-kill-after-delete_files"),
    pytest.param("running_deleted", "before", "undefine_domain", id="running-deleted-kill-before-undefine_domain"),
    pytest.param("running_deleted", "after", "undefine_domain", id="running-deleted-kill-after-undefine_domain"),
    # reclaimable: claim, destroy_domain, unplug_vifs, delete_files, undefine_domain, finalize_db
    pytest.param("reclaimable", "before", "claim", id="reclaim-kill-before-claim"),
    pytest.param("reclaimable", "unjournaled", "claim", id="reclaim-kill-unjournaled-claim"),
    pytest.param("reclaimable", "after", "claim", id="reclaim-kill-after-claim"),
    pytest.param("reclaimable", "before", "destroy_domain", id="reclaim-kill-before-destroy_domain"),
    pytest.param("reclaimable", "after", "destroy_domain", id="reclaim-kill-after-destroy_domain"),
    pytest.param("reclaimable", "before", "unplug_vifs", id="reclaim-kill-before-unplug_vifs"),
    pytest.param("reclaimable", "after", "unplug_vifs", id="reclaim-kill-after-unplug_vifs"),
    pytest.param("reclaimable", "before", "delete_files", id="reclaim-kill-before-delete_files"),
    pytest.param("reclaimable", "after", "delete_files", id="reclaim-kill-after-delete_files"),
    pytest.param("reclaimable", "before", "undefine_domain", id="reclaim-kill-before-undefine_domain"),
    pytest.param("reclaimable", "after", "undefine_domain", id="reclaim-kill-after-undefine_domain"),
    pytest.param("reclaimable", "before", "finalize_db", id="reclaim-kill-before-finalize_db"),
    pytest.param("reclaimable", "unjournaled", "finalize_db", id="reclaim-kill-unjournaled-finalize_db"),
    pytest.param("reclaimable", "after", "finalize_db", id="reclaim-kill-after-finalize_db"),
    # orphan_dir: delete_files
    pytest.param("orphan_dir", "before", "delete_files", id="orphan-dir-kill-before-delete_files"),
    pytest.param("orphan_dir", "unjournaled", "delete_files", id="orphan-dir-kill-unjournaled-delete_files"),
    pytest.param("orphan_dir", "after", "delete_files", id="orphan-dir-kill-after-delete_files"),
    # stale_resize: delete_files
    pytest.param("stale_resize", "before", "delete_files", id="stale-resize-kill-before-delete_files"),
    pytest.param("stale_resize", "after", "delete_files", id="stale-resize-kill-after-delete_files"),
    # interrupted_delete: delete_files
    pytest.param("interrupted_delete", "before", "delete_files", id="interrupted-delete-kill-before-delete_files"),
    pytest.param("interrupted_delete", "unjournaled", "delete_files", id="interrupted-delete-kill-unjournaled-delete_files"),
    pytest.param("interrupted_delete", "after", "delete_files", id="interrupted-delete-kill-after-delete_files"),
    # leaked_vif: unplug_vifs
    pytest.param("leaked_vif", "before", "unplug_vifs", id="leaked-vif-kill-before-unplug_vifs"),
    pytest.param("leaked_vif", "unjournaled", "unplug_vifs", id="leaked-vif-kill-unjournaled-unplug_vifs"),
    pytest.param("leaked_vif", "after", "unplug_vifs", id="leaked-vif-kill-after-unplug_vifs"),
    # leaked_iscsi: disconnect_volumes
    pytest.param("leaked_iscsi", "before", "disconnect_volumes", id="leaked-iscsi-kill-before-disconnect_volumes"),
    pytest.param("leaked_iscsi", "unjournaled", "disconnect_volumes", id="leaked-iscsi-kill-unjournaled-disconnect_volumes"),
    pytest.param("leaked_iscsi", "after", "disconnect_volumes", id="leaked-iscsi-kill-after-disconnect_volumes"),
]

# Every step of every kind has its "before" and "after" rows, and nothing else is
# listed. "unjournaled" rows are there once per distinct way a step resumes: the
# evacuated kind's steps (running-deleted and reclaim run the same code for them),
# the reclaim's own claim and finalize_db, a directory that is renamed first
# (orphan-dir; stale-resize is the same) or already a _del (interrupted-delete),
# a leaked VIF's and a leaked iSCSI session's own teardown.
assert sorted(p.values for p in CRASHES if p.values[1] != "unjournaled") == sorted(
    (kind, when, step) for kind, steps in harness.KIND_STEPS.items() for step in steps
    for when in ("before", "after")), "CRASHES and KIND_STEPS disagree"
assert {p.values for p in CRASHES if p.values[1] == "unjournaled"} <= {
    (kind, "unjournaled", step) for kind, steps in harness.KIND_STEPS.items()
    for step in steps}
assert sorted(p.values[0] for p in UNINTERRUPTED) == sorted(harness.KIND_STEPS)


@pytest.mark.parametrize("kind", UNINTERRUPTED)
def test_uninterrupted_teardown(fm_host, kind):
    """One reap pass tears down one instance or leak of the kind next to a live instance, uninterrupted.

    Expect: exit 4 and one action, done, that ran exactly the kind's steps; the
    target's domain, directories, VIF devices and OVS port, iSCSI session, node
    record and LUN are gone (a reclaimed row is soft-deleted as Nova does, every other
    row unchanged); the live instance's guest still runs on its directory, its VIF,
    OVS port, session and row are untouched; no journal entry is left running; the
    pass's own findings after the teardown are none.
    """
    fm_host.bystander()
    fm_host.build(kind)
    before = fm_host.snapshot()
    p = fm_host.run("reap")
    assert p.rc == 4, p
    (act,) = p.report["actions"]
    assert (act["classification"], act["result"]) == (kind, "done"), p
    assert tuple(s for s, _ in act["steps"]) == harness.KIND_STEPS[kind]
    fm_host.assert_torn_down(before, kind)
    again = fm_host.run("reap")
    assert again.rc in (0, 3) and again.report["actions"] == [], again
    assert fm_host.own(again.report["findings"]) == [], again


@pytest.mark.parametrize("kind,when,step", CRASHES)
def test_sigkill_at_a_step_boundary(fm_host, kind, when, step):
    """A reap pass is SIGKILLed before a teardown step acts, after it acted but before the journal records it, or right after the journal records it, and a new pass follows.

    Expect: the killed pass leaves one running journal entry with the earlier steps
    done and this one started (done for "after"); the next pass resumes it (exit 4, the
    action done, resumed from the killed pass) and the host ends exactly as an
    uninterrupted pass leaves it: the target's resources gone, a reclaimed row
    soft-deleted, the live instance and everything else untouched, no running journal
    entry and none of the target's findings left.
    """
    fm_host.bystander()
    fm_host.build(kind)
    before = fm_host.snapshot()
    killed = fm_host.run("reap", **{f"kill_{when}": step})
    assert killed.killed, killed
    steps = harness.KIND_STEPS[kind]
    done = steps[:steps.index(step)]
    (entry,) = fm_host.journal()
    assert entry.steps == {**{s: "done" for s in done},
                           step: "done" if when == "after" else "started"}

    resumed = fm_host.run("reap")
    assert resumed.rc == 4, resumed
    (act,) = resumed.report["actions"]
    assert (act["classification"], act["result"]) == (kind, "done"), resumed
    assert act.get("resumed_from") == entry.pass_id
    assert fm_host.own(resumed.report["findings"]) == [], resumed
    fm_host.assert_torn_down(before, kind)
