"""The ``services`` kind: the cloud side of reclaims and evacuations.

No collector; one planner (the instance's facts on every reclaim and evacuated
teardown, whatever is configured; the service steps of the configured sections) and
five steps (Neutron ports, Cinder attachments, Placement allocations, the
evacuation's migration), run with the keystoneauth1 adapters ``open`` makes. The
calls themselves are reaper.services (shared with ``reaper-ctl finish``).

The ``[neutron]``, ``[cinder]``, ``[placement]`` and ``[service_user]`` options are
reaper.conf.services'.

Order and the DB finalize. The service steps run after the host teardown and
before ``finalize_db``, in Nova's order: network (``release_ports``), volumes
(``detach_volumes``), allocations (``delete_allocations``). A step that fails (a
service unreachable or refusing) does not stop the others nor the finalize: the
Nova DB is finalized as soon as the host is clean, and the failed step stays in
the same journal entry, which is retried every pass until it is done (its facts
are journaled in the plan, so it never needs the Nova rows again). Why not wait,
as Nova's reclaim does for the network and the allocations? A finalize that
waits leaves the row claimed (``deleting``) by this host for as long as a service
is down, and a host that dies meanwhile leaves it claimed forever; finalizing
frees the row, reports the reclaim (``reaper.instance.reclaimed``) with exactly
what is left in its ``leftovers``, and a controller-side finisher can finish those
from the record alone. Nothing is done on doubt afterwards: each retry compares at
the service (a port, attachment or volume the service no longer ties to the
instance is left alone), and what is gone counts as done. The one thing that
waits for a step is the emptying of ``network_info``: finalize gets
``ports_released=True`` only when the network step is done.

Evacuated instances: after the host teardown, ``remove_node_allocations`` (this
node's resource provider tree out of the instance's allocations), then
``complete_migration`` (the evacuation's migration ``done -> completed``), which
runs only once the allocations step is done: a migration left ``done`` is what
tells nova-compute's next start to do both itself. Without ``[placement]``
configured neither step is planned and the evacuation stays ``done``, as before;
its record then lists the source allocations with the facts (the finisher leaves
evacuations alone: nova-compute's next start on the source finishes them).

A service that is not configured has no step (no call, no journal entry): what it
would do stays in the leftovers, with the instance's facts all the same. The facts
come from the rows the pass's Nova view already read (the info cache's VIFs, the
live BDMs, the compute node and the evacuation's migration): recording them costs
no query, and lets ``reaper-ctl finish`` (reaper.finisher) do from a controller,
with the same functions, what a host that is gone never will. Of a BDM's
connection_info only the stored connector's flat values are kept (never its
auth/CHAP data).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

from oslo_log import log as logging

from reaper import exception
from reaper.conf import CONF
from reaper.kinds import KindInfo, Phase, ResourceKindPlugin, host_teardown
from reaper.nova import evacuation as nova_evacuation
from reaper.kinds.instance import rules
from reaper.objects.fields import Action, Classification
from reaper.objects.plan import TeardownPlan
from reaper.objects.step import StepResult
from reaper.services import (COMPLETE_MIGRATION, DELETE_ALLOCATIONS, DETACH_VOLUMES,
                             GROUP_OF, RELEASE_PORTS, REMOVE_NODE_ALLOCATIONS, SERVICE_OF,
                             InstanceFacts)
from reaper.services import StepResult as ServiceResult
from reaper.services import cinder, neutron, placement
from reaper.services import facts as facts_mod
from reaper.services import session

LOG = logging.getLogger(__name__)

RECLAIM_STEPS = (RELEASE_PORTS, DETACH_VOLUMES, DELETE_ALLOCATIONS)
EVACUATED_STEPS = (REMOVE_NODE_ALLOCATIONS, COMPLETE_MIGRATION)
ALL_STEPS = RECLAIM_STEPS + EVACUATED_STEPS
NAME = "services"


# -- planner extension (pure) ------------------------------------------------

def reclaim_steps(facts: InstanceFacts, groups: frozenset[str]) -> tuple[str, ...]:
    """The service steps of a reclaim, for the configured groups, in Nova's order."""
    out = []
    if "neutron" in groups:
        out.append(RELEASE_PORTS)
    if "cinder" in groups and facts.volumes:
        out.append(DETACH_VOLUMES)
    if "placement" in groups:
        out.append(DELETE_ALLOCATIONS)
    return tuple(out)


def _evacuation_facts(ctx, t: TeardownPlan) -> InstanceFacts | None:
    host = ctx.policy.host
    migs = [m for m in ctx.view.migrations if m.instance_uuid == t.instance_uuid]
    evacs = rules.evacuations_from(migs, host, rules.EVACUATED_STATUSES)
    if not evacs:
        return None
    m = max(evacs, key=lambda x: x.id)
    node = next((n for n in ctx.view.compute_nodes
                 if n.hypervisor_hostname == m.source_node and n.uuid), None)
    if node is None:
        # As nova-compute: "the source node is not found": nothing is removed and
        # the migration stays 'done' (its next start sees it again).
        return None
    # A soft-deleted migration row is evidence of the evacuation (R2), but there is
    # nothing left to mark completed: Nova no longer sees it either.
    return InstanceFacts(uuid=t.instance_uuid, host=host, node=m.source_node,
                         node_uuid=node.uuid, migration_id=m.id if not m.deleted else None)


def _bdms_by_instance(bdms, uuids: set[str]) -> dict[str, list]:
    """The view's BDMs of ``uuids``, grouped once (a pass with many reclaims reads
    the host's BDMs once, not once per reclaim)."""
    out: dict[str, list] = {}
    for b in bdms:
        if b.instance_uuid in uuids:
            out.setdefault(b.instance_uuid, []).append(b)
    return out


def extend(ctx, groups: frozenset[str] = frozenset()):
    """Give every reclaim and evacuated (domain) teardown its facts, and the service
    steps of the configured ``groups``.

    The facts are given whatever is configured (``groups`` empty too): they are what a
    controller-side finisher (``reaper-ctl finish``) needs to do the steps this host
    does not, and they come from the rows the view already read (no query). Steps, and
    so journal entries and calls, only for the configured services."""
    reclaims = {t.instance_uuid for t in ctx.plan.teardowns
                if t.action is Action.RECLAIM and not t.services}
    bdms = _bdms_by_instance(ctx.view.bdms, reclaims) if reclaims else {}
    changed = []
    for t in ctx.plan.teardowns:
        if t.services or t.service_facts is not None:
            changed.append(t)
            continue
        facts, steps = None, ()
        if t.action is Action.RECLAIM:
            row = ctx.view.instances.get(t.instance_uuid)
            facts = facts_mod.instance_facts(
                t.instance_uuid, row.host if row else ctx.policy.host,
                row.node if row else None, cache=ctx.view.info_caches.get(t.instance_uuid),
                bdms=bdms.get(t.instance_uuid, ()))
            steps = reclaim_steps(facts, groups)
        elif (t.classification is Classification.EVACUATED and t.action is Action.REAP
              and t.domain_name):
            facts = _evacuation_facts(ctx, t)
            steps = EVACUATED_STEPS if facts is not None and "placement" in groups else ()
            if facts is not None and facts.migration_id is None:
                steps = tuple(s for s in steps if s != COMPLETE_MIGRATION)
        if facts is not None:
            t = dataclasses.replace(t, services=steps, service_facts=facts.to_dict())
        changed.append(t)
    return dataclasses.replace(ctx.plan, teardowns=tuple(changed))


def without_migration_write(t: TeardownPlan) -> TeardownPlan:
    """An evacuated teardown for a Nova DB the reaper may not write: the migration stays
    'done' (nova-compute's next start completes it)."""
    if COMPLETE_MIGRATION not in t.services:
        return t
    return dataclasses.replace(t, services=tuple(s for s in t.services
                                                 if s != COMPLETE_MIGRATION))


# -- step handlers -------------------------------------------------------------

def facts_of(plan: TeardownPlan) -> InstanceFacts:
    if plan.service_facts is None:
        raise exception.ServiceFailed(ServiceResult("-", False, "the plan holds no instance facts"))
    return InstanceFacts.from_dict(plan.service_facts)


def _adapter(clients, step: str):
    group = GROUP_OF[SERVICE_OF[step]]
    client = clients.get(group) if clients is not None else None
    if client is None or not client.configured:
        raise exception.ServiceFailed(ServiceResult(step, False, f"[{group}] is not configured here "
                                      f"(no auth_type)", error="not configured"))
    if client.adapter is None:
        raise exception.ServiceFailed(ServiceResult(step, False, client.error or "no adapter",
                                      error=client.error))
    return client.adapter


def _finish(result: ServiceResult) -> StepResult:
    """A service call's record as the step's result; one not done is a failure."""
    if not result.done:
        raise exception.ServiceFailed(result)
    return StepResult.done(result.detail)


def _connector(make, facts: InstanceFacts):
    if make is not None:
        return make()
    return cinder.host_connector(facts.host)


def run_release_ports(ctx, plan: TeardownPlan, clients, host_connector=None) -> StepResult:
    return _finish(neutron.release_ports(_adapter(clients, RELEASE_PORTS), facts_of(plan)))


def run_detach_volumes(ctx, plan: TeardownPlan, clients, host_connector=None) -> StepResult:
    facts = facts_of(plan)
    return _finish(cinder.detach_volumes(_adapter(clients, DETACH_VOLUMES), facts,
                                         functools.partial(_connector, host_connector,
                                                           facts)))


def run_delete_allocations(ctx, plan: TeardownPlan, clients, host_connector=None) -> StepResult:
    return _finish(placement.delete_allocations(_adapter(clients, DELETE_ALLOCATIONS),
                                                facts_of(plan)))


def run_remove_node_allocations(ctx, plan: TeardownPlan, clients,
                                host_connector=None) -> StepResult:
    return _finish(placement.remove_node_allocations(
        _adapter(clients, REMOVE_NODE_ALLOCATIONS), facts_of(plan)))


def run_complete_migration(ctx, plan: TeardownPlan, clients=None,
                           host_connector=None) -> StepResult:
    facts = facts_of(plan)
    if facts.migration_id is None:
        raise exception.StepFailed("no evacuation migration in the plan")
    res = nova_evacuation.complete_migration(ctx.engine, facts.migration_id, plan.instance_uuid,
                                             ctx.policy.host, ctx.clock())
    return StepResult.done(f"migration {facts.migration_id} {res}")


HANDLERS = {
    RELEASE_PORTS: run_release_ports,
    DETACH_VOLUMES: run_detach_volumes,
    DELETE_ALLOCATIONS: run_delete_allocations,
    REMOVE_NODE_ALLOCATIONS: run_remove_node_allocations,
    COMPLETE_MIGRATION: run_complete_migration,
}


# -- leftovers -------------------------------------------------------------------

def leftovers(plan: TeardownPlan, status: dict[str, dict[str, Any]],
              base: dict | None = None) -> dict | None:
    """The leftover record of a teardown with service facts: ``base`` (today's
    reaper.nova.reclaim.leftovers, or rebuilt from the facts) with what the done
    steps finished taken out, ``services`` (per service: the step's record, or
    not_configured) and ``facts`` when anything is left. ``status``: step -> record."""
    if plan.service_facts is None:
        return base
    facts = InstanceFacts.from_dict(plan.service_facts)
    if plan.action is Action.RECLAIM:
        vols = [v for v in facts.volumes]
        out = dict(base) if base else {
            "instance_uuid": facts.uuid,
            "volumes_delete_on_termination": [v.volume_id for v in vols
                                              if v.delete_on_termination],
            "volumes_attached": [v.volume_id for v in vols],
            "attachment_ids": [v.attachment_id for v in vols if v.attachment_id],
            "ports": [p.id for p in facts.ports],
            "network_info_unparsable": facts.network_info == "unparsable",
            "allocations": {"consumer": facts.uuid}}
        wanted = {RELEASE_PORTS: "network", DETACH_VOLUMES: "block-storage",
                  DELETE_ALLOCATIONS: "placement"}
    else:
        out = dict(base) if base else {
            "instance_uuid": facts.uuid,
            "allocations": {"consumer": facts.uuid, "resource_provider_tree": facts.node_uuid}}
        if not base and facts.migration_id is not None:
            out["migration"] = {"id": facts.migration_id, "status": nova_evacuation.EVACUATED}
        wanted = {REMOVE_NODE_ALLOCATIONS: "placement"}
    services: dict[str, Any] = {}
    for step, service in wanted.items():
        if step in status:
            services[service] = status[step]
        elif step in plan.services:
            services[service] = {"step": step, "service": service, "status": "pending"}
        elif plan.action is Action.RECLAIM and step == DETACH_VOLUMES and not facts.volumes:
            services[service] = {"step": step, "service": service, "status": "done",
                                 "detail": "no volumes"}
        else:
            services[service] = {"step": step, "service": service,
                                 "status": "not_configured"}
    done = {s for s, r in status.items() if r.get("status") == "done"}
    if RELEASE_PORTS in done:
        out["ports"] = []
        out["network_info_unparsable"] = False
    if DETACH_VOLUMES in done:
        out.update(volumes_delete_on_termination=[], volumes_attached=[], attachment_ids=[])
    if DELETE_ALLOCATIONS in done or REMOVE_NODE_ALLOCATIONS in done:
        out["allocations"] = None
    if COMPLETE_MIGRATION in done and "migration" in out:
        out["migration"] = {**out["migration"], "status": nova_evacuation.COMPLETED}
    out["services"] = services
    if any(s.get("status") != "done" for s in services.values()):
        out["facts"] = facts.to_dict()
    return out


# -- enabling --------------------------------------------------------------------

def configured_groups(conf=CONF) -> frozenset[str]:
    return frozenset(g for g in session.SERVICES if session.configured(conf, g))


class ServicesKind(ResourceKindPlugin):
    """``clients`` (session.Clients) replaces the configured sections (tests);
    ``host_connector`` (a callable) the connector a detach sends for old-style BDMs."""

    def __init__(self, conf, clients=None, host_connector=None):
        super().__init__(conf)
        self.clients = clients
        self.host_connector = host_connector

    def describe(self) -> KindInfo:
        return KindInfo(name=NAME, steps={s: Phase.SERVICES for s in ALL_STEPS})

    def open(self) -> None:
        if self.clients is None:
            self.clients = session.clients_from_conf(self.conf)

    def close(self) -> None:
        clients, self.clients = self.clients, None
        try:
            close = getattr(clients, "close", None)
            if close is not None:
                close()
        except Exception:   # noqa: BLE001 - close never raises
            pass

    def groups(self) -> frozenset[str]:
        """The configured services (none before ``open``)."""
        if self.clients is None:
            return frozenset()
        return frozenset(g for g in session.SERVICES if self.clients.get(g).configured)

    def plan(self, ctx):
        return extend(ctx, groups=self.groups())

    def steps(self, plan):
        """The plan's service steps, in the order it holds them (Nova's)."""
        return [(Phase.SERVICES, s) for s in plan.services] if host_teardown(plan) else []

    def run_step(self, ctx, step, plan) -> StepResult:
        """Every step is run whatever is configured now, so a journaled step resumes
        even after its service is unconfigured (it then fails, reported, until the
        section is back or the entry is set aside)."""
        if step not in HANDLERS:
            raise ValueError(f"unknown step {step}")
        return HANDLERS[step](ctx, plan, self.clients, self.host_connector)


def enable(reaper, conf=CONF, clients=None):
    """Turn the service steps on for ``reaper`` (a reconcile.Reaper built piecewise,
    as tests do); returns it. ``clients`` (session.Clients) defaults to the
    configured sections. build_from_conf enables the kind from ``[reaper]
    resource_kinds``."""
    kind = ServicesKind(conf, clients)
    kind.open()
    return reaper.add_kind(kind, conf)
