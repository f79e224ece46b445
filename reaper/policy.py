"""[reaper] options, frozen into a Policy value the pure planner and guards take."""
from __future__ import annotations

import dataclasses
from typing import Mapping

from oslo_config import cfg

from reaper.records import Action, Classification

CONF = cfg.CONF

_IGNORE = ("ignore", "do nothing and do not report it")
_LOG = ("log", "report it in the audit log, change nothing")
_SHUTDOWN = ("shutdown", "power the domain off, keep everything else")
_REAP = ("reap", "tear it down (domain, plumbing, volumes, files) in Nova's order")
_DOMAIN_ACTIONS = [_IGNORE, _LOG, _SHUTDOWN, _REAP]
_DIR_ACTIONS = [_IGNORE, _LOG, ("reap", "remove the directory (rename to _del, then delete)")]
_LOG_ONLY = [_IGNORE, _LOG]
_EVACUATING_ACTIONS = [_IGNORE, _LOG, (
    "shutdown", "power the guest off (virDomainDestroy); its definition, files, VIFs and "
                "volumes are kept")]

# Full help of the options whose short help below would not say enough.
_HELP = {
    Classification.EVACUATING: (
        "What to do with an 'evacuating' guest: a domain here whose instance is being "
        "evacuated from this host (the newest evacuation from this host is 'accepted' or "
        "'pre-migrating'), whether its row still names this host or already the "
        "destination. The destination is rebuilding the instance, on shared storage from "
        "the same disk: nova-compute's _destroy_evacuated_instances destroys such a guest "
        "at start-up, and two copies must never run. 'shutdown' powers it off at once "
        "(no grace period, not counted by the mass-destruction guard: nothing is "
        "destroyed; the power-off is re-checked against a fresh read of the migration "
        "right before it); its definition, files, VIFs and volumes stay. Once the "
        "evacuation is 'done' the guest is 'evacuated' (evacuated_action). If the "
        "evacuation fails ('error', 'failed') the guest stays as it is (stopped, if it "
        "was powered off) and is reported as 'evacuation_failed', never deleted."),
}

# The action options of the primary kind's classifications (reaper.kinds.instance
# describes them): classification -> (option name, default, choices). Other kinds
# define their own options and name them in their describe().
ACTION_OPTIONS: dict[Classification, tuple[str, str, list[str]]] = {
    Classification.EVACUATED: ("evacuated_action", "reap", _DOMAIN_ACTIONS),
    # Never more than a power-off: the evacuation may still fail, and then this guest
    # is the only copy.
    Classification.EVACUATING: ("evacuating_action", "shutdown", _EVACUATING_ACTIONS),
    Classification.RUNNING_DELETED: ("running_deleted_action", "reap", _DOMAIN_ACTIONS),
    # R4/R6 are the cases that destroyed whole hosts in Nova bug 1471887: never
    # offer anything beyond logging.
    Classification.UNKNOWN: ("unknown_domain_action", "log", _LOG_ONLY),
    Classification.FOREIGN: ("foreign_domain_action", "log", _LOG_ONLY),
    Classification.ORPHAN_DIR: ("orphan_dir_action", "reap", _DIR_ACTIONS),
    Classification.STALE_RESIZE: ("stale_resize_action", "reap", _DIR_ACTIONS),
    Classification.INTERRUPTED_DELETE: ("interrupted_delete_action", "reap", _DIR_ACTIONS),
}

reaper_opts = [
    cfg.BoolOpt("dry_run", default=False, mutable=True,
                help="Turn every action into 'log': report what would be done, change nothing."),
    *[
        cfg.StrOpt(name, default=default, choices=choices, mutable=True,
                   help=_HELP.get(cls, f"What to do with a '{cls.value}' finding."))
        for cls, (name, default, choices) in ACTION_OPTIONS.items()
    ],
    cfg.IntOpt("reclaim_instance_interval", default=0, min=0, mutable=True,
               help="Seconds after a soft delete before the instance is reclaimed "
                    "(as Nova's option of the same name; 0 disables reclaim)."),
    cfg.IntOpt("running_deleted_timeout", default=0, min=0, mutable=True,
               help="Seconds since deleted_at before a running deleted instance is reaped "
                    "(Nova's running_deleted_instance_timeout)."),
    cfg.IntOpt("grace_observations", default=2, min=1, mutable=True,
               help="Consecutive passes a resource must be classified the same way before "
                    "it is destroyed."),
    cfg.IntOpt("grace_seconds", default=300, min=0, mutable=True,
               help="Minimum time those observations must span."),
    cfg.IntOpt("max_destroy_per_pass", default=10, min=0, mutable=True,
               help="A pass that would destroy more instances than this destroys none "
                    "and waits for an operator's approve."),
    cfg.FloatOpt("max_destroy_fraction", default=0.5, min=0.0, max=1.0, mutable=True,
                 help="Likewise, as a fraction of the Nova-owned domains on the host."),
    cfg.IntOpt("approval_ttl", default=3600, min=60, mutable=True,
               help="Seconds an operator's approve of a blocked pass stays valid; a plan "
                    "approved and not run within this time must be approved again."),
    cfg.ListOpt("resource_kinds", default=["instance", "iscsi", "network", "services"],
                help="The resource kinds this agent reconciles, in order: names of "
                     "'reaper.resource_kinds' entry points. 'instance' (libvirt domains, "
                     "instance directories and the Nova DB reclaim) must come first; the "
                     "others add to its plan in this order, and the steps of a teardown "
                     "run in the teardown order whatever the order here (within one "
                     "phase, in this order). 'iscsi': leaked iSCSI sessions (R12) and the "
                     "volumes of teardowns; 'network': leaked VIFs (R11) and the VIFs of "
                     "teardowns (also off with the deprecated [network] enabled = false); "
                     "'services': the Neutron, Cinder and Placement steps of reclaims and "
                     "evacuations (each only when its section is configured) and the "
                     "instance's facts in every reclaim record. Leaving a kind out stops "
                     "its collection, rules and steps; a journaled teardown that still "
                     "holds one of its steps fails at that step, and is retried, until the "
                     "kind is enabled again. A further kind is one package with one entry "
                     "point (doc/adding-a-resource-kind.md). Changing it needs a restart."),
    cfg.StrOpt("instances_path_shared", default="auto", choices=["auto", "true", "false"],
               mutable=True,
               help="Whether instances_path is shared with other compute hosts (evacuated "
                    "instances' files are then kept). 'auto' decides from the filesystem "
                    "type; an unknown type keeps the files."),
]

CONF.register_opts(reaper_opts, group="reaper")


@dataclasses.dataclass(frozen=True)
class Policy:
    host: str
    # The node name nova-compute reports. Empty: libvirt's getHostname(), which the
    # pass fills in (reconcile) before the host identity guard reads it.
    hypervisor_hostname: str
    instances_path: str
    instance_name_template: str = "instance-%08x"
    # classification (records.Classification or a further kind's str value) -> action
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
    from reaper import config  # noqa: F401  (registers [DEFAULT] options)
    from reaper.kinds import manager
    if kinds is None:
        kinds = manager.KindManager([], manager._load(CONF, None))
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
