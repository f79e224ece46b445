"""[reaper] options: the policy, the pass, the agent's timers and outputs, the kinds.

Every option of the group, in the order the sample configuration lists them. The
classification action options are plain definitions here; reaper.policy maps each
classification to its option's name (``policy.ACTION_OPTIONS``).
"""
from __future__ import annotations

from oslo_config import cfg

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

_EVACUATING_HELP = (
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
    "was powered off) and is reported as 'evacuation_failed', never deleted.")

# What to do with each classification of finding (reaper.policy reads them by name).
action_opts = [
    cfg.StrOpt("evacuated_action", default="reap", choices=_DOMAIN_ACTIONS,
               mutable=True,
               help="What to do with a 'evacuated' finding."),
    # Never more than a power-off: the evacuation may still fail, and then this guest
    # is the only copy.
    cfg.StrOpt("evacuating_action", default="shutdown", choices=_EVACUATING_ACTIONS,
               mutable=True,
               help=_EVACUATING_HELP),
    cfg.StrOpt("running_deleted_action", default="reap", choices=_DOMAIN_ACTIONS,
               mutable=True,
               help="What to do with a 'running_deleted' finding."),
    # R4/R6 are the cases that destroyed whole hosts in Nova bug 1471887: never
    # offer anything beyond logging.
    cfg.StrOpt("unknown_domain_action", default="log", choices=_LOG_ONLY,
               mutable=True,
               help="What to do with a 'unknown' finding."),
    cfg.StrOpt("foreign_domain_action", default="log", choices=_LOG_ONLY,
               mutable=True,
               help="What to do with a 'foreign' finding."),
    cfg.StrOpt("orphan_dir_action", default="reap", choices=_DIR_ACTIONS,
               mutable=True,
               help="What to do with a 'orphan_dir' finding."),
    cfg.StrOpt("stale_resize_action", default="reap", choices=_DIR_ACTIONS,
               mutable=True,
               help="What to do with a 'stale_resize' finding."),
    cfg.StrOpt("interrupted_delete_action", default="reap", choices=_DIR_ACTIONS,
               mutable=True,
               help="What to do with a 'interrupted_delete' finding."),
]

policy_opts = [
    cfg.BoolOpt("dry_run", default=False, mutable=True,
                help="Turn every action into 'log': report what would be done, change nothing."),
    *action_opts,
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
    cfg.StrOpt("instances_path_shared", default="auto", choices=["auto", "true", "false"],
               mutable=True,
               help="Whether instances_path is shared with other compute hosts (evacuated "
                    "instances' files are then kept). 'auto' decides from the filesystem "
                    "type; an unknown type keeps the files."),
]

# One pass (reaper.reconcile)
pass_opts = [
    cfg.FloatOpt("pass_lock_timeout", default=300.0, min=0.0, mutable=True,
                 help="Seconds a pass waits for the host's pass lock (a file under "
                      "state_path shared by reaper-agent, reaper-manage and the nova-log "
                      "watcher: one pass per host at a time) while another pass holds "
                      "it. Then it gives up as busy: reaper-manage and reaper-agent --once "
                      "exit 75 (EX_TEMPFAIL), a timer pass is skipped until its next turn. "
                      "RPC-started passes wait [rpc] pass_wait_timeout instead; "
                      "reaper-manage --lock-timeout overrides it."),
    cfg.FloatOpt("state_db_timeout", default=30.0, min=0.0,
                 help="Seconds a write to the state DB waits while another process holds "
                      "its SQLite write lock. Past that the pass trips the "
                      "'state_unavailable' guard (exit 1) and acts on nothing it cannot "
                      "journal."),
    cfg.IntOpt("full_view_interval", default=86400, min=0,
               help="Longest time, in seconds, a pass of the agent may go without reading "
                    "the whole Nova DB view of this host. In between, an untargeted pass "
                    "whose locally seen instances are the same as at the last full read "
                    "first runs one small change check (row counts and a hash of the "
                    "columns the view reads from the same instances, migrations, compute "
                    "nodes and claim markers; every deep_check_interval also of the block "
                    "device mappings and network info caches); when nothing changed, "
                    "and the rules applied now to the rows read last time, this pass's "
                    "inventory and the current policy plan no teardown at all, the pass "
                    "ends there: it reports its findings, records no observation and acts "
                    "on nothing. Anything else (a change, a teardown to plan, a journaled "
                    "teardown, a new or vanished domain or directory) reads the whole "
                    "view as before, so an action is only ever planned from a full read "
                    "and re-checked at act time. With the deep checks on, this only "
                    "bounds how long a change both checks miss (a CRC32 collision, about "
                    "1 in 2**32) can wait; without them (deep_check_interval 0, or not "
                    "smaller than this), it also bounds how long a change of block device "
                    "mappings or info caches alone (a volume or port detached) waits. 0 "
                    "reads the whole view at every pass. Measured on the monotonic clock; "
                    "each process starts with a full read (reaper-manage always reads it "
                    "whole)."),
    cfg.IntOpt("deep_check_interval", default=3600, min=0,
               help="Seconds between change checks that also hash every block device "
                    "mapping and network info cache the view reads (a deep check: on a "
                    "host of 1,000 instances about 3 to 4 times the cost of the light "
                    "one). A change of those alone (a volume or port detached) is seen by "
                    "the first pass at least this many seconds after the last full read "
                    "or deep check; an unchanged deep check lets the pass end as an "
                    "unchanged light one does (no observation, no action). 0 (or not "
                    "smaller than full_view_interval): no deep checks, and such a change "
                    "waits for the next full read."),
]

# The audit log (reaper.audit)
audit_opts = [
    cfg.StrOpt("audit_log", default="/var/log/reaper/audit.log",
               help="JSON-lines audit log (one record per finding, action, tripped guard "
                    "and pass summary). Created mode 0640 (its directory 0750 when the "
                    "reaper creates it); an existing file keeps a stricter mode and loses "
                    "any permission beyond 0640. Rotate it by renaming (logrotate's "
                    "create, as etc/logrotate.d/reaper does, with delaycompress; never "
                    "copytruncate): the file is reopened before the next record. The "
                    "normal log gets one short line per record. Empty: no file, and the "
                    "normal log gets the whole JSON records instead. Changing it needs a "
                    "restart."),
]

# libvirt calls (reaper.kinds.instance.domain)
executor_opts = [
    cfg.IntOpt("libvirt_retries", default=3, min=1,
               help="Attempts for a libvirt call that fails with a transient error."),
    cfg.FloatOpt("libvirt_retry_wait", default=1.0, min=0.0,
                 help="Seconds between those attempts (doubling)."),
]

# The agent's timers (reaper.agent.service)
agent_opts = [
    cfg.IntOpt("reconcile_interval", default=600, mutable=True,
               help="Seconds between reconcile (reap) passes after the init_host pass; "
                    "negative disables them."),
    cfg.IntOpt("reclaim_poll_interval", default=300, mutable=True,
               help="Seconds between reclaim passes (expired soft-deleted instances); "
                    "negative disables them. Reclaim also happens in reconcile passes. A "
                    "reclaim pass first reads only this host's soft-deleted rows (one "
                    "statement) and goes on to the whole pass only when one of them is "
                    "expired or claimed; with reclaim_instance_interval = 0 it reads "
                    "nothing (as nova-compute's _reclaim_queued_deletes): this host's "
                    "stranded claims are then released by the reconcile passes."),
    cfg.FloatOpt("interval_jitter", default=0.1, min=0.0, max=1.0, mutable=True,
                 help="Each periodic pass starts up to this fraction of its interval late, "
                      "at random, so a fleet of hosts does not query the Nova DB in "
                      "lockstep."),
]

# iSCSI volumes (R12)
LEAKED_ISCSI_CHOICES = [
    ("ignore", "do nothing and do not report it"),
    ("log", "report it in the audit log, change nothing"),
    ("reap", "disconnect it through os-brick: flush and remove the leaked LUN's devices; "
             "log out and delete the node record only when no other LUN of the target is "
             "in use. A session without a node record is logged out by its id "
             "(iscsiadm -m session -r SID -u); one that still cannot be logged out is "
             "reported as needing an operator and not retried"),
]
leaked_iscsi_opts = [
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

# Network plumbing (R11)
LEAKED_VIF_CHOICES = [
    ("ignore", "do nothing and do not report it"),
    ("log", "report it in the audit log, change nothing"),
    ("reap", "unplug it as os-vif does: delete the qbr bridge, the OVS port (qvo or "
             "tap) and the qvo/qvb veth pair or the tap"),
]
leaked_vif_opts = [
    cfg.StrOpt("leaked_vif_action", default="reap", choices=LEAKED_VIF_CHOICES,
               mutable=True,
               help="What to do with a 'leaked_vif' finding (R11: tap/qbr/qvb/qvo devices "
                    "or integration bridge ports of a Neutron port that no live or "
                    "in-flight instance of this host and no domain uses)."),
]

# Metrics file (reaper.metrics)
metrics_opts = [
    cfg.StrOpt("metrics_file", default="",
               help="Write pass and action metrics here in Prometheus text format after "
                    "every pass, for node_exporter's textfile collector (e.g. "
                    "/var/lib/prometheus/node-exporter/reaper.prom; the name must end in "
                    ".prom). The file is replaced atomically through a randomly named "
                    "temporary file in the same directory and is mode 0644. Empty: no "
                    "metrics file. Changing it needs a restart."),
]

# The reaper's own notifications (reaper.notifications)
notification_opts = [
    cfg.IntOpt("notification_queue_size", default=10000, min=1,
               help="Notifications waiting for the broker at most; beyond it new ones are "
                    "dropped (and logged): the audit log still has every record. Changing "
                    "it needs a restart."),
]

KINDS_HELP = (
    "The resource kinds this agent looks after, in order: names of entry points of "
    "the 'reaper.resource_kinds' group. Kinds' collectors run and their findings are "
    "planned in this order; the steps of a teardown always run in Nova's teardown "
    "order (claim, destroy, unplug, disconnect, delete files, undefine, services, "
    "finalize), and in this order only within one of those phases. A name that is "
    "not installed is a configuration error. 'instance': libvirt domains, instance directories and the Nova DB "
    "reclaim (rules R1-R10 and R13); the other kinds build on it, so it comes first. "
    "'iscsi': iSCSI sessions, LUNs and node records (R12, the volume disconnect step "
    "of teardowns). 'network': tap/qbr/qvb/qvo devices and integration bridge ports "
    "(R11, the VIF unplug step of teardowns). 'services': the Neutron, Cinder and "
    "Placement steps of reclaims and evacuations (only for the sections configured). "
    "Order matters: iSCSI comes before network, as the passes have always run them. "
    "Leave a kind out to turn it off (for example 'network' on hosts without Open "
    "vSwitch). [network] enabled = false still turns the network kind off while that "
    "deprecated option exists. Changing it needs a restart.")
kinds_opts = [
    cfg.ListOpt("resource_kinds", default=["instance", "iscsi", "network", "services"],
                help=KINDS_HELP),
]

ALL_OPTS = (policy_opts + pass_opts + audit_opts + executor_opts + agent_opts
            + leaked_iscsi_opts + leaked_vif_opts + metrics_opts + notification_opts
            + kinds_opts)


def register_opts(conf: cfg.ConfigOpts) -> None:
    conf.register_opts(ALL_OPTS, group="reaper")


def list_opts():
    return [("reaper", ALL_OPTS)]
