"""Nova's own delete notifications for the reaper's reclaims, so billing sees the delete.

nova-compute's reclaim (``_reclaim_queued_deletes`` -> ``_delete_instance``) tells the
cloud that an instance is gone with ``instance.delete.start`` / ``.end`` (versioned)
and ``compute.instance.delete.start`` / ``.end`` (legacy); Ceilometer and billing
systems stop charging on them. A reclaim done by the reaper sends the same events,
in Nova's payload schema, from the same publisher, on the same topics:

All go to Nova's exchange (``[notifications] nova_control_exchange``, ``nova``), where
Ceilometer listens, not to the reaper's own.

- versioned (``[notifications] notification_format`` = ``versioned`` or ``both``):
  publisher ``nova-compute:<host>``, topics ``[notifications]
  versioned_notifications_topics`` (``versioned_notifications``), priority INFO, the
  payload an ``InstanceActionPayload`` 1.9 in its ``nova_object.*`` envelope, with the
  flavor (``FlavorPayload`` 1.4), IP addresses (``IpPayload``) and volume block
  devices (``BlockDevicePayload``) as Nova fills them for a delete;
- legacy (``unversioned`` or ``both``): publisher ``compute.<host>``, topics
  ``[oslo_messaging_notifications] topics`` (``notifications``), priority INFO, the
  flat dict of Nova's ``info_from_instance`` (no ``fixed_ips``: Nova's delete passes
  no network info; ``image_ref_url`` is the image id, as Nova's periodic task sends
  it when it cannot reach Glance's endpoint).

``.start`` goes out once the reclaim's claim is made, before anything on the host is
torn down (state ``soft-delete``, task ``deleting``); ``.end`` once the DB finalize is
done (state ``deleted``, power state ``pending``, ``terminated_at`` and
``deleted_at`` set, no IP addresses left, as Nova's). The payloads are built from the
rows (:mod:`reaper.nova.snapshot`); a worker thread sends them with one delivery
attempt each, so a dead broker never holds up or fails a teardown. Nothing is sent
with ``[oslo_messaging_notifications] driver`` unset (``noop``) or ``[notifications]
nova_delete_events = false``.
"""
from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import warnings
from typing import Any

from oslo_log import log as logging

from reaper.conf import CONF
from reaper.nova import snapshot as nova_snapshot

LOG = logging.getLogger(__name__)


PAYLOAD_VERSION = "1.9"         # InstanceActionPayload
FLAVOR_VERSION = "1.4"          # FlavorPayload
# power_state integers as Nova's InstancePowerState enum names them.
POWER_STATES = {0: "pending", 1: "running", 3: "paused", 4: "shutdown", 6: "crashed",
                7: "suspended"}
FLAVOR_FIELDS = ("flavorid", "memory_mb", "vcpus", "root_gb", "ephemeral_gb", "name", "swap",
                 "rxtx_factor", "vcpu_weight", "disabled", "is_public", "extra_specs",
                 "projects", "description")
START, END = "start", "end"


def _obj(name: str, version: str, data: dict) -> dict:
    """A notification object's primitive, as oslo.versionedobjects writes it."""
    return {"nova_object.name": name, "nova_object.namespace": "nova",
            "nova_object.version": version, "nova_object.data": data}


def _isotime(value: datetime.datetime | None) -> str | None:
    """oslo.versionedobjects' DateTimeField on the wire: seconds, UTC, 'Z'."""
    value = nova_snapshot.naive_utc(value)
    return value.strftime("%Y-%m-%dT%H:%M:%SZ") if value is not None else None


def _strtime(value: datetime.datetime | None) -> str:
    """Legacy dates (Nova's null_safe_isotime): microseconds, no zone; '' for none."""
    value = nova_snapshot.naive_utc(value)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f") if value is not None else ""


def _str_utc(value: datetime.datetime | None) -> str:
    """Legacy created_at: str() of Nova's timezone-aware datetime."""
    value = nova_snapshot.naive_utc(value)
    return str(value.replace(tzinfo=datetime.timezone.utc)) if value is not None else "None"


def _power_state(value: Any) -> str | None:
    if value is None:
        return None
    try:
        return POWER_STATES.get(int(value), str(value))
    except (TypeError, ValueError):
        return str(value)


def _strings(d: Any) -> dict[str, str]:
    return {str(k): "" if v is None else str(v) for k, v in d.items()} if isinstance(d, dict) \
        else {}


def flavor_payload(flavor: dict | None) -> dict | None:
    """FlavorPayload from the instance's own flavor: a field the stored flavor does
    not hold (``projects``, usually) is null, as Nova's orphaned lazy-load makes it."""
    if flavor is None:
        return None
    data = {k: flavor.get(k) for k in FLAVOR_FIELDS}
    if data["extra_specs"] is not None:
        data["extra_specs"] = _strings(data["extra_specs"])
    return _obj("FlavorPayload", FLAVOR_VERSION, data)


def _fixed_ips(vif: dict) -> list[dict]:
    net = vif.get("network") if isinstance(vif.get("network"), dict) else {}
    out = []
    for subnet in net.get("subnets") or ():
        if isinstance(subnet, dict):
            out += [ip for ip in subnet.get("ips") or () if isinstance(ip, dict)]
    return out


def ip_payloads(network_info: list) -> list[dict]:
    """IpPayload per fixed IP of each VIF (Nova's IpPayload.from_network_info)."""
    out = []
    for vif in network_info:
        net = vif.get("network") if isinstance(vif.get("network"), dict) else {}
        for ip in _fixed_ips(vif):
            version = ip.get("version")
            if version is None and ip.get("address"):
                try:
                    version = ipaddress.ip_address(ip["address"]).version
                except ValueError:
                    version = None
            out.append(_obj("IpPayload", "1.0", {
                "label": net.get("label"), "mac": vif.get("address"),
                "meta": _strings(vif.get("meta") or {}), "port_uuid": vif.get("id"),
                "version": version, "address": ip.get("address"),
                "device_name": vif.get("devname")}))
    return out


def block_device_payloads(bdms: list[dict]) -> list[dict]:
    """BlockDevicePayload per volume BDM: Nova's delete passes its BDMs, so they are
    in the payload whatever [notifications] bdms_in_notifications says."""
    return [_obj("BlockDevicePayload", "1.0", {
        "device_name": b["device_name"], "boot_index": b["boot_index"],
        "delete_on_termination": bool(b["delete_on_termination"]),
        "volume_id": b["volume_id"], "tag": b["tag"]}) for b in bdms]


def versioned_payload(snap: nova_snapshot.InstanceSnapshot, phase: str) -> dict:
    """The ``InstanceActionPayload`` of ``instance.delete.<phase>`` for ``snap``."""
    i = snap.instance
    data = {
        "uuid": i["uuid"], "user_id": i["user_id"], "tenant_id": i["project_id"],
        "reservation_id": i["reservation_id"], "display_name": i["display_name"],
        "display_description": i["display_description"], "host_name": i["hostname"],
        "host": i["host"], "node": i["node"], "os_type": i["os_type"],
        "architecture": i["architecture"], "availability_zone": i["availability_zone"],
        "image_uuid": i["image_ref"], "key_name": i["key_name"],
        "kernel_id": i["kernel_id"], "ramdisk_id": i["ramdisk_id"],
        "created_at": _isotime(i["created_at"]), "launched_at": _isotime(i["launched_at"]),
        "terminated_at": _isotime(i["terminated_at"]),
        "deleted_at": _isotime(i["deleted_at"]), "updated_at": _isotime(i["updated_at"]),
        "state": i["vm_state"], "power_state": _power_state(i["power_state"]),
        "task_state": i["task_state"], "progress": i["progress"],
        "flavor": flavor_payload(snap.flavor),
        # After the delete the ports are released (Nova's info cache is emptied).
        "ip_addresses": [] if phase == END else ip_payloads(snap.network_info),
        "block_devices": block_device_payloads(snap.bdms),
        "metadata": _strings(snap.metadata),
        "locked": bool(i["locked"]),
        "auto_disk_config": "AUTO" if i["auto_disk_config"] else "MANUAL",
        # A periodic task's context has no user or project: Nova leaves these null.
        "request_id": None, "action_initiator_user": None, "action_initiator_project": None,
        "locked_reason": snap.system_metadata.get("locked_reason"),
        "shares": None,         # [notifications] include_share_mapping is off by default
        "fault": None,
    }
    return _obj("InstanceActionPayload", PAYLOAD_VERSION, data)


def legacy_payload(snap: nova_snapshot.InstanceSnapshot) -> dict:
    """Nova's ``info_from_instance`` dict for ``compute.instance.delete.*``."""
    i = snap.instance
    f = snap.flavor or {}
    root, eph = f.get("root_gb"), f.get("ephemeral_gb")
    return {
        "tenant_id": i["project_id"], "user_id": i["user_id"],
        "instance_id": i["uuid"], "display_name": i["display_name"],
        "reservation_id": i["reservation_id"], "hostname": i["hostname"],
        "instance_type": f.get("name", ""), "instance_type_id": i["instance_type_id"],
        "instance_flavor_id": f.get("flavorid", ""), "architecture": i["architecture"],
        "memory_mb": f.get("memory_mb"),
        "disk_gb": (root or 0) + (eph or 0) if f else None,
        "vcpus": f.get("vcpus"), "root_gb": root, "ephemeral_gb": eph,
        "host": i["host"], "node": i["node"],
        "availability_zone": i["availability_zone"],
        "cell_name": i["cell_name"] or "",
        "created_at": _str_utc(i["created_at"]),
        "terminated_at": _strtime(i["terminated_at"]),
        "deleted_at": _strtime(i["deleted_at"]),
        "launched_at": _strtime(i["launched_at"]),
        "image_ref_url": i["image_ref"],
        "os_type": i["os_type"], "kernel_id": i["kernel_id"], "ramdisk_id": i["ramdisk_id"],
        "state": i["vm_state"], "state_description": i["task_state"] or "",
        "progress": int(i["progress"]) if i["progress"] else "",
        "access_ip_v4": i["access_ip_v4"], "access_ip_v6": i["access_ip_v6"],
        "image_meta": {k[len("image_"):]: v for k, v in snap.system_metadata.items()
                       if k.startswith("image_")},
        "metadata": _strings(snap.metadata),
    }


@dataclasses.dataclass(frozen=True)
class Event:
    """One notification to send: which format, its event type and payload."""
    versioned: bool
    event_type: str
    payload: dict


def events_for(snap: nova_snapshot.InstanceSnapshot, phase: str, fmt: str) -> list[Event]:
    """The delete events of ``phase`` that Nova's ``notification_format`` ``fmt`` sends."""
    out = []
    if fmt in ("versioned", "both"):
        out.append(Event(True, f"instance.delete.{phase}", versioned_payload(snap, phase)))
    if fmt in ("unversioned", "both"):
        out.append(Event(False, f"compute.instance.delete.{phase}", legacy_payload(snap)))
    return out


# Which finished teardown step sends which phase (a reclaim's steps only).
PHASE_AFTER_STEP = {"claim": START, "finalize_db": END}


class DeleteEvents:
    """A teardown step listener: after a reclaim's claim and its DB finalize, read the
    instance and queue its delete events. Never raises into the teardown."""

    def __init__(self, emitter, versioned, legacy, fmt: str):
        self.emitter, self.versioned, self.legacy, self.fmt = emitter, versioned, legacy, fmt
        self.queued = 0

    def __call__(self, ctx, plan, step: str, pass_id: str) -> None:
        from reaper.objects.fields import Action
        phase = PHASE_AFTER_STEP.get(step)
        if phase is None or plan.action is not Action.RECLAIM:
            return
        try:
            snap = nova_snapshot.read(ctx.engine, plan.instance_uuid)
        except Exception as e:  # noqa: BLE001 - a notification never fails a teardown
            LOG.warning("instance.delete.%s not sent: cannot read the instance: %s",
                        phase, e, instance_uuid=plan.instance_uuid)
            return
        if snap is None:
            LOG.warning("instance.delete.%s not sent: no instances row", phase,
                        instance_uuid=plan.instance_uuid)
            return
        # A periodic task's admin context, with the pass id as its request id.
        ctxt = {"request_id": pass_id, "is_admin": True, "user_id": None,
                "project_id": None}
        for ev in events_for(snap, phase, self.fmt):
            notifier = self.versioned if ev.versioned else self.legacy
            self.emitter.send(ev.event_type, "info", ev.payload, ctxt=ctxt, notifier=notifier)
            self.queued += 1

    def flush(self, timeout: float = 10.0) -> bool:
        return self.emitter.flush(timeout)

    def close(self, timeout: float = 10.0) -> None:
        self.emitter.close(timeout)


def _transport(conf, exchange: str):
    """A notification transport publishing to ``exchange``: oslo.messaging sends
    notifications to the transport's default exchange, ``control_exchange`` as it was
    when the transport was made (the reaper's is ``reaper``, Nova's ``nova``), so it is
    overridden for this transport only."""
    import oslo_messaging
    import oslo_messaging.opts
    for group, opts in oslo_messaging.opts.list_opts():
        if group is None:
            conf.register_opts([o for o in opts if o.dest == "control_exchange"])
    conf.set_override("control_exchange", exchange)
    try:
        return oslo_messaging.get_notification_transport(conf)
    finally:
        conf.clear_override("control_exchange")


def enable(reaper, conf=CONF, queue_size: int | None = None) -> DeleteEvents | None:
    """Listen to ``reaper``'s teardown steps and send the delete events; None (and
    nothing registered) when disabled or when the notification driver sends nothing."""
    if not conf.notifications.nova_delete_events:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import oslo_messaging
    from reaper import notifications, rpc
    rpc.prepare_conf(conf)
    transport = _transport(conf, conf.notifications.nova_control_exchange)
    host = reaper.policy.host
    # retry=0: one delivery attempt (the default retries forever behind a dead broker).
    versioned = oslo_messaging.Notifier(
        transport, publisher_id=f"nova-compute:{host}", retry=0,
        topics=list(conf.notifications.versioned_notifications_topics))
    legacy = oslo_messaging.Notifier(transport, publisher_id=f"compute.{host}", retry=0)
    if not legacy.is_enabled():
        transport.cleanup()
        return None
    size = conf.reaper.notification_queue_size if queue_size is None else queue_size
    events = DeleteEvents(notifications.Emitter(legacy, size), versioned, legacy,
                          conf.notifications.notification_format)
    reaper.nova_delete_events = events
    reaper.step_listeners.append(events)
    LOG.debug("Nova delete events of reclaims: %s, as nova-compute:%s / compute.%s",
             events.fmt, host, host)
    return events
