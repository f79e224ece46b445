"""Placement: an instance's allocations as Nova leaves them.

- Reclaim: ``DELETE /allocations/{instance}`` (Nova's ``_complete_deletion``,
  ``delete_allocation_for_instance(force=True)``).
- Evacuated: remove this node's resource provider tree (the node's provider and its
  nested children) from the instance's allocations, keeping the destination's
  (Nova's ``remove_provider_tree_from_instance_allocation``): GET the allocations,
  drop the providers of the tree, PUT the rest back with the consumer generation
  (microversion 1.38, with ``consumer_type``; 1.28 on an older Placement). A
  concurrent change (409) is retried a few times from a fresh GET.

404 (no allocations, no such provider) is success: both are idempotent.
"""
from __future__ import annotations

from reaper import exception
from reaper.services import DELETE_ALLOCATIONS, REMOVE_NODE_ALLOCATIONS, InstanceFacts, StepResult
from reaper.services._http import GONE, call

CONSUMER_TYPE_VERSION = "1.38"
CONSUMER_GENERATION_VERSION = "1.28"
IN_TREE_VERSION = "1.14"
CONFLICT_RETRIES = 4


def delete_allocations(adapter, facts: InstanceFacts) -> StepResult:
    """Delete every allocation of the instance (consumer = its uuid)."""
    try:
        status, _b = call(adapter, "DELETE", f"/allocations/{facts.uuid}", (204,),
                          also=(GONE,))
    except exception.CallFailed as e:
        return StepResult(DELETE_ALLOCATIONS, False, f"allocations not deleted: {e}",
                          {"consumer": facts.uuid}, error=str(e))
    return StepResult(DELETE_ALLOCATIONS, True, "no allocations were left"
                      if status == GONE else "allocations deleted")


def tree_of(adapter, root: str) -> set[str]:
    """The uuids of the providers in the tree of ``root`` (``root`` alone if Placement
    does not know it)."""
    status, body = call(adapter, "GET", f"/resource_providers?in_tree={root}", (200,),
                        also=(400, GONE), microversion=IN_TREE_VERSION)
    if status != 200:
        return {root}
    return {rp["uuid"] for rp in (body or {}).get("resource_providers", [])} | {root}


def drop_tree(allocs: dict, tree: set[str]) -> dict | None:
    """The PUT body without the providers of ``tree``; None when none was there. Pure."""
    current = allocs.get("allocations") or {}
    if not set(current) & tree:
        return None
    body = {"allocations": {rp: {"resources": a.get("resources", {})}
                            for rp, a in current.items() if rp not in tree},
            "consumer_generation": allocs.get("consumer_generation"),
            "project_id": allocs.get("project_id"),
            "user_id": allocs.get("user_id")}
    if allocs.get("consumer_type"):
        body["consumer_type"] = allocs["consumer_type"]
    return body


def _remove_once(adapter, uuid: str, tree: set[str], version: str) -> str | None:
    """One GET + PUT; returns a detail, or None on a generation conflict (retry)."""
    _s, allocs = call(adapter, "GET", f"/allocations/{uuid}", (200,), microversion=version)
    body = drop_tree(allocs or {}, tree)
    if body is None:
        return "no allocation of this node's providers was left"
    status, _b = call(adapter, "PUT", f"/allocations/{uuid}", (204,), also=(409,),
                      json=body, microversion=version)
    if status == 409:
        return None
    return (f"removed providers {sorted(set((allocs or {}).get('allocations') or {}) & tree)}"
            f" from the allocations")


def remove_node_allocations(adapter, facts: InstanceFacts) -> StepResult:
    """Remove the tree of ``facts.node_uuid`` from the instance's allocations."""
    uuid, root = facts.uuid, facts.node_uuid
    left = {"consumer": uuid, "resource_provider_tree": root}
    if not root:
        return StepResult(REMOVE_NODE_ALLOCATIONS, False,
                          "this node's resource provider (compute node uuid) is unknown",
                          left, error="no node uuid")
    try:
        tree = tree_of(adapter, root)
        version = CONSUMER_TYPE_VERSION
        for _ in range(CONFLICT_RETRIES):
            try:
                detail = _remove_once(adapter, uuid, tree, version)
            except exception.CallFailed as e:
                if version == CONSUMER_TYPE_VERSION and "HTTP 406" in str(e):
                    version = CONSUMER_GENERATION_VERSION      # an older Placement
                    continue
                raise
            if detail is not None:
                return StepResult(REMOVE_NODE_ALLOCATIONS, True, detail)
        raise exception.CallFailed(f"allocations of {uuid} kept changing (HTTP 409 "
                                   f"{CONFLICT_RETRIES} times)")
    except exception.CallFailed as e:
        return StepResult(REMOVE_NODE_ALLOCATIONS, False,
                          f"this node's allocations not removed: {e}", left, error=str(e))
