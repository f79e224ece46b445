"""One reconciliation pass: collect -> view -> plan -> guard -> execute -> audit.

This is the imperative shell around the pure planner and guards. Whatever starts
it (the agent's timers or RPC, ``reaper-manage``, ``reaper-agent --once``, the
nova-log watcher), a pass:

- holds the host's pass lock (reaper.passlock) from start to end, so passes of
  different processes never overlap; a pass that cannot get it in time raises
  ``exception.Busy`` and does nothing;
- reads the host's pause from the state DB itself: a paused host runs audits and
  dry runs, and refuses destruction with the ``paused`` guard;
- resumes only journal entries whose owner is gone (a crash), never one a live
  process holds, and in a targeted pass only its own instance's;
- sets aside (quarantines) journal entries it cannot read instead of failing;
- acts on nothing it cannot journal: a state DB it cannot use trips the
  ``state_unavailable`` guard;
- writes Nova's DB only if it may (``[database] read_only``, resolved by
  ``reaper.nova.grants.detect`` once in a pass that has a write to do): else its
  reclaims and releases are reported, not done, and journaled reclaims wait.
"""
from __future__ import annotations

import dataclasses
import datetime
import gc
import os
import time
import uuid as uuidlib
from typing import Callable

from oslo_log import log as logging

from reaper import exception
from reaper import instancelog
from reaper import audit as audit_mod
from reaper import guards, identity, passlock, planner, policy as policy_mod, procid
from reaper.kinds.manager import KindManager
from reaper.kinds.services import plugin as service_wiring
from reaper import state as state_mod
from reaper.conf import CONF
from reaper.executor import teardown
from reaper.kinds.instance import dirs as dir_inv
from reaper.kinds.instance import libvirt as libvirt_inv
from reaper.nova import changes as nova_changes
from reaper.nova import db as nova_db
from reaper.nova import grants as nova_grants
from reaper.nova import view as nova_view
from reaper.kinds.instance import rules
from reaper.objects.fields import Action, Classification, ResourceKind, StepStatus
from reaper.objects.host import CollectorResult, Inventory
from reaper.objects.plan import GuardResult
from reaper.objects.step import TeardownResult
from reaper.report import PassReport
from reaper.services import COMPLETE_MIGRATION

LOG = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class _ViewCache:
    """The last full view of this process, what it was read for, and when; and when a
    deep change check last matched it (``deep_at``, the full read's time at first)."""
    host: str
    local: frozenset[str]
    view: object
    fingerprint: nova_changes.Fingerprint
    at: float
    deep_at: float = 0.0

MODES = ("audit", "reap", "reclaim")


def utcnow() -> datetime.datetime:
    """Naive UTC, like Nova's timestamps."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


@dataclasses.dataclass
class Reaper:
    """The host's long-lived handles; one pass at a time goes through run_pass."""
    policy: policy_mod.Policy
    libvirt_uri: str
    engine: object
    state: state_mod.StateDB
    audit: audit_mod.AuditLog
    compute_id_file: str | None = None
    clock: Callable[[], datetime.datetime] = utcnow
    # Override to share one connection across passes (the in-process test
    # driver keeps its state per connection); None opens one per pass.
    connect: Callable[[], object] | None = None
    # The resource kinds this Reaper reconciles (reaper.kinds.manager), primary first;
    # a Reaper built piecewise has the primary kind only until others are added.
    kinds: KindManager = dataclasses.field(default_factory=KindManager.primary_only)
    # Told of every teardown step done (teardown.Context.step_listeners).
    step_listeners: list = dataclasses.field(default_factory=list)
    # Reporting hooks the agent and build_from_conf set: closed with the Reaper.
    notifications: object | None = None         # reaper.notifications.Emitter
    nova_delete_events: object | None = None    # reaper.nova_notify.DeleteEvents
    # Set by the agent: SIGTERM (checked between teardown steps and between
    # teardowns) and the watchdog ping (called between phases and steps).
    should_stop: Callable[[], bool] = lambda: False
    heartbeat: Callable[[], None] = lambda: None
    # Seconds a pass waits for the pass lock unless its caller says otherwise.
    lock_timeout: float = 300.0
    # The host's pass lock; None: the one under the state DB's directory.
    pass_lock: passlock.PassLock | None = None
    # [database] read_only: "auto" (asked of the DB in a pass that would write),
    # "true" or "false".
    db_read_only: str = "auto"
    # [reaper] full_view_interval: seconds an unchanged view may stand in for a full
    # read (reaper.nova.changes); 0: every pass reads the whole view.
    full_view_interval: float = 0.0
    # [reaper] deep_check_interval: seconds between change checks that hash the block
    # device mappings and info caches too; 0: none (those wait for the full view).
    deep_check_interval: float = 0.0
    monotonic: Callable[[], float] = time.monotonic
    _parse_cache: libvirt_inv.ParseCache = dataclasses.field(
        default_factory=libvirt_inv.ParseCache, repr=False)
    _view_cache: _ViewCache | None = dataclasses.field(default=None, repr=False)
    # The plan _unchanged_view made from the cached view (no teardown), for the pass
    # that then uses that view: planning the same inputs twice costs a whole plan.
    _check_plan: object | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self):
        if self.pass_lock is None:
            self.pass_lock = passlock.PassLock(os.path.dirname(self.state.path))
        # Journaled plans may hold the classifications of any known kind.
        self.state.classify = self.kinds.classification

    @classmethod
    def from_conf(cls, conf=CONF, kinds: KindManager | None = None) -> "Reaper":
        """The Reaper of ``conf``, with ``kinds`` (default: the ``[reaper]
        resource_kinds`` of ``conf``, not opened yet)."""
        kinds = kinds if kinds is not None else KindManager.from_conf(conf)
        pol = policy_mod.from_conf(conf, kinds)
        return cls(policy=pol, kinds=kinds, libvirt_uri=conf.libvirt.connection_uri,
                   engine=nova_db.engine_from_conf(conf),
                   state=state_mod.open_checked(conf.state_path,
                                                busy_timeout=conf.reaper.state_db_timeout),
                   audit=audit_mod.AuditLog(conf.reaper.audit_log or None, pol.host),
                   compute_id_file=conf.compute_id_file,
                   lock_timeout=conf.reaper.pass_lock_timeout,
                   db_read_only=conf.database.read_only,
                   full_view_interval=conf.reaper.full_view_interval,
                   deep_check_interval=conf.reaper.deep_check_interval)

    def add_kind(self, kind, conf=CONF) -> "Reaper":
        """Enable an opened ``kind`` on a Reaper built piecewise (as tests do; a Reaper
        built from the configuration has its kinds already); returns it. The policy
        gains the configured action of each classification the kind owns that it has
        no action for yet."""
        self.kinds.add(kind)
        missing = {cls: Action(getattr(conf.reaper, opt.name))
                   for cls, opt in kind.describe().actions.items()
                   if cls not in self.policy.actions}
        if missing:
            self.policy = dataclasses.replace(self.policy,
                                              actions={**self.policy.actions, **missing})
        return self

    def close(self) -> None:
        self.state.close()
        self.audit.close()
        self.kinds.close()      # netlink socket, OVSDB session...
        for handle in (self.nova_delete_events, self.notifications):
            close = getattr(handle, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # best effort on shutdown
                    LOG.debug("closing %r failed", handle, exc_info=True)
        try:
            self.engine.dispose()
        except Exception:   # noqa: BLE001 - best effort on shutdown
            pass

    # -- collection -------------------------------------------------------------

    def _collect(self, conn) -> Inventory:
        """Every enabled kind's collectors; the primary kind's domains and directories
        are the inventory's own fields, the others' its ``extra``."""
        extra = self.kinds.collect(self, conn)      # a failure is ok=False, never raised
        domains = extra.pop(ResourceKind.DOMAIN.value)
        dirs = extra.pop(ResourceKind.INSTANCE_DIR.value)
        try:
            fs = dir_inv.filesystem_type(self.policy.instances_path)
        except OSError:
            fs = None
        return Inventory(domains=domains, dirs=dirs, instances_fs_type=fs, extra=extra)

    def _compute_id(self) -> str | None:
        if not self.compute_id_file:
            return None
        try:
            with open(self.compute_id_file) as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    def _close_libvirt(self, conn) -> None:
        """Close a connection _open_libvirt opened (a shared test connection stays)."""
        if conn is not None and self.connect is None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass

    def _open_libvirt(self):
        if self.connect is not None:
            return self.connect()
        try:
            return libvirt_inv.open_connection(self.libvirt_uri)
        except Exception as e:  # noqa: BLE001 - any failure means "domains unavailable"
            LOG.error("cannot connect to libvirt at %s: %s", self.libvirt_uri, e)
            return None

    # -- the pass ---------------------------------------------------------------

    def with_node_name(self, conn, pol: policy_mod.Policy
                       ) -> tuple[policy_mod.Policy, str | None]:
        """``pol`` with the node name nova-compute uses (libvirt's getHostname() unless
        configured), and None; or ``pol`` unchanged and why the name is unknown."""
        name, why = identity.node_name(conn, pol.hypervisor_hostname)
        if name is None:
            return pol, why
        if name != pol.hypervisor_hostname:
            pol = dataclasses.replace(pol, hypervisor_hostname=name)
        return pol, None

    def check_identity(self) -> tuple[bool, GuardResult]:
        """The host identity, on its own (the agent checks it before its first pass).
        Returns (whether it could be checked: DB read and node name known, the verdict)."""
        empty = Inventory(domains=CollectorResult("domain", True),
                          dirs=CollectorResult("instance_dir", True))
        conn = self._open_libvirt() if not self.policy.hypervisor_hostname else None
        try:
            pol, node_error = self.with_node_name(conn, self.policy)
        finally:
            self._close_libvirt(conn)
        view = nova_view.load_view(self.engine, pol.host, empty.local_uuids())
        return (view.ok and node_error is None,
                guards.host_identity(view, pol, self._compute_id(), node_error))

    def run_pass(self, mode: str = "audit", dry_run: bool | None = None,
                 only_uuid: str | None = None,
                 policy: policy_mod.Policy | None = None,
                 on_planned: Callable[[PassReport], None] | None = None, *,
                 source: str = "pass", wait: float | None = None) -> PassReport:
        """One pass, under the host's pass lock. It waits at most ``wait`` seconds
        (default ``lock_timeout``) for a pass of any process to end, then raises
        ``exception.Busy`` having done nothing. ``source`` names who asked (timer,
        rpc, reaper-manage...) in the lock's owner record. ``on_planned`` is called
        once the plan is made and audited, before anything is executed (the
        agent's READY=1)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        only_uuid = only_uuid.strip().lower() if only_uuid else None
        pol = policy or self.policy
        dry = pol.dry_run if dry_run is None else dry_run
        owner = {"mode": mode, "source": source, "dry_run": dry, "instance_uuid": only_uuid}
        with self.pass_lock.hold(owner, self.lock_timeout if wait is None else wait,
                                 heartbeat=self.heartbeat, should_stop=self.should_stop):
            return self._locked_pass(mode, dry, only_uuid, pol, on_planned, source)

    def _locked_pass(self, mode: str, dry: bool, only_uuid: str | None,
                     pol: policy_mod.Policy, on_planned, source: str = "pass") -> PassReport:
        acting = mode != "audit" and not dry
        pass_id = f"req-{uuidlib.uuid4()}"
        now = self.clock()
        rep = PassReport(host=pol.host, pass_id=pass_id, mode=mode, dry_run=dry,
                         started_at=now.isoformat())
        conn = self._open_libvirt()
        try:
            self._pass(conn, rep, pol, mode, acting, only_uuid, on_planned, source)
        except Exception as e:  # a pass reports, it never crashes the agent
            LOG.exception("pass %s failed", pass_id)
            rep.errors.append(f"pass failed: {e}")
            self._view_cache = None
        finally:
            self._close_libvirt(conn)
        if rep.actions:
            self._view_cache = None     # what we changed is read in full next time
        try:
            rep.journal = {"backlog": self.state.backlog(),
                           "quarantined": self.state.quarantined()}
        except state_mod.StateError as e:
            LOG.warning("cannot count the journal: %s", e)
        rep.finished_at = self.clock().isoformat()
        self.audit.record("pass_summary", pass_id, result=str(rep.exit_code),
                          reason=f"{mode} pass" + (" (dry run)" if dry else ""),
                          evidence=rep.summary, mode=mode, db_queries=rep.db_queries,
                          db_view=rep.db_view,
                          started_at=rep.started_at, finished_at=rep.finished_at,
                          **({"instance_only": only_uuid} if only_uuid else {}),
                          **({"paused": rep.paused} if rep.paused else {}),
                          **({"db_read_only": rep.db_read_only} if rep.db_read_only else {}))
        return rep

    def _state_guard(self, what: str, e: Exception) -> GuardResult:
        LOG.error("state DB %s: %s while %s", self.state.path, e, what)
        return GuardResult(
            "state_unavailable", True,
            f"the state DB ({self.state.path}) failed while {what}: {e}; nothing is "
            f"done that cannot be journaled", evidence={"error": str(e), "while": what})

    def _pause_guard(self, pol, pause: dict) -> GuardResult:
        by = f" by {pause['by']}" if pause.get("by") else ""
        since = f" since {pause['since'][:19]}" if pause.get("since") else ""
        return GuardResult(
            "paused", True,
            f"host {pol.host} is paused ({pause.get('reason') or 'no reason given'}){by}"
            f"{since}: only audits and dry runs run until it is resumed",
            evidence=dict(pause))

    def _db_access(self, rep: PassReport) -> Callable[[], nova_grants.Access]:
        """Whether this pass may write Nova's DB, asked at most once and only when
        something would write (a reclaim, a release, a journaled reclaim to resume)."""
        memo: list[nova_grants.Access] = []

        def access() -> nova_grants.Access:
            if not memo:
                memo.append(nova_grants.detect(self.engine, self.db_read_only))
                rep.db_queries += memo[0].queries
                if not memo[0].writable:
                    LOG.info("Nova DB read-only for this pass: %s", memo[0].reason)
                    rep.db_read_only = memo[0].reason
            return memo[0]
        return access

    def _load(self, conn, pol, rep: PassReport | None = None) -> tuple[Inventory, object]:
        """The inventory and a full view; with ``rep`` (an untargeted pass) the cached
        view instead when ``_unchanged_view`` allows it (``rep.db_view``)."""
        self._check_plan = None
        inv = self._collect(conn)
        if rep is not None:
            cached = self._unchanged_view(inv, pol, rep)
            if cached is not None:
                rep.db_view = "unchanged"
                return inv, cached
        at = self.monotonic()
        keep = self.full_view_interval > 0
        deep = keep and self._deep_checks()
        view = nova_view.load_view(self.engine, pol.host, inv.local_uuids(), fingerprint=keep,
                                   deep=deep)
        self._view_cache = (_ViewCache(pol.host, inv.local_uuids(), view, view.fingerprint, at,
                                       deep_at=at)
                            if keep and view.ok and view.fingerprint is not None else None)
        return inv, view

    def _unchanged_view(self, inv: Inventory, pol, rep: PassReport):
        """The cached full view, when it may stand in for a full read in this pass:
        same host and local uuids, younger than ``full_view_interval`` (monotonic), no
        journaled teardown, the change check equal to the one read with it (a deep one,
        block device mappings and info caches included, once ``deep_check_interval``
        has passed since the full read or the last deep check), and the plan made from
        it now, with this inventory and policy, without any teardown. Else None. See
        reaper.nova.changes for why a missed change can then only lead to doing
        nothing."""
        c = self._view_cache
        if c is None or self.full_view_interval <= 0:
            return None
        age = self.monotonic() - c.at
        if c.host != pol.host or c.local != inv.local_uuids() \
                or not 0 <= age < self.full_view_interval:
            return None
        try:
            if self.state.unfinished():
                return None
        except state_mod.StateError:
            return None
        if not nova_changes.available(self.engine, c.fingerprint.others, c.fingerprint.missing):
            return None
        now = self.monotonic()
        # A deep check when one is due and the full read hashed those parts too.
        deep = c.fingerprint.deep and self._deep_checks() \
            and not 0 <= now - c.deep_at < self.deep_check_interval
        rep.db_queries += 1
        fp = nova_changes.read(self.engine, pol.host, c.fingerprint.others,
                               c.fingerprint.missing, deep=deep)
        if fp is None or fp != (c.fingerprint if deep else c.fingerprint.light()):
            LOG.debug("Nova DB rows of host %s changed: reading the whole view", pol.host)
            return None
        plan = self.kinds.plan(inv, c.view, pol, self.clock())
        if plan.teardowns:
            LOG.debug("unchanged Nova DB view, but %d teardown(s) planned from it: reading "
                      "the whole view", len(plan.teardowns))
            return None
        if deep:
            self._view_cache = dataclasses.replace(c, deep_at=now)
        self._check_plan = plan
        return c.view

    def _deep_checks(self) -> bool:
        """Whether deep change checks run between full reads: only when they come more
        often than the full reads themselves."""
        return 0 < self.deep_check_interval < self.full_view_interval

    def _nothing_to_reclaim(self, rep: PassReport, pol) -> bool:
        """The reclaim pass's first read: this host's soft-deleted rows only. True when
        none is a reclaim candidate now (``rules.reclaim_candidates``): then the full
        pass would plan no reclaim or release and report no reclaim finding, and the
        pass ends here. Any candidate, or an error, and the pass goes on in full."""
        rep.db_queries += 1
        try:
            rows = nova_view.load_soft_deleted(self.engine, pol.host)
        except exception.NovaDBError as e:
            LOG.info("reading the soft-deleted rows of %s failed (%s): full pass", pol.host, e)
            return False
        if rules.reclaim_candidates(rows, pol.host, pol.reclaim_instance_interval,
                                    self.clock()):
            return False
        rep.db_view = "reclaim_check"
        LOG.debug("reclaim pass: %d soft-deleted row(s) on %s, none expired or claimed",
                  len(rows), pol.host)
        return True

    def _pass(self, conn, rep: PassReport, pol, mode: str, acting: bool,
              only_uuid: str | None, on_planned=None, source: str = "pass") -> None:
        pol, node_error = self.with_node_name(conn, pol)
        ctx = teardown.Context(conn=conn, engine=self.engine, state=self.state,
                               policy=pol, clock=self.clock, kinds=self.kinds,
                               step_listeners=tuple(self.step_listeners),
                               should_stop=self.should_stop, heartbeat=self.heartbeat)
        # The pause is the pass's own business, whoever started it: read it first.
        state_broken: GuardResult | None = None
        try:
            rep.paused = self.state.pause_state()
        except state_mod.StateError as e:
            state_broken = self._state_guard("reading the pause flag", e)
        # A reclaim pass reads the whole view only when a reclaim rule may act (a
        # paused host's reclaim goes on, so that it reports the pause as before).
        # With reclaim disabled, the agent's timer reads nothing at all, as
        # nova-compute's _reclaim_queued_deletes: nothing is reclaimable, and this
        # host's stranded claims are released by the reconcile passes (their plan has
        # the release, so the change check never hides one).
        if mode == "reclaim" and only_uuid is None and state_broken is None \
                and not (acting and rep.paused):
            if source == "timer" and pol.reclaim_instance_interval <= 0:
                rep.db_view = "reclaim_disabled"
                return
            if self._nothing_to_reclaim(rep, pol):
                return
        inv, view = self._load(conn, pol, rep if only_uuid is None else None)
        cached = rep.db_view == "unchanged"
        # The check's plan: made from this inventory, view and policy with nothing
        # journaled, a moment ago (a clock that moved on since can only have made a
        # rule ripe that the next pass then acts on).
        check_plan, self._check_plan = (self._check_plan if cached else None), None
        self.heartbeat()
        if not cached:
            rep.db_queries += view.queries
        tripped = [g for g in guards.unready_view(inv, view, pol)]
        ident = guards.host_identity(view, pol, self._compute_id(), node_error)
        if ident.tripped and view.ok:
            tripped.append(ident)
        if acting and rep.paused:
            tripped.append(self._pause_guard(pol, rep.paused))
        if state_broken is not None:
            tripped.append(state_broken)
        pass_blocked = any(g.scope == "pass" for g in tripped)
        blocked_kinds = {g.scope for g in tripped if g.scope != "pass"}
        db_access = self._db_access(rep)

        # Set aside journal entries this version cannot read, then finish what an
        # earlier, interrupted pass started (re-verified inside).
        if acting and not pass_blocked:
            try:
                self._quarantine(rep, only_uuid)
                resumed = self._resume(ctx, rep, blocked_kinds, only_uuid, db_access) \
                    if mode == "reap" else 0
            except state_mod.StateError as e:
                state_broken = self._state_guard("resuming the journal", e)
                tripped.append(state_broken)
                pass_blocked, resumed = True, 0
            if resumed:
                inv, view = self._load(conn, pol)
                rep.db_queries += view.queries
                check_plan = None

        # A claimed row whose teardown is still in our journal is not a stranded claim.
        journaled = frozenset(e.plan.instance_uuid for e in self.state.unfinished())
        plan = check_plan if check_plan is not None and not journaled else \
            self.kinds.plan(inv, view, pol, self.clock(), journaled=journaled)
        if any(planner.writes_nova_db(t) and only_uuid in (None, t.instance_uuid)
               for t in plan.teardowns) and not db_access().writable:
            plan = planner.without_db_writes(plan, db_access().reason)
        if any(COMPLETE_MIGRATION in t.services and only_uuid in (None, t.instance_uuid)
               for t in plan.teardowns) and not db_access().writable:
            # The evacuation stays 'done' (nova-compute's next start completes it);
            # the host teardown and the Placement step still run.
            plan = dataclasses.replace(plan, teardowns=tuple(
                service_wiring.without_migration_write(t) for t in plan.teardowns))
        findings = [_with_dir_size(f) for f in plan.findings
                    if only_uuid in (None, f.instance_uuid)]
        teardowns = [t for t in plan.teardowns if only_uuid in (None, t.instance_uuid)]
        if mode == "reclaim":
            teardowns = [t for t in teardowns if t.action in (Action.RECLAIM, Action.RELEASE)]
        # Only a full pass counts as an observation: targeted ones (an RPC reap of one
        # instance, the nova-log watcher's audits) must not hurry the grace period.
        observations = {}
        if view.ok and state_broken is None and not cached:
            try:
                if only_uuid is None:
                    observations = self.state.observe(plan.findings, self.clock())
                else:
                    observations = self.state.observed([f.key for f in plan.findings])
            except state_mod.StateError as e:
                state_broken = self._state_guard("recording observations", e)
                tripped.append(state_broken)
                pass_blocked = True

        # Which teardowns may run now: guards, then the grace period per resource.
        runnable, waiting = [], {}
        for t in teardowns:
            if self._teardown_kinds(t) & blocked_kinds:
                waiting[id(t)] = "blocked"
                continue
            ok = not guards.waits_for_grace(t) or all(
                guards.ripe(f.key, observations, pol, self.clock())[0] for f in t.findings)
            if ok:
                runnable.append(t)
            else:
                waiting[id(t)] = "waiting_grace"
        urgent = []     # power-offs of evacuating guests: not held by the mass guard
        if runnable and not pass_blocked:
            keys = [state_mod.teardown_key(t) for t in runnable
                    if not guards.urgent_power_off(t)]
            ttl = datetime.timedelta(seconds=pol.approval_ttl)
            try:
                approval = (self.state.approval_covering(keys, not_before=self.clock() - ttl)
                            if acting else None)
                mass = guards.mass_destruction(runnable, inv, pol,
                                               approved=approval is not None)
                if mass.tripped:
                    tripped.append(mass)
                    pass_blocked = True
                    urgent = [t for t in runnable if guards.urgent_power_off(t)]
                    if acting:
                        self.state.record_blocked(rep.pass_id, keys, self.clock())
                elif approval and acting:
                    self.state.use_approval(approval, self.clock())
            except state_mod.StateError as e:
                tripped.append(self._state_guard("checking approvals", e))
                pass_blocked = True
        for g in tripped:
            rep.guards.append(self.audit.guard(rep.pass_id, g) | {"guard": g.name})

        result_of = {}
        for t in teardowns:
            for f in t.findings:
                if t in runnable and (not pass_blocked or t in urgent):
                    result_of[f.key] = "planned" if acting else (
                        "audit_only" if mode == "audit" else "dry_run")
                else:
                    result_of[f.key] = "blocked" if pass_blocked else waiting.get(id(t), "blocked")
        for f in findings:
            why = ""
            if result_of.get(f.key) == "waiting_grace":
                why = guards.ripe(f.key, observations, pol, self.clock())[1]
            result = result_of.get(f.key, "logged" if f.action is not Action.NONE else "none")
            rec = self.audit.finding(rep.pass_id, f, result, **({"grace": why} if why else {}))
            rep.findings.append(rec)
        self.heartbeat()
        if on_planned is not None:
            on_planned(rep)

        if not acting or (pass_blocked and not urgent):
            return
        try:
            # A teardown still in the journal (it failed this pass and retries next
            # pass, or a live process holds it) is not started again under a new entry.
            pending = {e.plan.instance_uuid for e in self.state.unfinished(self.kinds.steps_for)}
        except state_mod.StateError as e:
            rep.errors.append(f"state DB unavailable, nothing done: {e}")
            return
        # Like nova-compute's init_host, evacuated instances go first (power-offs of
        # evacuating ones before anything; only those when the mass guard tripped).
        order = lambda t: (not guards.urgent_power_off(t),  # noqa: E731
                           t.classification is not Classification.EVACUATED)
        for t in sorted(urgent or runnable, key=order):
            if self.should_stop():
                LOG.info("stopping: the remaining teardowns wait for the next pass")
                break
            if t.instance_uuid in pending:
                LOG.info("teardown of %s waits for its journaled attempt", t.instance_uuid,
                         **instancelog.kw(t.instance_uuid))
                continue
            try:
                out = teardown.execute(ctx, t, rep.pass_id)
            except state_mod.StateError as e:
                # The journal cannot be written: whatever step was started is
                # journaled as started (and resumes next pass); nothing further runs.
                LOG.error("state DB failed during the teardown of %s: %s", t.instance_uuid, e,
                          **instancelog.kw(t.instance_uuid))
                rep.errors.append(f"state DB failed during the teardown of {t.instance_uuid}: "
                                  f"{e}; no further teardown this pass")
                break
            rep.actions.append(self._record_outcome(rep.pass_id, out))

    def _quarantine(self, rep: PassReport, only_uuid: str | None) -> None:
        """Set aside the journal entries this version cannot read (one audit record
        each, when it happens), so they never stop this pass or another teardown."""
        me = self.state.is_me
        for q in self.state.quarantine_unreadable(
                self.clock(), self.kinds.steps_for, instance_uuid=only_uuid,
                leave=lambda owner: _held_elsewhere(owner, me)):
            LOG.warning("journal entry %s (%s) quarantined: %s", q.id, q.instance_uuid, q.error,
                        **instancelog.kw(q.instance_uuid))
            rep.quarantined.append(self.audit.record(
                "journal_quarantined", rep.pass_id, kind=ResourceKind.INSTANCE,
                resource=q.instance_uuid, instance_uuid=q.instance_uuid,
                result="quarantined",
                reason=f"journal entry {q.id} cannot be read by this version ({q.error}): "
                       f"set aside, not resumed",
                evidence={"journal_id": q.id, "journal_pass_id": q.pass_id,
                          "error": q.error, "plan": q.plan_text}))

    def _resume(self, ctx, rep: PassReport, blocked_kinds: set[str],
                only_uuid: str | None = None,
                db_access: Callable[[], nova_grants.Access] | None = None) -> int:
        n = 0
        for entry in self.state.unfinished(self.kinds.steps_for):
            if self.should_stop():
                break
            if only_uuid is not None and entry.plan.instance_uuid != only_uuid:
                continue            # a targeted pass touches its own instance only
            if self._teardown_kinds(entry.plan) & blocked_kinds:
                LOG.info("journaled teardown %s waits: a collector it needs failed", entry.id)
                continue
            if _held_elsewhere(entry.owner, self.state.is_me):
                rep.actions.append(self._record_held(rep.pass_id, entry))
                continue
            if db_access is not None and self._pending_db_writes(entry) \
                    and not db_access().writable:
                rep.actions.append(self._record_read_only(rep.pass_id, entry,
                                                          db_access().reason))
                continue
            LOG.info("resuming journaled teardown %s of %s (steps so far: %s)",
                     entry.id, entry.plan.instance_uuid, entry.steps,
                     **instancelog.kw(entry.plan.instance_uuid))
            self.state.take_over(entry.id, self.clock())
            out = teardown.execute(ctx, entry.plan, rep.pass_id, journal_id=entry.id,
                                   done_steps=entry.steps)
            rec = self._record_outcome(rep.pass_id, out, resumed_from=entry.pass_id)
            rep.actions.append(rec)
            n += 1
        return n

    def _record_held(self, pass_id: str, entry) -> dict:
        """A journaled teardown a live process holds: reported, not resumed."""
        o = entry.owner or {}
        reason = (f"journal entry {entry.id} is held by a live process ({o.get('process')} "
                  f"pid {o.get('pid')}): not resumed here; that process finishes or "
                  f"retries it")
        LOG.info("%s", reason)
        out = teardown.Outcome(entry.plan, TeardownResult.HELD_ELSEWHERE, reason,
                               journal_id=entry.id)
        return self._record_outcome(pass_id, out, resumed_from=entry.pass_id)

    def _record_read_only(self, pass_id: str, entry, why: str) -> dict:
        """A journaled reclaim whose next steps write Nova's DB, which is read-only
        now: not resumed (its claim, if made, stays this host's), reported."""
        pending = sorted(self._pending_db_writes(entry))
        reason = (f"journal entry {entry.id} waits: its steps {', '.join(pending)} write "
                  f"Nova's DB, which is read-only for the reaper ({why}); it resumes in a "
                  f"pass that may write")
        LOG.info("%s", reason)
        out = teardown.Outcome(entry.plan, TeardownResult.HELD_READ_ONLY, reason,
                               journal_id=entry.id)
        return self._record_outcome(pass_id, out, resumed_from=entry.pass_id)

    def _record_outcome(self, pass_id: str, out: teardown.Outcome, **extra) -> dict:
        p = out.plan
        kind = ResourceKind.DOMAIN if p.domain_name else (
            ResourceKind.INSTANCE_DIR if p.dirs else ResourceKind.INSTANCE)
        resource = p.domain_name or (p.dirs[0] if p.dirs else p.instance_uuid)
        leak = self.kinds.leak_kind(p.classification)
        uuid = None if leak is not None else p.instance_uuid
        kind = leak if leak is not None else kind
        rec = self.audit.record(
            "action", pass_id, kind=kind, resource=resource, instance_uuid=uuid,
            classification=p.classification, action=p.action, result=out.result,
            reason=out.reason,
            evidence={"steps": out.steps, "destroy_disks": p.destroy_disks,
                      "dirs": list(p.dirs), "journal_id": out.journal_id,
                      **({"controller_leftovers": out.leftovers} if out.leftovers else {}),
                      **({"services_retry": True} if out.services_retry else {})},
            **extra)
        rec["steps"] = out.steps
        return rec

    def _pending_db_writes(self, entry) -> set[str]:
        """The steps of a journaled teardown still to run that write Nova's DB."""
        return {s for s in self.kinds.steps_for(entry.plan)
                if s in planner.DB_WRITING_STEPS and entry.steps.get(s) != StepStatus.DONE}

    def _teardown_kinds(self, t) -> set[str]:
        """The collectors a teardown needs: a failed one of any of them holds it."""
        kinds = {f.kind.value for f in t.findings}
        for k in self.kinds.kinds:
            kinds |= k.touches(t)
        return kinds


def _held_elsewhere(owner: dict | None, is_me: Callable[[dict | None], bool]) -> bool:
    """Whether a journal entry's owner is a live process other than this one. Passes
    of this process are serialised by the pass lock, so our own entries are never
    in progress when a pass looks at them; another live owner's may be."""
    if not owner:
        return False            # written before owners were recorded: as if crashed
    return not is_me(owner) and procid.alive(owner)


def _with_dir_size(f):
    """Measure the directories that made it into a finding (the collector does not)."""
    d = f.evidence.get("dir") if f.kind is ResourceKind.INSTANCE_DIR else None
    if not d or d.get("size_bytes") is not None:
        return f
    return dataclasses.replace(f, evidence={**f.evidence, "dir": {
        **d, "size_bytes": dir_inv.tree_size(d["path"])}})


def settle_heap() -> None:
    """Collect once, then move every object alive now (modules, classes, functions,
    option tables: what imports and wiring made, which is never garbage) out of the
    cyclic garbage collector's sight (``gc.freeze``).

    A pass allocates enough containers to set off full collections, and each full
    collection otherwise walks every imported object again: about a tenth of a pass
    on a busy host. Called once per process, when it is built; objects made later
    (passes, caches, replicas) are collected as usual.

    The youngest generation's threshold is raised from 700 to GC_YOUNG_THRESHOLD
    container allocations: a pass builds tens of thousands of records that live
    until its end (links, ports, domains, rows, plans), and at 700 each young
    collection finds most of them alive and promotes them, to be walked again by
    the older generations. Cyclic garbage waits a little longer; nothing else
    changes (reference counting frees the rest at once).
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(max(GC_YOUNG_THRESHOLD, gc.get_threshold()[0]), older, oldest)


GC_YOUNG_THRESHOLD = 10_000


def build_from_conf(conf=CONF) -> Reaper:
    from reaper import novaurl
    novaurl.check(conf.database.connection)     # mysql:// without MySQLdb, no SQLite file
    os.makedirs(conf.state_path, mode=0o700, exist_ok=True)
    kinds = KindManager.from_conf(conf)     # [reaper] resource_kinds, from entry points
    reaper = Reaper.from_conf(conf, kinds)
    novaurl.never_create(reaper.engine)
    try:
        kinds.open()        # os-brick, netlink and OVSDB handles, service adapters
    except BaseException:
        reaper.close()
        raise
    from reaper import nova_notify  # Nova's instance.delete.* events of reclaims
    try:
        nova_notify.enable(reaper, conf)
    except Exception as e:  # noqa: BLE001 - reporting must never keep the reaper down
        LOG.error("Nova delete notifications not enabled: %s", e)
    settle_heap()
    return reaper
