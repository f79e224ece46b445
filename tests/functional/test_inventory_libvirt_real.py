"""The libvirt collector against a real KVM domain on qemu:///system.

Needs libvirtd (tools/testhost.sh start). Without it the test skips, except
under CI=true, where it fails.
"""
from __future__ import annotations

import uuid as uuidlib

import pytest

from reaper.kinds.instance import libvirt as libvirt_inv

pytestmark = pytest.mark.functional


def test_collects_a_paused_nova_kvm_domain(kvm_domain_factory, libvirt_conn):
    uuid = str(uuidlib.uuid4())
    # not named by the template: ownership must come from the metadata alone
    name = f"reaper-inv-{uuid[:8]}"
    dom = kvm_domain_factory(uuid, name, start=True, paused=True)
    res = libvirt_inv.collect_domains(libvirt_conn, "instance-%08x")
    assert res.ok, res.error
    [found] = [d for d in res.items if d.uuid == uuid]
    assert (found.name, found.state, found.nova_owned, found.nova_uuid) == \
        (name, "paused", True, uuid)
    assert found.disks == () and found.active

    dom.destroy()
    res = libvirt_inv.collect_domains(libvirt_conn, "instance-%08x")
    [found] = [d for d in res.items if d.uuid == uuid]
    assert found.state == "shutoff" and not found.active

    plain = kvm_domain_factory(name=f"reaper-plain-{uuid[:8]}", nova=False)
    res = libvirt_inv.collect_domains(libvirt_conn, "instance-%08x")
    [other] = [d for d in res.items if d.uuid == plain.UUIDString()]
    assert not other.nova_owned and other.nova_uuid is None
