"""The domain parser on XML written by Nova's own libvirt config classes.

The fixtures (tests/fixtures/nova_xml, see its README.txt) are Nova's XML as
nova-compute defines it; each is checked as it is and after libvirt re-serialises
it (defined on the in-process test driver, read back with XMLDesc(0), as the
collector reads every domain).
"""
from __future__ import annotations

import dataclasses
import os

import libvirt
import pytest

from reaper.kinds.instance import libvirt as libvirt_inv
from reaper.objects.host import DomainDisk, DomainInterface

HERE = os.path.join(os.path.dirname(__file__), "..", "..", "..", "fixtures", "nova_xml")
NAME_RE = libvirt_inv.template_regex("instance-%08x")
INST = "/var/lib/nova/instances"


def _fixture(name: str) -> str:
    with open(os.path.join(HERE, name)) as f:
        return f.read()


EXPECTED = {
    "image_hybrid.xml": dict(
        uuid="6f3a2b1c-0d4e-4f5a-8b6c-7d8e9f0a1b2c", name="instance-0000002a",
        disks=[("vda", "disk", "file", f"{INST}/6f3a2b1c-0d4e-4f5a-8b6c-7d8e9f0a1b2c/disk",
                None),
               ("sda", "cdrom", "file",
                f"{INST}/6f3a2b1c-0d4e-4f5a-8b6c-7d8e9f0a1b2c/disk.config", None)],
        interfaces=[DomainInterface(type="bridge", mac="fa:16:3e:12:34:56",
                                    target_dev="tap1c2d3e4f-5a", source_bridge="qbr1c2d3e4f-5a")],
        files={f"{INST}/6f3a2b1c-0d4e-4f5a-8b6c-7d8e9f0a1b2c/disk",
               f"{INST}/6f3a2b1c-0d4e-4f5a-8b6c-7d8e9f0a1b2c/disk.config",
               f"{INST}/6f3a2b1c-0d4e-4f5a-8b6c-7d8e9f0a1b2c/console.log"}),
    "volume_iscsi_ovs.xml": dict(
        uuid="0a1b2c3d-4e5f-4a6b-9c7d-8e9f0a1b2c3d", name="instance-0000002b",
        disks=[("vda", "disk", "block",
                "/dev/disk/by-path/ip-192.0.2.10:3260-iscsi-iqn.2010-10.org.openstack:"
                "volume-7e8f9a0b-1c2d-4e3f-8a4b-5c6d7e8f9a0b-lun-1",
                "7e8f9a0b-1c2d-4e3f-8a4b-5c6d7e8f9a0b"),
               ("vdb", "disk", "block",
                "/dev/disk/by-id/dm-uuid-mpath-360014051a2b3c4d5e6f7a8b9c0d1e2f3",
                "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f")],
        interfaces=[DomainInterface(type="bridge", mac="fa:16:3e:ab:cd:ef",
                                    target_dev="tap2d3e4f5a-6b", source_bridge="br-int",
                                    interface_id="2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a")],
        files={"/dev/disk/by-path/ip-192.0.2.10:3260-iscsi-iqn.2010-10.org.openstack:"
               "volume-7e8f9a0b-1c2d-4e3f-8a4b-5c6d7e8f9a0b-lun-1",
               "/dev/disk/by-id/dm-uuid-mpath-360014051a2b3c4d5e6f7a8b9c0d1e2f3",
               f"{INST}/0a1b2c3d-4e5f-4a6b-9c7d-8e9f0a1b2c3d/console.log"}),
    "ceph_ethernet_vhostuser.xml": dict(
        uuid="9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a", name="instance-0000002c",
        disks=[("vda", "disk", "network", "rbd:vms/9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a_disk",
                None),
               ("vdb", "disk", "network",
                "rbd:volumes/volume-5a6b7c8d-9e0f-4a1b-8c3d-4e5f6a7b8c9d",
                "5a6b7c8d-9e0f-4a1b-8c3d-4e5f6a7b8c9d")],
        interfaces=[DomainInterface(type="ethernet", mac="fa:16:3e:00:aa:01",
                                    target_dev="tap3e4f5a6b-7c", source_bridge=None),
                    DomainInterface(type="vhostuser", mac="fa:16:3e:00:aa:02",
                                    target_dev=None, source_bridge=None)],
        files={"/var/run/openvswitch/vhu4f5a6b7c-8d",
               f"{INST}/9f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1a/console.log"}),
    "rescue_uefi_sriov.xml": dict(
        uuid="1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e", name="instance-0000002d",
        disks=[("vda", "disk", "file", f"{INST}/1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e/disk.rescue",
                None),
               ("vdb", "disk", "file", f"{INST}/1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e/disk",
                None)],
        interfaces=[DomainInterface(type="direct", mac="fa:16:3e:00:bb:01", target_dev=None,
                                    source_bridge=None, source_dev="enp4s0f1v3")],
        files={f"{INST}/1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e/disk.rescue",
               f"{INST}/1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e/disk",
               f"{INST}/1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e/kernel.rescue",
               f"{INST}/1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e/ramdisk.rescue",
               f"{INST}/1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e/console.log",
               "/usr/share/OVMF/OVMF_CODE.secboot.fd", "/usr/share/OVMF/OVMF_VARS.ms.fd",
               "/var/lib/libvirt/qemu/nvram/instance-0000002d_VARS.fd"}),
}


def _check(dom, exp: dict, state: str, named_by_libvirt: bool = False) -> None:
    assert dom.uuid == exp["uuid"] and dom.name == exp["name"] and dom.state == state
    assert dom.nova_owned and dom.nova_uuid == exp["uuid"]
    assert [(d.target, d.device, d.source_type, d.source, d.serial)
            for d in dom.disks] == exp["disks"]
    got_ifaces = [i for i in dom.interfaces if i.type != "hostdev"]
    if named_by_libvirt:    # libvirt names a target Nova left unnamed (vhost-user)
        got_ifaces = [dataclasses.replace(g, target_dev=None) if e.target_dev is None else g
                      for g, e in zip(got_ifaces, exp["interfaces"], strict=True)]
    assert got_ifaces == exp["interfaces"]
    assert all(isinstance(d, DomainDisk) for d in dom.disks)
    # Every path the rules need is found (libvirt may add more, e.g. /dev/urandom).
    assert exp["files"] <= set(dom.files), exp["files"] - set(dom.files)


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_nova_xml_as_nova_writes_it(fixture):
    dom = libvirt_inv.parse_domain_xml(_fixture(fixture), "running", NAME_RE)
    _check(dom, EXPECTED[fixture], "running")


@pytest.mark.parametrize("fixture", sorted(EXPECTED))
def test_nova_xml_after_libvirt_round_trip(fixture):
    """What the collector really reads: libvirt's re-serialisation of Nova's XML."""
    conn = libvirt_inv.open_connection("test:///default")
    try:
        dom = conn.defineXML(_fixture(fixture))
        res = libvirt_inv.collect_domains(conn, "instance-%08x")
        dom.undefine()
    finally:
        conn.close()
    assert res.ok
    got = [d for d in res.items if d.uuid == EXPECTED[fixture]["uuid"]]
    assert len(got) == 1
    exp = dict(EXPECTED[fixture])
    # the collector resolves paths: on this host they resolve to themselves except
    # where a directory is a symlink (/var/run -> /run)
    exp["files"] = set(libvirt_inv.resolve_files(sorted(exp["files"])))
    _check(got[0], exp, "shutoff", named_by_libvirt=True)


def test_nova_xml_every_disk_and_interface_of_the_fixtures_is_read():
    """No fixture device is skipped: counts per file, as Nova wrote them."""
    for fixture, exp in EXPECTED.items():
        dom = libvirt_inv.parse_domain_xml(_fixture(fixture), "running", NAME_RE)
        assert len(dom.disks) == len(exp["disks"]), fixture
        assert len([i for i in dom.interfaces if i.type != "hostdev"]) == len(exp["interfaces"])


def test_libvirt_is_the_test_driver_here():
    assert libvirt.getVersion() > 0
