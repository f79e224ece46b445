"""reaper-manage: local one-shot commands (audit, reap, reclaim, approve, demo)."""
from __future__ import annotations

import sys

from oslo_config import cfg
from oslo_log import log as logging

from reaper import config
from reaper.report import EXIT_ERROR

CONF = cfg.CONF
LOG = logging.getLogger(__name__)


def _add_pass_parser(subparsers, name, help_text, dry_run_flag):
    p = subparsers.add_parser(name, help=help_text, description=help_text)
    p.add_argument("--format", choices=["table", "json"], default="table",
                   help="table for people, json for tools (the whole pass report)")
    p.add_argument("--instance", metavar="UUID", help="only report/act on this instance")
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
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--format", choices=["table", "json"], default="table")


command_opt = cfg.SubCommandOpt("command", title="Commands", handler=add_command_parsers,
                                help="What to do; `reaper-manage COMMAND --help` for more.")


def _pass(mode: str) -> int:
    from reaper import reconcile
    reaper = reconcile.build_from_conf(CONF)
    try:
        dry = True if getattr(CONF.command, "dry_run", False) else None
        rep = reaper.run_pass(mode, dry_run=dry, only_uuid=CONF.command.instance)
    finally:
        reaper.close()
    print(rep.to_json() if CONF.command.format == "json" else rep.to_table())
    return rep.exit_code


def _approve() -> int:
    from reaper import reconcile, state
    st = state.StateDB(CONF.state_path)
    try:
        if st.approve(CONF.command.pass_id, reconcile.utcnow()):
            print(f"approved {CONF.command.pass_id}: the next reap pass may run its plan once")
            return 0
        print(f"no blocked, unused pass {CONF.command.pass_id}", file=sys.stderr)
        return EXIT_ERROR
    finally:
        st.close()


def main(argv: list[str] | None = None) -> int:
    CONF.register_cli_opt(command_opt)
    try:
        config.load(sys.argv[1:] if argv is None else argv, quiet_audit=True)
        logging.setup(CONF, "reaper")
    except (cfg.Error, ValueError) as e:
        print(f"reaper-manage: configuration error: {e}", file=sys.stderr)
        return EXIT_ERROR
    name = CONF.command.name
    try:
        if name == "demo":
            from reaper import demo
            return demo.run(keep=CONF.command.keep, fmt=CONF.command.format)
        if name == "approve":
            return _approve()
        return _pass(name)
    except Exception as e:  # noqa: BLE001 - one clear line, not a traceback, for operators
        LOG.debug("failed", exc_info=True)
        print(f"reaper-manage {name}: error: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
