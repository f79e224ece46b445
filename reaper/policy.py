"""[reaper] options, frozen into a Policy value the pure planner and guards take."""
from __future__ import annotations

import dataclasses
from typing import Mapping

from reaper.conf import CONF
from reaper.conf import reaper as conf_reaper
from reaper.objects.fields import Action, Classification

# The primary kind's classifications (reaper.kinds.instance describes them) -> the
# name of their [reaper] option (defined in reaper.conf.reaper). Other kinds name
# their options in their own describe().
ACTION_OPTIONS: dict[Classification, str] = {
    Classification.EVACUATED: "evacuated_action",
    Classification.EVACUATING: "evacuating_action",
    Classification.RUNNING_DELETED: "running_deleted_action",
    Classification.UNKNOWN: "unknown_domain_action",
    Classification.FOREIGN: "foreign_domain_action",
    Classification.ORPHAN_DIR: "orphan_dir_action",
    Classification.STALE_RESIZE: "stale_resize_action",
    Classification.INTERRUPTED_DELETE: "interrupted_delete_action",
}


def option_default(name: str) -> str:
    """The default of the [reaper] option ``name`` (an action option's default)."""
    return next(opt.default for opt in conf_reaper.ALL_OPTS if opt.dest == name)


@dataclasses.dataclass(frozen=True)
class Policy:
    host: str
    # The node name nova-compute reports. Empty: libvirt's getHostname(), which the
    # pass fills in (reconcile) before the host identity guard reads it.
    hypervisor_hostname: str
    instances_path: str
    instance_name_template: str = "instance-%08x"
    # classification (fields.Classification or a further kind's str value) -> action
    actions: Mapping[str, Action] = dataclasses.field(default_factory=dict)
    dry_run: bool = False
    reclaim_instance_interval: int = 0
    running_deleted_timeout: int = 0
    grace_observations: int = 2
    grace_seconds: int = 300
    max_destroy_per_pass: int = 10
    max_destroy_fraction: float = 0.5
    instances_path_shared: str = "auto"
    approval_ttl: int = 3600

    def action_for(self, cls: str) -> Action:
        return self.actions.get(cls, Action.LOG)


def default_actions() -> dict[str, Action]:
    """The default action of every classification of the installed kinds."""
    from reaper.kinds import manager
    return manager.default_actions()


def from_conf(conf=CONF, kinds=None) -> Policy:
    """The policy of ``conf``; the action options read are those ``kinds`` (a
    reaper.kinds.manager.KindManager) describe, by default every installed kind's."""
    from reaper.kinds import manager
    if kinds is None:
        kinds = manager.KindManager.installed(CONF)
    r = conf.reaper
    return Policy(
        host=conf.host,
        hypervisor_hostname=conf.hypervisor_hostname or "",
        instances_path=conf.instances_path,
        instance_name_template=conf.instance_name_template,
        actions={cls: Action(getattr(r, opt.name))
                 for cls, opt in kinds.action_options().items()},
        dry_run=r.dry_run,
        reclaim_instance_interval=r.reclaim_instance_interval,
        running_deleted_timeout=r.running_deleted_timeout,
        grace_observations=r.grace_observations,
        grace_seconds=r.grace_seconds,
        max_destroy_per_pass=r.max_destroy_per_pass,
        max_destroy_fraction=r.max_destroy_fraction,
        instances_path_shared=r.instances_path_shared,
        approval_ttl=r.approval_ttl,
    )
