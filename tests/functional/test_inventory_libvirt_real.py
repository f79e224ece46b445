"""The libvirt collector against a real KVM domain on qemu:///system.

Needs libvirtd (tools/testhost.sh start). Without it the test skips, except
under CI=true, where it fails.
"""
from __future__ import annotations

import os
import uuid as uuidlib

import libvirt
import pytest

from reaper.inventory import libvirt as libvirt_inv
from tests.conftest import service_unavailable

pytestmark = pytest.mark.functional

URI = os.environ.get("REAPER_TEST_LIBVIRT_URI", "qemu:///system")


def kvm_xml(uuid: str, name: str) -> str:
    virt = "kvm" if os.path.exists("/dev/kvm") else "qemu"
    return f"""<domain type='{virt}'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <title>reaper-functional-test</title>
  <metadata>
    <nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">
      <nova:package version="27.0.0"/>
      <nova:name>reaper-inventory-test</nova:name>
      <nova:creationTime>2024-05-01 12:00:00</nova:creationTime>
      <nova:flavor name="m1.tiny">
        <nova:memory>32</nova:memory><nova:disk>0</nova:disk><nova:swap>0</nova:swap>
        <nova:ephemeral>0</nova:ephemeral><nova:vcpus>1</nova:vcpus>
      </nova:flavor>
      <nova:owner>
        <nova:user uuid="{uuidlib.uuid4()}">u</nova:user>
        <nova:project uuid="{uuidlib.uuid4()}">p</nova:project>
      </nova:owner>
    </nova:instance>
  </metadata>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <on_crash>destroy</on_crash>
  <devices/>
</domain>"""


def test_collects_a_paused_nova_kvm_domain():
    try:
        conn = libvirt_inv.open_connection(URI)
    except libvirt.libvirtError as exc:
        service_unavailable(f"libvirtd ({URI})", exc)
    uuid = str(uuidlib.uuid4())
    # not named by the template: ownership must come from the metadata alone
    name = f"reaper-inv-{uuid[:8]}"
    try:
        dom = conn.defineXML(kvm_xml(uuid, name))
        try:
            dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
            res = libvirt_inv.collect_domains(conn, "instance-%08x")
            assert res.ok, res.error
            [found] = [d for d in res.items if d.uuid == uuid]
            assert (found.name, found.state, found.nova_owned, found.nova_uuid) == \
                (name, "paused", True, uuid)
            assert found.disks == () and found.active

            dom.destroy()
            res = libvirt_inv.collect_domains(conn, "instance-%08x")
            [found] = [d for d in res.items if d.uuid == uuid]
            assert found.state == "shutoff" and not found.active
        finally:
            try:
                if dom.isActive():
                    dom.destroy()
            finally:
                dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE
                                  | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
        assert uuid not in {d.uuid for d in
                            libvirt_inv.collect_domains(conn, "instance-%08x").items}
    finally:
        conn.close()
