"""reaper-agent: the per-host service (systemd Type=notify).

At start it validates the configuration and the host's identity, runs an
init_host pass, then the periodic reconcile and reclaim passes, and serves RPC
from controllers. ``--once`` runs a single reap pass and exits with the one-shot
exit codes.
"""
from __future__ import annotations

import sys

from oslo_config import cfg
from oslo_log import log as logging

from reaper import config
from reaper.report import EXIT_ERROR, EXIT_GUARD

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

cli_opts = [
    cfg.BoolOpt("once", default=False,
                help="Run one reap pass, print its report and exit with the one-shot exit "
                     "codes (0 nothing, 3 findings, 4 actions, 5 guard, 1 error) instead "
                     "of running as a service. Service exit codes: 0 stopped by SIGTERM, "
                     "1 error, 78 bad configuration or host identity (not restarted)."),
]


def main(argv: list[str] | None = None) -> int:
    CONF.register_cli_opts(cli_opts)
    from reaper.agent import service
    try:
        config.load(sys.argv[1:] if argv is None else argv)
        logging.setup(CONF, "reaper")
    except (cfg.Error, ValueError) as e:
        print(f"reaper-agent: configuration error: {e}", file=sys.stderr)
        return EXIT_ERROR if CONF.once else service.EXIT_CONFIG
    from reaper import reconcile
    try:
        reaper = reconcile.build_from_conf(CONF)
    except Exception as e:  # noqa: BLE001
        print(f"reaper-agent: cannot start: {e}", file=sys.stderr)
        return EXIT_ERROR
    agent = service.Agent(reaper, CONF)
    try:
        if CONF.once:
            try:
                rep = agent.run_pass("reap", source="once")
            except service.Paused as e:
                print(f"reaper-agent: {e}", file=sys.stderr)
                return EXIT_GUARD          # refused, like a guard
            print(rep.to_table())
            return rep.exit_code
        return agent.serve()
    finally:
        reaper.close()


if __name__ == "__main__":
    sys.exit(main())
