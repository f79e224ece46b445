"""The nova-log watcher end to end: real nova-compute log lines appended to a file
that is then rotated, a real Reaper (libvirt's test driver, the Nova DB on SQLite
and on MariaDB), and `reaper-manage watch-nova-log` as a process stopped by SIGTERM.

The host: an instance whose detach failed half way, live here, whose volume Nova still lists (its
block_device_mapping is live) but the guest released after Nova gave up the detach:
the volume is gone from the domain XML (R13, attachment drift); an instance whose
delete failed while its domain kept running (R5); and an orphan directory nobody
mentions, which a targeted audit must leave out.
"""
from __future__ import annotations

import datetime
import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from reaper import audit as audit_mod
from reaper import demo, novalog, reconcile
from reaper import policy as policy_mod
from reaper import state as state_mod
from reaper.kinds.instance import libvirt as libvirt_inv
from tests.fixtures import novadb

pytestmark = pytest.mark.functional

FIXTURE = pathlib.Path(__file__).parent.parent / "fixtures" / "nova-compute.log"
HOST = "watch-compute-1"
DETACHED = "4bfefe2b-3611-4c65-a293-657cf6eaf271"            # section 1: failed detach
DETACHED_VOLUME = "0d6c7c6b-52a4-4c4c-9d60-2b4c6c1f6a52"
DELETED = "5b0f8a2e-1c3d-4e5f-a6b7-c8d9e0f1a2b3"         # section 3: failed delete
ORPHAN = "0badf00d-0000-4000-8000-00000000dead"


def sections() -> dict[int, list[str]]:
    """The fixture's numbered sections, comment lines dropped."""
    out: dict[int, list[str]] = {}
    current = 0
    for line in FIXTURE.read_text().splitlines():
        m = re.match(r"# (\d+)\. ", line)
        if m:
            current = int(m[1])
        elif not line.startswith("#"):
            out.setdefault(current, []).append(line)
    return out


def build_host(root: pathlib.Path, engine) -> str:
    """Rows, directories and node.xml of the host; returns the libvirt URI."""
    (root / "instances").mkdir(parents=True)
    novadb.add_compute_node(engine, HOST)
    detached = novadb.add_instance(engine, DETACHED, host=HOST)
    novadb.add_bdm(engine, DETACHED, volume_id=DETACHED_VOLUME)
    old = novadb.utcnow() - datetime.timedelta(days=2)
    deleted = novadb.add_instance(engine, DELETED, host=HOST, deleted=True, deleted_at=old)
    novadb.add_instance(engine, ORPHAN, host=HOST, deleted=True, deleted_at=old)
    (root / "instances" / ORPHAN).mkdir()
    (root / "instances" / ORPHAN / "disk").write_bytes(b"\0" * 512)
    node = root / "node.xml"
    node.write_text(demo.node_xml([
        demo.domain_xml(DETACHED, f"instance-{detached['id']:08x}"),        # no volume left in it
        demo.domain_xml(DELETED, f"instance-{deleted['id']:08x}")]))
    return f"test://{node}"


def make_reaper(root: pathlib.Path, engine, uri: str) -> reconcile.Reaper:
    pol = policy_mod.Policy(
        host=HOST, hypervisor_hostname=HOST, instances_path=str(root / "instances"),
        actions=policy_mod.default_actions(), reclaim_instance_interval=0,
        running_deleted_timeout=600, grace_observations=1, grace_seconds=0,
        max_destroy_per_pass=10, max_destroy_fraction=1.0, instances_path_shared="false")
    conn = libvirt_inv.open_connection(uri)
    return reconcile.Reaper(policy=pol, libvirt_uri=uri, engine=engine,
                            state=state_mod.StateDB(str(root / "state")),
                            audit=audit_mod.AuditLog(str(root / "audit.log"), HOST),
                            connect=lambda: conn)


def read_audit(path) -> list[dict]:
    try:
        return [json.loads(x) for x in open(path)]
    except FileNotFoundError:
        return []


def wait_for_trigger(path, uuid: str, deadline: float = 60.0) -> tuple[dict, list[dict]]:
    """Wait (a liveness bound, not a speed check) for the trigger record of ``uuid``."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        recs = read_audit(path)
        for r in recs:
            if r["event"] == novalog.TRIGGER_EVENT and r["instance_uuid"] == uuid:
                return r, recs
        time.sleep(0.05)
    pytest.fail(f"no {novalog.TRIGGER_EVENT} record for {uuid} within {deadline}s")


def append(path, lines):
    with open(path, "a") as f:
        for line in lines:
            f.write(line + "\n")


def findings_of(recs, pass_id):
    return [(r["instance_uuid"], r["classification"]) for r in recs
            if r["event"] == "finding" and r["pass_id"] == pass_id]


def test_watcher_follows_the_log_through_rotation(nova_db, tmp_path):
    uri = build_host(tmp_path, nova_db.engine)
    reaper = make_reaper(tmp_path, nova_db.engine, uri)
    log = tmp_path / "nova" / "nova-compute.log"
    log.parent.mkdir()
    append(log, sections()[8])              # history before the watcher starts: skipped
    stop = threading.Event()
    result = {}
    t = threading.Thread(target=lambda: result.update(stats=novalog.watch(
        reaper, str(log), poll_interval=0.05, debounce=300, stop=stop)), daemon=True)
    t.start()
    try:
        time.sleep(0.2)                     # let it reach the end of the file first
        append(log, sections()[1])          # the failed detach
        trig, recs = wait_for_trigger(tmp_path / "audit.log", DETACHED)
        assert trig["result"] == "findings" and trig["evidence"]["operation"] == "detach"
        assert trig["evidence"]["facts"]["volume_id"] == DETACHED_VOLUME
        assert findings_of(recs, trig["pass_id"]) == [(DETACHED, "attachment_drift")]
        drift = next(r for r in recs if r["event"] == "finding"
                     and r["pass_id"] == trig["pass_id"])
        assert drift["evidence"] == {"volume_id": DETACHED_VOLUME, "in_domain_xml": False,
                                     "live_bdm": True}
        # logrotate renames the log and nova-compute starts a new one
        os.rename(log, str(log) + ".1")
        append(log, sections()[3])          # the failed delete
        trig, recs = wait_for_trigger(tmp_path / "audit.log", DELETED)
        assert trig["result"] == "findings" and trig["evidence"]["operation"] == "delete"
        assert findings_of(recs, trig["pass_id"]) == [(DELETED, "running_deleted")]
    finally:
        stop.set()
        t.join(timeout=60)
    assert not t.is_alive()
    stats = result["stats"]
    assert stats.triggers == 2 and stats.rotations == 1 and stats.audits_failed == 0
    recs = read_audit(tmp_path / "audit.log")
    assert [r["instance_uuid"] for r in recs if r["event"] == novalog.TRIGGER_EVENT] \
        == [DETACHED, DELETED]
    # targeted and read-only: the orphan directory was never a finding, nothing acted
    assert ORPHAN not in {r["instance_uuid"] for r in recs}
    assert not [r for r in recs if r["event"] == "action"]
    assert (tmp_path / "instances" / ORPHAN).is_dir()
    reaper.close()


def _conf(tmp_path, db_url, uri):
    p = tmp_path / "reaper.conf"
    p.write_text(f"[DEFAULT]\nhost = {HOST}\nhypervisor_hostname = {HOST}\n"
                 f"instances_path = {tmp_path / 'instances'}\n"
                 f"state_path = {tmp_path / 'state'}\n[database]\nconnection = {db_url}\n"
                 f"[libvirt]\nconnection_uri = {uri}\n[network]\nenabled = false\n"
                 f"[reaper]\naudit_log = {tmp_path / 'audit.log'}\n"
                 "grace_observations = 1\ngrace_seconds = 0\ninstances_path_shared = false\n")
    return p


def _manage(conf, *args, **kw):
    cmd = [sys.executable, "-m", "reaper.cmd.manage", "--config-file", str(conf),
           "watch-nova-log", *args]
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, **kw)


def test_cli_watcher_stops_cleanly_on_sigterm(tmp_path):
    import sqlalchemy as sa

    from reaper.nova import schema
    url = f"sqlite:///{tmp_path / 'nova.sqlite'}"
    engine = sa.create_engine(url)
    schema.create_all(engine)
    conf = _conf(tmp_path, url, build_host(tmp_path, engine))
    log = tmp_path / "nova-compute.log"
    log.write_text("")
    proc = _manage(conf, str(log), "--poll-interval", "0.1")
    try:
        # the process may still be starting: what it has not seen yet it reads when it
        # opens the file at its end, so write until the trigger shows
        end = time.monotonic() + 60
        while time.monotonic() < end and proc.poll() is None:
            append(log, sections()[1])
            if any(r["event"] == novalog.TRIGGER_EVENT for r in read_audit(tmp_path / "audit.log")):
                break
            time.sleep(0.5)
        trig, recs = wait_for_trigger(tmp_path / "audit.log", DETACHED)
        assert findings_of(recs, trig["pass_id"]) == [(DETACHED, "attachment_drift")]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert f"detach {DETACHED}: findings (1 findings, pass {trig['pass_id']})" in out
    assert f"watched {log}:" in out and "Traceback" not in err


def test_cli_watcher_audits_a_past_log(tmp_path):
    """--from-start --exit-at-eof: audit what a log already holds, then exit."""
    import sqlalchemy as sa

    from reaper.nova import schema
    url = f"sqlite:///{tmp_path / 'nova.sqlite'}"
    engine = sa.create_engine(url)
    schema.create_all(engine)
    conf = _conf(tmp_path, url, build_host(tmp_path, engine))
    log = tmp_path / "nova-compute.log"
    log.write_text("\n".join(x for s in sections().values() for x in s) + "\n")
    proc = _manage(conf, str(log), "--from-start", "--exit-at-eof")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    trig = [r for r in read_audit(tmp_path / "audit.log") if r["event"] == novalog.TRIGGER_EVENT]
    assert len(trig) == 9
    assert {r["instance_uuid"]: r["result"] for r in trig if r["result"] != "clean"} == {
        DETACHED: "findings", DELETED: "findings"}
    assert "9 audits (3 debounced, 0 failed)" in out
    # the story of the half-detached instance: its finding, then the trigger that found it
    r = subprocess.run([sys.executable, "-m", "reaper.cmd.manage", "--config-file", str(conf),
                        "audit-log", "story", DETACHED], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=os.getcwd()), timeout=120)
    assert r.returncode == 0, r.stderr
    # the finding, the targeted pass's summary (it names the instance) and the trigger
    assert f"{DETACHED}: 3 records in 1 passes" in r.stdout
    assert "attachment_drift/log -> audit_only" in r.stdout or \
        "attachment_drift/log -> logged" in r.stdout
    assert "nova_log_trigger  instance" in r.stdout and "operation: detach" in r.stdout
    assert "nova-compute logged a failed detach: Failed to detach volume" in r.stdout
    assert "exception: DeviceDetachFailed: Device detach failed for vdb" in r.stdout
    proc = _manage(conf, str(tmp_path / "missing.log"), "--exit-at-eof")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "no such file" in err


def test_cli_watcher_restarted_sees_what_was_logged_while_it_was_down(tmp_path):
    """The service is stopped (SIGTERM), nova-compute logs a failed detach and the log
    is rotated, the service starts again: the failure is audited (the position is kept
    in state_path), and what was audited before is not audited again."""
    import sqlalchemy as sa

    from reaper.nova import schema
    url = f"sqlite:///{tmp_path / 'nova.sqlite'}"
    engine = sa.create_engine(url)
    schema.create_all(engine)
    conf = _conf(tmp_path, url, build_host(tmp_path, engine))
    log = tmp_path / "nova-compute.log"
    append(log, sections()[8])
    proc = _manage(conf, str(log), "--poll-interval", "0.1")
    try:
        end = time.monotonic() + 60       # running and caught up: its position is saved
        while time.monotonic() < end and not list((tmp_path / "state").glob("nova-log-pos*")):
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert "0 audits" in out
    append(log, sections()[1])                  # a failed detach, while it is down
    os.rename(log, str(log) + ".1")
    append(log, sections()[3])                  # the failed delete, in the new file
    proc = _manage(conf, str(log), "--exit-at-eof")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-2000:]
    assert [r["instance_uuid"] for r in read_audit(tmp_path / "audit.log")
            if r["event"] == novalog.TRIGGER_EVENT] == [DETACHED, DELETED]
    proc = _manage(conf, str(log), "--exit-at-eof")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "0 audits" in out, err[-2000:]
