"""Fixtures of the fault matrix: ``fm_host`` (a throwaway host, see harness.FmHost) and
the services its module shares.

Module scope (``fm_services``): a network namespace, an OVS integration bridge, the
instances_path directory and, in it, the live instance's running guest (a KVM guest
takes ~1.5 s to start and destroy; harness.BystanderGuest rebuilds it if a scenario
touched it). Function scope: everything under test, i.e. the Nova DB, the state DB,
the audit log and config, the target's directories (removed after the test, all but
the guest's), its KVM domains (the functional ``kvm_domain_factory``, which
undefines them whatever happens), the VIF devices and OVS ports (removed after the
test), the iSCSI simulator.

The Nova DB is SQLite unless a test parametrizes ``fm_db`` indirectly with
"mariadb" (``@pytest.mark.parametrize("fm_db", [pytest.param("mariadb",
id="mariadb")], indirect=True)``).
"""
from __future__ import annotations

import shutil
import uuid as uuidlib

import pytest
import sqlalchemy as sa

from reaper.nova import schema
from tests import iscsi_sim
from tests.conftest import InstancesPath, service_unavailable
from tests.fixtures import netplumb as npl
from tests.functional.conftest import LIBVIRT_URI, KvmDomainFactory
from tests.functional.faultmatrix import harness


def _libvirt_open():
    import libvirt
    try:
        return libvirt.open(LIBVIRT_URI)
    except libvirt.libvirtError as exc:
        service_unavailable(f"libvirtd ({LIBVIRT_URI})", exc)



@pytest.fixture(scope="module")
def fm_services(tmp_path_factory):
    """A network namespace ``fm-ns-<hex>``, a bridge ``br-fm-<hex>``, an instances_path
    and the live instance's running guest (harness.BystanderGuest) for the module."""
    npl._require_tools("ip", "ovs-vsctl")
    why = npl.ovs_available()
    if why:
        service_unavailable(f"ovsdb-server ({npl.OVS_DB})", why)
    iscsi_sim.require_mount_namespaces()
    hexid = uuidlib.uuid4().hex[:6]
    ns, br = f"fm-ns-{hexid}", f"br-fm-{hexid}"
    r = npl.sh("ip", "netns", "add", ns, check=False)
    if r.returncode != 0:
        service_unavailable("network namespaces", r.stderr.strip())
    try:
        npl.ip(ns, "link", "set", "lo", "up")
        npl.vsctl("--no-wait", "--", "add-br", br, "--", "set", "bridge", br,
                  "datapath_type=netdev")
        instances = InstancesPath(tmp_path_factory.mktemp("fm-instances"))
        conn = _libvirt_open()
        factory = KvmDomainFactory(conn)
        try:
            yield harness.Services(ns, br, instances,
                                   harness.BystanderGuest(factory, instances, hexid))
        finally:
            errors = factory.cleanup()
            conn.close()
            assert not errors, errors
    finally:
        npl.vsctl("--if-exists", "del-br", br, check=False)
        npl.ip(None, "link", "del", br, check=False)
        npl.sh("ip", "netns", "del", ns, check=False)


@pytest.fixture(scope="session")
def _fm_sqlite_template(tmp_path_factory):
    """An empty Nova DB slice on SQLite, copied for each host (create_all takes 0.5 s)."""
    path = tmp_path_factory.mktemp("fm-nova") / "nova.sqlite"
    eng = sa.create_engine(f"sqlite:///{path}", poolclass=sa.pool.NullPool)
    schema.create_all(eng)
    eng.dispose()
    return path


@pytest.fixture
def fm_db(request, tmp_path):
    """The host's Nova DB: SQLite by default, MariaDB when parametrized so."""
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        path = tmp_path / "nova.sqlite"
        shutil.copyfile(request.getfixturevalue("_fm_sqlite_template"), path)
        url = f"sqlite:///{path}"
        eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
        yield harness.NovaDB("sqlite", url, eng)
        eng.dispose()
        return
    server = request.getfixturevalue("_mariadb_server")
    if not isinstance(server, sa.Engine):
        service_unavailable("MariaDB", getattr(server, "orig", server))
    name = f"reaper_fm_{uuidlib.uuid4().hex[:12]}"
    with server.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    try:
        url = server.url.set(database=name, query={"charset": "utf8mb4"})
        eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            schema.create_all(eng)
            yield harness.NovaDB("mariadb", url.render_as_string(hide_password=False), eng)
        finally:
            eng.dispose()
    finally:
        with server.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))


@pytest.fixture
def fm_host(tmp_path, fm_services, fm_db, kvm_domain_factory):
    """A throwaway compute host (harness.FmHost) with nothing built on it yet."""
    sim = iscsi_sim.SimHost(str(tmp_path / "iscsi")).init()
    host = harness.FmHost(tmp_path, fm_services, fm_db, kvm_domain_factory, sim)
    try:
        yield host
    finally:
        host.close()
