"""Fixtures over the real test host (tools/testhost.sh start): libvirt, MariaDB,
the OpenStack services (tests/fixtures/openstack_cloud.py).

A service that cannot be reached skips the test, except under CI, where it fails
(see tests.conftest.service_unavailable). Overrides: REAPER_TEST_LIBVIRT_URI
(default qemu:///system), REAPER_TEST_MYSQL_URL (default
mysql+pymysql://reaper:reaper@127.0.0.1/, a server URL without database).
"""
from __future__ import annotations

import dataclasses
import itertools
import os
import random
import uuid as uuidlib
from xml.sax.saxutils import escape, quoteattr

import pytest
import sqlalchemy as sa

from reaper.nova import schema
from tests.conftest import service_unavailable
from tests.fixtures.domains import domain_exists
# The OpenStack test stack (tools/openstack/): openstack_stack, openstack.
from tests.fixtures.openstack_cloud import openstack, openstack_stack  # noqa: F401

LIBVIRT_URI = os.environ.get("REAPER_TEST_LIBVIRT_URI", "qemu:///system")
MARIADB_URL = os.environ.get("REAPER_TEST_MYSQL_URL", "mysql+pymysql://reaper:reaper@127.0.0.1/")

NOVA_NS_1_1 = "http://openstack.org/xmlns/libvirt/nova/1.1"
NOVA_NS_1_0 = "http://openstack.org/xmlns/libvirt/nova/1.0"
# Marks every domain the factory defines, so leftovers are easy to find:
#   virsh list --all --title   /   virsh desc <name>
TEST_DOMAIN_TITLE = "reaper-functional-test"


# --------------------------------------------------------------------------
# libvirt
# --------------------------------------------------------------------------

@pytest.fixture
def libvirt_conn():
    """A read-write connection to qemu:///system, closed after the test."""
    import libvirt

    try:
        conn = libvirt.open(LIBVIRT_URI)
    except libvirt.libvirtError as exc:
        service_unavailable(f"libvirtd ({LIBVIRT_URI})", exc)
    yield conn
    try:
        conn.close()
    except libvirt.libvirtError:
        pass


# A random base per test session; names are instance-<8 hex>, like Nova's
# instance_name_template, and unlikely to collide with a parallel run's.
_name_ids = itertools.count(random.randrange(0x10000000, 0x70000000, 0x1000))


def nova_metadata_xml(name: str, *, user_id: str, project_id: str, ns: str = NOVA_NS_1_1,
                      package: str = "27.0.0", flavor: str = "m1.tiny",
                      root_image: str | None = None) -> str:
    """Nova's <nova:instance> block, as LibvirtConfigGuestMetaNovaInstance writes it."""
    root = (f'<nova:root type="image" uuid="{root_image}"/>' if root_image else "")
    return f"""<nova:instance xmlns:nova="{ns}">
      <nova:package version="{package}"/>
      <nova:name>{escape(name)}</nova:name>
      <nova:creationTime>2024-05-01 12:00:00</nova:creationTime>
      <nova:flavor name={quoteattr(flavor)}>
        <nova:memory>32</nova:memory><nova:disk>0</nova:disk><nova:swap>0</nova:swap>
        <nova:ephemeral>0</nova:ephemeral><nova:vcpus>1</nova:vcpus>
      </nova:flavor>
      <nova:owner>
        <nova:user uuid="{user_id}">u</nova:user>
        <nova:project uuid="{project_id}">p</nova:project>
      </nova:owner>{root}
    </nova:instance>"""


def _disk_xml(index: int, disk) -> str:
    """``disk`` is a path, or a dict: path, target (vdX), format (raw), serial, device."""
    if not isinstance(disk, dict):
        disk = {"path": os.fspath(disk)}
    target = disk.get("target") or "vd" + "abcdefghijklmnopqrstuvwxyz"[index]
    serial = f"<serial>{escape(disk['serial'])}</serial>" if disk.get("serial") else ""
    return (f"<disk type='file' device={quoteattr(disk.get('device', 'disk'))}>"
            f"<driver name='qemu' type={quoteattr(disk.get('format', 'raw'))}/>"
            f"<source file={quoteattr(os.fspath(disk['path']))}/>"
            f"<target dev={quoteattr(target)} bus='virtio'/>{serial}</disk>")


class KvmDomainFactory:
    """Defines real KVM domains on qemu:///system and removes them all at teardown.

    ``factory(...)`` returns the ``libvirt.virDomain``. Domains have 32 MiB, one
    vCPU, no disk unless given, and run as root:root (a static DAC seclabel) so
    qemu can open disk files under the root-only pytest tmp dirs.
    """

    def __init__(self, conn):
        self.conn = conn
        self.created: list[tuple[str, str]] = []      # (uuid, name)
        self.virt_type = "kvm" if os.path.exists("/dev/kvm") else "qemu"

    def new_name(self) -> str:
        return f"instance-{next(_name_ids):08x}"

    def xml(self, uuid: str, name: str, *, nova: bool = True, nova_name: str | None = None,
            nova_ns: str = NOVA_NS_1_1, user_id: str | None = None,
            project_id: str | None = None, disks=(), extra_devices: str = "",
            memory_mib: int = 32) -> str:
        """The domain XML ``__call__`` uses; handy on its own for createXML tests."""
        meta = ""
        if nova:
            meta = "<metadata>" + nova_metadata_xml(
                nova_name or f"vm-{uuid[:8]}", ns=nova_ns,
                user_id=user_id or str(uuidlib.uuid4()),
                project_id=project_id or str(uuidlib.uuid4())) + "</metadata>"
        disk_xml = "".join(_disk_xml(i, d) for i, d in enumerate(disks))
        return f"""<domain type='{self.virt_type}'>
  <name>{escape(name)}</name>
  <uuid>{uuid}</uuid>
  <title>{TEST_DOMAIN_TITLE}</title>
  <description>reaper functional test domain (pid {os.getpid()})</description>
  {meta}
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <on_crash>destroy</on_crash>
  <devices>{disk_xml}{extra_devices}</devices>
  <seclabel type='static' model='dac' relabel='no'><label>+0:+0</label></seclabel>
</domain>"""

    def __call__(self, uuid: str | None = None, name: str | None = None, *,
                 start: bool = False, paused: bool = True, persistent: bool = True,
                 **xml_kw):
        """Define (``persistent``) or create (transient, always started) a domain.

        ``start=True`` boots it, paused unless ``paused=False`` (a diskless guest
        just spins in the firmware). Keyword arguments of :meth:`xml`: ``nova``
        (add Nova's metadata, default True), ``nova_name``, ``nova_ns``,
        ``user_id``, ``project_id``, ``disks`` (paths or dicts), ``extra_devices``
        (raw XML inside <devices>), ``memory_mib``.
        """
        import libvirt

        uuid = uuid or str(uuidlib.uuid4())
        name = name or self.new_name()
        xml = self.xml(uuid, name, **xml_kw)
        flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0
        self.created.append((uuid, name))
        if not persistent:
            return self.conn.createXML(xml, flags)
        dom = self.conn.defineXML(xml)
        if start:
            dom.createWithFlags(flags)
        return dom

    def cleanup(self) -> list[str]:
        """Destroy and undefine every domain made here; returns error texts."""
        import libvirt

        conn, errors = self.conn, []
        try:
            alive = conn.isAlive()
        except libvirt.libvirtError:
            alive = False
        if not alive:                       # the test closed it: use a fresh one
            conn = libvirt.open(LIBVIRT_URI)
        for uuid, name in self.created:
            try:
                dom = conn.lookupByUUIDString(uuid)
            except libvirt.libvirtError:
                continue                    # the test (or the reaper) removed it
            try:
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                                      | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                                      | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            except libvirt.libvirtError as exc:
                if domain_exists(conn, uuid):        # gone meanwhile is fine
                    errors.append(f"{name} ({uuid}): {exc}")
        if conn is not self.conn:
            conn.close()
        return errors


@pytest.fixture
def kvm_domain_factory(libvirt_conn):
    """``kvm_domain_factory(uuid=None, name=None, *, start=False, paused=True,
    persistent=True, nova=True, ...) -> virDomain``; every domain is destroyed and
    undefined after the test, whatever its outcome."""
    factory = KvmDomainFactory(libvirt_conn)
    yield factory
    errors = factory.cleanup()
    if errors:
        pytest.fail("could not remove test domains: " + "; ".join(errors), pytrace=False)


# --------------------------------------------------------------------------
# Nova DB
# --------------------------------------------------------------------------

@dataclasses.dataclass
class NovaDB:
    kind: str                   # "sqlite" or "mariadb"
    url: str                    # with the password, ready for [database] connection
    engine: sa.Engine


@pytest.fixture(scope="session")
def _mariadb_server():
    """An engine on the MariaDB server itself (no database); None if unreachable."""
    eng = sa.create_engine(MARIADB_URL, connect_args={"connect_timeout": 5},
                           poolclass=sa.pool.NullPool)
    try:
        with eng.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.DBAPIError as exc:
        eng.dispose()
        yield exc
        return
    yield eng
    eng.dispose()


@pytest.fixture(params=["sqlite", "mariadb"])
def nova_db(request, tmp_path):
    """A fresh, empty Nova DB slice (``schema.create_all`` applied), once on SQLite
    (a file in tmp_path) and once on MariaDB (database ``reaper_test_<random>``,
    dropped afterwards). ``.url``, ``.engine``, ``.kind``."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'nova.sqlite'}"
        eng = sa.create_engine(url)
        schema.create_all(eng)
        yield NovaDB("sqlite", url, eng)
        eng.dispose()
        return

    server = request.getfixturevalue("_mariadb_server")
    if not isinstance(server, sa.Engine):
        service_unavailable(f"MariaDB ({sa.make_url(MARIADB_URL)!r})",
                            getattr(server, "orig", server))
    name = f"reaper_test_{uuidlib.uuid4().hex[:12]}"
    with server.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    try:
        url = server.url.set(database=name, query={"charset": "utf8mb4"})
        eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
        try:
            schema.create_all(eng)
            yield NovaDB("mariadb", url.render_as_string(hide_password=False), eng)
        finally:
            eng.dispose()
    finally:
        with server.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
