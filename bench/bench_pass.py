"""Benchmark one reconciliation pass against the bare enumeration it cannot avoid.

For each N: a host of N domains (libvirt's in-process test driver, each with a
disk in its instance directory) and a Nova DB of N local rows plus 100*N rows of
other hosts. Prints the audit-pass wall time, the bare enumeration time (listing
the domains with their XML, the instance directories and the same DB rows) on the
same run, their ratio (best of --repeat passes; the first pass, which parses
every domain's XML, is printed too: later passes reuse parses of unchanged XML),
the pass's DB round trips and the process's peak RSS.

    .venv/bin/python bench/bench_pass.py                 # SQLite, N = 100 1000 5000
    .venv/bin/python bench/bench_pass.py --db mysql+pymysql://reaper:reaper@127.0.0.1/
    .venv/bin/python bench/bench_pass.py --n 1000 --repeat 5

Each N runs in a fresh process so peak RSS is per N.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib  # also puts the repository root on sys.path

HOST = benchlib.HOST


def build(root: str, n: int, db_base: str | None) -> dict:
    from reaper import demo

    inst = os.path.join(root, "instances")
    os.makedirs(inst, exist_ok=True)
    url, name = benchlib.create_db(db_base, root, "pass")
    rng = random.Random(n)
    local = [str(uuidlib.UUID(int=rng.getrandbits(128), version=4)) for _ in range(n)]
    benchlib.fill_nova_db(url, local, 100, seed=rng.getrandbits(32))
    doms = []
    for i, u in enumerate(local):
        d = os.path.join(inst, u)
        os.mkdir(d)
        with open(os.path.join(d, "disk"), "wb") as f:
            f.write(b"\0" * 512)
        doms.append(demo.domain_xml(u, f"instance-{i + 1:08x}",
                                    disks=[os.path.join(d, "disk")]))
    node = os.path.join(root, "node.xml")
    with open(node, "w") as f:
        f.write(demo.node_xml(doms))
    return {"url": url, "dbname": name, "inst": inst, "node": node}


def bare(conn, engine, inst, host, uuids):
    """What any reconciler must do at least: list + XML, list dirs, read the rows."""
    xml = [d.XMLDesc(0) for d in conn.listAllDomains(0)]
    names = [e.name for e in os.scandir(inst)]
    return len(xml), len(names), benchlib.bare_db_rows(engine, host, uuids)


def one(n: int, db_base: str | None, repeat: int, via_daemon: bool = False) -> dict:
    from reaper import audit as audit_mod
    from reaper import policy as policy_mod
    from reaper import reconcile
    from reaper import state as state_mod
    from reaper.nova import db as nova_db

    root = tempfile.mkdtemp(prefix=f"reaper-bench-{n}-")
    # Build in another process, so this one's peak RSS is the pass's alone.
    t0 = time.perf_counter()
    cmd = [sys.executable, __file__, "--build-only", str(n), "--root", root]
    if db_base:
        cmd += ["--db", db_base]
    built = json.loads(subprocess.run(cmd, check=True, capture_output=True,
                                      text=True).stdout.strip().splitlines()[-1])
    build_s = time.perf_counter() - t0
    url, dbname, inst = built["url"], built["dbname"], built["inst"]
    from reaper.kinds.instance import libvirt as libvirt_inv
    # In process (test:///) or through libvirtd's RPC (test+unix:///), as
    # qemu:///system always is in production.
    conn = libvirt_inv.open_connection(
        f"test{'+unix' if via_daemon else ''}://{built['node']}")
    pol = policy_mod.Policy(host=HOST, hypervisor_hostname=HOST, instances_path=inst,
                            actions=policy_mod.default_actions(),
                            max_destroy_per_pass=10, instances_path_shared="false")
    eng = nova_db.make_engine(url)
    reaper = reconcile.Reaper(policy=pol, libvirt_uri="test:///bench", engine=eng,
                              state=state_mod.StateDB(os.path.join(root, "state")),
                              audit=audit_mod.AuditLog(None, HOST), connect=lambda: conn)
    uuids = [d.UUIDString() for d in conn.listAllDomains(0)]
    passes, bares, queries = [], [], set()
    for _ in range(repeat):
        t = time.perf_counter()
        bare(conn, eng, inst, HOST, uuids)
        bares.append(time.perf_counter() - t)
        counter = nova_db.QueryCounter(eng)
        with counter:
            t = time.perf_counter()
            rep = reaper.run_pass("audit")
            passes.append(time.perf_counter() - t)
        queries.add(counter.count)
        assert rep.exit_code in (0, 3), rep.to_table()
    reaper.close()
    conn.close()
    benchlib.drop_db(db_base, dbname)
    import shutil
    shutil.rmtree(root, ignore_errors=True)
    p, b, cold = min(passes), min(bares), passes[0]
    return {"n": n, "db": "mariadb" if db_base else "sqlite",
            "libvirt": "libvirtd" if via_daemon else "in-process", "build_s": round(build_s, 1),
            "pass_s": round(p, 4), "cold_s": round(cold, 4), "bare_s": round(b, 4),
            "ratio": round(p / b, 2), "cold_ratio": round(cold / b, 2),
            "db_round_trips": sorted(queries),
            "peak_rss_mb": benchlib.peak_rss_mb()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="*", default=[100, 1000, 5000])
    ap.add_argument("--db", help="server URL without database (MariaDB); default SQLite")
    ap.add_argument("--repeat", type=int, default=3, help="passes per N (best is printed)")
    ap.add_argument("--via-libvirtd", action="store_true",
                    help="reach the test driver through libvirtd (test+unix://), as "
                         "production reaches qemu:///system; needs libvirtd running")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--build-only", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--root", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.build_only:
        print(json.dumps(build(a.root, a.build_only, a.db)))
        return 0
    if a.child:
        print(json.dumps(one(a.child, a.db, a.repeat, a.via_libvirtd)))
        return 0
    print(f"{'db':<8}{'libvirt':<11}{'N':>6}{'pass s':>10}{'bare s':>10}{'ratio':>7}"
          f"{'1st pass s':>11}{'1st ratio':>10}{'DB trips':>10}"
          f"{'peak RSS MB':>13}{'build s':>9}")
    for n in a.n:
        cmd = [sys.executable, __file__, "--child", str(n), "--repeat", str(a.repeat)]
        if a.db:
            cmd += ["--db", a.db]
        if a.via_libvirtd:
            cmd.append("--via-libvirtd")
        out = subprocess.run(cmd, capture_output=True, text=True)
        if out.returncode:
            print(out.stderr, file=sys.stderr)
            return 1
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{r['db']:<8}{r['libvirt']:<11}{r['n']:>6}{r['pass_s']:>10.3f}{r['bare_s']:>10.3f}"
              f"{r['ratio']:>7}{r['cold_s']:>11.3f}{r['cold_ratio']:>10}"
              f"{','.join(map(str, r['db_round_trips'])):>10}{r['peak_rss_mb']:>13}"
              f"{r['build_s']:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
