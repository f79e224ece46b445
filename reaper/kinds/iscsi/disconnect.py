"""Executor step "disconnect_volumes" (doc/design.md "Teardown order", step 3), also the whole of a
leaked-iSCSI cleanup, through os-brick.

Each volume item of a TeardownPlan (see reaper.kinds.iscsi.rules) is handled in one
critical section under os-brick's external ``connect_volume`` lock in
``[os_brick] lock_path``, the lock nova-compute's os-brick takes around every
``connect_volume`` and ``disconnect_volume``. Inside it, compare-and-act:

1. the host is read again (iSCSI collector), so are the domains (libvirt) and the
   live BDMs of this host's and in-flight instances (Nova DB);
2. each device is checked to still be the same LUN of the same session (device
   names are reused) and not in use: not open, not mounted, not held by a
   non-multipath map, not in any other domain's XML, not named by a live BDM
   (multi-attach). A device in use is kept: a leak item is then ``Aborted`` (it is
   no longer a leak), an instance's item is reported as kept;
3. when no other LUN of the target is in use or named anywhere, os-brick's own
   ``ISCSIConnector.disconnect_volume`` runs (flush, remove the SCSI devices, log
   out and delete the node record of sessions left without devices); otherwise
   only os-brick's ``LinuxSCSI.remove_connection`` removes this volume's devices and
   the session stays logged in.

``disconnect_volume`` is called unwrapped (``inspect.unwrap``) because we already
hold its lock and oslo's lock is not re-entrant: same code, same lock, one critical
section covering both the re-check and the disconnect.

Errors: on an instance teardown that destroys disks they are recorded in the step's
detail and the teardown goes on (Nova's "Ignoring Volume Error ... during delete");
otherwise (evacuated instance on shared storage, leak cleanup) the step fails and
the journal retries it next pass. Connection properties never carry CHAP secrets:
the planner never copies them, and os-brick needs none to disconnect.
"""
from __future__ import annotations

import dataclasses
import errno
import inspect
import json
import os
from typing import Callable

import sqlalchemy as sa
from oslo_log import log as logging

from reaper import exception
from reaper import instancelog
from reaper.conf import CONF
from reaper.executor import teardown
from reaper.nova import schema as s
from reaper.kinds.iscsi import rules as vol
from reaper.kinds.iscsi import topology
from reaper.kinds.iscsi.objects import IscsiOperatorNote
from reaper.objects.fields import ENDED_MIGRATION_STATUSES, Classification
from reaper.objects.host import CollectorResult
from reaper.objects.plan import TeardownPlan
from reaper.objects.step import StepOutcome, StepResult

LOG = logging.getLogger(__name__)

LOCK_NAME = "connect_volume"        # os-brick's ISCSIConnector connect/disconnect lock


@dataclasses.dataclass
class Handles:
    """What the step needs besides teardown.Context: the ``iscsi`` kind's handles."""
    collect: Callable[[], CollectorResult]
    list_domains: Callable[[object], CollectorResult]
    connector: Callable[[], object]             # -> os_brick ISCSIConnector
    linuxscsi: Callable[[], object]             # -> os_brick LinuxSCSI
    lock_path: Callable[[], str | None]
    # Log a session out by its id (``iscsiadm -m session -r SID -u``, which needs no
    # node record); returns what iscsiadm said. None: through the connector's iscsiadm.
    logout_session: Callable[[str], str] | None = None

    def __post_init__(self):
        if self.logout_session is None:
            self.logout_session = self._logout_by_sid

    def _logout_by_sid(self, sid: str) -> str:
        """os-brick's own way of running iscsiadm (root helper, privsep); 21 and 22 mean
        nothing was logged out, which the caller finds out by reading sysfs again."""
        out, err = self.connector()._run_iscsiadm_bare(
            ("-m", "session", "-r", str(sid), "-u"), check_exit_code=[0, 21, 22])
        return " ".join((err or "").split())[:600]


def default_handles(collect: Callable[[], CollectorResult],
                    list_domains: Callable[[object], CollectorResult]) -> Handles:
    def connector():
        from os_brick.initiator.connectors.iscsi import ISCSIConnector
        return ISCSIConnector(root_helper="", use_multipath=False)

    def linuxscsi():
        from os_brick.initiator import linuxscsi as ls
        return ls.LinuxSCSI(root_helper="")

    def lock_path():
        return CONF.os_brick.lock_path or CONF.oslo_concurrency.lock_path

    return Handles(collect, list_domains, connector, linuxscsi, lock_path)


# --------------------------------------------------------------------------
# the step
# --------------------------------------------------------------------------

def disconnect_volumes(ctx: teardown.Context, plan: TeardownPlan, h: Handles | None
                       ) -> StepResult:
    """The ``disconnect_volumes`` step (IscsiKind.run_step); ``h``: the kind's handles.
    What it did, volume by volume: DONE when a volume was disconnected, else KEPT when
    one was kept, else FAILED when an error was ignored (a delete with disks), else
    ABSENT."""
    if h is None:
        raise exception.VolumeError("iSCSI support is not enabled (the iscsi kind is not open)")
    leak = plan.classification is Classification.LEAKED_ISCSI
    details, outcomes = [], set()
    for item in plan.volumes:
        label = _label(item)
        try:
            res = _disconnect(ctx, h, plan, item)
            outcomes.add(res.outcome)
            details.append(f"{label}: {res}")
        except exception.Aborted:
            raise
        except Exception as e:  # recorded or re-raised as the policy says
            if leak or not plan.destroy_disks:
                raise exception.VolumeError(f"{label}: {e}") from e
            LOG.warning("teardown of %s: ignoring volume error on %s during delete: %s",
                        plan.instance_uuid, label, e, **instancelog.kw(plan.instance_uuid))
            outcomes.add(StepOutcome.FAILED)
            details.append(f"{label}: FAILED, ignored as on a delete with disks: {e}")
    outcome = next((o for o in (StepOutcome.DONE, StepOutcome.KEPT, StepOutcome.FAILED)
                    if o in outcomes), StepOutcome.ABSENT)
    return StepResult(outcome, "; ".join(details) or "no volumes")


def exclusively_held(path: str) -> bool:
    """Whether the kernel refuses an O_EXCL open of a block device with EBUSY: it is
    mounted or claimed (md, swap, a filesystem) somewhere, including mount namespaces
    (containers) that /proc/*/fd and our own mountinfo do not show. open(2) gives
    O_EXCL this meaning for block devices only; anything else opens as usual."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_EXCL | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as e:
        return e.errno == errno.EBUSY
    os.close(fd)
    return False


def exclusive_claims(dev_root: str, dev, host: "vol.Host | None" = None) -> list[str]:
    """The disk and each of its partitions, or (when something is stacked on one, as a
    multipath map holds its legs) what is stacked on it: a mount or a claim of a
    partition makes the whole disk busy to O_EXCL too, but the kernel name says which."""
    nodes = [(dev.name, dev.holders)]
    for p in getattr(dev, "partitions", ()):
        part = host.parts.get(p) if host is not None else None
        nodes.append((p, part.holders if part is not None else ()))
    names = []
    for name, holders in nodes:
        names += list(holders) if holders else [name]
    return [f"/dev/{n} is claimed exclusively (mounted or held, maybe in another "
            f"mount namespace)" for n in dict.fromkeys(names)
            if exclusively_held(os.path.join(dev_root, n))]


def _label(item: dict) -> str:
    if item.get("volume_id"):
        return f"volume {item['volume_id']}"
    if item.get("resources"):
        return ", ".join(item["resources"])
    tg = item["targets"][0] if item.get("targets") else {}
    return f"{tg.get('session_portal')} {tg.get('session_iqn')} lun {tg.get('lun')}"


def _disconnect(ctx, h: Handles, plan: TeardownPlan, item: dict) -> StepResult:
    if item.get("keep"):
        return StepResult.kept(item["keep"])
    lock_path = h.lock_path()
    if not lock_path:
        raise exception.VolumeError(
            "[os_brick] lock_path (or [oslo_concurrency] lock_path) is not set: "
            "set it to nova-compute's, so both serialise on os-brick's lock")
    from os_brick.initiator.connectors import base
    run = base.synchronized(LOCK_NAME, external=True, lock_path=lock_path)(_critical)
    return run(ctx, h, plan, item)


def _critical(ctx, h: Handles, plan: TeardownPlan, item: dict) -> StepResult:
    leak = plan.classification is Classification.LEAKED_ISCSI
    fresh = h.collect()
    if not fresh.ok:
        raise exception.VolumeError(f"cannot re-read the iSCSI state: {fresh.error}")
    host = vol.Host.from_items(fresh.items)
    refs = vol.Refs()
    if ctx.conn is None:
        raise exception.VolumeError("no libvirt connection to re-check the domains")
    doms = h.list_domains(ctx.conn)
    if not doms.ok:
        raise exception.VolumeError(f"cannot re-read the domains: {doms.error}")
    unsure = []
    for dom in doms.items:
        if dom.uuid != plan.instance_uuid:
            refs.add_domain(host, dom)
            if dom.state == vol.UNREADABLE_DOMAIN_STATE:
                unsure.append(f"the XML of domain {dom.name} could not be read")
    for bdm_id, uuid, volume_id, text in reread_bdms(ctx.engine, ctx.policy.host):
        if uuid == plan.instance_uuid:
            continue
        c = vol.parse_connection_info(text)
        if c.error or c.empty:
            unsure.append(f"bdm {bdm_id} of {uuid}: " + (c.error or "no connection_info yet"))
        elif c.iscsi:
            for ref in c.refs:
                refs.add(ref, f"bdm {bdm_id} (instance {uuid}, volume {volume_id})")
    if leak and unsure:
        raise exception.Aborted("not disconnecting a leak while " + "; ".join(unsure[:3]))

    removing: dict[str, object] = {}
    sessions = {}
    busy = []
    for tg in item["targets"]:
        sess = host.session_of(tg["portal"], tg["iqn"])
        if sess is not None:
            sessions[(tg["portal"], tg["iqn"])] = sess
        dev = None
        if tg.get("device"):
            cur = host.devices.get(tg["device"])
            if cur is not None:
                csess, cdev = cur
                if (vol.norm_portal(csess.portal), vol.norm_iqn(csess.iqn)) == \
                        (tg["portal"], tg["iqn"]) and cdev.lun == tg["lun"] \
                        and (tg.get("wwid") is None or cdev.wwid == tg["wwid"]):
                    dev = cdev
        users = sorted(refs.users(tg["portal"], tg["iqn"], dev, tg["lun"]))
        own = host.host_own(sess) if sess is not None else None
        if own:
            users.append(f"the host's own session: {own}")
        if not own and host.own_iqn(tg["iqn"]):
            users.append("the host's own target (booted from, or carrying its filesystems)")
        if tg["lun"] is None:
            users += sorted(refs.on_target(tg["portal"], tg["iqn"]))
            if sess is not None and sess.devices:
                users.append("the session has LUNs again: "
                             + ", ".join(d.name for d in sess.devices))
        if dev is not None:
            users += vol.device_use(host, dev)
            users += exclusive_claims(CONF.iscsi.dev_root, dev, host)
            removing[dev.name] = dev
        if users:
            busy.append(f"{tg['session_portal']} {tg['session_iqn']} lun {tg['lun']}: "
                        + topology.listed(users))
    if busy:
        if leak:
            raise exception.Aborted("no longer leaked: " + "; ".join(busy))
        return StepResult.in_use("; ".join(busy))

    logout, why = True, []
    for tg in item["targets"]:
        sess = sessions.get((tg["portal"], tg["iqn"]))
        if sess is None:
            continue
        ok, reason = topology.logout_allowed(host, sess, set(removing), refs)
        if not (ok and tg.get("logout", False)):
            logout = False
            why.append(f"{sess.portal} {sess.iqn}: "
                       + (reason if not ok else "the plan keeps this session"))
    if not removing and not logout:
        return StepResult(StepOutcome.KEPT, "; ".join(why),
                          "nothing to remove; session kept ({})")

    props = _props(item)
    if logout:
        done = _logout(ctx, h, plan, item, props, host, sessions, removing)
    else:
        h.linuxscsi().remove_connection(sorted(removing), force=False, exc=None,
                                        path_used=item.get("device_path"),
                                        was_multipath=bool(item.get("multipath")))
        done = "devices removed, session kept (" + "; ".join(why) + ")"
    return StepResult.done(_verify_after(h, item, removing, logout, done))


def _props(item: dict) -> dict:
    """os-brick connection properties: the session's own portal/iqn strings, no secrets.

    Always with explicit ``target_portals``/``target_iqns``/``target_luns``: then
    os-brick's disconnect takes exactly the targets re-checked here. With a single
    ``target_portal`` it would look them up in the discovery database instead
    (``iscsiadm -m discoverydb -o show -P 1``), which has nothing for a session
    without a node record (exit 21): os-brick then skips the whole cleanup, and the
    same leak would fail every pass."""
    tgs = item["targets"]
    lun = [tg["lun"] if tg["lun"] is not None else -1 for tg in tgs]
    props = {"target_portal": tgs[0]["session_portal"], "target_iqn": tgs[0]["session_iqn"],
             "target_lun": lun[0],
             "target_portals": [tg["session_portal"] for tg in tgs],
             "target_iqns": [tg["session_iqn"] for tg in tgs], "target_luns": lun}
    if item.get("device_path"):
        props["device_path"] = item["device_path"]
    return props


def _logout(ctx, h: Handles, plan: TeardownPlan, item: dict, props: dict, host,
            sessions: dict, removing: dict) -> str:
    """os-brick's disconnect_volume: flush and remove the devices, log out (node mode:
    ``iscsiadm -m node -T -p --logout`` matches the session in sysfs, with or without
    a node record) and delete the node record.

    A session without a node record that is still logged in afterwards (iscsid did not
    answer, say: iscsiadm then exits 21, which os-brick takes for "already gone") is
    logged out by its id, ``iscsiadm -m session -r SID -u``, after any of its devices
    left are removed as os-brick removes them. If even that leaves it logged in, it is
    noted as needing an operator (see ``record_operator_note``): the planner reports it
    from then on instead of retrying it every pass."""
    connector = h.connector()
    disconnect = inspect.unwrap(type(connector).disconnect_volume)
    device_info = {"path": item["device_path"]} if item.get("device_path") else None
    nodeless = {key: sess for key, sess in sessions.items() if not host.has_node(*key)}
    brick_error = None
    try:
        disconnect(connector, props, device_info)
    except Exception as e:  # re-raised unless the fallback below applies
        if not nodeless:
            raise
        brick_error = e
    done = "disconnected through os-brick"
    if not nodeless:
        return done
    if brick_error is not None:
        done = f"os-brick's disconnect failed ({brick_error})"
    stuck = _still_logged_in(h, nodeless, done)
    if not stuck:
        return done
    tried, grown = [], []
    for sess in stuck:
        ours = [d.name for d in sess.devices if _same(removing.get(d.name), d)]
        if len(ours) < len(sess.devices):
            grown.append(sess.sid)      # a LUN we did not re-check appeared: it stays
            continue
        try:
            if ours:
                h.linuxscsi().remove_connection(ours, force=False, exc=None,
                                                path_used=item.get("device_path"),
                                                was_multipath=bool(item.get("multipath")))
            out = " ".join((h.logout_session(sess.sid) or "").split())
            tried.append(f"session {sess.sid}: iscsiadm -m session -r {sess.sid} -u"
                         + (f" said: {out}" if out else ""))
        except Exception as e:  # noqa: BLE001 - the re-read below decides
            tried.append(f"session {sess.sid}: {e}")
    if len(grown) < len(stuck):
        done = (f"{done}; logged out by session id the session(s) without a node record "
                f"({', '.join(s.sid for s in stuck if s.sid not in grown)})")
    if grown:
        done += f"; kept session(s) {', '.join(grown)}: a LUN appeared on it meanwhile"
    stuck = [s for s in _still_logged_in(h, nodeless, done) if s.sid not in grown]
    if not stuck:
        return done
    reasons = []
    for sess in stuck:
        why = (f"session {sess.sid} ({sess.portal} {sess.iqn}) has no node record and is "
               f"still logged in after os-brick's disconnect and a logout by its id; "
               f"check iscsid, then run: iscsiadm -m session -r {sess.sid} -u")
        what = "; ".join(t for t in tried if t.startswith(f"session {sess.sid}:"))
        if what:
            why += f" ({what[:600]})"
        record_operator_note(ctx, sess, why, host)
        reasons.append(why)
    msg = "needs an operator: " + "; ".join(reasons)
    if plan.classification is Classification.LEAKED_ISCSI:
        raise exception.Aborted(msg)
    return f"{done}; {msg}"


def _still_logged_in(h: Handles, sessions: dict, done: str) -> list:
    """Those of ``sessions`` ({(portal, iqn): session}) still logged in, same sid."""
    after = h.collect()
    if not after.ok:
        raise exception.VolumeError(f"{done}; could not re-read the host afterwards: {after.error}")
    now = {s.sid: s for s in vol.Host.from_items(after.items).sessions}
    out = []
    for key, sess in sessions.items():
        cur = now.get(sess.sid)
        if cur is not None and (vol.norm_portal(cur.portal), vol.norm_iqn(cur.iqn)) == key:
            out.append(cur)
    return out


# --------------------------------------------------------------------------
# Sessions that need an operator (kept in the state DB)
# --------------------------------------------------------------------------

NOTE_FLAG = "iscsi_needs_operator"


def operator_notes(state) -> tuple[IscsiOperatorNote, ...]:
    """The notes the disconnect step left (see ``_logout``), as collector records;
    nothing when there is no state DB or the flag cannot be read."""
    if state is None:
        return ()
    try:
        raw = state.get_flag(NOTE_FLAG)
        notes = json.loads(raw) if raw else []
        return tuple(IscsiOperatorNote(str(n["portal"]), str(n["iqn"]), str(n["sid"]),
                                       str(n["reason"]), str(n["since"]))
                     for n in notes if isinstance(n, dict))
    except Exception as e:  # noqa: BLE001 - a broken note must not stop a pass
        LOG.warning("cannot read the iSCSI operator notes: %s", e)
        return ()


def record_operator_note(ctx, sess, reason: str, host) -> None:
    """Remember that ``sess`` needs an operator; notes of sessions gone are dropped."""
    if ctx.state is None:
        return
    live = {(vol.norm_portal(s.portal), vol.norm_iqn(s.iqn), str(s.sid)) for s in host.sessions}
    kept = [n for n in operator_notes(ctx.state)
            if (vol.norm_portal(n.portal), vol.norm_iqn(n.iqn), n.sid) in live
            and n.sid != str(sess.sid)]
    kept.append(IscsiOperatorNote(sess.portal, sess.iqn, str(sess.sid), reason,
                                  ctx.clock().isoformat()))
    ctx.state.set_flag(NOTE_FLAG, json.dumps([dataclasses.asdict(n) for n in kept]),
                       ctx.clock())


def _same(a, b) -> bool:
    """The same SCSI device, not just the same name (sd names are reused at once)."""
    return a is not None and b is not None and (a.name, a.hctl, a.wwid) == \
        (b.name, b.hctl, b.wwid)


def _verify_after(h: Handles, item: dict, removing: dict, logout: bool, done: str) -> str:
    removed = sorted(removing)
    after = h.collect()
    if not after.ok:
        return f"{done}; could not re-read the host afterwards: {after.error}"
    host = vol.Host.from_items(after.items)
    left = [n for n in removed if n in host.devices
            and _same(removing[n], host.devices[n][1])]
    if left:
        raise exception.VolumeError(f"{done}, but devices remain: {', '.join(left)}")
    parts = [done]
    if removed:
        parts.append("removed " + ", ".join(removed))
    if logout:
        gone = []
        for tg in item["targets"]:
            sess = host.session_of(tg["portal"], tg["iqn"])
            node = any(vol.norm_portal(n.portal) == tg["portal"]
                       and vol.norm_iqn(n.iqn) == tg["iqn"] for n in host.nodes)
            if sess is None and not node:
                gone.append(f"{tg['session_portal']} {tg['session_iqn']}")
            elif sess is not None and not sess.devices:
                raise exception.VolumeError(f"{done}, but session {sess.sid} is still logged in")
        if gone:
            parts.append("logged out of and deleted the node record of " + ", ".join(
                sorted(set(gone))))
    return "; ".join(parts)


# --------------------------------------------------------------------------
# Nova DB re-read
# --------------------------------------------------------------------------

def reread_bdms(engine, host: str) -> list[tuple[int, str, str | None, str | None]]:
    """Live volume BDMs of live instances on ``host`` or in a migration touching it."""
    b, i, m = s.block_device_mapping, s.instances, s.migrations
    flying = sa.select(m.c.instance_uuid).where(
        m.c.deleted == 0,
        sa.or_(m.c.migration_type.is_(None), m.c.migration_type != "evacuation"),
        sa.or_(m.c.source_compute == host, m.c.dest_compute == host),
        sa.or_(m.c.status.is_(None), m.c.status.not_in(sorted(ENDED_MIGRATION_STATUSES))))
    stmt = (sa.select(b.c.id, b.c.instance_uuid, b.c.volume_id, b.c.connection_info)
            .select_from(b.join(i, i.c.uuid == b.c.instance_uuid))
            .where(b.c.deleted == 0, b.c.destination_type == "volume", i.c.deleted == 0,
                   sa.or_(i.c.host == host, i.c.uuid.in_(flying)))
            .order_by(b.c.id))
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(stmt)]


def privileged_in_process() -> None:
    """The agent runs as root: os-brick's privileged calls (privsep entrypoints such as
    the /dev/disk/by-id link removal) run in-process instead of via a privsep daemon
    started through sudo/rootwrap."""
    if os.geteuid() != 0:
        return
    from os_brick import privileged
    privileged.default.set_client_mode(False)
    privileged.brick_privsep_hide_output.set_client_mode(False)
