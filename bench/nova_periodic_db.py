"""nova-compute's own periodic tasks for the reaper's jobs, run by Nova's code against a
database, with every statement counted. Runs under a Python that has the ``nova``
package (``bench_fleet_db.py --nova-python PATH``); it does not import the reaper.

The tasks are nova-compute's own methods (nova/compute/manager.py), called on a
ComputeManager that is not started (no RPC, no service); its virt driver is a stub
that lists the given domain uuids and does nothing else, and whatever the tasks ask
of the DB goes through Nova's objects and DB API (oslo.db's enginefacade) as in
nova-compute:

- ``_cleanup_running_deleted_instances`` (every ``running_deleted_instance_poll_interval``,
  1800 s): the deleted rows among the driver's uuids, ``read_deleted='yes'``;
- ``_reclaim_queued_deletes`` (every ``periodic_interval``, 60 s, as it has no spacing
  of its own; no query at all when ``reclaim_instance_interval`` <= 0): this host's
  soft-deleted rows with INSTANCE_DEFAULT_FIELDS;
- ``_run_pending_deletes`` (every ``instance_delete_interval``, 300 s): this host's
  deleted rows not yet ``cleaned``, with their system_metadata.

Before measuring, ``--prepare`` adds what Nova's models have and the reaper's schema
slice leaves out (tables, nullable columns), so Nova's ORM can read the same rows.

Prints one JSON object: per task its statements (per run; the same every run) and
the median wall time of the task's DB work (its calls are all DB calls).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time


def prepare(url: str) -> list[str]:
    """Create the tables and columns of Nova's models the database lacks."""
    import sqlalchemy as sa
    from nova.db.main import models

    engine = sa.create_engine(url)
    added = []
    insp = sa.inspect(engine)
    have = set(insp.get_table_names())
    missing = [t for t in models.BASE.metadata.sorted_tables if t.name not in have]
    models.BASE.metadata.create_all(engine, tables=missing)
    added += [t.name for t in missing]
    with engine.begin() as conn:
        for t in models.BASE.metadata.sorted_tables:
            if t.name not in have:
                continue
            cols = {c["name"] for c in insp.get_columns(t.name)}
            for c in t.columns:
                if c.name in cols:
                    continue
                ddl = c.type.compile(dialect=engine.dialect)
                conn.execute(sa.text(f"ALTER TABLE {t.name} ADD COLUMN {c.name} {ddl} NULL"))
                added.append(f"{t.name}.{c.name}")
    engine.dispose()
    return added


class _Driver:
    """The virt driver as the tasks use it: the domains' uuids; nothing else runs
    while the DB holds nothing for the tasks to act on (checked: ``acted``)."""

    def __init__(self, uuids):
        self.uuids = list(uuids)
        self.acted = []

    def list_instance_uuids(self):
        return list(self.uuids)

    def delete_instance_files(self, instance):
        self.acted.append(("delete_instance_files", instance.uuid))
        return True

    def __getattr__(self, name):         # anything else would be an action
        def act(*a, **k):
            self.acted.append((name, None))
        return act


def measure(url: str, host: str, uuids: list[str], reclaim_interval: int,
            repeat: int) -> dict:
    import sqlalchemy as sa

    import nova.conf
    from nova import context as nova_context
    from nova import objects
    from nova.compute import manager
    from nova.db.main import api as main_api

    CONF = nova.conf.CONF
    CONF([], project="nova", default_config_files=[])
    CONF.set_override("connection", url, group="database")
    CONF.set_override("host", host)
    CONF.set_override("reclaim_instance_interval", reclaim_interval)
    main_api.configure(CONF)
    objects.register_all()
    ctx = nova_context.get_admin_context()

    count = [0]
    statements: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany):
        count[0] += 1
        statements.append(statement.split()[0].upper())
    sa.event.listen(sa.engine.Engine, "before_cursor_execute", before)

    mgr = manager.ComputeManager.__new__(manager.ComputeManager)
    mgr.host = host
    mgr.driver = _Driver(uuids)
    # The spacing oslo.service's periodic task runner uses: the decorator's (read from
    # Nova's defaults at import), and its DEFAULT_INTERVAL (60 s) for a task with none.
    spacing = manager.ComputeManager._periodic_spacing
    names = ("_cleanup_running_deleted_instances", "_reclaim_queued_deletes",
             "_run_pending_deletes")
    tasks = {n: (getattr(mgr, n), spacing[n]) for n in names}
    # one warm-up round: engine creation, the first connection, ORM compilation
    for fn, _ in tasks.values():
        fn(ctx)
    out: dict = {"tasks": {}}
    for name, (fn, interval) in tasks.items():
        counts, times, kinds = set(), [], set()
        for _ in range(repeat):
            count[0] = 0
            statements.clear()
            t = time.perf_counter()
            fn(ctx)
            times.append(time.perf_counter() - t)
            counts.add(count[0])
            kinds.update(statements)
        out["tasks"][name] = {"queries": max(counts), "db_s": statistics.median(times),
                     "db_s_spread": [min(times), max(times)], "interval": interval,
                     "statement_kinds": sorted(kinds)}
    out["acted"] = mgr.driver.acted
    out["versions"] = {"nova": __import__("nova.version", fromlist=["x"]).version_info
                        .version_string(), "sqlalchemy": sa.__version__}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--host", default="")
    ap.add_argument("--uuids", default="", help="file with the domain uuids, one a line")
    ap.add_argument("--reclaim-interval", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--prepare", action="store_true")
    args = ap.parse_args()
    if args.prepare:
        print(json.dumps({"added": prepare(args.url)}))
        return 0
    uuids = open(args.uuids).read().split() if args.uuids else []
    print(json.dumps(measure(args.url, args.host, uuids, args.reclaim_interval,
                             args.repeat)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
