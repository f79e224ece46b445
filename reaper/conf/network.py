"""[network]: where Nova's VIF devices live (reaper.kinds.network.collector)."""
from __future__ import annotations

from oslo_config import cfg

network_opts = [
    cfg.BoolOpt("enabled", default=True,
                help="Look after Nova's network plumbing: find leaked tap/qbr/qvb/qvo "
                     "devices and integration bridge ports (R11) and unplug the VIFs of "
                     "every instance teardown. Turn off on hosts without Open vSwitch.",
                deprecated_for_removal=True,
                deprecated_reason="Use [reaper] resource_kinds: leave 'network' out of "
                                  "it on hosts without Open vSwitch. Until this option is "
                                  "removed, false still turns the network kind off "
                                  "whatever resource_kinds says"),
    cfg.StrOpt("namespace",
               help="Network namespace (a name under /var/run/netns) holding the VIF "
                    "devices (tap, qbr, qvb, qvo). Unset: the agent's own namespace, "
                    "where nova-compute and os-vif plug them."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(network_opts, group="network")


def list_opts():
    return [("network", network_opts)]
