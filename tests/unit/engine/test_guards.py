"""Guards (doc/design.md "Guards"), as pure functions."""
from __future__ import annotations

import datetime

from reaper import guards
from reaper.objects.fields import Action, Classification
from reaper.objects.host import CollectorResult, Domain, Inventory
from reaper.objects.nova import ComputeNodeRow, InstanceRow, NovaView
from reaper.objects.plan import TeardownPlan
from tests.fixtures import records
from tests.unit.engine.test_planner import HOST, NOW, OTHER, idir, policy

CN = ComputeNodeRow(1, "cn-uuid", HOST, HOST)


def dom(i: int, nova=True) -> Domain:
    u = f"{i:08d}-0000-0000-0000-000000000000"
    return records.domain(uuid=u, name=f"instance-{i:08x}", nova=nova)


def inv(n_domains=0, dirs=(), dom_ok=True, dir_ok=True) -> Inventory:
    return Inventory(CollectorResult("domain", dom_ok, tuple(dom(i) for i in range(n_domains)),
                                     None if dom_ok else "libvirt down"),
                     CollectorResult("instance_dir", dir_ok, tuple(dirs),
                                     None if dir_ok else "gone"), "ext4")


def live_row(uuid="x", host=HOST, deleted=0) -> InstanceRow:
    return records.row(id=1, uuid=uuid, host=host, deleted=deleted)


def teardown(i: int, domain=True) -> TeardownPlan:
    return TeardownPlan(f"{i:08d}-0000-0000-0000-000000000000", Classification.EVACUATED,
                        Action.REAP, f"instance-{i:08x}" if domain else None, (), True, False, "")


def test_host_identity_ok_and_rename_detected():
    view = NovaView(ok=True, compute_nodes=(CN,))
    assert not guards.host_identity(view, policy(), None).tripped
    assert not guards.host_identity(view, policy(), "cn-uuid").tripped
    g = guards.host_identity(view, policy(host="renamed", hypervisor_hostname="renamed"), None)
    assert g.tripped and "possible rename" in g.reason
    g = guards.host_identity(view, policy(hypervisor_hostname="other-node"), None)
    assert g.tripped
    g = guards.host_identity(view, policy(), "another-uuid")
    assert g.tripped and "compute_id" in g.reason
    assert guards.host_identity(NovaView(ok=True), policy(), None).tripped


def test_unreachable_db_trips():
    gs = guards.unready_view(inv(3), NovaView(ok=False, error="refused"), policy())
    assert [g.name for g in gs] == ["view_unavailable"] and gs[0].scope == "pass"


def test_failed_collector_blocks_its_kind_only():
    gs = guards.unready_view(inv(0, dom_ok=False), NovaView(ok=True, instances={"x": live_row()}),
                             policy())
    assert [(g.name, g.scope) for g in gs] == [("collector_failed", "domain")]


def test_empty_view_trips_when_domains_or_dirs_exist():
    empty = NovaView(ok=True, compute_nodes=(CN,))
    assert [g.name for g in guards.unready_view(inv(2), empty, policy())] == ["empty_view"]
    assert [g.name for g in guards.unready_view(inv(0, dirs=[idir()]), empty, policy())] == [
        "empty_view"]
    # rows of other hosts only: still a view that does not know us
    others = NovaView(ok=True, instances={"x": live_row(host=OTHER)})
    assert [g.name for g in guards.unready_view(inv(2), others, policy())] == ["empty_view"]
    # nothing local, nothing in DB: fine
    assert guards.unready_view(inv(0), empty, policy()) == []


def test_all_evacuated_host_is_not_an_empty_view():
    evac = records.migration(instance_uuid="u", source=HOST, dest=OTHER)
    view = NovaView(ok=True, instances={"u": live_row("u", host=OTHER)}, migrations=(evac,))
    assert guards.unready_view(inv(2), view, policy()) == []
    deleted_here = NovaView(ok=True, instances={"u": live_row("u", deleted=1)})
    assert guards.unready_view(inv(2), deleted_here, policy()) == []


def test_mass_destruction_count_and_fraction():
    pol = policy(max_destroy_per_pass=3, max_destroy_fraction=0.5)
    assert not guards.mass_destruction([teardown(i) for i in range(3)], inv(10), pol, False).tripped
    g = guards.mass_destruction([teardown(i) for i in range(4)], inv(10), pol, False)
    assert g.tripped and "4 instances" in g.reason
    g = guards.mass_destruction([teardown(i) for i in range(3)], inv(4), pol, False)
    assert g.tripped and "3 of 4" in g.reason
    assert not guards.mass_destruction([teardown(i) for i in range(3)], inv(4), pol, True).tripped
    # dir-only teardowns count toward the per-pass limit, not the domain fraction
    g = guards.mass_destruction([teardown(i, domain=False) for i in range(3)], inv(1), pol, False)
    assert not g.tripped


def test_ripe_needs_count_and_time():
    pol = policy(grace_observations=2, grace_seconds=60)
    t0 = NOW - datetime.timedelta(seconds=120)
    assert guards.ripe("k", {"k": (2, t0)}, pol, NOW)[0]
    assert not guards.ripe("k", {"k": (1, t0)}, pol, NOW)[0]
    assert not guards.ripe("k", {"k": (5, NOW - datetime.timedelta(seconds=30))}, pol, NOW)[0]
    assert not guards.ripe("k", {}, pol, NOW)[0]
