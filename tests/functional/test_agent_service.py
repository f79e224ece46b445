"""reaper-agent as systemd runs it: a real process, a real notify datagram socket,
real signals, a real KVM domain through libvirtd and a real instance directory.

- READY=1 once the first pass is planned, WATCHDOG=1 from the main loop, STATUS=
  with the last pass summary, STOPPING=1 on SIGTERM;
- SIGTERM during a teardown finishes the step in progress, leaves the rest in the
  journal, and the next start resumes it;
- SIGHUP changes an action without a restart.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib

import pytest

from reaper import state as state_mod
from tests.fixtures import novadb
from tests.functional import test_reaper_real as reaper_real
from tests.fixtures.domains import domain_exists

pytestmark = pytest.mark.functional

OTHER = "ft-agent-other"


@pytest.fixture
def host():
    return f"fa-{uuidlib.uuid4().hex[:8]}"


@pytest.fixture
def notify_socket():
    """What systemd does for Type=notify: a datagram socket named in $NOTIFY_SOCKET."""
    d = tempfile.mkdtemp(prefix="rn-", dir="/tmp")
    path = os.path.join(d, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    yield path, sock
    sock.close()
    os.unlink(path)
    os.rmdir(d)


def write_conf(tmp_path, db, host, instances_path, rpc: str = "enabled = false\n",
               **reaper_opts) -> str:
    """test_reaper_real's config, with the agent's timers quiet unless asked, and RPC."""
    opts = dict(reconcile_interval=3600, reclaim_poll_interval=-1, interval_jitter=0)
    opts.update(reaper_opts)
    conf = reaper_real.write_conf(tmp_path, db, host, instances_path, **opts)
    with open(conf, "a") as f:
        f.write(f"[rpc]\n{rpc}")
    return conf


class AgentProcess:
    def __init__(self, conf: str, notify_path: str | None, *args, watchdog_usec=None):
        env = dict(os.environ, PYTHONPATH=os.getcwd())
        env.pop("NOTIFY_SOCKET", None)
        if notify_path:
            env["NOTIFY_SOCKET"] = notify_path
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reaper.cmd.agent", "--config-file", conf, *args],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def signal(self, sig) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout=60) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stderr(self) -> str:
        return self.proc.stderr.read() if self.proc.poll() is not None else ""


def messages(sock, until, timeout=60) -> list[dict]:
    """Datagrams as dicts, until ``until(msgs)`` is true."""
    out = []
    deadline = time.monotonic() + timeout
    while not until(out):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out; notify messages so far: {out}")
        sock.settimeout(left)
        data = sock.recv(65536).decode()
        out.append(dict(line.split("=", 1) for line in data.split("\n")))
    return out


def audit(tmp_path) -> list[dict]:
    p = tmp_path / "audit.log"
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


def wait_audit(tmp_path, pred, timeout=60, proc=None) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recs = audit(tmp_path)
        if pred(recs):
            return recs
        if proc is not None and proc.proc.poll() is not None:
            raise AssertionError(f"agent exited {proc.proc.returncode}: {proc.stderr()[-3000:]}")
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting; audit events: "
                         f"{[(r['event'], r.get('result')) for r in audit(tmp_path)]}")


def evacuated_kvm_instance(nova_db, host, factory, instances_path, files=0):
    u = novadb.add_instance(nova_db.engine, host=OTHER)["uuid"]
    novadb.add_migration(nova_db.engine, u, host, OTHER, "done", "evacuation")
    d = instances_path.instance(u)
    for i in range(files):                  # a big tree makes delete_files take a while
        sub = d / f"s{i // 1000}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{i}").write_bytes(b"x")
    factory(u, start=True, disks=[d / "disk"])
    return u


@pytest.mark.parametrize("nova_db", ["sqlite"], indirect=True)
def test_notify_protocol_ready_watchdog_status_stopping(tmp_path, nova_db, host, instances_path,
                                                         notify_socket):
    novadb.add_compute_node(nova_db.engine, host)
    prom = tmp_path / "reaper.prom"
    conf = write_conf(tmp_path, nova_db, host, instances_path.path, reconcile_interval=1,
                      metrics_file=prom)
    path, sock = notify_socket
    agent = AgentProcess(conf, path, watchdog_usec=300_000)
    try:
        msgs = messages(sock, lambda m: sum("WATCHDOG" in x for x in m) >= 3
                        and sum("STATUS" in x and "READY" not in x for x in m) >= 2)
        ready = [i for i, m in enumerate(msgs) if m.get("READY") == "1"]
        assert len(ready) == 1, msgs
        assert msgs[ready[0]]["STATUS"].startswith("first pass planned: 0 findings")
        first_status = next(m for m in msgs[ready[0] + 1:] if "STATUS" in m)
        assert first_status["STATUS"].startswith("last reap pass at ")
        assert "0 findings, actions none, guards none, exit 0" in first_status["STATUS"]
        agent.signal(signal.SIGTERM)
        msgs = messages(sock, lambda m: any(x.get("STOPPING") == "1" for x in m))
        assert agent.wait() == 0
    finally:
        agent.kill()
    events = [(r["event"], r.get("result")) for r in audit(tmp_path)]
    assert events[0] == ("agent_state", "started") and events[-1] == ("agent_state", "stopped")
    # the timer ran further reap passes after init_host
    assert sum(e == ("pass_summary", "0") for e in events) >= 2
    # and the Prometheus textfile counted them
    from prometheus_client.parser import text_string_to_metric_families
    passes = {tuple(sorted(x.labels.items())): x.value
              for fam in text_string_to_metric_families(prom.read_text())
              for x in fam.samples if x.name == "reaper_passes_total"}
    assert passes[(("exit_code", "0"), ("mode", "reap"))] == sum(
        e == ("pass_summary", "0") for e in events)


def test_identity_mismatch_refuses_to_start_with_ex_config(tmp_path, nova_db, host,
                                                           instances_path, notify_socket):
    novadb.add_compute_node(nova_db.engine, host + "-renamed")
    conf = write_conf(tmp_path, nova_db, host, instances_path.path)
    path, sock = notify_socket
    agent = AgentProcess(conf, path)
    assert agent.wait() == 78
    msgs = messages(sock, lambda m: any("STOPPING" in x for x in m), timeout=5)
    assert "possible rename" in msgs[-1]["STATUS"]
    assert [r["event"] for r in audit(tmp_path)] == ["guard_tripped"]


@pytest.mark.parametrize("nova_db", ["sqlite"], indirect=True)
def test_sigterm_during_a_teardown_finishes_the_step_and_the_next_start_resumes(
        tmp_path, nova_db, host, kvm_domain_factory, libvirt_conn, instances_path,
        notify_socket):
    novadb.add_compute_node(nova_db.engine, host)
    u = evacuated_kvm_instance(nova_db, host, kvm_domain_factory, instances_path,
                               files=40_000)
    conf = write_conf(tmp_path, nova_db, host, instances_path.path)
    path, sock = notify_socket
    agent = AgentProcess(conf, path)
    try:
        st = state_mod.StateDB(str(tmp_path / "state"))
        deadline = time.monotonic() + 60
        while True:             # SIGTERM while delete_files (a 40,000-file rmtree) runs
            steps = st._db.execute("SELECT step, status FROM journal_steps").fetchall()
            if ("delete_files", "started") in steps:
                agent.signal(signal.SIGTERM)
                break
            assert time.monotonic() < deadline and agent.proc.poll() is None, steps
            time.sleep(0.005)
        assert agent.wait() == 0, agent.stderr()[-3000:]
    finally:
        agent.kill()
    (entry,) = st.unfinished()
    assert entry.steps == {"destroy_domain": "done", "delete_files": "done"}
    st.close()
    assert domain_exists(libvirt_conn, u)                 # defined, not running
    assert os.listdir(instances_path.path) == []          # the step finished whole
    act = [r for r in audit(tmp_path) if r["event"] == "action"]
    assert [(a["instance_uuid"], a["result"]) for a in act] == [(u, "interrupted")]

    # the next start resumes the journaled teardown in its init_host pass
    again = AgentProcess(conf, None, "--once")
    assert again.wait() == 4, again.stderr()[-3000:]
    assert not domain_exists(libvirt_conn, u)
    st = state_mod.StateDB(str(tmp_path / "state"))
    assert st.unfinished() == [] and st.backlog() == 0
    st.close()
    last = [r for r in audit(tmp_path) if r["event"] == "action"][-1]
    assert last["result"] == "done" and last["resumed_from"] == act[0]["pass_id"]
    assert [s for s, _ in last["evidence"]["steps"]] == ["destroy_domain", "delete_files",
                                             "undefine_domain"]


@pytest.mark.parametrize("nova_db", ["sqlite"], indirect=True)
def test_sighup_changes_an_action_without_a_restart(tmp_path, nova_db, host, kvm_domain_factory,
                                                    libvirt_conn, instances_path):
    novadb.add_compute_node(nova_db.engine, host)
    u = evacuated_kvm_instance(nova_db, host, kvm_domain_factory, instances_path)
    conf = write_conf(tmp_path, nova_db, host, instances_path.path, evacuated_action="log",
                      reconcile_interval=1)
    agent = AgentProcess(conf, None)
    try:
        # two passes that only log it
        wait_audit(tmp_path, lambda rs: sum(r["event"] == "finding" and r["instance_uuid"] == u
                                            and r["result"] == "logged" for r in rs) >= 2,
                   proc=agent)
        assert domain_exists(libvirt_conn, u)
        text = open(conf).read().replace("evacuated_action = log", "evacuated_action = reap")
        with open(conf, "w") as f:
            f.write(text)
        agent.signal(signal.SIGHUP)
        recs = wait_audit(tmp_path, lambda rs: any(r["event"] == "action" for r in rs),
                          proc=agent)
        assert agent.proc.poll() is None            # same process, no restart
        reload = [r for r in recs if r["event"] == "agent_state" and r["result"] == "reloaded"]
        assert reload and reload[0]["evidence"]["changed"] == {
            "reaper.evacuated_action": ["log", "reap"]}
        (act,) = [r for r in recs if r["event"] == "action"]
        assert (act["instance_uuid"], act["result"]) == (u, "done")
        assert not domain_exists(libvirt_conn, u)
        agent.signal(signal.SIGTERM)
        assert agent.wait() == 0
    finally:
        agent.kill()


RABBIT = "rabbit://guest:guest@127.0.0.1:5672/"


@pytest.mark.parametrize("nova_db", ["sqlite"], indirect=True)
def test_the_agent_process_serves_reaper_ctl(tmp_path, nova_db, host, instances_path):
    """The real service end to end: reaper-agent serves RPC on the broker while its
    timers run, and the real reaper-ctl script reaches it; it stops cleanly."""
    from tests.conftest import service_unavailable
    from kombu import Connection
    try:
        with Connection(RABBIT.replace("rabbit://", "amqp://"), connect_timeout=5) as c:
            c.connect()
    except Exception as exc:  # noqa: BLE001 - any failure: no broker, skip
        service_unavailable("RabbitMQ", exc)
    novadb.add_compute_node(nova_db.engine, host)
    conf = write_conf(tmp_path, nova_db, host, instances_path.path, rpc="enabled = true\n")
    with open(conf, "a") as f:
        f.write(f"[DEFAULT]\ntransport_url = {RABBIT}\n")
    agent = AgentProcess(conf, None)
    ctl = [sys.executable, "-m", "reaper.cmd.ctl", "--config-file", conf, "--host", host,
           "--format", "json", "--timeout", "10"]
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    try:
        wait_audit(tmp_path, lambda rs: any(r["event"] == "pass_summary" for r in rs),
                   proc=agent)
        deadline = time.monotonic() + 60
        while True:                 # the server connects in the background
            r = subprocess.run(ctl + ["status"], capture_output=True, text=True, env=env,
                               timeout=60)
            if r.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert r.returncode == 0, r.stdout + r.stderr
        st = json.loads(r.stdout)["hosts"][host]
        assert st["host"] == host and st["last_pass"]["mode"] == "reap"
        r = subprocess.run(ctl + ["reap"], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 1 and "allow_remote_reap" in (r.stdout + r.stderr)
        r = subprocess.run(ctl + ["audit"], capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr
        agent.signal(signal.SIGTERM)
        assert agent.wait() == 0
    finally:
        agent.kill()
    calls = [(x["method"], x["result"]) for x in audit(tmp_path) if x["event"] == "rpc_call"]
    assert ("status", "ok") in calls and ("reap", "refused") in calls and ("audit", "ok") in calls
