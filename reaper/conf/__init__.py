"""Every option of the reaper, in one package (Nova's ``nova/conf`` layout).

One leaf module per option group (``reaper.conf.reaper`` for ``[reaper]``,
``reaper.conf.database`` for ``[database]`` and ``[api_database]``...), each with
``register_opts(conf)`` and ``list_opts()``, importing only oslo.config (the
services' sections also keystoneauth1's loading helpers). Importing this package
registers them all on ``cfg.CONF`` and imports no other module of the reaper, so
any module may ``from reaper.conf import CONF`` without an import cycle; no module
outside this package (and the programs' command-line options in ``reaper.cmd``)
defines an option. ``reaper.conf.opts`` lists them for oslo-config-generator.
"""
from __future__ import annotations

from oslo_config import cfg

from reaper.conf import database
from reaper.conf import default
from reaper.conf import iscsi
from reaper.conf import libvirt
from reaper.conf import network
from reaper.conf import notifications
from reaper.conf import ovs
from reaper.conf import reaper
from reaper.conf import rpc
from reaper.conf import services

CONF = cfg.CONF

# Registration order: [DEFAULT] first, then the groups.
LEAVES = (default, database, libvirt, rpc, reaper, network, ovs, iscsi, notifications,
          services)


def register_opts(conf: cfg.ConfigOpts) -> None:
    """Register every option of the reaper on ``conf`` (a private ConfigOpts of a
    program or a test; ``CONF`` gets them on import)."""
    for leaf in LEAVES:
        leaf.register_opts(conf)


register_opts(CONF)
