"""reaper-ctl: the controller's side of the reaper's RPC, to one host or to all.

    reaper-ctl [--host H ... | --all | --hosts-file F] [--format table|json]
               [--timeout S] audit|reap|reclaim|status|pause|resume|approve [ARGS]
    reaper-ctl [--host H ...] [--format table|json] finish FILE... [--yes] [...]

``finish`` talks to no agent: it finishes, with this configuration's service
credentials, what hosts that are gone left for Neutron, Cinder and Placement
(reaper.finisher; its own exit codes, see ``reaper-ctl finish --help``).

``--all`` calls every nova-compute host of the Nova ``services`` table (not
deleted; ``[database] connection``), or the hosts of ``--hosts-file``, all at
once, each with its own timeout, and prints one merged report; hosts that do
not answer are listed, not fatal. The transport is ``[DEFAULT] transport_url``
(config files: /etc/reaper/reaper-ctl.conf or reaper.conf, or --config-file).

Exit codes, in this order of precedence:
  1  a host answered with an error (refused, busy, paused, bad argument, failed
     pass), or the command could not run (configuration, Nova DB, broker)
  6  some host did not answer (and every host that did was fine)
  5  a guard refused a host's plan       (passes, as reaper-manage)
  4  actions were taken                  (passes)
  3  findings were reported              (passes)
  0  all is well / the command was done
  2  the command line is wrong (usage)
"""
from __future__ import annotations

import json
import os
import sys
import time

from oslo_config import cfg
from oslo_log import log as logging

from reaper import exception
from reaper import config, logsetup, rpc
from reaper.rpc import client as rpc_client

LOG = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_FINDINGS = 3
EXIT_ACTIONS = 4
EXIT_GUARD = 5
EXIT_UNREACHABLE = 6

# dest: the shared reaper.conf has a [DEFAULT] host (this machine's name), which must
# never become a host to call.
cli_opts = [
    cfg.MultiStrOpt("host", dest="call_hosts", metavar="HOST",
                    help="Call this compute host (its [DEFAULT] host); repeat for more."),
    cfg.BoolOpt("all", dest="all_hosts", default=False,
                help="Call every nova-compute host of the Nova services table (not "
                     "deleted), or every host of --hosts-file."),
    cfg.StrOpt("hosts-file", metavar="FILE",
               help="Call the hosts listed in FILE (one per line, # comments) instead of "
                    "reading the Nova DB."),
    cfg.FloatOpt("timeout", default=rpc_client.DEFAULT_TIMEOUT, min=0.1,
                 help="Seconds to wait for each host's answer; a host that does not answer "
                      "in time is reported unreachable. A pass must finish within it."),
    cfg.IntOpt("parallel", default=rpc_client.PARALLEL, min=1,
               help="At most this many calls in flight at once (a thread each, waiting "
                    "for its host's answer; they publish over a few shared broker "
                    "connections). A host that does not answer holds its place for "
                    "--timeout seconds, so with more such hosts than --parallel the "
                    "report waits several timeouts."),
    cfg.StrOpt("format", default="table", choices=["table", "json"],
               help="table for people, json for tools (the merged report)."),
    cfg.StrOpt("os-username", metavar="NAME", help="Who you are, for the agents' audit logs "
                            "(default: $OS_USERNAME, else your login name)."),
    cfg.StrOpt("os-project-name", metavar="NAME", help="Your project, for the agents' audit logs "
                               "(default: $OS_PROJECT_NAME)."),
]


def _add_pass(subparsers, name: str, help_text: str, dry_run: bool) -> None:
    p = subparsers.add_parser(name, help=help_text, description=help_text)
    p.add_argument("--instance", metavar="UUID", help="only report/act on this instance")
    if dry_run:
        p.add_argument("--dry-run", action="store_true",
                       help="plan and report, change nothing (allowed even when the host "
                            "refuses remote destruction)")


def add_command_parsers(subparsers) -> None:
    _add_pass(subparsers, "audit", "One pass that only reports; it never changes anything.",
              False)
    _add_pass(subparsers, "reap", "One pass that acts as the host is configured (needs "
                                  "[rpc] allow_remote_reap on the host unless --dry-run).", True)
    _add_pass(subparsers, "reclaim", "One pass that only reclaims expired soft-deleted "
                                     "instances (same rule as reap).", True)
    subparsers.add_parser("status", help="Last pass, journal backlog, guards tripped, blocked "
                                         "passes, paused or not.")
    p = subparsers.add_parser("pause", help="Stop destructive passes on the host (audits and "
                                            "dry runs go on) until resume; survives restarts.")
    p.add_argument("--reason", default="", help="why, for status and the audit log")
    subparsers.add_parser("resume", help="Re-enable destructive passes (needs [rpc] "
                                         "allow_remote_reap on the host).")
    p = subparsers.add_parser("approve", help="Let the plan of a pass blocked by the "
                                              "mass-destruction guard run once, at the next "
                                              "reap (needs [rpc] allow_remote_reap).")
    p.add_argument("pass_id", help="the blocked pass (status: blocked_passes)")
    _add_finish(subparsers)


FINISH_HELP = (
    "Finish, from here, what reclaims on hosts that are gone left for Neutron, Cinder and "
    "Placement: read the hosts' audit records (or reaper.instance.reclaimed notification "
    "payloads, one JSON object a line), and run the steps a host runs (ports deleted or "
    "unbound, volume attachments deleted and delete_on_termination volumes deleted, "
    "allocations deleted) for each instance whose row is deleted in the Nova DB (read "
    "again right before acting). A dry run unless --yes. Uses [neutron], [cinder], "
    "[placement], [service_user] and [database] of this configuration; writes an audit "
    "record per action to [reaper] audit_log.")
FINISH_EPILOG = """Only leftovers recorded by hosts whose nova-compute service is deleted, forced down or
not seen for --down-after seconds are finished (a live host's journal retries its own);
--host limits them to those hosts. Each step is idempotent: what is gone already counts
as done. Hosts record the facts whether or not they have a [neutron], [cinder] or
[placement] section: a host without one is finished like a host whose steps failed. A
record without facts (written by an older reaper) is reported, never acted on.

exit codes:
  0  nothing left to finish in the records
  3  leftovers reported, not finished (dry run, or every one skipped: instance not
     deleted, host still up, service not configured here)
  4  every step was done
  1  a step failed, or the Nova DB or the files could not be read
  2  wrong command line"""


def _add_finish(subparsers) -> None:
    import argparse
    p = subparsers.add_parser("finish", help=FINISH_HELP.split(": read")[0] + ".",
                              description=FINISH_HELP, epilog=FINISH_EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="audit logs of the compute hosts (plain or gzip, rotated copies "
                        "read oldest first), or dumps of reaper.instance.reclaimed "
                        "notifications; '-' for stdin")
    p.add_argument("--yes", action="store_true",
                   help="act: without it nothing is changed and the plan is reported")
    p.add_argument("--instance", action="append", default=[], metavar="UUID",
                   help="only this instance (repeat for more)")
    p.add_argument("--since", metavar="TIME",
                   help="only records at or after TIME (ISO 8601 or an age: 90m, 24h, 7d)")
    p.add_argument("--until", metavar="TIME", help="only records before TIME")
    p.add_argument("--include-up-hosts", action="store_true",
                   help="also finish leftovers of hosts whose nova-compute is up")
    p.add_argument("--down-after", type=float, default=60.0, metavar="SECONDS",
                   help="a nova-compute not seen for this long counts as gone (Nova's "
                        "service_down_time, default 60)")


command_opt = cfg.SubCommandOpt("command", title="Commands", handler=add_command_parsers,
                                help="What to ask; `reaper-ctl COMMAND --help` for more.")


# -- pure: arguments, exit codes, rendering ---------------------------------------

def call_args(method: str, command) -> dict:
    """The RPC keyword arguments from the parsed subcommand (validated)."""
    raw: dict = {}
    if method in rpc.PASS_METHODS:
        raw["instance_uuid"] = getattr(command, "instance", None)
        if getattr(command, "dry_run", False):
            raw["dry_run"] = True
    elif method == "pause":
        raw["reason"] = getattr(command, "reason", "") or None
    elif method == "approve":
        raw["pass_id"] = command.pass_id
    args = rpc.validate(method, {k: v for k, v in raw.items() if v is not None})
    return {k: v for k, v in args.items() if v not in (None, "")}


def host_exit_code(method: str, r: rpc_client.HostResult) -> int:
    if r.state == rpc_client.UNREACHABLE:
        return EXIT_UNREACHABLE
    if r.state != rpc_client.OK:
        return EXIT_ERROR
    if method in rpc.PASS_METHODS:
        return int((r.reply.get("summary") or {}).get("exit_code", EXIT_ERROR))
    return EXIT_OK


def overall_exit_code(method: str, results: list[rpc_client.HostResult]) -> int:
    """Errors first, then unreachable hosts, then the worst pass result (5 > 4 > 3 > 0)."""
    codes = [host_exit_code(method, r) for r in results]
    if not codes or EXIT_ERROR in codes:
        return EXIT_ERROR
    if EXIT_UNREACHABLE in codes:
        return EXIT_UNREACHABLE
    return max(codes)


def merged_report(method: str, results: list[rpc_client.HostResult], request_id: str | None,
                  elapsed: float) -> dict:
    return {
        "method": method,
        "request_id": request_id,
        "hosts": {r.host: r.reply for r in results if r.state == rpc_client.OK},
        "unreachable": [r.host for r in results if r.state == rpc_client.UNREACHABLE],
        "unreachable_reasons": {r.host: r.message for r in results
                                if r.state == rpc_client.UNREACHABLE},
        "errors": {r.host: {"code": r.code, "message": r.message} for r in results
                   if r.state == rpc_client.ERROR},
        "exit_code": overall_exit_code(method, results),
        "elapsed": round(elapsed, 3),
    }


def _pass_cells(reply: dict) -> list[str]:
    s = reply.get("summary") or {}
    acts = ", ".join(f"{k} {v}" for k, v in sorted((s.get("actions") or {}).items())) or "-"
    guards = ", ".join(s.get("guards_tripped") or []) or "-"
    return [str(s.get("findings", "?")), acts, guards, str(s.get("exit_code", "?")),
            str(reply.get("pass_id", ""))]


def _status_cells(reply: dict) -> list[str]:
    last = reply.get("last_pass")
    last_txt = "-" if not last else (f"{last.get('mode')} exit "
                                     f"{(last.get('summary') or {}).get('exit_code', '?')} "
                                     f"{str(last.get('finished_at') or '')[:19]}")
    running = reply.get("running")
    blocked = reply.get("blocked_passes") or []
    return ["yes" if reply.get("paused") else "no",
            "-" if not running else f"{running.get('mode')} ({running.get('source')})",
            last_txt, str(reply.get("journal_backlog", "?")),
            ", ".join(reply.get("guards_tripped") or []) or "-",
            ", ".join(b.get("pass_id", "?") if isinstance(b, dict) else str(b)
                      for b in blocked) or "-",
            reply.get("paused_reason") or ""]


_COLUMNS = {
    "pass": ["HOST", "STATE", "FINDINGS", "ACTIONS", "GUARDS", "EXIT", "DETAIL"],
    "status": ["HOST", "STATE", "PAUSED", "RUNNING", "LAST PASS", "BACKLOG", "GUARDS",
               "BLOCKED", "DETAIL"],
    "other": ["HOST", "STATE", "PAUSED", "DETAIL"],
}


def render_table(method: str, results: list[rpc_client.HostResult], request_id: str | None,
                 elapsed: float) -> str:
    kind = "pass" if method in rpc.PASS_METHODS else ("status" if method == "status"
                                                      else "other")
    cols = _COLUMNS[kind]
    rows = [cols]
    for r in results:
        if r.state == rpc_client.OK:
            if kind == "pass":
                cells = _pass_cells(r.reply)
            elif kind == "status":
                cells = _status_cells(r.reply)
            elif method == "approve":
                cells = ["-", r.reply.get("message", "")]
            else:
                cells = ["yes" if r.reply.get("paused") else "no",
                         r.reply.get("paused_reason") or ""]
        else:
            detail = (f"{r.code}: {r.message}" if r.state == rpc_client.ERROR
                      else str(r.message))
            cells = ["-"] * (len(cols) - 3) + [detail]
            if kind == "pass":
                cells[-2] = str(host_exit_code(method, r)) if r.state == rpc_client.ERROR \
                    else "-"
        rows.append([r.host, r.state.upper() if r.state != rpc_client.OK else "ok", *cells])
    widths = [max(len(row[i]) for row in rows) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    ok = sum(r.state == rpc_client.OK for r in results)
    err = sum(r.state == rpc_client.ERROR for r in results)
    down = [r.host for r in results if r.state == rpc_client.UNREACHABLE]
    lines.append("")
    lines.append(f"{method}: {len(results)} hosts, {ok} ok, {err} error, {len(down)} unreachable"
                 + (f" ({', '.join(down)})" if down else "")
                 + f"; {elapsed:.2f}s; request {request_id}; exit "
                 f"{overall_exit_code(method, results)}")
    return "\n".join(lines)


def render_single(method: str, r: rpc_client.HostResult) -> str | None:
    """One host, table format: the whole pass report (findings and actions), or None
    to fall back to the merged table."""
    if r.state != rpc_client.OK or method not in rpc.PASS_METHODS:
        return None
    from reaper.report import PassReport
    fields = {k: v for k, v in r.reply.items() if k in PassReport.__dataclass_fields__}
    try:
        return PassReport(**fields).to_table()
    except (TypeError, KeyError):       # an agent of another version: the summary row
        return None


def read_hosts_file(path: str) -> list[str]:
    hosts = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                hosts.append(line)
    return list(dict.fromkeys(hosts))


# -- imperative shell --------------------------------------------------------------

def hosts_from_db(conf) -> list[str]:
    """Every host with a nova-compute service row that is not deleted."""
    import sqlalchemy as sa

    from reaper import novaurl
    from reaper.nova import db as nova_db
    from reaper.nova import schema

    _register_database_opts(conf)
    novaurl.check(conf.database.connection)
    engine = nova_db.engine_from_conf(conf)
    novaurl.never_create(engine)
    s = schema.services
    try:
        with engine.connect() as c:
            rows = c.execute(sa.select(s.c.host).distinct()
                             .where(s.c.binary == "nova-compute", s.c.deleted == 0,
                                    s.c.host.isnot(None))
                             .order_by(s.c.host)).scalars().all()
    except sa.exc.SQLAlchemyError as e:
        raise exception.NovaDBError(nova_db.describe_error(e, engine)) from None
    finally:
        engine.dispose()
    return list(rows)


def select_hosts(conf) -> list[str]:
    given = list(conf.call_hosts or [])
    if given and (conf.all_hosts or conf.hosts_file):
        raise exception.UsageError("--host and --all/--hosts-file do not go together")
    if given:
        return list(dict.fromkeys(given))
    if conf.hosts_file:
        try:
            hosts = read_hosts_file(conf.hosts_file)
        except OSError as e:
            raise exception.UsageError(f"cannot read --hosts-file: {e}") from None
        if not hosts:
            raise exception.UsageError(f"--hosts-file {conf.hosts_file} lists no host")
        return hosts
    if conf.all_hosts:
        return hosts_from_db(conf)
    raise exception.UsageError(
        "say which hosts: --host HOST (repeatable), --all, or --hosts-file FILE")


def _finish(conf) -> int:
    """reaper-ctl finish (see reaper.finisher)."""
    import socket
    import uuid as uuidlib

    from reaper import audit as audit_mod
    from reaper import finisher, novaurl
    from reaper.auditlog import read
    from reaper.nova import db as nova_db
    from reaper.services import session

    args = conf.command
    try:
        window = read.Window.parse(args.since, args.until)
        instances = [str(uuidlib.UUID(u.strip())) for u in args.instance]
        if args.down_after < 0:
            raise ValueError("--down-after must be 0 or more")
    except ValueError as e:
        print(f"reaper-ctl finish: {e}", file=sys.stderr)
        return EXIT_USAGE
    files = read.order_files(args.files)
    missing = [f for f in files if f != "-" and not os.path.isfile(f)]
    if missing:
        print(f"reaper-ctl finish: no such file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_ERROR
    _register_database_opts(conf)
    try:
        novaurl.check(conf.database.connection)
        engine = nova_db.engine_from_conf(conf)
        novaurl.never_create(engine)
    except Exception as e:  # noqa: BLE001 - one clear line
        print(f"reaper-ctl finish: the Nova DB: {e}", file=sys.stderr)
        return EXIT_ERROR
    stats = read.ReadStats()
    audit = audit_mod.AuditLog(conf.reaper.audit_log or None, socket.gethostname())
    try:
        rep = finisher.finish(
            read.iter_records(files, window, stats=stats), engine,
            session.clients_from_conf(conf), audit, dry_run=not args.yes,
            hosts=conf.call_hosts or (), instances=instances,
            include_up_hosts=args.include_up_hosts, down_after=args.down_after)
    finally:
        audit.close()
        engine.dispose()
    if stats.errors:
        rep.errors += [f"reading: {e}" for e in stats.errors]
    if conf.format == "json":
        print(json.dumps({**rep.to_dict(), "read": stats.as_dict()}, indent=2,
                         sort_keys=True, default=str))
    else:
        print(rep.to_table())
    if stats.malformed:
        print(f"reaper-ctl finish: {stats.malformed} malformed lines skipped",
              file=sys.stderr)
    return rep.exit_code


def _register_database_opts(conf: cfg.ConfigOpts) -> None:
    """``[database]``, for ``--all`` and ``finish`` only (--host and --hosts-file never
    read it). oslo.config reads an option registered after parsing from the parsed
    files."""
    from reaper.conf import database as conf_database

    conf.register_opts(conf_database.database_opts, group="database")


def _load_conf(argv: list[str]) -> cfg.ConfigOpts:
    """A ConfigOpts of our own, so main() can run many times in one process."""
    conf = cfg.ConfigOpts()
    conf.register_cli_opts(cli_opts)
    conf.register_cli_opt(command_opt)
    from reaper.conf import reaper as conf_reaper
    from reaper.conf import services as conf_services
    conf.register_opts(conf_reaper.audit_opts, group="reaper")   # finish: its audit records
    conf_services.register_opts(conf)                             # finish: the services
    logging.register_options(conf)
    conf.set_default("use_stderr", True)
    conf.set_default("default_log_levels", logging.get_default_log_levels()
                     + ["oslo_messaging=WARN", "oslo.messaging=WARN", "amqp=ERROR",
                        "kombu=ERROR"])
    _register_transport_url(conf)
    config.parse(conf, argv, cli_opts, project="reaper", prog="reaper-ctl",
                 description="Ask reaper agents over RPC: one host (--host) or all (--all).",
                 epilog="Global options go before the command: "
                        "reaper-ctl --all --format json audit. "
                        "Exit codes: 0 fine, 3 findings, 4 actions taken, 5 a guard refused "
                        "a plan, 6 some host did not answer, 1 an error, 2 bad usage (or "
                        "no [DEFAULT] transport_url configured).")
    return conf


def _register_transport_url(conf: cfg.ConfigOpts) -> None:
    """oslo.messaging's ``[DEFAULT] transport_url``, registered before parsing so that
    :func:`transport_problem` can ask where its value came from."""
    import oslo_messaging.opts
    for group, opts in oslo_messaging.opts.list_opts():
        if group is None:
            conf.register_opts([o for o in opts if o.dest == "transport_url"])


def transport_problem(conf: cfg.ConfigOpts) -> str | None:
    """Why the broker to use is not known, or None.

    oslo.messaging's default transport_url (``rabbit://``) is guest@localhost: without
    a config file, or with one that does not set it, reaper-ctl would quietly talk to
    whatever broker runs here, or to none and say the broker is down, neither being
    what the operator meant. Set it explicitly to use that broker after all.
    """
    try:
        where = conf.get_location("transport_url").location
    except (cfg.NoSuchOptError, AttributeError):
        where = None
    if where is not None and where.is_user_controlled:
        return None
    files = list(conf.config_file or [])
    found = (f"the config files ({', '.join(files)}) do not set it" if files else
             "no config file was found (/etc/reaper/reaper-ctl.conf, "
             "/etc/reaper/reaper.conf, or --config-file)")
    return ("no [DEFAULT] transport_url: " + found + "; set transport_url = "
            "rabbit://USER:PASSWORD@HOST:5672/ (the agents' broker) instead of letting "
            "oslo.messaging fall back to guest@localhost")


class _Progress:
    """'12/200 answered, 3 unreachable' on stderr while waiting: rewritten in place on
    a terminal, otherwise a line per second at most."""

    def __init__(self, stream, total: int):
        self.stream, self.total = stream, total
        self.tty = getattr(stream, "isatty", lambda: False)()
        self._last = (0.0, None)

    def __call__(self, answered: int, unreachable: int, total: int) -> None:
        text = f"{answered}/{total} answered, {unreachable} unreachable"
        final = answered + unreachable == total
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + text + ("\n" if final else ""))
        elif final or (now - self._last[0] >= 1.0 and text != self._last[1]):
            self.stream.write(text + "\n")
        else:
            return
        self.stream.flush()
        self._last = (now, text)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        conf = _load_conf(argv)
    except SystemExit as e:             # --help (0) or an argparse usage error (2)
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    except (cfg.Error, ValueError) as e:
        print(f"reaper-ctl: configuration error: {config.error_text(e)}", file=sys.stderr)
        return EXIT_ERROR
    try:
        logsetup.setup(conf, "reaper-ctl", "reaper-ctl")
    except logsetup.JournalUnavailable as e:
        return e.code
    try:
        return _run(conf)
    finally:
        # After the report, not before: knowing every option name a shared
        # reaper.conf may set imports all of the reaper's modules (pyroute2,
        # SQLAlchemy, libvirt...), half a CPU second the report need not wait for.
        config.warn_unknown_names(conf, LOG)


def _run(conf: cfg.ConfigOpts) -> int:
    method = conf.command.name
    if method == "finish":
        return _finish(conf)
    try:
        args = call_args(method, conf.command)
        problem = transport_problem(conf)
        if problem:
            raise exception.UsageError(problem)
        hosts = select_hosts(conf)
    except (exception.BadArgument, exception.UsageError) as e:
        print(f"reaper-ctl {method}: {e}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # Nova DB unreachable, bad URL: one clear line
        LOG.debug("listing hosts failed", exc_info=True)
        print(f"reaper-ctl {method}: cannot list the compute hosts: {e}", file=sys.stderr)
        return EXIT_ERROR
    if not hosts:
        print(f"reaper-ctl {method}: the Nova DB lists no nova-compute host", file=sys.stderr)
        return EXIT_ERROR

    t0 = time.monotonic()
    try:
        client = rpc_client.ReaperClient(
            conf, timeout=conf.timeout, parallel=min(conf.parallel, len(hosts)),
            context=rpc_client.make_context(conf.os_username, conf.os_project_name))
    except Exception as e:  # noqa: BLE001 - a malformed transport_url
        print(f"reaper-ctl {method}: cannot set up the RPC transport: {e}", file=sys.stderr)
        return EXIT_ERROR
    try:
        client.check_broker(timeout=min(conf.timeout, 10.0))
    except exception.Unreachable as e:
        client.close()
        print(f"reaper-ctl {method}: {e.reason}", file=sys.stderr)
        return EXIT_ERROR
    try:
        progress = _Progress(sys.stderr, len(hosts)) if len(hosts) > 1 else None
        results = client.fan_out(hosts, method, parallel=conf.parallel, progress=progress,
                                 **args)
    finally:
        client.close()
    elapsed = time.monotonic() - t0

    if results and all(r.code == rpc_client.BROKER for r in results):
        print(f"reaper-ctl {method}: {results[0].message}", file=sys.stderr)
        return EXIT_ERROR
    if conf.format == "json":
        print(json.dumps(merged_report(method, results, client.request_id, elapsed),
                         indent=2, sort_keys=True, default=str))
    else:
        single = render_single(method, results[0]) if len(results) == 1 else None
        print(single if single is not None
              else render_table(method, results, client.request_id, elapsed))
    for r in results:
        if r.state != rpc_client.OK:
            print(f"reaper-ctl {method}: {r.host}: {r.state}: "
                  + (f"{r.code}: " if r.state == rpc_client.ERROR else "")
                  + f"{r.message}", file=sys.stderr)
    return overall_exit_code(method, results)


if __name__ == "__main__":
    sys.exit(main())
