"""Run one instance's teardown as ordered, idempotent, journaled steps.

The executor is the only place that changes anything. Before the first
destructive step it re-reads the instance's row and asks the planner whether
the plan is still justified (compare-and-act); every step is journaled before
and after it runs, so a crash resumes at the step it interrupted.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
from typing import Callable, Sequence

from oslo_log import log as logging

from reaper import exception
from reaper import instancelog
from reaper import planner
from reaper.kinds.services import plugin as service_wiring
from reaper.kinds.instance import domain as domain_steps
from reaper.kinds.instance import files as file_steps
from reaper.kinds.instance import libvirt as libvirt_inv
from reaper.nova import reclaim as nova_reclaim
from reaper.nova import view as nova_view
from reaper.objects.fields import Action, Classification, StepStatus
from reaper.objects.nova import ClaimMarker
from reaper.objects.plan import TeardownPlan
from reaper.objects.step import StepOutcome, StepResult, TeardownResult
from reaper.services import COMPLETE_MIGRATION, RELEASE_PORTS, REMOVE_NODE_ALLOCATIONS
from reaper.services import SERVICE_OF

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class Outcome:
    plan: TeardownPlan
    result: TeardownResult
    reason: str
    steps: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    leftovers: dict | None = None
    journal_id: int | None = None
    # A resumed entry whose host teardown (and finalize) were done in an earlier
    # attempt: only its service steps ran (their notification is not a second
    # "reclaimed"/"reaped").
    services_retry: bool = False


@dataclasses.dataclass
class Context:
    conn: object                # libvirt connection (may be None when no domain step runs)
    engine: object              # SQLAlchemy engine on Nova's DB
    state: object               # reaper.state.StateDB
    policy: object              # reaper.policy.Policy
    clock: Callable[[], datetime.datetime]
    # The Reaper's resource kinds (reaper.kinds.manager.KindManager): the steps of a
    # plan, and who runs those that are not the primary kind's. None: the installed
    # kinds, known but none enabled beyond the primary's steps (tests of the core).
    kinds: object | None = None
    # Told of every step done: ``fn(ctx, plan, step, pass_id)`` (Nova's delete
    # notifications, reaper.nova_notify). They only report: one that raises is logged
    # and never fails or holds up the teardown.
    step_listeners: Sequence[Callable] = ()
    # The agent's SIGTERM: checked between steps, never inside one.
    should_stop: Callable[[], bool] = lambda: False
    # The agent's liveness ping (sd_notify WATCHDOG), called before each step.
    heartbeat: Callable[[], None] = lambda: None


# Steps outside the host (reaper.kinds.services.plugin): a failure is journaled and retried
# next pass but stops neither the following steps nor finalize_db.
SOFT_STEPS = frozenset(SERVICE_OF) | {COMPLETE_MIGRATION}


def _step_done(ctx: Context, plan: TeardownPlan, step: str, pass_id: str) -> None:
    for listener in ctx.step_listeners:
        try:
            listener(ctx, plan, step, pass_id)
        except Exception:  # a listener never fails a teardown
            LOG.exception("step listener %r failed after step %s of %s", listener, step,
                          plan.instance_uuid, **instancelog.kw(plan.instance_uuid))


def steps_for(plan: TeardownPlan, kinds=None) -> list[str]:
    """Nova's teardown order (README "Teardown order"), for what this plan holds: the
    steps of every kind ordered by phase (reaper.kinds.Phase). ``kinds``: a
    KindManager; None: the installed kinds."""
    return _kinds(kinds).steps_for(plan)


def _kinds(kinds):
    if kinds is not None:
        return kinds
    from reaper.kinds import manager
    return manager.KindManager.installed()


def _verify(ctx: Context, plan: TeardownPlan, claimed: bool = False,
            files_pending: bool = False) -> None:
    row, migs = nova_view.reread(ctx.engine, plan.instance_uuid)
    ok, why = planner.reverify(plan, row, migs, ctx.policy, ctx.clock(),
                               _kinds(ctx.kinds).reverifiers())
    if not ok:
        raise exception.Aborted(why)
    if claimed:
        # Resuming a reclaim whose claim is done: the row must still be ours
        # (an operator's reset-state, for one, ends the reclaim).
        finalized = row is not None and (row.archived or (
            row.deleted != 0 and row.vm_state == "deleted"))
        if not (finalized or _ours(ctx, row)):
            raise exception.Aborted(
                "the reclaim's claim is gone: the row is no longer soft-deleted "
                "and claimed by this host (with this host's claim marker)")
    if files_pending:
        # Before anything is destroyed: a directory a domain took into use since the
        # plan (or since the journaled attempt) ends the teardown here, not half way.
        _dirs_free(ctx, plan, (row, migs))


def _ours(ctx: Context, row) -> bool:
    """The row is claimed on our host and its claim marker (read now) is this host's:
    a claim without a marker looks exactly like Nova's own delete, and is not ours."""
    if row is None or row.host != ctx.policy.host or not row.is_claimed:
        return False
    markers = nova_view.reread_claim_markers(ctx.engine, row.uuid)
    return bool(markers) and all(
        (m := ClaimMarker.parse(v)) is not None and m.host == ctx.policy.host for v in markers)


def _dirs_free(ctx: Context, plan: TeardownPlan, fresh=None, only: str | None = None) -> None:
    """The planner's "a directory any defined domain uses is never deleted", again on
    libvirt's current domain list: a resumed teardown may run passes after its plan,
    and a guest may have been defined on these files since (a rebuild, an operator's
    virsh define, the instance's own domain defined again)."""
    if ctx.conn is None:
        raise exception.StepFailed("no libvirt connection to check that no domain uses the files")
    res = libvirt_inv.collect_domains(ctx.conn, ctx.policy.instance_name_template)
    if not res.ok:
        raise exception.StepFailed(f"cannot check that no domain uses the files: {res.error}")
    real = tuple(os.path.realpath(p) for p in ((only,) if only else plan.dirs))
    why = planner.dirs_in_use(plan, real, res.items)
    if why is not None:
        raise exception.Aborted(why)
    if plan.domain_name is None and plan.classification is Classification.STALE_RESIZE \
            and any(d.uuid == plan.instance_uuid for d in res.items):
        # The instance's domain is here: the _resize is stale only by that rule.
        row, migs = fresh or nova_view.reread(ctx.engine, plan.instance_uuid)
        ok, why = planner.reverify_dir(plan, row, migs, ctx.policy, domain_present=True)
        if not ok:
            raise exception.Aborted(why)


def _claim(ctx: Context, plan: TeardownPlan, resuming: bool, pass_id: str,
           now: datetime.datetime) -> StepResult:
    host = ctx.policy.host
    if plan.claim_marker:
        # A stranded claim of this host: take exactly that one over, or nothing.
        if nova_reclaim.adopt(ctx.engine, plan.instance_uuid, host, plan.claim_marker, now,
                              pass_id):
            return StepResult.done(f"adopted this host's stranded claim ({plan.claim_marker})")
    elif nova_reclaim.claim(ctx.engine, plan.instance_uuid, host,
                            ctx.policy.reclaim_instance_interval, now, pass_id):
        return StepResult.done(f"claimed (task_state=deleting, marker "
                               f"{nova_reclaim.marker_for(host, now, pass_id)})")
    if resuming:
        # Our own claim (or adoption) may have committed just before a crash.
        row = nova_view.reread_instance(ctx.engine, plan.instance_uuid)
        if _ours(ctx, row):
            return StepResult.absent("already claimed by our earlier attempt")
        if row is not None and row.deleted != 0 and row.vm_state == "deleted":
            return StepResult.absent("already finalized")
    raise exception.Aborted("claim lost: the instance was restored or changed since it was planned")


def _release_claim(ctx: Context, plan: TeardownPlan) -> StepResult:
    """A stranded claim of this host that no longer justifies a reclaim: give it back."""
    if nova_reclaim.release(ctx.engine, plan.instance_uuid, ctx.policy.host, ctx.clock(),
                            marker=plan.claim_marker):
        return StepResult.done(
            f"released this host's claim ({plan.claim_marker}): task_state NULL again")
    row = nova_view.reread_instance(ctx.engine, plan.instance_uuid)
    if row is not None and not row.is_claimed:
        return StepResult.absent("already released")
    raise exception.Aborted(
        "the claim is no longer this host's claim that was planned: not releasing")


def _release_failed_claim(ctx: Context, plan: TeardownPlan, pass_id: str,
                          started: datetime.datetime) -> StepResult:
    """After a claim step that raised (the DB failed around its transaction), give the
    row back to Nova (restorable) only if this attempt's claim committed: the release is
    conditional on exactly the marker this attempt wrote. A row someone else set to
    'deleting' meanwhile (Nova's force-delete, another host) is never touched. An
    adopted stranded claim is kept: the journal resumes it."""
    host = ctx.policy.host
    mine = nova_reclaim.marker_for(host, started, pass_id)
    try:
        if plan.claim_marker:
            return StepResult.kept("a stranded claim of ours stays for the next attempt")
        if nova_reclaim.release(ctx.engine, plan.instance_uuid, host, ctx.clock(),
                                marker=mine):
            return StepResult.done(f"released our claim ({mine})")
        return StepResult.absent("nothing of ours to release")
    except Exception as e:  # noqa: BLE001 - the DB is failing: the next pass resumes
        LOG.warning("could not release the claim: %s", e, instance_uuid=plan.instance_uuid)
        return StepResult(StepOutcome.FAILED, str(e), "release failed too: {}")


def _files_gone(ctx: Context, uuid: str) -> bool:
    """What the libvirt driver's ``delete_instance_files`` reports, and so what
    ``instances.cleaned`` says: none of ``<uuid>``, ``<uuid>_resize``, ``<uuid>_del``
    is left under instances_path. False (files kept, e.g. on shared storage) leaves
    ``cleaned = 0``: nova-compute's ``_run_pending_deletes`` retries them, as after a
    failed delete of its own."""
    base = os.path.join(ctx.policy.instances_path, uuid)
    return not any(os.path.lexists(base + sfx) for sfx in ("", "_resize", "_del"))


def _ports_released(plan: TeardownPlan, done_steps: dict[str, StepStatus | str]) -> bool:
    """Whether Neutron has released the instance's ports (the network step is done):
    only then may finalize empty its network_info cache, as Nova's
    deallocate_for_instance does."""
    return RELEASE_PORTS in plan.services and done_steps.get(RELEASE_PORTS) == StepStatus.DONE


def _run_step(ctx: Context, plan: TeardownPlan, step: str, resuming: bool,
              pass_id: str = "-", now: datetime.datetime | None = None,
              done_steps: dict[str, StepStatus | str] | None = None) -> StepResult:
    """Run one step; what it did (``str()`` of it is what the journal holds)."""
    uuid = plan.instance_uuid
    if step == "claim":
        return _claim(ctx, plan, resuming, pass_id, now or ctx.clock())
    if step == "release_claim":
        return _release_claim(ctx, plan)
    if step in ("destroy_domain", "power_off"):
        return domain_steps.destroy(ctx.conn, uuid)
    if step == "delete_files":
        done = []
        for path in plan.dirs:
            _dirs_free(ctx, plan, only=path)        # right before its rename
            done.append(file_steps.delete_instance_dir(path, ctx.policy.instances_path))
        outcome = (StepOutcome.DONE if any(r.outcome is StepOutcome.DONE for r in done)
                   else StepOutcome.ABSENT)
        return StepResult(outcome, "; ".join(str(r) for r in done))
    if step == "undefine_domain":
        return domain_steps.undefine(ctx.conn, uuid)
    if step == "finalize_db":
        res = nova_reclaim.finalize(ctx.engine, uuid, ctx.clock(), host=ctx.policy.host,
                                    cleaned=_files_gone(ctx, uuid),
                                    ports_released=_ports_released(plan, done_steps or {}))
        if not (res["finalized"] or res["already_finalized"]):
            raise exception.Aborted(f"DB not finalized: {res['result']}: {res['reason']}")
        counts = ", ".join(f"{table} {n}" for table, n in (res["counts"] or {}).items() if n)
        # "finalized: instances 1, ..." / "already_finalized: <why>"
        return StepResult(StepOutcome.DONE if res["finalized"] else StepOutcome.ABSENT,
                          counts or res["reason"], f"{res['result']}: {{}}")
    return StepResult.of(_kinds(ctx.kinds).run_step(ctx, step, plan))


def run_core_step(ctx: Context, plan: TeardownPlan, step: str, resuming: bool) -> StepResult:
    """One step of the primary kind outside a journaled attempt."""
    return _run_step(ctx, plan, step, resuming)


def execute(ctx: Context, plan: TeardownPlan, pass_id: str, *, journal_id: int | None = None,
            done_steps: dict[str, StepStatus | str] | None = None) -> Outcome:
    """Run (or resume) a teardown. Never raises for a step failure: it is reported."""
    resuming = journal_id is not None
    done_steps = done_steps or {}
    out = Outcome(plan, TeardownResult.DONE, plan.reason)
    leftovers = None
    try:
        # Compare-and-act before anything changes (and again when resuming).
        _verify(ctx, plan, claimed=plan.action is Action.RECLAIM
                and done_steps.get("claim") == StepStatus.DONE,
                files_pending=bool(plan.dirs)
                and done_steps.get("delete_files") != StepStatus.DONE)
        if plan.action is Action.RECLAIM and "finalize_db" not in (
                s for s, st in done_steps.items() if st == StepStatus.DONE):
            leftovers = nova_reclaim.leftovers(ctx.engine, plan.instance_uuid)
    except exception.Aborted as e:
        if resuming:
            ctx.state.finish(journal_id, "aborted", ctx.clock(), str(e))
        # What an interrupted attempt already did stays in the record: the pass that
        # did it may have died before writing its own.
        earlier = [(s, str(StepResult.done_earlier())) for s in steps_for(plan, ctx.kinds)
                   if done_steps.get(s) == StepStatus.DONE]
        return Outcome(plan, TeardownResult.ABORTED, str(e), steps=earlier,
                       journal_id=journal_id)
    except Exception as e:  # noqa: BLE001 - DB unreachable while re-verifying: act on nothing
        if resuming:
            ctx.state.retry(journal_id, ctx.clock(), f"re-verify failed: {e}")
        return Outcome(plan, TeardownResult.FAILED, f"could not re-verify: {e}",
                       journal_id=journal_id)

    if ctx.should_stop():
        return Outcome(plan, TeardownResult.INTERRUPTED, "the agent is stopping: not started",
                       journal_id=journal_id)
    if journal_id is None:
        journal_id = ctx.state.begin(plan, pass_id, ctx.clock())
    out.journal_id = journal_id
    out.leftovers = leftovers
    done = dict(done_steps)                 # step -> StepStatus, as this attempt goes on
    service_status: dict[str, dict] = {}    # service step -> its leftover record
    pending: list[str] = []                 # service steps left for the next pass
    host_steps = [s for s in steps_for(plan, ctx.kinds) if s not in SOFT_STEPS]
    out.services_retry = bool(plan.services) and bool(host_steps) and all(
        done_steps.get(s) == StepStatus.DONE for s in host_steps)
    for step in steps_for(plan, ctx.kinds):
        if done_steps.get(step) == StepStatus.DONE:
            earlier = str(StepResult.done_earlier())
            out.steps.append((step, earlier))
            if step in SOFT_STEPS:
                service_status[step] = _status(step, "done", earlier)
            continue
        if step == COMPLETE_MIGRATION and done.get(REMOVE_NODE_ALLOCATIONS) != StepStatus.DONE:
            # Only once the allocations are off this node: a migration left 'done'
            # is what makes nova-compute's next start finish both.
            out.steps.append((step, str(StepResult.waits_for(REMOVE_NODE_ALLOCATIONS))))
            pending.append(step)
            continue
        if ctx.should_stop():
            # The journal entry stays 'running': the next start resumes here.
            return dataclasses.replace(
                out, result=TeardownResult.INTERRUPTED,
                reason=f"the agent is stopping: resumes at step {step} on the next pass")
        ctx.heartbeat()
        started = ctx.clock()
        ctx.state.step(journal_id, step, StepStatus.STARTED, started)
        try:
            result = _run_step(ctx, plan, step,
                               resuming or done_steps.get(step) == StepStatus.STARTED,
                               pass_id, started, done)
        except exception.ServiceFailed as e:
            if e.result.error == "not configured":
                # The section was removed since the plan: the step is given up, and
                # what it would do stays in the leftovers.
                detail = str(StepResult.not_done(e.result.detail))
                ctx.state.step(journal_id, step, StepStatus.DONE, ctx.clock(), detail)
                done[step] = StepStatus.DONE
                out.steps.append((step, detail))
                service_status[step] = _status(step, "not_configured", detail)
                continue
            _soft_failure(ctx, journal_id, step, e.result.detail, out, pending)
            service_status[step] = e.result.record()
            continue
        except exception.Aborted as e:
            ctx.state.step(journal_id, step, StepStatus.FAILED, ctx.clock(), str(e))
            ctx.state.finish(journal_id, "aborted", ctx.clock(), str(e))
            result = TeardownResult.BACKED_OFF if step == "claim" else TeardownResult.ABORTED
            return dataclasses.replace(out, result=result, reason=str(e))
        except Exception as e:  # noqa: BLE001 - not Aborted: retried (StepFailed, library errors)
            if step in SOFT_STEPS:
                _soft_failure(ctx, journal_id, step, str(e), out, pending)
                service_status[step] = _status(step, "failed", str(e), error=str(e))
                continue
            LOG.warning("teardown of %s: step %s failed: %s", plan.instance_uuid, step, e,
                        **instancelog.kw(plan.instance_uuid))
            ctx.state.step(journal_id, step, StepStatus.FAILED, ctx.clock(), str(e))
            ctx.state.retry(journal_id, ctx.clock(), f"{step}: {e}")
            out.steps.append((step, str(StepResult.failed(e))))
            if step == "claim":
                out.steps.append(("release_claim", str(_release_failed_claim(
                    ctx, plan, pass_id, started))))
            return dataclasses.replace(out, result=TeardownResult.FAILED,
                                       reason=f"{step} failed: {e}")
        detail = str(result)
        ctx.state.step(journal_id, step, StepStatus.DONE, ctx.clock(), detail)
        done[step] = StepStatus.DONE
        out.steps.append((step, detail))
        _step_done(ctx, plan, step, pass_id)
        if step in SOFT_STEPS:
            service_status[step] = _status(step, "done", detail)
    if plan.service_facts is not None:
        left = service_wiring.leftovers(plan, service_status, leftovers)
        # A reclaim always records what it leaves; an evacuated teardown when a step
        # is pending or its service is not configured here (the source allocations
        # stay, for nova-compute's next start or an operator).
        if plan.action is Action.RECLAIM or pending or (left and any(
                r.get("status") != "done" for r in (left.get("services") or {}).values())):
            out.leftovers = left
    if pending:
        # The host part is done; the entry stays running and the next pass retries
        # exactly the service steps that are not done.
        why = "; ".join(f"{s}: {service_status.get(s, {}).get('detail') or 'waits'}"
                        for s in pending)
        ctx.state.retry(journal_id, ctx.clock(), f"service steps pending: {why}")
        if out.services_retry:
            return dataclasses.replace(out, result=TeardownResult.FAILED,
                                       reason=f"service steps failed again: {why}")
        return dataclasses.replace(
            out, reason=f"{plan.reason}; left for the next pass: {', '.join(pending)}")
    ctx.state.finish(journal_id, "done", ctx.clock())
    return out


def _status(step: str, status: str, detail: str, error: str | None = None) -> dict:
    """The leftover record of a service step (see reaper.services.StepResult.record)."""
    return {"step": step, "service": SERVICE_OF.get(step), "status": status,
            "detail": detail, "error": error, "left": {}, "kept": {}}


def _soft_failure(ctx: Context, journal_id: int, step: str, detail: str, out: Outcome,
                  pending: list[str]) -> None:
    """A service step that failed: journaled failed, retried next pass; the teardown
    goes on with the next step."""
    LOG.warning("teardown of %s: step %s failed (retried next pass): %s",
                out.plan.instance_uuid, step, detail, **instancelog.kw(out.plan.instance_uuid))
    ctx.state.step(journal_id, step, StepStatus.FAILED, ctx.clock(), detail)
    out.steps.append((step, str(StepResult.failed(detail))))
    pending.append(step)
