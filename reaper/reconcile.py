"""One reconciliation pass: collect -> view -> plan -> guard -> execute -> audit.

This is the imperative shell around the pure planner and guards.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import uuid as uuidlib
from typing import Callable

from oslo_config import cfg
from oslo_log import log as logging

from reaper import audit as audit_mod
from reaper import config, guards, planner, policy as policy_mod, state as state_mod
from reaper.executor import teardown
from reaper.inventory import dirs as dir_inv
from reaper.inventory import libvirt as libvirt_inv
from reaper.nova import db as nova_db
from reaper.nova import view as nova_view
from reaper.records import (Action, Classification, CollectorResult, GuardResult, Inventory,
                            ResourceKind)
from reaper.report import PassReport

LOG = logging.getLogger(__name__)
CONF = cfg.CONF

default_opts = [
    cfg.StrOpt("compute_id_file", default="$state_path/compute_id",
               help="File holding this node's compute node uuid (nova-compute writes it to "
                    "its own state_path/compute_id); checked against compute_nodes.uuid "
                    "when present."),
]
CONF.register_opts(default_opts)

MODES = ("audit", "reap", "reclaim")

# Collectors of further resource kinds: kind -> fn(reaper) -> CollectorResult.
# Each must only read, and must return ok=False instead of raising.
EXTRA_COLLECTORS: dict[str, Callable[["Reaper"], CollectorResult]] = {}
# Teardowns that clean a leak belonging to no instance (their instance_uuid is the
# leaked resource's name): classification -> the audit kind of their action records.
LEAK_KINDS: dict[Classification, ResourceKind] = {}


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
    # Handles the executor steps of further resource kinds need (teardown.Context.extras).
    extras: dict = dataclasses.field(default_factory=dict)
    # Set by the agent: SIGTERM (checked between teardown steps and between
    # teardowns) and the watchdog ping (called between phases and steps).
    should_stop: Callable[[], bool] = lambda: False
    heartbeat: Callable[[], None] = lambda: None
    _parse_cache: libvirt_inv.ParseCache = dataclasses.field(
        default_factory=libvirt_inv.ParseCache, repr=False)

    @classmethod
    def from_conf(cls, conf=CONF) -> "Reaper":
        pol = policy_mod.from_conf(conf)
        return cls(policy=pol, libvirt_uri=conf.libvirt.connection_uri,
                   engine=nova_db.engine_from_conf(conf),
                   state=state_mod.open_checked(conf.state_path),
                   audit=audit_mod.AuditLog(conf.reaper.audit_log or None, pol.host),
                   compute_id_file=conf.compute_id_file)

    def close(self) -> None:
        self.state.close()
        self.audit.close()
        for handle in self.extras.values():     # netlink socket, OVSDB session...
            close = getattr(handle, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:   # noqa: BLE001 - best effort on shutdown
                    LOG.debug("closing %r failed", handle, exc_info=True)
        try:
            self.engine.dispose()
        except Exception:   # noqa: BLE001 - best effort on shutdown
            pass

    # -- collection -------------------------------------------------------------

    def _collect(self, conn) -> Inventory:
        if conn is None:
            domains = CollectorResult("domain", False, error=f"cannot connect to libvirt at "
                                                             f"{self.libvirt_uri}")
        else:
            domains = libvirt_inv.collect_domains(conn, self.policy.instance_name_template,
                                                  self._parse_cache)
        dirs = dir_inv.collect_instance_dirs(self.policy.instances_path)
        try:
            fs = dir_inv.filesystem_type(self.policy.instances_path)
        except OSError:
            fs = None
        extra = {}
        for kind, collect in EXTRA_COLLECTORS.items():
            try:
                extra[kind] = collect(self)
            except Exception as e:  # noqa: BLE001 - a failed collector marks its kind only
                extra[kind] = CollectorResult(kind, False, error=str(e))
        return Inventory(domains=domains, dirs=dirs, instances_fs_type=fs, extra=extra)

    def _compute_id(self) -> str | None:
        if not self.compute_id_file:
            return None
        try:
            with open(self.compute_id_file) as f:
                return f.read().strip() or None
        except FileNotFoundError:
            return None

    def _open_libvirt(self):
        if self.connect is not None:
            return self.connect()
        try:
            return libvirt_inv.open_connection(self.libvirt_uri)
        except Exception as e:  # noqa: BLE001 - any failure means "domains unavailable"
            LOG.error("cannot connect to libvirt at %s: %s", self.libvirt_uri, e)
            return None

    # -- the pass ---------------------------------------------------------------

    def check_identity(self) -> tuple[bool, GuardResult]:
        """DESIGN 5's host identity, on its own (the agent checks it before its first
        pass). Returns (whether the DB could be read, the guard's verdict)."""
        empty = Inventory(domains=CollectorResult("domain", True),
                          dirs=CollectorResult("instance_dir", True))
        view = nova_view.load_view(self.engine, self.policy.host, empty.local_uuids())
        return view.ok, guards.host_identity(view, self.policy, self._compute_id())

    def run_pass(self, mode: str = "audit", dry_run: bool | None = None,
                 only_uuid: str | None = None,
                 policy: policy_mod.Policy | None = None,
                 on_planned: Callable[[PassReport], None] | None = None) -> PassReport:
        """One pass. ``on_planned`` is called once the plan is made and audited,
        before anything is executed (the agent's READY=1)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        pol = policy or self.policy
        dry = pol.dry_run if dry_run is None else dry_run
        acting = mode != "audit" and not dry
        pass_id = f"req-{uuidlib.uuid4()}"
        now = self.clock()
        rep = PassReport(host=pol.host, pass_id=pass_id, mode=mode, dry_run=dry,
                         started_at=now.isoformat())
        conn = self._open_libvirt()
        try:
            self._pass(conn, rep, pol, mode, acting, only_uuid, on_planned)
        except Exception as e:  # noqa: BLE001 - a pass reports, it never crashes the agent
            LOG.exception("pass %s failed", pass_id)
            rep.errors.append(f"pass failed: {e}")
        finally:
            if conn is not None and self.connect is None:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001
                    pass
        rep.finished_at = self.clock().isoformat()
        self.audit.record("pass_summary", pass_id, result=str(rep.exit_code),
                          reason=f"{mode} pass" + (" (dry run)" if dry else ""),
                          evidence=rep.summary, mode=mode, db_queries=rep.db_queries,
                          started_at=rep.started_at, finished_at=rep.finished_at,
                          **({"instance_only": only_uuid} if only_uuid else {}))
        return rep

    def _load(self, conn, pol) -> tuple[Inventory, object]:
        inv = self._collect(conn)
        view = nova_view.load_view(self.engine, pol.host, inv.local_uuids())
        return inv, view

    def _pass(self, conn, rep: PassReport, pol, mode: str, acting: bool,
              only_uuid: str | None, on_planned=None) -> None:
        ctx = teardown.Context(conn=conn, engine=self.engine, state=self.state,
                               policy=pol, clock=self.clock, extras=self.extras,
                               should_stop=self.should_stop, heartbeat=self.heartbeat)
        inv, view = self._load(conn, pol)
        self.heartbeat()
        rep.db_queries += view.queries
        tripped = [g for g in guards.unready_view(inv, view, pol)]
        ident = guards.host_identity(view, pol, self._compute_id())
        if ident.tripped and view.ok:
            tripped.append(ident)
        pass_blocked = any(g.scope == "pass" for g in tripped)
        blocked_kinds = {g.scope for g in tripped if g.scope != "pass"}

        # Finish what an earlier, interrupted pass started (re-verified inside).
        if acting and not pass_blocked and mode == "reap":
            resumed = self._resume(ctx, rep, blocked_kinds)
            if resumed:
                inv, view = self._load(conn, pol)
                rep.db_queries += view.queries

        plan = planner.build_plan(inv, view, pol, self.clock())
        findings = [_with_dir_size(f) for f in plan.findings
                    if only_uuid in (None, f.instance_uuid)]
        teardowns = [t for t in plan.teardowns if only_uuid in (None, t.instance_uuid)]
        if mode == "reclaim":
            teardowns = [t for t in teardowns if t.action is Action.RECLAIM]
        # Only a full pass counts as an observation: targeted ones (an RPC reap of one
        # instance, the nova-log watcher's audits) must not hurry the grace period.
        if not view.ok:
            observations = {}
        elif only_uuid is None:
            observations = self.state.observe(plan.findings, self.clock())
        else:
            observations = self.state.observed([f.key for f in plan.findings])

        # Which teardowns may run now: guards, then the grace period per resource.
        runnable, waiting = [], {}
        for t in teardowns:
            if _teardown_kinds(t) & blocked_kinds:
                waiting[id(t)] = "blocked"
                continue
            ok = all(guards.ripe(f.key, observations, pol, self.clock())[0] for f in t.findings)
            if ok:
                runnable.append(t)
            else:
                waiting[id(t)] = "waiting_grace"
        if runnable and not pass_blocked:
            keys = [state_mod.teardown_key(t) for t in runnable]
            ttl = datetime.timedelta(seconds=pol.approval_ttl)
            approval = (self.state.approval_covering(keys, not_before=self.clock() - ttl)
                        if acting else None)
            mass = guards.mass_destruction(runnable, inv, pol, approved=approval is not None)
            if mass.tripped:
                tripped.append(mass)
                pass_blocked = True
                if acting:
                    self.state.record_blocked(rep.pass_id, keys, self.clock())
            elif approval and acting:
                self.state.use_approval(approval, self.clock())
        for g in tripped:
            rep.guards.append(self.audit.guard(rep.pass_id, g) | {"guard": g.name})

        result_of = {}
        for t in teardowns:
            for f in t.findings:
                if t in runnable and not pass_blocked:
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

        if not acting or pass_blocked:
            return
        # A teardown still in the journal (it failed this pass and retries next
        # pass) is not started a second time under a new entry.
        pending = {e.plan.instance_uuid for e in self.state.unfinished()}
        # Like nova-compute's init_host, evacuated instances go first.
        for t in sorted(runnable, key=lambda t: t.classification is not Classification.EVACUATED):
            if self.should_stop():
                LOG.info("stopping: the remaining teardowns wait for the next pass")
                break
            if t.instance_uuid in pending:
                LOG.info("teardown of %s waits for its journaled attempt", t.instance_uuid)
                continue
            out = teardown.execute(ctx, t, rep.pass_id)
            rep.actions.append(self._record_outcome(rep.pass_id, out))

    def _resume(self, ctx, rep: PassReport, blocked_kinds: set[str]) -> int:
        n = 0
        for entry in self.state.unfinished():
            if self.should_stop():
                break
            if _teardown_kinds(entry.plan) & blocked_kinds:
                LOG.info("journaled teardown %s waits: a collector it needs failed", entry.id)
                continue
            LOG.info("resuming journaled teardown %s of %s (steps so far: %s)",
                     entry.id, entry.plan.instance_uuid, entry.steps)
            out = teardown.execute(ctx, entry.plan, rep.pass_id, journal_id=entry.id,
                                   done_steps=entry.steps)
            rec = self._record_outcome(rep.pass_id, out, resumed_from=entry.pass_id)
            rep.actions.append(rec)
            n += 1
        return n

    def _record_outcome(self, pass_id: str, out: teardown.Outcome, **extra) -> dict:
        p = out.plan
        kind = ResourceKind.DOMAIN if p.domain_name else (
            ResourceKind.INSTANCE_DIR if p.dirs else ResourceKind.INSTANCE)
        resource = p.domain_name or (p.dirs[0] if p.dirs else p.instance_uuid)
        uuid = None if p.classification in LEAK_KINDS else p.instance_uuid
        kind = LEAK_KINDS.get(p.classification, kind)
        rec = self.audit.record(
            "action", pass_id, kind=kind, resource=resource, instance_uuid=uuid,
            classification=p.classification, action=p.action, result=out.result,
            reason=out.reason,
            evidence={"steps": out.steps, "destroy_disks": p.destroy_disks,
                      "dirs": list(p.dirs), "journal_id": out.journal_id,
                      **({"controller_leftovers": out.leftovers} if out.leftovers else {})},
            **extra)
        rec["steps"] = out.steps
        return rec


def _teardown_kinds(t) -> set[str]:
    """The resource kinds a teardown touches: a failed collector of any of them holds it."""
    kinds = {f.kind.value for f in t.findings}
    if t.domain_name:
        kinds.add(ResourceKind.DOMAIN.value)
    if t.dirs:
        kinds.add(ResourceKind.INSTANCE_DIR.value)
    if t.vifs:
        kinds.update((ResourceKind.VIF.value, ResourceKind.OVS_PORT.value))
    if t.volumes:
        kinds.add(ResourceKind.ISCSI_SESSION.value)
    return kinds


def _with_dir_size(f):
    """Measure the directories that made it into a finding (the collector does not)."""
    d = f.evidence.get("dir") if f.kind is ResourceKind.INSTANCE_DIR else None
    if not d or d.get("size_bytes") is not None:
        return f
    return dataclasses.replace(f, evidence={**f.evidence, "dir": {
        **d, "size_bytes": dir_inv.tree_size(d["path"])}})


def build_from_conf(conf=CONF) -> Reaper:
    config.CONF  # noqa: B018 - [DEFAULT] options registered on import
    os.makedirs(conf.state_path, exist_ok=True)
    from reaper import volume_wiring  # iSCSI volumes: collector, R12/R13, disconnect step
    from reaper import network_wiring  # VIFs: collectors, R11, unplug step
    return network_wiring.enable(volume_wiring.enable(Reaper.from_conf(conf), conf), conf)
