"""Neutron: release an instance's ports as Nova's ``deallocate_for_instance`` does.

Nova lists the ports whose ``device_id`` is the instance, unbinds the pre-existing
ones (``preserve_on_delete`` on their VIF in the instance's network_info cache: the
user brought them, they outlive the instance) and deletes the rest (Nova created
them). Unbinding clears ``binding:host_id``, ``device_id`` and ``device_owner``,
removes from ``binding:profile`` the keys the binding to this host's devices put
there (Nova's list, :data:`reaper.services.BINDING_PROFILE_HOST_KEYS`; sent only
when the profile holds any) and, for a network without a ``dns_domain``, clears
``dns_name``.

Two differences from Nova, both to never act on doubt:

- without a readable network_info cache (missing, empty, unparsable) nobody can
  tell a pre-existing port from one Nova created: every port is unbound, none is
  deleted (Nova would delete them all), and the result says so;
- a port to unbind whose ``device_id`` names another instance now (it was attached
  to one since) is left alone, reported in ``kept``.

A port already gone is success, so the step is idempotent.
"""
from __future__ import annotations

from typing import Iterable

from reaper import exception
from reaper.services import BINDING_PROFILE_HOST_KEYS, RELEASE_PORTS, InstanceFacts, StepResult
from reaper.services._http import GONE, call, lacks_roles

# Neutron shows (and lets update) other projects' ports and their bindings only to
# these roles (its defaults: ADMIN_OR_SERVICE; binding:profile is the service's).
ROLES = {"admin", "service"}


def split_ports(listed: Iterable[str], facts: InstanceFacts) -> tuple[list[str], list[str]]:
    """(ports to delete, ports to unbind) of the instance, from the ports Neutron
    lists with ``device_id`` = the instance and the network_info facts. Pure."""
    listed = list(dict.fromkeys(listed))
    preserved = [p.id for p in facts.ports if p.preserve_on_delete]
    if facts.network_info != "ok":
        # Which ports Nova created is unknown: unbind everything, delete nothing.
        return [], list(dict.fromkeys(listed + [p.id for p in facts.ports]))
    keep = set(preserved)
    return [p for p in listed if p not in keep], preserved


def unbind_body(port: dict, network: dict | None) -> dict:
    """The update Nova's ``_unbind_ports`` sends for one port. Pure."""
    current = port.get("binding:profile") or {}
    profile = {k: v for k, v in current.items() if k not in BINDING_PROFILE_HOST_KEYS}
    body = {"binding:host_id": None, "device_id": "", "device_owner": ""}
    if profile != current:
        # Only when there is something to remove: Neutron lets only the 'service'
        # role (admin under the deprecated defaults) write binding:profile.
        body["binding:profile"] = profile
    if port.get("dns_name") and not (network or {}).get("dns_domain"):
        body["dns_name"] = ""
    return {"port": body}


def _unbind(adapter, uuid: str, port_id: str) -> str | None:
    """Unbind one port; returns why it was kept (None: unbound or gone)."""
    status, body = call(adapter, "GET", f"/v2.0/ports/{port_id}", (200,), also=(GONE,))
    if status == GONE:
        return None
    port = (body or {}).get("port") or {}
    device_id = port.get("device_id") or ""
    if device_id not in ("", uuid):
        return f"now used by {device_id} ({port.get('device_owner')}): not unbound"
    if not device_id and not port.get("binding:host_id") and not port.get("device_owner"):
        return None                         # already unbound
    network = None
    if port.get("dns_name") and port.get("network_id"):
        _s, nb = call(adapter, "GET", f"/v2.0/networks/{port['network_id']}", (200,),
                      also=(GONE,))
        network = (nb or {}).get("network") or {}
    call(adapter, "PUT", f"/v2.0/ports/{port_id}", (200,), also=(GONE,),
         json=unbind_body(port, network))
    return None


def release_ports(adapter, facts: InstanceFacts) -> StepResult:
    """Delete the ports Nova created for the instance and unbind its pre-existing
    ones. Idempotent; never raises for a service failure (``done=False``)."""
    uuid = facts.uuid
    why = lacks_roles(adapter, ROLES, "Neutron",
                      "it would list none of the instance's ports")
    if why:
        return StepResult(RELEASE_PORTS, False, why, {"delete": [], "unbind": [
            p.id for p in facts.ports], "listed": False}, error=why)
    try:
        _s, body = call(adapter, "GET", f"/v2.0/ports?device_id={uuid}", (200,))
    except exception.CallFailed as e:
        left = {"delete": [], "unbind": [p.id for p in facts.ports], "listed": False}
        return StepResult(RELEASE_PORTS, False, f"cannot list the ports: {e}", left,
                          error=str(e))
    listed = [p["id"] for p in (body or {}).get("ports", []) if p.get("id")]
    delete, unbind = split_ports(listed, facts)
    failed_delete, failed_unbind, kept, errors = [], [], {}, []
    for port_id in unbind:
        try:
            why = _unbind(adapter, uuid, port_id)
        except exception.CallFailed as e:
            failed_unbind.append(port_id)
            errors.append(str(e))
            continue
        if why:
            kept[port_id] = why
    for port_id in delete:
        try:
            call(adapter, "DELETE", f"/v2.0/ports/{port_id}", (204,), also=(GONE,))
        except exception.CallFailed as e:
            failed_delete.append(port_id)
            errors.append(str(e))
    unbound = [p for p in unbind if p not in failed_unbind and p not in kept]
    deleted = [p for p in delete if p not in failed_delete]
    parts = [f"deleted {len(deleted)} port(s)", f"unbound {len(unbound)}"]
    if facts.network_info != "ok":
        parts.append(f"network_info {facts.network_info}: no port deleted, every port "
                     f"unbound (which ones Nova created is unknown)")
    if kept:
        parts.append(f"kept {len(kept)} now used elsewhere")
    if errors:
        parts.append(f"failed {len(errors)}: {errors[0]}")
    left = {"delete": failed_delete, "unbind": failed_unbind} if errors else {}
    return StepResult(RELEASE_PORTS, not errors, "; ".join(parts), left, kept,
                      error=errors[0] if errors else None)
