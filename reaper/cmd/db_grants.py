"""reaper-manage db-grants: the Nova DB grants the reaper needs, printed as SQL, or
checked against the configured account (``--check``).

A generator rather than only a static file because the statements name the account
and the database, which differ between deployments (the cell database is not
always ``nova``), and because it ships with the package: the operator runs it where
the reaper is installed, from the same code the reaper runs (reaper.nova.grants).
``tools/nova-db-grants.sql`` is its output for ``'reaper'@'%'`` on ``nova``.
"""
from __future__ import annotations

import argparse
import sys

import sqlalchemy as sa

from reaper.report import EXIT_ERROR

HELP = ("Print the GRANT statements of a least-privilege Nova DB account (read-only: "
        "audit and every reap that does not reclaim; --reclaim adds the few writes of a "
        "reclaim), or --check what the configured account holds.")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "db-grants", help=HELP, description=HELP + " Column-level grants: the reaper "
        "reads and writes exactly the columns named. Without --config-file the account "
        "is 'reaper' and the database 'nova'; with one, both come from [database] "
        "connection unless given.", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
               "  reaper-manage db-grants --host 'cmp-17.example.org' | mysql\n"
               "  reaper-manage db-grants --host '10.0.%' --reclaim --create-user\n"
               "  reaper-manage --config-file /etc/reaper/reaper.conf db-grants --check")
    # dest names: CONF.command.host would clash with [DEFAULT] host
    p.add_argument("--user", dest="grant_user", metavar="USER",
                   help="the account's user name (default: [database] connection's, else "
                        "reaper)")
    p.add_argument("--host", dest="grant_host", metavar="HOST", default="%",
                   help="the account's host part: the compute host's name or address, or a "
                        "pattern such as '10.0.%%' (default: '%%', any host)")
    p.add_argument("--database", dest="grant_database", metavar="NAME",
                   help="Nova's (cell) database (default: [database] connection's, else "
                        "nova)")
    p.add_argument("--reclaim", action="store_true",
                   help="add what a reclaim writes ([reaper] reclaim_instance_interval > 0)")
    p.add_argument("--ctl", action="store_true",
                   help="add what reaper-ctl --all reads (the services table), for a "
                        "controller's account")
    p.add_argument("--create-user", action="store_true",
                   help="start with CREATE USER IF NOT EXISTS (password CHANGE-ME)")
    p.add_argument("--check", action="store_true",
                   help="connect with [database] connection and report, from SHOW GRANTS, "
                        "what the account lacks (and holds beyond what it needs) for "
                        "reading, reclaiming (with --reclaim) and reaper-ctl (with --ctl), "
                        "and what [database] read_only = auto decides. Exit 1 when "
                        "something asked for is missing")


def _url(conf) -> sa.URL | None:
    text = conf.database.connection
    if not text:
        return None
    try:
        return sa.make_url(text)
    except sa.exc.ArgumentError:
        return None


def run(conf) -> int:
    from reaper.nova import grants
    args = conf.command
    url = _url(conf)
    user = args.grant_user or (url.username if url is not None and url.username else "reaper")
    database = args.grant_database or (url.database if url is not None and url.database
                                       and url.get_backend_name() == "mysql" else "nova")
    if args.check:
        return _check(conf, database, args)
    sys.stdout.write(grants.render(user, args.grant_host, database, reclaim=args.reclaim,
                                   ctl=args.ctl, create_user=args.create_user))
    return 0


def _check(conf, database: str, args) -> int:
    from reaper.nova import db as nova_db
    from reaper.nova import grants
    engine = nova_db.engine_from_conf(conf)
    try:
        if engine.url.get_backend_name() != "mysql":
            access = grants.detect(engine, "auto")
            print(f"{engine.url.get_backend_name()}: no grants to check; read_only = auto: "
                  f"{'writable' if access.writable else 'read-only'} ({access.reason})")
            return 0
        try:
            with engine.connect() as c:
                lines = [r[0] for r in c.execute(sa.text("SHOW GRANTS"))]
        except sa.exc.SQLAlchemyError as exc:
            print(f"reaper-manage db-grants: {nova_db.describe_error(exc, engine)}",
                  file=sys.stderr)
            return EXIT_ERROR
        held = [g for g in map(grants.parse_grant, lines) if g is not None]
        wanted = [("read", grants.READ, True), ("reclaim", grants.RECLAIM, args.reclaim),
                  ("delete notifications", grants.NOTIFY, args.reclaim),
                  ("reaper-ctl", grants.CTL, args.ctl)]
        bad = False
        print(f"account {engine.url.username} on database {database}:")
        for name, section, asked in wanted:
            gaps = grants.missing(held, database, section)
            state = "complete" if not gaps else f"missing {grants.describe_missing(gaps, database, 50)}"
            print(f"  {name}: {state}" + ("" if asked else " (not asked for)"))
            bad = bad or (asked and bool(gaps))
        allowed = [*grants.READ, *(grants.RECLAIM + grants.NOTIFY if args.reclaim else ()),
                   *(grants.CTL if args.ctl else ())]
        for line in grants.excess(held, database, allowed):
            print(f"  beyond what it needs: {line}")
        access = grants.detect(engine, conf.database.read_only)
        print(f"  [database] read_only = {conf.database.read_only}: "
              f"{'may write (reclaim on)' if access.writable else 'read-only (reclaim off)'}"
              f": {access.reason}")
        return EXIT_ERROR if bad else 0
    finally:
        engine.dispose()
