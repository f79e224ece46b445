"""Benchmark the network collectors against the bare dumps they cannot avoid.

Builds a host of --n hybrid-plugged VIFs (default 1,000): in a network namespace of
its own, each VIF's qbr bridge, qvb/qvo veth pair and tap (4 devices per VIF), and
--n ports with iface-id/vm-uuid on an integration bridge (by default on a private
ovsdb-server started for the run; --ovsdb system uses the test host's server).
Then, on the same run, best and median of --repeat rounds:

* bare netlink dump: pyroute2 ``IPRoute.get_links()`` with pyroute2's own decoder
  (the dump the collector is built on), and the raw floor: the same RTM_GETLINK
  dump on a plain rtnetlink socket, bytes received and split, nothing decoded;
* bare OVSDB dump: one ``transact`` selecting the columns the collector reads
  (Bridge, Port, Interface) through python-ovs' JSON-RPC (what ovsdbapp speaks),
  and the raw floor: the same request on a plain socket, parsed by stdlib json;
* the same get_links() with the collector's decoder (only the attributes it reads,
  straight from the buffer), without building records;
* network collection, warm: what every pass of the agent does (long-lived netlink
  socket and OVSDB session): ``network.collect`` + ``ovs.collect``;
* network collection, cold: the same with new handles (socket opened, ovsdbapp IDL
  connected and its initial monitor dump received), i.e. the agent's first pass;
* R11 planning over the collected records (pure): every VIF owned by a live
  instance, and every VIF leaked.

    .venv/bin/python bench/bench_network.py            # 1,000 VIFs, private ovsdb-server
    .venv/bin/python bench/bench_network.py --n 200 --repeat 3 --ovsdb system

Needs root (namespaces, ovsdb-server). Everything it creates is removed at the end.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import socket
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # also puts the repository root on sys.path
from benchlib import (
    HOST, port_id, pyovs_dump, raw_netlink_dump, raw_ovsdb_dump, timed, vm_uuid,
)

Host = benchlib.NetHost


def plan_inputs(devices, ports, n: int, owned: bool):
    from reaper.objects.host import CollectorResult, Inventory
    from reaper.objects.nova import InfoCacheRow, InstanceRow, NovaView
    inv = Inventory(CollectorResult("domain", True, ()), CollectorResult("instance_dir", True, ()),
                    extra={"vif": devices, "ovs_port": ports})
    rows, caches = {}, {}
    if owned:
        for i in range(n):
            u = vm_uuid(i)
            rows[u] = InstanceRow(id=i + 1, uuid=u, host=HOST, node=HOST, vm_state="active",
                                  task_state=None, power_state=1, deleted=0, deleted_at=None)
            caches[u] = InfoCacheRow(u, json.dumps([{
                "id": port_id(i), "address": "fa:16:3e:00:00:01", "type": "ovs",
                "devname": "tap" + port_id(i)[:11], "ovs_interfaceid": port_id(i),
                "details": {"ovs_hybrid_plug": True}, "network": {"bridge": "br-int"}}]))
    return inv, NovaView(ok=True, instances=rows, info_caches=caches)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="hybrid VIFs (4 devices each)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--ovsdb", choices=["private", "system"], default="private")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("needs root (network namespaces, ovsdb-server)", file=sys.stderr)
        return 2
    for tool in ("ip", "ovs-vsctl", "ovsdb-server", "ovsdb-tool"):
        if shutil.which(tool) is None:
            print(f"{tool} not found", file=sys.stderr)
            return 2

    from pyroute2 import IPRoute
    from pyroute2 import netns as pnetns

    from reaper import planner
    from reaper.kinds.network import collector as net_inv
    from reaper.kinds.network import ovs as ovs_inv
    from reaper.kinds.network import rules as net_plan
    from reaper.policy import Policy, default_actions
    from reaper.objects.fields import Action, Classification

    workdir = tempfile.mkdtemp(prefix="reaper-bench-net-")
    host = Host(args.n, args.ovsdb, workdir)
    try:
        host.build()
        R = args.repeat
        # bare dumps
        stock = IPRoute(netns=host.ns, flags=0)
        b_nl = timed(lambda: len(stock.get_links()), R)
        stock.close()
        raw = pnetns.create_socket(host.ns, socket.AF_NETLINK, socket.SOCK_RAW, 0)
        raw.bind((0, 0))
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
        r_nl = timed(lambda: raw_netlink_dump(raw), R)
        raw.close()
        b_ovs = timed(lambda: pyovs_dump(host.remote, host.bridge), R)
        r_ovs = timed(lambda: raw_ovsdb_dump(host.unix_path, host.bridge), R)

        # the collectors, warm
        nl = net_inv.Netlink(host.ns)
        oh = ovs_inv.OvsHandle(host.remote, host.bridge, 30)
        first_dev, first_ovs = net_inv.collect(nl), ovs_inv.collect(oh)
        assert first_dev.ok and first_ovs.ok, (first_dev.error, first_ovs.error)
        t_nl = timed(lambda: len(nl.dump()), R)
        w_dev = timed(lambda: net_inv.collect(nl), R)
        w_ovs = timed(lambda: ovs_inv.collect(oh), R)
        w_all = timed(lambda: (net_inv.collect(nl), ovs_inv.collect(oh)), R)
        devices, ports = w_dev[2], w_ovs[2]
        assert len(devices.items) == 4 * args.n, len(devices.items)
        assert len(ports.items) == args.n + 1, len(ports.items)   # + the bridge's own
        nl.close()
        oh.close()

        # cold: new handles each round
        def cold():
            n2, o2 = net_inv.Netlink(host.ns), ovs_inv.OvsHandle(host.remote, host.bridge, 30)
            try:
                return net_inv.collect(n2), ovs_inv.collect(o2)
            finally:
                n2.close()
                o2.close()
        c_all = timed(cold, max(1, min(R, 3)))

        # planning
        pol = Policy(host=HOST, hypervisor_hostname=HOST, instances_path="/nonexistent",
                     actions={**default_actions(), Classification.LEAKED_VIF: Action.REAP})
        now = datetime.datetime(2026, 1, 1)
        ext = [net_plan.extend]
        inv, view = plan_inputs(devices, ports, args.n, owned=True)
        p_owned = timed(lambda: planner.build_plan(inv, view, pol, now, extensions=ext), R)
        assert p_owned[2].findings == () and p_owned[2].teardowns == ()
        inv, view = plan_inputs(devices, ports, args.n, owned=False)
        p_leak = timed(lambda: planner.build_plan(inv, view, pol, now, extensions=ext), R)
        assert len(p_leak[2].teardowns) == args.n

        bare, floor = b_nl[0] + b_ovs[0], r_nl[0] + r_ovs[0]
        rows = [
            ("bare netlink dump: pyroute2 get_links(), stock decoder", b_nl),
            ("bare netlink dump: raw socket, bytes only (floor)", r_nl),
            ("bare OVSDB dump: one transact via python-ovs", b_ovs),
            ("bare OVSDB dump: raw socket + stdlib json (floor)", r_ovs),
            ("netlink dump: pyroute2 get_links(), the collector's decoder", t_nl),
            ("collection, warm: devices (netlink dump -> NetDevice)", w_dev),
            ("collection, warm: OVS ports (IDL replica -> OvsPort)", w_ovs),
            ("network collection, warm (agent steady state)", w_all),
            ("network collection, cold (new socket, IDL connect + dump)", c_all),
            (f"R11 planning, {args.n} VIFs all owned by live instances", p_owned),
            (f"R11 planning, {args.n} VIFs all leaked", p_leak),
        ]
        print(f"host: {args.n} hybrid VIFs = {len(devices.items)} devices in netns {host.ns}, "
              f"{len(ports.items) - 1} VIF ports (+1 internal) on {host.bridge} "
              f"({'private' if host.private else 'system'} ovsdb-server); "
              f"built in {host.build_s:.1f}s; best/median of {R}")
        w = max(len(r[0]) for r in rows)
        print(f"{'':{w}}  {'best':>8}  {'median':>8}")
        for label, (best, med, _) in rows:
            print(f"{label:{w}}  {best:8.3f}s {med:8.3f}s")
        print(f"ratio warm collection / bare dumps (pyroute2 + python-ovs): "
              f"{w_all[0] / bare:.2f}x  (target <= 1.5x)")
        print(f"ratio warm collection / raw floor (no decoding):            "
              f"{w_all[0] / floor:.2f}x")
        print(f"ratio cold collection / bare dumps:                         "
              f"{c_all[0] / bare:.2f}x")
        return 0
    finally:
        host.destroy()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
