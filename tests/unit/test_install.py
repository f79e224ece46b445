"""The install steps of doc/install.md, walked as far as a machine without systemd as
PID 1 allows, under a throwaway root directory instead of /: the wheel is built
from this tree, installed into a virtualenv (as at /opt/reaper), the sample
configuration, the units and the logrotate file are copied out of the installed
package into etc/, the units pass systemd-analyze verify where they now are and
`systemctl --root enable` enables them, logrotate rotates an audit log with the
shipped file, and the installed scripts run."""
from __future__ import annotations

import grp
import os
import pathlib
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from tests.conftest import under_ci

REPO = pathlib.Path(__file__).resolve().parents[2]
PREFIX = "/opt/reaper"
SHIPPED = {
    "share/reaper/systemd/reaper-agent.service": "systemd/reaper-agent.service",
    "share/reaper/systemd/reaper-watch-nova-log.service":
        "systemd/reaper-watch-nova-log.service",
    "share/reaper/etc/reaper.conf.sample": "etc/reaper/reaper.conf.sample",
    "share/reaper/logrotate/reaper": "etc/logrotate.d/reaper",
    "share/doc/reaper/LICENSE": "LICENSE",
}


def need(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        if under_ci():
            pytest.fail(f"{tool} missing (tools/install-deps.sh installs {package})")
        pytest.skip(f"{tool} missing")


def run(*cmd, **kw) -> subprocess.CompletedProcess:
    """Run without PYTHONPATH and outside this tree: the installed package, not this
    tree, must answer."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    kw.setdefault("cwd", "/")
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300,
                       env=env, **kw)
    assert r.returncode == 0, f"{cmd}: {r.stdout[-2000:]}{r.stderr[-2000:]}"
    return r


def documented_install_lines() -> list[str]:
    """The `install ...` commands of doc/install.md's shell blocks."""
    text = (REPO / "doc/install.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    return [line.strip() for b in blocks for line in b.splitlines()
            if line.startswith("install ")]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> pathlib.Path:
    """The wheel, built from a copy of this tree (the build writes build/ and
    *.egg-info next to the sources), with this virtualenv's setuptools."""
    src = tmp_path_factory.mktemp("src") / "reaper"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv*", ".tox", "build", "dist", "*.egg-info", "__pycache__", "_build",
        ".pytest_cache", ".ruff_cache"))
    out = tmp_path_factory.mktemp("dist")
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
        "-w", out, src)
    [whl] = out.glob("reaper-*.whl")
    return whl


def test_the_wheel_ships_units_sample_config_logrotate_and_license(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        for inside, source in SHIPPED.items():
            [name] = [n for n in names if n.endswith(".data/data/" + inside)]
            assert z.read(name) == (REPO / source).read_bytes(), inside
        assert any(n.endswith(".dist-info/LICENSE") for n in names)


def test_install_steps_from_wheel_to_enabled_units(wheel, tmp_path):
    need("systemd-analyze", "systemd")
    need("systemctl", "systemd")
    need("logrotate", "logrotate")
    root = tmp_path / "root"
    venv = pathlib.Path(f"{root}{PREFIX}")
    # python3 -m venv /opt/reaper; /opt/reaper/bin/pip install reaper-*.whl
    # (the dependencies come from this virtualenv instead of the package index)
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    run(sys.executable, "-m", "pip", "--python", venv / "bin/python", "install", "-q",
        "--no-deps", wheel)
    site = pathlib.Path(run(venv / "bin/python", "-c",
                            "import sysconfig; print(sysconfig.get_paths()['purelib'])"
                            ).stdout.strip())
    (site / "_deps_from_test_venv.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    share = venv / "share/reaper"
    etc = root / "etc"
    units = etc / "systemd/system"
    units.mkdir(parents=True)
    (etc / "logrotate.d").mkdir()
    # The doc's `install` lines (configuration, units, logrotate file), run as
    # written but under the throwaway root.
    steps = documented_install_lines()
    assert len(steps) == 4, steps
    for line in steps:
        line = line.replace("/opt/reaper/", f"{venv}/").replace(" /etc/", f" {etc}/")
        run("bash", "-c", f"set -e; {line}")
    conf = etc / "reaper/reaper.conf"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o640
    assert stat.S_IMODE(conf.parent.stat().st_mode) == 0o750
    assert (etc / "logrotate.d/reaper").read_bytes() == (share / "logrotate/reaper").read_bytes()
    names = sorted(p.name for p in units.iterdir())
    assert names == ["reaper-agent.service", "reaper-watch-nova-log.service"]
    # systemd-analyze verify: ExecStart must exist, which it does under the prefix
    for name in names:
        text = (units / name).read_text()
        assert f"ExecStart={PREFIX}/bin/" in text
        local = tmp_path / name
        local.write_text(text.replace(f"{PREFIX}/", f"{venv}/"))
        r = subprocess.run(["systemd-analyze", "verify", "--man=no", str(local)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and not r.stderr.strip(), r.stderr
    # systemctl enable (--now needs a running systemd: not here)
    run("systemctl", f"--root={root}", "enable", *names)
    wants = etc / "systemd/system/multi-user.target.wants"
    assert sorted(p.name for p in wants.iterdir()) == names
    # the installed scripts run from the virtualenv, on the installed package
    r = run(venv / "bin/python", "-c", "import reaper; print(reaper.__file__)")
    assert r.stdout.startswith(str(venv))
    assert "--once" in run(venv / "bin/reaper-agent", "--help").stdout
    assert "watch-nova-log" in run(venv / "bin/reaper-manage", "--help").stdout
    run(venv / "bin/reaper-manage", "demo", cwd=tmp_path)
    # the sample configuration is a valid configuration file for the installed code
    run(venv / "bin/python", "-c",
        "import sys; from reaper import config; config.load(sys.argv[1:])",
        "--config-file", conf)


def test_logrotate_rotates_by_rename_and_creates_0640_root_adm(tmp_path):
    need("logrotate", "logrotate")
    text = (REPO / "etc/logrotate.d/reaper").read_text()
    assert "copytruncate" not in text.split("{", 1)[1]
    logdir = tmp_path / "log"
    logdir.mkdir()
    conf = tmp_path / "reaper.logrotate"
    conf.write_text(text.replace("/var/log/reaper/", f"{logdir}/"))
    log = logdir / "audit.log"
    log.write_text('{"event": "day 0"}\n')
    before = log.stat().st_ino
    run("logrotate", "-f", "-s", tmp_path / "state", conf)
    # renamed, not copied: the records a writer keeps appending to its open file
    # until it reopens the path are in audit.log.1, not lost
    assert (logdir / "audit.log.1").stat().st_ino == before
    st = log.stat()
    assert st.st_size == 0 and stat.S_IMODE(st.st_mode) == 0o640
    if os.geteuid() == 0:
        assert (st.st_uid, st.st_gid) == (0, grp.getgrnam("adm").gr_gid)
    log.write_text('{"event": "day 1"}\n')
    run("logrotate", "-f", "-s", tmp_path / "state", conf)
    # delaycompress: the newest rotated file stays plain for a writer still on it
    assert sorted(p.name for p in logdir.iterdir()) == ["audit.log", "audit.log.1",
                                                        "audit.log.2.gz"]
    assert (logdir / "audit.log.1").read_text() == '{"event": "day 1"}\n'
