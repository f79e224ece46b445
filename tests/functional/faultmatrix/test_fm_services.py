"""Fault-matrix scenarios of the service steps (issue 11): Neutron, Cinder and
Placement reached through the reaper's own config, one of them wrong at a time.

Real parts: the OpenStack test stack (Keystone, Neutron, Cinder, Placement on
loopback), ``reaper-manage reap`` as a separate process reading a config file, a
SQLite Nova DB and libvirt's test driver. A service is "down" by an endpoint where
nothing listens in the reaper's config, never by stopping the shared services.
"""
from __future__ import annotations

import pytest

from tests.fixtures.steps import StepsHost, assert_as_nova_leaves_a_reclaim, sections

pytestmark = pytest.mark.functional

STEP = {"neutron": "release_ports", "cinder": "detach_volumes",
        "placement": "delete_allocations"}


@pytest.fixture
def host(tmp_path):
    h = StepsHost(tmp_path)
    yield h
    h.close()


def _action(report, uuid):
    (a,) = [a for a in report["actions"] if a["instance_uuid"] == uuid]
    return a


@pytest.mark.parametrize("group", [pytest.param(g, id=f"{g}-unreachable")
                                   for g in ("neutron", "cinder", "placement")])
def test_service_unreachable_then_back(host, openstack, group):
    """A reclaim runs while the reaper's config points one service at a port where
    nothing listens; the next pass runs with the config fixed.

    Expect: first pass exit 1: the host teardown, the other services and the DB
    finalize are done, that service's step is failed in the journal and listed in the
    leftovers; second pass exit 4: only that step runs, the journal is empty, and
    Neutron, Cinder and Placement are as Nova's delete leaves them.
    """
    inst = host.reclaimable(openstack)
    r, rep = host.manage(sections(openstack.stack, unreachable=(group,)))
    assert rep is not None, r.stderr
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    a = _action(rep, inst.uuid)
    steps = dict(a["steps"])
    assert a["result"] == "done" and steps[STEP[group]].startswith("failed:"), steps
    assert steps["finalize_db"].startswith("finalized")
    assert host.row(inst.uuid)["vm_state"] == "deleted"
    assert a["evidence"]["controller_leftovers"]["facts"]["uuid"] == inst.uuid
    (entry,) = host.journal()
    assert entry.steps[STEP[group]] == "failed"
    r, rep = host.manage(sections(openstack.stack))
    assert r.returncode == 4, (r.returncode, r.stderr[-2000:])
    a = _action(rep, inst.uuid)
    assert a["result"] == "done" and dict(a["steps"])["finalize_db"] == "done earlier"
    assert host.journal() == []
    assert_as_nova_leaves_a_reclaim(openstack, inst)


def test_cinder_account_without_admin_acts_on_nothing(host, openstack):
    """[cinder] authenticates as an account with the service role only, which Cinder
    scopes to its own project (a 404 for the instance owner's volumes).

    Expect: exit 1; the Cinder step is failed (never taken as "already gone"), both
    volumes stay attached to the instance, the ports and allocations are done, the
    row is finalized; with the admin account configured the next pass finishes.
    """
    inst = host.reclaimable(openstack)
    r, rep = host.manage(sections(openstack.stack, group_users={}))
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    steps = dict(_action(rep, inst.uuid)["steps"])
    assert steps["detach_volumes"].startswith("failed:") and "admin" in steps[
        "detach_volumes"], steps
    assert openstack.volume(inst.new_volume)["status"] == "in-use"
    assert openstack.volume(inst.old_volume)["status"] == "in-use"
    assert openstack.port(inst.nova_port) is None
    assert openstack.allocations(inst.uuid) == {}
    r, rep = host.manage(sections(openstack.stack))
    assert r.returncode == 4, (r.returncode, r.stderr[-2000:])
    assert host.journal() == []
    assert_as_nova_leaves_a_reclaim(openstack, inst)


def test_evacuated_placement_unreachable_then_back(host, openstack):
    """An evacuated guest is torn down while the reaper's [placement] endpoint is
    wrong; the next pass runs with it fixed.

    Expect: first pass exit 1: the guest is gone, the source node's allocations and
    the migration ('done') are untouched; second pass exit 4: the source node's tree
    is removed from the allocations (the destination's stay) and the migration is
    'completed'.
    """
    ev = host.evacuated(openstack)
    r, rep = host.manage(sections(openstack.stack, unreachable=("placement",)))
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    assert host.migration_status(ev.migration_id) == "done"
    assert ev.source.uuid in openstack.allocations(ev.uuid)
    r, rep = host.manage(sections(openstack.stack))
    assert r.returncode == 4, (r.returncode, r.stderr[-2000:])
    assert host.migration_status(ev.migration_id) == "completed"
    assert set(openstack.allocations(ev.uuid)) == {ev.dest.uuid, ev.dest.child_uuid}
    assert host.journal() == []
