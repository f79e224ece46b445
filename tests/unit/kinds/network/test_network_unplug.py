"""The unplug step's decisions with fake netlink/OVS handles and a real SQLite Nova DB:
os-vif's order, re-checks before acting, idempotency, and what is never removed.
(tests/functional/test_network_*.py run the same step on real devices and OVS.)"""
from __future__ import annotations

import dataclasses
import datetime

import pytest
import sqlalchemy as sa

from reaper import exception
from reaper.kinds.network import unplug as net_exec
from reaper.executor import teardown
from reaper.kinds.network import ovs as ovs_inv
from reaper.nova import schema
from reaper.policy import Policy
from reaper.kinds.network.objects import OvsPort
from reaper.objects.fields import Action, Classification
from reaper.objects.host import CollectorResult, Domain, DomainInterface
from reaper.objects.plan import TeardownPlan
from reaper.objects.step import StepResult
from tests.fixtures import novadb

from oslo_config import cfg

from reaper.kinds.instance.plugin import InstanceKind
from reaper.kinds.manager import KindManager
from reaper.kinds.network.plugin import NetworkKind

CONF = cfg.CONF

HOST, OTHER = "cmp-1", "cmp-2"
P = "feed0001-aa"
PORT = P + "bb-cccc-dddd-eeeeeeeeeeee"
Q = "feed0002-bb"
U = "11111111-2222-3333-4444-555555555555"


class FakeNetlink:
    """Links by name; deleting one end of a veth deletes its peer, a bridge frees its ports."""

    def __init__(self, links: list[dict]):
        self.links = {ln["ifname"]: dict(ln) for ln in links}
        self.calls: list[tuple[str, str]] = []

    def _by_index(self, ifindex):
        return next((ln for ln in self.links.values() if ln["index"] == ifindex), None)

    def dump(self):
        return [dict(ln) for ln in self.links.values()]

    def set_down(self, ifindex):
        ln = self._by_index(ifindex)
        self.calls.append(("down", ln["ifname"] if ln else ifindex))
        return ln is not None

    def delete(self, ifindex):
        ln = self._by_index(ifindex)
        if ln is None:
            return False
        self.calls.append(("del", ln["ifname"]))
        del self.links[ln["ifname"]]
        if ln.get("kind") == "veth" and ln.get("link"):
            peer = self._by_index(ln["link"])
            if peer is not None:
                del self.links[peer["ifname"]]
        for other in self.links.values():
            if other.get("master") == ifindex:
                other.pop("master")
        return True

    def close(self):
        pass


class FakeOvs:
    """The integration bridge's ports: names (VIF ports of PORT) or OvsPort records."""
    bridge = "br-int"

    def __init__(self, ports=(), up=True):
        self.ports = {}
        for p in ports:
            if isinstance(p, str):
                p = OvsPort(name=p, bridge=self.bridge, uuid="row-" + p, iface_type="",
                            iface_id=PORT, attached_mac=None, vm_uuid=None)
            self.ports[p.name] = p
        self.up = up

    def ping(self):
        if not self.up:
            raise exception.OvsUnavailable("OVSDB unix:/x: cannot connect (ENOENT)")

    def read_ports(self):
        return True, tuple(self.ports.values())

    def close(self):
        pass



def unplug_kept(ctx, plan) -> str:
    """A leak teardown that removed nothing did not clean a leak: the step aborts, and
    its reason says what was kept and why."""
    with pytest.raises(exception.Aborted) as e:
        _unplug(ctx, plan)
    return str(e.value)

def hybrid_links(prefix=P, tap=True, carrier=0):
    links = [{"index": 10, "ifname": "qbr" + prefix, "kind": "bridge"},
             {"index": 11, "ifname": "qvb" + prefix, "kind": "veth", "link": 12, "master": 10},
             {"index": 12, "ifname": "qvo" + prefix, "kind": "veth", "link": 11}]
    if tap:
        links.append({"index": 13, "ifname": "tap" + prefix, "kind": "tun", "master": 10,
                      "carrier": carrier})
    return links


def item(links, ovs_ports=("qvo" + P,), vm_uuids=(U,)):
    order = {"qbr": 0, "qvb": 1, "qvo": 2, "tap": 3}
    devs = sorted(({"name": ln["ifname"], "role": ln["ifname"][:3], "kind": ln["kind"],
                    "ifindex": ln["index"]} for ln in links), key=lambda d: order[d["role"]])
    return {"prefix": P, "port_id": PORT, "hybrid": True, "vm_uuids": list(vm_uuids),
            "devices": devs,
            "ovs_ports": [{"bridge": "br-int", "name": n, "iface_id": PORT, "uuid": None}
                          for n in ovs_ports], "derived": False}


@pytest.fixture
def engine(tmp_path):
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'nova.sqlite'}")
    schema.create_all(eng)
    return eng


@pytest.fixture
def fake_ovs_delete(monkeypatch):
    deleted = []

    def delete(handle, bridge, name, prefix, iface_id, vm_uuids):
        if name not in handle.ports:
            return StepResult.absent("absent")
        deleted.append((bridge, name, frozenset(vm_uuids)))
        del handle.ports[name]
        return StepResult.done("deleted")
    monkeypatch.setattr(ovs_inv, "delete_vif_port", delete)
    return deleted


def ctx_for(engine, nl, ovs, domains=()):
    handles = net_exec.NetworkHandles(netlink=nl, ovs=ovs, domains=lambda conn: CollectorResult(
        "domain", True, tuple(domains)))
    pol = Policy(host=HOST, hypervisor_hostname=HOST, instances_path="/nonexistent")
    return teardown.Context(conn=object(), engine=engine, state=None, policy=pol,
                            clock=lambda: datetime.datetime(2026, 1, 1),
                            kinds=KindManager([InstanceKind(CONF), NetworkKind(CONF, handles)]))


def _unplug(ctx, plan) -> str:
    """The step as the executor runs it: through the network kind; the text it journals."""
    return str(ctx.kinds.run_step(ctx, "unplug_vifs", plan))


def leak_plan(items) -> TeardownPlan:
    return TeardownPlan(instance_uuid="vif:" + P, classification=Classification.LEAKED_VIF,
                        action=Action.REAP, domain_name=None, dirs=(), destroy_disks=False,
                        finalize_db=False, reason="leaked", vifs=tuple(items))


def domain_plan(items, uuid=U) -> TeardownPlan:
    return TeardownPlan(instance_uuid=uuid, classification=Classification.RUNNING_DELETED,
                        action=Action.REAP, domain_name="instance-00000007", dirs=(),
                        destroy_disks=True, finalize_db=False, reason="deleted",
                        vifs=tuple(items))


def test_hybrid_unplug_in_os_vif_order_and_idempotent(engine, fake_ovs_delete):
    links = hybrid_links()
    nl, ovs = FakeNetlink(links), FakeOvs(["qvo" + P])
    ctx = ctx_for(engine, nl, ovs)
    out = _unplug(ctx, leak_plan([item(links)]))
    assert nl.calls == [("down", "qbr" + P), ("del", "qbr" + P), ("del", "qvo" + P),
                        ("del", "tap" + P)]
    assert fake_ovs_delete == [("br-int", "qvo" + P, frozenset({U, None}))]
    assert nl.links == {} and ovs.ports == {}
    assert "removed qbr" in out and "ovs br-int:qvo" in out and "(and qvb" in out
    # a second run (a resumed journal) finds everything gone and succeeds
    again = _unplug(ctx, leak_plan([item(links)]))
    assert again == f"{P}: already gone"


def test_ovs_down_fails_before_anything_is_removed(engine, fake_ovs_delete):
    links = hybrid_links()
    nl = FakeNetlink(links)
    ctx = ctx_for(engine, nl, FakeOvs(["qvo" + P], up=False))
    with pytest.raises(exception.OvsUnavailable):
        _unplug(ctx, leak_plan([item(links)]))
    assert nl.calls == [] and len(nl.links) == 4


@pytest.mark.parametrize("change,kept", [
    pytest.param(lambda ls: ls[0].update(index=99), "recreated since planned",
                 id="recreated"),
    pytest.param(lambda ls: ls.append({"index": 20, "ifname": "eth9", "kind": "veth",
                                       "master": 10}), "has ports ['eth9']",
                 id="foreign-bridge-port"),
    pytest.param(lambda ls: ls[3].update(carrier=1), "holds it open", id="tap-open"),
    pytest.param(lambda ls: ls[2].update(link=30) or ls.append(
        {"index": 30, "ifname": "vethX", "kind": "veth", "link": 12}),
        f"the veth peer of qvo{P} is vethX", id="peer"),
    pytest.param(lambda ls: ls[2].update(netnsid=4), "another namespace", id="netns"),
    pytest.param(lambda ls: ls[0].update(kind="veth"), "is now a veth", id="kind"),
    pytest.param(lambda ls: ls.append({"index": 31, "ifname": "mv0", "kind": "macvlan",
                                       "link": 12}),
                 f"mv0 (macvlan) is stacked on qvo{P}", id="macvlan-on-qvo"),
    pytest.param(lambda ls: ls.append({"index": 32, "ifname": "tap.100", "kind": "vlan",
                                       "link": 13}),
                 f"tap.100 (vlan) is stacked on tap{P}", id="vlan-on-tap"),
    pytest.param(lambda ls: ls.append({"index": 33, "ifname": "tap" + Q, "kind": "tun",
                                       "master": 10}),
                 f"also has ports ['tap{Q}']", id="other-vifs-tap-on-qbr"),
    pytest.param(lambda ls: ls[2].update(master=40) or ls.append(
        {"index": 40, "ifname": "br-ex", "kind": "bridge"}),
        f"qvo{P} is a port of br-ex", id="qvo-on-a-linux-bridge"),
])
def test_what_changed_since_planning_keeps_the_whole_vif(engine, fake_ovs_delete, change,
                                                          kept):
    planned = hybrid_links()
    now = [dict(ln) for ln in planned]
    change(now)
    nl, ovs = FakeNetlink(now), FakeOvs(["qvo" + P])
    out = unplug_kept(ctx_for(engine, nl, ovs), leak_plan([item(planned)]))
    assert out.startswith(f"{P}: kept whole (") and kept in out
    assert nl.calls == [] and fake_ovs_delete == [] and "qvo" + P in ovs.ports


@pytest.mark.parametrize("port,kept", [
    pytest.param(dict(iface_id=None), "has no iface-id", id="no-iface-id"),
    pytest.param(dict(iface_id=Q + "cc-dddd-eeee-ffffffffffff"), "another port's",
                 id="other-iface-id"),
    pytest.param(dict(vm_uuid="99999999-0000-0000-0000-000000000000"),
                 "vm-uuid is now '99999999", id="other-vm-uuid"),
    pytest.param(dict(skip=True), "reaper-skip=true", id="reaper-skip"),
    pytest.param(dict(iface_type="internal"), "type 'internal'", id="internal"),
])
def test_an_ovs_port_that_must_stay_keeps_the_whole_vif(engine, fake_ovs_delete, port, kept):
    """The OVS port is judged with the devices, before anything is removed: one
    that may not go keeps its devices too (no dangling port, no half-cleaned VIF)."""
    links = hybrid_links()
    nl = FakeNetlink(links)
    ovs = FakeOvs([dataclasses.replace(
        OvsPort(name="qvo" + P, bridge="br-int", uuid="row", iface_type="", iface_id=PORT,
                attached_mac=None, vm_uuid=None), **port)])
    out = unplug_kept(ctx_for(engine, nl, ovs), leak_plan([item(links)]))
    assert out.startswith(f"{P}: kept whole (") and kept in out, out
    assert nl.calls == [] and fake_ovs_delete == []


def test_a_device_or_port_that_appeared_since_planning_keeps_the_whole_vif(
        engine, fake_ovs_delete):
    planned = hybrid_links(tap=False)
    nl = FakeNetlink(hybrid_links())            # a tap was added to the bridge
    out = unplug_kept(ctx_for(engine, nl, FakeOvs(["qvo" + P])),
                               leak_plan([item(planned)]))
    assert f"tap{P} appeared since planned" in out and nl.calls == []
    nl = FakeNetlink(planned)
    out = unplug_kept(ctx_for(engine, nl, FakeOvs(["qvo" + P])),
                               leak_plan([item(planned, ovs_ports=())]))
    assert f"OVS port qvo{P} appeared since planned" in out and nl.calls == []


def test_a_domain_using_a_device_through_source_dev_keeps_it(engine, fake_ovs_delete):
    links = hybrid_links()
    dom = Domain(uuid="99999999-0000-0000-0000-000000000000", name="appliance",
                 state="shutoff", nova_owned=False, nova_uuid=None,
                 interfaces=(DomainInterface("direct", None, None, None,
                                             source_dev="qvo" + P),))
    nl = FakeNetlink(links)
    out = _unplug(ctx_for(engine, nl, FakeOvs(["qvo" + P]), [dom]),
                               domain_plan([item(links)]))
    assert out == f"{P}: kept (now used by domain(s) appliance)" and nl.calls == []


def test_a_port_claimed_in_the_db_since_planning_is_kept(engine, fake_ovs_delete):
    v = novadb.add_instance(engine, host=HOST)["uuid"]
    novadb.add_info_cache(engine, v, [novadb.vif(PORT)])
    links = hybrid_links()
    nl = FakeNetlink(links)
    out = unplug_kept(ctx_for(engine, nl, FakeOvs(["qvo" + P])),
                               leak_plan([item(links)]))
    assert out == f"{P}: kept (now claimed by instance(s) {v})"
    assert nl.calls == [] and fake_ovs_delete == []


def test_a_leak_whose_vm_uuid_is_live_again_is_kept(engine, fake_ovs_delete):
    novadb.add_instance(engine, U, host=HOST)
    links = hybrid_links()
    out = unplug_kept(ctx_for(engine, FakeNetlink(links), FakeOvs()),
                               leak_plan([item(links)]))
    assert out == f"{P}: kept (its vm-uuid {U} is live on this host)"


def test_another_domain_using_it_keeps_it(engine, fake_ovs_delete):
    links = hybrid_links()
    dom = Domain(uuid="99999999-0000-0000-0000-000000000000", name="build-box", state="running",
                 nova_owned=False, nova_uuid=None,
                 interfaces=(DomainInterface("bridge", None, "vnet0", "qbr" + P),))
    out = unplug_kept(ctx_for(engine, FakeNetlink(links), FakeOvs(), [dom]),
                               leak_plan([item(links)]))
    assert out == f"{P}: kept (now used by domain(s) build-box)"


def test_the_torn_down_domain_itself_does_not_keep_its_vifs(engine, fake_ovs_delete):
    links = hybrid_links(tap=False)           # libvirt removed the tap with the domain
    own = Domain(uuid=U, name="instance-00000007", state="shutoff", nova_owned=True,
                 nova_uuid=U, interfaces=(DomainInterface("bridge", None, "tap" + P, "qbr" + P),))
    nl = FakeNetlink(links)
    out = _unplug(ctx_for(engine, nl, FakeOvs(["qvo" + P]), [own]),
                               domain_plan([item(hybrid_links())]))
    assert nl.links == {} and "removed" in out


def test_an_unreadable_domain_aborts_a_leak_teardown(engine, fake_ovs_delete):
    links = hybrid_links()
    dom = Domain(uuid="99999999-0000-0000-0000-000000000000", name="mystery", state="unknown",
                 nova_owned=False, nova_uuid=None)
    with pytest.raises(exception.Aborted, match="mystery"):
        _unplug(ctx_for(engine, FakeNetlink(links), FakeOvs(), [dom]),
                             leak_plan([item(links)]))


def test_no_network_handles_is_an_error():
    ctx = dataclasses.replace(ctx_for(None, FakeNetlink([]), FakeOvs()),
                              kinds=KindManager([InstanceKind(CONF), NetworkKind(CONF)]))
    with pytest.raises(exception.StepFailed, match="not enabled"):
        _unplug(ctx, leak_plan([]))


def test_derived_names_are_removed_only_if_they_are_this_ports(engine, fake_ovs_delete):
    links = hybrid_links()
    it = item(links)
    it["devices"] = [dict(d, ifindex=None, kind=None) for d in it["devices"]]
    it["ovs_ports"] = [{"bridge": None, "name": n + P, "iface_id": None, "uuid": None}
                       for n in ("tap", "qvo")]
    nl, ovs = FakeNetlink(links), FakeOvs(["qvo" + P])
    _unplug(ctx_for(engine, nl, ovs), domain_plan([it]))
    assert nl.links == {} and fake_ovs_delete == [("br-int", "qvo" + P, frozenset({U, None}))]


# --------------------------------------------------------------------------
# db_claims
# --------------------------------------------------------------------------

def test_db_claims(engine):
    here = novadb.add_instance(engine, host=HOST)["uuid"]
    novadb.add_info_cache(engine, here, [novadb.vif(PORT)])
    elsewhere = novadb.add_instance(engine, host=OTHER)["uuid"]
    q = "feed0002-bb" + "cc-dddd-eeee-ffffffffffff"
    novadb.add_info_cache(engine, elsewhere, [novadb.vif(q)])
    flying = novadb.add_instance(engine, host=OTHER)["uuid"]
    r = "feed0003-cc" + "cc-dddd-eeee-ffffffffffff"
    novadb.add_info_cache(engine, flying, [novadb.vif(r)])
    novadb.add_migration(engine, flying, OTHER, HOST, "running", "live-migration")
    gone = novadb.add_instance(engine, host=HOST, deleted=True)["uuid"]
    s = "feed0004-dd" + "cc-dddd-eeee-ffffffffffff"
    novadb.add_info_cache(engine, gone, [novadb.vif(s)])
    broken = novadb.add_instance(engine, host=HOST)["uuid"]
    t = "feed0005-ee"
    novadb.add_info_cache(engine, broken, '[{"id": "' + t + 'xx", "addr')
    got = net_exec.db_claims(engine, HOST, [PORT[:11], q[:11], r[:11], s[:11], t])
    assert got == {PORT[:11]: [here], r[:11]: [flying], t: [broken]}
    assert net_exec.db_claims(engine, HOST, [PORT[:11]], exclude=here) == {}
    assert net_exec.db_claims(engine, HOST, []) == {}
