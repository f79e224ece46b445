"""Cinder: release an instance's volumes as Nova's ``_shutdown_instance`` and
``_cleanup_volumes`` do.

For every volume BDM: a new-style one (``attachment_id`` set) has its attachment
deleted (``DELETE /attachments/{id}``, microversion 3.44); an old-style one gets
``os-terminate_connection`` with this host's connector (the one Nova stored in the
BDM's connection_info when it attached the volume, else the one os-brick builds
here) and ``os-detach`` of this instance's attachment. Then every
``delete_on_termination`` volume is deleted.

Compare-and-act, never on doubt: an attachment that belongs to another instance,
an old-style volume no longer attached to this instance, and a volume to delete
that is attached to another instance are left alone (``kept``). A volume or
attachment already gone is success. Cinder accepts deleting the attachment of an
in-use volume and ``os-terminate_connection`` only from a service: configure
``[service_user] send_service_user_token``.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from reaper import exception
from reaper.services import DETACH_VOLUMES, InstanceFacts, StepResult, VolumeFact
from reaper.services._http import GONE, call, lacks_roles

ATTACHMENTS_MICROVERSION = "3.44"       # what Nova's attachment_delete uses
# Cinder has no policy for the service role and scopes any other account to its
# own project (a 404 for the rest): only admin sees the instance owner's volumes.
ROLES = {"admin"}


def plan_volumes(facts: InstanceFacts) -> dict[str, list[str]]:
    """Which path each volume takes: {"attachment_delete": [attachment ids],
    "terminate_detach": [volume ids], "delete": [volume ids]}. Pure."""
    return {
        "attachment_delete": [v.attachment_id for v in facts.volumes if v.attachment_id],
        "terminate_detach": [v.volume_id for v in facts.volumes if not v.attachment_id],
        "delete": [v.volume_id for v in facts.volumes if v.delete_on_termination],
    }


def _attachment_delete(adapter, uuid: str, v: VolumeFact) -> str | None:
    status, body = call(adapter, "GET", f"/attachments/{v.attachment_id}", (200,),
                        also=(GONE,), microversion=ATTACHMENTS_MICROVERSION)
    if status == GONE:
        return None
    att = (body or {}).get("attachment") or {}
    owner = att.get("instance")
    if owner and owner != uuid:
        return f"attachment {v.attachment_id} belongs to instance {owner}: not deleted"
    call(adapter, "DELETE", f"/attachments/{v.attachment_id}", (200, 202, 204),
         also=(GONE,), microversion=ATTACHMENTS_MICROVERSION)
    return None


def _volume(adapter, volume_id: str) -> dict | None:
    status, body = call(adapter, "GET", f"/volumes/{volume_id}", (200,), also=(GONE,))
    return None if status == GONE else ((body or {}).get("volume") or {})


def _terminate_detach(adapter, uuid: str, v: VolumeFact,
                      connector: Callable[[], Mapping[str, Any]]) -> str | None:
    vol = _volume(adapter, v.volume_id)
    if vol is None:
        return None
    mine = [a for a in vol.get("attachments") or [] if a.get("server_id") == uuid]
    if not mine:
        return None                 # already detached from this instance
    try:
        conn = dict(v.connector) if v.connector else dict(connector())
    except exception.CallFailed:
        raise
    except Exception as e:  # noqa: BLE001 - os-brick on this host: reported, retried
        raise exception.CallFailed(f"this host's connector: {type(e).__name__}: {e}") from None
    action = f"/volumes/{v.volume_id}/action"
    call(adapter, "POST", action, (200, 202), also=(GONE,),
         json={"os-terminate_connection": {"connector": conn}})
    for a in mine:
        call(adapter, "POST", action, (200, 202), also=(GONE,),
             json={"os-detach": {"attachment_id": a.get("attachment_id") or a.get("id")}})
    return None


def _delete(adapter, uuid: str, volume_id: str) -> tuple[bool, str | None]:
    """(deleted or gone, why kept)."""
    vol = _volume(adapter, volume_id)
    if vol is None or vol.get("status") == "deleting":
        return True, None
    servers = {a.get("server_id") for a in vol.get("attachments") or []}
    others = sorted(s for s in servers if s and s != uuid)
    if others:
        return False, f"attached to {', '.join(others)}: not deleted"
    if uuid in servers:
        raise exception.CallFailed(f"volume {volume_id} is still attached to the instance "
                                   f"(status {vol.get('status')}): not deleted yet")
    call(adapter, "DELETE", f"/volumes/{volume_id}", (202, 204), also=(GONE,))
    return True, None


def _no_connector() -> Mapping[str, Any]:
    raise exception.CallFailed("no host connector: the BDM's connection_info has none and none "
                               "was given")


def detach_volumes(adapter, facts: InstanceFacts,
                   connector: Callable[[], Mapping[str, Any]] | None = None) -> StepResult:
    """Detach every volume of the instance from it in Cinder, then delete the
    ``delete_on_termination`` ones. ``connector()`` gives this host's connector for
    old-style BDMs that stored none (see :func:`host_connector`). Idempotent; never
    raises for a service failure (``done=False``)."""
    uuid = facts.uuid
    connector = connector or _no_connector
    left: dict[str, list[str]] = {"attachment_delete": [], "terminate_detach": [],
                                  "delete": []}
    why = lacks_roles(adapter, ROLES, "Cinder",
                      "Cinder would answer 404 for the owner's volumes, as if gone")
    if why:
        return StepResult(DETACH_VOLUMES, False, why, plan_volumes(facts), error=why)
    kept: dict[str, str] = {}
    errors: list[str] = []
    detached_ok: set[str] = set()
    for v in facts.volumes:
        try:
            if v.attachment_id:
                why = _attachment_delete(adapter, uuid, v)
            else:
                why = _terminate_detach(adapter, uuid, v, connector)
        except exception.CallFailed as e:
            left["attachment_delete" if v.attachment_id else "terminate_detach"].append(
                v.attachment_id or v.volume_id)
            errors.append(str(e))
            continue
        if why:
            kept[v.attachment_id or v.volume_id] = why
        detached_ok.add(v.volume_id)
    deleted = 0
    for v in facts.volumes:
        if not v.delete_on_termination:
            continue
        if v.volume_id not in detached_ok:
            left["delete"].append(v.volume_id)
            continue
        try:
            ok, why = _delete(adapter, uuid, v.volume_id)
        except exception.CallFailed as e:
            left["delete"].append(v.volume_id)
            errors.append(str(e))
            continue
        if why:
            kept[v.volume_id] = why
        deleted += ok
    paths = plan_volumes(facts)
    parts = [f"attachments deleted {len(paths['attachment_delete'])}",
             f"terminated+detached {len(paths['terminate_detach'])}",
             f"volumes deleted {deleted}"]
    pending = any(left.values())
    if kept:
        parts.append(f"kept {len(kept)}")
    if errors:
        parts.append(f"failed {len(errors)}: {errors[0]}")
    elif pending:
        parts.append("volumes to delete wait for their detach")
    return StepResult(DETACH_VOLUMES, not pending, "; ".join(parts),
                      left if pending else {}, kept,
                      error=errors[0] if errors else None)


def host_connector(host: str | None, my_ip: str | None = None,
                   multipath: bool = False) -> dict[str, Any]:
    """This host's connector as os-brick builds it for Nova
    (``get_connector_properties``), for old-style BDMs that stored none."""
    from os_brick.initiator import connector as brick_connector
    return brick_connector.get_connector_properties(
        None, my_ip or "127.0.0.1", multipath, False, host=host)
