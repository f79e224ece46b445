"""iSCSI volumes in the reaper: one collector, one planner extension, one executor step.

Importing this module registers the options ([reaper] leaked_iscsi_action, [iscsi]
via reaper.inventory.iscsi; [os_brick] lock_path is os-brick's own). ``enable``
plugs the rest into a Reaper: ``reconcile.EXTRA_COLLECTORS["iscsi_session"]``,
``planner.EXTENSIONS`` (R12, the volume step of teardowns, R13 evidence),
``teardown.STEP_HANDLERS["disconnect_volumes"]`` and ``reaper.extras["iscsi"]``.
"""
from __future__ import annotations

import dataclasses

from oslo_concurrency import lockutils  # noqa: F401  ([oslo_concurrency] lock_path)
from oslo_config import cfg

from reaper import policy as policy_mod
from reaper.inventory import iscsi as iscsi_inv
from reaper.records import Action, Classification, ResourceKind

CONF = cfg.CONF

LEAKED_ISCSI_CHOICES = [
    ("ignore", "do nothing and do not report it"),
    ("log", "report it in the audit log, change nothing"),
    ("reap", "disconnect it through os-brick: flush and remove the leaked LUN's devices; "
             "log out and delete the node record only when no other LUN of the target is "
             "in use. A session without a node record is logged out by its id "
             "(iscsiadm -m session -r SID -u); one that still cannot be logged out is "
             "reported as needing an operator and not retried"),
]
reaper_opts = [
    cfg.StrOpt("leaked_iscsi_action", default="log", choices=LEAKED_ISCSI_CHOICES,
               mutable=True,
               help="What to do with a 'leaked_iscsi' finding (R12: an iSCSI session LUN, "
                    "empty session or node record that no live BDM and no domain uses). A "
                    "LUN is in use, and kept, when it, any of its partitions or any device "
                    "stacked on them (dm, md, LVM) is open, mounted, swap, held or named in "
                    "a domain's XML (by any /dev path: by-path and by-id links with -partN, "
                    "mapper and LVM names, or whatever the source resolves to). Sessions of "
                    "the host itself (the target the firmware booted from, per the iBFT, or "
                    "one carrying a mounted filesystem or swap of the host) and firmware "
                    "sessions are never touched nor reported."),
]
CONF.register_opts(reaper_opts, group="reaper")
# Policy.from_conf and default_actions read the action of every classification here.
policy_mod.ACTION_OPTIONS.setdefault(
    Classification.LEAKED_ISCSI, ("leaked_iscsi_action", "log", LEAKED_ISCSI_CHOICES))

iscsi_opts = iscsi_inv.iscsi_opts


def list_opts():
    from os_brick import opts as brick_opts
    return [("iscsi", iscsi_opts), *brick_opts.list_opts()]


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
