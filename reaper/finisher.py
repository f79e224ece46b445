"""``reaper-ctl finish``: finish, from a controller, what a host that is gone left for
Neutron, Cinder and Placement after a reclaim.

A host finishes its own leftovers: its journal retries a failed service step every
pass. A host that is gone (its nova-compute service deleted, forced down or not seen
for ``--down-after`` seconds, as Nova's servicegroup judges it) never will; its audit
records (``event: action`` with ``evidence.controller_leftovers``; the payload of a
``reaper.instance.reclaimed`` notification is the same record with ``leftovers``)
still say what is left, with the instance's facts (``leftovers.facts``: ports and
whether Nova created them, volumes and their attachments, the node). A host records
them whatever it has configured: one with no ``[neutron]``/``[cinder]``/``[placement]``
section (its services ``not_configured``) is finished exactly as one whose steps
failed. Records of reapers that wrote no facts are reported, never acted on. This
module:

1. reads those records (JSON lines, rotated, gzip; reaper.auditlog.read) and keeps
   the newest one of each instance (:func:`latest_leftovers`, pure);
2. decides per instance and service what may be done (:func:`decide`, pure): only
   what the record says is not done, only with the facts it recorded, only for a
   host that is gone (unless asked), and only when the instance's row, read again
   right before acting, is deleted (or archived) in the Nova DB;
3. runs the same service steps the host runs (reaper.services: Neutron
   ``release_ports``, Cinder ``detach_volumes``, Placement ``delete_allocations``),
   each idempotent (what is gone already is success), with one audit record per
   action (``event: action``, ``classification: controller_leftover``) and a summary.

Nothing is changed without ``--yes``: the default run reports what it would do.
"""
from __future__ import annotations

import dataclasses
import datetime
import uuid as uuidlib
from typing import Any, Callable, Iterable

import sqlalchemy as sa
from oslo_log import log as logging

from reaper import exception
from reaper.nova import db as nova_db
from reaper.nova import schema as s

LOG = logging.getLogger(__name__)

CLASSIFICATION = "controller_leftover"
# service -> (step, option group); the reclaim steps, in Nova's order.
STEPS = (("network", "release_ports", "neutron"),
         ("block-storage", "detach_volumes", "cinder"),
         ("placement", "delete_allocations", "placement"))
DEFAULT_DOWN_AFTER = 60.0           # Nova's [DEFAULT] service_down_time

EXIT_NOTHING, EXIT_ERROR, EXIT_USAGE, EXIT_FOUND, EXIT_DONE = 0, 1, 2, 3, 4


# -- reading the records (pure) ----------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Leftover:
    """The newest record of one instance's reclaim leftovers."""
    instance_uuid: str
    host: str | None                # the compute host that recorded it
    ts: str | None
    pass_id: str | None
    leftovers: dict
    source: str                     # "audit" | "notification"

    @property
    def facts(self) -> dict | None:
        f = self.leftovers.get("facts")
        return f if isinstance(f, dict) else None

    def pending(self) -> list[tuple[str, str, dict]]:
        """(service, step, its record) of every reclaim step the record does not call
        done; [] when nothing is left."""
        services = self.leftovers.get("services")
        if not isinstance(services, dict):
            return [(svc, step, {"status": "unknown"}) for svc, step, _ in STEPS
                    if _old_style_left(self.leftovers, svc)]
        out = []
        for svc, step, _ in STEPS:
            rec = services.get(svc) if isinstance(services.get(svc), dict) else {}
            if rec.get("status") != "done":
                out.append((svc, step, rec))
        return out


def _old_style_left(left: dict, service: str) -> bool:
    """A record written without service steps: what it lists for ``service``."""
    if service == "network":
        return bool(left.get("ports"))
    if service == "block-storage":
        return bool(left.get("volumes_attached") or left.get("volumes_delete_on_termination"))
    return bool(left.get("allocations"))


def leftover_of(rec: dict) -> Leftover | None:
    """The reclaim leftovers in an audit record or a reaper.instance.reclaimed
    notification payload; None for any other record."""
    if not isinstance(rec, dict) or rec.get("event") != "action" \
            or rec.get("classification") == CLASSIFICATION:
        return None
    left, source = rec.get("leftovers"), "notification"
    if not isinstance(left, dict):
        left, source = (rec.get("evidence") or {}).get("controller_leftovers"), "audit"
    if not isinstance(left, dict) or not rec.get("instance_uuid"):
        return None
    if rec.get("classification") not in (None, "reclaimable"):
        return None         # evacuations: the instance lives on elsewhere
    return Leftover(str(rec["instance_uuid"]), rec.get("host"), rec.get("ts"),
                    rec.get("pass_id"), left, source)


def latest_leftovers(records: Iterable[dict]) -> dict[str, Leftover]:
    """instance uuid -> its newest leftover record (a later retry that finished a
    step, or finished everything, replaces an earlier one)."""
    out: dict[str, Leftover] = {}
    for rec in records:
        lo = leftover_of(rec)
        if lo is None:
            continue
        old = out.get(lo.instance_uuid)
        if old is None or (lo.ts or "") >= (old.ts or ""):
            out[lo.instance_uuid] = lo
    return out


# -- deciding (pure) -------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class HostState:
    host: str
    up: bool
    why: str


@dataclasses.dataclass
class Decision:
    """What is done (or would be) about one service step of one instance."""
    leftover: Leftover
    service: str
    step: str
    act: bool                       # False: skipped (reason says why)
    reason: str
    result: str = "planned"         # planned | skipped | dry_run | done | failed
    detail: str = ""
    record: dict | None = None      # the step's StepResult.record() once run


def host_states(services: list[dict], now: datetime.datetime,
                down_after: float = DEFAULT_DOWN_AFTER) -> dict[str, HostState]:
    """Whether each host's nova-compute is up, as Nova's DB servicegroup driver says:
    a live row, not forced down, seen within ``down_after`` seconds. A host with only
    deleted rows is gone."""
    out: dict[str, tuple[int, HostState]] = {}
    rank = {"up": 2, "down": 1, "deleted": 0}
    for sv in services:
        host = sv["host"]
        seen = sv.get("last_seen_up") or sv.get("updated_at") or sv.get("created_at")
        if sv["deleted"]:
            kind, state = "deleted", HostState(host, False, "its nova-compute service is "
                                                            "deleted")
        elif sv.get("forced_down"):
            kind, state = "down", HostState(host, False, "its nova-compute service is "
                                                         "forced down")
        elif seen is None or (now - seen).total_seconds() > down_after:
            kind, state = "down", HostState(host, False, f"its nova-compute was last seen "
                                                         f"{seen or 'never'}")
        else:
            kind, state = "up", HostState(host, True, f"its nova-compute is up (seen {seen})")
        old = out.get(host)
        if old is None or rank[kind] > old[0]:
            out[host] = (rank[kind], state)
    return {h: st for h, (_, st) in out.items()}


def decide(lo: Leftover, host: HostState | None, row_deleted: bool | None, row_why: str,
           configured: Callable[[str], bool], include_up_hosts: bool = False
           ) -> list[Decision]:
    """The decisions for one instance's pending steps. ``row_deleted``: the instance's
    row read again (True: deleted or archived; False: live; None: not found)."""
    pending = lo.pending()
    out = []
    for service, step, rec in pending:
        group = dict((svc, g) for svc, _, g in STEPS)[service]
        why = None
        if lo.facts is None:
            why = ("the record holds no facts (written by a reaper that did not record "
                   "them): finish it by hand from the listed ids")
        elif host is not None and host.up and not include_up_hosts:
            why = (f"host {host.host} is up ({host.why}): its journal retries the step "
                   f"(--include-up-hosts to finish it from here)")
        elif row_deleted is None:
            why = f"the instance has no row in the Nova DB ({row_why}): not proven deleted"
        elif not row_deleted:
            why = f"the instance is not deleted in the Nova DB ({row_why})"
        elif not configured(group):
            why = f"[{group}] is not configured here"
        reason = why or (f"{step} left by {lo.host or '?'} (pass {lo.pass_id}, "
                         f"{rec.get('status', 'pending')}: {rec.get('detail') or rec.get('error') or '-'})")
        out.append(Decision(lo, service, step, act=why is None, reason=reason,
                            result="planned" if why is None else "skipped"))
    return out


def exit_code(decisions: list[Decision], errors: list[str]) -> int:
    """1 any failure or error; 4 all actions done; 3 leftovers reported, not finished
    (dry run, skipped); 0 nothing left."""
    if errors or any(d.result == "failed" for d in decisions):
        return EXIT_ERROR
    if not decisions:
        return EXIT_NOTHING
    if all(d.result == "done" for d in decisions):
        return EXIT_DONE
    return EXIT_FOUND


# -- the shell: Nova DB, services, audit -----------------------------------------

def compute_services(engine: sa.Engine) -> list[dict]:
    """Every nova-compute service row (deleted ones too). One statement."""
    sv = s.services
    stmt = sa.select(sv.c.host, sv.c.deleted, sv.c.forced_down, sv.c.last_seen_up,
                     sv.c.updated_at, sv.c.created_at).where(sv.c.binary == "nova-compute")
    try:
        with engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]
    except sa.exc.SQLAlchemyError as exc:
        raise exception.NovaDBError(nova_db.describe_error(exc, engine)) from None


def _row_state(engine, uuid: str) -> tuple[bool | None, str]:
    from reaper.nova import view as nova_view
    row = nova_view.reread_instance(engine, uuid)
    if row is None:
        return None, "no row in instances or shadow_instances"
    if row.archived:
        return True, "archived"
    if row.deleted:
        return True, f"deleted, vm_state {row.vm_state}"
    return False, f"vm_state {row.vm_state}, host {row.host}"


def _run_step(step: str, adapter, facts) -> Any:
    from reaper.services import InstanceFacts, cinder, neutron, placement
    f = InstanceFacts.from_dict(facts)
    if step == "release_ports":
        return neutron.release_ports(adapter, f)
    if step == "detach_volumes":
        # The host is gone: only a connector stored in the BDM can be used.
        return cinder.detach_volumes(adapter, f)
    return placement.delete_allocations(adapter, f)


@dataclasses.dataclass
class Report:
    run_id: str
    dry_run: bool
    decisions: list[Decision]
    errors: list[str]
    records_read: int = 0
    instances: int = 0

    @property
    def exit_code(self) -> int:
        return exit_code(self.decisions, self.errors)

    def summary(self) -> dict:
        counts: dict[str, int] = {}
        for d in self.decisions:
            counts[d.result] = counts.get(d.result, 0) + 1
        return {"run_id": self.run_id, "dry_run": self.dry_run,
                "records_read": self.records_read, "instances": self.instances,
                "steps": counts, "errors": self.errors, "exit_code": self.exit_code}

    def to_dict(self) -> dict:
        return {**self.summary(), "decisions": [
            {"instance_uuid": d.leftover.instance_uuid, "host": d.leftover.host,
             "service": d.service, "step": d.step, "result": d.result, "reason": d.reason,
             "detail": d.detail, "record": d.record} for d in self.decisions]}

    def to_table(self) -> str:
        rows = [("INSTANCE", "HOST", "STEP", "RESULT", "WHY / DETAIL")]
        for d in self.decisions:
            rows.append((d.leftover.instance_uuid, d.leftover.host or "?", d.step, d.result,
                         (d.detail or d.reason)[:120]))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths, strict=True)) + "  " + r[4]
                 for r in rows]
        s = self.summary()
        lines.append("")
        lines.append(f"{'DRY RUN (nothing changed; --yes to act): ' if self.dry_run else ''}"
                     f"{s['instances']} instances with leftovers in {s['records_read']} "
                     f"records; steps: " + (", ".join(f"{k} {v}" for k, v in
                                                      sorted(s["steps"].items())) or "none"))
        lines += [f"error: {e}" for e in self.errors]
        return "\n".join(lines)


def finish(records: Iterable[dict], engine, clients, audit, *, dry_run: bool = True,
           hosts: Iterable[str] = (), instances: Iterable[str] = (),
           include_up_hosts: bool = False, down_after: float = DEFAULT_DOWN_AFTER,
           now: Callable[[], datetime.datetime] | None = None) -> Report:
    """Finish (or with ``dry_run`` report) the leftovers in ``records``.
    ``clients``: reaper.services.session.Clients; ``audit``: an AuditLog."""
    now = now or (lambda: datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None))
    rep = Report(f"req-{uuidlib.uuid4()}", dry_run, [], [])
    counted = []

    def count(rs):
        for r in rs:
            counted.append(1)
            yield r
    latest = latest_leftovers(count(records))
    rep.records_read = len(counted)
    want_hosts, want_uuids = set(hosts), {u.lower() for u in instances}
    chosen = [lo for lo in latest.values()
              if (not want_hosts or lo.host in want_hosts)
              and (not want_uuids or lo.instance_uuid in want_uuids) and lo.pending()]
    chosen.sort(key=lambda lo: (lo.host or "", lo.ts or "", lo.instance_uuid))
    rep.instances = len(chosen)
    if not chosen:
        return rep
    try:
        states = host_states(compute_services(engine), now(), down_after)
    except exception.NovaDBError as e:
        rep.errors.append(f"cannot read the nova-compute services: {e}")
        return rep

    def configured(group: str) -> bool:
        c = clients.get(group)
        return c is not None and c.adapter is not None

    for lo in chosen:
        try:
            deleted, why = _row_state(engine, lo.instance_uuid)     # read again, now
        except exception.NovaDBError as e:
            rep.errors.append(f"{lo.instance_uuid}: cannot read its row: {e}")
            continue
        host = states.get(lo.host) if lo.host else None
        if host is None and lo.host:
            host = HostState(lo.host, False, "no nova-compute service row")
        for d in decide(lo, host, deleted, why, configured, include_up_hosts):
            rep.decisions.append(d)
            if d.act and dry_run:
                d.result = "dry_run"
            elif d.act:
                _act(d, clients, engine)
            audit.record("action", rep.run_id, kind="instance", resource=d.service,
                         instance_uuid=lo.instance_uuid, classification=CLASSIFICATION,
                         action=d.step, result=d.result, reason=d.detail or d.reason,
                         evidence={"recorded_by": lo.host, "recorded_pass_id": lo.pass_id,
                                   "recorded_at": lo.ts, "source": lo.source,
                                   "step": d.record, "facts": lo.facts})
    audit.record("finish_summary", rep.run_id, result=str(rep.exit_code),
                 reason="reaper-ctl finish" + (" (dry run)" if dry_run else ""),
                 evidence=rep.summary())
    return rep


def _act(d: Decision, clients, engine) -> None:
    """Run one step, after reading the row once more (the decision's read may be a
    few steps old): a restored or re-created row stops it."""
    deleted, why = _row_state(engine, d.leftover.instance_uuid)
    if not deleted:
        d.result, d.detail = "skipped", f"the instance is no longer deleted ({why})"
        return
    group = dict((svc, g) for svc, _, g in STEPS)[d.service]
    try:
        res = _run_step(d.step, clients.get(group).adapter, d.leftover.facts)
    except Exception as e:  # one step's failure is reported, the rest go on
        LOG.exception("finish %s failed", d.step, instance_uuid=d.leftover.instance_uuid)
        d.result, d.detail = "failed", f"{type(e).__name__}: {e}"
        return
    d.record = res.record()
    d.result = "done" if res.done else "failed"
    d.detail = res.detail
