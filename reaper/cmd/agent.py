"""reaper-agent: the per-host service (systemd Type=notify).

At start it validates the configuration and the host's identity, runs an
init_host pass, then the periodic reconcile and reclaim passes, and serves RPC
from controllers. ``--once`` runs a single reap pass and exits with the one-shot
exit codes.
"""
from __future__ import annotations

import sys
import threading

from oslo_config import cfg
from oslo_log import log as logging

from reaper import exception
from reaper import config, logsetup
from reaper.report import EXIT_BUSY, EXIT_ERROR, EXIT_GUARD

CONF = cfg.CONF
LOG = logging.getLogger(__name__)

cli_opts = [
    cfg.BoolOpt("once", default=False,
                help="Run one reap pass, print its report and exit with the one-shot exit "
                     "codes (0 nothing, 3 findings, 4 actions, 5 guard or paused host, 1 "
                     "error, 75 busy: another pass held the host's pass lock longer than "
                     "[reaper] pass_lock_timeout) instead of running as a service. Service exit codes: 0 stopped by SIGTERM, "
                     "1 error, 78 bad configuration, host identity, or a damaged or "
                     "read-only state DB (not restarted)."),
]


def main(argv: list[str] | None = None) -> int:
    from reaper import procid
    procid.set_name("reaper-agent")
    CONF.register_cli_opts(cli_opts)
    from reaper.agent import service
    try:
        config.load(sys.argv[1:] if argv is None else argv, cli_opts=cli_opts)
        logsetup.setup(CONF, "reaper", "reaper-agent")
    except logsetup.JournalUnavailable as e:
        return e.code
    except (cfg.Error, ValueError) as e:
        print(f"reaper-agent: configuration error: {config.error_text(e)}", file=sys.stderr)
        return EXIT_ERROR if CONF.once else service.EXIT_CONFIG
    config.warn_unknown_names(CONF, LOG)
    from reaper import reconcile
    try:
        reaper = reconcile.build_from_conf(CONF)
    except (exception.BadNovaURL, exception.KindError) as e:
        # A URL that cannot work as written, resource kinds that are not installed:
        # a restart does not fix them either.
        print(f"reaper-agent: configuration error: {e}", file=sys.stderr)
        return EXIT_ERROR if CONF.once else service.EXIT_CONFIG
    except exception.StateDBError as e:
        # Damaged or read-only: restarting every few seconds repairs nothing.
        print(f"reaper-agent: cannot start: {e}", file=sys.stderr)
        return EXIT_ERROR if CONF.once or not e.needs_operator else service.EXIT_CONFIG
    except Exception as e:  # noqa: BLE001 - one line and exit 1, not a traceback
        print(f"reaper-agent: cannot start: {e}", file=sys.stderr)
        return EXIT_ERROR
    agent = service.Agent(reaper, CONF)
    from reaper import metrics, notifications
    try:
        # Read from the agent's validated snapshot, like everything after start-up.
        snap = agent.config.conf
        reaper.notifications = notifications.enable(
            reaper, CONF, queue_size=snap.reaper.notification_queue_size)
        metrics.enable(reaper, snap)
    except Exception as e:  # noqa: BLE001 - reporting must not keep the agent down
        LOG.error("notifications or metrics not enabled: %s", e)
    try:
        if CONF.once:
            try:
                rep = agent.run_pass("reap", source="once")
            except exception.Paused as e:
                if e.report is not None:
                    print(e.report.to_table())
                print(f"reaper-agent: {e}", file=sys.stderr)
                return EXIT_GUARD          # refused, like a guard
            except exception.Busy as e:
                print(f"reaper-agent: busy: {e}", file=sys.stderr)
                return EXIT_BUSY
            print(rep.to_table())
            return rep.exit_code
        rpc = _start_rpc(agent)
        try:
            return agent.serve()
        finally:
            _stop_rpc(rpc)
    finally:
        reaper.close()


def _start_rpc(agent):
    """Start the RPC server without holding up the agent: oslo.messaging retries a
    broker that does not answer forever, and the passes must run meanwhile."""
    if not agent.config.get("rpc", "enabled"):
        LOG.info("RPC disabled ([rpc] enabled = false)")
        return None
    from reaper.rpc import server as rpc_server
    try:
        server = rpc_server.build_server(CONF, agent)
    except Exception as e:  # noqa: BLE001 - a bad transport_url must not stop the passes
        LOG.error("RPC server not started: %s", e)
        return None
    started = threading.Event()

    def start():
        try:
            server.start()
            started.set()
            LOG.info("serving RPC: topic %s, server %s", "reaper", agent.host)
        except Exception:
            LOG.exception("RPC server failed to start")
    threading.Thread(target=start, name="reaper-rpc-start", daemon=True).start()
    return server, started


def _stop_rpc(rpc) -> None:
    if rpc is None:
        return
    server, started = rpc
    if not started.is_set():
        LOG.warning("the RPC server never reached the broker; not waiting for it")
        return
    from reaper.rpc import server as rpc_server
    rpc_server.stop_server(server)


if __name__ == "__main__":
    sys.exit(main())
