"""Every option the reaper registers, for oslo-config-generator (entry point oslo.config.opts)."""
from __future__ import annotations

import itertools


def list_opts():
    from reaper import audit, config, metrics, notifications, nova_notify, policy, reconcile
    from reaper.kinds.iscsi import plugin as volume_wiring
    from reaper.kinds.network import plugin as network_wiring
    from reaper.kinds.services import plugin as service_wiring
    from reaper.agent import service
    from reaper.executor import domain
    from reaper.inventory import libvirt
    from reaper.nova import db
    from reaper.rpc import server as rpc_server

    return [
        ("DEFAULT", itertools.chain(config.default_opts, reconcile.default_opts)),
        ("database", db.database_opts),
        ("api_database", db.api_database_opts),
        ("libvirt", libvirt.libvirt_opts),
        ("rpc", rpc_server.rpc_opts),
        ("reaper", itertools.chain(policy.reaper_opts, reconcile.pass_opts, audit.audit_opts,
                                   domain.executor_opts, service.agent_opts,
                                   volume_wiring.reaper_opts, network_wiring.reaper_opts,
                                   metrics.metrics_opts, notifications.notification_opts)),
        ("notifications", nova_notify.notify_opts),
        *volume_wiring.list_opts(),
        *network_wiring.list_opts(),
        *service_wiring.list_opts(),
    ]
