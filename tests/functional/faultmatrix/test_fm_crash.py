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
    pytest.param("evacuating", id="evacuating-uninterrupted"),
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
    # evacuating: power_off (the guest is only stopped: see harness.powered_off)
    pytest.param("evacuating", "before", "power_off", id="evacuating-kill-before-power_off"),
    pytest.param("evacuating", "unjournaled", "power_off", id="evacuating-kill-unjournaled-power_off"),
    pytest.param("evacuating", "after", "power_off", id="evacuating-kill-after-power_off"),
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
# the evacuating kind's power-off (re-verified against the evacuation, not a reap),
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


def left(fm_host, report: dict) -> list[tuple[str, str, str]]:
    """(classification, action, result) of the report's findings of the host's roles."""
    return [(f["classification"], f["action"], f["result"])
            for f in fm_host.own(report["findings"])]


@pytest.mark.parametrize("kind", UNINTERRUPTED)
def test_uninterrupted_teardown(fm_host, kind):
    """One reap pass tears down one instance or leak of the kind next to a live instance, uninterrupted.

    Expect: exit 4 and one action, done, that ran exactly the kind's steps; the
    target's domain, directories, VIF devices and OVS port, iSCSI session, node
    record and LUN are gone (a reclaimed row is soft-deleted as Nova does, every other
    row unchanged), but an evacuating guest is only shut off, still defined, with its
    directory, VIF devices, OVS port, row and migration kept; the live instance's
    guest still runs on its directory, its VIF, OVS port, session and row are
    untouched; no journal entry is left running; the next pass does nothing, leaves
    the host so and finds nothing of the target's but an evacuating guest, still
    reported as evacuating.
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
    assert left(fm_host, again.report) == harness.LEFT_FINDINGS.get(kind, []), again
    fm_host.assert_torn_down(before, kind)


@pytest.mark.parametrize("kind,when,step", CRASHES)
def test_sigkill_at_a_step_boundary(fm_host, kind, when, step):
    """A reap pass is SIGKILLed before a teardown step acts, after it acted but before the journal records it, or right after the journal records it, and a new pass follows.

    Expect: the killed pass leaves one running journal entry with the earlier steps
    done and this one started (done for "after"); the next pass resumes it (exit 4, the
    action done, resumed from the killed pass) and the host ends exactly as an
    uninterrupted pass leaves it: the target's resources gone (an evacuating guest
    only shut off, still defined, everything else of it kept), a reclaimed row
    soft-deleted, the live instance and everything else untouched, no running journal
    entry and none of the target's findings left but an evacuating guest's, still
    reported as evacuating.
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
    assert left(fm_host, resumed.report) == harness.LEFT_FINDINGS.get(kind, []), resumed
    fm_host.assert_torn_down(before, kind)


@pytest.mark.parametrize("shared", [
    pytest.param(False, id="evacuating-done-after-power_off-local-storage"),
    pytest.param(True, id="evacuating-done-after-power_off-shared-storage"),
])
def test_evacuation_done_after_journaled_power_off(fm_host, shared):
    """A reap pass is SIGKILLed right after the journal records an evacuating guest's power-off as done, and the evacuation then completes (migration done, the row rebuilt on the destination) before the next pass.

    Expect: the next pass (exit 4) finishes the journaled power-off, resumed from the
    killed pass, then tears the guest down fully as evacuated in the same pass: domain
    undefined, VIF devices and OVS port gone, its directory deleted on local storage
    and kept on shared storage; the row and migration stay as Nova left them, the live
    instance is untouched, no journal entry is left running and a further pass does
    nothing (it only logs the kept directory on shared storage as orphan_dir: the
    instance may be alive on another host).
    """
    if shared:
        fm_host.write_conf(instances_path_shared="true")
    fm_host.bystander()
    r = fm_host.build("evacuating")
    killed = fm_host.run("reap", kill_after="power_off")
    assert killed.killed, killed
    (entry,) = fm_host.journal()
    assert entry.steps == {"power_off": "done"}
    assert fm_host.domain_state(r) == "shutoff"
    fm_host.finish_evacuation(r)
    before = fm_host.snapshot()

    p = fm_host.run("reap")
    assert p.rc == 4, p
    acts = p.report["actions"]
    assert [(a["classification"], a["result"], a.get("resumed_from")) for a in acts] == [
        ("evacuating", "done", entry.pass_id), ("evacuated", "done", None)], p
    assert [s for s, _ in acts[0]["steps"]] == ["power_off"]
    assert tuple(s for s, _ in acts[1]["steps"]) == tuple(
        s for s in harness.KIND_STEPS["evacuated"] if not (shared and s == "delete_files"))
    expected = harness.without(before, "evacuating")
    if shared:
        expected["dirs"] = before["dirs"]
    assert fm_host.snapshot() == expected
    assert fm_host.journal() == []
    again = fm_host.run("reap")
    assert again.rc in (0, 3) and again.report["actions"] == [], again
    assert left(fm_host, again.report) == (
        [("orphan_dir", "log", "logged")] if shared else []), again
    assert fm_host.snapshot() == expected
