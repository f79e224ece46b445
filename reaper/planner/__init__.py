"""The planner: inventory + Nova view + policy + now -> findings and teardown plans.

Pure: no I/O and no clock. ``core_plan`` is the plan of the primary kind
(reaper.kinds.instance); the other kinds add to it. Guards and the executor decide later what of the plan
actually runs.
"""
from __future__ import annotations

import collections
import dataclasses
import datetime
from typing import Callable, Mapping, Sequence

from reaper.kinds import PlanContext
from reaper.kinds.instance import rules
from reaper.policy import Policy
from reaper.objects.fields import Action, Classification, DirKind, ResourceKind
from reaper.objects.host import InstanceDir, Inventory
from reaper.objects.nova import NovaView
from reaper.objects.plan import Finding, Plan, TeardownPlan

DOMAIN_TEARDOWN = {Classification.EVACUATED, Classification.RUNNING_DELETED,
                   Classification.RECLAIMABLE, Classification.EVACUATING}
# Those a reap or reclaim may destroy; an evacuating guest is only ever powered off
# (the evacuation may still fail, and then it is the only copy).
REAPABLE = DOMAIN_TEARDOWN - {Classification.EVACUATING}


def _action(verdict: rules.Verdict, policy: Policy) -> Action:
    return verdict.fixed_action or policy.action_for(verdict.classification)


def _release(uuid: str, v: rules.Verdict, f: Finding) -> TeardownPlan:
    """Give a stranded claim of this host back to Nova; nothing on the host changes."""
    return TeardownPlan(
        instance_uuid=uuid, classification=Classification.STRANDED_CLAIM,
        action=Action.RELEASE, domain_name=None, dirs=(), destroy_disks=False,
        finalize_db=False, reason=v.reason, findings=(f,), claim_marker=v.claim_marker)


def core_plan(inv: Inventory, view: NovaView, policy: Policy,
               now: datetime.datetime, journaled: frozenset[str] = frozenset()) -> Plan:
    """Rules R1-R10 and R13 over domains and instance directories.

    ``journaled``: instances with an unfinished teardown in our journal; a claimed row
    among them is that teardown's business, not a stranded claim."""
    host = policy.host
    migs = collections.defaultdict(list)
    for m in view.migrations:
        migs[m.instance_uuid].append(m)
    bdm_volumes = collections.defaultdict(set)
    for b in view.bdms:
        if b.destination_type == "volume" and b.volume_id:
            bdm_volumes[b.instance_uuid].add(b.volume_id)

    domains = [d for d in inv.domains.items if d.nova_owned] if inv.domains.ok else []
    dirs = list(inv.dirs.items) if inv.dirs.ok else []
    dirs_by_uuid = collections.defaultdict(list)
    for d in dirs:
        dirs_by_uuid[d.uuid].append(d)
    # Any domain with an instance's uuid (even one whose XML could not be read,
    # so not known to be Nova's) pins that instance's directories.
    domain_uuids = {d.uuid for d in inv.domains.items} if inv.domains.ok else set()
    # Any file of any domain (Nova's or not, whatever its uuid) pins the directory it
    # is in; a domain whose XML could not be read may be using any of them.
    all_domains = inv.domains.items if inv.domains.ok else ()
    users = rules.file_index(all_domains)
    unreadable = [d for d in all_domains if not d.readable]
    shared, shared_why = rules.storage_shared(policy.instances_path_shared,
                                              inv.instances_fs_type)

    findings: list[Finding] = []
    teardowns: list[TeardownPlan] = []

    def add(finding: Finding) -> Finding | None:
        if finding.action is Action.IGNORE:
            return None
        findings.append(finding)
        return finding

    for dom in domains:
        row = view.instances.get(dom.uuid)
        v = None if row is None else rules.classify_claim(
            row, view.claim_markers.get(dom.uuid, ()), host,
            journaled=dom.uuid in journaled,
            reclaim_interval=policy.reclaim_instance_interval, now=now)
        if v is None:
            v = rules.classify_instance(
                dom.uuid, row, migs.get(dom.uuid, []), host,
                running_deleted_timeout=policy.running_deleted_timeout,
                reclaim_interval=policy.reclaim_instance_interval, now=now,
                domain_active=dom.active)
        if v.classification is Classification.LIVE:
            findings.extend(_drift(dom, bdm_volumes.get(dom.uuid, set())))
            continue
        action = _action(v, policy)
        ev = {**v.evidence, "domain": {"name": dom.name, "state": dom.state}}
        local_dirs = dirs_by_uuid.get(dom.uuid, [])
        destroy_disks = True
        reason = v.reason
        if v.classification is Classification.EVACUATED:
            destroy_disks = shared is False
            ev["storage"] = {"shared": shared, "why": shared_why}
            if not destroy_disks:
                reason += ("; keeping instance files: " + shared_why if shared
                           else "; keeping instance files (unsure whether shared): "
                           + shared_why)
        free = ()
        if destroy_disks and v.classification in DOMAIN_TEARDOWN:
            free = _free_dirs(local_dirs, users, unreadable, (dom.uuid, dom.name), ev)
            if len(free) < len(local_dirs):
                reason += "; keeping the directories another domain uses"
        if v.classification is Classification.EVACUATING and not dom.active:
            reason += f"; the guest is already {dom.state}: nothing to power off"
        f = add(Finding(ResourceKind.DOMAIN, dom.name, dom.uuid, v.classification,
                        action, reason, ev))
        if f is None:
            continue
        if v.classification is Classification.STRANDED_CLAIM:
            teardowns.append(_release(dom.uuid, v, f))
            continue
        if v.classification not in DOMAIN_TEARDOWN:
            continue
        if action in (Action.REAP, Action.RECLAIM) and v.classification in REAPABLE:
            teardowns.append(TeardownPlan(
                instance_uuid=dom.uuid, classification=v.classification, action=action,
                domain_name=dom.name, dirs=free,
                destroy_disks=destroy_disks,
                finalize_db=v.classification is Classification.RECLAIMABLE,
                reason=reason, findings=(f,), claim_marker=v.claim_marker))
        elif action is Action.SHUTDOWN and dom.active:
            teardowns.append(TeardownPlan(
                instance_uuid=dom.uuid, classification=v.classification, action=action,
                domain_name=dom.name, dirs=(), destroy_disks=False, finalize_db=False,
                reason=reason, findings=(f,)))

    # Claimed rows of this host with no domain left: this host's stranded claims are
    # finished (the dirs and the row) or released; anyone else's are only reported.
    finishing: set[str] = set()
    if inv.domains.ok:
        for row in view.instances.values():
            if row.uuid in domain_uuids:
                continue
            v = rules.classify_claim(row, view.claim_markers.get(row.uuid, ()), host,
                                     journaled=row.uuid in journaled,
                                     reclaim_interval=policy.reclaim_instance_interval,
                                     now=now)
            if v is None:
                continue
            local_dirs = dirs_by_uuid.get(row.uuid, [])
            ev = {**v.evidence, "dirs": [d.path for d in local_dirs]}
            finish = v.fixed_action is Action.RECLAIM
            dir_kind = finish and local_dirs
            f = add(Finding(ResourceKind.INSTANCE_DIR if dir_kind else ResourceKind.INSTANCE,
                            local_dirs[0].path if dir_kind else row.uuid, row.uuid,
                            v.classification, _action(v, policy), v.reason, ev))
            if f is None:
                continue
            if finish:
                finishing.add(row.uuid)
                teardowns.append(TeardownPlan(
                    instance_uuid=row.uuid, classification=Classification.RECLAIMABLE,
                    action=Action.RECLAIM, domain_name=None,
                    dirs=tuple(d.path for d in local_dirs), destroy_disks=True,
                    finalize_db=True, reason=v.reason, findings=(f,),
                    claim_marker=v.claim_marker))
            elif f.action is Action.RELEASE:
                teardowns.append(_release(row.uuid, v, f))

    # R7 for instances with no domain left: the dirs and the row, or the row alone
    # (only known when the domain list could be read).
    if policy.reclaim_instance_interval > 0 and inv.domains.ok:
        for row in view.instances.values():
            if row.uuid in domain_uuids or not rules.is_reclaimable(
                    row, host, policy.reclaim_instance_interval, now):
                continue
            local_dirs = dirs_by_uuid.get(row.uuid, [])
            ev = rules.row_evidence(row)
            ev["dirs"] = [d.path for d in local_dirs]
            free = _free_dirs(local_dirs, users, unreadable, None, ev)
            f = add(Finding(ResourceKind.INSTANCE if not local_dirs else ResourceKind.INSTANCE_DIR,
                            local_dirs[0].path if local_dirs else row.uuid, row.uuid,
                            Classification.RECLAIMABLE, Action.RECLAIM,
                            "soft-deleted longer than reclaim_instance_interval "
                            f"({policy.reclaim_instance_interval}s); no domain left", ev))
            teardowns.append(TeardownPlan(
                instance_uuid=row.uuid, classification=Classification.RECLAIMABLE,
                action=Action.RECLAIM, domain_name=None,
                dirs=free, destroy_disks=True, finalize_db=True,
                reason=f.reason, findings=(f,)))

    for d in dirs:
        row = view.instances.get(d.uuid)
        if row is not None and (row.uuid in finishing or rules.is_reclaimable(
                row, host, policy.reclaim_instance_interval, now)):
            continue    # part of the reclaim above
        v = rules.classify_dir(d, row, migs.get(d.uuid, []), host,
                               domain_present=d.uuid in domain_uuids, shared=shared,
                               used_by_domain=rules.dir_user(d.path, users, unreadable))
        if v is None:
            continue
        if not inv.domains.ok and v.fixed_action is None:
            # Without the domain list a running guest's disk could be in here.
            v = dataclasses.replace(v, fixed_action=Action.LOG, reason=v.reason
                                    + "; but the domain list is unavailable, so only logging")
        action = _action(v, policy)
        f = add(Finding(ResourceKind.INSTANCE_DIR, d.path, d.uuid, v.classification,
                        action, v.reason, v.evidence))
        if f is not None and action is Action.REAP:
            teardowns.append(TeardownPlan(
                instance_uuid=d.uuid, classification=v.classification, action=action,
                domain_name=None, dirs=(d.path,), destroy_disks=True, finalize_db=False,
                reason=v.reason, findings=(f,), shared_storage=shared))

    return Plan(findings=tuple(findings), teardowns=tuple(teardowns))


def _free_dirs(local_dirs, users, unreadable, own, ev: dict) -> tuple[str, ...]:
    """The instance's directories a teardown may delete: those no other domain uses.
    The others stay (listed in the evidence); once the instance is gone they are
    judged again on their own, as R8-R10 directories."""
    free, kept = [], {}
    for d in local_dirs:
        why = rules.dir_user(d.path, users, unreadable, own)
        if why is None:
            free.append(d.path)
        else:
            kept[d.path] = why
    if kept:
        ev["dirs_kept"] = kept
    return tuple(free)


def dirs_in_use(plan: TeardownPlan, real_dirs: tuple[str, ...], domains) -> str | None:
    """Compare-and-act on libvirt's current domain list for a teardown that deletes
    directories (``real_dirs``: its ``dirs`` resolved, as the executor reads them
    right before acting). Why they may not be deleted now, or None.

    A directory any defined domain uses is never deleted, whatever the domain's uuid;
    the only exception is the domain this teardown itself destroys and undefines
    (its ``domain_name`` with the plan's uuid). A teardown planned with no domain of
    its instance (orphan directory, row-only reclaim) is also off once a domain with
    that uuid is defined again. Interrupted deletes and stale resizes may have one:
    the latter is re-classified on the fresh row (``reverify_dir``).
    """
    users = rules.file_index(domains)
    unreadable = [d for d in domains if not d.readable]
    own = (plan.instance_uuid, plan.domain_name) if plan.domain_name else None
    for path in real_dirs:
        head, name = path.rstrip("/").rsplit("/", 1)
        # the _del name it is renamed to (and a stale one removed first) counts too
        for p in (path, f"{head}/{name.split('_', 1)[0]}_del"):
            why = rules.dir_user(p, users, unreadable, own)
            if why is not None:
                return f"{p} is in use: {why}; not deleting it"
    if plan.domain_name is None and plan.classification not in (
            Classification.INTERRUPTED_DELETE, Classification.STALE_RESIZE):
        for d in domains:
            if d.uuid == plan.instance_uuid:
                return (f"domain {d.name!r} with this instance's uuid is defined again; "
                        f"the teardown was planned without one")
    return None


def build_plan(inv: Inventory, view: NovaView, policy: Policy,
               now: datetime.datetime, *, journaled: frozenset[str] = frozenset(),
               extensions: Sequence[Callable[[PlanContext], Plan]] = ()) -> Plan:
    """The core plan, then each of ``extensions`` (a further kind's ``plan``) adding
    to it in order. A pass plans through its kinds manager (reaper.kinds.manager),
    which folds the enabled kinds the same way."""
    plan = core_plan(inv, view, policy, now, frozenset(journaled))
    for ext in extensions:
        plan = ext(PlanContext(inv, view, policy, now, plan, frozenset(journaled)))
    return plan


# The executor steps that write Nova's DB (reaper.nova.reclaim); nothing else does.
DB_WRITING_STEPS = frozenset({"claim", "release_claim", "finalize_db",
                              "complete_migration"})


def writes_nova_db(t: TeardownPlan) -> bool:
    """A reclaim (claim ... finalize) or the release of a stranded claim."""
    return t.action in (Action.RECLAIM, Action.RELEASE) or t.finalize_db


def without_db_writes(plan: Plan, why: str) -> Plan:
    """``plan`` for a Nova DB the reaper may not write: every teardown that would write
    it (reclaims, releases of stranded claims) is dropped whole, and its findings are
    kept as 'log' with ``why``. Whatever those teardowns held (the instance's domain,
    directories, VIFs, volumes) stays: the extensions gave it to them, so it is not
    turned into a leak either. Teardowns that only read the DB are unchanged."""
    dropped = [t for t in plan.teardowns if writes_nova_db(t)]
    if not dropped:
        return plan
    verb = {Action.RECLAIM: "not reclaimed", Action.RELEASE: "claim not released"}
    notes = {f.key: f"{verb.get(t.action, 'not done')}: the Nova DB is read-only for the "
                    f"reaper ({why})"
             for t in dropped for f in t.findings}
    findings = tuple(
        dataclasses.replace(f, action=Action.LOG, reason=f"{f.reason}; {notes[f.key]}",
                            evidence={**f.evidence, "db_read_only": why})
        if f.key in notes else f for f in plan.findings)
    return Plan(findings=findings,
                teardowns=tuple(t for t in plan.teardowns if not writes_nova_db(t)))


def _drift(dom, volume_ids: set[str]) -> list[Finding]:
    extra, missing = rules.attachment_drift(dom, volume_ids)
    out = []
    for vol in sorted(extra):
        out.append(Finding(
            ResourceKind.VOLUME_ATTACHMENT, f"{dom.name}:{vol}", dom.uuid,
            Classification.ATTACHMENT_DRIFT, Action.LOG,
            "volume attached in the domain XML has no live block_device_mapping "
            "(a detach that failed half way?)",
            {"volume_id": vol, "in_domain_xml": True, "live_bdm": False}))
    for vol in sorted(missing):
        out.append(Finding(
            ResourceKind.VOLUME_ATTACHMENT, f"{dom.name}:{vol}", dom.uuid,
            Classification.ATTACHMENT_DRIFT, Action.LOG,
            "live block_device_mapping whose volume is absent from the domain XML",
            {"volume_id": vol, "in_domain_xml": False, "live_bdm": True}))
    return out


def reverify(plan: TeardownPlan, row, migrations, policy: Policy,
             now: datetime.datetime, reverifiers: Mapping[str, Callable] | None = None
             ) -> tuple[bool, str]:
    """Compare-and-act: does a freshly read row still justify this teardown?

    ``reverifiers``: leak classification -> the compare-and-act of the kind that owns
    it (reaper.kinds.manager.KindManager.reverifiers): a leak belongs to no row."""
    if plan.classification is Classification.RECLAIMABLE:
        if policy.reclaim_instance_interval <= 0:
            return False, "reclaim is now disabled (reclaim_instance_interval = 0)"
        if (plan.claim_marker and row is not None and row.is_claimed
                and not rules.old_enough(row.deleted_at, policy.reclaim_instance_interval,
                                         now)):
            return False, ("soft-deleted less than reclaim_instance_interval ago now: the "
                           "next pass releases the claim instead")
        # The conditional claim UPDATE (or, for a stranded claim of ours, the
        # compare-and-swap of its marker) is the check for reclaim; a resumed reclaim
        # re-checks its own claim in the executor.
        return True, "reclaim is guarded by its conditional claim"
    if plan.classification is Classification.STRANDED_CLAIM:
        if row is None or row.host != policy.host or not row.is_claimed:
            return False, "nothing to release: the row is no longer claimed on this host"
        return True, "the release is conditional on this host's claim marker"
    if policy.action_for(plan.classification) is not plan.action:
        return False, (f"the configured action for {plan.classification.value} is now "
                       f"{policy.action_for(plan.classification).value}")
    if reverifiers and plan.classification in reverifiers:
        return reverifiers[plan.classification](plan, row, migrations, policy, now)
    if plan.domain_name is None:
        return _reverify_dir(plan, row, migrations, policy)
    v = rules.classify_instance(
        plan.instance_uuid, row, list(migrations), policy.host,
        running_deleted_timeout=policy.running_deleted_timeout,
        reclaim_interval=policy.reclaim_instance_interval, now=now)
    if v.classification is plan.classification:
        return True, v.reason
    if (plan.classification is Classification.EVACUATING and plan.action is Action.SHUTDOWN
            and v.classification is Classification.EVACUATED):
        # The evacuation finished meanwhile: the destination runs the instance, so the
        # power-off is all the more due (the full teardown follows in a later pass).
        return True, v.reason
    return False, f"now classified {v.classification.value}: {v.reason}"


def _reverify_dir(plan, row, migrations, policy) -> tuple[bool, str]:
    return reverify_dir(plan, row, migrations, policy)


def reverify_dir(plan, row, migrations, policy, *,
                 domain_present: bool = False) -> tuple[bool, str]:
    """Classify the directory again on the fresh row, as the planner did; with
    ``domain_present`` (a domain of its uuid is defined now) by that rule."""
    path = plan.dirs[0]
    name = path.rstrip("/").rsplit("/", 1)[-1]
    kind = (DirKind.DELETING if name.endswith("_del") else
            DirKind.RESIZE if name.endswith("_resize") else DirKind.INSTANCE)
    d = InstanceDir(name=name, uuid=plan.instance_uuid, kind=kind, path=path,
                    size_bytes=0, mtime=0.0)
    v = rules.classify_dir(d, row, list(migrations), policy.host,
                           domain_present=domain_present, shared=plan.shared_storage,
                           used_by_domain=None)
    if v is None:
        return False, "the directory is in use again (live instance or move in flight)"
    if v.classification is not plan.classification:
        return False, f"now classified {v.classification.value}: {v.reason}"
    if v.fixed_action is not None:
        return False, v.reason
    return True, v.reason
