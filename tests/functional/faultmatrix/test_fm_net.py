"""Fault matrix, network plumbing: a VIF is reaped whole or kept whole, and whatever
uses one of its devices keeps it (issue 9, items 11 and 13, hostile network_info).

Real parts: veth/bridge/tap/macvlan/macvtap/vxlan devices in a network namespace of
the test's own (``fmnet-<hex>``), the test host's ovsdb-server with a bridge of the
test's own (``br-int-<hex>``, netdev datapath), libvirt's test driver for the
domain XML, a Nova DB on SQLite (and MariaDB for hostile network_info). The
reaper runs on them as in tests/functional/test_network_plumbing.py.
"""
from __future__ import annotations

import datetime
import os
import time
import types
import uuid as uuidlib

import libvirt
import pytest
import sqlalchemy as sa

from reaper.kinds.network import ovs as ovs_inv
from reaper.nova import schema
from tests.fixtures import netplumb as npl
from tests.fixtures import novadb
from tests.fixtures.netplumb import ovs_bridge  # noqa: F401

pytestmark = pytest.mark.functional

OLD = datetime.timedelta(days=2)


# --------------------------------------------------------------------------
# the world: namespace, bridge, Nova DB, reapers
# --------------------------------------------------------------------------

@pytest.fixture
def fmnet():
    """A network namespace of the test's own (fmnet-<hex>), deleted with its devices."""
    name = f"fmnet-{uuidlib.uuid4().hex[:8]}"
    r = npl.sh("ip", "netns", "add", name, check=False)
    if r.returncode != 0:
        from tests.conftest import service_unavailable
        service_unavailable("network namespaces", r.stderr.strip())
    try:
        npl.ip(name, "link", "set", "lo", "up")
        yield name
    finally:
        npl.sh("ip", "netns", "del", name, check=False)
        assert not os.path.exists(f"/var/run/netns/{name}"), f"namespace {name} left behind"


@pytest.fixture
def fm_db(tmp_path):
    """A Nova DB slice on SQLite (tmp_path)."""
    url = f"sqlite:///{tmp_path / 'nova-fmnet.sqlite'}"
    eng = sa.create_engine(url)
    schema.create_all(eng)
    yield types.SimpleNamespace(url=url, engine=eng, kind="sqlite")
    eng.dispose()


class NetWorld:
    """Namespace + integration bridge + Nova DB + reapers on libvirt's test driver."""

    def __init__(self, tmp, db, ns, bridge):
        self.tmp, self.db, self.ns, self.bridge = tmp, db, ns, bridge
        self.host = f"fmnet-{uuidlib.uuid4().hex[:8]}"
        novadb.add_compute_node(db.engine, self.host)
        self.made = []

    def reaper(self, domains=(), **pol):
        uri = npl.driver_node(self.tmp, list(domains))
        conn = libvirt.open(uri)
        pol.setdefault("grace_observations", 1)
        r = npl.make_net_reaper(self.tmp, self.db.url, self.host, netns=self.ns,
                                bridge=self.bridge, libvirt_uri=uri,
                                connect=lambda: conn, **pol)
        r.conn = conn
        self.made.append((r, conn))
        return r

    def close(self):
        for r, conn in self.made:
            npl.close_net_reaper(r)
            conn.close()

    # -- what is there
    def links(self) -> set[str]:
        return npl.links(self.ns)

    def ports(self) -> set[str]:
        return npl.ovs_ports(self.bridge)

    def port_column(self, name: str, column: str) -> str:
        return npl.vsctl("--if-exists", "get", "Interface", name, column).stdout.strip()

    def wait_replica(self, r, predicate, what: str) -> None:
        """Until the reaper's OVSDB session sees ``predicate(ports by name)``."""
        deadline = time.monotonic() + 10
        while not predicate({p.name: p for p in ovs_inv.collect(r.kinds.get("network").handles.ovs).items}):
            assert time.monotonic() < deadline, f"the OVSDB replica never showed {what}"
            time.sleep(0.05)


@pytest.fixture
def net_world(tmp_path, fm_db, fmnet, ovs_bridge):  # noqa: F811
    w = NetWorld(tmp_path, fm_db, fmnet, ovs_bridge)
    try:
        yield w
    finally:
        w.close()


def leaked(rep, prefix=None) -> list[dict]:
    return [f for f in rep.findings if f["classification"] == "leaked_vif"
            and (prefix is None or f["evidence"]["port_prefix"] == prefix)]


def ago(delta) -> datetime.datetime:
    return novadb.utcnow() - delta


def deleted_instance(w) -> str:
    return novadb.add_instance(w.db.engine, host=w.host, deleted=True,
                               deleted_at=ago(OLD))["uuid"]


def plain_veth_pair(w, port_id: str) -> dict[str, str]:
    """A Nova-named qvb/qvo veth pair, up, with no bridge and no tap."""
    n = npl.names(port_id)
    npl.ip(w.ns, "link", "add", n["qvb"], "type", "veth", "peer", "name", n["qvo"])
    for d in ("qvb", "qvo"):
        npl.ip(w.ns, "link", "set", n[d], "up")
    return n


def add_upper(w, lower: str, name: str, kind: tuple[str, ...]) -> None:
    """Stack a device on ``lower``; skips the test when the running kernel lacks the kind
    (this test host's kernel has no 8021q, for one)."""
    if kind[0] == "vxlan":
        cmd = ("link", "add", name, "type", *kind, "dev", lower)
    else:
        cmd = ("link", "add", "link", lower, "name", name, "type", *kind)
    r = npl.ip(w.ns, *cmd, check=False)
    if r.returncode != 0 and "Unknown device type" in r.stderr:
        pytest.skip(f"the running kernel cannot create {kind[0]} devices")
    assert r.returncode == 0, r.stderr


def direct_interface_xml(dev: str, target: str | None = None) -> str:
    """libvirt's macvtap interface on a host device (<interface type='direct'>)."""
    tgt = f"<target dev='{target}'/>" if target else ""
    return (f"<interface type='direct'><mac address='52:54:00:0f:00:01'/>"
            f"<source dev='{dev}' mode='bridge'/>{tgt}<model type='virtio'/></interface>")


# --------------------------------------------------------------------------
# item 11: half-cleaned plumbing
# --------------------------------------------------------------------------

@pytest.mark.parametrize("layout", [
    pytest.param("veth-pair-no-iface-id", id="veth-pair-no-iface-id"),
    pytest.param("hybrid-no-iface-id", id="hybrid-no-iface-id"),
    pytest.param("port-with-another-ports-iface-id", id="port-with-another-ports-iface-id"),
])
def test_vif_whose_ovs_port_must_stay_is_kept_whole(net_world, layout):
    """A Nova-named VIF whose integration bridge port may not be removed (no iface-id,
    or another port's iface-id) while its devices are leaked, leaked_vif_action=reap.

    Expect: nothing of it is removed (devices and OVS port stay, no dangling port),
    its devices are reported leaked_vif with action log and the port as the reason
    it is kept whole, over two reap passes; exit 3.
    """
    w = net_world
    port = npl.new_port_id()
    if layout == "hybrid-no-iface-id":
        n = npl.hybrid_plug(w.ns, w.bridge, port, ovs=False)
    else:
        n = plain_veth_pair(w, port)
    other = npl.new_port_id() if layout == "port-with-another-ports-iface-id" else None
    npl.add_ovs_vif_port(w.bridge, n["qvo"], other)
    before_links, before_ports = w.links(), w.ports()
    r = w.reaper()
    for _ in range(2):
        rep = r.run_pass("reap")
        assert rep.actions == [] and rep.exit_code == 3, rep.to_table()
        fs = leaked(rep)
        assert fs and {f["action"] for f in fs} == {"log"}, rep.to_table()
        assert all("kept whole" in f["reason"] and n["qvo"] in f["reason"] for f in fs)
        assert {f["resource"] for f in fs} == set(
            n[d] for d in (("qbr", "qvb", "qvo", "tap") if layout.startswith("hybrid")
                           else ("qvb", "qvo")))
    assert w.links() == before_links and w.ports() == before_ports
    assert w.port_column(n["qvo"], "external_ids:iface-id") == (f'"{other}"' if other else "")


def test_vif_whose_port_lost_its_iface_id_between_plan_and_act_is_kept_whole(net_world):
    """A leaked hybrid VIF is planned for removal; before the unplug step runs, its
    qvo port loses its iface-id (someone re-plugs it by hand).

    Expect: the step's act-time check keeps the whole VIF (bridge, veth pair, tap,
    OVS port all stay) and says why; the teardown ends aborted (nothing unplugged, no
    leak claimed cleaned), nothing half cleaned.
    """
    w = net_world
    port = npl.new_port_id()
    n = npl.hybrid_plug(w.ns, w.bridge, port, deleted_instance(w))
    r = w.reaper()
    t = _leak_teardown(r, port)
    npl.vsctl("--no-wait", "remove", "Interface", n["qvo"], "external_ids", "iface-id")
    w.wait_replica(r, lambda ps: n["qvo"] in ps and ps[n["qvo"]].iface_id is None,
                   "the port without iface-id")
    out = _execute(r, t)
    assert out.result == "aborted"      # nothing unplugged: no leak was cleaned
    step = out.reason
    assert "kept whole" in step and "has no iface-id" in step, step
    assert set(n.values()) <= w.links() and n["qvo"] in w.ports()


# --------------------------------------------------------------------------
# item 13: users through <source dev> and stacked devices
# --------------------------------------------------------------------------

@pytest.mark.parametrize("use", [
    pytest.param("domain-and-macvlan", id="domain-direct-on-qvo-with-macvlan"),
    pytest.param("domain-shut-off", id="shut-off-domain-direct-on-qvo"),
    pytest.param("macvlan-only", id="macvlan-on-qvo-no-domain"),
    pytest.param("macvtap-on-qbr", id="macvtap-on-qbr-no-domain"),
])
def test_vif_used_through_source_dev_or_a_stacked_device_is_kept(net_world, use):
    """A leaked-looking hybrid VIF (its port's vm-uuid is a deleted instance) whose qvo
    a non-Nova domain uses as <interface type='direct'><source dev>, or that has a
    macvlan (on the qvo) or macvtap (on the qbr) stacked on it.

    Expect: the qvo, its qvb peer, the qbr, the tap, the OVS port and the macvlan
    all stay over two reap passes, no action: a domain using it keeps it unlisted
    (exit 0); a stacked device alone makes it reported, log, "kept whole" (exit 3).
    """
    w = net_world
    port = npl.new_port_id()
    n = npl.hybrid_plug(w.ns, w.bridge, port, deleted_instance(w))
    domains, uppers = [], []
    if use in ("domain-and-macvlan", "macvlan-only"):
        add_upper(w, n["qvo"], "fm-mv0", ("macvlan", "mode", "bridge"))
        uppers.append("fm-mv0")
    if use == "macvtap-on-qbr":
        add_upper(w, n["qbr"], "fm-mvt0", ("macvtap",))
        uppers.append("fm-mvt0")
    if use.startswith("domain"):
        domains.append(npl.domain_xml(
            str(uuidlib.uuid4()), "fmnet-appliance", nova=False,
            running=use == "domain-and-macvlan",
            interfaces=direct_interface_xml(n["qvo"], "fm-mv0" if uppers else None)))
    before_links, before_ports = w.links(), w.ports()
    r = w.reaper(domains=domains)
    for _ in range(2):
        rep = r.run_pass("reap")
        assert rep.actions == [], rep.to_table()
        fs = leaked(rep)
        if domains:
            assert fs == [] and rep.exit_code == 0, rep.to_table()
        else:
            assert fs and {f["action"] for f in fs} == {"log"}, rep.to_table()
            assert all(f"{uppers[0]} (mac" in f["reason"] for f in fs), rep.to_table()
            assert rep.exit_code == 3
    assert w.links() == before_links and set(uppers) <= before_links
    assert w.ports() == before_ports == {n["qvo"]}


@pytest.mark.parametrize("kind", [
    pytest.param(("vlan", "id", "100"), id="vlan-on-tap"),
    pytest.param(("macvtap",), id="macvtap-on-tap"),
    pytest.param(("macvlan", "mode", "private"), id="macvlan-on-tap"),
    pytest.param(("vxlan", "id", "42", "dstport", "4789"), id="vxlan-bound-to-tap"),
])
def test_device_stacked_on_a_leaked_tap_keeps_it(net_world, kind):
    """A leaked direct-plugged tap (OVS port with iface-id and the vm-uuid of a
    deleted instance) carries a device stacked on it (vlan, macvtap, macvlan, or a
    vxlan bound to it).

    Expect: tap, OVS port and the stacked device stay over two reap passes; the tap
    and port are reported leaked_vif with action log, naming the stacked device;
    exit 3.
    """
    w = net_world
    port = npl.new_port_id()
    n = npl.direct_plug(w.ns, w.bridge, port, deleted_instance(w))
    add_upper(w, n["tap"], "fm-up0", kind)
    before_links, before_ports = w.links(), w.ports()
    r = w.reaper()
    for _ in range(2):
        rep = r.run_pass("reap")
        assert rep.actions == [] and rep.exit_code == 3, rep.to_table()
        fs = leaked(rep)
        assert {(f["kind"], f["resource"]) for f in fs} == {("vif", n["tap"]),
                                                             ("ovs_port", n["tap"])}
        assert all(f["action"] == "log" and "fm-up0" in f["reason"] for f in fs)
    assert w.links() == before_links and w.ports() == before_ports


def test_macvlan_stacked_between_plan_and_act_keeps_the_vif(net_world):
    """A leaked hybrid VIF is planned for removal; before the unplug step runs a
    macvlan is stacked on its qvo and a non-Nova domain uses it by <source dev>.

    Expect: the step keeps the whole VIF (qbr, qvb, qvo, tap, OVS port, macvlan)
    and names both users; the teardown ends aborted (nothing unplugged).
    """
    w = net_world
    port = npl.new_port_id()
    n = npl.hybrid_plug(w.ns, w.bridge, port, deleted_instance(w))
    r = w.reaper()
    t = _leak_teardown(r, port)
    add_upper(w, n["qvo"], "fm-mv1", ("macvlan",))
    out = _execute(r, t)
    step = out.reason
    assert out.result == "aborted" and "kept whole" in step and "fm-mv1 (macvlan)" in step
    assert set(n.values()) | {"fm-mv1"} <= w.links() and n["qvo"] in w.ports()
    # and a domain defined meanwhile on the qvo (the macvlan gone): kept too
    npl.ip(w.ns, "link", "del", "fm-mv1")
    r.conn.defineXML(npl.domain_xml(str(uuidlib.uuid4()), "fmnet-late", nova=False,
                                    running=False,
                                    interfaces=direct_interface_xml(n["qvo"])))
    out = _execute(r, t)
    assert out.result == "aborted" and "now used by domain(s) fmnet-late" in out.reason
    assert set(n.values()) <= w.links() and n["qvo"] in w.ports()


def test_foreign_port_on_the_qbr_keeps_the_vif_of_a_reaped_domain(net_world):
    """A running-deleted Nova domain is reaped; its hybrid VIF's qbr also has a
    foreign port (a veth someone enslaved to it).

    Expect: the domain is destroyed and undefined, but its VIF is kept whole (qbr,
    qvb, qvo, tap, the foreign veth and the OVS port stay) and the teardown's
    evidence says why (vifs_kept); exit 4; the next pass only logs the VIF.
    """
    w = net_world
    u = deleted_instance(w)
    port = npl.new_port_id()
    n = npl.hybrid_plug(w.ns, w.bridge, port, u)
    npl.ip(w.ns, "link", "add", "fm-x0", "type", "veth", "peer", "name", "fm-x1")
    npl.ip(w.ns, "link", "set", "fm-x0", "master", n["qbr"])
    r = w.reaper(domains=[npl.domain_xml(u, "instance-00f0a001",
                                         npl.hybrid_interface_xml(port))])
    rep = r.run_pass("reap")
    assert [(a["classification"], a["result"]) for a in rep.actions] == [
        ("running_deleted", "done")], rep.to_table()
    (dom_f,) = [f for f in rep.findings if f["classification"] == "running_deleted"]
    (kept,) = dom_f["evidence"]["vifs_kept"]
    assert kept["prefix"] == port[:11] and "fm-x0" in kept["kept"]
    assert "unplug_vifs" not in dict(rep.actions[0]["steps"])
    with pytest.raises(libvirt.libvirtError):
        r.conn.lookupByUUIDString(u)
    assert set(n.values()) | {"fm-x0", "fm-x1"} <= w.links()
    assert w.ports() == {n["qvo"]}
    again = r.run_pass("reap")
    assert again.actions == [] and {f["action"] for f in leaked(again)} == {"log"}
    assert set(n.values()) <= w.links() and w.ports() == {n["qvo"]}


# --------------------------------------------------------------------------
# hostile network_info
# --------------------------------------------------------------------------

def _hostile(kind: str, port_id: str) -> str:
    if kind == "nested-too-deep":
        return "[" * 100000 + "]" * 100000
    if kind == "huge":
        return ('[{"id": "' + port_id + '", "details": {"pad": "'
                + "x" * (3 * 1024 * 1024) + '"}}]')
    if kind == "garbage":
        return "\x01\x02 not json at all {[}"
    if kind == "wrong-types":
        return '[{"id": 17, "devname": ["tap"], "details": "yes"}, null, "x"]'
    raise AssertionError(kind)


@pytest.mark.parametrize("nova_db", ["sqlite", "mariadb"], indirect=True)
@pytest.mark.parametrize("kind", ["nested-too-deep", "huge", "garbage", "wrong-types"])
def test_hostile_network_info_never_stops_a_pass(net_world_any_db, kind):
    """A live instance here (no domain) has hostile network_info (nested too deep for
    the parser, 3 MiB, not JSON, wrong types); its hybrid VIF has no vm-uuid, and
    an orphan directory of a deleted instance waits to be reaped.

    Expect: the pass completes (exit 4, no error): the orphan directory is reaped,
    the instance is reported with its malformed network_info, its VIF stays and is
    only logged (ownership uncertain); the same on the next pass.
    """
    w = net_world_any_db
    live = novadb.add_instance(w.db.engine, host=w.host)["uuid"]
    port = npl.new_port_id()
    novadb.add_info_cache(w.db.engine, live, _hostile(kind, port))
    n = npl.hybrid_plug(w.ns, w.bridge, port)
    gone = deleted_instance(w)
    r = w.reaper()
    (w.tmp / "instances" / gone).mkdir()
    rep = r.run_pass("reap")
    assert rep.errors == [] and rep.exit_code == 4, rep.to_table()
    assert [(a["classification"], a["result"]) for a in rep.actions] == [
        ("orphan_dir", "done")], rep.to_table()
    assert not (w.tmp / "instances" / gone).exists()
    (inst,) = [f for f in rep.findings if f["kind"] == "instance"]
    assert inst["instance_uuid"] == live and "malformed" in inst["reason"]
    assert len(inst["evidence"]["network_info"]) <= 512
    fs = leaked(rep)
    assert fs and {f["action"] for f in fs} == {"log"} and all(live in f["reason"] for f in fs)
    again = r.run_pass("reap")
    assert again.errors == [] and again.exit_code == 3 and again.actions == []
    assert set(n.values()) <= w.links() and w.ports() == {n["qvo"]}


@pytest.fixture
def net_world_any_db(tmp_path, nova_db, fmnet, ovs_bridge):  # noqa: F811
    w = NetWorld(tmp_path, nova_db, fmnet, ovs_bridge)
    try:
        yield w
    finally:
        w.close()


# --------------------------------------------------------------------------
# plan now, act later
# --------------------------------------------------------------------------

def _leak_teardown(r, port_id: str):
    plan = r.kinds.plan(*r._load(r.conn, r.policy), r.policy, r.clock())
    (t,) = [t for t in plan.teardowns if t.classification.value == "leaked_vif"
            and t.vifs[0]["prefix"] == port_id[:11]]
    return t


def _execute(r, t):
    from reaper.executor import teardown
    ctx = teardown.Context(conn=r.conn, engine=r.engine, state=r.state, policy=r.policy,
                           clock=r.clock, kinds=r.kinds)
    return teardown.execute(ctx, t, f"req-{uuidlib.uuid4()}")


def test_reclaim_of_an_instance_with_hostile_network_info_completes(net_world):
    """A soft-deleted instance past reclaim_instance_interval (no domain) has
    network_info nested too deep for the JSON parser; its hybrid VIF's port carries
    its vm-uuid.

    Expect: the reclaim runs to the end (exit 4): its VIF is found by vm-uuid and
    unplugged whole, the row is soft-deleted, and the audit record's controller
    leftovers say the network_info was unparsable; the next pass has nothing to do.
    """
    w = net_world
    u = novadb.add_instance(w.db.engine, host=w.host, vm_state="soft-delete", power_state=4,
                            deleted_at=ago(OLD))["uuid"]
    port = npl.new_port_id()
    novadb.add_info_cache(w.db.engine, u, _hostile("nested-too-deep", port))
    n = npl.hybrid_plug(w.ns, w.bridge, port, u)
    r = w.reaper(reclaim_instance_interval=3600)
    rep = r.run_pass("reap")
    assert rep.errors == [] and rep.exit_code == 4, rep.to_table()
    (act,) = rep.actions
    assert (act["classification"], act["result"]) == ("reclaimable", "done"), rep.to_table()
    assert act["evidence"]["controller_leftovers"]["network_info_unparsable"] is True
    assert not (set(n.values()) & w.links()) and w.ports() == set()
    assert novadb.get_instance(w.db.engine, u)["deleted"] != 0
    assert r.run_pass("reap").exit_code == 0
