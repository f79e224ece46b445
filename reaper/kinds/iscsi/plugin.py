"""The ``iscsi`` kind: iSCSI sessions and the volumes of teardowns.

One collector (``collector``: sysfs, /dev, the node records, plus the sessions an
earlier disconnect could not log out), one planner (``rules``: R12, leaked iSCSI, the
volume part of teardowns, R13 evidence), one step (``disconnect_volumes`` through
os-brick: ``disconnect``). ``open`` sets os-brick up (``os_brick.setup``, in-process
privileged calls for a root agent).

Its options ([reaper] leaked_iscsi_action, [iscsi]) are in reaper.conf; [os_brick]
lock_path is os-brick's own.
"""
from __future__ import annotations

import dataclasses

from oslo_concurrency import lockutils  # noqa: F401  ([oslo_concurrency] lock_path)

from reaper.conf import CONF
from reaper.kinds import ActionOption, KindInfo, Phase, ResourceKindPlugin, host_teardown
from reaper.kinds.iscsi import collector as iscsi_inv
from reaper.objects.fields import Classification, ResourceKind
from reaper.objects.host import CollectorResult
from reaper.objects.step import StepResult

NAME = "iscsi"
DISCONNECT = "disconnect_volumes"

def collect(reaper, conf=CONF):
    """The host's iSCSI state, plus the sessions an earlier disconnect found it could not
    log out by any means (kept in the state DB): those are reported, not retried."""
    from reaper.kinds.iscsi import disconnect as vol_exec

    res = iscsi_inv.collect_from_conf(conf)
    notes = vol_exec.operator_notes(getattr(reaper, "state", None)) if res.ok else ()
    return dataclasses.replace(res, items=res.items + notes) if notes else res


class IscsiKind(ResourceKindPlugin):
    """``handles`` (a disconnect.Handles) replaces os-brick's connector and the
    configured collector (tests)."""

    def __init__(self, conf, handles=None, instance_name_template: str | None = None):
        super().__init__(conf)
        self.handles = handles
        self._template = instance_name_template

    def describe(self) -> KindInfo:
        return KindInfo(
            name=NAME, collectors=(iscsi_inv.KIND,),
            actions={Classification.LEAKED_ISCSI: ActionOption("leaked_iscsi_action", "log")},
            leaks={Classification.LEAKED_ISCSI: ResourceKind.ISCSI_SESSION},
            steps={DISCONNECT: Phase.DISCONNECT})

    def open(self) -> None:
        import os_brick

        from reaper.kinds.instance import libvirt as libvirt_inv
        from reaper.kinds.iscsi import disconnect as vol_exec
        os_brick.setup(self.conf)
        vol_exec.privileged_in_process()
        if self.handles is None:
            conf = self.conf
            template = self._template or conf.instance_name_template
            self.handles = vol_exec.default_handles(
                lambda: iscsi_inv.collect_from_conf(conf),
                lambda conn: libvirt_inv.collect_domains(conn, template))

    def collect(self, reaper, conn) -> dict:
        try:
            res = collect(reaper, self.conf)
        except Exception as e:  # noqa: BLE001 - a failed collector marks its kind only
            res = CollectorResult(iscsi_inv.KIND, False, error=str(e))
        return {iscsi_inv.KIND: res}

    def plan(self, ctx):
        from reaper.kinds.iscsi import rules as vol_plan
        return vol_plan.extend(ctx)

    def steps(self, plan):
        return [(Phase.DISCONNECT, DISCONNECT)] if plan.volumes and host_teardown(plan) else []

    def touches(self, plan) -> set[str]:
        return {iscsi_inv.KIND} if plan.volumes else set()

    def reverify(self, plan, row, migrations, policy, now):
        from reaper.kinds.iscsi import rules as vol_plan
        return vol_plan.reverify_leak(plan, row, migrations, policy, now)

    def run_step(self, ctx, step, plan) -> StepResult:
        if step != DISCONNECT:
            raise ValueError(f"unknown step {step}")
        from reaper.kinds.iscsi import disconnect as vol_exec
        return vol_exec.disconnect_volumes(ctx, plan, self.handles)


def enable(reaper, conf=CONF, handles=None):
    """Turn iSCSI support on for ``reaper`` (a reconcile.Reaper built piecewise, as
    tests do); returns it. build_from_conf enables the kind from ``[reaper]
    resource_kinds``."""
    kind = IscsiKind(conf, handles, reaper.policy.instance_name_template)
    kind.open()
    return reaper.add_kind(kind, conf)
