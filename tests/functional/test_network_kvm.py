"""End to end: a real KVM guest plugged the hybrid way (tap on a qbr bridge, wired to an
OVS integration bridge through a qvb/qvo veth pair), its instance deleted in Nova;
the reaper's running-deleted teardown must leave none of that plumbing behind.

libvirtd runs in the root namespace, so this one test builds its devices there, with
names derived from a random port id ("feed" + random hex), on an integration bridge
of its own (br-int-<random>, netdev datapath), and removes whatever is left in a
finally block. Its reaper logs leaked VIFs instead of reaping them, so nothing else
that happens to live in the root namespace is ever touched by it.
"""
from __future__ import annotations

import datetime
import uuid as uuidlib

import pytest

from reaper import policy as policy_mod
from reaper.objects.fields import Action, Classification
from tests.fixtures import netplumb as npl
from tests.fixtures import novadb
from tests.fixtures.domains import domain_exists
from tests.fixtures.netplumb import ovs_bridge  # noqa: F401

pytestmark = pytest.mark.functional


def test_reaping_a_running_deleted_kvm_guest_unplugs_its_hybrid_vif(
        tmp_path, nova_db, kvm_domain_factory, libvirt_conn, ovs_bridge):  # noqa: F811
    host = f"ft-{uuidlib.uuid4().hex[:8]}"
    novadb.add_compute_node(nova_db.engine, host)
    u = novadb.add_instance(nova_db.engine, host=host, deleted=True,
                            deleted_at=novadb.utcnow() - datetime.timedelta(days=1))["uuid"]
    port = npl.new_port_id("feed")
    n = npl.names(port)
    mac = "fa:16:3e:" + ":".join(port[i:i + 2] for i in (4, 6, 9))
    r = None
    try:
        # os-vif's hybrid plug: qbr, qvb/qvo, qvo on the integration bridge
        npl.hybrid_plug(None, ovs_bridge, port, u, tap=False)
        # Nova's libvirt interface for it: libvirt creates the tap and puts it on qbr
        dom = kvm_domain_factory(u, start=True, paused=True,
                                 extra_devices=npl.hybrid_interface_xml(port, mac))
        assert dom.isActive()
        assert set(n.values()) <= npl.links(None)
        assert n["qvo"] in npl.ovs_ports(ovs_bridge)
        master = npl.ip(None, "-o", "link", "show", n["tap"]).stdout
        assert f"master {n['qbr']}" in master

        r = npl.make_net_reaper(
            tmp_path, nova_db.url, host, netns=None, bridge=ovs_bridge,
            libvirt_uri="qemu:///system", ovs_timeout=10,
            actions={**policy_mod.default_actions(), Classification.LEAKED_VIF: Action.LOG})
        audit = r.run_pass("audit")
        dom_f = [f for f in audit.findings if f["instance_uuid"] == u and f["kind"] == "domain"]
        assert [f["classification"] for f in dom_f] == ["running_deleted"]
        (v,) = dom_f[0]["evidence"]["vifs"]
        assert v["prefix"] == port[:11] and "domain XML" in v["found_by"]
        assert set(v["devices"]) == set(n.values())
        assert v["ovs_ports"] == [n["qvo"]]
        mine = {f["resource"] for f in audit.findings
                if f["classification"] == "leaked_vif"}
        assert not (mine & set(n.values())), "its VIFs go with its domain, not as leaks"

        rep = r.run_pass("reap")
        (act,) = [a for a in rep.actions if a["instance_uuid"] == u]
        assert act["result"] == "done", rep.to_table()
        steps = dict(act["steps"])
        assert list(steps) == ["destroy_domain", "unplug_vifs", "undefine_domain"]
        assert n["qbr"] in steps["unplug_vifs"] and n["qvo"] in steps["unplug_vifs"]
        assert not domain_exists(libvirt_conn, u)
        left = set(n.values()) & npl.links(None)
        assert not left, f"plumbing left behind: {left}"
        assert n["qvo"] not in npl.ovs_ports(ovs_bridge)
        again = r.run_pass("reap")
        assert [a for a in again.actions if a["instance_uuid"] == u] == []
    finally:
        if r is not None:
            npl.close_net_reaper(r)
        for name in (n["tap"], n["qvo"], n["qvb"], n["qbr"]):
            npl.ip(None, "link", "del", name, check=False)

