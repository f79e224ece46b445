"""[DEFAULT] options shared by every part of the agent (the host's identity, paths)."""
from __future__ import annotations

import socket

from oslo_config import cfg

default_opts = [
    cfg.StrOpt("host", default=socket.gethostname(), sample_default="<current_hostname>",
               help="Name of this compute host exactly as nova-compute's [DEFAULT] host "
                    "(instances.host, compute_nodes.host)."),
    cfg.StrOpt("hypervisor_hostname", default="",
               help="This host's node name as nova-compute reports it "
                    "(compute_nodes.hypervisor_hostname); the host identity check looks for a "
                    "compute_nodes row with [DEFAULT] host and this node name. Empty (the "
                    "default): ask libvirt, as nova-compute's libvirt driver does, which names "
                    "its node after the libvirt connection's getHostname() (often the FQDN, "
                    "and not [DEFAULT] host); asked on every pass, so a libvirt that does not "
                    "answer refuses the pass until it does. Set it only when the node is "
                    "named otherwise (another virt driver, or an operator's override)."),
    cfg.StrOpt("instances_path", default="/var/lib/nova/instances",
               help="Where nova-compute keeps instance directories (nova-compute's "
                    "instances_path). Must be an absolute path; a relative one is refused "
                    "at start-up. It may be a symlink or spelled with '//' or '..': the "
                    "reaper resolves it, and every file path a libvirt domain uses, to "
                    "real paths before deciding which directory a domain uses."),
    cfg.StrOpt("state_path", default="/var/lib/reaper",
               help="Where the reaper keeps its state DB (observations, journal, approvals)."),
    cfg.StrOpt("instance_name_template", default="instance-%08x",
               help="Nova's instance_name_template; a domain named by it counts as Nova's."),
]

# The compute node uuid check (reaper.reconcile, reaper.identity).
compute_opts = [
    cfg.StrOpt("compute_id_file", default="/var/lib/nova/compute_id",
               help="nova-compute's file holding this node's compute node uuid (it writes "
                    "it to its own state_path, /var/lib/nova by default, since 2023.2). "
                    "When the file exists its uuid must be the uuid of the compute_nodes row "
                    "of this host and node, else every pass is refused and the agent does "
                    "not start (a renamed node). Missing file: the check is skipped. Empty: "
                    "never checked."),
]

ALL_OPTS = default_opts + compute_opts


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(ALL_OPTS)


def list_opts():
    return [("DEFAULT", ALL_OPTS)]
