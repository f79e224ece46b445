"""The iSCSI collector against the simulated initiator (tests/iscsi_sim).

The initiator is simulated because test hosts cannot be counted on to load the
iscsi_tcp kernel module or reach a target: no real session can log in. The collector
is pointed at the simulator through its options' values (sysfs_root, dev_root) and
PATH (the simulator's iscsiadm); nothing is patched. Its parsing is checked against
os-brick's own parsing of the same output.
"""
from __future__ import annotations

import os

import pytest

from reaper.conf import iscsi as conf_iscsi
from reaper.kinds.iscsi import collector as iscsi
from reaper.kinds.iscsi.objects import DmMap, IscsiNode, IscsiSession
from tests import iscsi_sim

P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"
IQN = "iqn.2010-10.org.openstack:volume-1"
SECRET = "sysfs-visible-chap-secret"


@pytest.fixture
def sim(tmp_path):
    return iscsi_sim.SimHost(str(tmp_path / "host")).init()


def collect(sim, **kw):
    return iscsi.collect(sim.sys, sim.dev, env=iscsi_sim.env(sim.root), **kw)


def kinds(res):
    return ([i for i in res.items if isinstance(i, IscsiSession)],
            [i for i in res.items if isinstance(i, IscsiNode)],
            [i for i in res.items if isinstance(i, DmMap)])


def test_empty_host(sim):
    res = collect(sim)
    assert res.ok and res.items == ()


def test_sessions_devices_nodes(sim):
    sim.add_target(IQN, [P1], [0, 1])
    sid = sim.connect(P1, IQN, username="u", password=SECRET)
    sim.node_new(P2, "iqn.x:orphan")
    res = collect(sim)
    sessions, nodes, dms = kinds(res)
    (s,) = sessions
    assert (s.transport, s.sid, s.portal, s.tpgt, s.iqn, s.node_type) == \
        ("tcp", str(sid), P1, "1", IQN, "non-flash")
    assert [(d.lun, d.name, d.hctl, d.state) for d in s.devices] == [
        (0, "sda", f"{s.host_no}:0:0:0", "running"), (1, "sdb", f"{s.host_no}:0:0:1", "running")]
    d0 = s.devices[0]
    assert d0.paths[0] == "/dev/sda"
    assert f"/dev/disk/by-path/ip-{P1}-iscsi-{IQN}-lun-0" in d0.paths
    assert any(p.startswith("/dev/disk/by-id/scsi-3600140") for p in d0.paths)
    assert d0.wwid.startswith("naa.") and d0.dev == "8:0"
    assert d0.open_pids == () and not d0.mounted and d0.holders == ()
    assert sorted((n.portal, n.iqn) for n in nodes) == [(P1, IQN), (P2, "iqn.x:orphan")]
    assert dms == []
    assert SECRET not in repr(res)


def test_open_device_and_multipath_holder(sim):
    sim.add_target(IQN, [P1, P2], [0])
    s1, s2 = sim.connect(P1, IQN), sim.connect(P2, IQN)
    a, b = sim.devices(s1)[0], sim.devices(s2)[0]
    dm = sim.add_dm([a, b], "mpatha", "mpath-36001405abc")
    fd = os.open(os.path.join(sim.dev, a), os.O_RDONLY)
    try:
        sessions, _, dms = kinds(collect(sim))
    finally:
        os.close(fd)
    devs = {d.name: d for s in sessions for d in s.devices}
    assert devs[a].open_pids == (os.getpid(),) and devs[b].open_pids == ()
    assert devs[a].holders == (dm,) == devs[b].holders
    (m,) = dms
    assert (m.name, m.dm_name, m.uuid, m.slaves, m.multipath) == \
        (dm, "mpatha", "mpath-36001405abc", tuple(sorted([a, b])), True)
    assert "/dev/mapper/mpatha" in m.paths and not m.in_use


def test_no_iscsiadm_and_no_sessions_is_an_empty_host(sim):
    res = iscsi.collect(sim.sys, sim.dev, iscsiadm="iscsiadm-not-installed",
                        env=iscsi_sim.env(sim.root))
    assert res.ok and res.items == ()


def test_no_iscsiadm_with_sessions_fails(sim):
    sim.add_target(IQN, [P1], [0])
    sim.connect(P1, IQN)
    res = iscsi.collect(sim.sys, sim.dev, iscsiadm="iscsiadm-not-installed",
                        env=iscsi_sim.env(sim.root))
    assert not res.ok and "not installed" in res.error


def test_iscsiadm_error_fails_the_kind(sim, tmp_path):
    bad = tmp_path / "bin"
    bad.mkdir()
    (bad / "iscsiadm").write_text("#!/bin/sh\necho 'iscsiadm: database failure' >&2\nexit 6\n")
    (bad / "iscsiadm").chmod(0o755)
    env = dict(iscsi_sim.env(sim.root), PATH=f"{bad}:{os.environ['PATH']}")
    res = iscsi.collect(sim.sys, sim.dev, env=env)
    assert not res.ok and "exited 6" in res.error and "database failure" in res.error


def test_collect_from_conf_uses_the_options(sim, monkeypatch):
    from oslo_config import cfg
    conf = cfg.ConfigOpts()
    conf_iscsi.register_opts(conf)
    conf([])
    conf.set_override("sysfs_root", sim.sys, "iscsi")
    conf.set_override("dev_root", sim.dev, "iscsi")
    sim.add_target(IQN, [P1], [3])
    sim.connect(P1, IQN)
    res = iscsi.collect_from_conf(conf, env=iscsi_sim.env(sim.root))
    (s,) = kinds(res)[0]
    assert [d.lun for d in s.devices] == [3]


# --------------------------------------------------------------------------
# parsing: ours against os-brick's, on the same output
# --------------------------------------------------------------------------

SESSION_OUT = (
    f"tcp: [1] {P1},1 {IQN} (non-flash)\n"
    "tcp: [12] [fe80::1]:3260,2 iqn.x:v6 (non-flash)\n"
    "iser: [3] 10.0.0.3:3260,1 iqn.x:iser (non-flash)\n"
    "be2iscsi: [4] 10.0.0.4:3260,1 iqn.x:boot (flash)\n")
NODE_OUT = f"{P1},1 {IQN}\n10.0.0.9:3260,4294967295 iqn.x:static\n[fe80::1]:3260,2 iqn.x:v6\n"


def _brick(out):
    from os_brick.initiator.connectors.iscsi import ISCSIConnector
    return ISCSIConnector(root_helper="", execute=lambda *a, **k: (out, ""))


def test_session_parsing_matches_os_brick():
    ours = [(t + ":", sid, portal, tpgt, iqn)
            for t, sid, portal, tpgt, iqn, _ in iscsi.parse_sessions(SESSION_OUT)]
    assert ours == _brick(SESSION_OUT)._get_iscsi_sessions_full()
    assert [nt for *_, nt in iscsi.parse_sessions(SESSION_OUT)] == \
        ["non-flash", "non-flash", "non-flash", "flash"]


def test_node_parsing_matches_os_brick():
    ours = [(portal, iqn) for portal, _, iqn in iscsi.parse_nodes(NODE_OUT)]
    assert ours == _brick(NODE_OUT)._get_iscsi_nodes()


def test_parsing_skips_noise():
    assert iscsi.parse_sessions("iscsiadm: debug noise\n\n" + SESSION_OUT)[0][1] == "1"
    assert iscsi.parse_nodes("# BEGIN RECORD\n") == []


def test_bare_walk(sim):
    sim.add_target(IQN, [P1], [0, 1])
    sid = sim.connect(P1, IQN)
    walk = iscsi.bare_walk(sim.sys, env=iscsi_sim.env(sim.root))
    assert list(walk) == [str(sid)] and sorted(walk[str(sid)]) == ["sda", "sdb"]


# --------------------------------------------------------------------------
# partitions, stacks, mounts, swap and boot firmware
# --------------------------------------------------------------------------

def _by_type(res, cls):
    return {i.name: i for i in res.items if isinstance(i, cls)}


def test_partitions_and_what_is_stacked_on_them(sim):
    from reaper.kinds.iscsi.objects import BlockPartition
    sim.add_target(IQN, [P1], [0, 1])
    sid = sim.connect(P1, IQN)
    a, b = sim.devices(sid)[0], sim.devices(sid)[1]
    sim.add_partition(a, 1, fs_uuid="0b1e-77aa")
    lv = sim.add_dm([f"{a}1"], "vg--x-lv", "LVM-abc", lvm=("vg-x", "lv"))
    crypt = sim.add_dm([lv], "luks-z", "CRYPT-LUKS2-z")
    md = sim.add_md([b], "md3")
    fd = os.open(os.path.join(sim.dev, f"{a}1"), os.O_RDONLY)
    try:
        res = collect(sim)
    finally:
        os.close(fd)
    (s,) = kinds(res)[0]
    da, db = s.devices
    assert da.partitions == (f"{a}1",) and da.holders == () and db.holders == (md,)
    p = _by_type(res, BlockPartition)[f"{a}1"]
    assert (p.disk, p.dev, p.holders, p.open_pids) == (a, "8:1", (lv,), (os.getpid(),))
    assert f"/dev/disk/by-path/ip-{P1}-iscsi-{IQN}-lun-0-part1" in p.paths
    assert "/dev/disk/by-uuid/0b1e-77aa" in p.paths
    dms = _by_type(res, DmMap)
    assert set(dms) == {lv, crypt, md}
    assert dms[lv].kind == "dm" and dms[lv].holders == (crypt,) and dms[lv].slaves == (f"{a}1",)
    assert "/dev/vg-x/lv" in dms[lv].paths and "/dev/mapper/vg--x-lv" in dms[lv].paths
    assert dms[crypt].uuid == "CRYPT-LUKS2-z" and not dms[crypt].multipath
    assert dms[md].kind == "md" and dms[md].dev == "9:3" and not dms[md].multipath


def test_mounts_by_device_number_and_swap(sim, tmp_path):
    from reaper.kinds.iscsi.objects import BlockPartition
    sim.add_target(IQN, [P1], [0])
    sid = sim.connect(P1, IQN)
    a = sim.devices(sid)[0]
    sim.add_partition(a, 1)
    sim.add_partition(a, 2)
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text(
        "22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n"
        "90 22 8:1 / /srv/my\\040data rw,relatime shared:40 - ext4 /dev/sda1 rw\n")
    swap_dev = next((f"/dev/{n}" for n in sorted(os.listdir("/sys/class/block"))
                     if os.path.exists(f"/dev/{n}")
                     and os.path.isfile(f"/sys/class/block/{n}/dev")), None)
    if swap_dev is None or os.geteuid() != 0:
        pytest.skip("needs root and a block device to stand for the swap partition")
    sim.back_with(f"{a}2", swap_dev)
    (proc / "swaps").write_text("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
                                f"{swap_dev}                               partition\t"
                                "1048572\t\t0\t\t-2\n")
    res = iscsi.collect(sim.sys, sim.dev, proc_root=str(proc), env=iscsi_sim.env(sim.root))
    parts = _by_type(res, BlockPartition)
    assert parts[f"{a}1"].mountpoints == ("/srv/my data",) and not parts[f"{a}1"].swap
    assert parts[f"{a}2"].swap and parts[f"{a}2"].mountpoints == ()
    (s,) = kinds(res)[0]
    assert s.devices[0].mountpoints == () and not s.devices[0].mounted


def test_boot_firmware_targets(sim):
    from reaper.kinds.iscsi.objects import IscsiBootTarget
    sim.set_ibft("10.0.0.7:3260", "iqn.x:boot")
    boot = os.path.join(sim.sys, "firmware", "iscsi_boot0", "target0")
    os.makedirs(boot)
    for attr, val in (("target-name", "iqn.x:qla"), ("ip-addr", "fe80::7"), ("port", "3261")):
        with open(os.path.join(boot, attr), "w") as f:
            f.write(val + "\n")
    res = collect(sim)
    assert [i for i in res.items if isinstance(i, IscsiBootTarget)] == [
        IscsiBootTarget("10.0.0.7:3260", "iqn.x:boot", "ibft"),
        IscsiBootTarget("[fe80::7]:3261", "iqn.x:qla", "iscsi_boot0")]


def test_the_domain_collector_resolves_block_sources(tmp_path):
    """What a domain's block source is on this host, per pass: its kernel name and,
    for a block device, its number (the iSCSI planner maps both back to a LUN)."""
    from reaper.kinds.instance.libvirt import resolve_block_disks
    from reaper.objects.host import Domain, DomainDisk
    blk = next((n for n in sorted(os.listdir("/sys/class/block"))
                if os.path.exists(f"/dev/{n}")), None)
    if blk is None:
        pytest.skip("no block device node on this host")
    link = tmp_path / "data"
    link.symlink_to(f"/dev/{blk}")
    st = os.stat(f"/dev/{blk}")
    dom = Domain("u", "appliance", "running", False, None, disks=(
        DomainDisk("vdb", "disk", "block", str(link)),
        DomainDisk("vdc", "disk", "file", "/dev/null"),
        DomainDisk("vdd", "disk", "block", "/dev/disk/by-path/gone"),
        DomainDisk("vda", "disk", "file", str(tmp_path / "disk.qcow2")),
        DomainDisk("vde", "disk", "network", "iscsi:iqn.x/1")))
    out = resolve_block_disks(dom)
    assert [(d.resolved, d.devt) for d in out.disks] == [
        (blk, f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"), ("null", None),
        (None, None), (None, None), (None, None)]
    plain = Domain("u", "x", "running", False, None, disks=(
        DomainDisk("vda", "disk", "file", str(tmp_path / "disk.qcow2")),))
    assert resolve_block_disks(plain) is plain


def test_sysfs_attributes_are_read_whole_and_stripped(tmp_path):
    from reaper.kinds.iscsi.collector import _read
    (tmp_path / "state").write_text("running\n")
    (tmp_path / "big").write_bytes(b"x" * 200_000 + b"\n")
    (tmp_path / "odd").write_bytes(b"wwid-\xff\n")
    assert _read(str(tmp_path / "state")) == "running"
    assert _read(str(tmp_path / "big")) == "x" * 200_000
    assert _read(str(tmp_path / "odd")) == "wwid-\ufffd"
    assert _read(str(tmp_path / "missing")) is None
    assert _read(str(tmp_path)) is None         # a directory


@pytest.mark.parametrize("size", [0, 9, iscsi._READ_SIZE - 1, iscsi._READ_SIZE,
                                  iscsi._READ_SIZE + 1, 3 * iscsi._READ_SIZE + 5])
def test_an_attribute_is_read_whole_whatever_its_size(tmp_path, size):
    """One read for what fits (a short read is the end), more for what does not."""
    p = tmp_path / "attr"
    body = (b"x" * size)
    p.write_bytes(body + b"\n")
    assert iscsi._read(str(p)) == body.decode()
    assert iscsi._read(str(tmp_path / "missing")) is None
