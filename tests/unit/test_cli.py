"""reaper-manage end to end on libvirt's test driver and SQLite: config errors, formats,
exit codes. Runs the real entry point in a subprocess (oslo.config state is global)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid as uuidlib

import sqlalchemy as sa

from reaper import demo
from reaper.nova import schema
from tests.fixtures import novadb
from tests.fixtures.reclaim import libvirt_node_name

HOST = "cli-host"


def manage(*args, conf=None):
    cmd = [sys.executable, "-m", "reaper.cmd.manage"]
    if conf:
        cmd += ["--config-file", str(conf)]
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.run(cmd + list(args), capture_output=True, text=True, env=env,
                          timeout=120)


def write_conf(tmp_path, body: str):
    p = tmp_path / "reaper.conf"
    p.write_text(body)
    return p


def base_conf(tmp_path, db_url, uri, extra=""):
    return (f"[DEFAULT]\nhost = {HOST}\ninstances_path = {tmp_path / 'instances'}\n"
            f"state_path = {tmp_path / 'state'}\n[database]\nconnection = {db_url}\n"
            f"[libvirt]\nconnection_uri = {uri}\n"
            # these tests are about the CLI: leave this machine's root namespace alone
            "[network]\nenabled = false\n"
            f"[reaper]\naudit_log = {tmp_path / 'audit.log'}\n"
            "grace_observations = 1\ngrace_seconds = 0\ninstances_path_shared = false\n"
            "max_destroy_fraction = 1.0\n" + extra)


def test_malformed_config_is_a_clear_error(tmp_path):
    r = manage("audit", conf=write_conf(tmp_path, "this is not ini\n[DEFAULT\n"))
    assert r.returncode == 1
    assert "configuration error" in r.stderr and "Traceback" not in r.stderr


def test_invalid_option_value_is_a_clear_error(tmp_path):
    conf = write_conf(tmp_path, "[reaper]\nevacuated_action = nuke\n")
    r = manage("audit", conf=conf)
    assert r.returncode == 1 and "evacuated_action" in r.stderr and "nuke" in r.stderr
    conf = write_conf(tmp_path, "[reaper]\nmax_destroy_fraction = 2.5\n")
    r = manage("audit", conf=conf)
    assert r.returncode == 1 and "max_destroy_fraction" in r.stderr
    # a dangerous value the product refuses to offer
    conf = write_conf(tmp_path, "[reaper]\nforeign_domain_action = reap\n")
    r = manage("audit", conf=conf)
    assert r.returncode == 1 and "foreign_domain_action" in r.stderr


def test_missing_database_connection(tmp_path):
    conf = write_conf(tmp_path, f"[DEFAULT]\nstate_path = {tmp_path}\n[reaper]\naudit_log =\n")
    r = manage("audit", conf=conf)
    assert r.returncode == 1 and "[database] connection is not set" in r.stderr


def test_help_lists_commands():
    r = manage("--help")
    assert r.returncode == 0
    for cmd in ("audit", "reap", "reclaim", "approve", "demo"):
        assert cmd in r.stdout


def _host(tmp_path):
    (tmp_path / "instances").mkdir()
    url = f"sqlite:///{tmp_path / 'nova.sqlite'}"
    eng = sa.create_engine(url)
    schema.create_all(eng)
    # nova-compute's libvirt driver names the node after libvirt's getHostname()
    novadb.add_compute_node(eng, HOST, hypervisor_hostname=libvirt_node_name())
    u = str(uuidlib.uuid4())
    novadb.add_instance(eng, u, host=HOST, deleted=True,
                        deleted_at=novadb.utcnow().replace(year=2020))
    orphan = tmp_path / "instances" / str(uuidlib.uuid4())
    orphan.mkdir()
    (orphan / "disk").write_bytes(b"abc")
    novadb.add_instance(eng, orphan.name, host=HOST, deleted=True)
    node = tmp_path / "node.xml"
    node.write_text(demo.node_xml([demo.domain_xml(u, "instance-00000001")]))
    return url, f"test://{node}", u


def test_audit_and_reap_json_and_exit_codes(tmp_path):
    url, uri, u = _host(tmp_path)
    conf = write_conf(tmp_path, base_conf(tmp_path, url, uri))
    r = manage("audit", "--format", "json", conf=conf)
    assert r.returncode == 3, r.stderr
    rep = json.loads(r.stdout)
    assert rep["host"] == HOST and rep["pass_id"].startswith("req-")
    assert [(f["classification"], f["result"]) for f in rep["findings"]] == [
        ("running_deleted", "audit_only"), ("orphan_dir", "audit_only")]
    assert rep["summary"]["exit_code"] == 3 and rep["guards"] == []
    r = manage("reap", "--dry-run", conf=conf)
    assert r.returncode == 3 and "dry_run" in r.stdout and "(dry run)" in r.stdout
    # the test driver's state lives per connection, so a reap acts on a fresh copy
    r = manage("reap", "--format", "json", conf=conf)
    assert r.returncode == 4, r.stderr
    actions = json.loads(r.stdout)["actions"]
    assert [(a["instance_uuid"], a["result"]) for a in actions][0] == (u, "done")
    assert [a["classification"] for a in actions] == ["running_deleted", "orphan_dir"]
    records = [json.loads(x) for x in (tmp_path / "audit.log").read_text().splitlines()]
    assert {x["event"] for x in records} >= {"finding", "action", "pass_summary"}
    orphan = [x for x in records if x["classification"] == "orphan_dir"]
    assert orphan and orphan[0]["evidence"]["dir"]["size_bytes"] == 3
    for x in records:
        assert {"ts", "host", "pass_id", "event", "kind", "resource", "instance_uuid",
                "classification", "action", "result", "reason", "evidence"} <= set(x)


def test_guard_exit_code_and_approve(tmp_path):
    url, uri, _ = _host(tmp_path)
    conf = write_conf(tmp_path, base_conf(tmp_path, url, uri, "max_destroy_per_pass = 0\n"))
    r = manage("reap", "--format", "json", conf=conf)
    assert r.returncode == 5
    pass_id = json.loads(r.stdout)["pass_id"]
    assert json.loads(r.stdout)["guards"][0]["guard"] == "mass_destruction"
    assert manage("approve", "req-nope", conf=conf).returncode == 1
    r = manage("approve", pass_id, conf=conf)
    assert r.returncode == 0 and pass_id in r.stdout
    r = manage("reap", "--format", "json", conf=conf)
    assert r.returncode == 4, r.stdout


def test_unreachable_libvirt_is_an_error_that_destroys_nothing(tmp_path):
    url, _, _ = _host(tmp_path)
    conf = write_conf(tmp_path, base_conf(tmp_path, url, "qemu+unix:///system?socket=/nonexistent"))
    (tmp_path / "instances" / str(uuidlib.uuid4())).mkdir()
    r = manage("reap", "--format", "json", conf=conf)
    rep = json.loads(r.stdout)
    assert r.returncode == 1 and rep["actions"] == []
    assert any(g["guard"] == "collector_failed" for g in rep["guards"])


def test_demo_runs(tmp_path):
    r = manage("demo")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "evacuated" in r.stdout and "reclaimable" in r.stdout
    assert "domains left:" in r.stdout and "build-server" in r.stdout


def test_reap_and_reclaim_on_a_paused_host_exit_5_with_one_line(tmp_path):
    from reaper import reconcile, state
    url, uri, _ = _host(tmp_path)
    conf = write_conf(tmp_path, base_conf(tmp_path, url, uri))
    st = state.StateDB(str(tmp_path / "state"))
    st.set_flag("paused", "kernel upgrade", reconcile.utcnow())     # as RPC's pause
    st.close()
    orphans = os.listdir(tmp_path / "instances")
    for cmd in ("reap", "reclaim"):
        r = manage(cmd, conf=conf)
        assert r.returncode == 5, r.stdout + r.stderr
        (line,) = [x for x in r.stderr.splitlines() if x.startswith("reaper-manage")]
        assert line.startswith(f"reaper-manage {cmd}: host {HOST} is paused (kernel upgrade)")
        assert line.endswith("only audits and dry runs run until it is resumed")
        assert "GUARD paused" in r.stdout
    assert os.listdir(tmp_path / "instances") == orphans
    r = manage("audit", conf=conf)
    assert r.returncode == 3 and "PAUSED (kernel upgrade)" in r.stdout


def test_pass_help_documents_the_exit_codes_busy_included():
    r = manage("reap", "--help")
    assert r.returncode == 0
    assert "75  busy (EX_TEMPFAIL)" in r.stdout and "--lock-timeout" in r.stdout


def _agent(*args, conf):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.run([sys.executable, "-m", "reaper.cmd.agent", "--config-file",
                           str(conf), *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_a_damaged_state_db_stops_the_agent_without_a_restart_loop(tmp_path):
    """Damaged: no restart repairs it, so the service exits 78 (the unit does not
    restart on it) and --once exits 1; nothing is deleted either way."""
    url, uri, _ = _host(tmp_path)
    conf = write_conf(tmp_path, base_conf(tmp_path, url, uri) + "[rpc]\nenabled = false\n")
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "reaper-state.sqlite").write_bytes(os.urandom(8192))
    dirs = sorted(os.listdir(tmp_path / "instances"))
    r = _agent(conf=conf)
    assert r.returncode == 78, r.stderr
    assert "damaged" in r.stderr and "Traceback" not in r.stderr
    r = _agent("--once", conf=conf)
    assert r.returncode == 1 and "damaged" in r.stderr
    assert sorted(os.listdir(tmp_path / "instances")) == dirs
