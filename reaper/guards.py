"""Guards (doc/design.md "Guards"): pure checks that refuse whole plans that look wrong.

A tripped guard with scope "pass" blocks every destructive action of the pass; a
guard scoped to a resource kind blocks only that kind.
"""
from __future__ import annotations

import datetime

from reaper.policy import Policy
from reaper.objects.fields import Action, Classification, ResourceKind
from reaper.objects.host import Inventory
from reaper.objects.nova import NovaView
from reaper.objects.plan import GuardResult, TeardownPlan


def host_identity(view: NovaView, policy: Policy, compute_id: str | None,
                  node_error: str | None = None) -> GuardResult:
    """Nova's "possible rename detected": our host must be a known compute node.

    ``policy.hypervisor_hostname`` is the node name as nova-compute reports it (the
    configured one, or libvirt's getHostname() filled in by the pass); empty when it
    could not be learnt, ``node_error`` saying why: then nothing can be checked.
    ``compute_id`` is the content of nova-compute's compute_id file, when present.
    """
    ev = {"host": policy.host, "hypervisor_hostname": policy.hypervisor_hostname,
          "compute_id_file": compute_id,
          "compute_nodes": [{"host": c.host, "hypervisor_hostname": c.hypervisor_hostname,
                             "uuid": c.uuid} for c in view.compute_nodes]}
    if not view.ok:
        return GuardResult("host_identity", True, "cannot check host identity: Nova DB view "
                           "unavailable", evidence=ev)
    if not policy.hypervisor_hostname:
        return GuardResult("host_identity", True,
                           f"cannot check host identity: this node's name is unknown "
                           f"({node_error or '[DEFAULT] hypervisor_hostname is empty'})",
                           evidence={**ev, "node_error": node_error})
    match = [c for c in view.compute_nodes
             if c.host == policy.host and c.hypervisor_hostname == policy.hypervisor_hostname]
    if not match:
        return GuardResult(
            "host_identity", True,
            f"no compute_nodes row for host {policy.host!r} with hypervisor_hostname "
            f"{policy.hypervisor_hostname!r}: possible rename or wrong database", evidence=ev)
    if compute_id and not any(c.uuid == compute_id for c in match):
        return GuardResult(
            "host_identity", True,
            f"compute node uuid in compute_id_file ({compute_id}) does not match the "
            f"DB's {[c.uuid for c in match]}: possible rename", evidence=ev)
    return GuardResult("host_identity", False, "compute node found", evidence=ev)


def unready_view(inv: Inventory, view: NovaView, policy: Policy) -> list[GuardResult]:
    out = []
    if not view.ok:
        out.append(GuardResult("view_unavailable", True,
                               f"Nova DB unreachable or unreadable: {view.error}"))
    for res, kind in ((inv.domains, ResourceKind.DOMAIN.value),
                      (inv.dirs, ResourceKind.INSTANCE_DIR.value),
                      *((r, k) for k, r in inv.extra.items())):
        if not res.ok:
            out.append(GuardResult("collector_failed", True,
                                   f"{res.kind} collector failed: {res.error}",
                                   scope=kind))
    if view.ok:
        # A host whose every instance was evacuated legitimately has no live row,
        # but the DB still knows it: deleted rows or migrations name it. A view
        # with none of that while Nova domains run here is a wrong or empty DB.
        nova_domains = [d for d in inv.domains.items if d.nova_owned] if inv.domains.ok else []
        local_dirs = list(inv.dirs.items) if inv.dirs.ok else []
        knows_us = (any(r.host == policy.host for r in view.instances.values())
                    or any(policy.host in (m.source_compute, m.dest_compute)
                           for m in view.migrations))
        if (nova_domains or local_dirs) and not knows_us:
            out.append(GuardResult(
                "empty_view", True,
                f"the DB has no instance or migration for host {policy.host!r} while "
                f"{len(nova_domains)} Nova domains and {len(local_dirs)} instance directories "
                f"are here: refusing to act on that view",
                evidence={"nova_domains": len(nova_domains), "instance_dirs": len(local_dirs),
                          "rows_found": len(view.instances)}))
    return out


def urgent_power_off(t: TeardownPlan) -> bool:
    """A power-off of a guest whose instance is being evacuated: the destination is
    rebuilding it, on shared storage from the same disk, so it must stop now (as
    nova-compute stops it at once). It destroys nothing (definition, files, VIFs and
    volumes stay; starting it undoes it) and is re-checked against a fresh read of the
    migration right before it, so neither the grace period nor the mass-destruction
    count holds it, and it still runs when that guard trips for the rest of the plan:
    a whole host being evacuated is exactly when every guest needs it. Pass-wide guards
    (host identity, DB view) and pause still stop it."""
    return t.classification is Classification.EVACUATING and t.action is Action.SHUTDOWN


def waits_for_grace(t: TeardownPlan) -> bool:
    """Whether a teardown waits for its findings to be seen over the grace period."""
    return not urgent_power_off(t)


def mass_destruction(teardowns: list[TeardownPlan], inv: Inventory, policy: Policy,
                     approved: bool) -> GuardResult:
    """Too many instances touched (power-offs of running-deleted or evacuated guests
    count: an operator chose them instead of a reap), or too large a fraction of the
    Nova domains destroyed. Urgent power-offs of evacuating guests do not count."""
    uuids = {t.instance_uuid for t in teardowns
             if t.action.destructive and not urgent_power_off(t)}
    domain_kills = {t.instance_uuid for t in teardowns if t.destroys_instance}
    nova_domains = sum(1 for d in inv.domains.items if d.nova_owned) if inv.domains.ok else 0
    fraction = (len(domain_kills) / nova_domains) if nova_domains else 0.0
    ev = {"instances": len(uuids), "domains": len(domain_kills), "nova_domains": nova_domains,
          "fraction": round(fraction, 3), "max_destroy_per_pass": policy.max_destroy_per_pass,
          "max_destroy_fraction": policy.max_destroy_fraction, "approved": approved}
    too_many = len(uuids) > policy.max_destroy_per_pass
    too_much = fraction > policy.max_destroy_fraction
    if (too_many or too_much) and not approved:
        why = (f"would destroy {len(uuids)} instances (max {policy.max_destroy_per_pass})"
               if too_many else
               f"would destroy {len(domain_kills)} of {nova_domains} Nova domains "
               f"({fraction:.0%} > {policy.max_destroy_fraction:.0%})")
        return GuardResult("mass_destruction", True, why + "; waiting for an operator's approve",
                           evidence=ev)
    return GuardResult("mass_destruction", False, "within limits" if not approved
                       else "over limits but approved by an operator", evidence=ev)


def ripe(key: str, observations: dict[str, tuple[int, datetime.datetime]], policy: Policy,
         now: datetime.datetime) -> tuple[bool, str]:
    """The observation guard for one resource."""
    count, first = observations.get(key, (0, now))
    age = (now - first).total_seconds()
    if count >= policy.grace_observations and age >= policy.grace_seconds:
        return True, f"seen {count} passes over {age:.0f}s"
    return False, (f"seen {count}/{policy.grace_observations} passes over "
                   f"{age:.0f}/{policy.grace_seconds}s: waiting for the grace period")
