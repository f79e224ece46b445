"""iSCSI volumes in the reaper: one collector, one planner extension, one executor step.

Its options ([reaper] leaked_iscsi_action, [iscsi]) are in reaper.conf; [os_brick]
lock_path is os-brick's own. ``enable``
plugs the rest into a Reaper: ``reconcile.EXTRA_COLLECTORS["iscsi_session"]``,
``planner.EXTENSIONS`` (R12, the volume step of teardowns, R13 evidence),
``teardown.STEP_HANDLERS["disconnect_volumes"]`` and ``reaper.extras["iscsi"]``.
"""
from __future__ import annotations

import dataclasses

from oslo_concurrency import lockutils  # noqa: F401  ([oslo_concurrency] lock_path)

from reaper.conf import CONF
from reaper.inventory import iscsi as iscsi_inv
from reaper.records import Action, Classification, ResourceKind


def collect(reaper, conf=CONF):
    """The host's iSCSI state, plus the sessions an earlier disconnect found it could not
    log out by any means (kept in the state DB): those are reported, not retried."""
    from reaper.executor import volumes as vol_exec

    res = iscsi_inv.collect_from_conf(conf)
    notes = vol_exec.operator_notes(getattr(reaper, "state", None)) if res.ok else ()
    return dataclasses.replace(res, items=res.items + notes) if notes else res


def enable(reaper, conf=CONF):
    """Turn iSCSI support on for ``reaper`` (a reconcile.Reaper); returns it."""
    import os_brick

    from reaper import reconcile
    from reaper.executor import volumes as vol_exec
    from reaper.inventory import libvirt as libvirt_inv
    from reaper.planner import volumes as vol_plan

    os_brick.setup(conf)
    vol_exec.privileged_in_process()
    reconcile.EXTRA_COLLECTORS[iscsi_inv.KIND] = lambda r: collect(r, conf)
    reconcile.LEAK_KINDS[Classification.LEAKED_ISCSI] = ResourceKind.ISCSI_SESSION
    vol_plan.register()
    vol_exec.register()
    template = reaper.policy.instance_name_template
    reaper.extras["iscsi"] = vol_exec.default_handles(
        lambda: iscsi_inv.collect_from_conf(conf),
        lambda conn: libvirt_inv.collect_domains(conn, template))
    if Classification.LEAKED_ISCSI not in reaper.policy.actions:
        reaper.policy = dataclasses.replace(reaper.policy, actions={
            **reaper.policy.actions,
            Classification.LEAKED_ISCSI: Action(conf.reaper.leaked_iscsi_action)})
    return reaper
