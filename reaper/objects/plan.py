"""What the planner decides: findings, teardown plans, guard results, the plan."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from reaper.objects.base import _frozen
from reaper.objects.fields import Action, Classification, ResourceKind


@_frozen
class Finding:
    kind: ResourceKind
    resource: str               # domain name, dir path, device name...
    instance_uuid: str | None
    classification: Classification
    action: Action
    reason: str
    evidence: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def key(self) -> str:
        """Stable identity used by the observation guard."""
        return f"{self.kind.value}:{self.resource}"


@_frozen
class TeardownPlan:
    """The executor's unit of work: one instance's ordered teardown."""
    instance_uuid: str
    classification: Classification
    action: Action
    domain_name: str | None     # None when no domain is left
    dirs: tuple[str, ...]       # absolute paths of the instance's dirs to delete
    destroy_disks: bool
    finalize_db: bool           # reclaim only
    reason: str
    findings: tuple[Finding, ...] = ()
    # Filled by planner extensions: what the unplug / disconnect steps remove.
    # Items are JSON-serialisable dicts so the journal can resume them.
    vifs: tuple[Mapping[str, Any], ...] = ()
    volumes: tuple[Mapping[str, Any], ...] = ()
    # Whether instances_path looked shared when planned (None: unsure); the
    # compare-and-act re-check of a directory teardown needs it.
    shared_storage: bool | None = None
    # A stranded claim of this host (its ClaimMarker value) found on the row: the claim
    # step adopts exactly this claim instead of making a new one, and a release step
    # releases exactly it.
    claim_marker: str | None = None
    # The service steps (reaper.services step names, in Nova's order) that run after
    # the host teardown and before finalize_db, and the instance's facts they act on
    # (reaper.services.InstanceFacts.to_dict()): journaled, so a step retried in a
    # later pass acts on what was planned even after the Nova rows are gone.
    services: tuple[str, ...] = ()
    service_facts: Mapping[str, Any] | None = None

    @property
    def destroys_instance(self) -> bool:
        return self.domain_name is not None and self.action in (Action.REAP, Action.RECLAIM)


@_frozen
class GuardResult:
    name: str
    tripped: bool
    reason: str
    scope: str = "pass"          # "pass" blocks everything; otherwise a resource kind
    evidence: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@_frozen
class Plan:
    findings: tuple[Finding, ...]
    teardowns: tuple[TeardownPlan, ...]
