"""Smoke tests of the test host itself (tools/testhost.sh) and of the fixtures."""
from __future__ import annotations

import os
import socket
import subprocess
import uuid as uuidlib
import xml.etree.ElementTree as ET

import pytest
import sqlalchemy as sa

from reaper.nova import schema as s
from tests.conftest import service_unavailable
from tests.fixtures import novadb
from tests.functional.conftest import NOVA_NS_1_1, TEST_DOMAIN_TITLE

pytestmark = pytest.mark.functional


def test_kvm_domain_defined_started_paused_and_listed(kvm_domain_factory, libvirt_conn,
                                                      instances_path):
    import libvirt

    uuid = str(uuidlib.uuid4())
    disk = instances_path.instance(uuid) / "disk"
    dom = kvm_domain_factory(uuid, start=True, nova_name="smoke", disks=[
        {"path": disk, "serial": "vol-1"}])
    assert dom.UUIDString() == uuid and dom.name().startswith("instance-")
    state, _ = dom.state()
    assert state == libvirt.VIR_DOMAIN_PAUSED

    listed = {d.UUIDString(): d for d in libvirt_conn.listAllDomains()}
    assert uuid in listed

    root = ET.fromstring(dom.XMLDesc())
    expected_type = "kvm" if os.path.exists("/dev/kvm") else "qemu"
    assert root.get("type") == expected_type
    assert root.findtext("title") == TEST_DOMAIN_TITLE
    assert root.find("devices/disk/source").get("file") == str(disk)
    assert root.findtext("devices/disk/serial") == "vol-1"
    # Nova's metadata is namespaced in the domain XML...
    ns = {"nova": NOVA_NS_1_1}
    meta = root.find("metadata/nova:instance", ns)
    assert meta.findtext("nova:name", namespaces=ns) == "smoke"
    assert meta.find("nova:owner/nova:project", ns).get("uuid")
    # ...but virDomain.metadata() hands the element back with the namespace stripped.
    bare = ET.fromstring(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NOVA_NS_1_1))
    assert bare.tag == "instance" and bare.findtext("name") == "smoke"


def test_kvm_domain_factory_removes_its_domains(kvm_domain_factory, libvirt_conn):
    import libvirt

    factory = kvm_domain_factory
    running = factory(start=True, nova=False)
    defined = factory()
    transient = factory(persistent=False)
    gone = factory()
    gone.undefine()                              # removed by the test itself: fine
    uuids = [d.UUIDString() for d in (running, defined, transient)]
    assert factory.cleanup() == []
    for uuid in uuids:
        with pytest.raises(libvirt.libvirtError):
            libvirt_conn.lookupByUUIDString(uuid)


def test_nova_db_round_trip(nova_db):
    node = novadb.add_compute_node(nova_db.engine, "cmp-a")
    assert node["service_id"] and node["hypervisor_hostname"] == "cmp-a"
    inst = novadb.add_instance(nova_db.engine, host="cmp-a", task_state="deleting")
    gone = novadb.add_instance(nova_db.engine, host="cmp-a", deleted=True)
    assert gone["deleted"] == gone["id"] and gone["vm_state"] == "deleted"
    assert gone["deleted_at"] is not None

    mig = novadb.add_migration(nova_db.engine, inst["uuid"], "cmp-a", "cmp-b",
                               "running", "live-migration")
    bdm = novadb.add_bdm(nova_db.engine, inst["uuid"])
    assert bdm["volume_id"] in bdm["connection_info"]
    novadb.add_info_cache(nova_db.engine, inst["uuid"], [novadb.vif()])
    deps = novadb.add_dependents(nova_db.engine, inst["uuid"])
    assert set(deps) == {t.name for t, _ in s.DEPENDENT_TABLES}

    # A second engine on the same URL sees what the first wrote.
    other = sa.create_engine(nova_db.url)
    try:
        with other.connect() as conn:
            row = conn.execute(sa.select(s.instances).where(
                s.instances.c.uuid == inst["uuid"])).mappings().one()
            migs = conn.execute(sa.select(s.migrations.c.id).where(
                s.migrations.c.instance_uuid == inst["uuid"])).scalars().all()
    finally:
        other.dispose()
    assert row["host"] == "cmp-a" and row["task_state"] == "deleting" and row["deleted"] == 0
    assert mig["id"] in migs and len(migs) == 2        # plus add_dependents' one

    archived = novadb.archive_instance(nova_db.engine, gone["uuid"])
    assert novadb.get_instance(nova_db.engine, gone["uuid"]) is None
    shadow = novadb.get_instance(nova_db.engine, gone["uuid"], shadow=True)
    assert shadow["id"] == archived["id"] == gone["id"]


@pytest.mark.parametrize("nova_db", ["mariadb"], indirect=True)
def test_mariadb_listens_on_loopback_only(nova_db):
    assert nova_db.kind == "mariadb"
    with nova_db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT @@bind_address")).scalar() in ("127.0.0.1",
                                                                            "localhost")


def _run(cmd, what):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError) as exc:
        err = getattr(exc, "stderr", "") or ""
        service_unavailable(what, f"{exc} {err.strip()}")


def test_ovs_answers():
    out = _run(["ovs-vsctl", "--db=unix:/var/run/openvswitch/db.sock", "--timeout=10",
                "show"], "OVS (ovsdb-server)")
    assert out.stdout.strip()                    # the Open_vSwitch row's uuid at least
    _run(["ovs-appctl", "-t", "ovs-vswitchd", "version"], "OVS (ovs-vswitchd)")
    # The TCP remote is there too, on loopback only.
    with socket.create_connection(("127.0.0.1", 6640), timeout=5):
        pass


def test_rabbitmq_answers():
    from kombu import Connection
    from kombu.exceptions import OperationalError

    try:
        with Connection("amqp://guest:guest@127.0.0.1:5672//", connect_timeout=5) as conn:
            conn.connect()
            with conn.channel() as chan:
                _, count, _ = chan.queue_declare("reaper-testhost-smoke", auto_delete=True)
                chan.queue_delete("reaper-testhost-smoke")
    except (OSError, OperationalError) as exc:
        service_unavailable("RabbitMQ (amqp://127.0.0.1:5672)", exc)
    assert count == 0
