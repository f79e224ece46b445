"""Whole reaper passes over iSCSI volumes: real reaper-manage, real os-brick, real
libvirtd domains, a real Nova DB (SQLite and MariaDB), and a SIMULATED initiator.

Why simulated: test hosts (containers, CI runners) cannot be counted on to load the
``iscsi_tcp`` kernel module or reach an iSCSI target, so no initiator session can log
in. tests/iscsi_sim stands in for the kernel + iscsid + iscsiadm only: an
``iscsiadm`` that prints open-iscsi 2.1.8's formats and exit codes, a sysfs and
/dev/disk tree on disk, and ``tee``/``blockdev`` shims for the kernel's side of
sysfs writes. os-brick is pointed at it without patching anything: the simulator's
``bin/`` is first in PATH, and each pass runs in a private mount namespace where
/sys, /dev and /etc/iscsi are the simulated host's (os-brick's paths are fixed).
Everything above that boundary (reaper, os-brick's ISCSIConnector and LinuxSCSI, its
external lock, libvirt, the DB) is the real thing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid as uuidlib

import pytest

from tests import iscsi_sim
from tests.fixtures import novadb

pytestmark = pytest.mark.functional

OTHER = "ft-iscsi-other"
P1, P2 = "192.0.2.10:3260", "192.0.2.11:3260"
SECRET = "chap-s3cret"          # novadb.iscsi_connection_info's CHAP password
SYSFS_SECRET = "sysfs-chap-pw"  # what the kernel shows in iscsi_session/*/password


def iqn(tag: str) -> str:
    return f"iqn.2010-10.org.openstack:volume-{tag}"


@pytest.fixture
def host():
    return f"ft-iscsi-{uuidlib.uuid4().hex[:8]}"


@pytest.fixture
def sim(tmp_path):
    iscsi_sim.require_mount_namespaces()
    return iscsi_sim.SimHost(str(tmp_path / "iscsi")).init()


def write_conf(tmp_path, db_url: str, host: str, **reaper_opts) -> str:
    opts = dict(grace_observations=1, grace_seconds=0, instances_path_shared="false",
                max_destroy_fraction=1.0, max_destroy_per_pass=20,
                leaked_iscsi_action="reap", running_deleted_timeout=0)
    opts.update(reaper_opts)
    (tmp_path / "instances").mkdir(exist_ok=True)
    body = (f"[DEFAULT]\nhost = {host}\nhypervisor_hostname = {host}\n"
            f"instances_path = {tmp_path / 'instances'}\n"
            f"state_path = {tmp_path / 'state'}\n"
            f"[database]\nconnection = {db_url}\n"
            f"[libvirt]\nconnection_uri = qemu:///system\n"
            f"[reaper]\naudit_log = {tmp_path / 'audit.log'}\n"
            + "".join(f"{k} = {v}\n" for k, v in opts.items())
            + f"[os_brick]\nlock_path = {tmp_path / 'locks'}\n")
    p = tmp_path / "reaper.conf"
    p.write_text(body)
    return str(p)


def reap(sim, conf: str, mode: str = "reap") -> tuple[dict, subprocess.CompletedProcess]:
    """One ``reaper-manage`` pass inside the simulated host's mount namespace."""
    cmd = iscsi_sim.ns_argv(sim.root, [sys.executable, "-m", "reaper.cmd.manage",
                                       "--config-file", conf, mode, "--format", "json"])
    env = iscsi_sim.env(sim.root, dict(os.environ, PYTHONPATH=os.getcwd()))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.stdout.strip(), f"no report (rc {r.returncode}):\n{r.stderr[-4000:]}"
    return json.loads(r.stdout), r


def audit(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "audit.log").read_text().splitlines()]


def sessions(sim) -> set[tuple[str, str]]:
    return {(f"{s['address']}:{s['port']}", s["iqn"]) for s in sim.sessions()}


def nodes(sim) -> set[tuple[str, str]]:
    return {(f"{r['node.conn[0].address']}:{r['node.conn[0].port']}", r["node.name"])
            for _, r in sim.node_records()}


def logouts(sim) -> list[str]:
    """Targets actually logged out of (os-brick also asks for node-only targets: rc 21)."""
    return [c["argv"][c["argv"].index("-T") + 1] for c in sim.commands("iscsiadm")
            if "--logout" in c["argv"] and c["rc"] == 0]


def assert_no_secrets(tmp_path, run: subprocess.CompletedProcess) -> None:
    text = (tmp_path / "audit.log").read_text() + run.stdout + run.stderr
    assert SECRET not in text and SYSFS_SECRET not in text


def test_leaks_are_cleaned_and_used_sessions_kept(tmp_path, nova_db, host, sim,
                                                  kvm_domain_factory):
    eng = nova_db.engine
    novadb.add_compute_node(eng, host)
    live = novadb.add_instance(eng, host=host)["uuid"]
    vol_a, vol_b, vol_mp = (novadb.new_uuid() for _ in range(3))
    # A: one LUN, attached to the live instance (BDM + domain XML): kept.
    sim.add_target(iqn("a"), [P1], [1])
    sim.connect(P1, iqn("a"), username="u", password=SYSFS_SECRET)
    novadb.add_bdm(eng, live, vol_a, connection_info=novadb.iscsi_connection_info(
        vol_a, target_portal=P1, target_iqn=iqn("a"), target_lun=1))
    # B: two LUNs; LUN 1 attached to the live instance, LUN 0 left by a detach whose
    # BDM is gone: only LUN 0's device goes, the session stays.
    sim.add_target(iqn("b"), [P1], [0, 1])
    sid_b = sim.connect(P1, iqn("b"))
    novadb.add_bdm(eng, live, vol_b, device_name="/dev/vdc",
                   connection_info=novadb.iscsi_connection_info(
                       vol_b, target_portal=P1, target_iqn=iqn("b"), target_lun=1))
    novadb.add_bdm(eng, live, novadb.new_uuid(), device_name="/dev/vdd", deleted=True,
                   connection_info=novadb.iscsi_connection_info(
                       "x", target_portal=P1, target_iqn=iqn("b"), target_lun=0))
    # M: a multipath BDM over two portals: both sessions kept.
    sim.add_target(iqn("m"), [P1, P2], [2])
    sim.connect(P1, iqn("m"))
    sim.connect(P2, iqn("m"))
    novadb.add_bdm(eng, live, vol_mp, device_name="/dev/vde",
                   connection_info=novadb.iscsi_connection_info(
                       vol_mp, target_portal=P1, target_iqn=iqn("m"), target_lun=2,
                       target_portals=[P1, P2], target_iqns=[iqn("m"), iqn("m")],
                       target_luns=[2, 2]))
    # L: a session left by a detach whose BDM is gone: logged out, node record deleted.
    sim.add_target(iqn("l"), [P2], [0])
    dev_l0 = sim.devices(sim.connect(P2, iqn("l")))[0]
    # N: a node record with no session and no BDM: deleted.
    sim.node_new(P2, iqn("n"))
    kvm_domain_factory(live, disks=[
        {"path": sim.by_path(P1, iqn("a"), 1), "serial": vol_a},
        {"path": sim.by_path(P1, iqn("b"), 1), "serial": vol_b, "target": "vdc"}])
    dev_b0 = sim.devices(sid_b)[0]

    rep, run = reap(sim, write_conf(tmp_path, nova_db.url, host))

    assert run.returncode == 4, run.stderr[-3000:] + run.stdout[-3000:]
    assert sessions(sim) == {(P1, iqn("a")), (P1, iqn("b")), (P1, iqn("m")), (P2, iqn("m"))}
    assert nodes(sim) == sessions(sim)
    assert sim.devices(sid_b) == {1: sim.devices(sid_b)[1]}     # LUN 0 removed, 1 kept
    assert not os.path.exists(os.path.join(sim.dev, dev_b0))
    assert logouts(sim) == [iqn("l")]
    recs = audit(tmp_path)
    leaked = {r["resource"] for r in recs if r["event"] == "finding"
              and r["classification"] == "leaked_iscsi"}
    assert leaked == {f"{P1} {iqn('b')} lun 0 ({dev_b0})", f"{P2} {iqn('l')} lun 0 ({dev_l0})",
                      f"node {P2} {iqn('n')}"}
    b0 = next(r for r in recs if r["event"] == "finding" and iqn("b") in r["resource"])
    assert b0["kind"] == "iscsi_session" and b0["evidence"]["logout"] is False
    assert b0["evidence"]["luns"]["1"].startswith("in use: ")
    assert b0["evidence"]["checked"]["bdms"] == 3
    actions = [r for r in recs if r["event"] == "action"]
    assert {a["kind"] for a in actions} == {"iscsi_session"}
    assert all(a["result"] == "done" for a in actions), actions
    assert_no_secrets(tmp_path, run)

    # idempotent: a second pass finds nothing left to do
    rep2, run2 = reap(sim, write_conf(tmp_path, nova_db.url, host))
    assert [f for f in rep2["findings"] if f["classification"] == "leaked_iscsi"] == []


def test_evacuated_teardown_disconnects_only_the_source_hosts_devices(
        tmp_path, nova_db, host, sim, kvm_domain_factory, libvirt_conn):
    eng = nova_db.engine
    novadb.add_compute_node(eng, host)
    evac, live = novadb.new_uuid(), novadb.new_uuid()
    novadb.add_instance(eng, evac, host=OTHER)
    novadb.add_migration(eng, evac, host, OTHER, "done", "evacuation")
    novadb.add_instance(eng, live, host=host)
    vol_e, vol_l = novadb.new_uuid(), novadb.new_uuid()
    # One target; this host reached the evacuated instance's volume as LUN 1. The BDM now
    # holds the destination's connection: LUN 3, which on this host is another volume,
    # attached to a live instance.
    sim.add_target(iqn("t"), [P1], [1, 3])
    sid = sim.connect(P1, iqn("t"))
    novadb.add_bdm(eng, evac, vol_e, connection_info=novadb.iscsi_connection_info(
        vol_e, target_portal=P1, target_iqn=iqn("t"), target_lun=3))
    novadb.add_bdm(eng, live, vol_l, connection_info=novadb.iscsi_connection_info(
        vol_l, target_portal=P1, target_iqn=iqn("t"), target_lun=3))
    dev1, dev3 = sim.devices(sid)[1], sim.devices(sid)[3]
    (tmp_path / "instances" / evac).mkdir(parents=True)
    kvm_domain_factory(evac, disks=[{"path": sim.by_path(P1, iqn("t"), 1), "serial": vol_e}])
    kvm_domain_factory(live, disks=[{"path": f"/dev/{dev3}", "serial": vol_l}])

    rep, run = reap(sim, write_conf(tmp_path, nova_db.url, host))

    (act,) = [a for a in rep["actions"] if a["instance_uuid"] == evac]
    assert act["result"] == "done", act
    assert [s for s, _ in act["steps"]] == ["destroy_domain", "disconnect_volumes",
                                            "delete_files", "undefine_domain"]
    detail = dict(act["steps"])["disconnect_volumes"]
    assert f"removed {dev1}" in detail and "session kept" in detail
    assert sim.devices(sid) == {3: dev3}            # the live instance's LUN is untouched
    assert sessions(sim) == {(P1, iqn("t"))} and logouts(sim) == []
    deleted = [c for c in sim.commands("tee") if c["argv"][1].endswith("/device/delete")]
    assert [c["argv"][1] for c in deleted] == [f"/sys/block/{dev1}/device/delete"]
    assert not [f for f in rep["findings"] if f["classification"] == "leaked_iscsi"]
    assert_no_secrets(tmp_path, run)


def test_garbage_connection_info_is_reported_and_nothing_disconnected(
        tmp_path, nova_db, host, sim, kvm_domain_factory):
    eng = nova_db.engine
    novadb.add_compute_node(eng, host)
    live = novadb.add_instance(eng, host=host)["uuid"]
    bad = novadb.add_bdm(eng, live, connection_info='{"driver_volume_type": "iscsi", '
                                                    '"data": {"target_lun": ')
    sim.add_target(iqn("g"), [P1], [0])
    sim.connect(P1, iqn("g"))
    kvm_domain_factory(live)

    rep, run = reap(sim, write_conf(tmp_path, nova_db.url, host))

    drift = [f for f in rep["findings"] if f["kind"] == "volume_attachment"
             and "connection_info_error" in f["evidence"]]
    assert len(drift) == 1 and drift[0]["evidence"]["bdm_id"] == bad["id"]
    assert drift[0]["classification"] == "attachment_drift" and drift[0]["action"] == "log"
    assert "not valid JSON" in drift[0]["evidence"]["connection_info_error"]
    (leak,) = [f for f in rep["findings"] if f["classification"] == "leaked_iscsi"]
    assert leak["action"] == "log" and "unusable connection_info" in leak["reason"]
    assert rep["actions"] == []
    assert sessions(sim) == {(P1, iqn("g"))}
    assert [c for c in sim.commands() if c["prog"] == "tee"
            or "--logout" in c["argv"] or "delete" in c["argv"]] == []


def test_disconnect_waits_for_os_bricks_lock(tmp_path, nova_db, host, sim):
    """nova-compute's os-brick holding the external lock delays the reaper's disconnect."""
    from oslo_concurrency import lockutils

    eng = nova_db.engine
    novadb.add_compute_node(eng, host)
    novadb.add_instance(eng, host=host)
    sim.add_target(iqn("w"), [P1], [0])
    sim.connect(P1, iqn("w"))
    conf = write_conf(tmp_path, nova_db.url, host)
    held = threading.Event()
    released_at = []

    def hold():
        with lockutils.lock("connect_volume", "os-brick-", external=True,
                            lock_path=str(tmp_path / "locks")):
            held.set()
            time.sleep(3)
            released_at.append(time.time())

    t = threading.Thread(target=hold)
    t.start()
    held.wait(10)
    rep, run = reap(sim, conf)
    t.join()
    assert run.returncode == 4, run.stderr[-3000:] + run.stdout[-3000:]
    (logout,) = [c for c in sim.commands("iscsiadm") if "--logout" in c["argv"]
                 and c["rc"] == 0]
    assert logout["ts"] >= released_at[0]
