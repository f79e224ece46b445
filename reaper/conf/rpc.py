"""[rpc]: the agent's RPC server (reaper.rpc.server)."""
from __future__ import annotations

from oslo_config import cfg

rpc_opts = [
    cfg.BoolOpt("enabled", default=True,
                help="Serve RPC from controllers (topic 'reaper', server = [DEFAULT] host) "
                     "on [DEFAULT] transport_url. Off: the agent runs its timers only."),
    cfg.BoolOpt("allow_remote_reap", default=False, mutable=True,
                help="Accept destructive RPC calls: reap and reclaim other than dry runs, "
                     "approve, and resume (which re-enables destruction after a pause). "
                     "Audits, dry runs, status and pause are always accepted. Checked at "
                     "every call against the agent's last validated configuration: a "
                     "SIGHUP reload applies it, a refused reload (any invalid option in "
                     "the file) changes nothing."),
    cfg.FloatOpt("pass_wait_timeout", default=5.0, min=0.0, mutable=True,
                 help="Seconds an RPC-triggered pass waits for the host's pass lock while "
                      "another pass runs, before it answers 'busy'. Keep it well below "
                      "reaper-ctl's --timeout, or the caller stops waiting first."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(rpc_opts, group="rpc")


def list_opts():
    return [("rpc", rpc_opts)]
