"""[ovs]: the OVSDB server and integration bridge (reaper.kinds.network.ovs)."""
from __future__ import annotations

from oslo_config import cfg

ovs_opts = [
    cfg.StrOpt("connection", default="tcp:127.0.0.1:6640",
               help="OVSDB server of this host's Open vSwitch, as os-vif's "
                    "ovsdb_connection: tcp:IP:PORT or unix:PATH "
                    "(e.g. unix:/var/run/openvswitch/db.sock)."),
    cfg.StrOpt("integration_bridge", default="br-int",
               help="The integration bridge Nova's VIFs are plugged into (Nova's "
                    "[neutron] ovs_bridge). Only its ports are ever looked at."),
    cfg.IntOpt("timeout", default=10, min=1,
               help="Seconds to wait for the OVSDB server to connect, answer or commit "
                    "before the collector (or the unplug step) counts it as down."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(ovs_opts, group="ovs")


def list_opts():
    return [("ovs", ovs_opts)]
