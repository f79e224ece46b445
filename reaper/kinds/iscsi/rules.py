"""The ``iscsi`` kind's rules: R12 (``leaked_iscsi``), the volume part of every
instance teardown (step 3, "disconnect volumes"), and R13 evidence. Parsing of
``connection_info`` is ``connection_info``, the host's iSCSI picture ``topology``.

Pure: records in, records out. ``extend`` is the ``iscsi`` kind's plan.

R12, per LUN of every iSCSI session on this host. A LUN is **in use**, and its
session is kept, when any of these holds:

* a live BDM (``block_device_mapping.deleted = 0``) of a *protected* instance
  references (portal, iqn, lun) in its ``connection_info`` (``driver_volume_type``
  ``iscsi``/``iser``; single path ``target_portal/target_iqn/target_lun``, multipath
  ``target_portals/target_iqns/target_luns``, all portals). Protected: a live row on
  our host, a live row with a migration touching our host in flight, or any instance
  seen locally (domain or directory) that no teardown of this plan removes;
* a disk of **any** domain on this host (Nova's or not, whatever its state) resolves
  to the LUN: its source is the disk, a partition of it, or a device stacked on it
  (``/dev/sdX``, ``/dev/sdXN``, a by-path/by-id/by-uuid link, ``-partN`` links,
  ``/dev/dm-N``, a mapper or LVM name), by the /dev links the collector found or by
  what the domain collector resolved the source to on this host (real path, device
  number), or names it by by-path (``ip-<portal>-iscsi-<iqn>-lun-<n>[-partN]``),
  except the domains this plan tears down: their devices go to their teardown;
* the LUN, any of its partitions, or anything stacked on them is open by a process,
  mounted (mountinfo, by device number) or swap, or held: by a device that is not a
  multipath map (dm-crypt, LVM, md, on the disk or on a partition), or by a multipath
  map that is itself open, mounted, swap, held or in a domain's XML.

A LUN with none of these is leaked. A session with no LUN at all, and a node record
with no session, are leaked when no protected BDM and no domain names their
(portal, iqn). Logging out of a session is allowed only when no LUN of its target is
in use and no protected BDM or domain names any LUN of it: otherwise only the leaked
LUN's devices are removed (multi-attach and shared targets keep their session).

Never touched at all, not even reported: flash (firmware) sessions, and the host's
own sessions: those whose target the boot firmware names (iBFT), and those with a
filesystem the host has mounted (the root, say, on LVM on a partition) or its swap on
a LUN or on anything stacked on one; nor the node records of a boot target.

Everything uncertain stays ``log``: the domain list unavailable, a migration touching
this host in flight, a protected BDM whose ``connection_info`` cannot be read or is
still empty (an attach in progress), whatever hostile JSON it holds. A session the
disconnect step found it could not log out by any means (no node record, and neither
os-brick nor a logout by its id worked: an ``IscsiOperatorNote``) is reported as
needing an operator, never planned again while that session lives.

Teardowns: after an evacuation the BDM describes the destination's connection, so an
instance's volumes are found from its own domain XML and this host's sysfs, never
from the BDM; for reclaim and running-deleted teardowns the instance's BDMs add the
LUNs they reference *and* that exist here. A LUN another instance still uses
(multi-attach) is left alone. CHAP credentials are never copied out of
``connection_info``.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any

# Parsing (connection_info) and the host model (topology) have modules of their own;
# their names stay reachable from here, as the disconnect step and the tests use them.
from reaper.kinds.iscsi.connection_info import (  # noqa: F401
    DEFAULT_PORT, ISCSI_DRIVERS, MAX_CONNECTION_INFO, Conn, TargetRef, by_path_ref,
    norm_iqn, norm_portal, parse_connection_info,
)
from reaper.kinds.iscsi.topology import Host, Refs, device_use, listed, logout_allowed
from reaper.kinds.instance import rules
from reaper.kinds.iscsi.objects import IscsiOperatorNote, IscsiSession, ScsiDevice
from reaper.objects.fields import Action, Classification, ResourceKind
from reaper.objects.host import Domain
from reaper.objects.plan import Finding, Plan, TeardownPlan

KIND = "iscsi_session"
# Teardowns whose volumes may also come from the instance's own BDMs (the row is on
# our host, or was); never evacuations, whose BDMs point at the destination.
BDM_TEARDOWNS = frozenset({Classification.RECLAIMABLE, Classification.RUNNING_DELETED})
_MAX_LISTED = 50

# reaper.kinds.instance.libvirt.UNKNOWN_STATE: a domain whose XML could not be read.
UNREADABLE_DOMAIN_STATE = "unknown"


# --------------------------------------------------------------------------
# The extension
# --------------------------------------------------------------------------

def reverify_leak(plan, row, migrations, policy, now) -> tuple[bool, str]:
    """A leak belongs to no instance row; the disconnect step re-reads the host, the
    domains and the BDMs under os-brick's lock before it touches anything."""
    return True, "re-checked under os-brick's lock by the disconnect step"


def _protected_uuids(ctx, torn_down: set[str]) -> set[str]:
    host = ctx.policy.host
    migs = collections.defaultdict(list)
    for m in ctx.view.migrations:
        migs[m.instance_uuid].append(m)
    out = set(ctx.inv.local_uuids()) - torn_down
    for row in ctx.view.instances.values():
        if row.uuid in torn_down or row.deleted != 0 or row.archived:
            continue
        if row.host == host or rules.in_flight_migrations(migs.get(row.uuid, []), host):
            out.add(row.uuid)
    return out


def extend(ctx) -> Plan:
    """PlanContext -> Plan: R12 findings and leak teardowns, volumes on teardowns, R13."""
    plan: Plan = ctx.plan
    res = ctx.inv.extra.get(KIND)
    if not ctx.view.ok:
        return plan
    host = Host.from_items(res.items if res is not None and res.ok else ())
    iscsi_unknown = res is not None and not res.ok
    teardowns = {t.instance_uuid: t for t in plan.teardowns if t.destroys_instance
                 or (t.action is Action.RECLAIM)}
    torn_down = set(teardowns)
    protected = _protected_uuids(ctx, torn_down)
    domains = list(ctx.inv.domains.items) if ctx.inv.domains.ok else []
    dom_by_uuid = {d.uuid: d for d in domains}

    # -- BDMs: parse once; report the unusable ones (R13).
    conns: dict[int, Conn] = {}
    findings: list[Finding] = []
    protected_refs = Refs()
    bdm_refs: dict[str, list[tuple[Any, Conn]]] = collections.defaultdict(list)
    unsure: list[str] = []
    # volume id -> a kept instance whose BDM of it has no usable connection_info yet
    # (a multi-attach in progress): its LUN may be about to be theirs too.
    pending_attach: dict[str, str] = {}
    checked_bdms = 0
    for b in ctx.view.bdms:
        if b.destination_type != "volume":
            continue
        c = conns[b.id] = parse_connection_info(b.connection_info)
        bdm_refs[b.instance_uuid].append((b, c))
        relevant = b.instance_uuid in protected or b.instance_uuid in torn_down
        if c.error and relevant:
            dom = dom_by_uuid.get(b.instance_uuid)
            findings.append(Finding(
                ResourceKind.VOLUME_ATTACHMENT,
                f"{dom.name if dom else b.instance_uuid}:{b.volume_id}", b.instance_uuid,
                Classification.ATTACHMENT_DRIFT, Action.LOG,
                f"block_device_mapping {b.id} has {c.error}: it cannot be matched to this "
                f"host's sessions and nothing is disconnected for it",
                {"bdm_id": b.id, "volume_id": b.volume_id, "connection_info_error": c.error,
                 "protected_instance": b.instance_uuid in protected}))
        if b.instance_uuid not in protected:
            continue
        if (c.error or c.empty) and b.volume_id:
            pending_attach.setdefault(b.volume_id, b.instance_uuid)
        if c.error:
            unsure.append(f"block_device_mapping {b.id} of instance {b.instance_uuid} has "
                          f"unusable connection_info")
        elif c.empty:
            unsure.append(f"block_device_mapping {b.id} of instance {b.instance_uuid} has no "
                          f"connection_info yet (an attach in progress?)")
        elif c.iscsi:
            checked_bdms += 1
            for ref in c.refs:
                protected_refs.add(
                    ref, f"bdm {b.id} (instance {b.instance_uuid}, volume {b.volume_id})")

    # -- domains: everything not torn down here pins what it names.
    for dom in domains:
        if dom.uuid in torn_down:
            continue
        protected_refs.add_domain(host, dom)
        if dom.state == UNREADABLE_DOMAIN_STATE:
            unsure.append(f"the XML of domain {dom.name} could not be read: it may use "
                          f"any session")
    if not ctx.inv.domains.ok:
        unsure.append("the domain list is unavailable: a domain may use any session")
    flying = rules.in_flight_migrations(ctx.view.migrations, ctx.policy.host)
    if flying:
        unsure.append(f"{len(flying)} migration(s) touching this host in flight: their "
                      f"volumes may be connected here before any BDM says so")

    # -- teardowns: the volume step.
    new_teardowns = []
    claimed: dict[str, str] = {}    # device name -> uuid of the teardown disconnecting it
    claimed_targets = Refs()
    held: dict[str, str] = {}       # finding key -> why its teardown waits
    for t in plan.teardowns:
        if t.instance_uuid not in teardowns:
            new_teardowns.append(t)
            continue
        dom = dom_by_uuid.get(t.instance_uuid)
        if iscsi_unknown and dom is not None and any(
                (d.source or "").startswith("/dev/") for d in dom.disks):
            # Its block disks may be iSCSI LUNs only this domain's XML can tell apart
            # (after an evacuation the BDM names the destination's): wait for a pass
            # that can read the host's sessions rather than undefine that knowledge.
            why = (f"not torn down in this pass: the host's iSCSI state is unknown "
                   f"({res.error}) and this domain has block-device disks")
            held.update({f.key: why for f in t.findings})
            continue
        items = _teardown_volumes(t, host, dom_by_uuid.get(t.instance_uuid),
                                  bdm_refs.get(t.instance_uuid, []), protected_refs,
                                  pending_attach)
        for it in items:
            for tg in it["targets"]:
                if tg["device"]:
                    claimed[tg["device"]] = t.instance_uuid
                claimed_targets.add(TargetRef(tg["portal"], tg["iqn"], tg["lun"]),
                                    t.instance_uuid)
        new_teardowns.append(dataclasses.replace(t, volumes=tuple(items)) if items else t)

    # -- R12
    action = ctx.policy.action_for(Classification.LEAKED_ISCSI)
    leak_findings, leak_teardowns = _leaks(host, protected_refs, claimed, claimed_targets,
                                           action, unsure,
                                           {"bdms": checked_bdms, "domains": len(domains)})
    findings.extend(leak_findings)
    new_teardowns.extend(leak_teardowns)

    # -- R13: what the host says about each drift the core found.
    out_findings = [_drift_evidence(f, host, dom_by_uuid, bdm_refs)
                    if f.classification is Classification.ATTACHMENT_DRIFT
                    and f.kind is ResourceKind.VOLUME_ATTACHMENT else f
                    for f in plan.findings]
    out_findings = [dataclasses.replace(f, action=Action.LOG, reason=f"{f.reason}; {held[f.key]}")
                    if f.key in held else f for f in out_findings]
    return Plan(findings=tuple(out_findings) + tuple(findings),
                teardowns=tuple(new_teardowns))


def _target_entry(sess: IscsiSession, dev: ScsiDevice | None, lun: int | None,
                  logout: bool, host: Host | None = None) -> dict:
    portal, iqn = norm_portal(sess.portal), norm_iqn(sess.iqn)
    entry = {"portal": portal, "iqn": iqn,
             "session_portal": sess.portal, "session_iqn": sess.iqn, "sid": sess.sid,
             "lun": lun, "device": dev.name if dev else None,
             "hctl": dev.hctl if dev else None, "wwid": dev.wwid if dev else None,
             "logout": logout}
    if host is not None:
        # No node record: os-brick cannot find the target through the node database;
        # the disconnect step logs the session out by its id (see the executor).
        entry["node"] = host.has_node(portal, iqn)
    return entry


def _teardown_volumes(t: TeardownPlan, host: Host, dom: Domain | None,
                      bdms: list[tuple[Any, Conn]], refs: Refs,
                      pending_attach: dict[str, str] | None = None) -> list[dict]:
    """The iSCSI volumes this instance's teardown disconnects, and how."""
    groups: list[tuple[str | None, str | None, set[str], list[TargetRef]]] = []
    seen: set[str] = set()
    if dom is not None:
        for disk in dom.disks:
            names, ref = host.resolve_disk(disk)
            names -= seen
            stale = []
            if ref is not None and ref.portal is not None and not names:
                # by-path link whose device is gone: the session may still be there
                if host.session_of(ref.portal, ref.iqn) is not None:
                    stale.append(ref)
            if names or stale:
                seen.update(names)
                groups.append((disk.serial, disk.source, names, stale))
    if t.classification in BDM_TEARDOWNS:
        for b, c in bdms:
            if not c.iscsi or c.error:
                continue
            names = set()
            for ref in c.refs:
                s = host.session_of(ref.portal, ref.iqn) if ref.iqn else None
                for d in (s.devices if s else ()):
                    if d.lun == ref.lun and d.name not in seen:
                        names.add(d.name)
            if names:
                seen.update(names)
                groups.append((b.volume_id, None, names, []))
    items = []
    for volume_id, source, names, stale in groups:
        shared = set()
        for n in names:
            sess, dev = host.devices[n]
            shared |= refs.users(norm_portal(sess.portal), norm_iqn(sess.iqn), dev, dev.lun)
        for ref in stale:
            shared |= refs.matching(ref.portal, ref.iqn, ref.lun)
        targets = []
        own = set()
        for n in sorted(names):
            sess, dev = host.devices[n]
            ok, _ = logout_allowed(host, sess, names, refs)
            targets.append(_target_entry(sess, dev, dev.lun, ok, host))
            if host.host_own(sess):
                own.add(host.host_own(sess))
        for ref in stale:
            sess = host.session_of(ref.portal, ref.iqn)
            ok, _ = logout_allowed(host, sess, names, refs)
            targets.append(_target_entry(sess, None, ref.lun, ok, host))
            if host.host_own(sess):
                own.add(host.host_own(sess))
        dms = {h for n in names for h in host.devices[n][1].holders
               if h in host.dms and host.dms[h].multipath}
        keep = f"shared: still used by {listed(shared)} (multi-attach)" if shared else None
        if own:
            keep = "the host's own session: " + "; ".join(sorted(own))
        other = (pending_attach or {}).get(volume_id or "")
        if other and other != t.instance_uuid and keep is None:
            keep = (f"shared: volume {volume_id} is being attached to instance {other} "
                    f"(its BDM has no usable connection_info yet)")
        items.append({
            "volume_id": volume_id, "origin": "domain_xml" if source else "bdm",
            "device_path": source or (f"/dev/{next(iter(dms))}" if len(dms) == 1 else
                                      f"/dev/{sorted(names)[0]}" if names else None),
            "multipath": bool(dms), "dm": sorted(dms)[0] if dms else None,
            "targets": targets,
            "keep": keep,
        })
    return items


def _leaks(host: Host, refs: Refs, claimed: dict[str, str],
           claimed_targets: Refs, action: Action, unsure: list[str],
           checked: dict) -> tuple[list[Finding], list[TeardownPlan]]:
    findings: list[Finding] = []
    teardowns: list[TeardownPlan] = []
    if action is Action.IGNORE:
        return findings, teardowns
    uncertain = "; ".join(unsure[:3]) + (f" (and {len(unsure) - 3} more)" if len(unsure) > 3
                                         else "")

    def verdict(reason: str, ev: dict, resource: str,
                note: IscsiOperatorNote | None = None) -> Finding:
        ev = {**ev, "checked": checked}
        act = Action.REAP if action is Action.REAP else Action.LOG
        if note is not None:
            # Tried once and it could not be done by any means we have: say so once
            # per pass as a finding, never retry it (until the session changes).
            act = Action.LOG
            reason = (f"{reason}; needs an operator: {note.reason} (since {note.since}; "
                      f"not retried)")
            ev = {**ev, "needs_operator": True,
                  "operator_note": {"reason": note.reason, "since": note.since}}
        elif act is Action.REAP and uncertain:
            act = Action.LOG
            reason = f"{reason}; only logging: {uncertain}"
        return Finding(ResourceKind.ISCSI_SESSION, resource, None,
                       Classification.LEAKED_ISCSI, act, reason, ev)

    groups: dict[str, list[tuple[IscsiSession, ScsiDevice]]] = collections.defaultdict(list)
    leaked_by_session: dict[str, list[ScsiDevice]] = collections.defaultdict(list)
    session_findings: dict[str, list[Finding]] = collections.defaultdict(list)
    for sess in host.sessions:
        if sess.node_type == "flash" or host.host_own(sess):
            continue        # firmware, boot or the host's own filesystems: never ours
        portal, iqn = norm_portal(sess.portal), norm_iqn(sess.iqn)
        note = host.note_for(sess)
        users_of = {}
        leaked = []
        for dev in sess.devices:
            if dev.name in claimed:
                continue
            users = refs.users(portal, iqn, dev, dev.lun)
            if not users and not device_use(host, dev):
                leaked.append(dev)
            users_of[dev.name] = users
        if sess.devices and not leaked:
            continue        # everything in use (the common case): nothing to say
        named = refs.on_target(portal, iqn)
        lun_state = {}
        for dev in sess.devices:
            if dev.name in claimed:
                lun_state[dev.lun] = f"disconnected by the teardown of {claimed[dev.name]}"
            elif dev in leaked:
                lun_state[dev.lun] = "leaked"
            else:
                lun_state[dev.lun] = "in use: " + listed(
                    sorted(users_of[dev.name]) + device_use(host, dev))
        s_ev = {"sid": sess.sid, "portal": sess.portal, "tpgt": sess.tpgt, "iqn": sess.iqn,
                "transport": sess.transport,
                "luns": {str(k): v for k, v in sorted(lun_state.items())},
                "target_named_by": sorted(named)[:_MAX_LISTED],
                "node_record": host.has_node(portal, iqn)}
        if not sess.devices:
            if named or claimed_targets.on_target(portal, iqn):
                continue
            ok, why = logout_allowed(host, sess, set(), refs)
            f = verdict("iSCSI session with no LUN that no live BDM or domain names",
                        {**s_ev, "logout": ok, "logout_why": why},
                        f"{sess.portal} {sess.iqn} (no LUN)", note)
            findings.append(f)
            if f.action is Action.REAP:
                teardowns.append(_leak_plan(
                    [f], [_target_entry(sess, None, None, ok, host)], None, None, f.reason))
            continue
        for dev in leaked:
            leaked_by_session[sess.sid].append(dev)
            mp = [h for h in dev.holders if h in host.dms and host.dms[h].multipath]
            key = mp[0] if mp else dev.name
            groups[key].append((sess, dev))
            ok, why = logout_allowed(host, sess, {d.name for d in leaked}, refs)
            ev = {**s_ev, "lun": dev.lun,
                  "device": {"name": dev.name, "hctl": dev.hctl, "wwid": dev.wwid,
                             "state": dev.state, "paths": list(dev.paths),
                             "holders": list(dev.holders),
                             "partitions": list(dev.partitions)},
                  "logout": ok, "logout_why": why}
            f = verdict(f"LUN {dev.lun} ({dev.name}) of this session is named by no live BDM "
                        f"and no domain, and neither it nor a partition of it or a device "
                        f"on it is open, mounted, swap or held",
                        ev, f"{sess.portal} {sess.iqn} lun {dev.lun} ({dev.name})", note)
            findings.append(f)
            session_findings[dev.name].append(f)

    # one disconnect per volume: a multipath map with all its paths, or one device
    for key, members in sorted(groups.items()):
        if key in host.dms:
            dm = host.dms[key]
            member_names = {d.name for _, d in members}
            if set(dm.slaves) - member_names:
                continue        # a path of it is not leaked: leave the whole map
        fs = [f for _, d in members for f in session_findings[d.name]]
        if not fs or any(f.action is not Action.REAP for f in fs):
            continue
        targets = []
        for sess, dev in members:
            leaked_names = {d.name for d in leaked_by_session[sess.sid]}
            ok, _ = logout_allowed(host, sess, leaked_names, refs)
            targets.append(_target_entry(sess, dev, dev.lun, ok, host))
        dm_name = key if key in host.dms else None
        teardowns.append(_leak_plan(fs, targets, dm_name,
                                    f"/dev/{key}", "; ".join(f.reason for f in fs[:1])))

    # node records with no session
    live = {(norm_portal(s.portal), norm_iqn(s.iqn)) for s in host.sessions}
    for node in host.nodes:
        portal, iqn = norm_portal(node.portal), norm_iqn(node.iqn)
        if (portal, iqn) in live or host.own_iqn(iqn):
            continue        # the host's own target (another path of it, say)
        named = refs.on_target(portal, iqn)
        if named or claimed_targets.on_target(portal, iqn):
            continue
        f = verdict("node record with no session that no live BDM or domain names (iscsid "
                    "would log into it again at start-up)",
                    {"portal": node.portal, "tpgt": node.tpgt, "iqn": node.iqn, "node": True},
                    f"node {node.portal} {node.iqn}")
        findings.append(f)
        if f.action is Action.REAP:
            teardowns.append(_leak_plan([f], [{
                "portal": portal, "iqn": iqn, "session_portal": node.portal,
                "session_iqn": node.iqn, "sid": None, "lun": None, "device": None,
                "hctl": None, "wwid": None, "logout": True}], None, None, f.reason))
    return findings, teardowns


def _leak_plan(fs: list[Finding], targets: list[dict], dm: str | None,
               device_path: str | None, reason: str) -> TeardownPlan:
    item = {"volume_id": None, "origin": "leak", "device_path": device_path,
            "multipath": dm is not None, "dm": dm, "targets": targets, "keep": None,
            "resources": [f.resource for f in fs]}
    return TeardownPlan(
        instance_uuid=fs[0].resource, classification=Classification.LEAKED_ISCSI,
        action=Action.REAP, domain_name=None, dirs=(), destroy_disks=False,
        finalize_db=False, reason=reason, findings=tuple(fs), volumes=(item,))


def _drift_evidence(f: Finding, host: Host, dom_by_uuid: dict[str, Domain],
                    bdm_refs: dict[str, list]) -> Finding:
    vol = f.evidence.get("volume_id")
    host_ev: dict[str, Any] = {}
    dom = dom_by_uuid.get(f.instance_uuid or "")
    if f.evidence.get("in_domain_xml") and dom is not None:
        for disk in dom.disks:
            if disk.serial != vol:
                continue
            names, ref = host.resolve_disk(disk)
            host_ev = {"disk": {"target": disk.target, "source": disk.source},
                       "iscsi": [_dev_ev(host, n) for n in sorted(names)]
                       or ([ref.as_dict()] if ref else [])}
    elif f.evidence.get("live_bdm"):
        for b, c in bdm_refs.get(f.instance_uuid or "", []):
            if b.volume_id != vol:
                continue
            here = []
            for ref in c.refs:
                s = host.session_of(ref.portal, ref.iqn) if ref.iqn else None
                devs = [d.name for d in (s.devices if s else ()) if d.lun == ref.lun]
                here.append({**ref.as_dict(), "session": s.sid if s else None,
                             "devices": devs})
            host_ev = {"bdm_id": b.id, "driver_volume_type": c.driver,
                       "connection_info_error": c.error, "targets": here}
    if not host_ev:
        return f
    return dataclasses.replace(f, evidence={**f.evidence, "host": host_ev})


def _dev_ev(host: Host, name: str) -> dict:
    sess, dev = host.devices[name]
    return {"device": name, "lun": dev.lun, "portal": sess.portal, "iqn": sess.iqn,
            "sid": sess.sid}
