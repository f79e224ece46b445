"""reaper-manage: local commands (audit, reap, reclaim, approve, demo, audit-log reports,
watch-nova-log, db-grants)."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import uuid as uuidlib

from oslo_config import cfg
from oslo_log import log as logging

from reaper import exception
from reaper import config, logsetup
from reaper.cmd import db_grants
from reaper.report import EXIT_BUSY, EXIT_ERROR, EXIT_FINDINGS

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

# A wrong command line (as argparse's own errors): nothing was run.
EXIT_USAGE = 2


PASS_EPILOG = """\
exit codes:
  0   nothing to do
  3   findings reported
  4   actions taken
  5   a guard refused the plan (among them: the host is paused, see
      reaper-ctl pause/resume; only audits and dry runs run while it is)
  1   error (DB or libvirt unreachable, state DB unusable, a step failed,
      bad configuration)
  2   wrong command line (an unknown option, --instance not a uuid):
      nothing was run
  75  busy (EX_TEMPFAIL): another pass (reaper-agent, reaper-manage, the
      nova-log watcher) held this host's pass lock for longer than
      --lock-timeout; nothing was done, try again later

One pass per host at a time, across processes: every pass, audits included,
takes the pass lock under [DEFAULT] state_path."""


def _add_pass_parser(subparsers, name, help_text, dry_run_flag):
    p = subparsers.add_parser(name, help=help_text, description=help_text,
                              epilog=PASS_EPILOG,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--format", choices=["table", "json"], default="table",
                   help="table for people, json for tools (the whole pass report)")
    p.add_argument("--instance", metavar="UUID",
                   help="only report/act on this instance (journaled teardowns of other "
                        "instances are not resumed either)")
    p.add_argument("--lock-timeout", type=float, metavar="SECONDS",
                   help="wait at most SECONDS for another pass on this host to end, then "
                        "exit 75 (default: [reaper] pass_lock_timeout)")
    if dry_run_flag:
        p.add_argument("--dry-run", action="store_true",
                       help="plan and report, change nothing (overrides [reaper] dry_run)")
    return p


def add_command_parsers(subparsers):
    _add_pass_parser(subparsers, "audit",
                     "One pass that only reports: it never changes anything.", False)
    _add_pass_parser(subparsers, "reap",
                     "One pass that acts as configured ([reaper] *_action, dry_run, guards).",
                     True)
    _add_pass_parser(subparsers, "reclaim",
                     "One pass that only reclaims expired soft-deleted instances.", True)
    p = subparsers.add_parser("approve", help="Let the plan of a pass blocked by the "
                                              "mass-destruction guard run once.")
    p.add_argument("pass_id")
    p = subparsers.add_parser(
        "demo", help="Build a throwaway host (libvirt test driver, SQLite Nova DB, instance "
                     "dirs) in a temporary directory, run an audit and a reap pass on it, and "
                     "print what was found and done. Needs no root and no services.")
    p.add_argument("--keep", action="store_true",
                   help="keep the temporary directory, with a reaper.conf for it: the "
                        "demo prints the reaper-manage command to go on with")
    p.add_argument("--format", choices=["table", "json"], default="table")
    _add_audit_log_parsers(subparsers)
    _add_watch_parser(subparsers)
    db_grants.add_parser(subparsers)


def _add_report_args(p):
    p.add_argument("files", nargs="*", metavar="FILE",
                   help="audit log files, plain or gzip-compressed, '-' for stdin; rotated "
                        "copies are read oldest first whatever order they are named in. "
                        "Default: [reaper] audit_log and its rotated siblings (audit.log.1, "
                        "audit.log.2.gz, audit.log-YYYYMMDD.gz...)")
    p.add_argument("--since", metavar="TIME",
                   help="only records at or after TIME: ISO 8601 (2026-11-23T22:00:00, UTC "
                        "unless an offset is given) or an age (90m, 24h, 7d)")
    p.add_argument("--until", metavar="TIME", help="only records before TIME (same forms)")
    # dest: CONF.command.host would clash with [DEFAULT] host
    p.add_argument("--host", dest="host_filter", metavar="HOST",
                   help="only records written by this host")
    p.add_argument("--format", choices=["table", "json"], default="table",
                   help="table for people, json for tools")


def _add_audit_log_parsers(subparsers):
    p = subparsers.add_parser(
        "audit-log", help="Reports over the JSON-lines audit log: summary, story, failures.",
        description="Reports over the JSON-lines audit log (one file, several, or rotated "
                    "and gzip-compressed copies), streamed: a year of logs is fine. "
                    "Malformed lines are counted and reported, never fatal.")
    reports = p.add_subparsers(dest="report", metavar="REPORT", title="reports")
    reports.required = True
    _add_report_args(reports.add_parser(
        "summary", help="Record counts by host x event x classification x result, by "
                        "event and by host, over the time window."))
    s = reports.add_parser(
        "story", help="Every record that names one instance uuid or resource (domain name, "
                      "directory, device, iSCSI target...), oldest first: findings, "
                      "actions and their steps, tripped guards, RPC calls, nova-log triggers.")
    s.add_argument("subject", metavar="UUID_OR_RESOURCE")
    _add_report_args(s)
    f = reports.add_parser(
        "failures", help="Actions that failed, aborted or backed off, tripped guards, passes "
                         "with errors, failed RPC calls and triggered audits. Exits 3 when "
                         "there is any.")
    _add_report_args(f)
    f.add_argument("--limit", type=int, default=50, metavar="N",
                   help="list the latest N failures (all are counted); 0 lists none")


def _add_watch_parser(subparsers):
    p = subparsers.add_parser(
        "watch-nova-log",
        help="Follow nova-compute's log and audit an instance (read-only, that instance "
             "only) whenever Nova logs a failed volume detach, delete, evacuation, rebuild "
             "or migration for it; each trigger and what the audit found go to the audit "
             "log (event nova_log_trigger). Stops on SIGTERM/SIGINT.")
    p.add_argument("path", metavar="PATH", help="nova-compute's log file (followed like "
                                                "tail -F: rotation and truncation are fine)")
    p.add_argument("--from-start", action="store_true",
                   help="read the file from its start instead of only what is written from now")
    p.add_argument("--debounce", type=float, default=60.0, metavar="SECONDS",
                   help="audit one instance at most once per SECONDS (one failure logs "
                        "several lines)")
    p.add_argument("--poll-interval", type=float, default=0.5, metavar="SECONDS",
                   help="how often to look for new lines")
    p.add_argument("--max-triggers", type=int, metavar="N",
                   help="stop after N triggered audits")
    p.add_argument("--exit-at-eof", action="store_true",
                   help="stop at the end of the file instead of waiting for more "
                        "(scripts, tests; with --from-start: audit a past log)")


command_opt = cfg.SubCommandOpt("command", title="Commands", handler=add_command_parsers,
                                help="What to do; `reaper-manage COMMAND --help` for more.")


def instance_uuid(value: str | None) -> str | None:
    """``--instance`` as Nova writes uuids (lower case, dashed); ValueError when it is
    not a uuid: a pass limited to an instance that cannot exist would still collect
    and plan the whole host, and report nothing about the typo."""
    if value is None:
        return None
    try:
        return str(uuidlib.UUID(value.strip()))
    except ValueError:
        raise ValueError(f"--instance {value!r} is not an instance uuid (expected e.g. "
                         f"0e7b1b5c-2e1e-4b6f-9a53-5d3f1c1f2a10)") from None


def _pass(mode: str) -> int:
    from reaper import reconcile
    args = CONF.command
    try:
        only = instance_uuid(args.instance)
    except ValueError as e:
        print(f"reaper-manage {mode}: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.lock_timeout is not None and args.lock_timeout < 0:
        print(f"reaper-manage {mode}: --lock-timeout must be 0 or more", file=sys.stderr)
        return EXIT_ERROR
    reaper = reconcile.build_from_conf(CONF)
    try:
        dry = True if getattr(args, "dry_run", False) else None
        rep = reaper.run_pass(mode, dry_run=dry, only_uuid=only,
                              source="reaper-manage", wait=args.lock_timeout)
    except exception.Busy as e:
        print(f"reaper-manage {mode}: busy: {e}", file=sys.stderr)
        return EXIT_BUSY
    finally:
        reaper.close()
    print(rep.to_json() if args.format == "json" else rep.to_table())
    for g in rep.guards:
        if g["guard"] == "paused":      # the one line that says why nothing was done
            print(f"reaper-manage {mode}: {g['reason']}", file=sys.stderr)
    return rep.exit_code


def _approve() -> int:
    from reaper import reconcile, state
    st = state.open_checked(CONF.state_path)
    try:
        if st.approve(CONF.command.pass_id, reconcile.utcnow()):
            print(f"approved {CONF.command.pass_id}: the next reap pass may run its plan once")
            return 0
        print(f"no blocked, unused pass {CONF.command.pass_id}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        st.close()


def _audit_log() -> int:
    from reaper.auditlog import read, reports
    args = CONF.command
    try:
        window = read.Window.parse(args.since, args.until)
        if args.report == "failures" and args.limit < 0:
            raise ValueError("--limit must be 0 or more")
    except ValueError as e:
        print(f"reaper-manage audit-log: {e}", file=sys.stderr)
        return EXIT_ERROR
    if args.files:
        files = read.order_files(args.files)
    elif CONF.reaper.audit_log:
        files = read.rotated_siblings(CONF.reaper.audit_log)
        if not files:
            print(f"reaper-manage audit-log: no audit log at {CONF.reaper.audit_log}",
                  file=sys.stderr)
            return EXIT_ERROR
    else:
        print("reaper-manage audit-log: [reaper] audit_log is empty: name the files",
              file=sys.stderr)
        return EXIT_ERROR
    missing = [f for f in files if f != "-" and not os.path.isfile(f)]
    if missing:
        print(f"reaper-manage audit-log: no such file: {', '.join(missing)}", file=sys.stderr)
        return EXIT_ERROR
    stats = read.ReadStats()
    story = args.report == "story"
    records = read.iter_records(files, window, args.host_filter,
                                contains=args.subject if story else None, stats=stats)
    if story:
        report = reports.story(records, args.subject)
    elif args.report == "failures":
        report = reports.failures(records, args.limit)
    else:
        report = reports.summary(records)
    print(reports.render(report, args.format, stats, window, args.host_filter))
    if stats.malformed or stats.errors:
        print(f"reaper-manage audit-log: {stats.malformed} malformed lines, "
              f"{len(stats.errors)} read errors (see the report)", file=sys.stderr)
    if stats.errors and not stats.records:
        return EXIT_ERROR
    if args.report == "failures" and report.total:
        return EXIT_FINDINGS
    return 0


def _watch_nova_log() -> int:
    from reaper import novalog, reconcile
    args = CONF.command
    problems = [msg for bad, msg in (
        (args.debounce < 0, "--debounce must be 0 or more"),
        (args.poll_interval <= 0, "--poll-interval must be more than 0"),
        (args.max_triggers is not None and args.max_triggers < 1,
         "--max-triggers must be 1 or more"),
        (args.exit_at_eof and not os.path.isfile(args.path), f"no such file: {args.path}"),
    ) if bad]
    if problems:
        print(f"reaper-manage watch-nova-log: {'; '.join(problems)}", file=sys.stderr)
        return EXIT_ERROR
    if not os.path.exists(args.path):
        LOG.warning("%s does not exist yet: waiting for it", args.path)
    stop = threading.Event()

    def on_signal(signum, _frame):
        LOG.info("signal %s: stopping", signum)
        stop.set()

    def on_audit(rec: dict) -> None:
        ev = rec.get("evidence") or {}
        print(f"{rec['ts']} {ev.get('operation')} {rec['instance_uuid']}: {rec['result']} "
              f"({len(ev.get('findings') or [])} findings, pass {rec['pass_id']})", flush=True)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        reaper = reconcile.build_from_conf(CONF)
        reaper.should_stop = stop.is_set
        try:
            stats = novalog.watch(reaper, args.path, from_start=args.from_start,
                                  debounce=args.debounce, poll_interval=args.poll_interval,
                                  max_triggers=args.max_triggers, exit_at_eof=args.exit_at_eof,
                                  stop=stop, on_audit=on_audit)
        finally:
            reaper.close()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    d = stats.detect
    print(f"watched {args.path}: {d.lines} lines, {d.failures} failures logged, "
          f"{stats.triggers} audits ({d.debounced} debounced, {stats.audits_failed} failed)",
          flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    from reaper import procid
    procid.set_name("reaper-manage")
    CONF.register_cli_opt(command_opt)
    try:
        config.load(sys.argv[1:] if argv is None else argv, quiet_audit=True)
        logsetup.setup(CONF, "reaper", "reaper-manage")
    except (cfg.Error, ValueError) as e:
        print(f"reaper-manage: configuration error: {config.error_text(e)}", file=sys.stderr)
        return EXIT_ERROR
    config.warn_unknown_names(CONF, LOG)
    name = CONF.command.name
    try:
        if name == "demo":
            from reaper import demo
            return demo.run(keep_dir=CONF.command.keep, fmt=CONF.command.format)
        if name == "approve":
            return _approve()
        if name == "audit-log":
            return _audit_log()
        if name == "watch-nova-log":
            return _watch_nova_log()
        if name == "db-grants":
            return db_grants.run(CONF)
        return _pass(name)
    except Exception as e:  # one clear line, not a traceback, for operators
        LOG.debug("failed", exc_info=True)
        print(f"reaper-manage {name}: error: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
