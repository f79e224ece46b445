"""Reclaims and evacuation cleanups finish in Neutron, Cinder and Placement as Nova's
own code does, on the real OpenStack test stack (Keystone, Neutron, Cinder, Placement
on loopback: tools/openstack), a SQLite Nova DB and libvirt's test driver.

A service is made unreachable by the reaper's own config (an endpoint_override where
nothing listens), never by stopping the shared services.
"""
from __future__ import annotations

import json

import pytest

from reaper.services import (DELETE_ALLOCATIONS, DETACH_VOLUMES, RELEASE_PORTS,
                             REMOVE_NODE_ALLOCATIONS, InstanceFacts)
from reaper.services import cinder, neutron, placement
from tests.fixtures.steps import StepsHost, assert_as_nova_leaves_a_reclaim, clients, sections

pytestmark = pytest.mark.functional

STEP_OF = {"neutron": RELEASE_PORTS, "cinder": DETACH_VOLUMES, "placement": DELETE_ALLOCATIONS}
SERVICE_OF = {"neutron": "network", "cinder": "block-storage", "placement": "placement"}


@pytest.fixture
def host(tmp_path):
    h = StepsHost(tmp_path)
    yield h
    h.close()


def _action(rep, uuid):
    (a,) = [a for a in rep.actions if a["instance_uuid"] == uuid]
    return a


def test_reclaim_ends_as_novas_delete_in_every_service(host, openstack):
    inst = host.reclaimable(openstack, domain=True)
    rep = host.run(sections(openstack.stack))
    a = _action(rep, inst.uuid)
    assert a["result"] == "done", a
    steps = dict(a["steps"])
    assert [s for s, _d in a["steps"]][-4:] == [RELEASE_PORTS, DETACH_VOLUMES,
                                                DELETE_ALLOCATIONS, "finalize_db"]
    assert steps[RELEASE_PORTS].startswith("deleted 1 port(s); unbound 1"), steps
    assert_as_nova_leaves_a_reclaim(openstack, inst)
    assert host.row(inst.uuid)["vm_state"] == "deleted"
    assert host.journal() == []
    left = a["evidence"]["controller_leftovers"]
    assert {s["status"] for s in left["services"].values()} == {"done"}
    assert left["ports"] == [] and left["allocations"] is None and "facts" not in left
    assert rep.exit_code == 4


def test_a_second_run_of_each_function_is_a_no_op(host, openstack):
    """Idempotence on the real services: what is gone counts as done."""
    inst = host.reclaimable(openstack)
    rep = host.run(sections(openstack.stack))
    assert _action(rep, inst.uuid)["result"] == "done"
    c = clients(sections(openstack.stack))
    facts = InstanceFacts.from_dict(_action(rep, inst.uuid)["evidence"]
                                    ["controller_leftovers"].get("facts") or {
                                        "uuid": inst.uuid})
    assert neutron.release_ports(c.neutron.adapter, facts).done
    assert cinder.detach_volumes(c.cinder.adapter, facts).done
    assert placement.delete_allocations(c.placement.adapter, facts).done
    assert_as_nova_leaves_a_reclaim(openstack, inst)


def test_evacuated_source_allocations_removed_and_migration_completed(host, openstack):
    ev = host.evacuated(openstack)
    rep = host.run(sections(openstack.stack))
    a = _action(rep, ev.uuid)
    assert a["result"] == "done", a
    assert [s for s, _d in a["steps"]][-2:] == [REMOVE_NODE_ALLOCATIONS, "complete_migration"]
    assert set(openstack.allocations(ev.uuid)) == {ev.dest.uuid, ev.dest.child_uuid}
    assert not any(openstack.usages(ev.source.uuid).values())
    assert not any(openstack.usages(ev.source.child_uuid).values())
    assert host.migration_status(ev.migration_id) == "completed"
    assert host.journal() == []


@pytest.mark.parametrize("group", ["neutron", "cinder", "placement"])
def test_a_service_unreachable_then_back_converges(host, openstack, group):
    inst = host.reclaimable(openstack)
    down = sections(openstack.stack, unreachable=(group,))
    rep = host.run(down)
    a = _action(rep, inst.uuid)
    # the host part and the DB are done; the other services too
    assert a["result"] == "done", a
    steps = dict(a["steps"])
    assert steps[STEP_OF[group]].startswith("failed:"), steps
    for other, step in STEP_OF.items():
        if other != group:
            assert not steps[step].startswith("failed"), (step, steps[step])
    assert host.row(inst.uuid)["vm_state"] == "deleted"
    left = a["evidence"]["controller_leftovers"]
    assert left["services"][SERVICE_OF[group]]["status"] == "failed"
    assert InstanceFacts.from_dict(left["facts"]).uuid == inst.uuid
    assert rep.exit_code == 1                   # a failed step: monitoring sees it
    (entry,) = host.journal()
    assert entry.steps[STEP_OF[group]] == "failed"
    # still down: retried, failed again, nothing else redone
    rep = host.run(down)
    a = _action(rep, inst.uuid)
    assert a["result"] == "failed" and a["evidence"].get("services_retry")
    # back: the next pass finishes exactly that step
    rep = host.run(sections(openstack.stack))
    a = _action(rep, inst.uuid)
    assert a["result"] == "done" and a["evidence"].get("services_retry"), a
    assert dict(a["steps"])[STEP_OF[group]] != "done earlier"
    assert dict(a["steps"])["finalize_db"] == "done earlier"
    assert host.journal() == []
    assert_as_nova_leaves_a_reclaim(openstack, inst)


def test_placement_unreachable_keeps_the_evacuation_done_until_it_is_back(host, openstack):
    ev = host.evacuated(openstack)
    rep = host.run(sections(openstack.stack, unreachable=("placement",)))
    a = _action(rep, ev.uuid)
    assert a["result"] == "done"
    assert dict(a["steps"])["complete_migration"] == f"waits for {REMOVE_NODE_ALLOCATIONS}"
    assert host.migration_status(ev.migration_id) == "done"
    assert ev.source.uuid in openstack.allocations(ev.uuid)
    rep = host.run(sections(openstack.stack))
    a = _action(rep, ev.uuid)
    assert a["result"] == "done", a
    assert host.migration_status(ev.migration_id) == "completed"
    assert set(openstack.allocations(ev.uuid)) == {ev.dest.uuid, ev.dest.child_uuid}
    assert host.journal() == []


def test_without_sections_the_leftovers_are_reported_as_before(host, openstack):
    inst = host.reclaimable(openstack)
    rep = host.run("")
    a = _action(rep, inst.uuid)
    assert a["result"] == "done"
    assert not any(s in dict(a["steps"]) for s in STEP_OF.values())
    left = a["evidence"]["controller_leftovers"]
    assert sorted(left["ports"]) == sorted([inst.nova_port, inst.pre_port])
    assert left["volumes_delete_on_termination"] == [inst.new_volume]
    assert openstack.port(inst.nova_port) is not None
    assert openstack.volume(inst.new_volume)["status"] == "in-use"
    assert openstack.allocations(inst.uuid) != {}
    json.dumps(left)
