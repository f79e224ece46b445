"""The iSCSI initiator simulator itself (tests/iscsi_sim): formats and exit codes.

No real session can log in on a test host, so the reaper's iSCSI tests run against
this simulator; these tests pin the behaviour it copies from open-iscsi 2.1.8 and the
kernel (the functional test_iscsi_sim_fidelity.py compares it with the real iscsiadm
binary).
"""
from __future__ import annotations

import os
import subprocess

import pytest

from tests import iscsi_sim

P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"
IQN = "iqn.2010-10.org.openstack:volume-1"


@pytest.fixture
def sim(tmp_path):
    s = iscsi_sim.SimHost(str(tmp_path / "host")).init()
    s.add_target(IQN, [P1, P2], [0, 1])
    return s


def adm(sim, *args, stdin=None):
    return subprocess.run(["iscsiadm", *args], capture_output=True, text=True,
                          env=iscsi_sim.env(sim.root), input=stdin, timeout=30)


def test_empty_listings_exit_21(sim):
    r = adm(sim, "-m", "session")
    assert (r.returncode, r.stdout, r.stderr) == (21, "", "iscsiadm: No active sessions.\n")
    r = adm(sim, "-m", "node")
    assert (r.returncode, r.stderr) == (21, "iscsiadm: No records found\n")


def test_flat_session_and_node_listings(sim):
    sim.connect(P1, IQN)
    sim.node_new(P2, "iqn.x:static")
    assert adm(sim, "-m", "session").stdout == f"tcp: [1] {P1},1 {IQN} (non-flash)\n"
    assert adm(sim, "-m", "node").stdout == \
        f"{P1},4294967295 {IQN}\n{P2},4294967295 iqn.x:static\n"


def test_session_print_level_3_lists_the_disks(sim):
    sim.connect(P1, IQN, username="u", password="pw")
    out = adm(sim, "-m", "session", "-P", "3").stdout.splitlines()
    assert out[:4] == ["iSCSI Transport Class version 2.0-870", "version 2.1.8",
                       f"Target: {IQN} (non-flash)", f"\tCurrent Portal: {P1},1"]
    assert "\t\tusername: u" in out and "\t\tpassword: ********" in out and "pw" not in out
    assert out[-4:] == ["\t\tscsi2 Channel 00 Id 0 Lun: 0",
                        "\t\t\tAttached scsi disk sda\t\tState: running",
                        "\t\tscsi2 Channel 00 Id 0 Lun: 1",
                        "\t\t\tAttached scsi disk sdb\t\tState: running"]


def test_node_ops_new_update_show_delete(sim):
    r = adm(sim, "-m", "node", "-T", IQN, "-p", P1, "--interface", "default", "--op", "new")
    assert r.returncode == 0 and r.stdout == \
        f"New iSCSI node [tcp:[hw=,ip=,net_if=,iscsi_if=default] 10.0.0.1,3260,-1 {IQN}] added\n"
    assert adm(sim, "-m", "node", "-T", IQN, "-p", P1, "--op", "update", "-n",
               "node.session.auth.password", "-v", "pw").returncode == 0
    show = adm(sim, "-m", "node", "-T", IQN, "-p", P1).stdout
    assert "node.session.auth.password = ********" in show and "= pw" not in show
    assert "node.session.auth.password = pw" in adm(sim, "-m", "node", "-T", IQN, "-p", P1,
                                                    "-S").stdout
    bad = adm(sim, "-m", "node", "-T", IQN, "-p", P1, "--op", "update", "-n", "nope", "-v", "1")
    assert bad.returncode == 7
    assert adm(sim, "-m", "node", "-T", IQN, "-p", P1, "--op", "delete").returncode == 0
    r = adm(sim, "-m", "node", "-T", IQN, "-p", P1, "--op", "delete")
    assert (r.returncode, r.stderr) == (21, "iscsiadm: No records found\n")


def test_login_logout_and_their_exit_codes(sim):
    adm(sim, "-m", "node", "-T", IQN, "-p", P1, "--op", "new")
    r = adm(sim, "-m", "node", "-T", IQN, "-p", P1, "--login")
    assert r.returncode == 0 and r.stdout.splitlines() == [
        f"Logging in to [iface: default, target: {IQN}, portal: 10.0.0.1,3260]",
        f"Login to [iface: default, target: {IQN}, portal: 10.0.0.1,3260] successful."]
    assert sim.devices(1) == {0: "sda", 1: "sdb"}
    r = adm(sim, "-m", "node", "-T", IQN, "-p", P1, "--login")
    assert r.returncode == 15 and "1 session requested, but 1 already present" in r.stderr
    r = adm(sim, "-m", "node", "-T", IQN, "-p", P1, "--op", "delete")
    assert r.returncode == 15 and "but a session is using it" in r.stderr
    r = adm(sim, "-m", "node", "-T", IQN, "-p", P1, "--logout")
    assert r.returncode == 0 and r.stdout.splitlines()[-1] == \
        f"Logout of [sid: 1, target: {IQN}, portal: 10.0.0.1,3260] successful."
    assert sim.sessions() == [] and os.listdir(os.path.join(sim.dev, "disk", "by-path")) == []
    r = adm(sim, "-m", "node", "-T", IQN, "-p", P1, "--logout")
    assert (r.returncode, r.stderr) == (21, "iscsiadm: No matching sessions found\n")
    r = adm(sim, "-m", "node", "-T", "iqn.x:none", "-p", P1, "--login")
    assert r.returncode == 21


def test_manual_scan_and_device_delete_through_tee(sim):
    adm(sim, "-m", "node", "-T", IQN, "-p", P1, "--op", "new")
    adm(sim, "-m", "node", "-T", IQN, "-p", P1, "--op", "update", "-n", "node.session.scan",
        "-v", "manual")
    adm(sim, "-m", "node", "-T", IQN, "-p", P1, "--login")
    assert sim.devices(1) == {}
    host = sim.sessions()[0]["host"]
    env = iscsi_sim.env(sim.root)
    subprocess.run(["tee", "-a", f"/sys/class/scsi_host/host{host}/scan"], input="0 0 1",
                   env=env, check=True, capture_output=True, text=True)
    assert sim.devices(1) == {1: "sda"}
    subprocess.run(["tee", "-a", "/sys/block/sda/device/delete"], input="1", env=env,
                   check=True, capture_output=True, text=True)
    assert sim.devices(1) == {} and not os.path.exists(os.path.join(sim.dev, "sda"))
    assert os.listdir(os.path.join(sim.dev, "disk", "by-id")) == []


def test_sd_names_are_reused_lowest_first(sim):
    sid = sim.connect(P1, IQN)
    sim.delete_device("sda")
    sim.add_target("iqn.x:two", [P1], [5])
    sid2 = sim.connect(P1, "iqn.x:two")
    assert sim.devices(sid) == {1: "sdb"} and sim.devices(sid2) == {5: "sda"}


def test_discovery_and_discoverydb(sim):
    r = adm(sim, "-m", "discovery", "-t", "sendtargets", "-p", P1)
    assert r.returncode == 0 and r.stdout == f"{P1},1 {IQN}\n{P2},1 {IQN}\n"
    out = adm(sim, "-m", "discoverydb", "-o", "show", "-P", "1").stdout
    assert out.startswith(f"SENDTARGETS:\nDiscoveryAddress: 10.0.0.1,3260\nTarget: {IQN}\n"
                          f"\tPortal: {P1},1\n\t\tIface Name: default\n")
    r = adm(sim, "-m", "discovery", "-t", "sendtargets", "-p", "10.9.9.9:3260")
    assert r.returncode == 4


def test_sd_device_numbers_follow_the_kernel():
    from tests.iscsi_sim.sim import sd_devt
    assert [sd_devt(i) for i in (0, 1, 15, 16, 31, 32, 255, 256)] == [
        "8:0", "8:16", "8:240", "65:0", "65:240", "66:0", "135:240", "8:256"]
    assert sd_devt(1, 2) == "8:18"


def test_partitions_their_links_and_their_removal(sim):
    sid = sim.connect(P1, IQN, luns=[0])
    wwid = sim._load_targets()[IQN]["luns"]["0"]
    part = sim.add_partition("sda", 1, fs_uuid="1234-abcd")
    assert part == "sda1" and sim.partitions("sda") == ["sda1"]
    pdir = os.path.join(sim.sys, "block", "sda", "sda1")
    assert open(os.path.join(pdir, "dev")).read() == "8:1\n"
    assert open(os.path.join(pdir, "partition")).read() == "1\n"
    assert os.path.realpath(os.path.join(sim.sys, "class", "block", "sda1")) == \
        os.path.realpath(pdir)
    assert not os.path.exists(os.path.join(sim.sys, "block", "sda1"))   # as the kernel's
    by_path = os.path.join(sim.dev, "disk", "by-path", f"ip-{P1}-iscsi-{IQN}-lun-0-part1")
    by_id = os.path.join(sim.dev, "disk", "by-id", f"scsi-{wwid}-part1")
    by_uuid = os.path.join(sim.dev, "disk", "by-uuid", "1234-abcd")
    for link in (by_path, by_id, by_uuid):
        assert os.readlink(link).startswith("../../") and \
            os.path.realpath(link) == os.path.join(sim.dev, "sda1")
    lv = sim.add_dm(["sda1"], "vg0-lv0", "LVM-abc", lvm=("vg0", "lv0"))
    assert os.listdir(os.path.join(pdir, "holders")) == [lv]
    assert os.readlink(os.path.join(sim.dev, "vg0", "lv0")) == f"../{lv}"
    sim.delete_device("sda")
    assert sim.devices(sid) == {} and not os.path.exists(os.path.join(sim.dev, "sda1"))
    assert not any(os.path.lexists(p) for p in (by_path, by_id, by_uuid))
    assert not os.path.lexists(os.path.join(sim.sys, "class", "block", "sda1"))
    assert not os.path.lexists(os.path.join(sim.sys, "dev", "block", "8:1"))
    assert os.listdir(os.path.join(sim.sys, "block", lv, "slaves")) == []    # dm stays


def test_md_and_dm_stacks(sim):
    sid = sim.connect(P1, IQN)
    a, b = sim.devices(sid)[0], sim.devices(sid)[1]
    md = sim.add_md([a, b], "md5")
    mp = sim.add_dm([md], "crypt-x", "CRYPT-LUKS2-x")
    assert open(os.path.join(sim.sys, "block", md, "dev")).read() == "9:5\n"
    assert sorted(os.listdir(os.path.join(sim.sys, "block", md, "slaves"))) == [a, b]
    assert os.listdir(os.path.join(sim.sys, "block", md, "holders")) == [mp]
    assert os.path.isdir(os.path.join(sim.sys, "block", md, "md"))
    assert os.listdir(os.path.join(sim.sys, "block", a, "holders")) == [md]


def test_ibft(sim):
    sim.set_ibft("10.0.0.7:3260", "iqn.x:boot", lun=1)
    t = os.path.join(sim.sys, "firmware", "ibft", "target0")
    read = {a: open(os.path.join(t, a)).read() for a in os.listdir(t)}
    assert read["target-name"] == "iqn.x:boot\n" and read["ip-addr"] == "10.0.0.7\n"
    assert read["port"] == "3260\n" and read["lun"] == "0001000000000000\n"


def test_logout_and_login_without_iscsid(sim):
    sid = sim.login(P1, IQN)            # a session without a node record
    sim.set_iscsid(False)
    desc = f"[sid: {sid}, target: {IQN}, portal: 10.0.0.1,3260]"
    for args in (["-m", "session", "-r", str(sid), "-u"],
                 ["-m", "node", "-T", IQN, "-p", P1, "--logout"]):
        r = adm(sim, *args)
        assert r.returncode == 21 and r.stdout == f"Logging out of session {desc}\n"
        assert r.stderr.splitlines() == [
            "iscsiadm: can not connect to iSCSI daemon (111)!",
            f"iscsiadm: Could not logout of {desc}.",
            "iscsiadm: initiator reported error (20 - could not connect to iscsid)",
            "iscsiadm: No matching sessions found"]
        assert len(sim.sessions()) == 1
    sim.set_iscsid(True)
    r = adm(sim, "-m", "session", "-r", str(sid), "-u")     # no node record needed
    assert r.returncode == 0 and sim.sessions() == []
    r = adm(sim, "-m", "session", "-r", str(sid), "-u")
    assert r.returncode == 22 and r.stderr.splitlines()[-1] == \
        f"iscsiadm: Could not get session info for sid {sid}"
