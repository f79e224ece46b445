"""reaper-agent: the per-host service (an init_host pass, then periodic passes).

This is the core loop; RPC, sd_notify, SIGHUP reload and the separate reclaim
timer arrive with the agent issue.
"""
from __future__ import annotations

import signal
import sys
import threading

from oslo_config import cfg
from oslo_log import log as logging

from reaper import config
from reaper.report import EXIT_ERROR

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

agent_opts = [
    cfg.IntOpt("reconcile_interval", default=600, mutable=True,
               help="Seconds between reconcile passes (negative disables periodic passes)."),
]
CONF.register_opts(agent_opts, group="reaper")
cli_opts = [
    cfg.BoolOpt("once", default=False,
                help="Run one reap pass, print its report and exit with the one-shot exit "
                     "codes (0 nothing, 3 findings, 4 actions, 5 guard, 1 error)."),
]


def main(argv: list[str] | None = None) -> int:
    CONF.register_cli_opts(cli_opts)
    try:
        config.load(sys.argv[1:] if argv is None else argv)
        logging.setup(CONF, "reaper")
    except (cfg.Error, ValueError) as e:
        print(f"reaper-agent: configuration error: {e}", file=sys.stderr)
        return EXIT_ERROR
    from reaper import reconcile
    try:
        reaper = reconcile.build_from_conf(CONF)
    except Exception as e:  # noqa: BLE001
        print(f"reaper-agent: cannot start: {e}", file=sys.stderr)
        return EXIT_ERROR
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        rep = reaper.run_pass("reap")       # init_host: evacuated instances go first
        if CONF.once:
            print(rep.to_table())
            return rep.exit_code
        while CONF.reaper.reconcile_interval >= 0 and not stop.wait(
                CONF.reaper.reconcile_interval):
            reaper.run_pass("reap")
        return 0
    finally:
        reaper.close()


if __name__ == "__main__":
    sys.exit(main())
