"""The ``network`` kind: host network plumbing (tap/qbr/qvb/qvo devices, OVS ports).

Two collectors (netlink devices of ``[network] namespace``, ports of the integration
bridge over OVSDB), one planner (the VIFs of instance teardowns, and R11, leaked
VIFs: ``rules``), one step (``unplug_vifs``, after the guest is destroyed:
``unplug``). The long-lived handles (a netlink socket and an OVSDB session) are
opened by ``open`` and closed by ``close``.

Its options ([reaper] leaked_vif_action, [network], [ovs]) are in reaper.conf. The
deprecated ``[network] enabled = false``
keeps the kind off, as leaving it out of ``[reaper] resource_kinds`` does.
"""
from __future__ import annotations


from reaper.conf import CONF
from reaper.kinds import ActionOption, KindInfo, Phase, ResourceKindPlugin, host_teardown
from reaper.kinds.network import collector as net_inv
from reaper.kinds.network import ovs as ovs_inv
from reaper.kinds.network import rules as net_plan
from reaper.objects.fields import Classification, ResourceKind
from reaper.objects.host import CollectorResult
from reaper.objects.step import StepResult

NAME = "network"
UNPLUG = "unplug_vifs"


def collect_devices(handles) -> CollectorResult:
    if handles is None:
        return CollectorResult(net_inv.KIND, True, (), error=net_plan.DISABLED)
    return net_inv.collect(handles.netlink)


def collect_ovs_ports(handles) -> CollectorResult:
    if handles is None:
        return CollectorResult(ovs_inv.KIND, True, (), error=net_plan.DISABLED)
    return ovs_inv.collect(handles.ovs)


def handles_from_conf(conf=CONF, instance_name_template: str | None = None):
    from reaper.kinds.network import unplug as net_exec
    from reaper.kinds.instance import libvirt as libvirt_inv

    template = instance_name_template or conf.instance_name_template
    return net_exec.NetworkHandles(
        netlink=net_inv.Netlink(conf.network.namespace),
        ovs=ovs_inv.OvsHandle(conf.ovs.connection, conf.ovs.integration_bridge,
                              conf.ovs.timeout),
        domains=lambda conn: libvirt_inv.collect_domains(conn, template))


class NetworkKind(ResourceKindPlugin):
    """``handles`` (an unplug.NetworkHandles) replaces the configured namespace and
    OVSDB server (tests); ``instance_name_template`` defaults to the configured one."""

    def __init__(self, conf, handles=None, instance_name_template: str | None = None):
        super().__init__(conf)
        self.handles = handles
        self._template = instance_name_template

    def describe(self) -> KindInfo:
        return KindInfo(
            name=NAME, collectors=(net_inv.KIND, ovs_inv.KIND),
            actions={Classification.LEAKED_VIF: ActionOption("leaked_vif_action", "reap")},
            leaks={Classification.LEAKED_VIF: ResourceKind.VIF},
            steps={UNPLUG: Phase.UNPLUG})

    def enabled(self) -> bool:
        return bool(self.conf.network.enabled)

    def open(self) -> None:
        if self.handles is None:
            self.handles = handles_from_conf(self.conf, self._template)

    def close(self) -> None:
        h, self.handles = self.handles, None
        if h is not None:
            try:
                h.close()
            except Exception:   # noqa: BLE001 - close never raises
                pass

    def collect(self, reaper, conn) -> dict[str, CollectorResult]:
        out = {}
        for kind, collect in ((net_inv.KIND, collect_devices), (ovs_inv.KIND, collect_ovs_ports)):
            try:
                out[kind] = collect(self.handles)
            except Exception as e:  # noqa: BLE001 - a failed collector marks its kind only
                out[kind] = CollectorResult(kind, False, error=str(e))
        return out

    def plan(self, ctx):
        return net_plan.extend(ctx)

    def steps(self, plan):
        return [(Phase.UNPLUG, UNPLUG)] if plan.vifs and host_teardown(plan) else []

    def touches(self, plan) -> set[str]:
        return {net_inv.KIND, ovs_inv.KIND} if plan.vifs else set()

    def reverify(self, plan, row, migrations, policy, now):
        return net_plan.reverify_leak(plan, row, migrations, policy, now)

    def run_step(self, ctx, step, plan) -> StepResult:
        if step != UNPLUG:
            raise ValueError(f"unknown step {step}")
        from reaper.kinds.network import unplug as net_exec
        return net_exec.unplug_vifs(ctx, plan, self.handles)


def enable(reaper, conf=CONF, handles=None):
    """Turn network plumbing on for ``reaper`` (a reconcile.Reaper built piecewise, as
    tests do); returns it. ``handles`` defaults to the configured namespace and OVSDB
    server. build_from_conf enables the kind from ``[reaper] resource_kinds``."""
    if not conf.network.enabled:
        return reaper
    kind = NetworkKind(conf, handles, reaper.policy.instance_name_template)
    kind.open()
    return reaper.add_kind(kind, conf)
