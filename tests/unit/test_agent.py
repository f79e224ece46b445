"""The agent around a real pass on the demo host (libvirt's test driver, SQLite Nova
DB, instance dirs on disk): the pass lock, pause, approve, status, stopping between
steps, reloading a config file (all or nothing), and a loop that outlives a pass
that raises."""
from __future__ import annotations

import dataclasses
import json
import os
import threading

import pytest
from oslo_config import cfg

from reaper import exception
from reaper import audit as audit_mod
from reaper import demo
from reaper import state as state_mod
from reaper.agent import service
from reaper.conf import opts
from reaper.objects.fields import Classification
from reaper.rpc import server as rpc_server


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
    with pytest.raises(exception.Paused, match="kernel upgrade"):
        agent.run_pass("reap")
    with pytest.raises(exception.Paused):
        agent.run_pass("reclaim")
    assert agent.run_pass("audit").actions == []
    assert agent.run_pass("reap", dry_run=True).actions == []
    # the flag lives in the state DB: a restarted agent is still paused
    again = service.Agent(reaper)
    assert again.paused == "kernel upgrade"
    with pytest.raises(exception.Paused):
        again.run_pass("reap")
    assert not again.resume()["paused"]
    rep = again.run_pass("reap")
    assert ("evacuated", "done") in done(rep) and ("reclaimable", "done") in done(rep)
    events = [r["result"] for r in map(_json, open(handles["audit_log"]))
              if r["event"] == "agent_state"]
    assert events == ["paused", "resumed"]


def _json(line):
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
    with pytest.raises(exception.Busy, match="audit pass \\(rpc\\)"):
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
    assert agent.config.policy is reaper.policy
    before = reaper.policy
    path.write_text("[reaper]\nevacuated_action = nuke\n")
    assert not agent.reload()
    assert reaper.policy is before and agent._iv["reap"] == 30
    path.write_text("not an ini file\n[reaper\n")
    assert not agent.reload()
    assert reaper.policy is before


# -- reload: all or nothing ------------------------------------------------------

def _records(handles, event, result=None):
    with open(handles["audit_log"]) as f:
        recs = [json.loads(line) for line in f]
    return [r for r in recs if r["event"] == event and result in (None, r.get("result"))]


def test_a_refused_reload_grants_no_remote_reap(host, tmp_path):
    """Issue 9 item 8: [rpc] allow_remote_reap = true next to an invalid
    max_destroy_per_pass; the reload is refused, so a remote reap stays refused and
    nothing is destroyed (oslo.config's mutate_config_files had already put the new
    allow_remote_reap in place before the bad value was noticed)."""
    reaper, handles, _ = host
    conf = private_conf(tmp_path, "[rpc]\nallow_remote_reap = false\n")
    agent = service.Agent(reaper, conf=conf)
    endpoint = rpc_server.ReaperEndpoint(agent, conf)
    before, files = reaper.policy, sorted(os.listdir(handles["instances_path"]))
    (tmp_path / "reaper.conf").write_text(
        "[rpc]\nallow_remote_reap = true\npass_wait_timeout = 1\n"
        "[reaper]\nmax_destroy_per_pass = -1\nevacuated_action = log\n"
        "reconcile_interval = 5\n")
    assert not agent.reload()
    reply = endpoint.reap({"request_id": "req-x"})
    assert reply["error"]["code"] == "refused", reply
    assert sorted(os.listdir(handles["instances_path"])) == files
    assert reaper.policy is before and agent.config.policy is before
    assert agent.config.rpc.allow_remote_reap is False and agent._iv["reap"] == 600
    assert agent.config.rpc.pass_wait_timeout == 5.0
    # the agent's ConfigOpts was never touched: every option still reads as at start
    assert conf.rpc.allow_remote_reap is False and conf.reaper.max_destroy_per_pass == 10
    (failed,) = _records(handles, "agent_state", "reload_failed")
    assert "max_destroy_per_pass" in failed["reason"]
    assert _records(handles, "agent_state", "reloaded") == []


def test_an_unparsable_permission_is_refused_at_reload_not_at_every_call(host, tmp_path):
    """allow_remote_reap = maybe: the reload is refused; RPC calls keep answering
    from the running configuration, each audited (no ConfigFileValueError inside
    the server)."""
    reaper, handles, _ = host
    conf = private_conf(tmp_path, "[rpc]\nallow_remote_reap = false\n")
    agent = service.Agent(reaper, conf=conf)
    endpoint = rpc_server.ReaperEndpoint(agent, conf)
    (tmp_path / "reaper.conf").write_text("[rpc]\nallow_remote_reap = maybe\n")
    assert not agent.reload()
    assert endpoint.reap({})["error"]["code"] == "refused"
    assert endpoint.approve({}, pass_id="req-00000000-0000-0000-0000-000000000000"
                            )["error"]["code"] == "refused"
    assert endpoint.status({})["host"] == agent.host
    calls = [(r["method"], r["result"]) for r in _records(handles, "rpc_call")]
    assert calls == [("reap", "refused"), ("approve", "refused"), ("status", "ok")]
    # a good file then applies, and the reloaded record names the [rpc] option
    (tmp_path / "reaper.conf").write_text("[rpc]\nallow_remote_reap = true\n")
    assert agent.reload()
    (rec,) = _records(handles, "agent_state", "reloaded")
    assert rec["evidence"]["changed"] == {"rpc.allow_remote_reap": [False, True]}
    assert "error" not in endpoint.reap({}, dry_run=True)


def test_a_reload_lists_every_changed_option_and_keeps_the_restart_only_ones(host, tmp_path):
    reaper, handles, _ = host
    conf = private_conf(tmp_path, "[DEFAULT]\nhost = demo-compute-1\n"
                                  "[database]\nconnection = sqlite:///old.db\n")
    agent = service.Agent(reaper, conf=conf)
    started = agent.config
    (tmp_path / "reaper.conf").write_text(
        "[DEFAULT]\nhost = renamed-host\ninstances_path = /elsewhere\n"
        "[database]\nconnection = mysql+pymysql://nova:s3cret@db/nova\n"
        "[rpc]\nallow_remote_reap = true\npass_wait_timeout = 2.5\n"
        "[reaper]\ndry_run = true\nevacuated_action = log\nmax_destroy_per_pass = 3\n"
        "reconcile_interval = 60\ninterval_jitter = 0.5\n"
        "notification_queue_size = 7\nmetrics_file = /tmp/x.prom\n")
    assert agent.reload()
    (rec,) = _records(handles, "agent_state", "reloaded")
    assert rec["evidence"]["changed"] == {
        "rpc.allow_remote_reap": [False, True],
        "rpc.pass_wait_timeout": [5.0, 2.5],
        "reaper.dry_run": [False, True],
        "reaper.evacuated_action": ["reap", "log"],
        "reaper.max_destroy_per_pass": [10, 3],
        "reaper.reconcile_interval": [600, 60],
        "reaper.interval_jitter": [0.1, 0.5],
    }
    restart = rec["evidence"]["needs_restart"]
    assert restart["DEFAULT.host"] == ["demo-compute-1", "renamed-host"]
    assert restart["DEFAULT.instances_path"] == ["/var/lib/nova/instances", "/elsewhere"]
    assert restart["database.connection"] == ["***", "***"]          # a secret
    assert restart["reaper.notification_queue_size"] == [10000, 7]
    assert restart["reaper.metrics_file"] == ["", "/tmp/x.prom"]
    assert "s3cret" not in open(handles["audit_log"]).read()
    # applied: the mutable ones, everywhere; the restart-only ones nowhere
    pol = reaper.policy
    assert agent.config.policy is pol and pol.dry_run and pol.max_destroy_per_pass == 3
    assert pol.action_for(Classification.EVACUATED).value == "log"
    assert pol.host == "demo-compute-1" and pol.instances_path == started.policy.instances_path
    assert agent._iv == {"reap": 60, "reclaim": 300, "jitter": 0.5}
    assert agent.config.rpc == rpc_server_settings(True, 2.5)
    assert agent.config.get("reaper", "notification_queue_size") == 10000
    assert agent.config.get("DEFAULT", "host") == "demo-compute-1"
    assert started.rpc.allow_remote_reap is False        # the old snapshot is unchanged
    # a reload of the same file changes nothing more
    assert agent.reload()
    assert _records(handles, "agent_state", "reloaded")[-1]["evidence"]["changed"] == {}


def rpc_server_settings(allow, wait):
    from reaper.confsnap import RpcSettings
    return RpcSettings(allow, wait)


def test_oslo_mutate_leaves_a_half_updated_conf_which_the_agent_never_uses(tmp_path):
    """Why the agent re-parses into a fresh ConfigOpts: oslo.config's own
    mutate_config_files accepts a file with a bad value, puts the good values of it
    in place at once and raises only when the bad option is read."""
    conf = private_conf(tmp_path, "[rpc]\nallow_remote_reap = false\n")
    (tmp_path / "reaper.conf").write_text(
        "[rpc]\nallow_remote_reap = true\n[reaper]\nmax_destroy_per_pass = -1\n")
    conf.mutate_config_files()                 # no error here...
    assert conf.rpc.allow_remote_reap is True  # ...the new permission is live...
    with pytest.raises(cfg.ConfigFileValueError):
        _ = conf.reaper.max_destroy_per_pass   # ...and the bad value raises when read
    (tmp_path / "reaper.conf").write_text("[rpc]\nallow_remote_reap = maybe\n")
    conf.mutate_config_files()
    with pytest.raises(cfg.ConfigFileValueError):
        _ = conf.rpc.allow_remote_reap


# -- the loop outlives a pass that raises -----------------------------------------

def test_the_loop_outlives_passes_that_raise(host, tmp_path):
    """The audit log's filesystem is full (/dev/full: every write is ENOSPC), so each
    pass raises at its summary: the loop logs it, records the pass as failed and
    runs the next timer; SIGTERM still stops it cleanly."""
    reaper, handles, _ = host
    conf = private_conf(tmp_path, "[reaper]\nreconcile_interval = 0\n"
                                  "reclaim_poll_interval = -1\ninterval_jitter = 0\n")
    reaper.audit.close()
    reaper.audit = audit_mod.AuditLog("/dev/full", reaper.policy.host)
    agent = service.Agent(reaper, conf=conf)
    seen = []

    def count(a, rep):
        seen.append(rep)
        if len(seen) == 3:
            a.request_stop()
    agent.pass_listeners.append(count)
    assert agent.serve() == 0
    assert len(seen) == 3 and all(r.exit_code == 1 for r in seen)
    assert all("No space left on device" in r.errors[-1] for r in seen)
    st = agent.status()
    assert st["last_pass"]["summary"]["exit_code"] == 1 and st["running"] is None
    assert "exit 1" in agent.status_line()
