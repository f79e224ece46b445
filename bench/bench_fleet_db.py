"""The Nova DB load a fleet of agents puts on the database, from measured passes, side by
side with nova-compute's own periodic tasks for the same jobs, measured in the same run
on the same database.

One host (bench_pass.build: N domains on libvirt's test driver, N live rows of ours
plus 100*N rows of other hosts), with what a real host has besides: a block device
mapping and an info cache (1 KB network_info) per instance (other hosts' instances
get a BDM and an empty info cache), N deleted and cleaned rows of ours (history) and
2 recently soft-deleted ones (restorable). On it:

- the reaper's periodic passes, counted with QueryCounter, their DB work timed (every
  call of the view, the change check and the soft-deleted read: statements and
  fetching their rows):
  * ``reap, full view``: a reconcile pass that reads the whole view (the first of a
    process, after a change, or every ``full_view_interval``);
  * ``reap, unchanged``: a reconcile pass whose change check matched;
  * ``reclaim``: the timer's reclaim pass (reads the soft-deleted rows, or nothing
    with reclaim_instance_interval 0);
  * ``before``: the same passes as they were before the change check and the
    reclaim pass's first read (full_view_interval 0, every reclaim pass in full);
- measured in rounds: each round runs each of the passes above once, then (with
  ``--nova-python``) each of Nova's tasks once, so the shared machine's load and the
  server's background work after the build fall on every figure alike; one warm-up
  round first is not counted; the figures are the medians over the rounds;
- with ``--nova-python``, nova-compute's ``_cleanup_running_deleted_instances``,
  ``_reclaim_queued_deletes`` and ``_run_pending_deletes``, run by Nova's own code
  (bench/nova_periodic_db.py, in that Python) on the same database, every statement
  counted by an SQLAlchemy event on Nova's engine.

Then scaled to a fleet at the default intervals (reaper: reconcile 600 s, reclaim
300 s, full_view_interval 3600 s; nova-compute: 1800 s, 60 s (no spacing of its own:
oslo.service's default), 300 s):

    reaper  qps = hosts * ((q_full + (m-1) * q_unchanged) / (m * reconcile) + q_reclaim / reclaim)
              with m = ceil(full_view_interval / reconcile) passes per full read;
              "every pass changed" counts every reconcile pass as a full read
    nova    qps = hosts * sum(q_task / spacing_task)

and the same with the DB time instead of the statements: DB busy seconds per second
(1.0 = one connection busy all the time), timed on the client (statement round trips
and fetching the rows), an upper bound of the server's own time. Jitter (up to 10%
later) is ignored, which overstates the reaper's rate slightly.

    .venv/bin/python bench/bench_fleet_db.py [--n 40 1000] [--hosts 10000] [--repeat 7]
        [--db mysql+pymysql://reaper:reaper@127.0.0.1/] [--reclaim-interval 3600]
        [--nova-python /work/venv-nova/bin/python]
"""
from __future__ import annotations

import argparse
import dataclasses
import atexit
import datetime
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

HERE = os.path.dirname(os.path.abspath(__file__))
NETWORK_INFO = json.dumps([{
    "id": "%s", "address": "fa:16:3e:00:00:01", "type": "ovs", "devname": "tap%s",
    "ovs_interfaceid": "%s", "active": True, "vnic_type": "normal", "profile": {},
    "details": {"port_filter": True, "ovs_hybrid_plug": False, "datapath_type": "system",
                "bridge_name": "br-int", "connectivity": "l2"},
    "network": {"id": "0b8f5f5c-1a7e-4c55-9d0e-5d8f2f9f6a11", "bridge": "br-int",
                "label": "private", "mtu": 1450, "meta": {"injected": False,
                                                         "tenant_id": "p1"},
                "subnets": [{"cidr": "10.0.0.0/24", "version": 4,
                             "gateway": {"address": "10.0.0.1", "type": "gateway"},
                             "dns": [], "routes": [],
                             "ips": [{"address": "10.0.0.5", "type": "fixed",
                                      "version": 4, "floating_ips": []}]}]},
}])


def enrich(url: str, host: str, n: int) -> None:
    """What a real host's rows have besides the bare instances: BDMs, info caches,
    deleted and cleaned history rows, two restorable soft-deleted rows."""
    import sqlalchemy as sa

    from reaper.nova import schema as s

    eng = sa.create_engine(url)
    now = datetime.datetime.utcnow().replace(microsecond=0)
    with eng.begin() as c:
        local = [r.uuid for r in c.execute(sa.select(s.instances.c.uuid).where(
            s.instances.c.host == host))]
        top = c.execute(sa.select(sa.func.max(s.instances.c.id))).scalar()
        c.execute(s.block_device_mapping.insert(), [dict(
            instance_uuid=u, uuid=str(uuidlib.uuid4()), source_type="image",
            destination_type="local", device_name="/dev/vda", boot_index=0,
            delete_on_termination=True, deleted=0, created_at=now) for u in local])
        c.execute(s.instance_info_caches.insert(), [dict(
            instance_uuid=u, network_info=NETWORK_INFO.replace("%s", str(uuidlib.uuid4())),
            deleted=0, created_at=now) for u in local])
        # Other hosts' instances have theirs too (smaller), so the tables are the
        # size a real cell's are relative to one host, and the optimizer picks the
        # plans it would pick there.
        others = [r.uuid for r in c.execute(sa.select(s.instances.c.uuid).where(
            s.instances.c.host != host))]
        for i in range(0, len(others), 20000):
            chunk = others[i:i + 20000]
            c.execute(s.block_device_mapping.insert(), [dict(
                instance_uuid=u, uuid=str(uuidlib.uuid4()), source_type="image",
                destination_type="local", device_name="/dev/vda", boot_index=0,
                deleted=0) for u in chunk])
            c.execute(s.instance_info_caches.insert(), [dict(
                instance_uuid=u, network_info="[]", deleted=0) for u in chunk])
        rows = []
        for i in range(n + 2):
            iid = top + i + 1
            soft = i >= n
            rows.append(dict(
                id=iid, uuid=str(uuidlib.uuid4()), host=host, node=host,
                vm_state="soft-delete" if soft else "deleted", power_state=4,
                task_state=None, deleted=0 if soft else iid, cleaned=0 if soft else 1,
                deleted_at=now - datetime.timedelta(seconds=60 if soft else 86400),
                created_at=now - datetime.timedelta(days=30), display_name=f"old{i}"))
        c.execute(s.instances.insert(), rows)
        c.execute(s.instance_system_metadata.insert(), [dict(
            instance_uuid=r["uuid"], key=k, value="v", deleted=0, created_at=now)
            for r in rows[n:] for k in ("image_base_image_ref", "image_disk_format")])
    eng.dispose()


def nova_env(nova_python: str) -> dict:
    """The environment of the Nova subprocess. Nova's venv may lack the MySQL driver
    the URL names (PyMySQL, pure Python): then this venv's copy is lent to it on
    PYTHONPATH, alone in a temporary directory, rather than installed there."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    probe = subprocess.run([nova_python, "-c", "import pymysql"], capture_output=True)
    if probe.returncode != 0:
        import pymysql
        lend = tempfile.mkdtemp(prefix="fleetdb-pymysql-")
        atexit.register(shutil.rmtree, lend, True)
        os.symlink(os.path.dirname(pymysql.__file__), os.path.join(lend, "pymysql"))
        env["PYTHONPATH"] = lend
    return env


def run_nova(nova_python: str, env: dict, *args: str) -> dict:
    out = subprocess.run([nova_python, os.path.join(HERE, "nova_periodic_db.py"), *args],
                         capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"nova_periodic_db.py failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(n: int, db_base: str | None, repeat: int, reclaim_interval: int,
            full_view_interval: int, nova_python: str | None,
            deep_check_interval: int = 0) -> dict:
    import sqlalchemy as sa

    import bench_pass
    from reaper import audit as audit_mod
    from reaper import policy as policy_mod
    from reaper import reconcile
    from reaper import state as state_mod
    from reaper.kinds.instance import libvirt as libvirt_inv
    from reaper.nova import changes as nova_changes
    from reaper.nova import db as nova_db
    from reaper.nova import view as nova_view

    root = tempfile.mkdtemp(prefix=f"reaper-fleet-{n}-")
    try:
        built = bench_pass.build(root, n, db_base)
        enrich(built["url"], bench_pass.HOST, n)
        conn = libvirt_inv.open_connection(f"test://{built['node']}")
        out: dict = {}
        if nova_python:
            env = nova_env(nova_python)
            run_nova(nova_python, env, "--url", built["url"], "--prepare")
        pol = policy_mod.Policy(host=bench_pass.HOST, hypervisor_hostname=bench_pass.HOST,
                                instances_path=built["inst"],
                                actions=policy_mod.default_actions(),
                                reclaim_instance_interval=reclaim_interval,
                                instances_path_shared="false")
        eng = nova_db.make_engine(built["url"])
        reaper = reconcile.Reaper(policy=pol, libvirt_uri="test:///fleet", engine=eng,
                                  state=state_mod.StateDB(os.path.join(root, "state")),
                                  audit=audit_mod.AuditLog(None, bench_pass.HOST),
                                  connect=lambda: conn, full_view_interval=full_view_interval,
                                  deep_check_interval=deep_check_interval)
        # The DB side of a pass: every call that reads Nova's DB, timed around the call
        # (the statements and fetching their rows; a cursor event would miss the fetch).
        db_time = [0.0]
        originals = []

        def timed(mod, name):
            fn = getattr(mod, name)
            originals.append((mod, name, fn))

            def wrapper(*a, **kw):
                t = time.perf_counter()
                try:
                    return fn(*a, **kw)
                finally:
                    db_time[0] += time.perf_counter() - t
            setattr(mod, name, wrapper)
        timed(nova_view, "load_view")
        timed(nova_view, "load_soft_deleted")
        timed(nova_changes, "read")

        samples: dict = {}

        def run(label, mode, source="timer"):
            db_time[0] = 0.0
            with nova_db.QueryCounter(eng) as qc:
                t = time.perf_counter()
                rep = reaper.run_pass(mode, source=source)
                wall = time.perf_counter() - t
            assert rep.actions == [] and rep.exit_code in (0, 3), rep.to_table()
            s = samples.setdefault(label, {"queries": set(), "db_s": [], "wall_s": [],
                                           "db_view": set()})
            s["queries"].add(qc.count)
            s["db_s"].append(db_time[0])
            s["wall_s"].append(wall)
            s["db_view"].add(rep.db_view)

        full_iv = reaper.full_view_interval
        nothing_to_reclaim = reaper._nothing_to_reclaim

        def now_mode():
            reaper.full_view_interval = full_iv
            reaper._nothing_to_reclaim = nothing_to_reclaim

        def before_mode():
            # As before: every pass reads the whole view, every reclaim pass is a full pass.
            reaper.full_view_interval = 0
            reaper._view_cache = None
            reaper._nothing_to_reclaim = lambda rep, pol: False

        def round_(measured: bool):
            """One of each, in the same minute: the shared machine's load and the
            server's background work (purge, page flushing after the build) fall on
            every figure alike, not on whichever was measured first. An uncounted full
            pass first: a call after seconds idle (here, after Nova's subprocess) costs
            2-3x more client CPU and wall time on this shared machine, and Nova's tasks
            are measured warm too (right after their warm-up calls)."""
            before_mode()
            reaper.run_pass("audit")
            now_mode()
            reaper._view_cache = None
            run("reap, full view", "reap")
            run("reap, unchanged", "reap")
            if reaper._deep_checks():
                # due now: as if deep_check_interval had passed since the full read
                reaper._view_cache = dataclasses.replace(reaper._view_cache, deep_at=-1e12)
                run("reap, deep check", "reap")
            run("reclaim", "reclaim")
            before_mode()
            run("reap, before", "reap")
            run("reclaim, before", "reclaim", source="pass")
            now_mode()
            if not measured:
                samples.clear()
            if nova_python:
                got = run_nova(nova_python, env, "--url", built["url"], "--host",
                               bench_pass.HOST, "--uuids", uuids, "--repeat", "1",
                               "--reclaim-interval", str(reclaim_interval))
                if measured:
                    nova_rounds.append(got)

        nova_rounds: list = []
        if nova_python:
            uuids = os.path.join(root, "uuids")
            with open(uuids, "w") as f:
                f.write("\n".join(d.UUIDString() for d in conn.listAllDomains(0)))
        round_(measured=False)          # warm-up: first connections, caches, compilation
        for _ in range(repeat):
            round_(measured=True)
        for label, s in samples.items():
            out[label] = {"queries": max(s["queries"]), "db_s": statistics.median(s["db_s"]),
                          "db_s_min": min(s["db_s"]), "db_s_max": max(s["db_s"]),
                          "wall_s": statistics.median(s["wall_s"]),
                          "db_view": sorted(s["db_view"])}
        for mod, name, fn in originals:
            setattr(mod, name, fn)
        reaper.close()
        if nova_rounds:
            tasks = {}
            for name in nova_rounds[0]["tasks"]:
                rs = [r["tasks"][name] for r in nova_rounds]
                times = [r["db_s"] for r in rs]
                tasks[name] = {"queries": max(r["queries"] for r in rs),
                               "db_s": statistics.median(times),
                               "db_s_spread": [min(times), max(times)],
                               "interval": rs[0]["interval"],
                               "statement_kinds": sorted({k for r in rs
                                                          for k in r["statement_kinds"]})}
            out["nova"] = {"tasks": tasks,
                           "acted": [a for r in nova_rounds for a in r["acted"]],
                           "versions": nova_rounds[0]["versions"]}
        conn.close()
        if built["dbname"]:
            admin = sa.create_engine(db_base)
            with admin.begin() as c:
                c.execute(sa.text(f"DROP DATABASE IF EXISTS {built['dbname']}"))
            admin.dispose()
        return out
    finally:
        shutil.rmtree(root, ignore_errors=True)


def pass_rates(reconcile_iv: float, full_iv: float, deep_iv: float) -> dict:
    """Reconcile passes per second of each kind: a full read every ceil(full_iv /
    reconcile_iv) passes, a deep check every ceil(deep_iv / reconcile_iv) passes (when
    more often than the full reads; one that falls on a full read is that read), the
    rest light checks."""
    k = max(1, math.ceil(full_iv / reconcile_iv)) if full_iv > 0 else 1
    full = 1 / (k * reconcile_iv)
    deep = 0.0
    if 0 < deep_iv < full_iv:
        kd = max(1, math.ceil(deep_iv / reconcile_iv))
        deep = 1 / (kd * reconcile_iv) - full
    return {"reap, full view": full, "reap, deep check": deep,
            "reap, unchanged": 1 / reconcile_iv - full - deep}


def fleet(m: dict, hosts: int, reconcile_iv: float, reclaim_iv: float,
          full_iv: float, deep_iv: float = 0) -> dict:
    """Queries/s and DB s/s of the fleet, from the per-pass figures."""
    rates = pass_rates(reconcile_iv, full_iv, deep_iv)

    def rate(key):
        recl = m["reclaim"][key]
        steady = sum(r * m[label][key] for label, r in rates.items() if r) \
            + recl / reclaim_iv
        changed = m["reap, full view"][key] / reconcile_iv + recl / reclaim_iv
        before = m["reap, before"][key] / reconcile_iv + m["reclaim, before"][key] / reclaim_iv
        return {"steady": hosts * steady, "every_pass_changed": hosts * changed,
                "before": hosts * before}
    out = {"queries": rate("queries"), "db_s": rate("db_s")}
    if "nova" in m:
        tasks = m["nova"]["tasks"]
        out["nova"] = {
            "queries": hosts * sum(t["queries"] / t["interval"] for t in tasks.values()),
            "db_s": hosts * sum(t["db_s"] / t["interval"] for t in tasks.values()),
        }
    return out


def per_hour(m: dict, reconcile_iv: float, reclaim_iv: float, full_iv: float,
             deep_iv: float = 0) -> str:
    """One host's DB seconds per hour, term by term (runs per hour x median DB time)."""
    names = {"reap, full view": "full view", "reap, deep check": "deep check",
             "reap, unchanged": "change check"}
    terms = [(names[label], 3600 * r, m[label]["db_s"])
             for label, r in pass_rates(reconcile_iv, full_iv, deep_iv).items() if r]
    terms.append(("reclaim", 3600 / reclaim_iv, m["reclaim"]["db_s"]))
    line = "per host and hour, DB s: reaper " + " + ".join(
        f"{name} {n:.3g} x {t * 1e3:.2f} ms" for name, n, t in terms) + \
        f" = {sum(n * t for _, n, t in terms):.3f} s"
    if "nova" in m:
        nt = [(name, 3600 / t["interval"], t["db_s"]) for name, t in m["nova"]["tasks"].items()]
        line += "\n  per host and hour, DB s: nova-compute " + " + ".join(
            f"{name} {n:g} x {t * 1e3:.2f} ms" for name, n, t in nt) + \
            f" = {sum(n * t for _, n, t in nt):.3f} s"
    return line


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[40, 1000],
                    help="instances on the measured host (default: 40, a typical host, "
                         "and 1000 to show the count does not grow)")
    ap.add_argument("--hosts", type=int, default=10000)
    ap.add_argument("--db", help="MariaDB server URL (default: SQLite)")
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--reclaim-interval", type=int, default=3600,
                    help="reclaim_instance_interval of both the reaper and nova-compute "
                         "(0: reclaim disabled, Nova's default)")
    ap.add_argument("--nova-python", help="a Python with the nova package: measure "
                                          "nova-compute's periodic tasks on the same DB")
    ap.add_argument("--full-view-interval", type=int,
                    help="the reaper's [reaper] full_view_interval (default: its default)")
    ap.add_argument("--deep-check-interval", type=int,
                    help="the reaper's [reaper] deep_check_interval (default: its default)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = ap.parse_args()
    from reaper.agent import service
    from reaper.nova import db as nova_db  # noqa: F401 - registers [database]
    reconcile_iv = service.CONF.reaper.reconcile_interval
    reclaim_iv = service.CONF.reaper.reclaim_poll_interval
    full_iv = (args.full_view_interval if args.full_view_interval is not None
               else service.CONF.reaper.full_view_interval)
    deep_iv = (args.deep_check_interval if args.deep_check_interval is not None
               else service.CONF.reaper.deep_check_interval)
    db = "MariaDB" if args.db else "SQLite"
    print(f"reaper defaults: reconcile_interval={reconcile_iv}s reclaim_poll_interval="
          f"{reclaim_iv}s full_view_interval={full_iv}s deep_check_interval={deep_iv}s; "
          f"reclaim_instance_interval="
          f"{args.reclaim_interval}s (both); fleet of {args.hosts} hosts; Nova DB on {db}; "
          f"other hosts' rows = 100*N; {args.repeat} interleaved rounds after one warm-up "
          f"round, per figure median [min-max]; load average {os.getloadavg()[0]:.2f} "
          f"{os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    results = {}
    for n in args.n:
        m = measure(n, args.db, args.repeat, args.reclaim_interval, full_iv, args.nova_python,
                    deep_iv)
        f = fleet(m, args.hosts, reconcile_iv, reclaim_iv, full_iv, deep_iv)
        results[n] = {"per_pass": m, "fleet": f}
        print(f"\nN={n}  {'pass / task':<36} {'stmts':>5} {'db ms median [min-max]':>26}"
              f" {'every':>7}")
        for label in ("reap, full view", "reap, unchanged", "reap, deep check", "reclaim",
                      "reap, before", "reclaim, before"):
            if label not in m:
                continue
            r = m[label]
            every = {"reclaim": reclaim_iv, "reclaim, before": reclaim_iv}.get(
                label, reconcile_iv)
            if label == "reap, full view":
                every = f"{full_iv}"
            if label == "reap, deep check":
                every = f"{deep_iv}"
            print(f"       reaper {label:<29} {r['queries']:>5} "
                  f"{r['db_s'] * 1e3:>8.2f} [{r['db_s_min'] * 1e3:.2f}-{r['db_s_max'] * 1e3:.2f}]"
                  f"{'':>4} {every:>6}s  ({'/'.join(r['db_view'])})")
        if "nova" in m:
            for name, t in m["nova"]["tasks"].items():
                print(f"       nova   {name:<29} {t['queries']:>5} "
                      f"{t['db_s'] * 1e3:>8.2f} [{t['db_s_spread'][0] * 1e3:.2f}-"
                      f"{t['db_s_spread'][1] * 1e3:.2f}]{'':>4} {t['interval']:>6.0f}s")
            if m["nova"]["acted"]:
                print(f"       (nova's tasks acted: {m['nova']['acted']})")
        print("  " + per_hour(m, reconcile_iv, reclaim_iv, full_iv, deep_iv))
        q, d = f["queries"], f["db_s"]
        print(f"  fleet of {args.hosts}: reaper {q['steady']:.1f} queries/s, {d['steady']:.3f} "
              f"DB s/s (every pass changed: {q['every_pass_changed']:.1f} q/s, "
              f"{d['every_pass_changed']:.3f} DB s/s; before: {q['before']:.1f} q/s, "
              f"{d['before']:.3f} DB s/s)")
        if "nova" in f:
            print(f"  fleet of {args.hosts}: nova-compute {f['nova']['queries']:.1f} queries/s, "
                  f"{f['nova']['db_s']:.3f} DB s/s (the same three jobs; "
                  f"nova {m['nova']['versions']['nova']})")
    print(f"\nload average at the end {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f}")
    print("queries/s: statements per second on the Nova DB from the periodic passes/tasks "
          "(SQLite counts its explicit BEGINs, both sides); DB s/s: client-timed DB seconds "
          "per second. init_host is one more full reap pass per agent start.")
    if args.json:
        print(json.dumps(results, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
