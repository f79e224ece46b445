"""Simulated iSCSI initiator for the tests (no real session can log in on a test host): see
sim.py."""
from __future__ import annotations

import os
import subprocess

from tests.iscsi_sim.sim import SimError, SimHost, join_portal, split_portal  # noqa: F401

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.join(HERE, "bin")


def env(root: str, base: dict | None = None) -> dict:
    """An environment whose PATH finds the simulator's iscsiadm, tee and blockdev first."""
    e = dict(os.environ if base is None else base)
    e["PATH"] = BIN + os.pathsep + e.get("PATH", "")
    e["ISCSI_SIM_ROOT"] = os.path.abspath(root)
    return e


def ns_argv(root: str, cmd: list[str]) -> list[str]:
    """``cmd`` run in a private mount namespace whose /sys, /dev, /etc/iscsi are ``root``'s."""
    return ["unshare", "--mount", "--propagation", "private", "/usr/bin/python3", "-S",
            os.path.join(HERE, "nsexec.py"), os.path.abspath(root), "--", *cmd]


def require_mount_namespaces() -> None:
    """Skip (fail under CI) unless this process may make private mount namespaces."""
    from tests.conftest import service_unavailable
    try:
        subprocess.run(["unshare", "--mount", "--propagation", "private", "true"],
                       check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.CalledProcessError) as e:
        service_unavailable("mount namespaces (unshare --mount, needs root)", e)
