"""The unplug step: remove a teardown's VIFs the way os-vif unplugs them.

``teardown.STEP_HANDLERS["unplug_vifs"]`` runs it for every plan with ``vifs``:
instance teardowns (after the domain is destroyed, before the files go) and the
teardowns of leaked VIF groups (R11). For each VIF, in os-vif's order:

1. the ``qbr`` bridge (hybrid plug): set down, then deleted (its ports detach);
2. the OVS ports (``qvo`` for hybrid plug, ``tap`` for direct plug) on the
   integration bridge, with ovsdbapp, ``if_exists``-style and re-checked inside
   the transaction (``reaper.inventory.ovs.DelVifPortCommand``);
3. the ``qvo`` device (its ``qvb`` peer goes with it), or a lone ``qvb``;
4. a ``tap`` device nothing holds open any more.

Before touching anything the step checks again, against fresh reads, what the
planner decided: no live or in-flight instance on this host claims the port in
its network_info (one query), the ``vm-uuid`` of a leaked VIF's port is not such
an instance, and no other domain names the devices (libvirt, for leaked VIFs and
for teardowns alike). A VIF claimed meanwhile is kept and reported; for a leak,
an unreadable domain aborts the teardown. Each device must still be the one
planned (same ifindex when known, the kind Nova gives it, a veth whose peer is
its partner, a bridge with no foreign ports, a tap no process holds open).

Idempotent: whatever is already gone counts as done, so a resumed or repeated
step ends in the same state. An OVSDB server that is down fails the step before
anything is removed (the journal retries it on a later pass).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

import sqlalchemy as sa
from oslo_log import log as logging

from reaper.executor import teardown
from reaper.inventory import network as net_inv
from reaper.inventory import ovs as ovs_inv
from reaper.nova import db as nova_db
from reaper.nova import schema as s
from reaper.nova import view as nova_view
from reaper.planner import network as net_plan
from reaper.planner import rules
from reaper.records import Classification, NetDevice

LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class NetworkHandles:
    """What the unplug step needs (``teardown.Context.extras["network"]``)."""
    netlink: net_inv.Netlink
    ovs: ovs_inv.OvsHandle
    # conn -> CollectorResult of domains (reaper.inventory.libvirt.collect_domains)
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
        sa.or_(m.c.status.is_(None), m.c.status.not_in(nova_view.FINAL_MIGRATION_STATUSES)))
    stmt = (sa.select(c.c.instance_uuid, c.c.network_info, i_.c.host)
            .join(i_, i_.c.uuid == c.c.instance_uuid)
            .where(c.c.deleted == 0, i_.c.deleted == 0,
                   sa.or_(i_.c.host == host, i_.c.uuid.in_(moving)),
                   sa.or_(*[c.c.network_info.like(f"%{p}%") for p in prefixes])))
    try:
        with engine.connect() as conn:
            rows = list(conn.execute(stmt))
    except sa.exc.SQLAlchemyError as exc:
        raise nova_db.NovaDBError(nova_db.describe_error(exc, engine)) from None
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
        raise RuntimeError("no libvirt connection: cannot check which domains use the VIFs")
    res = handles.domains(conn)
    if not res.ok:
        raise RuntimeError(f"cannot list domains: {res.error}")
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

def unplug_vifs(ctx, plan) -> str:
    """teardown.STEP_HANDLERS["unplug_vifs"]: returns what was removed and kept."""
    handles: NetworkHandles | None = ctx.extras.get("network")
    if handles is None:
        raise RuntimeError("network plumbing is not enabled in this agent: cannot unplug")
    leak = plan.classification is Classification.LEAKED_VIF
    own = None if leak else plan.instance_uuid
    items = [dict(i) for i in plan.vifs]
    host = ctx.policy.host

    claims = db_claims(ctx.engine, host, [i["prefix"] for i in items], exclude=own)
    vms = vm_claims(ctx.engine, host, [u for i in items for u in i.get("vm_uuids", ())],
                    exclude=own) if leak else {}
    users, unreadable = domain_users(handles, ctx.conn, own)
    if leak and unreadable:
        raise teardown.Aborted(f"the XML of domain(s) {sorted(unreadable)} cannot be read: "
                               f"they may use this VIF")

    report, todo = [], []
    for item in items:
        p = item["prefix"]
        vm = next((u for u in item.get("vm_uuids", ()) if u in vms), None)
        if p in claims:
            report.append(f"{p}: kept (now claimed by instance(s) {', '.join(claims[p])})")
        elif vm is not None:
            report.append(f"{p}: kept (its vm-uuid {vm} is {vms[vm]})")
        elif p in users:
            report.append(f"{p}: kept (now used by domain(s) {', '.join(users[p])})")
        else:
            todo.append(item)
    if not todo:
        return "; ".join(report) or "nothing to unplug"

    if any(i["ovs_ports"] for i in todo):
        handles.ovs.ping()      # down: fail before anything is removed (retried later)
    devices = {d.name: d for d in net_inv.links_to_devices(handles.netlink.dump())}
    for item in todo:
        vm_ok = set(item.get("vm_uuids", ())) | {None} | ({own} if own else set())
        report.append(_unplug_one(handles, item, devices, vm_ok))
    return "; ".join(report)


def _unplug_one(h: NetworkHandles, item: dict, devs: dict[str, NetDevice],
                vm_ok: set) -> str:
    p = item["prefix"]
    planned = {d["name"]: d for d in item["devices"]}
    removed, kept, gone = [], [], []

    def current(role: str) -> NetDevice | None:
        name = role + p
        want = planned.get(name)
        if want is None:
            return None                 # not in the plan: never touched
        d = devs.get(name)
        if d is None:
            gone.append(name)
            return None
        if want["ifindex"] is not None and d.ifindex != want["ifindex"]:
            kept.append(f"{name} (recreated since planned: ifindex {d.ifindex})")
            return None
        if d.kind not in net_plan.ROLE_KINDS[role]:
            kept.append(f"{name} (kind {d.kind})")
            return None
        return d

    def delete(d: NetDevice, what: str | None = None) -> None:
        (removed if h.netlink.delete(d.ifindex) else gone).append(what or d.name)

    tap = current("tap")
    # 1. the linux bridge
    qbr = current("qbr")
    if qbr is not None:
        foreign = sorted(set(qbr.ports) - {"qvb" + p, "tap" + p})
        busy = tap is not None and tap.carrier and tap.name in qbr.ports
        if foreign:
            kept.append(f"{qbr.name} (has ports {foreign})")
        elif busy:
            kept.append(f"{qbr.name} (its tap {tap.name} is held open)")
        else:
            h.netlink.set_down(qbr.ifindex)
            delete(qbr)
    # 2. the OVS ports
    for port in item["ovs_ports"]:
        bridge = port.get("bridge") or h.ovs.bridge
        res = ovs_inv.delete_vif_port(h.ovs, bridge, port["name"], p, port.get("iface_id"),
                                      vm_ok)
        if res == "deleted":
            removed.append(f"ovs {bridge}:{port['name']}")
        elif res == "absent":
            gone.append(f"ovs {port['name']}")
        else:
            kept.append(f"ovs {bridge}:{port['name']} ({res[len('kept: '):]})")
    # 3. the veth pair: deleting qvo takes its qvb peer with it
    def veth_ok(d: NetDevice, partner: str) -> bool:
        if d.peer_netnsid is not None:
            kept.append(f"{d.name} (its peer is in another namespace)")
            return False
        if d.peer not in (None, partner):
            kept.append(f"{d.name} (its peer is {d.peer})")
            return False
        return True

    qvo, qvb = current("qvo"), current("qvb")
    if qvo is not None and veth_ok(qvo, "qvb" + p):
        delete(qvo, f"{qvo.name} (and {qvo.peer})" if qvo.peer else None)
        if qvo.peer:
            qvb = None
    if qvb is not None and veth_ok(qvb, "qvo" + p):
        delete(qvb)
    # 4. the tap
    if tap is not None:
        if tap.carrier:
            kept.append(f"{tap.name} (held open by a process)")
        elif tap.master and tap.master != "qbr" + p:
            kept.append(f"{tap.name} (a port of {tap.master})")
        else:
            delete(tap)
    parts = []
    if removed:
        parts.append("removed " + ", ".join(removed))
    if kept:
        parts.append("kept " + ", ".join(kept))
    if gone and not removed and not kept:
        parts.append("already gone")
    return f"{p}: " + ("; ".join(parts) or "nothing there")


def register() -> None:
    teardown.STEP_HANDLERS["unplug_vifs"] = unplug_vifs

