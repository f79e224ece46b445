"""Fixtures and markers shared by unit and functional tests.

The real services (libvirtd, MariaDB, OVS, RabbitMQ) are started by
``tools/testhost.sh start`` (``tools/run-tests.sh`` does it); their fixtures live
in tests/functional/conftest.py.
"""
from __future__ import annotations

import json
import os
import pathlib
import time
import uuid as uuidlib

import pytest


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "functional: uses real services (libvirtd, MariaDB, OVS, RabbitMQ) "
        "started by tools/testhost.sh")


def under_ci() -> bool:
    """CI=true (any value but empty/0/false/no): missing services are errors."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def service_unavailable(what: str, why: object) -> None:
    """Skip the test when a real service is missing, but fail it under CI.

    Honest tests: on CI the test host is part of the contract, so a service that
    cannot be reached must show up as a failure, never as a quiet skip.
    """
    msg = f"{what} unavailable: {why} (start it with: tools/testhost.sh start)"
    if under_ci():
        pytest.fail(f"{msg}; CI is set, so this is an error, not a skip", pytrace=False)
    pytest.skip(msg)


REPO = pathlib.Path(__file__).resolve().parents[1]


def nova_venv_python() -> str:
    """The Python of the nova venv (Nova's own code, ``tools/nova-venv.sh`` builds it
    in .venv-nova; REAPER_NOVA_VENV names another one). Missing: the test is
    skipped, but fails under CI, where tools/run-tests.sh builds it first."""
    venv = pathlib.Path(os.environ.get("REAPER_NOVA_VENV") or REPO / ".venv-nova")
    python = venv / "bin" / "python"
    if not python.exists():
        msg = f"the nova venv {venv} is missing (build it with: tools/nova-venv.sh)"
        if under_ci():
            pytest.fail(f"{msg}; CI is set, so this is an error, not a skip", pytrace=False)
        pytest.skip(msg)
    return str(python)


# --------------------------------------------------------------------------
# instances_path: a Nova-like instances directory on disk
# --------------------------------------------------------------------------

class InstancesPath:
    """A temporary ``[DEFAULT] instances_path`` with helpers to populate it.

    ``str(ip)`` / ``os.fspath(ip)`` / ``ip.path`` give the directory. Each helper
    creates the directory Nova would, holding a small ``disk`` file (real bytes,
    not sparse, so sizes add up) and ``disk.info``, and returns its Path.
    """

    DISK_SIZE = 64 * 1024

    def __init__(self, path: pathlib.Path):
        self.path = path

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __truediv__(self, other) -> pathlib.Path:
        return self.path / other

    def make_dir(self, name: str, *, disk_size: int | None = None,
                 age: float | None = None, files: dict[str, bytes] | None = None
                 ) -> pathlib.Path:
        """Create ``<instances_path>/<name>`` with a disk; ``age`` backdates its mtime
        by that many seconds; ``files`` adds more files (name -> content)."""
        d = self.path / name
        d.mkdir(parents=True, exist_ok=True)
        disk = d / "disk"
        disk.write_bytes(b"\0" * (self.DISK_SIZE if disk_size is None else disk_size))
        (d / "disk.info").write_text(json.dumps({str(disk): "raw"}))
        for fname, content in (files or {}).items():
            (d / fname).write_bytes(content)
        if age is not None:
            self.backdate(d, age)
        return d

    def instance(self, uuid: str | None = None, **kw) -> pathlib.Path:
        """``<uuid>``: a live instance's directory."""
        return self.make_dir(uuid or str(uuidlib.uuid4()), **kw)

    def resize(self, uuid: str | None = None, **kw) -> pathlib.Path:
        """``<uuid>_resize``: the source copy kept during a resize/cold migration."""
        return self.make_dir(f"{uuid or uuidlib.uuid4()}_resize", **kw)

    def deleting(self, uuid: str | None = None, **kw) -> pathlib.Path:
        """``<uuid>_del``: left by an interrupted delete."""
        return self.make_dir(f"{uuid or uuidlib.uuid4()}_del", **kw)

    @staticmethod
    def backdate(path: os.PathLike, age: float) -> None:
        """Set the mtime (and atime) of ``path`` to ``age`` seconds ago."""
        t = time.time() - age
        os.utime(path, (t, t))


@pytest.fixture
def instances_path(tmp_path) -> InstancesPath:
    """An empty instances directory (``tmp_path/instances``) with helpers:
    ``.instance(uuid)``, ``.resize(uuid)``, ``.deleting(uuid)``, ``.make_dir(name)``."""
    p = tmp_path / "instances"
    p.mkdir()
    return InstancesPath(p)


# --------------------------------------------------------------------------
# conf: option overrides on the process-wide CONF, always undone
# --------------------------------------------------------------------------

@pytest.fixture
def conf():
    """``oslo_config.fixture.Config`` on the global ``cfg.CONF``: set overrides with
    ``conf.config(name=value, group=...)``. Every override (and every option the
    fixture registered) is undone after the test, even when it fails, so one test's
    options never leak into the next."""
    from oslo_config import cfg
    from oslo_config import fixture as cfg_fixture

    fix = cfg_fixture.Config(cfg.CONF)
    fix.setUp()
    try:
        yield fix
    finally:
        fix.cleanUp()
