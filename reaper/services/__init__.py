"""What a reclaim or an evacuation cleanup finishes outside the host: Neutron, Cinder,
Placement, as Nova's own delete (``deallocate_for_instance``, ``_shutdown_instance`` +
``_cleanup_volumes``, ``_complete_deletion``) and ``_destroy_evacuated_instances`` do.

This package is the stable API shared by the host's executor (reaper.kinds.services.plugin)
and any controller-side finisher:

- :mod:`reaper.services.session`: the ``[neutron]``, ``[cinder]``, ``[placement]`` and
  ``[service_user]`` options (keystoneauth1's loading helpers, as Nova registers
  them) and :func:`reaper.services.session.clients_from_conf`;
- :mod:`reaper.services.neutron`, :mod:`reaper.services.cinder`,
  :mod:`reaper.services.placement`: one function per Nova action, each taking a
  keystoneauth1 ``Adapter`` and the instance's :class:`InstanceFacts`, returning a
  :class:`StepResult`. Each is idempotent (what is already gone is success) and
  compares before it acts: a resource the service no longer ties to the instance is
  left alone and reported, never changed on doubt.

A function never raises for a service that is unreachable or refuses: it returns a
result with ``done=False`` and the error, and what it left (``left``) so the caller
can journal, retry and report it.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any, Mapping

# Step names (journal) per service, in Nova's order: network, volumes, allocations.
RELEASE_PORTS = "release_ports"                    # Neutron
DETACH_VOLUMES = "detach_volumes"                  # Cinder
DELETE_ALLOCATIONS = "delete_allocations"          # Placement, reclaim
REMOVE_NODE_ALLOCATIONS = "remove_node_allocations"  # Placement, evacuated
COMPLETE_MIGRATION = "complete_migration"          # Nova DB, evacuated (not a service)

# The service (and its option group) of each step.
SERVICE_OF = {
    RELEASE_PORTS: "network",
    DETACH_VOLUMES: "block-storage",
    DELETE_ALLOCATIONS: "placement",
    REMOVE_NODE_ALLOCATIONS: "placement",
}
GROUP_OF = {"network": "neutron", "block-storage": "cinder", "placement": "placement"}
SERVICE_STEPS = frozenset(SERVICE_OF)

# The keys of binding:profile Nova removes when it unbinds a pre-existing port
# (``_unbind_ports``): what the binding to this host's devices put there.
BINDING_PROFILE_HOST_KEYS = (
    "pci_vendor_info", "pci_slot", "allocation", "arq_uuid", "physical_network",
    "card_serial_number", "vf_num", "pf_mac_address", "device_mac_address",
)


@dataclasses.dataclass(frozen=True)
class PortFact:
    """A VIF of the instance's network_info cache."""
    id: str
    # Nova's ``preserve_on_delete``: the port existed before the instance (the user
    # passed it in): unbound on delete, never deleted.
    preserve_on_delete: bool = False


@dataclasses.dataclass(frozen=True)
class VolumeFact:
    """A volume BDM of the instance (``destination_type == 'volume'``)."""
    volume_id: str
    attachment_id: str | None = None       # new-style (Cinder attachments API)
    delete_on_termination: bool = False
    # The host connector Nova stored in the BDM's connection_info ("connector") when
    # it attached an old-style volume; None: not stored (the host's is built).
    connector: Mapping[str, Any] | None = None


@dataclasses.dataclass(frozen=True)
class InstanceFacts:
    """What the service steps need to know of one instance; JSON round-trips.

    ``network_info``: "ok" (the cache was read and parsed), "missing" (no cache, or
    an empty one) or "unparsable". Only with "ok" is ``preserve_on_delete`` known,
    so only then are Nova-created ports deleted (else every port is unbound).
    """
    uuid: str
    host: str | None = None
    node: str | None = None
    node_uuid: str | None = None            # this node's resource provider (compute_nodes.uuid)
    ports: tuple[PortFact, ...] = ()
    network_info: str = "ok"
    volumes: tuple[VolumeFact, ...] = ()
    migration_id: int | None = None         # the evacuation to mark completed

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "InstanceFacts":
        d = dict(d)
        d["ports"] = tuple(PortFact(**p) for p in d.get("ports", ()))
        d["volumes"] = tuple(VolumeFact(**v) for v in d.get("volumes", ()))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclasses.dataclass(frozen=True)
class StepResult:
    """What one service function did.

    ``done``: nothing of the instance is left for this service to do (what is gone
    counts as done). ``detail``: one line for the journal and the audit record.
    ``left``: JSON, what is still to be done (empty when done), e.g.
    ``{"delete": [port ids], "unbind": [port ids]}``. ``kept``: resources the
    function would have acted on but left alone because the service no longer ties
    them to the instance (resource id -> why); never retried.
    """
    step: str
    done: bool
    detail: str
    left: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    kept: Mapping[str, str] = dataclasses.field(default_factory=dict)
    error: str | None = None

    def record(self) -> dict[str, Any]:
        """The leftover record of this step (audit evidence, notification payload)."""
        return {"step": self.step, "service": SERVICE_OF.get(self.step),
                "status": "done" if self.done else "failed", "detail": self.detail,
                "error": self.error, "left": dict(self.left), "kept": dict(self.kept)}

