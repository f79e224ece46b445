"""[iscsi]: what the iSCSI collector reads (reaper.kinds.iscsi.collector).

os-brick's own ``[os_brick]`` options are not listed here: they are os-brick's
(its ``os_brick`` oslo.config namespace, in the sample generator's configuration),
and listing them would import os-brick to build the sample.
"""
from __future__ import annotations

from oslo_config import cfg

iscsi_opts = [
    cfg.StrOpt("sysfs_root", default="/sys",
               help="Where sysfs is mounted (the iSCSI collector reads scsi_host, block "
                    "and device-mapper entries under it). Changed only for tests."),
    cfg.StrOpt("dev_root", default="/dev",
               help="Where /dev is (disk/by-path, disk/by-id, mapper). Changed only for "
                    "tests."),
    cfg.StrOpt("iscsiadm", default="iscsiadm",
               help="The iscsiadm command, looked up in PATH like os-brick does."),
    cfg.IntOpt("iscsiadm_timeout", default=60, min=1,
               help="Seconds before an iscsiadm listing counts as failed."),
]


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(iscsi_opts, group="iscsi")


def list_opts():
    return [("iscsi", iscsi_opts)]
