"""What the Nova DB says: the rows of the view, and the reclaim's claim marker."""
from __future__ import annotations

import dataclasses
import datetime
from typing import Mapping

from reaper.objects.base import _frozen


@_frozen
class InstanceRow:
    id: int
    uuid: str
    host: str | None
    node: str | None
    vm_state: str | None
    task_state: str | None
    power_state: int | None
    deleted: int
    deleted_at: datetime.datetime | None
    display_name: str | None = None
    project_id: str | None = None
    user_id: str | None = None
    archived: bool = False      # found only in shadow_instances

    @property
    def is_deleted(self) -> bool:
        return self.deleted != 0 or self.archived

    @property
    def is_soft_deleted(self) -> bool:
        return self.deleted == 0 and self.vm_state == "soft-delete"

    @property
    def is_claimed(self) -> bool:
        """What a reclaim claim leaves, and also what Nova's own (force) delete of a
        soft-deleted instance looks like: only a ClaimMarker tells them apart."""
        return (self.deleted == 0 and not self.archived and self.vm_state == "soft-delete"
                and self.task_state == "deleting")


@_frozen
class MigrationRow:
    id: int
    uuid: str | None
    instance_uuid: str
    source_compute: str | None
    dest_compute: str | None
    source_node: str | None
    dest_node: str | None
    status: str | None
    migration_type: str | None
    deleted: int


@_frozen
class BdmRow:
    id: int
    instance_uuid: str
    volume_id: str | None
    source_type: str | None
    destination_type: str | None
    device_name: str | None
    delete_on_termination: bool
    connection_info: str | None
    attachment_id: str | None


@_frozen
class InfoCacheRow:
    instance_uuid: str
    network_info: str | None


@_frozen
class ComputeNodeRow:
    id: int
    uuid: str | None
    host: str | None
    hypervisor_hostname: str | None


@_frozen
class NovaView:
    """Everything the planner needs from Nova's DB, fetched in a fixed number of queries.

    ``instances`` holds rows for our host plus every uuid seen locally (deleted
    rows included); ``migrations`` those touching our host or the local uuids.
    """
    ok: bool
    instances: Mapping[str, InstanceRow] = dataclasses.field(default_factory=dict)
    migrations: tuple[MigrationRow, ...] = ()
    bdms: tuple[BdmRow, ...] = ()
    info_caches: Mapping[str, InfoCacheRow] = dataclasses.field(default_factory=dict)
    compute_nodes: tuple[ComputeNodeRow, ...] = ()
    # instance uuid -> the live ``reaper_claim`` system_metadata values of our host's
    # rows that are claimed (soft-delete, task_state 'deleting'); see ClaimMarker.
    claim_markers: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    queries: int = 0
    error: str | None = None
    # reaper.nova.changes.Fingerprint of exactly these rows, when asked for
    fingerprint: object | None = None


# The instance_system_metadata key of a reclaim claim. system_metadata is Nova's own,
# API-invisible key/value store per instance; Nova soft-deletes it with the instance
# and hard-deletes a key it removes, so the marker can leave no trace.
CLAIM_MARKER_KEY = "reaper_claim"


CLAIM_MARKER_MAX = 255          # instance_system_metadata.value is VARCHAR(255)


@_frozen
class ClaimMarker:
    """Who claimed a reclaim: ``<host>:<naive UTC ISO time>:<pass id>``.

    Written in the claim's transaction, so a claimed row tells by itself whether this
    host claimed it, even when the journal that drove the reclaim is lost. A host name
    has no ':' and a pass id has none either, so the time in between may.
    """
    host: str
    claimed_at: str
    pass_id: str

    @property
    def value(self) -> str:
        return f"{self.host}:{self.claimed_at}:{self.pass_id}"

    @classmethod
    def make(cls, host: str, now: datetime.datetime, pass_id: str) -> "ClaimMarker":
        return cls(host, now.replace(microsecond=0).isoformat(), pass_id or "-")

    @classmethod
    def parse(cls, value: str | None) -> "ClaimMarker | None":
        """None for anything not written by :meth:`value`."""
        if not value or ":" not in value:
            return None
        host, rest = value.split(":", 1)
        if ":" not in rest:
            return None
        claimed_at, pass_id = rest.rsplit(":", 1)
        if not host or not claimed_at or not pass_id:
            return None
        return cls(host, claimed_at, pass_id)
