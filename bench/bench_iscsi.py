"""Benchmark the iSCSI collector + R12 matching against the bare enumeration.

A simulated initiator host (tests/iscsi_sim: a benchmark host needs neither the
iscsi_tcp module nor a target) with --sessions sessions of --luns LUNs each, one node
record per session, --bdms live BDMs (two per instance; nine in ten name a LUN that exists,
the rest name LUNs of targets this host has no session with) and one domain per
instance whose disks point at its LUNs by-path. Prints, for the same run:

* bare: ``iscsiadm -m session`` + the sysfs walk to every session's block devices
  (what anything listing iSCSI devices must do at least);
* collect: the reaper's collector (``iscsiadm -m session`` and ``-m node``
  concurrently, the same walk plus per-device state/wwid/dev/holders, /dev/disk
  links, open-by-process and mount checks);
* match: the pure planner extension (R12 over every LUN, BDM and domain);
* the ratio (collect + match) / bare; the target is <= 1.5.

    .venv/bin/python bench/bench_iscsi.py                  # 500 sessions x 2 LUNs, 1000 BDMs
    .venv/bin/python bench/bench_iscsi.py --repeat 9 --sessions 1000
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # also puts the repository root on sys.path

HOST = benchlib.HOST
REAL_ISCSIADM = "/usr/sbin/iscsiadm"


def portals_for(n_sessions: int) -> list[str]:
    return benchlib.iscsi_portals()


def build_tree(root: str, n_sessions: int, n_luns: int):
    """The simulated initiator host: sessions, LUN devices, node records."""
    return benchlib.build_iscsi_sim(root, n_sessions, n_luns)


def build_model(n_sessions: int, n_luns: int, n_bdms: int, seed: int = 7):
    """Nova's side (rows, BDMs) and the domains, deterministic for a seed."""
    import random

    from reaper.objects.host import Domain, DomainDisk
    from reaper.objects.nova import BdmRow, InstanceRow
    from tests.iscsi_sim import split_portal

    rng = random.Random(seed)
    portals = portals_for(n_sessions)
    luns = [(portals[i % len(portals)], f"iqn.2010-10.org.openstack:volume-{i:05d}", lun)
            for i in range(n_sessions) for lun in range(n_luns)]
    rng.shuffle(luns)
    rows, bdms, domains = {}, [], []
    for k in range(n_bdms // 2):
        u = str(uuidlib.UUID(int=rng.getrandbits(128), version=4))
        rows[u] = InstanceRow(id=k + 1, uuid=u, host=HOST, node=HOST, vm_state="active",
                              task_state=None, power_state=1, deleted=0, deleted_at=None)
        disks = []
        for j in range(2):
            idx = 2 * k + j
            if idx % 10 == 9 or idx >= len(luns):      # a LUN this host is not connected to
                portal, iqn, lun = portals[0], f"iqn.2010-10.org.openstack:remote-{idx}", 0
            else:
                portal, iqn, lun = luns[idx]
            vol = str(uuidlib.UUID(int=rng.getrandbits(128), version=4))
            ci = {"driver_volume_type": "iscsi", "serial": vol, "data": {
                "target_portal": portal, "target_iqn": iqn, "target_lun": lun,
                "volume_id": vol, "auth_method": "CHAP", "auth_username": "u",
                "auth_password": "p", "target_discovered": False}}
            bdms.append(BdmRow(idx + 1, u, vol, "volume", "volume", f"/dev/vd{'bc'[j]}",
                               False, json.dumps(ci), None))
            addr, port, _ = split_portal(portal)
            disks.append(DomainDisk(f"vd{'bc'[j]}", "disk", "block",
                                    f"/dev/disk/by-path/ip-{addr}:{port}-iscsi-{iqn}-lun-{lun}",
                                    serial=vol))
        domains.append(Domain(uuid=u, name=f"instance-{k + 1:08x}", state="running",
                              nova_owned=True, nova_uuid=u, disks=tuple(disks)))
    return rows, bdms, domains


def measure(sysfs_root: str, dev_root: str, iscsiadm: str, env: dict, args) -> dict:
    from reaper import planner
    from reaper.kinds.iscsi import collector as iscsi
    from reaper.kinds.iscsi import rules as volumes
    from reaper.policy import Policy, default_actions
    from reaper.objects.fields import Action, Classification
    from reaper.objects.host import CollectorResult, Inventory
    from reaper.objects.nova import NovaView
    from reaper.objects.plan import Plan

    rows, bdms, domains = build_model(args.sessions, args.luns, args.bdms)
    pol = Policy(host=HOST, hypervisor_hostname=HOST, instances_path="/nonexistent",
                 actions=default_actions() | {Classification.LEAKED_ISCSI: Action.REAP})
    view = NovaView(ok=True, instances=rows, bdms=tuple(bdms))
    now = datetime.datetime(2026, 11, 23)
    bare_t, coll_t, match_t = [], [], []
    for _ in range(args.repeat):
        t = time.perf_counter()
        walked = iscsi.bare_walk(sysfs_root, iscsiadm=iscsiadm, env=env)
        bare_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        res = iscsi.collect(sysfs_root, dev_root, iscsiadm=iscsiadm, env=env)
        coll_t.append(time.perf_counter() - t)
        assert res.ok, res.error
        inv = Inventory(CollectorResult("domain", True, tuple(domains)),
                        CollectorResult("instance_dir", True, ()),
                        extra={"iscsi_session": res})
        t = time.perf_counter()
        plan = volumes.extend(planner.PlanContext(inv, view, pol, now, Plan((), ())))
        match_t.append(time.perf_counter() - t)
    return {
        "sessions": len(walked), "devices": sum(len(v) for v in walked.values()),
        "nodes": sum(1 for i in res.items if type(i).__name__ == "IscsiNode"),
        "bdms": len(bdms), "domains": len(domains),
        "leaked": sum(1 for f in plan.findings
                      if f.classification is Classification.LEAKED_ISCSI),
        "disconnects": len(plan.teardowns),
        "bare": statistics.median(bare_t), "collect": statistics.median(coll_t),
        "match": statistics.median(match_t)}


def report(title: str, m: dict, repeat: int) -> None:
    print(f"{title}")
    print(f"  host: {m['sessions']} sessions, {m['devices']} LUN devices, {m['nodes']} node "
          f"records, {m['bdms']} BDMs, {m['domains']} domains; {m['leaked']} leaked LUNs, "
          f"{m['disconnects']} disconnects planned")
    bare, coll, match = m["bare"], m["collect"], m["match"]
    print(f"  median of {repeat} runs:")
    print(f"    bare   iscsiadm -m session + sysfs walk   {bare * 1000:8.1f} ms")
    print(f"    reaper collect                            {coll * 1000:8.1f} ms")
    print(f"    reaper match (R12 planner extension)      {match * 1000:8.1f} ms")
    print(f"    reaper collect + match                    {(coll + match) * 1000:8.1f} ms")
    ratio = (coll + match) / bare
    print(f"    ratio (collect + match) / bare            {ratio:8.2f}x "
          f"(target <= 1.5x: {'met' if ratio <= 1.5 else 'NOT met'})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=500)
    ap.add_argument("--luns", type=int, default=2)
    ap.add_argument("--bdms", type=int, default=1000)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--inner", metavar="ROOT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:      # inside the mount namespace: /sys and /dev are the simulator's
        m = measure("/sys", "/dev", REAL_ISCSIADM, dict(os.environ), args)
        print(json.dumps(m))
        return 0

    from tests import iscsi_sim

    root = tempfile.mkdtemp(prefix="bench-iscsi-")
    try:
        t0 = time.perf_counter()
        sim = build_tree(root, args.sessions, args.luns)
        print(f"simulated host built in {time.perf_counter() - t0:.1f}s "
              f"(simulated initiator: see tests/iscsi_sim)")
        env = iscsi_sim.env(sim.root)
        report("with the simulator's iscsiadm (Python, reads the simulated sysfs and "
               "node database):", measure(sim.sys, sim.dev, "iscsiadm", env, args),
               args.repeat)
        if os.path.exists(REAL_ISCSIADM) and shutil.which("unshare"):
            cmd = iscsi_sim.ns_argv(sim.root, [
                sys.executable, os.path.abspath(__file__), "--inner", sim.root,
                "--sessions", str(args.sessions), "--luns", str(args.luns),
                "--bdms", str(args.bdms), "--repeat", str(args.repeat)])
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800)
            if r.returncode == 0:
                report("with open-iscsi's own iscsiadm 2.1.8 (C), reading the same simulated "
                       "sysfs and node database bind-mounted at /sys, /dev, /etc/iscsi in a "
                       "mount namespace:", json.loads(r.stdout.strip().splitlines()[-1]),
                       args.repeat)
            else:
                print(f"(real iscsiadm run skipped: {r.stderr.strip()[-300:]})")
        return 0
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
