"""The O_EXCL probe the iSCSI disconnect step uses, on a real block device (a loop
device): a claim by another process (as a container's mount would hold it, unseen
in our mount namespace) makes the device busy; nothing else does."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from reaper.kinds.iscsi import disconnect as volumes
from reaper.kinds.iscsi.objects import ScsiDevice

pytestmark = pytest.mark.functional

HOLDER = ("import os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY | os.O_EXCL); "
          "print('held', flush=True); time.sleep(60)")


@pytest.fixture
def loop_device(tmp_path):
    backing = tmp_path / "lun.img"
    backing.write_bytes(b"\0" * (1 << 20))
    r = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        from tests.conftest import service_unavailable
        service_unavailable("loop devices (losetup)", r.stderr.strip())
    dev = r.stdout.strip()
    yield dev
    subprocess.run(["losetup", "-d", dev], check=False)


def test_exclusive_claim_by_another_process_is_seen(loop_device):
    name = os.path.basename(loop_device)
    dev = ScsiDevice(name=name, hctl="0:0:0:0", lun=0)
    assert not volumes.exclusively_held(loop_device)
    fd = os.open(loop_device, os.O_RDONLY)            # a plain open is not a claim
    assert not volumes.exclusively_held(loop_device)
    os.close(fd)
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, loop_device],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert volumes.exclusively_held(loop_device)
        (why,) = volumes.exclusive_claims("/dev", dev)
        assert why.startswith(f"/dev/{name} is claimed exclusively")
    finally:
        holder.kill()
        holder.wait()
    assert not volumes.exclusively_held(loop_device)
    assert volumes.exclusive_claims("/dev", dev) == []


def test_a_regular_file_as_the_simulator_uses_is_never_busy(tmp_path):
    f = tmp_path / "sdb"
    f.write_bytes(b"x")
    assert not volumes.exclusively_held(str(f))
    assert not volumes.exclusively_held(str(tmp_path / "missing"))
