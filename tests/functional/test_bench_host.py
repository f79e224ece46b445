"""bench/bench_host.py runs end to end at a tiny size and leaves nothing behind.

A smoke test only: the benchmark's figures are printed, never asserted here.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import service_unavailable

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
BENCH = os.path.join(ROOT, "bench", "bench_host.py")


def _require() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespace, ovsdb-server)")
    for tool in ("ip", "ovsdb-server", "ovsdb-tool", "ovs-vsctl"):
        if shutil.which(tool) is None:
            service_unavailable(tool, "not installed")


def _netns() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_bench_host_runs_at_tiny_size_and_cleans_up(tmp_path):
    _require()
    before = _netns()
    env = dict(os.environ, PYTHONPATH=os.path.abspath(ROOT), TMPDIR=str(tmp_path))
    r = subprocess.run([sys.executable, BENCH, "--domains", "4", "--vifs", "3",
                        "--sessions", "2", "--luns", "1", "--others", "3", "--runs", "1",
                        "--passes", "1", "--libvirt", "in-process", "--iscsiadm", "sim"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    out = r.stdout
    assert "4 domains" in out and "13 netlink devices" in out, out
    for line in ("ratio warm / bare", "ratio cold / bare", "peak RSS, the passes",
                 "domain", "vif", "ovs_port", "iscsi_session", "nova_db", "rest"):
        assert line in out, (line, out)
    assert not [n for n in _netns() - before if n.startswith("reaper-bench-")]
    assert not [p for p in os.listdir(tmp_path) if p.startswith("reaper-bench-host-")]
