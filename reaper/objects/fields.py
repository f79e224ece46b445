"""Enumerations shared by every stage: directory kinds, classifications, actions, audit resource kinds."""
from __future__ import annotations

import enum


class DirKind(str, enum.Enum):
    INSTANCE = "instance"      # <uuid>
    RESIZE = "resize"          # <uuid>_resize
    DELETING = "del"           # <uuid>_del


class Classification(str, enum.Enum):
    LIVE = "live"
    EVACUATED = "evacuated"
    IN_FLIGHT = "in_flight"
    FOREIGN = "foreign"
    RUNNING_DELETED = "running_deleted"
    UNKNOWN = "unknown"
    RECLAIMABLE = "reclaimable"
    # a power-off ahead of an evacuation that is still running (accepted, pre-migrating)
    EVACUATING = "evacuating"
    # the newest evacuation from this host failed: its guest stays as it is, reported
    EVACUATION_FAILED = "evacuation_failed"
    # a reclaim this host claimed (its marker) that no journal entry drives any more,
    # and that no longer justifies a reclaim: the claim is released
    STRANDED_CLAIM = "stranded_claim"
    # a claimed row (soft-delete, task_state 'deleting') this host cannot prove is
    # its own claim (no marker: e.g. Nova's force-delete; another host's marker)
    FOREIGN_CLAIM = "foreign_claim"
    ORPHAN_DIR = "orphan_dir"
    STALE_RESIZE = "stale_resize"
    INTERRUPTED_DELETE = "interrupted_delete"
    ATTACHMENT_DRIFT = "attachment_drift"
    LEAKED_ISCSI = "leaked_iscsi"
    LEAKED_VIF = "leaked_vif"
    # not yet actionable: waiting for a timeout / interval to pass
    PENDING = "pending"


class Action(str, enum.Enum):
    NONE = "none"
    IGNORE = "ignore"
    LOG = "log"
    SHUTDOWN = "shutdown"
    REAP = "reap"
    RECLAIM = "reclaim"
    RELEASE = "release"         # give a stranded claim back to Nova (task_state NULL)

    @property
    def destructive(self) -> bool:
        return self in (Action.SHUTDOWN, Action.REAP, Action.RECLAIM)


class ResourceKind(str, enum.Enum):
    DOMAIN = "domain"
    INSTANCE_DIR = "instance_dir"
    VIF = "vif"
    OVS_PORT = "ovs_port"
    ISCSI_SESSION = "iscsi_session"
    VOLUME_ATTACHMENT = "volume_attachment"
    INSTANCE = "instance"       # a reclaim with nothing left on the host but the row


# Migration statuses, in two senses the rules and the view must not confuse.
# ENDED: nothing more happens to the migration on either host ('done' included: an
# evacuation the destination finished). RELEASED: the migration no longer holds
# anything on either host: 'done' is NOT in it (an evacuation whose source has not
# cleaned up yet still holds the source's copy), nor 'finished' (a resize awaiting
# confirm/revert), nor any running status.
RELEASED_MIGRATION_STATUSES = ("completed", "confirmed", "reverted", "error", "failed",
                               "cancelled")
ENDED_MIGRATION_STATUSES = frozenset({*RELEASED_MIGRATION_STATUSES, "done"})


class StepStatus(str, enum.Enum):
    """A step's status in the journal (``journal_steps.status``): written before the
    step runs (STARTED) and after it (DONE or FAILED). The values are the journal's
    text, so rows written by earlier versions compare equal to these members and are
    read as plain text, never parsed."""
    STARTED = "started"
    DONE = "done"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value
