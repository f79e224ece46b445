"""Network plumbing in the reaper: two collectors, one planner extension, one step.

Its options ([reaper] leaked_vif_action, [network], [ovs]) are in reaper.conf.
``enable`` plugs the rest into a Reaper:
``reconcile.EXTRA_COLLECTORS["vif"]`` and ``["ovs_port"]``, ``planner.EXTENSIONS``
(VIFs of instance teardowns, R11), ``planner.REVERIFIERS[leaked_vif]``,
``reconcile.LEAK_KINDS[leaked_vif]``, ``teardown.STEP_HANDLERS["unplug_vifs"]`` and
``reaper.extras["network"]`` (a long-lived netlink socket and OVSDB session).

The registrations are process-wide; a Reaper without ``extras["network"]`` (one
that was never enabled) gets "disabled" collector results, and the planner
extension then changes nothing.
"""
from __future__ import annotations

import dataclasses

from reaper.conf import CONF
from reaper.conf import reaper as conf_reaper
from reaper.inventory import network as net_inv
from reaper.inventory import ovs as ovs_inv
from reaper.planner import network as net_plan
from reaper.records import Action, Classification, CollectorResult, ResourceKind


def collect_devices(reaper) -> CollectorResult:
    handles = reaper.extras.get("network")
    if handles is None:
        return CollectorResult(net_inv.KIND, True, (), error=net_plan.DISABLED)
    return net_inv.collect(handles.netlink)


def collect_ovs_ports(reaper) -> CollectorResult:
    handles = reaper.extras.get("network")
    if handles is None:
        return CollectorResult(ovs_inv.KIND, True, (), error=net_plan.DISABLED)
    return ovs_inv.collect(handles.ovs)


def handles_from_conf(conf=CONF, instance_name_template: str | None = None):
    from reaper.executor import network as net_exec
    from reaper.inventory import libvirt as libvirt_inv

    template = instance_name_template or conf.instance_name_template
    return net_exec.NetworkHandles(
        netlink=net_inv.Netlink(conf.network.namespace),
        ovs=ovs_inv.OvsHandle(conf.ovs.connection, conf.ovs.integration_bridge,
                              conf.ovs.timeout),
        domains=lambda conn: libvirt_inv.collect_domains(conn, template))


def register() -> None:
    """The process-wide registrations (idempotent)."""
    from reaper import reconcile
    from reaper.executor import network as net_exec

    reconcile.EXTRA_COLLECTORS[net_inv.KIND] = collect_devices
    reconcile.EXTRA_COLLECTORS[ovs_inv.KIND] = collect_ovs_ports
    reconcile.LEAK_KINDS[Classification.LEAKED_VIF] = ResourceKind.VIF
    net_plan.register()
    net_exec.register()


def enable(reaper, conf=CONF, handles=None):
    """Turn network plumbing on for ``reaper`` (a reconcile.Reaper); returns it.

    ``handles`` (a reaper.executor.network.NetworkHandles) defaults to the
    configured namespace and OVSDB server.
    """
    if "network" not in conf_reaper.enabled_resource_kinds(conf):
        return reaper       # [reaper] resource_kinds, or the deprecated [network] enabled
    register()
    reaper.extras["network"] = handles or handles_from_conf(
        conf, reaper.policy.instance_name_template)
    if Classification.LEAKED_VIF not in reaper.policy.actions:
        reaper.policy = dataclasses.replace(reaper.policy, actions={
            **reaper.policy.actions,
            Classification.LEAKED_VIF: Action(conf.reaper.leaked_vif_action)})
    return reaper
