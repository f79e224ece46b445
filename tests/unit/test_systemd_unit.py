"""The shipped unit file, checked by systemd's own parser (systemd-analyze verify)
and its offline security review, with ExecStart pointed at the installed agent."""
from __future__ import annotations

import configparser
import pathlib
import shutil
import subprocess
import sys

import pytest

from tests.conftest import under_ci

UNIT = pathlib.Path(__file__).resolve().parents[2] / "systemd" / "reaper-agent.service"


@pytest.fixture
def unit_copy(tmp_path):
    if shutil.which("systemd-analyze") is None:
        if under_ci():
            pytest.fail("systemd-analyze missing (tools/install-deps.sh installs systemd)")
        pytest.skip("systemd-analyze missing")
    agent = pathlib.Path(sys.executable).parent / "reaper-agent"
    text = UNIT.read_text().replace("/usr/bin/reaper-agent", str(agent))
    p = tmp_path / "reaper-agent.service"
    p.write_text(text)
    return p


def test_systemd_accepts_the_unit(unit_copy):
    r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit_copy)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


def test_type_notify_watchdog_and_no_restart_loop_on_bad_config(unit_copy):
    cp = configparser.ConfigParser(strict=False, interpolation=None)
    cp.optionxform = str
    cp.read_string(UNIT.read_text())
    svc = cp["Service"]
    assert svc["Type"] == "notify" and svc["NotifyAccess"] == "main"
    assert svc["Restart"] == "on-failure" and svc["RestartPreventExitStatus"] == "78"
    assert "WatchdogSec" in svc and svc["ExecReload"].endswith("-HUP $MAINPID")


def test_offline_security_review_exposure(unit_copy):
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit_copy)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    line = [x for x in r.stdout.splitlines() if "Overall exposure level" in x][0]
    exposure = float(line.split(":")[1].split()[0])
    # root with NET_ADMIN/SYS_ADMIN cannot be "safe"; it must stay "OK" or better
    assert exposure < 5.0, line
