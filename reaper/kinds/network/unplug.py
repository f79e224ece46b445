"""The unplug step: remove a teardown's VIFs the way os-vif unplugs them.

The ``network`` kind runs it (``unplug_vifs``) for every plan with ``vifs``:
instance teardowns (after the domain is destroyed, before the files go) and the
teardowns of leaked VIF groups (R11). For each VIF, in os-vif's order:

1. the ``qbr`` bridge (hybrid plug): set down, then deleted (its ports detach);
2. the OVS ports (``qvo`` for hybrid plug, ``tap`` for direct plug) on the
   integration bridge, with ovsdbapp, ``if_exists``-style and re-checked inside
   the transaction (``reaper.kinds.network.ovs.DelVifPortCommand``);
3. the ``qvo`` device (its ``qvb`` peer goes with it), or a lone ``qvb``;
4. a ``tap`` device nothing holds open any more.

Before touching anything the step checks again, against fresh reads, what the
planner decided: no live or in-flight instance on this host claims the port in
its network_info (one query), the ``vm-uuid`` of a leaked VIF's port is not such
an instance, and no other domain names the devices in any interface (target dev,
source bridge, source dev; libvirt, for leaked VIFs and for teardowns alike). A
VIF claimed meanwhile is kept and reported; for a leak, an unreadable domain
aborts the teardown.

Then, right before its first removal, each VIF is judged as a unit on a fresh
netlink dump and OVSDB read, with the planner's own rules
(``reaper.kinds.network.rules.unit_holds``): every planned device must still be the
one planned (same ifindex when known, the kind Nova gives it), no member may
have appeared since, no device may be stacked on a member (macvlan, macvtap,
vlan...) or enslaved to its bridge, veths must be each other's peers, no tap
held open, every OVS port carrying the unit's names must be a VIF port this
teardown may remove (iface-id, vm-uuid, type, reaper-skip). If anything must
stay, nothing of the VIF is removed: it is kept whole and reported, never half
cleaned.

Idempotent: whatever is already gone counts as done, so a resumed or repeated
step ends in the same state. An OVSDB server that is down fails the step before
anything is removed (the journal retries it on a later pass).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

import sqlalchemy as sa
from oslo_log import log as logging

from reaper import exception
from reaper.kinds.network import collector as net_inv
from reaper.kinds.network import ovs as ovs_inv
from reaper.nova import db as nova_db
from reaper.nova import schema as s
from reaper.nova import view as nova_view
from reaper.kinds.network import rules as net_plan
from reaper.kinds.instance import rules
from reaper.kinds.network.objects import NetDevice
from reaper.objects.fields import RELEASED_MIGRATION_STATUSES, Classification
from reaper.objects.step import StepOutcome, StepResult

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class NetworkHandles:
    """What the unplug step needs: the ``network`` kind's open handles."""
    netlink: net_inv.Netlink
    ovs: ovs_inv.OvsHandle
    # conn -> CollectorResult of domains (reaper.kinds.instance.libvirt.collect_domains)
    domains: Callable[[object], object] | None = None

    def close(self) -> None:
        self.netlink.close()
        self.ovs.close()


# --------------------------------------------------------------------------
# Fresh ownership checks
# --------------------------------------------------------------------------

def db_claims(engine, host: str, prefixes: Iterable[str],
              exclude: str | None = None) -> dict[str, list[str]]:
    """prefix -> uuids of live instances on ``host`` or moving to/from it whose
    network_info names the port (by id, ovs_interfaceid or devname).

    One statement: the info caches of our host's live instances and of the
    instances of unfinished migrations touching our host, filtered with LIKE on
    the prefixes; then a second one for those migrations' instances only if any
    matched a row that is not on our host. Unreadable network_info that mentions a
    prefix counts as a claim.
    """
    prefixes = sorted(set(prefixes))
    if not prefixes:
        return {}
    i_, c, m = s.instances, s.instance_info_caches, s.migrations
    moving = sa.select(m.c.instance_uuid).where(
        m.c.deleted == 0, sa.or_(m.c.source_compute == host, m.c.dest_compute == host),
        sa.or_(m.c.status.is_(None), m.c.status.not_in(RELEASED_MIGRATION_STATUSES)))
    stmt = (sa.select(c.c.instance_uuid, c.c.network_info, i_.c.host)
            .join(i_, i_.c.uuid == c.c.instance_uuid)
            .where(c.c.deleted == 0, i_.c.deleted == 0,
                   sa.or_(i_.c.host == host, i_.c.uuid.in_(moving)),
                   sa.or_(*[c.c.network_info.like(f"%{p}%") for p in prefixes])))
    try:
        with engine.connect() as conn:
            rows = list(conn.execute(stmt))
    except sa.exc.SQLAlchemyError as exc:
        raise exception.NovaDBError(nova_db.describe_error(exc, engine)) from None
    out: dict[str, list[str]] = {}
    for uuid, text, row_host in rows:
        if uuid == exclude:
            continue
        if row_host != host:
            migs = nova_view.reread_migrations(engine, uuid)
            if not rules.in_flight_migrations(migs, host):
                continue
        vifs, problem = net_plan.parse_network_info(text)
        named = set().union(*(v.prefixes for v in vifs)) if vifs else set()
        for p in prefixes:
            if p in named or (problem and problem.startswith("malformed") and p in (text or "")):
                out.setdefault(p, []).append(uuid)
    return out


def vm_claims(engine, host: str, vm_uuids: Iterable[str],
              exclude: str | None = None) -> dict[str, str]:
    """vm-uuid -> why, for those that are live on our host or in flight (fresh rows)."""
    out = {}
    for uuid in sorted(set(vm_uuids) - {exclude, None}):
        row = nova_view.reread_instance(engine, uuid)
        if row is None or row.deleted != 0 or row.archived:
            continue
        if row.host == host:
            out[uuid] = "live on this host"
        elif rules.in_flight_migrations(nova_view.reread_migrations(engine, uuid), host):
            out[uuid] = "in flight to or from this host"
    return out


def domain_users(handles: NetworkHandles, conn, exclude: str | None
                 ) -> tuple[dict[str, list[str]], list[str]]:
    """(prefix -> names of domains naming it, names of domains whose XML is unreadable)."""
    if handles.domains is None or conn is None:
        raise exception.StepFailed("no libvirt connection: cannot check which domains use the VIFs")
    res = handles.domains(conn)
    if not res.ok:
        raise exception.StepFailed(f"cannot list domains: {res.error}")
    users: dict[str, list[str]] = {}
    unreadable = []
    for dom in res.items:
        if dom.uuid == exclude:
            continue
        if dom.state == net_plan.UNREADABLE_DOMAIN_STATE:
            unreadable.append(dom.name)
        for p in net_plan.domain_prefixes(dom):
            users.setdefault(p, []).append(dom.name)
    return users, unreadable


# --------------------------------------------------------------------------
# The step
# --------------------------------------------------------------------------

def unplug_vifs(ctx, plan, handles: NetworkHandles | None) -> StepResult:
    """The ``unplug_vifs`` step (NetworkKind.run_step): returns what was removed and
    kept, VIF by VIF: DONE when a VIF was unplugged, else KEPT when one was kept,
    else ABSENT. ``handles``: the kind's open handles (None: not opened)."""
    if handles is None:
        raise exception.StepFailed("network plumbing is not enabled in this agent: cannot unplug")
    leak = plan.classification is Classification.LEAKED_VIF
    own = None if leak else plan.instance_uuid
    items = [dict(i) for i in plan.vifs]
    host = ctx.policy.host

    claims = db_claims(ctx.engine, host, [i["prefix"] for i in items], exclude=own)
    vms = vm_claims(ctx.engine, host, [u for i in items for u in i.get("vm_uuids", ())],
                    exclude=own) if leak else {}
    users, unreadable = domain_users(handles, ctx.conn, own)
    if leak and unreadable:
        raise exception.Aborted(f"the XML of domain(s) {sorted(unreadable)} cannot be read: "
                                f"they may use this VIF")

    report: list[StepResult] = []
    todo = []
    for item in items:
        p = item["prefix"]
        vm = next((u for u in item.get("vm_uuids", ()) if u in vms), None)
        if p in claims:
            report.append(_vif(p, StepOutcome.KEPT, "kept ({})",
                               f"now claimed by instance(s) {', '.join(claims[p])}"))
        elif vm is not None:
            report.append(_vif(p, StepOutcome.KEPT, "kept ({})",
                               f"its vm-uuid {vm} is {vms[vm]}"))
        elif p in users:
            report.append(_vif(p, StepOutcome.KEPT, "kept ({})",
                               f"now used by domain(s) {', '.join(users[p])}"))
        else:
            todo.append(item)
    unplugged = 0
    for item in todo:
        vm_ok = set(item.get("vm_uuids", ())) | {None} | ({own} if own else set())
        res = _unplug_one(handles, item, vm_ok)
        unplugged += res.outcome is not StepOutcome.KEPT
        report.append(res)
    text = "; ".join(str(r) for r in report)
    if leak and items and not unplugged:
        # A leak teardown that removed nothing did not clean a leak: it is reported
        # as aborted (kept), not as done, so no "leak cleaned" is claimed.
        raise exception.Aborted(text)
    outcomes = {r.outcome for r in report}
    outcome = next((o for o in (StepOutcome.DONE, StepOutcome.KEPT) if o in outcomes),
                   StepOutcome.ABSENT)
    return StepResult(outcome, text or "nothing to unplug")


def _vif(prefix: str, outcome: StepOutcome, form: str, detail: str) -> StepResult:
    """What became of one VIF: its text is "<prefix>: <form with the detail>"."""
    return StepResult(outcome, detail, prefix.replace("{", "{{").replace("}", "}}")
                      + ": " + form)


@dataclasses.dataclass
class _Unit:
    """A planned VIF as the host shows it right now."""
    members: dict[str, NetDevice]       # planned devices still there, as they are now
    ports: list[dict]                   # planned OVS ports (the plan's dicts)
    gone: list[str]
    holds: list[str]


def _judge(h: NetworkHandles, item: dict, vm_ok: set) -> _Unit:
    """Fresh reads (one netlink dump, the OVSDB replica after a round trip) and the
    planner's unit rules: what of the planned VIF is still there, and why it must
    be kept whole. Raises OvsUnavailable when OVSDB does not answer."""
    p = item["prefix"]
    planned = {d["name"]: d for d in item["devices"]}
    h.ovs.ping()                # down: fail before anything is removed (retried later)
    _, ovs_ports = h.ovs.read_ports()
    devices = net_inv.links_to_devices(h.netlink.dump())
    by_name = {d.name: d for d in devices}
    members, gone, holds = {}, [], []
    for name, want in planned.items():
        d = by_name.get(name)
        if d is None:
            gone.append(name)
        elif want["ifindex"] is not None and d.ifindex != want["ifindex"]:
            holds.append(f"{name} was recreated since planned (ifindex {d.ifindex})")
        elif d.kind not in net_plan.ROLE_KINDS[want["role"]]:
            holds.append(f"{name} is now a {d.kind}")
        else:
            members[name] = d
    for role in ("tap", "qbr", "qvb", "qvo"):
        name = role + p
        if name in by_name and name not in planned:
            holds.append(f"{name} appeared since planned")
    # The unit as the planner would see it now, from the same reads.
    g = net_plan.build_groups([d for d in devices if d.port_prefix == p],
                              [o for o in ovs_ports if o.name[3:] == p]).get(p)
    if g is not None:
        g.devices = [d for d in g.devices if d.name in members]
        holds.extend(net_plan.unit_holds(g, net_plan.stacked_index(devices),
                                         guest_gone=True))
        for port in g.ports:
            spec = next((o for o in item["ovs_ports"] if o["name"] == port.name), None)
            if spec is None:
                holds.append(f"OVS port {port.name} appeared since planned")
                continue
            why = ovs_inv.port_refusal(port, p, spec.get("iface_id"), vm_ok)
            if why:
                holds.append(f"OVS port {port.name}: {why}")
    return _Unit(members=members, ports=item["ovs_ports"], gone=gone, holds=holds)


def _unplug_one(h: NetworkHandles, item: dict, vm_ok: set) -> StepResult:
    """One VIF, whole or not at all: judged on fresh reads right before the first
    removal; kept whole (nothing removed: KEPT) when anything of it must stay.
    Otherwise DONE when its removals ran (a port found changed while unplugging is
    kept and said so), ABSENT when nothing of it was left."""
    p = item["prefix"]
    unit = _judge(h, item, vm_ok)
    if unit.holds:
        LOG.info("VIF %s kept whole: %s", p, "; ".join(unit.holds))
        return _vif(p, StepOutcome.KEPT, "kept whole ({})", "; ".join(unit.holds))
    removed, kept, gone = [], [], list(unit.gone)

    def delete(d: NetDevice, what: str | None = None) -> None:
        (removed if h.netlink.delete(d.ifindex) else gone).append(what or d.name)

    m = unit.members
    # 1. the linux bridge
    qbr = m.get("qbr" + p)
    if qbr is not None:
        h.netlink.set_down(qbr.ifindex)
        delete(qbr)
    # 2. the OVS ports (re-checked once more inside their transaction)
    for port in unit.ports:
        bridge = port.get("bridge") or h.ovs.bridge
        res = ovs_inv.delete_vif_port(h.ovs, bridge, port["name"], p, port.get("iface_id"),
                                      vm_ok)
        if res.outcome is StepOutcome.DONE:
            removed.append(f"ovs {bridge}:{port['name']}")
        elif res.outcome is StepOutcome.ABSENT:
            gone.append(f"ovs {port['name']}")
        else:
            kept.append(f"ovs {bridge}:{port['name']} ({res.detail}, changed "
                        f"while unplugging)")
    # 3. the veth pair: deleting qvo takes its qvb peer with it
    qvo, qvb = m.get("qvo" + p), m.get("qvb" + p)
    if qvo is not None:
        delete(qvo, f"{qvo.name} (and {qvo.peer})" if qvo.peer else None)
        if qvo.peer:
            qvb = None
    if qvb is not None:
        delete(qvb)
    # 4. the tap
    tap = m.get("tap" + p)
    if tap is not None:
        delete(tap)
    parts = []
    if removed:
        parts.append("removed " + ", ".join(removed))
    if kept:
        parts.append("kept " + ", ".join(kept))
    if gone and not removed and not kept:
        parts.append("already gone")
    outcome = StepOutcome.DONE if removed or kept else StepOutcome.ABSENT
    return _vif(p, outcome, "{}", "; ".join(parts) or "nothing there")
