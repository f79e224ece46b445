"""[libvirt]: the hypervisor connection (reaper.kinds.instance.libvirt)."""
from __future__ import annotations

from oslo_config import cfg

libvirt_opts = [
    cfg.StrOpt("connection_uri", default="qemu:///system",
               help="libvirt URI of this host's hypervisor, as nova-compute's "
                    "[libvirt] connection_uri."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(libvirt_opts, group="libvirt")


def list_opts():
    return [("libvirt", libvirt_opts)]
