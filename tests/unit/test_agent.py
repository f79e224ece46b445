"""The agent around a real pass on the demo host (libvirt's test driver, SQLite Nova
DB, instance dirs on disk): the pass lock, pause, approve, status, stopping between
steps, and reloading a config file."""
from __future__ import annotations

import dataclasses
import threading

import pytest
from oslo_config import cfg

from reaper import demo, opts
from reaper import state as state_mod
from reaper.agent import service
from reaper.records import Classification


@pytest.fixture
def host(tmp_path):
    reaper, handles, cast = demo.build(str(tmp_path / "host"))
    yield reaper, handles, {m.label: m.uuid for m in cast}
    reaper.close()


def private_conf(tmp_path, body: str = "") -> cfg.ConfigOpts:
    """Every option of the product on a ConfigOpts of our own (CONF is process-global)."""
    conf = cfg.ConfigOpts()
    for group, group_opts in opts.list_opts():
        conf.register_opts(list(group_opts), group=None if group == "DEFAULT" else group)
    path = tmp_path / "reaper.conf"
    path.write_text(body)
    conf(["--config-file", str(path)], project="reaper-test")
    return conf


def done(rep) -> set[tuple[str, str]]:
    return {(a["classification"], a["result"]) for a in rep.actions}


def test_paused_agent_audits_and_dry_runs_but_destroys_nothing_even_after_restart(host):
    reaper, handles, u = host
    agent = service.Agent(reaper)
    st = agent.pause("kernel upgrade")
    assert st["paused"] and st["paused_reason"] == "kernel upgrade"
    with pytest.raises(service.Paused, match="kernel upgrade"):
        agent.run_pass("reap")
    with pytest.raises(service.Paused):
        agent.run_pass("reclaim")
    assert agent.run_pass("audit").actions == []
    assert agent.run_pass("reap", dry_run=True).actions == []
    # the flag lives in the state DB: a restarted agent is still paused
    again = service.Agent(reaper)
    assert again.paused == "kernel upgrade"
    with pytest.raises(service.Paused):
        again.run_pass("reap")
    assert not again.resume()["paused"]
    rep = again.run_pass("reap")
    assert ("evacuated", "done") in done(rep) and ("reclaimable", "done") in done(rep)
    events = [r["result"] for r in map(_json, open(handles["audit_log"]))
              if r["event"] == "agent_state"]
    assert events == ["paused", "resumed"]


def _json(line):
    import json
    return json.loads(line)


def test_one_pass_at_a_time(host):
    reaper, _, _ = host
    agent = service.Agent(reaper)
    inside, release = threading.Event(), threading.Event()

    def heartbeat():                  # called inside every pass: hold the first one
        if threading.current_thread() is t:
            inside.set()
            release.wait(10)
    reaper.heartbeat = heartbeat
    t = threading.Thread(target=agent.run_pass, args=("audit",), kwargs={"source": "rpc"})
    t.start()
    assert inside.wait(10)
    assert agent.status()["running"]["source"] == "rpc"
    with pytest.raises(service.Busy, match="audit pass \\(rpc\\)"):
        agent.run_pass("audit", wait=0.2)
    release.set()
    t.join(10)
    reaper.heartbeat = lambda: None
    assert agent.run_pass("audit", wait=0.2).mode == "audit"
    assert agent.status()["running"] is None


def test_status_and_approve_a_blocked_pass(host):
    reaper, _, _ = host
    reaper.policy = dataclasses.replace(reaper.policy, max_destroy_per_pass=1)
    agent = service.Agent(reaper)
    assert agent.status()["last_pass"] is None
    blocked = agent.run_pass("reap")
    assert blocked.actions == []
    st = agent.status()
    assert st["guards_tripped"] == ["mass_destruction"]
    assert st["last_pass"]["pass_id"] == blocked.pass_id
    assert [b["pass_id"] for b in st["blocked_passes"]] == [blocked.pass_id]
    assert st["journal_backlog"] == 0 and st["paused"] is False
    assert "guards mass_destruction" in agent.status_line()
    assert not agent.approve("req-no-such-pass")
    assert agent.approve(blocked.pass_id)
    assert agent.status()["blocked_passes"] == []
    rep = agent.run_pass("reap")
    assert ("evacuated", "done") in done(rep)
    assert not agent.approve(blocked.pass_id)      # once


def test_stop_request_finishes_the_step_and_the_journal_resumes(host):
    reaper, handles, u = host
    agent = service.Agent(reaper)
    calls = []

    def heartbeat():                  # as a SIGTERM while the 2nd step runs
        calls.append(1)
        if len(calls) == 4:           # 2 pass phases, then one ping as each step starts
            agent.request_stop()
    reaper.heartbeat = heartbeat
    rep = agent.run_pass("reap")
    interrupted = [a for a in rep.actions if a["result"] == "interrupted"]
    assert len(interrupted) == 1 and len(rep.actions) == 1
    (entry,) = reaper.state.unfinished()
    # the step that was running finished; the next one never started
    assert entry.steps == {"destroy_domain": "done", "delete_files": "done"}
    assert entry.plan.classification is Classification.EVACUATED    # init_host order
    # the rest of the plan waits; a new start resumes the journaled teardown first
    reaper.heartbeat = lambda: None
    again = service.Agent(reaper)
    rep2 = again.run_pass("reap")
    resumed = [a for a in rep2.actions if a.get("resumed_from") == rep.pass_id]
    assert [a["result"] for a in resumed] == ["done"]
    assert reaper.state.unfinished() == []
    assert state_mod.StateDB(reaper.state.path.rsplit("/", 1)[0]).backlog() == 0


def test_reload_applies_mutable_options_and_keeps_the_old_on_a_broken_file(host, tmp_path):
    reaper, _, _ = host
    conf = private_conf(tmp_path, "[reaper]\nevacuated_action = log\nreconcile_interval = 60\n")
    agent = service.Agent(reaper, conf=conf)
    path = tmp_path / "reaper.conf"
    path.write_text("[reaper]\nevacuated_action = reap\nreconcile_interval = 30\n"
                    "dry_run = true\n")
    assert agent.reload()
    assert reaper.policy.action_for(Classification.EVACUATED).value == "reap"
    assert reaper.policy.dry_run and agent._iv["reap"] == 30
    before = reaper.policy
    path.write_text("[reaper]\nevacuated_action = nuke\n")
    assert not agent.reload()
    assert reaper.policy is before and agent._iv["reap"] == 30
    path.write_text("not an ini file\n[reaper\n")
    assert not agent.reload()
    assert reaper.policy is before
