"""reaper-ctl against real agents over a real RabbitMQ broker (loopback).

Twenty agents run as threads in this process, each an Agent with its own host
name around its own small Reaper (libvirt's in-process test driver with an empty
node, its own instance dir, state DB and audit log; one SQLite Nova DB with a
compute node per host), each with its own RPC server. The Nova services table
also lists a host with no agent, which must show up as unreachable only.

The module uses a RabbitMQ vhost of its own (rabbitmqctl add_vhost, removed at
the end), so parallel runs never see each other's queues. reaper-ctl runs
in-process through ``reaper.cmd.ctl.main`` (stdout/stderr captured), and once as
a real subprocess.
"""
from __future__ import annotations

import contextlib
import json
import logging as std_logging
import os
import pathlib
import re
import socket
import subprocess
import sys
import threading
import uuid as uuidlib

import pytest
import sqlalchemy as sa
from oslo_config import cfg

from reaper import exception
from reaper import audit as audit_mod
from reaper import demo, rpc
from reaper import policy as policy_mod
from reaper import reconcile
from reaper import state as state_mod
from reaper.agent import service
from reaper.cmd import ctl
from reaper.nova import schema
from reaper.rpc import client as rpc_client
from reaper.conf import reaper as conf_reaper
from reaper.conf import rpc as conf_rpc
from reaper.rpc import server as rpc_server
from tests.conftest import service_unavailable
from tests.fixtures import novadb

pytestmark = pytest.mark.functional

BROKER = os.environ.get("REAPER_TEST_AMQP", "127.0.0.1:5672")
N_AGENTS = 20
HOSTS = [f"rpc-{i:02d}" for i in range(N_AGENTS)]
DEAD = "rpc-dead"          # in the services table, no agent
CTL_ENV = dict(os.environ, ERL_EPMD_ADDRESS="127.0.0.1",
               RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}")


def rabbitmqctl(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["rabbitmqctl", "-q", *args], env=CTL_ENV, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture(scope="module")
def vhost_url():
    """A vhost of this module's own on the test host's broker; deleted afterwards."""
    from kombu import Connection
    from kombu.exceptions import OperationalError

    try:
        with Connection(f"amqp://guest:guest@{BROKER}//", connect_timeout=5) as conn:
            conn.connect()
    except (OSError, OperationalError) as exc:
        service_unavailable(f"RabbitMQ ({BROKER})", exc)
    name = f"reaper-test-{uuidlib.uuid4().hex[:10]}"
    try:
        r = rabbitmqctl("add_vhost", name)
    except (OSError, subprocess.SubprocessError) as exc:
        service_unavailable("rabbitmqctl", exc)
    if r.returncode:
        service_unavailable("rabbitmqctl add_vhost", r.stderr.strip())
    try:
        r = rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        assert r.returncode == 0, r.stderr
        yield f"rabbit://guest:guest@{BROKER}/{name}"
    finally:
        rabbitmqctl("delete_vhost", name)


class Fleet:
    """The agents, their servers and the files reaper-ctl needs."""

    def __init__(self, root: pathlib.Path, url: str):
        self.root = root
        self.url = url
        self.db_url = f"sqlite:///{root / 'nova.sqlite'}"
        self.engine = sa.create_engine(self.db_url)
        schema.create_all(self.engine)
        self.agent_conf_file = root / "agent.conf"
        self.write_agent_conf(allow=False)
        self.conf = cfg.ConfigOpts()
        self.conf.register_opts(conf_reaper.agent_opts, group="reaper")
        conf_rpc.register_opts(self.conf)
        self.conf(["--config-file", str(self.agent_conf_file)], project="reaper-rpc-test",
                  default_config_files=[])
        self.ctl_conf = root / "ctl.conf"
        # As on a controller sharing reaper.conf: its own [DEFAULT] host is not a target.
        self.ctl_conf.write_text(f"[DEFAULT]\nhost = controller-1\ntransport_url = {url}\n"
                                 f"[database]\nconnection = {self.db_url}\n")
        self.agents: dict[str, service.Agent] = {}
        self.servers: dict[str, object] = {}

    def write_agent_conf(self, allow: bool) -> None:
        self.agent_conf_file.write_text(
            f"[DEFAULT]\ntransport_url = {self.url}\n"
            f"[rpc]\nallow_remote_reap = {str(allow).lower()}\npass_wait_timeout = 1\n")

    def allow_remote_reap(self, allow: bool) -> None:
        """Edit the config file and reload it, as SIGHUP does on a real agent (each
        agent checks RPC permissions against its own validated snapshot)."""
        self.write_agent_conf(allow)
        self.conf.mutate_config_files()         # reaper-ctl's side reads this one
        assert self.conf.rpc.allow_remote_reap is allow
        for agent in self.agents.values():
            assert agent.reload()
            assert agent.config.rpc.allow_remote_reap is allow

    def instances(self, host: str) -> pathlib.Path:
        return self.root / host / "instances"

    def start(self, host: str, **policy_kw) -> service.Agent:
        base = self.root / host
        (base / "instances").mkdir(parents=True, exist_ok=True)
        node = base / "node.xml"
        node.write_text(demo.node_xml([]))
        kw = dict(grace_observations=1, grace_seconds=0, max_destroy_per_pass=10,
                  max_destroy_fraction=1.0, instances_path_shared="false")
        kw.update(policy_kw)
        pol = policy_mod.Policy(host=host, hypervisor_hostname=host,
                                instances_path=str(base / "instances"),
                                actions=policy_mod.default_actions(), **kw)
        reaper = reconcile.Reaper(policy=pol, libvirt_uri=f"test://{node}",
                                  engine=sa.create_engine(self.db_url),
                                  state=state_mod.StateDB(str(base / "state")),
                                  audit=audit_mod.AuditLog(str(base / "audit.log"), host))
        agent = service.Agent(reaper, conf=self.conf)
        server = rpc_server.build_server(self.conf, agent)
        server.start()
        self.agents[host], self.servers[host] = agent, server
        return agent

    def stop(self, *hosts: str) -> None:
        rpc_server.stop_server(*[self.servers.pop(h) for h in hosts])
        for h in hosts:
            self.agents.pop(h).reaper.close()

    @contextlib.contextmanager
    def extra_agent(self, host: str, **policy_kw):
        """One more agent for one test; its services row is soft-deleted afterwards so
        `--all` in later tests sees the module's fleet only."""
        svc = novadb.add_compute_node(self.engine, host=host)["service_id"]
        agent = self.start(host, **policy_kw)
        try:
            yield agent
        finally:
            if host in self.servers:
                self.stop(host)
            with self.engine.begin() as c:
                c.execute(sa.update(schema.services).where(schema.services.c.id == svc)
                          .values(deleted=svc))

    def orphan_dir(self, host: str) -> pathlib.Path:
        """An instance directory whose instance was deleted: an orphan_dir to reap."""
        row = novadb.add_instance(self.engine, host=host, deleted=True)
        d = self.instances(host) / row["uuid"]
        d.mkdir()
        (d / "disk").write_bytes(b"\0" * 4096)
        return d

    def audit_records(self, host: str, event: str = "rpc_call") -> list[dict]:
        path = self.root / host / "audit.log"
        recs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [r for r in recs if r["event"] == event]


@pytest.fixture(scope="module")
def fleet(vhost_url, tmp_path_factory):
    f = Fleet(tmp_path_factory.mktemp("rpc-fleet"), vhost_url)
    for h in HOSTS + [DEAD]:
        novadb.add_compute_node(f.engine, host=h)
    try:
        for h in HOSTS:
            f.start(h)
        yield f
    finally:
        f.stop(*f.servers)
        f.engine.dispose()


@pytest.fixture(autouse=True)
def _restore_logging():
    """reaper-ctl's main sets up logging (oslo.log) on a stream pytest closes after the
    test; give the root logger its handlers back so later log lines go somewhere."""
    root = std_logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    for h in handlers:
        if h not in root.handlers:
            root.addHandler(h)
    root.setLevel(level)


@pytest.fixture
def allowed(fleet):
    """[rpc] allow_remote_reap = true for one test, false again afterwards."""
    fleet.allow_remote_reap(True)
    yield
    fleet.allow_remote_reap(False)


@pytest.fixture
def server_errors():
    """ERROR records of oslo.messaging's server loop ("Exception during message
    handling"): there must be none, whatever the callers send."""
    records: list[std_logging.LogRecord] = []

    class Keep(std_logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep(level=std_logging.ERROR)
    logger = std_logging.getLogger("oslo_messaging.rpc.server")
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def run_ctl(fleet, capsys, *args: str) -> tuple[int, str, str]:
    """reaper-ctl in-process: exit code, stdout, and its own stderr lines (the agents
    run in this process too, so their log lines are dropped)."""
    capsys.readouterr()
    code = ctl.main(["--config-file", str(fleet.ctl_conf), *args])
    out, err = capsys.readouterr()
    return code, out, "".join(ln for ln in err.splitlines(keepends=True)
                              if not _LOG_LINE.match(ln))


_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d")


def ctl_json(fleet, capsys, *args: str) -> tuple[int, dict, str]:
    code, out, err = run_ctl(fleet, capsys, "--format", "json", *args)
    return code, json.loads(out), err


# --------------------------------------------------------------------------
# --host: every method, round trip
# --------------------------------------------------------------------------

def test_host_round_trip_of_every_method(fleet, capsys, allowed, server_errors):
    host = "rpc-00"
    who = ["--os-username", "alice", "--os-project-name", "ops", "--host", host]

    code, rep, _ = ctl_json(fleet, capsys, *who, "status")
    assert code == ctl.EXIT_OK
    st = rep["hosts"][host]
    assert st["host"] == host and st["paused"] is False and st["journal_backlog"] == 0
    assert rep["unreachable"] == [] and rep["errors"] == {}

    orphan = fleet.orphan_dir(host)
    code, rep, _ = ctl_json(fleet, capsys, *who, "audit")
    assert code == ctl.EXIT_FINDINGS
    found = {(f["classification"], f["instance_uuid"]) for f in rep["hosts"][host]["findings"]}
    assert ("orphan_dir", orphan.name) in found
    audit_pass = rep["hosts"][host]["pass_id"]

    code, rep, _ = ctl_json(fleet, capsys, *who, "audit", "--instance", orphan.name.upper())
    assert code == ctl.EXIT_FINDINGS
    assert {f["instance_uuid"] for f in rep["hosts"][host]["findings"]} == {orphan.name}

    code, rep, _ = ctl_json(fleet, capsys, *who, "reap", "--dry-run")
    assert code == ctl.EXIT_FINDINGS and rep["hosts"][host]["dry_run"] is True
    assert orphan.exists()

    code, out, _ = run_ctl(fleet, capsys, *who, "pause", "--reason", "disk swap")
    assert code == ctl.EXIT_OK and "disk swap" in out
    code, out, err = run_ctl(fleet, capsys, *who, "reap")
    assert code == ctl.EXIT_ERROR
    assert f"{host}: error: paused: host {host} is paused (disk swap)" in err
    assert orphan.exists()
    code, rep, _ = ctl_json(fleet, capsys, *who, "status")
    assert rep["hosts"][host]["paused"] is True
    assert rep["hosts"][host]["paused_reason"] == "disk swap"

    code, rep, _ = ctl_json(fleet, capsys, *who, "resume")
    assert code == ctl.EXIT_OK and rep["hosts"][host]["paused"] is False

    code, out, _ = run_ctl(fleet, capsys, *who, "reap")          # one host: whole report
    assert code == ctl.EXIT_ACTIONS
    assert f"DONE orphan_dir {orphan.name}" in out
    assert not orphan.exists()

    code, rep, _ = ctl_json(fleet, capsys, *who, "reclaim")
    assert code == ctl.EXIT_OK and rep["hosts"][host]["mode"] == "reclaim"

    unknown = f"req-{uuidlib.uuid4()}"
    code, rep, err = ctl_json(fleet, capsys, *who, "approve", unknown)
    assert code == ctl.EXIT_ERROR
    assert rep["errors"][host] == {"code": rpc.NOT_FOUND,
                                   "message": f"no blocked, unapproved pass {unknown} on {host}"}

    code, rep, _ = ctl_json(fleet, capsys, *who, "status")
    last = rep["hosts"][host]["last_pass"]
    assert last["mode"] == "reclaim" and last["summary"]["exit_code"] == 0

    # Every call is in the host's audit log, with who asked.
    recs = fleet.audit_records(host)
    methods = [r["method"] for r in recs]
    for m in rpc.METHODS:
        assert m in methods, m
    for r in recs:
        assert r["caller"]["user"] == "alice" and r["caller"]["project"] == "ops"
        assert r["caller"]["request_id"].startswith("req-")
    by_method = {r["method"]: r for r in recs}
    assert by_method["approve"]["result"] == "error" and by_method["approve"]["pass_id"] == unknown
    assert [r["result"] for r in recs if r["method"] == "reap"] == ["ok", "refused", "ok"]
    assert any(r["pass_id"] == audit_pass for r in recs if r["method"] == "audit")
    assert server_errors == []


def test_approve_lets_a_blocked_plan_run_once(fleet, capsys, allowed):
    host = "rpc-guarded"
    with fleet.extra_agent(host, max_destroy_per_pass=1):
        dirs = [fleet.orphan_dir(host), fleet.orphan_dir(host)]
        code, rep, _ = ctl_json(fleet, capsys, "--host", host, "reap")
        assert code == ctl.EXIT_GUARD
        assert rep["hosts"][host]["summary"]["guards_tripped"] == ["mass_destruction"]
        blocked = rep["hosts"][host]["pass_id"]
        assert all(d.exists() for d in dirs)

        code, out, _ = run_ctl(fleet, capsys, "--host", host, "status")
        assert code == ctl.EXIT_OK and blocked in out and "mass_destruction" in out

        code, rep, _ = ctl_json(fleet, capsys, "--host", host, "approve", blocked)
        assert code == ctl.EXIT_OK and rep["hosts"][host]["approved"] == blocked

        code, rep, _ = ctl_json(fleet, capsys, "--host", host, "reap")
        assert code == ctl.EXIT_ACTIONS
        assert not any(d.exists() for d in dirs)
        code, rep, _ = ctl_json(fleet, capsys, "--host", host, "status")
        assert rep["hosts"][host]["blocked_passes"] == []


def test_tables_read_as_words_not_python(fleet, capsys, allowed):
    """reaper-ctl's tables (one host: the whole report; several: one row each) show
    counts and guard names as words (``actions: done 2``), never dict or list reprs;
    JSON keeps its structure."""
    host = "rpc-words"
    with fleet.extra_agent(host, max_destroy_per_pass=1):
        dirs = [fleet.orphan_dir(host), fleet.orphan_dir(host)]
        code, out, _ = run_ctl(fleet, capsys, "--host", host, "reap")
        assert code == ctl.EXIT_GUARD
        assert out.splitlines()[-1] == ("summary: 2 findings, actions: none, guards: "
                                        "mass_destruction, exit 5")
        blocked = re.search(r"pass (req-\S+)", out).group(1)
        code, out, _ = run_ctl(fleet, capsys, "--host", host, "status")
        assert code == ctl.EXIT_OK and "mass_destruction" in out and blocked in out
        assert "{'" not in out and "['" not in out, out
        assert run_ctl(fleet, capsys, "--host", host, "approve", blocked)[0] == ctl.EXIT_OK
        code, out, _ = run_ctl(fleet, capsys, "--host", host, "reap")
        assert code == ctl.EXIT_ACTIONS and not any(d.exists() for d in dirs)
        assert out.splitlines()[-1] == "summary: 2 findings, actions: done 2, guards: none, exit 4"
        code, rep, _ = ctl_json(fleet, capsys, "--host", host, "status")
        assert rep["hosts"][host]["last_pass"]["summary"]["actions"] == {"done": 2}
        code, out, _ = run_ctl(fleet, capsys, "--host", host, "--host", "rpc-03", "audit")
        assert "{'" not in out and "['" not in out, out


# --------------------------------------------------------------------------
# refusals and bad arguments
# --------------------------------------------------------------------------

def test_destructive_calls_are_refused_unless_allowed(fleet, capsys, server_errors):
    host = "rpc-02"
    assert fleet.conf.rpc.allow_remote_reap is False
    orphan = fleet.orphan_dir(host)
    blocked = f"req-{uuidlib.uuid4()}"
    for args in (["reap"], ["reclaim"], ["approve", blocked], ["resume"]):
        code, out, err = run_ctl(fleet, capsys, "--host", host, *args)
        assert code == ctl.EXIT_ERROR, args
        lines = err.strip().splitlines()
        assert lines == [f"reaper-ctl {args[0]}: {host}: error: refused: {args[0]} is "
                         f"destructive and [rpc] allow_remote_reap is false on {host}"
                         + (" (dry_run=true only plans)" if args[0] in ("reap", "reclaim")
                            else "")], lines
    assert orphan.exists()

    # Not destructive: audits, dry runs, status, pause.
    code, _, _ = run_ctl(fleet, capsys, "--host", host, "reap", "--dry-run")
    assert code == ctl.EXIT_FINDINGS and orphan.exists()
    code, _, _ = run_ctl(fleet, capsys, "--host", host, "pause")
    assert code == ctl.EXIT_OK
    try:
        code, _, err = run_ctl(fleet, capsys, "--host", host, "resume")
        assert code == ctl.EXIT_ERROR and "refused" in err
        assert fleet.agents[host].paused == "paused by an operator"
    finally:
        fleet.agents[host].resume()

    refused = [r for r in fleet.audit_records(host) if r["result"] == "refused"]
    assert [r["method"] for r in refused] == ["reap", "reclaim", "approve", "resume", "resume"]
    assert refused[2]["args"] == {"pass_id": blocked}
    assert server_errors == []

    # The same host acts once allowed: the option is read at call time.
    fleet.allow_remote_reap(True)
    try:
        code, _, _ = run_ctl(fleet, capsys, "--host", host, "reap")
        assert code == ctl.EXIT_ACTIONS and not orphan.exists()
    finally:
        fleet.allow_remote_reap(False)


@pytest.mark.parametrize("method,kwargs,message", [
    ("audit", {"instance_uuid": "nope"}, "instance_uuid 'nope' is not a UUID"),
    ("audit", {"instance_uuid": 42}, "instance_uuid must be a UUID string, not int"),
    ("reap", {"dry_run": "yes"}, "dry_run must be true, false or absent, not 'yes'"),
    ("reap", {"dry_run": True, "force": True}, "reap does not take force"),
    ("status", {"verbose": 1}, "status does not take verbose (it takes no arguments)"),
    ("approve", {}, "approve needs a pass_id"),
    ("approve", {"pass_id": "12345"}, "pass_id '12345' is not a pass id"),
    ("pause", {"reason": "x" * 300}, "reason is 300 characters long; at most 255"),
    ("pause", {"reason": ["a"]}, "reason must be a string, not list"),
])
def test_bad_arguments_get_a_clear_error_reply(fleet, server_errors, method, kwargs, message):
    host = "rpc-03"
    with rpc_client.ReaperClient(fleet.conf, timeout=10) as client:
        reply = client.call_raw(host, method, **kwargs)       # no local validation
        assert reply["error"]["code"] == rpc.BAD_ARGUMENT
        assert reply["error"]["host"] == host
        assert message in reply["error"]["message"]
        with pytest.raises(exception.BadArgument) as local:     # the client says the same
            client.call(host, method, **kwargs)
        assert str(local.value) == reply["error"]["message"]
        assert client.call(host, "status")["host"] == host     # the server goes on
    assert fleet.agents[host].paused is None
    assert server_errors == []
    rec = fleet.audit_records(host)[-2]
    assert rec["method"] == method and rec["result"] == "error" and message in rec["reason"]


def test_ctl_checks_arguments_before_calling(fleet, capsys):
    code, out, err = run_ctl(fleet, capsys, "--host", "rpc-04", "audit", "--instance", "nope")
    assert code == ctl.EXIT_USAGE and out == ""
    assert err.strip().splitlines() == [
        "reaper-ctl audit: instance_uuid 'nope' is not a UUID "
        "(expected e.g. 0e7b1b5c-2e1e-4b6f-9a53-5d3f1c1f2a10)"]
    assert fleet.audit_records("rpc-04") == []          # nothing was sent
    code, _, err = run_ctl(fleet, capsys, "--host", "rpc-04", "approve", "yesterday")
    assert code == ctl.EXIT_USAGE and "pass_id 'yesterday' is not a pass id" in err
    code, _, err = run_ctl(fleet, capsys, "--host", "rpc-04", "--all", "status")
    assert code == ctl.EXIT_USAGE and "do not go together" in err
    code, _, err = run_ctl(fleet, capsys, "status")
    assert code == ctl.EXIT_USAGE and "say which hosts" in err
    code, _, err = run_ctl(fleet, capsys, "--host", "rpc-04", "nuke")
    assert code == ctl.EXIT_USAGE and "invalid choice: 'nuke'" in err


# --------------------------------------------------------------------------
# --all: fan-out and the merged report
# --------------------------------------------------------------------------

def test_all_from_nova_services_merges_one_report(fleet, capsys, server_errors):
    code, rep, err = ctl_json(fleet, capsys, "--all", "audit")
    assert code == ctl.EXIT_UNREACHABLE
    assert sorted(rep["hosts"]) == HOSTS
    assert rep["unreachable"] == [DEAD]
    assert rep["unreachable_reasons"] == {DEAD: "no agent is listening for this host"}
    assert rep["errors"] == {}
    assert {r["host"] for r in rep["hosts"].values()} == set(HOSTS)
    assert all(r["mode"] == "audit" for r in rep["hosts"].values())
    assert f"{N_AGENTS}/{N_AGENTS + 1} answered, 1 unreachable" in err
    assert err.strip().splitlines()[-1] == (
        f"reaper-ctl audit: {DEAD}: unreachable: no agent is listening for this host")
    # One request id across the fleet: grep it in every host's audit log.
    for h in HOSTS:
        assert any(r["caller"]["request_id"] == rep["request_id"]
                   for r in fleet.audit_records(h))

    code, out, _ = run_ctl(fleet, capsys, "--all", "status")
    assert code == ctl.EXIT_UNREACHABLE
    lines = out.strip().splitlines()
    assert lines[0].split()[:4] == ["HOST", "STATE", "PAUSED", "RUNNING"]
    rows = {ln.split()[0]: ln.split()[1] for ln in lines[1:N_AGENTS + 2]}
    assert rows == {**{h: "ok" for h in HOSTS}, DEAD: "UNREACHABLE"}
    assert lines[-1].startswith(f"status: {N_AGENTS + 1} hosts, {N_AGENTS} ok, 0 error, "
                                f"1 unreachable ({DEAD})")
    assert server_errors == []


def test_hosts_file_with_a_stopped_agent(fleet, capsys, tmp_path):
    """An agent that stopped leaves its queue behind: its call times out instead of
    bouncing, and it is reported unreachable like a host that never ran one."""
    stopped = "rpc-stopped"
    with fleet.extra_agent(stopped):
        code, _, _ = run_ctl(fleet, capsys, "--host", stopped, "status")
        assert code == ctl.EXIT_OK
        fleet.stop(stopped)

    hosts = tmp_path / "hosts"
    hosts.write_text("# compute hosts\n" + "\n".join(HOSTS[:10]) + f"\n{stopped}\n\nrpc-never  # gone\n")
    code, rep, err = ctl_json(fleet, capsys, "--hosts-file", str(hosts), "--timeout", "2",
                              "status")
    assert code == ctl.EXIT_UNREACHABLE
    assert sorted(rep["hosts"]) == HOSTS[:10]
    assert sorted(rep["unreachable"]) == ["rpc-never", stopped]
    assert rep["unreachable_reasons"][stopped] == "no answer within 2s"
    assert rep["unreachable_reasons"]["rpc-never"] == "no agent is listening for this host"


def test_many_silent_hosts_cost_one_timeout(fleet, capsys, tmp_path):
    """More hosts that never answer (their queue is bound, no agent consumes it: a
    stopped or hung agent) than calls used to be in flight (100): each is reported
    by name after one timeout, all at once, and every agent's answer is merged.
    With 100 in flight the second hundred started only when the first timed out,
    and the report took a timeout per hundred silent hosts."""
    from kombu import Connection, Exchange, Queue

    silent = [f"rpc-silent-{i:03d}" for i in range(120)]
    exchange = Exchange(rpc.EXCHANGE, type="topic", durable=False, auto_delete=False)
    queues = [Queue(f"{rpc.TOPIC}.{h}", exchange, routing_key=f"{rpc.TOPIC}.{h}",
                    durable=False, queue_arguments={"x-expires": 120_000}) for h in silent]
    amqp_url = fleet.url.replace("rabbit://", "amqp://", 1)
    with Connection(amqp_url, connect_timeout=5) as conn:
        chan = conn.channel()
        for q in queues:
            q(chan).declare()
        try:
            hosts = tmp_path / "hosts"
            hosts.write_text("\n".join(silent + HOSTS) + "\n")
            code, rep, _ = ctl_json(fleet, capsys, "--hosts-file", str(hosts),
                                    "--timeout", "2", "audit")
        finally:
            for q in queues:
                q(chan).delete()
    assert code == ctl.EXIT_UNREACHABLE
    assert sorted(rep["hosts"]) == HOSTS
    assert sorted(rep["unreachable"]) == silent
    assert set(rep["unreachable_reasons"].values()) == {"no answer within 2s"}
    assert rep["elapsed"] < 2 * 2, "silent hosts waited for each other's timeouts"


def test_unknown_config_names_are_warned_after_the_report(fleet, capsys, monkeypatch,
                                                         tmp_path):
    """Knowing every name a shared reaper.conf may set imports all of the reaper's
    modules: reaper-ctl checks its config files after the report, and still warns."""
    from reaper import config

    events, warned = [], []
    fan_out, warn = rpc_client.ReaperClient.fan_out, config.warn_unknown_names

    def traced_fan_out(self, *args, **kwargs):
        results = fan_out(self, *args, **kwargs)
        events.append("report")
        return results

    def traced_warn(conf, log=None):
        warned.extend(warn(conf, log))
        events.append("warn")
        return warned

    monkeypatch.setattr(rpc_client.ReaperClient, "fan_out", traced_fan_out)
    monkeypatch.setattr(config, "warn_unknown_names", traced_warn)
    conf_file = tmp_path / "ctl.conf"
    conf_file.write_text(fleet.ctl_conf.read_text() + "[rpc]\nallow_remote_reep = true\n")
    capsys.readouterr()
    assert ctl.main(["--config-file", str(conf_file), "--host", HOSTS[0], "status"]) == 0
    assert events == ["report", "warn"]
    assert [line for line in warned if "allow_remote_reep" in line]


def test_console_script_in_a_subprocess(fleet):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    r = subprocess.run([sys.executable, "-m", "reaper.cmd.ctl", "--config-file",
                        str(fleet.ctl_conf), "--all", "--format", "json", "status"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == ctl.EXIT_UNREACHABLE, r.stderr
    rep = json.loads(r.stdout)
    assert sorted(rep["hosts"]) == HOSTS and rep["unreachable"] == [DEAD]
    assert "Traceback" not in r.stderr and "Eventlet" not in r.stderr


def test_broker_down_is_one_clear_line(fleet, capsys, tmp_path):
    """oslo.messaging would retry its reply connection forever: reaper-ctl checks the
    broker first and says what is wrong in one line."""
    with socket.socket() as s:          # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "ctl.conf"
    conf.write_text(f"[DEFAULT]\ntransport_url = rabbit://guest:guest@127.0.0.1:{port}/\n")
    capsys.readouterr()
    code = ctl.main(["--config-file", str(conf), "--host", "rpc-00", "--host", "rpc-01",
                     "status"])
    out, err = capsys.readouterr()
    assert code == ctl.EXIT_ERROR and out == ""
    assert err.strip().splitlines() == [
        f"reaper-ctl status: cannot reach the message broker (127.0.0.1:{port}: "
        f"ConnectionRefusedError: [Errno 111] Connection refused)"]


def test_help_lists_the_commands(capsys):
    assert ctl.main(["--help"]) == 0
    out = capsys.readouterr().out
    for m in rpc.METHODS:
        assert m in out
    assert "--hosts-file" in out and "Exit codes" in out


def test_server_stops_cleanly(fleet):
    before = set(threading.enumerate())
    host = "rpc-shortlived"
    with fleet.extra_agent(host):
        with rpc_client.ReaperClient(fleet.conf, timeout=10) as client:
            assert client.call(host, "status")["host"] == host
        fleet.stop(host)
    left = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert left == []
