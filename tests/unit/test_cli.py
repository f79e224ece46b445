"""reaper-manage end to end on libvirt's test driver and SQLite: config errors, formats,
exit codes. Runs the real entry point in a subprocess (oslo.config state is global)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid as uuidlib

import pytest
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
            f"[reaper]\naudit_log = {tmp_path / 'audit.log'}\n"
            # these tests are about the CLI: leave this machine's root namespace alone
            "resource_kinds = instance, iscsi, services\n"
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


# -- issue 12: messages and CLI ------------------------------------------------------

def _ctl(*args, cwd=None, env_extra=None):
    env = dict(os.environ, PYTHONPATH=os.getcwd(), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "reaper.cmd.ctl", *args], capture_output=True,
                          text=True, env=env, timeout=120, cwd=cwd)


def _own_lines(stderr: str, prog: str) -> list[str]:
    return [x for x in stderr.splitlines() if x.startswith(prog)]


def test_mysql_url_without_its_driver_says_to_write_mysql_pymysql(tmp_path):
    """mysql:// is SQLAlchemy's MySQLdb, which the reaper does not install: one line
    saying what to write instead, the password never echoed."""
    url = "mysql://nova:Zq8wPassw0rd@127.0.0.1/nova"
    conf = write_conf(tmp_path, f"[DEFAULT]\nstate_path = {tmp_path / 'state'}\n"
                                f"[database]\nconnection = {url}\n")
    r = manage("audit", conf=conf)
    assert r.returncode == 1, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("reaper-manage audit: error: [database] connection: mysql://")
    assert "write mysql+pymysql://" in line and "Zq8wPassw0rd" not in r.stderr
    r = _agent(conf=conf)
    assert r.returncode == 78 and "mysql+pymysql://" in r.stderr      # not restarted
    r = _agent("--once", conf=conf)
    assert r.returncode == 1 and "mysql+pymysql://" in r.stderr


def test_a_sqlite_nova_db_that_does_not_exist_is_an_error_never_created(tmp_path):
    missing = tmp_path / "nvoa.sqlite"                  # the typo
    conf = write_conf(tmp_path, f"[DEFAULT]\nstate_path = {tmp_path / 'state'}\n"
                                f"[database]\nconnection = sqlite:///{missing}\n")
    r = manage("audit", conf=conf)
    assert r.returncode == 1
    assert r.stderr.strip() == (f"reaper-manage audit: error: [database] connection: the "
                                f"SQLite file {missing} does not exist (a mistyped path?); "
                                f"the reaper reads Nova's DB and never creates it")
    assert _agent(conf=conf).returncode == 78
    r = _ctl("--config-file", str(conf), "--all", "status", env_extra={
        "OS_DEFAULT__TRANSPORT_URL": "rabbit://guest:guest@127.0.0.1:1/"})
    assert r.returncode == 1 and f"SQLite file {missing} does not exist" in r.stderr
    r = manage("audit", conf=write_conf(tmp_path, "[database]\nconnection = sqlite://\n"))
    assert r.returncode == 1 and "in-memory SQLite database is always empty" in r.stderr
    assert not missing.exists()


def test_a_sqlite_nova_db_removed_after_start_is_not_recreated(tmp_path):
    """The engine opens the file read-write only: a file gone since start-up is an
    error on the next connection, not a new empty Nova DB."""
    from reaper import novaurl
    from reaper.nova import db as nova_db
    path = tmp_path / "nova.sqlite"
    url = f"sqlite:///{path}"
    schema.create_all(sa.create_engine(url))
    novaurl.check(url)
    engine = nova_db.make_engine(url)
    novaurl.never_create(engine)
    with engine.connect() as c:
        assert c.execute(sa.text("SELECT count(*) FROM instances")).scalar() == 0
    engine.dispose()
    path.unlink()
    try:
        with engine.connect() as c:
            c.execute(sa.text("SELECT 1"))
        raise AssertionError("connected to a database file that does not exist")
    except sa.exc.OperationalError as e:
        assert "unable to open database file" in str(e)
    assert not path.exists()


@pytest.mark.parametrize("body, line", [
    pytest.param("[reaper]\nevacuated_action = nuke\n",
                 "[reaper] evacuated_action = nuke in {conf} is not valid: allowed: one of "
                 "ignore, log, shutdown, reap", id="choice"),
    pytest.param("[reaper]\nmax_destroy_fraction = 2.5\n",
                 "[reaper] max_destroy_fraction = 2.5 in {conf} is not valid: allowed: a "
                 "number from 0.0 to 1.0", id="range"),
    pytest.param("[reaper]\nmax_destroy_per_pass = lots\n",
                 "[reaper] max_destroy_per_pass = lots in {conf} is not valid: allowed: an "
                 "integer, 0 or more", id="integer"),
    pytest.param("[rpc]\nallow_remote_reap = maybe\n",
                 "[rpc] allow_remote_reap = maybe in {conf} is not valid: allowed: true or "
                 "false", id="boolean"),
    # a command-line option set in a file: oslo.config exits by itself on these
    pytest.param("[DEFAULT]\nuse_json = maybe\n",
                 "[DEFAULT] use_json = maybe in {conf} is not valid: allowed: true or false",
                 id="cli-option-in-a-file"),
])
def test_bad_values_name_the_option_value_file_and_what_is_allowed(tmp_path, body, line):
    conf = write_conf(tmp_path, body)
    r = manage("audit", conf=conf)
    assert r.returncode == 1
    assert "LocationInfo" not in r.stderr and "Traceback" not in r.stderr
    assert _own_lines(r.stderr, "reaper-manage") == [
        "reaper-manage: configuration error: " + line.format(conf=conf)]


def test_a_bad_value_of_a_reaper_ctl_option_in_its_file(tmp_path):
    conf = write_conf(tmp_path, "[DEFAULT]\ntransport_url = rabbit://guest@127.0.0.1:1/\n"
                                "timeout = soon\n")
    r = _ctl("--config-file", str(conf), "--host", "h", "status")
    assert r.returncode == 1
    assert _own_lines(r.stderr, "reaper-ctl") == [
        f"reaper-ctl: configuration error: [DEFAULT] timeout = soon in {conf} is not valid: "
        f"allowed: a number, 0.1 or more"]


def test_unknown_option_names_are_warned_at_start_up(tmp_path):
    """Misspelled names were silently ignored (and their defaults used): one warning
    per unknown option or section, with the likely intended name; the pass runs."""
    url, uri, _ = _host(tmp_path)
    conf = write_conf(tmp_path, base_conf(tmp_path, url, uri,
                                          "max_destroy_per_pas = 1\n")
                      + "[databse]\nconnection = x\n[DEFAULT]\nhots = 1\n"
                      "[oslo_messaging_rabbit]\nrabbit_ha_queues = true\n")
    r = manage("audit", conf=conf)
    assert r.returncode == 3, r.stderr
    warned = [x.split(" [-] ", 1)[1] for x in r.stderr.splitlines() if " WARNING " in x]
    assert warned == [        # in the file's order (oslo.config merges the two [DEFAULT])
        f"{conf}: unknown option hots in [DEFAULT]: ignored (did you mean host?)",
        f"{conf}: unknown option max_destroy_per_pas in [reaper]: ignored "
        f"(did you mean max_destroy_per_pass?)",
        f"{conf}: unknown section [databse]: its 1 option(s) are ignored "
        f"(did you mean database?)"]
    r = _agent("--once", conf=conf)
    assert "unknown option max_destroy_per_pas in [reaper]" in r.stderr
    r = _ctl("--config-file", str(conf), "--host", "h", "status")
    assert "unknown section [databse]" in r.stderr


@pytest.mark.parametrize("module", ["reaper.cmd.manage", "reaper.cmd.agent",
                                    "reaper.cmd.ctl"])
def test_version(module):
    from importlib import metadata
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    r = subprocess.run([sys.executable, "-m", module, "--version"], capture_output=True,
                       text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == metadata.version("reaper")


def test_human_output_has_no_python_reprs(tmp_path):
    url, uri, _ = _host(tmp_path)
    conf = write_conf(tmp_path, base_conf(tmp_path, url, uri, "max_destroy_per_pass = 0\n"))
    r = manage("reap", conf=conf)
    assert r.returncode == 5
    assert r.stdout.splitlines()[-1] == ("summary: 2 findings, actions: none, guards: "
                                         "mass_destruction, exit 5")
    conf = write_conf(tmp_path, base_conf(tmp_path, url, uri))
    r = manage("reap", conf=conf)
    assert r.returncode == 4
    assert r.stdout.splitlines()[-1] == "summary: 2 findings, actions: done 2, guards: none, exit 4"
    for text in (r.stdout, manage("demo").stdout):
        assert "{'" not in text and "['" not in text, text
    assert json.loads(manage("audit", "--format", "json", conf=conf).stdout)["summary"][
        "actions"] == {}


def _no_config_env(tmp_path):
    """No config file anywhere oslo.config looks for one (~/.reaper, ~/, /etc/reaper)."""
    if any(os.path.exists(p) for p in ("/etc/reaper/reaper.conf", "/etc/reaper/reaper-ctl.conf",
                                       "/etc/reaper.conf", "/etc/reaper-ctl.conf")):
        pytest.skip("this machine has a reaper config file in /etc")
    return {"HOME": str(tmp_path)}


def test_ctl_without_a_transport_url_says_so_and_exits_2(tmp_path):
    env = _no_config_env(tmp_path)
    r = _ctl("--host", "h", "status", cwd=tmp_path, env_extra=env)
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("reaper-ctl status: no [DEFAULT] transport_url: no config file "
                           "was found")
    assert "guest@localhost" in line
    conf = write_conf(tmp_path, "[DEFAULT]\nhost = controller-1\n")
    r = _ctl("--config-file", str(conf), "--host", "h", "status", cwd=tmp_path, env_extra=env)
    assert r.returncode == 2
    assert r.stderr.strip().startswith(f"reaper-ctl status: no [DEFAULT] transport_url: the "
                                       f"config files ({conf}) do not set it")
    # set explicitly, guest@localhost is what the operator asked for: a (refused) call
    conf.write_text("[DEFAULT]\ntransport_url = rabbit://guest:guest@127.0.0.1:1/\n")
    r = _ctl("--config-file", str(conf), "--host", "h", "status", cwd=tmp_path, env_extra=env)
    assert r.returncode == 1 and "cannot reach the message broker" in r.stderr


def test_audit_of_an_instance_that_is_not_a_uuid_runs_nothing(tmp_path):
    url, uri, _ = _host(tmp_path)
    conf = write_conf(tmp_path, base_conf(tmp_path, url, uri))
    r = manage("audit", "--instance", "nope", conf=conf)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        "reaper-manage audit: --instance 'nope' is not an instance uuid (expected e.g. "
        "0e7b1b5c-2e1e-4b6f-9a53-5d3f1c1f2a10)"]
    assert not (tmp_path / "audit.log").exists() and not (tmp_path / "state").exists()
    u = json.loads(manage("audit", "--format", "json", conf=conf).stdout)["findings"][0][
        "instance_uuid"]
    r = manage("audit", "--instance", u.upper(), "--format", "json", conf=conf)
    assert r.returncode == 3 and {f["instance_uuid"] for f in json.loads(r.stdout)[
        "findings"]} == {u}


def test_demo_keep_writes_a_config_to_go_on_with(tmp_path):
    """--keep keeps the demo host and a reaper.conf for it; the printed command audits
    it, and finds what the demo's last pass left."""
    import shutil
    r = manage("demo", "--keep", "--format", "json")
    assert r.returncode == 0, r.stderr[-2000:]
    cmd = r.stderr.strip().splitlines()[-1].split()
    assert cmd[:2] == ["reaper-manage", "--config-file"] and cmd[3:] == ["audit"]
    kept = os.path.dirname(cmd[2])
    try:
        assert kept.startswith(tempfile.gettempdir()) and "reaper-demo-" in kept
        last = json.loads(r.stdout)["passes"][-1]
        r = manage("audit", "--format", "json", conf=cmd[2])
        assert r.returncode == 3, r.stderr
        rep = json.loads(r.stdout)
        assert rep["host"] == demo.HOST and rep["guards"] == []

        def domains(report):
            return sorted((f["resource"], f["classification"]) for f in report["findings"]
                          if f["kind"] == "domain")
        assert domains(rep) == domains(last)
    finally:
        shutil.rmtree(kept, ignore_errors=True)
