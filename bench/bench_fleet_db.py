"""The Nova DB load a fleet of agents puts on the database, from measured passes.

Builds one host (bench_pass.build: N domains on libvirt's test driver, N local rows
plus 100*N rows of other hosts), runs the agent's periodic passes on it (a
reconcile "reap" pass with nothing to do and a "reclaim" pass), counts their Nova
DB round trips with QueryCounter and times the DB reads (the view load:
statements and fetching their rows), then scales to a fleet at the agent's default intervals:

    qps       = hosts * (q_reap / reconcile_interval + q_reclaim / reclaim_poll_interval)
    db_s_per_s = hosts * (t_reap / reconcile_interval + t_reclaim / reclaim_poll_interval)

db_s_per_s is the DB's busy time per second (1.0 = one DB connection busy all the
time). The init_host pass at each agent start is one more reap pass: negligible
unless the whole fleet restarts at once, shown separately.

    .venv/bin/python bench/bench_fleet_db.py [--n 40 1000] [--hosts 10000]
        [--db mysql+pymysql://reaper:reaper@127.0.0.1/]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def measure(n: int, db_base: str | None, repeat: int) -> dict:
    import sqlalchemy as sa

    import bench_pass
    from reaper import audit as audit_mod
    from reaper import policy as policy_mod
    from reaper import reconcile
    from reaper import state as state_mod
    from reaper.inventory import libvirt as libvirt_inv
    from reaper.nova import db as nova_db

    root = tempfile.mkdtemp(prefix=f"reaper-fleet-{n}-")
    try:
        built = bench_pass.build(root, n, db_base)
        conn = libvirt_inv.open_connection(f"test://{built['node']}")
        pol = policy_mod.Policy(host=bench_pass.HOST, hypervisor_hostname=bench_pass.HOST,
                                instances_path=built["inst"],
                                actions=policy_mod.default_actions(),
                                reclaim_instance_interval=3600, instances_path_shared="false")
        eng = nova_db.make_engine(built["url"])
        reaper = reconcile.Reaper(policy=pol, libvirt_uri="test:///fleet", engine=eng,
                                  state=state_mod.StateDB(os.path.join(root, "state")),
                                  audit=audit_mod.AuditLog(None, bench_pass.HOST),
                                  connect=lambda: conn)
        # The DB side of a pass: its Nova DB reads, timed around the view load (the
        # statements and fetching their rows; a cursor event would miss the fetch).
        from reaper.nova import view as nova_view
        db_time = [0.0]
        load_view = nova_view.load_view

        def timed_load_view(*a, **kw):
            t = time.perf_counter()
            try:
                return load_view(*a, **kw)
            finally:
                db_time[0] += time.perf_counter() - t
        nova_view.load_view = timed_load_view
        out = {}
        for mode in ("reap", "reclaim"):
            qs, ts, walls = set(), [], []
            for _ in range(repeat):
                db_time[0] = 0.0
                with nova_db.QueryCounter(eng) as qc:
                    t = time.perf_counter()
                    rep = reaper.run_pass(mode)
                    walls.append(time.perf_counter() - t)
                assert rep.actions == [] and rep.exit_code in (0, 3), rep.to_table()
                qs.add(qc.count)
                ts.append(db_time[0])
            out[mode] = {"queries": max(qs), "db_s": statistics.median(ts),
                         "wall_s": statistics.median(walls)}
        nova_view.load_view = load_view
        reaper.close()
        conn.close()
        if built["dbname"]:
            admin = sa.create_engine(db_base)
            with admin.begin() as c:
                c.execute(sa.text(f"DROP DATABASE IF EXISTS {built['dbname']}"))
            admin.dispose()
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[40, 1000],
                    help="instances on the measured host (default: 40, a typical host, "
                         "and 1000 to show the count does not grow)")
    ap.add_argument("--hosts", type=int, default=10000)
    ap.add_argument("--db", help="MariaDB server URL (default: SQLite)")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    from reaper.agent import service
    from reaper.nova import db as nova_db  # noqa: F401 - registers [database]
    reconcile_iv = service.CONF.reaper.reconcile_interval
    reclaim_iv = service.CONF.reaper.reclaim_poll_interval
    db = "MariaDB" if args.db else "SQLite"
    print(f"defaults: reconcile_interval={reconcile_iv}s reclaim_poll_interval={reclaim_iv}s; "
          f"fleet of {args.hosts} hosts; Nova DB on {db}; other hosts' rows = 100*N")
    print(f"{'N':>5} {'pass':>8} {'queries':>8} {'db ms':>8} {'wall ms':>8}"
          f" | {'fleet qps':>10} {'db s/s':>8} {'init_host burst':>16}")
    for n in args.n:
        m = measure(n, args.db, args.repeat)
        qps = args.hosts * (m["reap"]["queries"] / reconcile_iv
                            + m["reclaim"]["queries"] / reclaim_iv)
        dbs = args.hosts * (m["reap"]["db_s"] / reconcile_iv
                            + m["reclaim"]["db_s"] / reclaim_iv)
        burst = args.hosts * m["reap"]["queries"]
        for mode in ("reap", "reclaim"):
            r = m[mode]
            tail = (f" | {qps:>10.1f} {dbs:>8.3f} {burst:>10} queries" if mode == "reap"
                    else "")
            print(f"{n:>5} {mode:>8} {r['queries']:>8} {r['db_s'] * 1000:>8.2f} "
                  f"{r['wall_s'] * 1000:>8.1f}{tail}")
    print("fleet qps: queries per second on the Nova DB from the periodic passes; db s/s: "
          "DB busy seconds per second; init_host burst: queries if every agent starts at "
          "once (spread by start times, not by jitter)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
