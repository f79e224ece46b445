"""How faithful the iSCSI simulator is: the real open-iscsi iscsiadm and the real
os-brick, run against the simulated host in a private mount namespace.

The initiator has to be simulated (test hosts, containers and CI runners, cannot be
counted on to load the iscsi_tcp kernel module or reach an iSCSI target, so no session
can log in). But the real ``/usr/sbin/iscsiadm`` can still *read* the
simulated host: with /sys and /etc/iscsi bound to the simulator's tree it lists the
simulator's sessions (from sysfs) and node records (from its node database). Both
must print the same thing. And os-brick's own connect_volume/disconnect_volume must
work against the simulator the way they work against a real host.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests import iscsi_sim
from tests.conftest import service_unavailable

pytestmark = pytest.mark.functional

P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"
IQN1 = "iqn.2010-10.org.openstack:volume-1"
IQN2 = "iqn.2010-10.org.openstack:volume-2"
REAL = "/usr/sbin/iscsiadm"
# What only a running iscsid can tell (it is not running here): the simulator
# answers as a host where it runs; the real binary says "Unknown".
IscsidLines = ("iSCSI Connection State:", "Internal iscsid Session State:")


@pytest.fixture
def sim(tmp_path):
    iscsi_sim.require_mount_namespaces()
    s = iscsi_sim.SimHost(str(tmp_path / "host")).init()
    s.add_target(IQN1, [P1, P2], [0, 1])
    s.add_target(IQN2, [P1], [3])
    s.connect(P1, IQN1, username="u", password="pw")
    s.connect(P2, IQN1)
    s.connect(P1, IQN2)
    s.node_new("10.0.0.9:3260", "iqn.x:static")
    s.add_partition("sda", 1)               # partitions and holders do not change
    s.add_dm(["sda1"], "vg-lv", "LVM-x", lvm=("vg", "lv"))     # what iscsiadm prints
    return s


def in_ns(sim, code: str, netns: bool = False) -> dict:
    cmd = iscsi_sim.ns_argv(sim.root, [sys.executable, "-c", textwrap.dedent(code)])
    if netns:       # a network namespace of its own: no iscsid can be reached from it
        cmd = ["unshare", "--net", *cmd]
    env = iscsi_sim.env(sim.root, dict(os.environ, PYTHONPATH=os.getcwd()))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-4000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


COMMANDS = [
    ["-m", "session"],
    ["-m", "session", "-P", "1"],
    ["-m", "session", "-P", "3"],
    ["-m", "node"],
    ["-m", "node", "-P", "1"],
    ["-m", "node", "-T", IQN1, "-p", P1],
    ["-m", "node", "-T", "iqn.x:none", "-p", P1],
    ["-m", "node", "-T", IQN2, "-p", P1, "--op", "delete"],
]


def _clean(text: str) -> str:
    return "\n".join(line for line in text.splitlines()
                     if not line.strip().startswith(IscsidLines))


def _clean_err(text: str) -> str:
    noise = ("iscsid", "systemd", "Failed to connect to bus", "can not connect to iSCSI daemon")
    return "\n".join(line for line in text.splitlines() if not any(n in line for n in noise))


def test_real_iscsiadm_reads_the_simulated_host_identically(sim):
    if not os.path.exists(REAL):
        service_unavailable("open-iscsi's iscsiadm", f"{REAL} not installed")
    out = in_ns(sim, f"""
        import json, subprocess
        res = []
        for args in {COMMANDS!r}:
            real = subprocess.run([{REAL!r}, *args], capture_output=True, text=True)
            fake = subprocess.run(["iscsiadm", *args], capture_output=True, text=True)
            res.append([args, real.returncode, real.stdout, real.stderr,
                        fake.returncode, fake.stdout, fake.stderr])
        print(json.dumps(res))
    """)
    assert len(out) == len(COMMANDS)
    for args, rrc, rout, rerr, frc, fout, ferr in out:
        assert (rrc, _clean(rout)) == (frc, _clean(fout)), args
        assert _clean_err(rerr) == _clean_err(ferr), args
    assert "Attached scsi disk sda" in out[2][2]     # the real one saw the disks


def test_os_brick_connects_and_disconnects_against_the_simulator(sim, tmp_path):
    shutil.rmtree(sim.root + "/etc/iscsi/nodes")
    os.makedirs(sim.nodes_dir)
    for s in sim.sessions():
        sim.logout(s["sid"])
    out = in_ns(sim, f"""
        import json, subprocess
        from oslo_config import cfg
        import os_brick
        from os_brick import privileged
        from os_brick.initiator.connectors.iscsi import ISCSIConnector
        cfg.CONF([], project="t")
        cfg.CONF.set_override("lock_path", {str(tmp_path / "locks")!r}, "os_brick")
        os_brick.setup(cfg.CONF)
        privileged.default.set_client_mode(False)
        c = ISCSIConnector(root_helper="")
        lun = lambda n: {{"target_portal": {P1!r}, "target_iqn": {IQN1!r}, "target_lun": n,
                          "auth_method": "CHAP", "auth_username": "u", "auth_password": "pw"}}
        def sessions():
            return subprocess.run(["iscsiadm", "-m", "session"], capture_output=True,
                                  text=True).stdout
        res = {{"c0": c.connect_volume(lun(0)), "c1": c.connect_volume(lun(1))}}
        res["by_path"] = sorted(__import__("os").listdir("/dev/disk/by-path"))
        c.disconnect_volume(lun(0), None)
        res["after0"] = sessions()
        c.disconnect_volume(lun(1), None)
        res["after1"] = sessions()
        res["nodes"] = subprocess.run(["iscsiadm", "-m", "node"], capture_output=True,
                                      text=True).stdout
        print(json.dumps(res))
    """)
    assert out["c0"]["path"] == "/dev/sda" and out["c1"]["path"] == "/dev/sdb"
    assert out["c0"]["scsi_wwn"].startswith("3600140")
    assert out["by_path"] == [f"ip-{P1}-iscsi-{IQN1}-lun-0", f"ip-{P1}-iscsi-{IQN1}-lun-1"]
    assert out["after0"] == f"tcp: [4] {P1},1 {IQN1} (non-flash)\n"   # LUN 1 still there
    assert out["after1"] == "" and out["nodes"] == ""      # logged out, node deleted
    cmds = [c["argv"] for c in sim.commands("iscsiadm")]
    assert ["-m", "node", "-T", IQN1, "-p", P1, "--op", "update", "-n", "node.session.scan",
            "-v", "manual"] in cmds                                    # manual scan mode
    assert [c["argv"][:2] for c in sim.commands("tee")] == [
        ["-a", "/sys/class/scsi_host/host5/scan"], ["-a", "/sys/class/scsi_host/host5/scan"],
        ["-a", "/sys/block/sda/device/delete"], ["-a", "/sys/block/sdb/device/delete"]]


def test_logout_without_node_record_and_without_iscsid_matches_the_real_binary(sim):
    """Node-mode and session-mode logouts match sessions in sysfs, not node records;
    with iscsid unreachable both fail the same way (and exit 21, "No matching sessions
    found", since a failed logout does not count as found). The real binary runs in a
    network namespace of its own, so it cannot reach any iscsid of this host."""
    if not os.path.exists(REAL):
        service_unavailable("open-iscsi's iscsiadm", f"{REAL} not installed")
    shutil.rmtree(sim.nodes_dir)
    os.makedirs(sim.nodes_dir)
    sim.set_iscsid(False)
    cmds = [["-m", "session", "-r", "1", "-u"],
            ["-m", "node", "-T", IQN2, "-p", P1, "--logout"],
            ["-m", "session", "-r", "99", "-u"],
            ["-m", "discoverydb", "-o", "show", "-P", "1"]]
    out = in_ns(sim, f"""
        import json, subprocess
        res = []
        for args in {cmds!r}:
            real = subprocess.run([{REAL!r}, *args], capture_output=True, text=True)
            fake = subprocess.run(["iscsiadm", *args], capture_output=True, text=True)
            res.append([args, real.returncode, real.stdout, real.stderr,
                        fake.returncode, fake.stdout, fake.stderr])
        print(json.dumps(res))
    """, netns=True)
    startup = ("iscsid.startup", "iscsid is not running")     # depends on iscsid.conf
    for args, rrc, rout, rerr, frc, fout, ferr in out:
        assert (rrc, rout) == (frc, fout), args
        assert [x for x in rerr.splitlines() if not any(s in x for s in startup)] == \
            ferr.splitlines(), args
    assert out[0][1] == 21 and "Could not logout of [sid: 1," in out[0][3]
    assert len(sim.sessions()) == 3


def test_real_iscsiadm_reads_the_simulated_ibft(sim):
    """open-iscsi's own firmware reader (``iscsiadm -m fw``, fwparam_sysfs.c) finds the
    boot target in the simulator's /sys/firmware/ibft, as the reaper's collector does."""
    if not os.path.exists(REAL):
        service_unavailable("open-iscsi's iscsiadm", f"{REAL} not installed")
    sim.set_ibft(P2, IQN1, lun=1)
    out = in_ns(sim, f"""
        import json, subprocess
        r = subprocess.run([{REAL!r}, "-m", "fw"], capture_output=True, text=True)
        print(json.dumps([r.returncode, r.stdout, r.stderr]))
    """, netns=True)
    rc, stdout, _ = out
    rec = dict(line.split(" = ", 1) for line in stdout.splitlines() if " = " in line)
    assert rc == 0 and rec["node.name"] == IQN1 and rec["node.boot_lun"] == "0001000000000000"
    assert (rec["node.conn[0].address"], rec["node.conn[0].port"]) == ("10.0.0.2", "3260")
    assert rec["iface.net_ifacename"] == "eth0"
