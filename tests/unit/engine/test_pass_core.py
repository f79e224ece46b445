"""The pass itself (Reaper.run_pass) on the demo host (libvirt's test driver, SQLite Nova
DB, instance dirs on disk): it reads the pause, resumes only what is its own to
resume, quarantines journal entries it cannot read, and acts on nothing it cannot
journal."""
from __future__ import annotations

import json
import os
import sqlite3

import pytest

from reaper import exception
from reaper import demo, reconcile
from reaper import state as state_mod
from reaper.agent import service
from reaper.objects.fields import Action, Classification
from reaper.objects.plan import TeardownPlan


@pytest.fixture
def host(tmp_path):
    reaper, handles, cast = demo.build(str(tmp_path / "host"))
    yield reaper, handles, {m.label: m.uuid for m in cast}
    reaper.close()


def audit_records(handles, event=None):
    with open(handles["audit_log"]) as f:
        recs = [json.loads(line) for line in f]
    return [r for r in recs if event is None or r["event"] == event]


def crashed_orphan_teardown(reaper, handles, uuid) -> int:
    """A journaled teardown of ``uuid``'s directory whose process died before it ran
    the step (its owner is a pid that no longer exists)."""
    path = os.path.join(handles["instances_path"], uuid)
    plan = TeardownPlan(uuid, Classification.ORPHAN_DIR, Action.REAP, None, (path,), True,
                        False, "orphan")
    jid = reaper.state.begin(plan, "req-crashed", reconcile.utcnow())
    gone = {"pid": 1 << 22, "start": 1, "boot_id": "x", "process": "reaper-manage"}
    try:
        reaper.state._db.execute("UPDATE journal SET owner=? WHERE id=?",
                                 (json.dumps(gone), jid))
    except sqlite3.OperationalError:
        pass        # a journal without owners (an earlier version): as good as crashed
    return jid


def dirs(handles) -> set[str]:
    return set(os.listdir(handles["instances_path"]))


def test_a_paused_host_audits_but_refuses_to_reap_and_resumes_nothing(host):
    reaper, handles, u = host
    # As RPC's pause does it: the flag in the state DB, nothing else.
    reaper.state.set_flag("paused", "kernel upgrade", reconcile.utcnow())
    before = dirs(handles)
    rep = reaper.run_pass("reap")
    assert rep.exit_code == 5, rep.to_table()
    assert [g["guard"] for g in rep.guards] == ["paused"]
    assert f"host {reaper.policy.host} is paused (kernel upgrade)" in rep.guards[0]["reason"]
    assert rep.actions == [] and dirs(handles) == before
    assert {f["result"] for f in rep.findings if f["action"] in ("reap", "reclaim")} == {"blocked"}
    (g,) = audit_records(handles, "guard_tripped")
    assert g["guard"] == "paused" and g["pass_id"] == rep.pass_id
    assert reaper.run_pass("reclaim").exit_code == 5
    # audits and dry runs run, and show the pause
    audit = reaper.run_pass("audit")
    assert audit.exit_code == 3 and audit.paused["reason"] == "kernel upgrade"
    assert "PAUSED (kernel upgrade)" in audit.to_table()
    assert reaper.run_pass("reap", dry_run=True).exit_code == 3
    assert dirs(handles) == before


def test_a_paused_host_does_not_resume_a_journaled_teardown(host):
    reaper, handles, u = host
    crashed_orphan_teardown(reaper, handles, u["orphan"])
    reaper.state.set_pause("disk swap", "user alice", reconcile.utcnow())
    rep = reaper.run_pass("reap")
    assert rep.exit_code == 5 and rep.actions == []
    assert "by user alice" in rep.guards[0]["reason"]
    assert u["orphan"] in dirs(handles) and len(reaper.state.unfinished()) == 1
    reaper.state.set_pause(None, None, reconcile.utcnow())
    rep = reaper.run_pass("reap")
    resumed = [a for a in rep.actions if a.get("resumed_from") == "req-crashed"]
    assert [(a["instance_uuid"], a["result"]) for a in resumed] == [(u["orphan"], "done")]
    assert u["orphan"] not in dirs(handles)


def test_the_agent_answers_paused_from_the_pass_and_keeps_its_report(host):
    reaper, handles, u = host
    agent = service.Agent(reaper)
    agent.pause("kernel upgrade", by="user alice over RPC")
    with pytest.raises(exception.Paused, match="kernel upgrade.*by user alice") as exc:
        agent.run_pass("reap", source="rpc")
    assert exc.value.report.exit_code == 5
    st = agent.status()
    assert st["paused_by"] == "user alice over RPC" and st["last_pass"]["summary"]["paused"]


def test_a_targeted_reap_resumes_and_acts_on_its_own_instance_only(host):
    reaper, handles, u = host
    crashed_orphan_teardown(reaper, handles, u["orphan"])
    target = u["interrupted"]
    reaper.run_pass("audit")            # a full pass: the observation a teardown needs
    rep = reaper.run_pass("reap", only_uuid=target.upper())
    assert [(a["instance_uuid"], a["result"]) for a in rep.actions] == [(target, "done")], \
        rep.to_table()
    assert u["orphan"] in dirs(handles), "another instance's journaled teardown ran"
    (entry,) = reaper.state.unfinished()
    assert entry.plan.instance_uuid == u["orphan"] and entry.pass_id == "req-crashed"
    rep = reaper.run_pass("reap")
    assert any(a["instance_uuid"] == u["orphan"] and a.get("resumed_from") == "req-crashed"
               for a in rep.actions)
    assert u["orphan"] not in dirs(handles)


def test_an_entry_a_live_process_holds_is_reported_not_resumed(host):
    reaper, handles, u = host
    jid = crashed_orphan_teardown(reaper, handles, u["orphan"])
    me = state_mod.procid.current()
    alive_other = {**me, "pid": os.getppid(), "start": state_mod.procid.start_time(os.getppid()),
                   "process": "reaper-agent"}
    reaper.state._db.execute("UPDATE journal SET owner=? WHERE id=?",
                             (json.dumps(alive_other), jid))
    rep = reaper.run_pass("reap")
    held = [a for a in rep.actions if a["instance_uuid"] == u["orphan"]]
    assert [a["result"] for a in held] == ["held_elsewhere"]
    assert "reaper-agent" in held[0]["reason"]
    assert u["orphan"] in dirs(handles) and len(reaper.state.unfinished()) == 1


@pytest.mark.parametrize("plan_text", [
    pytest.param("{this is not json", id="bad-json"),
    pytest.param(None, id="unknown-classification"),
])
def test_an_unreadable_journal_entry_is_quarantined_and_the_pass_goes_on(host, plan_text):
    reaper, handles, u = host
    jid = crashed_orphan_teardown(reaper, handles, u["orphan"])
    if plan_text is None:        # as a newer version could write it
        d = json.loads(reaper.state._db.execute("SELECT plan FROM journal WHERE id=?",
                                                (jid,)).fetchone()[0])
        plan_text = json.dumps({**d, "classification": "evacuating_v2"})
    reaper.state._db.execute("UPDATE journal SET plan=? WHERE id=?", (plan_text, jid))
    rep = reaper.run_pass("reap")
    assert rep.exit_code == 4, rep.to_table()
    assert ("evacuated", "done") in {(a["classification"], a["result"]) for a in rep.actions}
    assert rep.summary["journal_quarantined"] == 1 and "QUARANTINED" in rep.to_table()
    (q,) = audit_records(handles, "journal_quarantined")
    assert q["evidence"]["journal_id"] == jid and q["instance_uuid"] == u["orphan"]
    assert q["result"] == "quarantined"
    from reaper import notifications
    assert notifications.event_for(q)[:2] == ("reaper.journal.quarantined", "warn")
    rep = reaper.run_pass("reap")                      # once only
    assert len(audit_records(handles, "journal_quarantined")) == 1
    from reaper.auditlog import reports
    assert reports.failures(audit_records(handles)).by_category.get("journal quarantined") == 1
    assert rep.quarantined == [] and service.Agent(reaper).status()["journal_quarantined"] == 1


def hold_write_lock(state_path) -> sqlite3.Connection:
    """Another process's write lock on the state DB (a connection of our own behaves
    the same for SQLite: WAL readers go on, writers wait and then fail)."""
    db = sqlite3.connect(os.path.join(state_path, state_mod.DB_NAME), isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    db.execute("INSERT INTO flags VALUES ('lock-holder', 'x', 'now')")
    return db


def test_a_state_db_locked_before_the_pass_trips_a_guard_and_acts_on_nothing(host):
    reaper, handles, u = host
    state_dir = os.path.dirname(reaper.state.path)
    reaper.state.close()
    reaper.state = state_mod.StateDB(state_dir, busy_timeout=0.2)
    before = dirs(handles)
    holder = hold_write_lock(state_dir)
    try:
        agent = service.Agent(reaper)
        rep = agent._periodic("reap", "timer")              # the agent loop survives
        assert rep is not None and rep.exit_code == 1, rep and rep.to_table()
        assert [g["guard"] for g in rep.guards] == ["state_unavailable"]
        assert "database is locked" in rep.guards[0]["reason"]
        assert rep.actions == [] and dirs(handles) == before
        # findings are still reported, as blocked
        assert {f["result"] for f in rep.findings if f["action"] == "reap"} == {"blocked"}
    finally:
        holder.rollback()
        holder.close()
    rep = reaper.run_pass("reap")
    assert rep.exit_code == 4, rep.to_table()


def test_a_state_db_locked_mid_teardown_stops_the_pass_with_the_step_journaled(host):
    reaper, handles, u = host
    state_dir = os.path.dirname(reaper.state.path)
    reaper.state.close()
    reaper.state = state_mod.StateDB(state_dir, busy_timeout=0.2)
    holders = []
    orig = reaper.state.step

    def step(jid, name, status, now, detail=None):
        orig(jid, name, status, now, detail)
        if status == "started" and not holders:     # the step runs; then the DB locks
            holders.append(hold_write_lock(state_dir))
    reaper.state.step = step
    try:
        rep = service.Agent(reaper)._periodic("reap", "timer")
        assert rep is not None and rep.exit_code == 1
        assert rep.actions == [] and any("state DB failed" in e for e in rep.errors)
    finally:
        holders[0].rollback()
        holders[0].close()
        reaper.state.step = orig
    # exactly one teardown began, and its journal says where it stopped
    (entry,) = reaper.state.unfinished()
    assert entry.plan.classification is Classification.EVACUATED          # first in order
    assert list(entry.steps.values()) == ["started"]
    rep = reaper.run_pass("reap")
    assert any(a.get("resumed_from") and a["result"] == "done" for a in rep.actions), \
        rep.to_table()
    assert reaper.state.unfinished() == []
