"""Network plumbing in the reaper: two collectors, one planner extension, one step.

Importing this module registers the options ([reaper] leaked_vif_action, [network]
namespace via reaper.inventory.network, [ovs] connection / integration_bridge /
timeout via reaper.inventory.ovs). ``enable`` plugs the rest into a Reaper:
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

from oslo_config import cfg

from reaper import policy as policy_mod
from reaper.inventory import network as net_inv
from reaper.inventory import ovs as ovs_inv
from reaper.planner import network as net_plan
from reaper.records import Action, Classification, CollectorResult, ResourceKind

CONF = cfg.CONF

LEAKED_VIF_CHOICES = [
    ("ignore", "do nothing and do not report it"),
    ("log", "report it in the audit log, change nothing"),
    ("reap", "unplug it as os-vif does: delete the qbr bridge, the OVS port (qvo or "
             "tap) and the qvo/qvb veth pair or the tap"),
]
reaper_opts = [
    cfg.StrOpt("leaked_vif_action", default="reap", choices=LEAKED_VIF_CHOICES,
               mutable=True,
               help="What to do with a 'leaked_vif' finding (R11: tap/qbr/qvb/qvo devices "
                    "or integration bridge ports of a Neutron port that no live or "
                    "in-flight instance of this host and no domain uses)."),
]
CONF.register_opts(reaper_opts, group="reaper")
# Policy.from_conf and default_actions read the action of every classification here.
policy_mod.ACTION_OPTIONS.setdefault(
    Classification.LEAKED_VIF, ("leaked_vif_action", "reap", LEAKED_VIF_CHOICES))


def list_opts():
    return [("network", net_inv.network_opts), ("ovs", ovs_inv.ovs_opts)]


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
    if not conf.network.enabled:
        return reaper
    register()
    reaper.extras["network"] = handles or handles_from_conf(
        conf, reaper.policy.instance_name_template)
    if Classification.LEAKED_VIF not in reaper.policy.actions:
        reaper.policy = dataclasses.replace(reaper.policy, actions={
            **reaper.policy.actions,
            Classification.LEAKED_VIF: Action(conf.reaper.leaked_vif_action)})
    return reaper
