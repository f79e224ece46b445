"""Fault matrix, iSCSI slice: LUNs used through partitions, stacks and boot, sessions
without a node record, hostile connection_info.

Whole ``reaper-manage reap`` passes in the simulated initiator's mount namespace (no real
session can log in on a test host; see tests/functional/test_iscsi_reaper.py), with real
os-brick, libvirtd and Nova DB, and real block devices where the kernel's answer
matters: a simulated partition backed by a loop device is opened, mounted or claimed
for real (mountinfo, /proc/*/fd, O_EXCL see the real device).
"""
from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest
import sqlalchemy as sa

from reaper.nova import schema
from tests.fixtures import novadb
from tests.fixtures.netplumb import domain_xml, driver_node
from tests.functional import test_exclusive_claim as _claim
from tests.functional import test_iscsi_reaper as _reaper
from tests.functional.test_iscsi_reaper import P1, P2, iqn, reap, write_conf

pytestmark = pytest.mark.functional

HOLD_OPEN = ("import os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
             "print('held', flush=True); time.sleep(120)")


# --------------------------------------------------------------------------
# helpers (this slice's own, per the fault-matrix convention)
# --------------------------------------------------------------------------

# The fixtures of the iSCSI functional tests, reused: a unique host name, the
# simulated initiator (skips without mount namespaces), a 1 MiB loop device.
host = _reaper.host
sim = _reaper.sim
loop_device = _claim.loop_device

@pytest.fixture
def sqlite_db(tmp_path):
    """A Nova DB slice on SQLite (the MariaDB runs are in test_iscsi_reaper.py)."""
    url = f"sqlite:///{tmp_path / 'nova.sqlite'}"
    eng = sa.create_engine(url)
    schema.create_all(eng)
    yield url, eng
    eng.dispose()


@pytest.fixture
def holder():
    """``holder(path, code=HOLD_OPEN)``: a process holding ``path``; killed afterwards."""
    procs = []

    def start(path: str, code: str = HOLD_OPEN, argv=None):
        p = subprocess.Popen(argv or [sys.executable, "-c", code, path],
                             stdout=subprocess.PIPE, text=True)
        procs.append(p)
        assert p.stdout.readline().strip() in ("held", "mounted"), "holder did not start"
        return p

    yield start
    for p in procs:
        p.kill()
        p.wait()


@pytest.fixture
def mounted_loop(loop_device, tmp_path):
    """The loop device with an ext2 filesystem mounted on a temporary directory in
    this (the test's) mount namespace, which the reaper's namespace inherits."""
    subprocess.run(["mkfs.ext2", "-q", "-F", loop_device], check=True, capture_output=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", loop_device, str(mnt)], check=True, capture_output=True)
    yield loop_device, str(mnt)
    subprocess.run(["umount", "-l", str(mnt)], check=False, capture_output=True)


def conf(tmp_path, url: str, host: str, domains: list[str] = (), **opts) -> str:
    """test_iscsi_reaper's configuration, on libvirt's test driver holding exactly
    ``domains`` (every reaper process reads the same node file): the domains of
    parallel runs on the shared libvirtd cannot change these passes' exit codes."""
    path = write_conf(tmp_path, url, host, **opts)
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("connection_uri = qemu:///system",
                             f"connection_uri = {driver_node(tmp_path, list(domains))}"))
    return path


def base(sqlite_db, host, tmp_path, domains: list[str] = (), **opts) -> str:
    url, eng = sqlite_db
    novadb.add_compute_node(eng, host)
    return conf(tmp_path, url, host, domains, **opts)


def appliance(disk_source: str) -> str:
    """A non-Nova domain (no Nova metadata, not named like an instance) with one block
    disk."""
    disk = (f"<disk type='block' device='disk'><driver name='qemu' type='raw'/>"
            f"<source dev='{disk_source}'/><target dev='vdb' bus='virtio'/></disk>")
    return domain_xml(novadb.new_uuid(), "appliance-iscsi", disk, nova=False)


def leaked(rep) -> list[dict]:
    return [f for f in rep["findings"] if f["classification"] == "leaked_iscsi"]


def logged_out(sim) -> list[str]:
    return [c["argv"] for c in sim.commands("iscsiadm")
            if ("--logout" in c["argv"] or "-u" in c["argv"]) and c["rc"] == 0]


def device_deletes(sim) -> list[str]:
    return [c["argv"][1] for c in sim.commands("tee") if c["argv"][1].endswith("/delete")]


def journal(tmp_path) -> list[tuple]:
    db = sqlite3.connect(tmp_path / "state" / "reaper-state.sqlite")
    try:
        return db.execute("SELECT id, instance_uuid, status, attempts FROM journal "
                          "ORDER BY id").fetchall()
    finally:
        db.close()


def assert_untouched(sim, sid: int, luns: dict) -> None:
    assert sim.devices(sid) == luns
    assert logged_out(sim) == [] and device_deletes(sim) == []


# --------------------------------------------------------------------------
# Item 12: a LUN in use through its partitions, its stack, or the host itself
# --------------------------------------------------------------------------

def test_iscsi_partition_open_by_a_process(tmp_path, sqlite_db, host, sim, loop_device,
                                           holder):
    """A process holds /dev/sda1, a partition of a LUN no BDM or domain names, open
    (a real block device behind the simulated partition); leaked_iscsi_action = reap.

    Expect: the LUN, its partition and the session stay; no logout, no device removed;
    no leaked_iscsi finding; exit 0.
    """
    cfg = base(sqlite_db, host, tmp_path)
    sim.add_target(iqn("p"), [P1], [0])
    sid = sim.connect(P1, iqn("p"))
    part = sim.add_partition("sda", 1)
    sim.back_with(part, loop_device)
    holder(loop_device)

    rep, run = reap(sim, cfg)

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert leaked(rep) == []
    assert_untouched(sim, sid, {0: "sda"})


@pytest.mark.parametrize("spelling", [
    pytest.param("by-path-part", id="by-path-partN-link"),
    pytest.param("by-uuid", id="by-uuid-link"),
    pytest.param("kernel-name", id="dev-sda1"),
    pytest.param("symlink-elsewhere", id="symlink-outside-dev"),
])
def test_iscsi_partition_named_by_a_domain(tmp_path, sqlite_db, host, sim, spelling):
    """A non-Nova domain's disk is a partition of a LUN no BDM names, spelled as a
    -partN by-path link, a by-uuid link, /dev/sda1 or a symlink outside /dev to it;
    leaked_iscsi_action = reap.

    Expect: the LUN and the session stay; no logout; no leaked_iscsi finding; exit 0.
    """
    sim.add_target(iqn("d"), [P1], [0])
    sid = sim.connect(P1, iqn("d"))
    sim.add_partition("sda", 1, fs_uuid="5c1d-0001")
    source = {"by-path-part": sim.by_path(P1, iqn("d"), 0) + "-part1",
              "by-uuid": "/dev/disk/by-uuid/5c1d-0001", "kernel-name": "/dev/sda1",
              "symlink-elsewhere": str(tmp_path / "appliance-data")}[spelling]
    if spelling == "symlink-elsewhere":
        os.symlink("/dev/sda1", source)     # resolves inside the reaper's namespace
    else:
        assert os.path.lexists(sim.real(source))
    cfg = base(sqlite_db, host, tmp_path, [appliance(source)])

    rep, run = reap(sim, cfg)

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert leaked(rep) == []
    assert_untouched(sim, sid, {0: "sda"})


def test_iscsi_domain_on_an_lvm_volume_over_a_lun(tmp_path, sqlite_db, host, sim):
    """A non-Nova domain's disk is /dev/vg/lv, an LVM volume on a partition of a LUN
    (the domain names neither the LUN nor its partition).

    Expect: the LUN and the session stay; no leaked_iscsi finding; exit 0.
    """
    sim.add_target(iqn("v"), [P1], [0])
    sid = sim.connect(P1, iqn("v"))
    sim.add_partition("sda", 1)
    sim.add_dm(["sda1"], "vgi-lvi", "LVM-abcdef", lvm=("vgi", "lvi"))
    cfg = base(sqlite_db, host, tmp_path, [appliance("/dev/vgi/lvi")])
    rep, run = reap(sim, cfg)

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert leaked(rep) == []
    assert_untouched(sim, sid, {0: "sda"})


@pytest.mark.parametrize("stack", [
    pytest.param("lvm-on-partition", id="lvm-on-partition"),
    pytest.param("md-on-partition", id="md-on-partition"),
    pytest.param("crypt-on-lvm-on-partition", id="crypt-on-lvm-on-partition"),
])
def test_iscsi_lun_held_through_a_stack(tmp_path, sqlite_db, host, sim, stack):
    """A LUN no BDM or domain names carries a device stack on its partition (an LVM
    physical volume's map, an md array member, dm-crypt over LVM).

    Expect: the LUN and the session stay; no logout; no leaked_iscsi finding; exit 0.
    """
    cfg = base(sqlite_db, host, tmp_path)
    sim.add_target(iqn("s"), [P1], [0])
    sid = sim.connect(P1, iqn("s"))
    sim.add_partition("sda", 1)
    if stack == "md-on-partition":
        sim.add_md(["sda1"], "md9")
    else:
        lv = sim.add_dm(["sda1"], "vgs-lvs", "LVM-xyz", lvm=("vgs", "lvs"))
        if stack.startswith("crypt"):
            sim.add_dm([lv], "luks-1", "CRYPT-LUKS2-1")

    rep, run = reap(sim, cfg)

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert leaked(rep) == []
    assert_untouched(sim, sid, {0: "sda"})


def test_iscsi_mounted_partition_makes_the_session_the_hosts(tmp_path, sqlite_db, host, sim,
                                                            mounted_loop):
    """The host has a filesystem mounted from /dev/sda1, a partition of LUN 0 (a real
    mount: mountinfo shows the device's number); LUN 1 of the same session is named
    by nothing and used by nothing.

    Expect: the whole session is the host's own: both LUNs and the session stay, no
    leaked_iscsi finding, no logout; exit 0.
    """
    loop, mnt = mounted_loop
    cfg = base(sqlite_db, host, tmp_path)
    sim.add_target(iqn("m"), [P1], [0, 1])
    sid = sim.connect(P1, iqn("m"))
    part = sim.add_partition("sda", 1)
    sim.back_with(part, loop)

    rep, run = reap(sim, cfg)

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert leaked(rep) == []
    assert_untouched(sim, sid, {0: "sda", 1: "sdb"})
    assert os.path.ismount(mnt)


def test_iscsi_partition_mounted_in_another_mount_namespace(tmp_path, sqlite_db, host, sim,
                                                           loop_device, holder):
    """/dev/sda1, a partition of a LUN nothing names, is mounted only in another mount
    namespace (a container's): no fd, no mountinfo line of ours shows it.

    Expect: the disconnect step's O_EXCL probe of the partition finds it claimed and
    aborts: the LUN and the session stay, nothing removed; exit 3.
    """
    subprocess.run(["mkfs.ext2", "-q", "-F", loop_device], check=True, capture_output=True)
    mnt = tmp_path / "ctr"
    mnt.mkdir()
    cfg = base(sqlite_db, host, tmp_path)
    sim.add_target(iqn("c"), [P1], [0])
    sid = sim.connect(P1, iqn("c"))
    part = sim.add_partition("sda", 1)
    sim.back_with(part, loop_device)
    holder(loop_device, argv=[
        "unshare", "--mount", "--propagation", "private", "sh", "-c",
        f"mount {loop_device} {mnt} && echo mounted && exec sleep 120"])

    rep, run = reap(sim, cfg)

    assert run.returncode == 3, run.stdout[-3000:] + run.stderr[-3000:]
    (act,) = rep["actions"]
    assert act["result"] == "aborted" and f"/dev/{part} is claimed exclusively" in act["reason"]
    assert_untouched(sim, sid, {0: "sda"})


def test_iscsi_boot_session_named_by_the_ibft(tmp_path, sqlite_db, host, sim):
    """The firmware's iBFT (/sys/firmware/ibft) names the target of a session whose LUN
    no BDM or domain names (a host booted from software iSCSI); it has a node record.

    Expect: the session, its LUN and its node record stay; no leaked_iscsi finding;
    exit 0.
    """
    cfg = base(sqlite_db, host, tmp_path)
    sim.add_target(iqn("boot"), [P2], [0])
    sid = sim.connect(P2, iqn("boot"))
    sim.set_ibft(P2, iqn("boot"), lun=0)

    rep, run = reap(sim, cfg)

    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert leaked(rep) == []
    assert_untouched(sim, sid, {0: "sda"})
    assert len(sim.node_records()) == 1


# --------------------------------------------------------------------------
# Item 14: a leaked session without a node record
# --------------------------------------------------------------------------

def test_iscsi_leaked_session_without_node_record_is_disconnected(tmp_path, sqlite_db, host,
                                                                  sim):
    """A leaked session (LUN 0, no BDM, no domain) has no node record (deleted by hand,
    or never written).

    Expect: the first pass removes the LUN and logs the session out (exit 4, one
    journal row, done); the second finds nothing (exit 0, no new row).
    """
    cfg = base(sqlite_db, host, tmp_path)
    sim.add_target(iqn("n"), [P1], [0])
    sim.login(P1, iqn("n"))
    assert sim.node_records() == []

    rep, run = reap(sim, cfg)

    assert run.returncode == 4, run.stdout[-3000:] + run.stderr[-3000:]
    (act,) = rep["actions"]
    assert act["result"] == "done", act
    assert sim.sessions() == [] and device_deletes(sim) == ["/sys/block/sda/device/delete"]
    rep2, run2 = reap(sim, cfg)
    assert run2.returncode == 0 and rep2["actions"] == [] and leaked(rep2) == []
    assert [(status, attempts) for _, _, status, attempts in journal(tmp_path)] == \
        [("done", 1)]


def test_iscsi_nodeless_session_that_cannot_be_logged_out_is_reported_once(
        tmp_path, sqlite_db, host, sim):
    """A leaked session without a node record while iscsid does not answer: os-brick's
    logout and a logout by session id both fail (iscsiadm exits 21).

    Expect: the first pass removes the LUN, cannot log out, and aborts with "needs an
    operator" (exit 3, one aborted journal row); the next passes only report the
    session as needing an operator (a log finding, no action, no new journal row,
    exit 3); once the session is gone nothing is left to say (exit 0).
    """
    cfg = base(sqlite_db, host, tmp_path)
    sim.add_target(iqn("z"), [P1], [0])
    sid = sim.login(P1, iqn("z"))
    sim.set_iscsid(False)

    rep, run = reap(sim, cfg)

    assert run.returncode == 3, run.stdout[-3000:] + run.stderr[-3000:]
    (act,) = rep["actions"]
    assert act["result"] == "aborted" and "needs an operator" in act["reason"]
    assert f"iscsiadm -m session -r {sid} -u" in act["reason"]
    assert sim.devices(sid) == {} and len(sim.sessions()) == 1
    for _ in range(2):
        rep2, run2 = reap(sim, cfg)
        assert run2.returncode == 3 and rep2["actions"] == []
        (f,) = leaked(rep2)
        assert f["action"] == "log" and "needs an operator" in f["reason"]
        assert f["evidence"]["needs_operator"] is True
    assert [status for _, _, status, _ in journal(tmp_path)] == ["aborted"]
    sim.set_iscsid(True)
    sim.logout(sid)                 # the operator's iscsiadm -m session -r SID -u
    rep3, run3 = reap(sim, cfg)
    assert run3.returncode == 0 and leaked(rep3) == []


# --------------------------------------------------------------------------
# Hostile connection_info
# --------------------------------------------------------------------------

def _nested(depth: int) -> str:
    return ('{"driver_volume_type": "iscsi", "data": {"target_portal": "%s", '
            '"target_iqn": "%s", "x": %s%s}}' % (P1, iqn("g"), "[" * depth, "]" * depth))


GARBAGE = [
    pytest.param(_nested(200000), id="deeply-nested"),
    pytest.param(json.dumps({"driver_volume_type": "iscsi", "data": {
        "target_portal": P1, "target_iqn": iqn("g"), "target_lun": 0,
        "pad": "x" * (3 << 20)}}), id="huge"),
    pytest.param('{"driver_volume_type": "iscsi", "data": {"target_portal": "%s", '
                 '"target_iqn": "%s", "target_lun": 1e999}}' % (P1, iqn("g")),
                 id="infinite-lun"),
    pytest.param(json.dumps({"driver_volume_type": "iscsi", "data": {
        "target_portal": {"x": 1}, "target_iqn": [iqn("g")], "target_lun": [0]}}),
        id="wrong-types"),
    pytest.param("\x00\xff garbage {", id="garbage"),
]


@pytest.mark.parametrize("conn_info", GARBAGE)
def test_iscsi_hostile_connection_info(tmp_path, nova_db, host, sim, conn_info):
    """A live instance's BDM has hostile connection_info (deeply nested, 3 MB, an
    infinite LUN, wrong types, garbage) while a session no other BDM or domain names
    is logged in; leaked_iscsi_action = reap.

    Expect: the pass completes; the BDM is reported (attachment_drift, log) and,
    since it might name the session, the leak is only logged: the session stays;
    exit 3.
    """
    eng = nova_db.engine
    novadb.add_compute_node(eng, host)
    live = novadb.add_instance(eng, host=host)["uuid"]
    bad = novadb.add_bdm(eng, live, connection_info=conn_info)
    sim.add_target(iqn("g"), [P1], [0])
    sid = sim.connect(P1, iqn("g"))

    t0 = time.monotonic()
    rep, run = reap(sim, conf(tmp_path, nova_db.url, host))

    assert run.returncode == 3, run.stdout[-3000:] + run.stderr[-3000:]
    assert rep["errors"] == [] and time.monotonic() - t0 < 120
    (drift,) = [f for f in rep["findings"] if f["classification"] == "attachment_drift"
                and f["evidence"].get("bdm_id") == bad["id"]]
    assert drift["action"] == "log" and drift["evidence"]["connection_info_error"]
    (leak,) = leaked(rep)
    assert leak["action"] == "log" and "unusable connection_info" in leak["reason"]
    assert rep["actions"] == []
    assert_untouched(sim, sid, {0: "sda"})
