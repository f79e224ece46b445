"""R11 and the unplug step against real plumbing: veth/bridge/tap devices in a network
namespace of the test's own, a real ovsdb-server and ovs-vswitchd (netdev datapath),
a Nova DB on SQLite and MariaDB, and libvirt's test driver for the domain list.

Each test makes its namespace, its integration bridge (br-int-<random>) and its host
name; nothing else on the machine is looked at or touched.
"""
from __future__ import annotations

import datetime
import json
import time
import uuid as uuidlib

import libvirt
import pytest
import sqlalchemy as sa

from reaper.kinds.network import collector as net_inv
from reaper.kinds.network import ovs as ovs_inv
from reaper.nova import schema
from reaper.objects.step import StepOutcome, StepResult
from tests.fixtures import netplumb as npl
from tests.fixtures import novadb
from tests.fixtures.netplumb import netns, ovs_bridge, private_ovsdb  # noqa: F401

pytestmark = pytest.mark.functional

OLD = datetime.timedelta(days=2)


@pytest.fixture
def host():
    return f"ft-{uuidlib.uuid4().hex[:8]}"


@pytest.fixture
def world(tmp_path, nova_db, host, netns, ovs_bridge):  # noqa: F811
    """Everything a test needs: DB with our compute node, namespace, bridge, and a
    factory of reapers on libvirt's test driver (domains given as XML)."""
    novadb.add_compute_node(nova_db.engine, host)
    made = []

    class World:
        db, ns, bridge = nova_db, netns, ovs_bridge
        tmp = tmp_path

        def reaper(self, domains=(), ovs_remote=npl.OVS_DB, **pol):
            uri = npl.driver_node(tmp_path, list(domains))
            conn = libvirt.open(uri)
            r = npl.make_net_reaper(tmp_path, nova_db.url, host, netns=netns,
                                    bridge=ovs_bridge, ovs_remote=ovs_remote,
                                    libvirt_uri=uri, connect=lambda: conn, **pol)
            made.append((r, conn))
            return r

    w = World()
    w.host = host
    try:
        yield w
    finally:
        for r, conn in made:
            npl.close_net_reaper(r)
            conn.close()


def leaked(rep, prefix=None) -> list[dict]:
    return [f for f in rep.findings if f["classification"] == "leaked_vif"
            and (prefix is None or f["evidence"]["port_prefix"] == prefix)]


def ago(delta) -> datetime.datetime:
    return novadb.utcnow() - delta


# --------------------------------------------------------------------------


def test_hybrid_vif_of_a_live_instance_is_kept(world):
    u = novadb.add_instance(world.db.engine, host=world.host)["uuid"]
    port = npl.new_port_id()
    novadb.add_info_cache(world.db.engine, u, [npl.vif(port)])
    n = npl.hybrid_plug(world.ns, world.bridge, port, u)
    # a second live instance whose domain is not running yet: its network_info alone
    # protects it
    u2 = novadb.add_instance(world.db.engine, host=world.host)["uuid"]
    port2 = npl.new_port_id()
    novadb.add_info_cache(world.db.engine, u2, [npl.vif(port2)])
    n2 = npl.hybrid_plug(world.ns, world.bridge, port2, u2)
    r = world.reaper(domains=[npl.domain_xml(u, "instance-00000001",
                                             npl.hybrid_interface_xml(port))])
    for _ in range(3):
        rep = r.run_pass("reap")
        assert leaked(rep) == [] and rep.actions == [], rep.to_table()
        assert rep.exit_code == 0, rep.to_table()
    assert set(n.values()) | set(n2.values()) <= npl.links(world.ns)
    assert npl.ovs_ports(world.bridge) == {n["qvo"], n2["qvo"]}


def test_plumbing_of_a_deleted_instance_is_removed_completely(world):
    u = novadb.add_instance(world.db.engine, host=world.host, deleted=True,
                            deleted_at=ago(OLD))["uuid"]
    port = npl.new_port_id()
    n = npl.hybrid_plug(world.ns, world.bridge, port, u)
    r = world.reaper(grace_observations=2)
    first = r.run_pass("reap")
    fs = leaked(first)
    assert sorted((f["kind"], f["resource"]) for f in fs) == sorted(
        [("vif", n[d]) for d in ("qbr", "qvb", "qvo", "tap")] + [("ovs_port", n["qvo"])])
    assert {f["result"] for f in fs} == {"waiting_grace"} and first.actions == []
    assert set(n.values()) <= npl.links(world.ns)
    # evidence: the device facts and the DB facts that decided it
    qbr = next(f for f in fs if f["resource"] == n["qbr"])
    assert qbr["evidence"]["device"]["kind"] == "bridge"
    assert sorted(qbr["evidence"]["device"]["ports"]) == sorted([n["qvb"], n["tap"]])
    # the deleted row is not in the host's view (only live and local rows are read)
    assert qbr["evidence"]["vm_uuid"] == u and qbr["evidence"]["vm_row"] is None
    assert "not among this host's live or in-flight instances" in qbr["reason"]
    assert qbr["evidence"]["ownership"]["claimed_by"] == []
    assert qbr["instance_uuid"] == u
    port_f = next(f for f in fs if f["kind"] == "ovs_port")
    assert port_f["evidence"]["ovs_port"]["iface_id"] == port

    rep = r.run_pass("reap")
    assert [(a["kind"], a["classification"], a["result"]) for a in rep.actions] == [
        ("vif", "leaked_vif", "done")], rep.to_table()
    assert not (set(n.values()) & npl.links(world.ns)), "bridge, veth pair or tap left"
    assert npl.ovs_ports(world.bridge) == set()
    step = dict(rep.actions[0]["steps"])["unplug_vifs"]
    assert n["qbr"] in step and n["qvo"] in step and "ovs" in step
    # idempotent
    again = r.run_pass("reap")
    assert again.actions == [] and leaked(again) == [] and again.exit_code == 0
    audit = npl.audit_lines(world.tmp)
    assert {x["kind"] for x in audit if x["event"] == "finding"} >= {"vif", "ovs_port"}


def test_direct_port_of_an_unknown_instance_is_reported_then_removed(world):
    vm = str(uuidlib.uuid4())                       # no row anywhere
    port = npl.new_port_id()
    n = npl.direct_plug(world.ns, world.bridge, port, vm)
    r = world.reaper(grace_observations=2)
    audit = r.run_pass("audit")             # reported: the first observation
    assert sorted((f["kind"], f["resource"], f["action"]) for f in leaked(audit)) == sorted(
        [("vif", n["tap"], "reap"), ("ovs_port", n["tap"], "reap")])
    assert {f["result"] for f in leaked(audit)} == {"waiting_grace"}
    assert all("1/2 passes" in f["grace"] for f in leaked(audit))
    assert audit.exit_code == 3 and audit.actions == []
    assert n["tap"] in npl.ovs_ports(world.bridge) and n["tap"] in npl.links(world.ns)
    rep = r.run_pass("reap")                 # the second: after the grace
    assert [a["result"] for a in rep.actions] == ["done"], rep.to_table()
    assert n["tap"] not in npl.ovs_ports(world.bridge)
    assert n["tap"] not in npl.links(world.ns)


def test_a_device_created_between_two_passes_is_not_removed_by_the_second(world):
    old_port, new_port = npl.new_port_id(), npl.new_port_id()
    old = npl.hybrid_plug(world.ns, world.bridge, old_port)
    r = world.reaper(grace_observations=2)
    r.run_pass("reap")
    # between the passes: a new plug (another port), and a new device of the old port
    new = npl.hybrid_plug(world.ns, world.bridge, new_port, tap=False)
    rep = r.run_pass("reap")
    assert [a["result"] for a in rep.actions] == ["done"], rep.to_table()
    assert not (set(old.values()) & npl.links(world.ns))
    kept = {new["qbr"], new["qvb"], new["qvo"]}
    assert kept <= npl.links(world.ns) and new["qvo"] in npl.ovs_ports(world.bridge)
    assert {f["result"] for f in leaked(rep, new_port[:11])} == {"waiting_grace"}
    # the same holds inside one group: a member that appears late makes it wait
    npl.ip(world.ns, "tuntap", "add", new["tap"], "mode", "tap")
    rep = r.run_pass("reap")
    assert rep.actions == [] and kept | {new["tap"]} <= npl.links(world.ns)
    rep = r.run_pass("reap")
    assert [a["result"] for a in rep.actions] == ["done"]
    assert not (set(new.values()) & npl.links(world.ns))


def test_unrelated_devices_and_ports_survive_every_pass(world):
    ns, br = world.ns, world.bridge
    # Linux devices that are not Nova's
    npl.ip(ns, "link", "add", "br-ex0", "type", "bridge")
    npl.ip(ns, "link", "add", "veth-a", "type", "veth", "peer", "name", "veth-b")
    npl.ip(ns, "link", "set", "veth-a", "master", "br-ex0")
    npl.ip(ns, "tuntap", "add", "tap0", "mode", "tap")
    npl.ip(ns, "link", "add", "qbr-mgmt", "type", "bridge")
    bogus = npl.names(npl.new_port_id("beef"))
    npl.ip(ns, "link", "add", bogus["qbr"], "type", "veth", "peer", "name", "peer0")  # not a bridge
    npl.ip(ns, "link", "add", bogus["tap"], "type", "bridge")                       # not a tap
    # OVS ports that are not Nova's VIFs
    npl.vsctl("--no-wait", "add-port", br, "eth-uplink")                  # no iface-id
    npl.vsctl("--no-wait", "--", "add-port", br, "patch-tun", "--", "set", "Interface",
              "patch-tun", "type=patch", "options:peer=patch-int")
    npl.vsctl("--no-wait", "--", "add-port", br, "vxlan-0a000001", "--", "set", "Interface",
              "vxlan-0a000001", "type=vxlan", "options:remote_ip=10.0.0.1")
    internal = npl.names(npl.new_port_id("cafe"))
    npl.add_ovs_vif_port(br, internal["tap"], npl.new_port_id("cafe"), extra=(
        "type=internal",))
    mismatch = npl.names(npl.new_port_id("dada"))
    npl.add_ovs_vif_port(br, mismatch["qvo"], npl.new_port_id("abba"))  # name != iface-id
    # a full hybrid VIF the operator marked reaper-skip=true
    skip_port = npl.new_port_id("5c1b")
    skipped = npl.hybrid_plug(ns, br, skip_port)
    npl.vsctl("--no-wait", "set", "Port", skipped["qvo"], "external_ids:reaper-skip=true")
    # and one real leak, so the passes do act
    leak = npl.hybrid_plug(ns, br, npl.new_port_id())
    before_links, before_ports = npl.links(ns), npl.ovs_ports(br)

    r = world.reaper()
    for i in range(3):
        rep = r.run_pass("reap")
        listed = {f["resource"] for f in rep.findings}
        assert listed <= set(leak.values()), rep.to_table()
        if i == 0:
            assert [a["result"] for a in rep.actions] == ["done"], rep.to_table()
        else:
            assert rep.actions == [] and rep.findings == []
    assert npl.links(ns) == before_links - set(leak.values())
    assert npl.ovs_ports(br) == before_ports - {leak["qvo"]}
    assert br not in {f["resource"] for f in rep.findings}


def test_a_vif_used_by_a_domain_the_reaper_keeps_is_never_removed(world):
    vm_unknown, notnova = str(uuidlib.uuid4()), str(uuidlib.uuid4())
    p1, p2, p3 = npl.new_port_id(), npl.new_port_id(), npl.new_port_id()
    a = npl.hybrid_plug(world.ns, world.bridge, p1, vm_unknown)    # domain of no row (R6)
    b = npl.direct_plug(world.ns, world.bridge, p2)                # a non-Nova guest's tap
    c = npl.hybrid_plug(world.ns, world.bridge, p3)                # its vm-uuid... none
    doms = [npl.domain_xml(vm_unknown, "instance-0000abcd", npl.hybrid_interface_xml(p1)),
            npl.domain_xml(notnova, "build-box", nova=False, interfaces=(
                f"<interface type='ethernet'><target dev='{b['tap']}'/></interface>")),
            npl.domain_xml(str(uuidlib.uuid4()), "stopped-box", nova=False, running=False,
                           interfaces=f"<interface type='bridge'><source bridge='{c['qbr']}'/>"
                                      f"</interface>")]
    r = world.reaper(domains=doms)
    for _ in range(2):
        rep = r.run_pass("reap")
        assert leaked(rep) == [] and rep.actions == [], rep.to_table()
    assert set(a.values()) | {b["tap"]} | set(c.values()) <= npl.links(world.ns)
    assert npl.ovs_ports(world.bridge) == {a["qvo"], b["tap"], c["qvo"]}


def test_malformed_network_info_never_turns_an_owned_device_into_a_leak(world):
    u = novadb.add_instance(world.db.engine, host=world.host)["uuid"]
    novadb.add_info_cache(world.db.engine, u, '[{"id": "feed", "address": ')   # cut short
    p1, p2 = npl.new_port_id(), npl.new_port_id()
    a = npl.hybrid_plug(world.ns, world.bridge, p1, u)           # its vm-uuid still says u
    b = npl.hybrid_plug(world.ns, world.bridge, p2, ovs=False)   # nothing says whose
    r = world.reaper()
    for _ in range(2):
        rep = r.run_pass("reap")
        assert rep.actions == [], rep.to_table()
        got = {f["resource"]: f for f in leaked(rep)}
        assert set(got) == {b["qbr"], b["qvb"], b["qvo"], b["tap"]}
        assert {f["action"] for f in got.values()} == {"log"}
        assert all(u in f["reason"] for f in got.values())
        (inst,) = [f for f in rep.findings if f["kind"] == "instance"]
        assert inst["instance_uuid"] == u and "malformed" in inst["reason"]
    assert set(a.values()) | set(b.values()) <= npl.links(world.ns)
    assert a["qvo"] in npl.ovs_ports(world.bridge)


def test_teardown_skips_a_vif_claimed_meanwhile(world):
    """Compare-and-act: the plan says leaked, but before the step runs a live
    instance claims the port (the DB is re-read by the step)."""
    port = npl.new_port_id()
    n = npl.hybrid_plug(world.ns, world.bridge, port)
    r = world.reaper()
    plan = r.kinds.plan(*r._load(r._open_libvirt(), r.policy), r.policy, r.clock())
    (t,) = [t for t in plan.teardowns if t.classification.value == "leaked_vif"]
    u = novadb.add_instance(world.db.engine, host=world.host)["uuid"]
    novadb.add_info_cache(world.db.engine, u, [npl.vif(port)])
    from reaper.executor import teardown
    ctx = teardown.Context(conn=r._open_libvirt(), engine=r.engine, state=r.state,
                           policy=r.policy, clock=r.clock, kinds=r.kinds)
    out = teardown.execute(ctx, t, "req-test")
    assert out.result == "aborted"      # nothing unplugged: no leak was cleaned
    assert "kept (now claimed by instance(s) " + u in out.reason
    assert set(n.values()) <= npl.links(world.ns)


def test_ovs_down_is_a_clean_failure_and_a_retry(world, private_ovsdb):  # noqa: F811
    srv = private_ovsdb
    br = world.bridge          # same name, on the private server
    npl.vsctl("--no-wait", "--", "add-br", br, "--", "set", "bridge", br,
              "datapath_type=netdev", db=srv.remote)
    eng = world.db.engine
    # a soft-deleted instance past reclaim_instance_interval, with a hybrid VIF
    u = novadb.add_instance(eng, host=world.host, vm_state="soft-delete", power_state=4,
                            deleted_at=ago(OLD))["uuid"]
    port = npl.new_port_id()
    novadb.add_info_cache(eng, u, [npl.vif(port)])
    n = npl.hybrid_plug(world.ns, br, port, u, db=srv.remote)
    # an orphan directory of a deleted instance: its teardown must not wait for OVS
    gone = novadb.add_instance(eng, host=world.host, deleted=True, deleted_at=ago(OLD))["uuid"]
    (world.tmp / "instances").mkdir(exist_ok=True)
    (world.tmp / "instances" / gone).mkdir()
    r = world.reaper(ovs_remote=srv.remote, reclaim_instance_interval=3600)
    assert ovs_inv.collect(r.kinds.get("network").handles.ovs).ok

    srv.stop()
    deadline = time.monotonic() + 10
    while ovs_inv.collect(r.kinds.get("network").handles.ovs).ok:    # the session notices the EOF
        assert time.monotonic() < deadline
        time.sleep(0.05)
    down = r.run_pass("reap")
    assert down.exit_code == 1, down.to_table()
    assert [g["guard"] for g in down.guards] == ["collector_failed"]
    assert down.guards[0]["scope"] == "ovs_port"
    # doc/design.md "Guards": no destructive action for a kind whose collector failed. The
    # reclaim needs an unplug, so it does not start at all (not even its claim);
    # the orphan directory needs nothing of OVS and goes.
    results = {a["classification"]: a["result"] for a in down.actions}
    assert results == {"orphan_dir": "done"}, down.to_table()
    held = next(f for f in down.findings if f["classification"] == "reclaimable")
    assert held["result"] == "blocked"
    assert novadb.get_instance(eng, u)["task_state"] is None
    assert not (world.tmp / "instances" / gone).exists()
    assert set(n.values()) <= npl.links(world.ns), "nothing removed while OVS is down"
    assert novadb.get_instance(eng, u)["deleted"] == 0

    srv.start()
    deadline = time.monotonic() + 30
    while not ovs_inv.collect(r.kinds.get("network").handles.ovs).ok:
        assert time.monotonic() < deadline, "the OVSDB session did not come back"
        time.sleep(0.2)
    up = r.run_pass("reap")
    assert [(a["classification"], a["result"]) for a in up.actions] == [
        ("reclaimable", "done")], up.to_table()
    assert not (set(n.values()) & npl.links(world.ns))
    assert n["qvo"] not in npl.ovs_ports(br, db=srv.remote)
    assert novadb.get_instance(eng, u)["deleted"] != 0


def test_namespace_that_vanished_fails_the_collector(world):
    r = world.reaper()
    ok = net_inv.collect(r.kinds.get("network").handles.netlink)
    assert ok.ok
    gone = net_inv.collect(net_inv.Netlink(f"reaper-t-missing-{uuidlib.uuid4().hex[:6]}"))
    assert not gone.ok and "does not exist" in gone.error


def test_fast_link_decoder_matches_pyroute2(world):
    """The collector's trimmed decoder reads what pyroute2's own decoder reads."""
    from pyroute2 import IPRoute

    npl.hybrid_plug(world.ns, world.bridge, npl.new_port_id())
    npl.ip(world.ns, "link", "add", "br0", "address", "02:00:00:00:00:09", "type", "bridge")
    fast = {d["index"]: d for d in net_inv.Netlink(world.ns).dump()}
    with IPRoute(netns=world.ns, flags=0) as ipr:
        for m in ipr.get_links():
            info = m.get_attr("IFLA_LINKINFO")
            want = {"ifname": m.get_attr("IFLA_IFNAME"), "mac": m.get_attr("IFLA_ADDRESS"),
                    "master": m.get_attr("IFLA_MASTER"),
                    "kind": info.get_attr("IFLA_INFO_KIND") if info else None,
                    "carrier": m.get_attr("IFLA_CARRIER")}
            got = fast[m["index"]]
            assert {k: got.get(k) for k in want} == want
            assert net_inv.OPERSTATES[got["operstate"]] == m.get_attr("IFLA_OPERSTATE").lower()
            if want["kind"] == "veth":
                assert got["link"] == m.get_attr("IFLA_LINK")


def test_public_api_fallback_decodes_stacked_devices_like_the_fast_decoder(world):
    """Where pyroute2's internals are not as the fast decoder expects (pyroute2
    0.7.2, Debian 12's), the collector reads the dump through pyroute2's public
    API; the raw socket dump, the fast decoder and the public API give the same
    dicts, veth peers, bridge ports and a vxlan's device included."""
    n = npl.hybrid_plug(world.ns, world.bridge, npl.new_port_id())
    npl.ip(world.ns, "link", "add", "fb-vx0", "type", "vxlan", "id", "9", "dstport", "4789",
           "dev", n["tap"])
    npl.ip(world.ns, "link", "add", "link", n["qvo"], "name", "fb-mv0", "type", "macvlan")
    raw = net_inv.Netlink(world.ns)
    fast = net_inv.Netlink(world.ns, raw=False)
    slow = net_inv.Netlink(world.ns, fast=False)
    try:
        r = {d["index"]: d for d in raw.dump()}
        a = {d["index"]: d for d in fast.dump()}
        b = {d["index"]: d for d in slow.dump()}
        assert (raw.decoder, fast.decoder, slow.decoder) == ("raw", "fast", "pyroute2")
        assert r == a == b
        assert {d["ifname"] for d in b.values()} >= set(n.values()) | {"fb-vx0", "fb-mv0"}
        assert net_inv.links_to_devices(list(a.values())) == \
            net_inv.links_to_devices(list(b.values()))
    finally:
        raw.close()
        fast.close()
        slow.close()


def test_db_rows_untouched_by_a_leak_teardown(world):
    """A leaked VIF's teardown changes the host only, never Nova's DB."""
    u = novadb.add_instance(world.db.engine, host=world.host, deleted=True,
                            deleted_at=ago(OLD))["uuid"]
    npl.hybrid_plug(world.ns, world.bridge, npl.new_port_id(), u)
    with world.db.engine.connect() as c:
        before = c.execute(sa.select(schema.instances).where(
            schema.instances.c.uuid == u)).mappings().one()
    rep = world.reaper().run_pass("reap")
    assert [a["result"] for a in rep.actions] == ["done"]
    with world.db.engine.connect() as c:
        after = c.execute(sa.select(schema.instances).where(
            schema.instances.c.uuid == u)).mappings().one()
    assert dict(before) == dict(after)
    assert json.dumps(rep.actions[0]["evidence"])


def test_ovs_port_delete_rechecks_the_row(world):
    """DelVifPortCommand re-checks inside the OVSDB transaction what the plan saw."""
    br = world.bridge
    h = ovs_inv.OvsHandle(npl.OVS_DB, br, 5)
    try:
        cases = {}
        for label in ("ok", "skip", "iface", "vm", "internal", "elsewhere"):
            pid = npl.new_port_id()
            name = npl.names(pid)["qvo"]
            npl.add_ovs_vif_port(br, name, pid, "aaaaaaaa-0000-0000-0000-000000000001")
            cases[label] = (name, pid)
        npl.vsctl("--no-wait", "set", "Interface", cases["skip"][0],
                  "external_ids:reaper-skip=true")
        npl.vsctl("--no-wait", "set", "Interface", cases["iface"][0],
                  "external_ids:iface-id=" + npl.new_port_id())
        npl.vsctl("--no-wait", "set", "Interface", cases["vm"][0],
                  "external_ids:vm-uuid=bbbbbbbb-0000-0000-0000-000000000002")
        npl.vsctl("--no-wait", "set", "Interface", cases["internal"][0], "type=internal")
        other = f"br-x-{uuidlib.uuid4().hex[:6]}"
        try:
            npl.vsctl("--no-wait", "add-br", other, "--", "set", "bridge", other,
                      "datapath_type=netdev")
            npl.vsctl("--no-wait", "del-port", br, cases["elsewhere"][0])
            npl.add_ovs_vif_port(other, cases["elsewhere"][0], cases["elsewhere"][1])
            deadline = time.monotonic() + 10
            while True:         # the session's replica follows the server
                ports = {p.name: p for p in ovs_inv.collect(h).items}
                if ports.get(cases["internal"][0]) and ports[cases["internal"][0]].iface_type \
                        == "internal" and cases["elsewhere"][0] not in ports:
                    break
                assert time.monotonic() < deadline
                time.sleep(0.05)
            res = {label: ovs_inv.delete_vif_port(
                h, br, name, pid[:11], pid, {None, "aaaaaaaa-0000-0000-0000-000000000001"})
                for label, (name, pid) in cases.items()}
            assert res["ok"].outcome is StepOutcome.DONE
            assert {k for k, r in res.items() if r.outcome is StepOutcome.KEPT} == \
                set(cases) - {"ok"}
            got = {label: str(r) for label, r in res.items()}   # the journal's text
            assert got["ok"] == "deleted"
            assert got["skip"] == "kept: marked reaper-skip=true"
            assert got["iface"].startswith("kept: iface-id is now")
            assert got["vm"].startswith("kept: vm-uuid is now")
            assert got["internal"] == "kept: interface type 'internal'"
            assert got["elsewhere"] == f"kept: not on {br}"
            assert ovs_inv.delete_vif_port(h, br, cases["ok"][0], cases["ok"][1][:11], None,
                                           {None}) == StepResult(StepOutcome.ABSENT, "absent")
            left = npl.ovs_ports(br)
            assert cases["ok"][0] not in left
            assert {cases[x][0] for x in ("skip", "iface", "vm", "internal")} <= left
            assert npl.ovs_ports(other) == {cases["elsewhere"][0]}
        finally:
            npl.vsctl("--if-exists", "del-br", other, check=False)
            npl.ip(None, "link", "del", other, check=False)
    finally:
        h.close()


def test_ovs_replica_fast_read_matches_row_attributes(world):
    br = world.bridge
    npl.hybrid_plug(world.ns, br, npl.new_port_id(), str(uuidlib.uuid4()))
    pid = npl.new_port_id()
    npl.add_ovs_vif_port(br, npl.names(pid)["tap"], pid, str(uuidlib.uuid4()), vm_key="vm-id")
    npl.vsctl("--no-wait", "add-port", br, "eth-plain")
    npl.vsctl("--no-wait", "--", "add-port", br, "patch-x", "--", "set", "Interface",
              "patch-x", "type=patch", "options:peer=patch-y")
    h = ovs_inv.OvsHandle(npl.OVS_DB, br, 5)
    try:
        api = h.api()
        deadline = time.monotonic() + 10
        while len(h.read_ports()[1]) < 5:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        with api.ovsdb_connection.lock:
            row = ovs_inv._bridge_row(api.idl, br)
            fast = sorted(ovs_inv._fast_ports(api.idl, br, row), key=lambda p: p.name)
            slow = sorted((ovs_inv._port_record(br, p) for p in row.ports),
                          key=lambda p: p.name)
        assert fast == slow and len(fast) == 5
        assert any(p.vm_uuid and p.name.startswith("tap") for p in fast)   # vm-id read
        # the select transaction a handle reads before any write: the same records
        exists, selected = ovs_inv.select_ports(npl.OVS_DB, br, 5)
        assert exists and sorted(selected, key=lambda p: p.name) == fast
        assert ovs_inv.select_ports(npl.OVS_DB, "br-no-such-bridge", 5) == (False, ())
    finally:
        h.close()


def test_ovs_reads_before_a_write_are_fresh_selects_without_the_idl(world):
    """A handle that never wrote reads each pass with one select: a port changed on
    the server is seen by the very next read, and no IDL session is started."""
    br = world.bridge
    pid = npl.new_port_id()
    name = npl.names(pid)["qvo"]
    npl.add_ovs_vif_port(br, name, pid, "aaaaaaaa-0000-0000-0000-000000000001")
    h = ovs_inv.OvsHandle(npl.OVS_DB, br, 5)
    try:
        res = ovs_inv.collect(h)
        assert res.ok and {p.name: p.vm_uuid for p in res.items}[name] == \
            "aaaaaaaa-0000-0000-0000-000000000001"
        npl.vsctl("--no-wait", "set", "Interface", name,
                  "external_ids:vm-uuid=bbbbbbbb-0000-0000-0000-000000000002",
                  "external_ids:reaper-skip=true")
        port = {p.name: p for p in ovs_inv.collect(h).items}[name]
        assert port.vm_uuid == "bbbbbbbb-0000-0000-0000-000000000002" and port.skip
        npl.vsctl("--no-wait", "del-port", br, name)
        assert name not in {p.name for p in ovs_inv.collect(h).items}
        assert h._api is None
    finally:
        h.close()
    down = ovs_inv.OvsHandle("unix:/nonexistent/db.sock", br, 1)
    res = ovs_inv.collect(down)
    assert not res.ok and "cannot connect" in res.error


def test_collector_lists_devices_stacked_on_vif_devices(world):
    """One real dump: a macvlan on a qvo, a macvtap on a qbr, a vxlan bound to a tap
    and a veth enslaved to the qbr are listed with their link/master (the vxlan's
    device as pyroute2 decodes it); unrelated devices are not."""
    from pyroute2 import IPRoute

    n = npl.hybrid_plug(world.ns, world.bridge, npl.new_port_id())
    ns = world.ns
    npl.ip(ns, "link", "add", "link", n["qvo"], "name", "st-mv0", "type", "macvlan")
    npl.ip(ns, "link", "add", "link", n["qbr"], "name", "st-mvt0", "type", "macvtap")
    npl.ip(ns, "link", "add", "st-vx0", "type", "vxlan", "id", "7", "dstport", "4789",
           "dev", n["tap"])
    npl.ip(ns, "link", "add", "st-x0", "type", "veth", "peer", "name", "st-x1")
    npl.ip(ns, "link", "set", "st-x0", "master", n["qbr"])
    npl.ip(ns, "link", "add", "st-other", "type", "bridge")
    got = {d.name: d for d in net_inv.collect(net_inv.Netlink(ns)).items}
    assert set(got) == set(n.values()) | {"st-mv0", "st-mvt0", "st-vx0", "st-x0"}
    assert (got["st-mv0"].link, got["st-mvt0"].link, got["st-vx0"].link) == (
        n["qvo"], n["qbr"], n["tap"])
    assert got["st-x0"].master == n["qbr"] and got["st-mv0"].role == ""
    with IPRoute(netns=ns, flags=0) as ipr:
        (vx,) = ipr.get_links(ifname="st-vx0")
        data = vx.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
        (tap,) = ipr.get_links(ifname=n["tap"])
        assert data.get_attr("IFLA_VXLAN_LINK") == tap["index"]
