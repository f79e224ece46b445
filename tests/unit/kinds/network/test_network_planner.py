"""Rule R11 (leaked_vif) and the VIFs of instance teardowns, table-driven, without
netlink, OVS, libvirt or a DB: records in, plan out."""
from __future__ import annotations

import dataclasses
import datetime
import json

import pytest

from reaper import planner
from reaper import state as state_mod
from reaper.kinds.instance import libvirt as libvirt_inv
from reaper.kinds.network import collector as net_inv
from reaper.kinds.network import ovs as ovs_inv
from reaper.kinds.network import rules as net
from reaper.policy import Policy, default_actions
from reaper.kinds.network.objects import NetDevice, OvsPort
from reaper.objects.fields import Action, Classification, ResourceKind
from reaper.objects.host import CollectorResult, Domain, DomainInterface, Inventory
from reaper.objects.nova import InfoCacheRow, InstanceRow, MigrationRow, NovaView
from tests.fixtures import records

HOST, OTHER = "cmp-1", "cmp-2"
NOW = datetime.datetime(2026, 11, 23, 12, 0, 0)
OLD = NOW - datetime.timedelta(days=1)
P = "feed0001-aa"               # a port id prefix
PORT = P + "bb-cccc-dddd-eeeeeeeeeeee"
Q = "feed0002-bb"
QPORT = Q + "cc-dddd-eeee-ffffffffffff"
U = "11111111-2222-3333-4444-555555555555"      # an instance
V = "22222222-2222-3333-4444-555555555555"      # another one
W = "33333333-2222-3333-4444-555555555555"


def policy(leaked=Action.REAP, **kw) -> Policy:
    kw.setdefault("actions", {**default_actions(), Classification.LEAKED_VIF: leaked})
    return records.policy(**kw)


_ifindex = iter(range(100, 100000))


def dev(role, prefix=P, kind=None, **kw) -> NetDevice:
    kind = kind or {"tap": "tun", "qbr": "bridge", "qvb": "veth", "qvo": "veth"}[role]
    return NetDevice(name=role + prefix, ifindex=kw.pop("ifindex", next(_ifindex)),
                     role=role, port_prefix=prefix, kind=kind, **kw)


def hybrid(prefix=P, with_tap=True, **over) -> list[NetDevice]:
    """What os-vif's hybrid plug plus libvirt leave: qbr with qvb and tap, qvb<->qvo.
    ``over``: role -> field changes."""
    qbr_ports = ["qvb" + prefix] + (["tap" + prefix] if with_tap else [])
    devs = {"qbr": dev("qbr", prefix, ports=tuple(qbr_ports)),
            "qvb": dev("qvb", prefix, master="qbr" + prefix, peer="qvo" + prefix),
            "qvo": dev("qvo", prefix, peer="qvb" + prefix)}
    if with_tap:
        devs["tap"] = dev("tap", prefix, master="qbr" + prefix, carrier=False)
    for role, changes in over.items():
        devs[role] = dataclasses.replace(devs[role], **changes)
    return list(devs.values())


def upper(name, kind, lower, **kw) -> NetDevice:
    """A device stacked on ``lower`` (its IFLA_LINK), as the collector lists it."""
    return NetDevice(name=name, ifindex=kw.pop("ifindex", next(_ifindex)), role="",
                     port_prefix="", kind=kind, link=lower, **kw)


def oport(name=None, iface_id=PORT, vm_uuid=None, **kw) -> OvsPort:
    return OvsPort(name=name or "qvo" + P, bridge=kw.pop("bridge", "br-int"),
                   uuid=kw.pop("uuid", "0000-" + (name or "qvo" + P)),
                   iface_type=kw.pop("iface_type", ""), iface_id=iface_id,
                   attached_mac="fa:16:3e:00:00:01", vm_uuid=vm_uuid, **kw)


def row(uuid=U, **kw) -> InstanceRow:
    return records.row(uuid=uuid, **kw)


def dead(uuid=U) -> InstanceRow:
    return row(uuid, deleted=7, vm_state="deleted", deleted_at=OLD)


def mig(uuid=U, status="running", source=OTHER, dest=HOST, mtype="live-migration"
        ) -> MigrationRow:
    return records.migration(instance_uuid=uuid, status=status, source=source, dest=dest,
                             mtype=mtype)


def nwinfo(*port_ids, hybrid_plug=True) -> str:
    return json.dumps([{"id": pid, "address": "fa:16:3e:00:00:01", "type": "ovs",
                        "devname": ("tap" + pid)[:14], "ovs_interfaceid": pid,
                        "details": {"ovs_hybrid_plug": hybrid_plug},
                        "network": {"bridge": "br-int"}} for pid in port_ids])


def cache(uuid, text) -> InfoCacheRow:
    return InfoCacheRow(instance_uuid=uuid, network_info=text)


def domain(uuid=U, name="instance-00000007", nova=True, state="running",
           ifaces=()) -> Domain:
    return records.domain(uuid=uuid, name=name, nova=nova, state=state, interfaces=ifaces)


def hybrid_iface(prefix=P) -> DomainInterface:
    return records.interface(target_dev="tap" + prefix, source_bridge="qbr" + prefix)


def ovs_iface(port_id=PORT) -> DomainInterface:
    return records.interface(target_dev=("tap" + port_id)[:14], source_bridge="br-int",
                             interface_id=port_id)


def run(devices=(), ports=(), domains=(), rows=(), caches=(), migs=(), *, dev_ok=True,
        ovs_ok=True, domains_ok=True, **pol):
    inv = Inventory(
        CollectorResult("domain", domains_ok, tuple(domains) if domains_ok else (),
                        error=None if domains_ok else "libvirt down"),
        CollectorResult("instance_dir", True, ()), instances_fs_type="ext4",
        extra={"vif": CollectorResult("vif", dev_ok, tuple(devices) if dev_ok else (),
                                      error=None if dev_ok else "netns gone"),
               "ovs_port": CollectorResult("ovs_port", ovs_ok, tuple(ports) if ovs_ok else (),
                                           error=None if ovs_ok else "ovsdb down")})
    view = NovaView(ok=True, instances={r.uuid: r for r in rows}, migrations=tuple(migs),
                    info_caches={c.instance_uuid: c for c in caches})
    return planner.build_plan(inv, view, policy(**pol), NOW, extensions=[net.extend])


def r11(plan, prefix=P):
    return [f for f in plan.findings if f.classification is Classification.LEAKED_VIF
            and f.evidence["port_prefix"] == prefix]


def leak_teardown(plan, prefix=P):
    return [t for t in plan.teardowns if t.instance_uuid == net.leak_name(prefix)]


LIVE_HERE = dict(rows=[row()], caches=[cache(U, nwinfo(PORT))])

# (id, inputs, expected for group P: "kept" (nothing listed), "reap", "log")
R11_TABLE = [
    # -- owned: never listed
    ("live instance here claims the port in network_info", dict(
        devices=hybrid(), ports=[oport(vm_uuid=U)], **LIVE_HERE), "kept"),
    ("claimed through ovs_interfaceid only", dict(
        devices=hybrid(), rows=[row()], caches=[cache(U, json.dumps(
            [{"id": "99999999-0000-0000-0000-000000000000", "ovs_interfaceid": PORT}]))]),
     "kept"),
    ("claimed through devname only", dict(
        devices=hybrid(), rows=[row()], caches=[cache(U, json.dumps(
            [{"id": "99999999-0000-0000-0000-000000000000", "devname": "tap" + P}]))]),
     "kept"),
    ("soft-deleted (restorable) instance here still owns its VIF", dict(
        devices=hybrid(), rows=[row(vm_state="soft-delete", deleted_at=NOW)],
        caches=[cache(U, nwinfo(PORT))]), "kept"),
    ("instance in flight to this host claims it", dict(
        devices=hybrid(), rows=[row(host=OTHER)], caches=[cache(U, nwinfo(PORT))],
        migs=[mig()]), "kept"),
    ("instance in flight from this host claims it", dict(
        devices=hybrid(), rows=[row(host=OTHER)], caches=[cache(U, nwinfo(PORT))],
        migs=[mig(source=HOST, dest=OTHER, status="preparing")]), "kept"),
    ("vm-uuid of a live instance here (network_info empty)", dict(
        devices=hybrid(), ports=[oport(vm_uuid=U)], rows=[row()], caches=[cache(U, "[]")]),
     "kept"),
    ("vm-uuid of an instance in flight", dict(
        ports=[oport("tap" + P, vm_uuid=U)], rows=[row(host=OTHER)], migs=[mig()]), "kept"),
    ("a non-Nova domain uses the tap as target dev", dict(
        devices=hybrid(), domains=[domain(V, "build-box", nova=False, ifaces=[
            DomainInterface("ethernet", None, "tap" + P, None)])]), "kept"),
    ("a foreign Nova domain uses the qbr as source bridge", dict(
        devices=hybrid(with_tap=False), rows=[row(V, host=OTHER)],
        domains=[domain(V, ifaces=[DomainInterface("bridge", None, None, "qbr" + P)])]),
     "kept"),
    ("a shut-off domain names the port as virtualport interfaceid", dict(
        ports=[oport("tap" + P)], domains=[domain(V, state="shutoff", ifaces=[ovs_iface()])]),
     "kept"),
    ("the port's vm-uuid is a domain on this host (unknown to the DB)", dict(
        ports=[oport("tap" + P, vm_uuid=V)], domains=[domain(V)]), "kept"),
    ("an unknown instance's domain (R6) keeps its VIF", dict(
        devices=hybrid(), domains=[domain(V, ifaces=[hybrid_iface()])]), "kept"),
    ("a deleted instance's domain waiting for running_deleted_timeout keeps its VIF", dict(
        devices=hybrid(), domains=[domain(ifaces=[hybrid_iface()])],
        rows=[row(deleted=7, vm_state="deleted", deleted_at=NOW)],
        running_deleted_timeout=3600), "kept"),
    # -- leaked
    ("hybrid plumbing of a deleted instance", dict(
        devices=hybrid(), ports=[oport(vm_uuid=U)], rows=[dead()]), "reap"),
    ("hybrid plumbing with no OVS port and no row", dict(devices=hybrid()), "reap"),
    ("direct OVS port with vm-uuid of an unknown instance", dict(
        ports=[oport("tap" + P, vm_uuid=W)]), "reap"),
    ("libvirt's vm-id works like vm-uuid", dict(
        ports=[oport("tap" + P, vm_uuid=W)], rows=[dead(W)]), "reap"),
    ("instance live on another host, not moving here", dict(
        devices=hybrid(), ports=[oport(vm_uuid=V)], rows=[row(V, host=OTHER)],
        caches=[cache(V, nwinfo(PORT))]), "reap"),
    ("finished migration no longer protects", dict(
        devices=hybrid(), rows=[row(host=OTHER)], caches=[cache(U, nwinfo(PORT))],
        migs=[mig(status="completed")]), "reap"),
    ("a lone qvo left by a half-failed unplug", dict(
        devices=[dev("qvo", peer=None)]), "reap"),
    ("another instance's empty network_info is no reason to wait", dict(
        devices=hybrid(), rows=[row(V)], caches=[cache(V, "[]")]), "reap"),
    ("live instance with malformed network_info but its domain here", dict(
        devices=hybrid() + hybrid(Q), rows=[row(V)], caches=[cache(V, "{not json")],
        domains=[domain(V, ifaces=[hybrid_iface(Q)])]), "reap"),
    # -- leaked, but only logged
    ("leaked_vif_action=log", dict(devices=hybrid(), leaked=Action.LOG), "log"),
    ("domain list unavailable", dict(devices=hybrid(), domains_ok=False), "log"),
    ("a domain whose XML could not be read", dict(
        devices=hybrid(), domains=[domain(V, state=libvirt_inv.UNKNOWN_STATE, nova=False)]),
     "log"),
    ("device collector failed (OVS port still seen)", dict(
        ports=[oport(vm_uuid=W)], dev_ok=False), "log"),
    ("OVS collector failed (devices still seen)", dict(devices=hybrid(), ovs_ok=False),
     "log"),
    ("live instance without a domain here has malformed network_info", dict(
        devices=hybrid(), rows=[row(V)], caches=[cache(V, "{not json")]), "log"),
    ("live instance without a domain here has network_info that is not a list", dict(
        devices=hybrid(), rows=[row(V)], caches=[cache(V, '{"id": "x"}')]), "log"),
    ("live instance without a domain here has an entry without id", dict(
        devices=hybrid(), rows=[row(V)], caches=[cache(V, '[{"address": "x"}]')]), "log"),
    ("live instance without a domain here has no info cache row", dict(
        devices=hybrid(), rows=[row(V)]), "log"),
    ("in-flight instance with malformed network_info", dict(
        devices=hybrid(), rows=[row(V, host=OTHER)], caches=[cache(V, "nope")],
        migs=[mig(V)]), "log"),
    ("qbr with a foreign port", dict(
        devices=hybrid(qbr=dict(ports=("qvb" + P, "tap" + P, "eth7")))), "log"),
    ("veth peer in another namespace", dict(
        devices=[dev("qvo", peer=None, peer_netnsid=3)]), "log"),
    ("veth peer is not its partner", dict(
        devices=hybrid(qvo=dict(peer="vethX"))), "log"),
    ("tap held open by a process", dict(devices=hybrid(tap=dict(carrier=True))), "log"),
    ("tap enslaved to another bridge", dict(
        devices=[dev("tap", master="br-ex", carrier=False)]), "log"),
    # -- a unit with a member that must stay is kept whole, and reported (log)
    ("qvo/qvb pair plugged into the bridge without iface-id (issue 9 #11)", dict(
        devices=[dev("qvb", peer="qvo" + P), dev("qvo", peer="qvb" + P)],
        ports=[oport(iface_id=None)]), "log"),
    ("hybrid VIF whose qvo port has no iface-id", dict(
        devices=hybrid(), ports=[oport(iface_id=None)]), "log"),
    ("tap whose OVS port has no iface-id", dict(
        devices=[dev("tap", carrier=False)], ports=[oport("tap" + P, iface_id=None)]), "log"),
    ("qvo port carrying another port's iface-id", dict(
        devices=hybrid(), ports=[oport(iface_id=QPORT)]), "log"),
    ("qvo port of type internal", dict(
        devices=hybrid(), ports=[oport(iface_type="internal")]), "log"),
    ("qvb plugged into OVS", dict(devices=hybrid(), ports=[oport("qvb" + P)]), "log"),
    ("macvlan stacked on the qvo", dict(
        devices=hybrid() + [upper("mv0", "macvlan", "qvo" + P)]), "log"),
    ("macvtap stacked on the qvb", dict(
        devices=hybrid() + [upper("macvtap3", "macvtap", "qvb" + P)]), "log"),
    ("vlan stacked on the tap", dict(
        devices=hybrid() + [upper("vl100", "vlan", "tap" + P)]), "log"),
    ("vxlan bound to the qbr", dict(
        devices=hybrid() + [upper("vx0", "vxlan", "qbr" + P)]), "log"),
    ("another device enslaved to the qbr", dict(
        devices=hybrid(qbr=dict(ports=("qvb" + P, "tap" + P, "dummy0")))
        + [NetDevice("dummy0", 77, "", "", "dummy", master="qbr" + P)]), "log"),
    ("qvo enslaved to a linux bridge", dict(
        devices=hybrid(qvo=dict(master="br-ex"))), "log"),
    ("qbr enslaved to another bridge", dict(
        devices=hybrid(qbr=dict(master="br-mgmt"))), "log"),
    ("tap on the OVS datapath but not on the integration bridge", dict(
        devices=[dev("tap", master="ovs-system", carrier=False)]), "log"),
    ("a device with the unit's name that is not Nova's kind", dict(
        devices=[dev("qvb", peer="qvo" + P), dev("qvo", peer="qvb" + P),
                 dev("tap", kind="bridge")]), "log"),
    # -- the same, when nothing stands in the way
    ("direct tap on the OVS datapath with its port on the integration bridge", dict(
        devices=[dev("tap", master="ovs-system", carrier=False)],
        ports=[oport("tap" + P)]), "reap"),
    ("a device stacked on another VIF's qvo does not hold this one", dict(
        devices=hybrid() + hybrid(Q) + [upper("mv0", "macvlan", "qvo" + Q)]), "reap"),
    # -- a domain using a device through <source dev> or a hostdev: never listed
    ("a non-Nova domain uses the qvo as <source dev> (direct, issue 9 #13)", dict(
        devices=hybrid(), domains=[domain(V, "appliance", nova=False, state="shutoff",
                                          ifaces=[DomainInterface(
                                              "direct", None, "macvtap0", None,
                                              source_dev="qvo" + P)])]), "kept"),
    ("a container is given the tap as a hostdev", dict(
        devices=hybrid(), domains=[domain(V, "ct1", nova=False, ifaces=[DomainInterface(
            "hostdev", None, None, None, source_dev="tap" + P)])]), "kept"),
    # -- not Nova's: never listed
    ("leaked_vif_action=ignore", dict(devices=hybrid(), leaked=Action.IGNORE), "kept"),
    ("reaper-skip=true on the OVS port", dict(
        devices=hybrid(), ports=[oport(skip=True)]), "kept"),
    ("OVS port without iface-id", dict(ports=[oport("tap" + P, iface_id=None)]), "kept"),
    ("internal port named like a VIF", dict(
        ports=[oport("tap" + P, iface_type="internal")]), "kept"),
    ("patch port named like a VIF", dict(ports=[oport("qvo" + P, iface_type="patch")]),
     "kept"),
    ("tunnel port with an iface-id", dict(ports=[oport("qvo" + P, iface_type="vxlan")]),
     "kept"),
    ("bond port (two interfaces)", dict(ports=[oport(n_interfaces=2)]), "kept"),
    ("port name and iface-id disagree", dict(ports=[oport(iface_id=QPORT)]), "kept"),
    ("qbr-named OVS port (not a VIF port)", dict(ports=[oport("qbr" + P)]), "kept"),
    ("a 'qbr' that is not a bridge", dict(devices=[dev("qbr", kind="veth")]), "kept"),
    ("a 'tap' that is a bridge", dict(devices=[dev("tap", kind="bridge")]), "kept"),
    ("a 'qvo' that is a dummy", dict(devices=[dev("qvo", kind="dummy")]), "kept"),
]


@pytest.mark.parametrize("case", R11_TABLE, ids=[c[0] for c in R11_TABLE])
def test_r11(case):
    _, kw, want = case
    plan = run(**kw)
    fs = r11(plan)
    tds = leak_teardown(plan)
    if want == "kept":
        assert fs == [] and tds == []
        return
    assert fs, "expected leaked_vif findings"
    assert {f.action for f in fs} == {Action.REAP if want == "reap" else Action.LOG}
    assert {f.kind for f in fs} <= {ResourceKind.VIF, ResourceKind.OVS_PORT}
    if want == "reap":
        (t,) = tds
        assert t.classification is Classification.LEAKED_VIF and t.action is Action.REAP
        assert t.domain_name is None and t.dirs == ()
        assert {f.key for f in t.findings} == {f.key for f in fs}
        (item,) = t.vifs
        assert item["prefix"] == P
        json.dumps(t.vifs)      # journal-friendly
    else:
        assert tds == []


def test_leaked_hybrid_group_lists_every_member_with_evidence():
    plan = run(hybrid(), [oport(vm_uuid=U)], rows=[dead()])
    fs = r11(plan)
    assert sorted(f.resource for f in fs) == sorted(
        ["qbr" + P, "qvb" + P, "qvo" + P, "tap" + P, "qvo" + P])
    assert {(f.kind, f.resource) for f in fs if f.kind is ResourceKind.OVS_PORT} == {
        (ResourceKind.OVS_PORT, "qvo" + P)}
    f = next(f for f in fs if f.resource == "qbr" + P)
    assert f.instance_uuid == U
    assert f.evidence["vm_row"]["deleted"] == 7
    assert f.evidence["device"]["ports"] == ["qvb" + P, "tap" + P]
    assert f.evidence["port_id"] == PORT
    assert "is deleted" in f.reason
    (t,) = leak_teardown(plan)
    (item,) = t.vifs
    assert [d["name"] for d in item["devices"]] == ["qbr" + P, "qvb" + P, "qvo" + P, "tap" + P]
    assert all(d["ifindex"] for d in item["devices"])
    assert item["ovs_ports"] == [{"bridge": "br-int", "name": "qvo" + P, "iface_id": PORT,
                                  "uuid": "0000-qvo" + P}]
    assert item["vm_uuids"] == [U] and item["hybrid"] is True and not item["derived"]


def test_unrelated_groups_are_judged_separately():
    plan = run(hybrid() + hybrid(Q), [oport(vm_uuid=U)], **LIVE_HERE)
    assert r11(plan) == [] and len(r11(plan, Q)) == 4


def test_reasons_say_why_only_logging():
    plan = run(hybrid(), rows=[row(V)], caches=[cache(V, "{bad")])
    (f, *_) = r11(plan)
    assert "only logging" in f.reason and V in f.reason
    assert f.evidence["unsure"]
    # ... and the instance with unreadable network_info is reported itself
    (nf,) = [f for f in plan.findings if f.kind is ResourceKind.INSTANCE]
    assert nf.instance_uuid == V and nf.action is Action.LOG
    assert nf.classification is Classification.LIVE
    assert "malformed" in nf.evidence["network_info_problem"]


def test_empty_network_info_reported_only_when_the_instance_has_vifs():
    quiet = run(rows=[row()], caches=[cache(U, "[]")])
    assert quiet.findings == ()
    loud = run(hybrid(), rows=[row()], caches=[cache(U, "[]")],
               domains=[domain(ifaces=[hybrid_iface()])])
    (nf,) = loud.findings
    assert nf.evidence["network_info_problem"] == "empty"
    assert "domain instance-00000007's interfaces" in nf.reason
    assert r11(loud) == []      # the domain XML protects it


# --------------------------------------------------------------------------
# VIFs of instance teardowns
# --------------------------------------------------------------------------

def teardown_of(plan, uuid=U):
    (t,) = [t for t in plan.teardowns if t.instance_uuid == uuid]
    return t


def test_running_deleted_domain_gets_its_vifs_from_its_xml():
    # Nova's info cache of a deleted instance is deleted too: nothing in the view.
    plan = run(hybrid(), [oport(vm_uuid=U)], domains=[domain(ifaces=[hybrid_iface()])],
               rows=[dead()])
    t = teardown_of(plan)
    assert t.classification is Classification.RUNNING_DELETED
    (item,) = t.vifs
    assert item["prefix"] == P and item["found_by"] == ["OVS vm-uuid", "domain XML"]
    assert [d["name"] for d in item["devices"]] == ["qbr" + P, "qvb" + P, "qvo" + P, "tap" + P]
    assert [p["name"] for p in item["ovs_ports"]] == ["qvo" + P]
    assert r11(plan) == []          # goes with its domain, not as a leak
    (f,) = t.findings
    assert f.evidence["vifs"][0]["prefix"] == P
    assert plan.findings[0].evidence["vifs"] == f.evidence["vifs"]


def test_running_deleted_found_by_vm_uuid_alone():
    plan = run([], [oport("tap" + P, vm_uuid=U)], domains=[domain()], rows=[dead()])
    (item,) = teardown_of(plan).vifs
    assert item["found_by"] == ["OVS vm-uuid"] and item["hybrid"] is False


def test_evacuated_domain_gets_its_vifs_from_network_info():
    plan = run(hybrid(), [oport(vm_uuid=U)], domains=[domain()], rows=[row(host=OTHER)],
               caches=[cache(U, nwinfo(PORT))],
               migs=[mig(status="done", mtype="evacuation", source=HOST, dest=OTHER)])
    t = teardown_of(plan)
    assert t.classification is Classification.EVACUATED
    (item,) = t.vifs
    assert item["port_id"] == PORT and item["hybrid"] is True
    assert "network_info" in item["found_by"]


def test_reclaim_without_domain_unplugs_from_network_info():
    plan = run(hybrid(), [oport(vm_uuid=U)],
               rows=[row(vm_state="soft-delete", deleted_at=OLD)],
               caches=[cache(U, nwinfo(PORT))])
    t = teardown_of(plan)
    assert t.action is Action.RECLAIM and t.domain_name is None
    (item,) = t.vifs
    assert item["prefix"] == P
    assert r11(plan) == []


def test_teardown_keeps_a_port_now_owned_by_a_live_instance():
    # The port was detached from the deleted instance and attached to V, live here.
    plan = run(hybrid(), [oport(vm_uuid=V)], domains=[domain(ifaces=[hybrid_iface()])],
               rows=[dead(), row(V)], caches=[cache(V, nwinfo(PORT))])
    t = teardown_of(plan)
    assert t.vifs == ()
    assert t.findings[0].evidence["vifs_kept"][0]["prefix"] == P
    assert V in t.findings[0].evidence["vifs_kept"][0]["kept"]
    assert r11(plan) == []


def test_teardown_keeps_a_bridge_another_domain_uses():
    other = domain(V, "build-box", nova=False, ifaces=[
        DomainInterface("bridge", None, "vnet0", "qbr" + P)])
    plan = run(hybrid(), [], domains=[domain(ifaces=[hybrid_iface()]), other], rows=[dead()])
    t = teardown_of(plan)
    assert t.vifs == () and "build-box" in t.findings[0].evidence["vifs_kept"][0]["kept"]


def test_teardown_keeps_a_port_whose_vm_uuid_is_another_instance():
    plan = run(hybrid(), [oport(vm_uuid=W)], domains=[domain(ifaces=[hybrid_iface()])],
               rows=[dead()])
    t = teardown_of(plan)
    assert t.vifs == () and W in t.findings[0].evidence["vifs_kept"][0]["kept"]


@pytest.mark.parametrize("devices,ports,why", [
    pytest.param(hybrid(qbr=dict(ports=("qvb" + P, "tap" + P, "eth7"))), [oport(vm_uuid=U)],
                 "also has ports ['eth7']", id="foreign-port-on-qbr"),
    pytest.param(hybrid(), [oport(iface_id=None)], "has no iface-id", id="port-without-iface-id"),
    pytest.param(hybrid() + [upper("mv0", "macvlan", "qvo" + P)], [oport(vm_uuid=U)],
                 "mv0 (macvlan) is stacked on qvo" + P, id="macvlan-on-qvo"),
    pytest.param(hybrid() + [upper("vl7", "vlan", "tap" + P)], [oport(vm_uuid=U)],
                 "vl7 (vlan) is stacked on tap" + P, id="vlan-on-tap"),
])
def test_teardown_keeps_a_vif_whole_when_a_member_must_stay(devices, ports, why):
    """An instance teardown never half-cleans a VIF: nothing of it is planned."""
    plan = run(devices, ports, domains=[domain(ifaces=[hybrid_iface()])], rows=[dead()])
    t = teardown_of(plan)
    assert t.vifs == ()
    (kept,) = t.findings[0].evidence["vifs_kept"]
    assert kept["prefix"] == P and kept["kept"].startswith("kept whole: ") \
        and why in kept["kept"]
    assert r11(plan) == []      # the teardown's own: not reported again as a leak


def test_teardown_of_a_running_guest_does_not_count_its_own_open_tap():
    """Its domain is destroyed before the unplug step; the step checks the tap then."""
    plan = run(hybrid(tap=dict(carrier=True)), [oport(vm_uuid=U)],
               domains=[domain(ifaces=[hybrid_iface()])], rows=[dead()])
    (item,) = teardown_of(plan).vifs
    assert item["prefix"] == P


def test_teardown_finds_its_vif_through_source_dev():
    plan = run(hybrid(), [], rows=[dead()], domains=[domain(ifaces=[
        DomainInterface("direct", None, "macvtap0", None, source_dev="qvo" + P)])])
    (item,) = teardown_of(plan).vifs
    assert item["found_by"] == ["domain XML"]


def test_held_members_are_in_the_leak_evidence():
    plan = run([dev("qvb", peer="qvo" + P), dev("qvo", peer="qvb" + P)],
               [oport(iface_id=None)])
    fs = r11(plan)
    assert sorted(f.resource for f in fs) == ["qvb" + P, "qvo" + P]    # the port: not ours
    assert {f.action for f in fs} == {Action.LOG}
    f = fs[0]
    assert f.evidence["group"]["held_ovs_ports"] == ["qvo" + P]
    assert "kept whole" in f.reason and "has no iface-id" in f.reason
    assert f.evidence["oddities"] and leak_teardown(plan) == []


def test_teardown_with_ovs_down_derives_port_names():
    plan = run(hybrid(), ovs_ok=False, domains=[domain(ifaces=[hybrid_iface()])],
               rows=[dead()])
    (item,) = teardown_of(plan).vifs
    assert item["derived"] is True
    assert [p["name"] for p in item["ovs_ports"]] == ["tap" + P, "qvo" + P]
    assert {p["bridge"] for p in item["ovs_ports"]} == {None}
    assert all(d["ifindex"] for d in item["devices"])


def test_teardown_with_netlink_down_derives_device_names():
    plan = run(hybrid(), [oport(vm_uuid=U)], dev_ok=False,
               domains=[domain(ifaces=[hybrid_iface()])], rows=[dead()])
    (item,) = teardown_of(plan).vifs
    assert item["derived"] is True
    assert {d["name"]: d["ifindex"] for d in item["devices"]} == {
        "qbr" + P: None, "qvb" + P: None, "qvo" + P: None, "tap" + P: None}


def test_shutdown_action_keeps_the_vifs():
    plan = run(hybrid(), [], domains=[domain(ifaces=[hybrid_iface()])], rows=[dead()],
               actions={**default_actions(), Classification.RUNNING_DELETED: Action.SHUTDOWN,
                        Classification.LEAKED_VIF: Action.REAP})
    (t,) = plan.teardowns
    assert t.action is Action.SHUTDOWN and t.vifs == ()
    assert r11(plan) == []


def test_vifs_survive_the_journal():
    plan = run(hybrid(), [oport(vm_uuid=U)], domains=[domain(ifaces=[hybrid_iface()])],
               rows=[dead()])
    t = teardown_of(plan)
    back = state_mod.plan_from_json(state_mod.plan_to_json(t))
    assert back.vifs == t.vifs
    leak = run(hybrid())
    (lt,) = leak_teardown(leak)
    assert state_mod.plan_from_json(state_mod.plan_to_json(lt)).vifs == lt.vifs


def test_disabled_or_absent_network_changes_nothing():
    inv = Inventory(CollectorResult("domain", True, ()), CollectorResult("instance_dir", True, ()))
    view = NovaView(ok=True, instances={V: row(V)})
    assert planner.build_plan(inv, view, policy(), NOW, extensions=[net.extend]).findings == ()
    inv = dataclasses.replace(inv, extra={
        "vif": CollectorResult("vif", True, (), error=net.DISABLED),
        "ovs_port": CollectorResult("ovs_port", True, (), error=net.DISABLED)})
    assert planner.build_plan(inv, view, policy(), NOW, extensions=[net.extend]).findings == ()


def test_view_unavailable_plans_nothing():
    inv = Inventory(CollectorResult("domain", True, ()), CollectorResult("instance_dir", True, ()),
                    extra={"vif": CollectorResult("vif", True, tuple(hybrid())),
                           "ovs_port": CollectorResult("ovs_port", True, ())})
    plan = planner.build_plan(inv, NovaView(ok=False, error="down"), policy(), NOW, extensions=[net.extend])
    assert plan.findings == () and plan.teardowns == ()


# --------------------------------------------------------------------------
# network_info and names
# --------------------------------------------------------------------------

NETWORK_INFO_TABLE = [
    (None, [], "missing"),
    ("", [], "malformed"),
    ("[]", [], "empty"),
    ('"[]"', [], "empty"),                      # double-encoded
    ("{oops", [], "malformed"),
    ('{"id": "x"}', [], "malformed"),
    ("[1, 2]", [], "malformed"),
    ('[{"id": "not-a-uuid"}]', [], "malformed"),
    (nwinfo(PORT), [P], None),
    (nwinfo(PORT, QPORT), [P, Q], None),
    (json.dumps([{"id": PORT}, {"address": "x"}]), [P], "malformed"),
    (json.dumps(json.dumps([{"id": PORT}])), [P], None),
]


HOSTILE_NETWORK_INFO = [
    pytest.param("[" * 200000 + "]" * 200000, id="nested-too-deep"),
    pytest.param(json.dumps(json.dumps("[" * 5000 + "]" * 5000)), id="nested-double-encoded"),
    pytest.param('[{"id": "' + PORT + '", "pad": "' + "x" * net.MAX_NETWORK_INFO_CHARS + '"}]',
                 id="huge"),
    pytest.param("\x00\xff garbage \ud800", id="garbage"),
    pytest.param(b"\xff\xfe[]", id="bytes-not-utf8"),
    pytest.param(12, id="not-text"),
    pytest.param("[null, 3, []]", id="wrong-entry-types"),
    pytest.param('[{"id": 7, "devname": ["tap"]}]', id="wrong-field-types"),
    pytest.param('{"id": "' + PORT + '"}', id="object-not-list"),
    pytest.param("[" + ",".join(["{}"] * 50000) + "]", id="many-bad-entries"),
]


@pytest.mark.parametrize("text", HOSTILE_NETWORK_INFO)
def test_parse_network_info_never_raises(text):
    vifs, problem = net.parse_network_info(text)
    assert vifs == () and problem.startswith("malformed") and len(problem) < 400


@pytest.mark.parametrize("text", HOSTILE_NETWORK_INFO)
def test_hostile_network_info_makes_ownership_uncertain(text):
    """The instance is reported, its VIF kept (no domain here: every leak of the
    pass is only logged), and the plan is still made."""
    plan = run(hybrid() + hybrid(Q), [oport(vm_uuid=U)], rows=[row(V)], caches=[cache(V, text)])
    assert {f.action for f in r11(plan) + r11(plan, Q)} == {Action.LOG}
    assert plan.teardowns == ()
    (nf,) = [f for f in plan.findings if f.kind is ResourceKind.INSTANCE]
    assert nf.instance_uuid == V and nf.evidence["network_info_problem"].startswith("malformed")
    json.dumps(nf.evidence)


@pytest.mark.parametrize("text,prefixes,problem", NETWORK_INFO_TABLE)
def test_parse_network_info(text, prefixes, problem):
    vifs, got = net.parse_network_info(text)
    assert sorted(set().union(*(v.prefixes for v in vifs)) if vifs else []) == prefixes
    assert (got or "").startswith(problem or "") and (got is None) == (problem is None)


def test_network_info_fields():
    (v,), _ = net.parse_network_info(nwinfo(PORT))
    assert v.hybrid is True and v.bridge == "br-int" and v.devname == "tap" + P
    assert v.ovs_interfaceid == PORT and v.vif_type == "ovs"


@pytest.mark.parametrize("name,ok", [
    ("tap" + P, True), ("qbr" + P, True), ("qvb" + P, True), ("qvo" + P, True),
    ("tap" + P[:-1], False), ("tap" + P + "x", False), ("TAP" + P, False),
    ("tapFEED0001-AA", False), ("vhu" + P, False), ("tap0", False), ("br-int", False),
    ("qbrfeed0001aaa", False),
])
def test_device_names(name, ok):
    assert (net.NAME_RE.match(name) is not None) is ok
    assert (net_inv.NAME_RE.match(name) is not None) is ok


def test_constants_in_step_with_the_collectors():
    assert net.UNREADABLE_DOMAIN_STATE == libvirt_inv.UNKNOWN_STATE
    assert net.DEVICE_KIND == net_inv.KIND == ResourceKind.VIF.value
    assert net.OVS_KIND == ovs_inv.KIND == ResourceKind.OVS_PORT.value
    assert net.VIF_PORT_TYPES == ovs_inv.VIF_PORT_TYPES


def test_domain_prefixes():
    d = domain(ifaces=[hybrid_iface(), ovs_iface(QPORT),
                       DomainInterface("network", None, "vnet3", None)])
    assert net.domain_prefixes(d) == {P, Q}


def test_domain_xml_interfaces_name_every_device():
    """<source dev> of any interface type and a hostdev's interface are read."""
    xml = f"""<domain type='kvm'><name>appliance</name>
      <uuid>{V}</uuid><devices>
      <interface type='direct'><mac address='52:54:00:00:00:09'/>
        <source dev='qvo{P}' mode='bridge'/><target dev='macvtap0'/></interface>
      <interface type='network'><source network='ext' dev='tap{Q}' mode='vepa'/></interface>
      <interface type='ethernet'><target dev='tap-x' managed='no'/></interface>
      <hostdev mode='capabilities' type='net'><source><interface>qbr{Q}</interface></source>
      </hostdev>
      <hostdev mode='subsystem' type='pci'><source><address bus='1'/></source></hostdev>
      </devices></domain>"""
    dom = libvirt_inv.parse_domain_xml(xml, "running", None)
    assert [(i.type, i.device_names) for i in dom.interfaces] == [
        ("direct", ("macvtap0", "qvo" + P)), ("network", ("tap" + Q,)),
        ("ethernet", ("tap-x",)), ("hostdev", ("qbr" + Q,))]
    assert net.domain_prefixes(dom) == {P, Q}


def test_collector_lists_devices_stacked_on_vif_devices():
    """From one dump: Nova's devices, and whatever is stacked on or enslaved to them
    (with link and master); unrelated devices are not listed."""
    links = [
        {"index": 1, "ifname": "lo"},
        {"index": 10, "ifname": "qbr" + P, "kind": "bridge"},
        {"index": 11, "ifname": "qvb" + P, "kind": "veth", "link": 12, "master": 10},
        {"index": 12, "ifname": "qvo" + P, "kind": "veth", "link": 11},
        {"index": 13, "ifname": "tap" + P, "kind": "tun", "master": 10},
        {"index": 20, "ifname": "mv0", "kind": "macvlan", "link": 12},
        {"index": 21, "ifname": "vl100", "kind": "vlan", "link": 13},
        {"index": 22, "ifname": "vx0", "kind": "vxlan", "vxlan_link": 10},
        {"index": 23, "ifname": "eth7", "kind": "veth", "master": 10, "link": 30},
        {"index": 24, "ifname": "mv1", "kind": "macvlan", "link": 12, "netnsid": 2},
        {"index": 30, "ifname": "eth8", "kind": "veth", "link": 23},
        {"index": 31, "ifname": "br-ex", "kind": "bridge"},
        {"index": 32, "ifname": "mv2", "kind": "macvlan", "link": 31},
    ]
    got = {d.name: d for d in net_inv.links_to_devices(links)}
    assert set(got) == {"qbr" + P, "qvb" + P, "qvo" + P, "tap" + P, "mv0", "vl100", "vx0",
                        "eth7"}
    assert got["mv0"].link == "qvo" + P and got["mv0"].role == ""
    assert got["vl100"].link == "tap" + P and got["vx0"].link == "qbr" + P
    assert got["eth7"].master == "qbr" + P
    assert got["qvo" + P].link == got["qvo" + P].peer == "qvb" + P
    assert got["qbr" + P].ports == ("eth7", "qvb" + P, "tap" + P)
    (g,) = net.build_groups(got.values(), ()).values()
    holds = net.unit_holds(g, net.stacked_index(got.values()))
    assert any("mv0 (macvlan) is stacked on qvo" in h for h in holds)
    assert any("vl100 (vlan) is stacked on tap" in h for h in holds)
    assert any("vx0 (vxlan) is stacked on qbr" in h for h in holds)
    assert any("'eth7'" in h for h in holds)


def test_parsed_network_info_is_remembered_by_text_and_immutable():
    """The memo changes nothing a caller sees: the same answer as a fresh parse, an
    immutable one (every caller gets the same object), texts over the memo's limit
    parsed every time, malformed ones remembered as malformed."""
    from reaper import textmemo
    from reaper.kinds.network import rules as r
    text = json.dumps([{"id": "5a8b1c2d-0000-4000-8000-000000000001", "devname": "tap5a8b1c2d-00",
                        "type": "ovs", "details": {"ovs_hybrid_plug": True}}])
    first = r.parse_network_info(text)
    vifs, problem = r._parse_network_info(text)
    assert first == (tuple(vifs), problem) and problem is None and len(first[0]) == 1
    assert isinstance(first[0], tuple)
    assert r.parse_network_info(text) is first
    big = json.dumps([{"id": "5a8b1c2d-0000-4000-8000-000000000002",
                       "pad": "x" * textmemo.MAX_CHARS}])
    hits = r.parse_network_info.cache_info().hits
    assert r.parse_network_info(big)[1] is None
    assert r.parse_network_info(big) is not r.parse_network_info(big)
    assert r.parse_network_info.cache_info().hits == hits
    assert r.parse_network_info("{nope")[1].startswith("malformed")
    assert r.parse_network_info("{nope")[1].startswith("malformed")
