"""Nova's delete notifications of the reaper's reclaims (reaper.nova_notify), through the
real RabbitMQ to real oslo.messaging notification listeners, from real reclaim passes
on the demo host (libvirt's test driver, SQLite Nova DB, instance dirs on disk) with
one more soft-deleted instance that has everything Nova's payload is made of.

Topics of this run's own (a versioned and a legacy one) keep runs apart."""
from __future__ import annotations

import datetime
import threading
import time
import uuid as uuidlib

import pytest

from reaper import demo, nova_notify
from reaper.conf import notifications as conf_notifications
from reaper.nova import snapshot as nova_snapshot
from tests.fixtures import notify as fx
from tests.fixtures import novadb
from tests.functional.test_notifications import (  # noqa: F401 - broker_url is a fixture
    Collector, broker_url, conf_for)

pytestmark = pytest.mark.functional

# Every field of Nova's InstanceActionPayload 1.9 (nova/notifications/objects/instance.py).
VERSIONED_KEYS = {
    "uuid", "user_id", "tenant_id", "reservation_id", "display_name", "display_description",
    "host_name", "host", "node", "os_type", "architecture", "availability_zone", "flavor",
    "image_uuid", "key_name", "kernel_id", "ramdisk_id", "created_at", "launched_at",
    "terminated_at", "deleted_at", "updated_at", "state", "power_state", "task_state",
    "progress", "ip_addresses", "block_devices", "metadata", "locked", "auto_disk_config",
    "request_id", "action_initiator_user", "action_initiator_project", "locked_reason",
    "shares", "fault"}
FLAVOR_KEYS = {"flavorid", "memory_mb", "vcpus", "root_gb", "ephemeral_gb", "name", "swap",
               "rxtx_factor", "vcpu_weight", "disabled", "is_public", "extra_specs",
               "projects", "description"}
# Every key of Nova's info_from_instance without network info (nova/notifications/base.py).
LEGACY_KEYS = {
    "tenant_id", "user_id", "instance_id", "display_name", "reservation_id", "hostname",
    "instance_type", "instance_type_id", "instance_flavor_id", "architecture", "memory_mb",
    "disk_gb", "vcpus", "root_gb", "ephemeral_gb", "host", "node", "availability_zone",
    "cell_name", "created_at", "terminated_at", "deleted_at", "launched_at", "image_ref_url",
    "os_type", "kernel_id", "ramdisk_id", "state", "state_description", "progress",
    "access_ip_v4", "access_ip_v6", "image_meta", "metadata"}


@pytest.fixture
def bus(broker_url):  # noqa: F811 - the fixture imported above
    """(conf, versioned collector, legacy collector): listeners on topics of their own."""
    import oslo_messaging
    tag = uuidlib.uuid4().hex[:10]
    vtopic, ltopic = f"reaper-test-v-{tag}", f"reaper-test-l-{tag}"
    conf = conf_for(broker_url, ltopic)
    conf.register_opts(conf_notifications.notify_opts, group="notifications")
    conf.set_override("notification_format", "both", group="notifications")
    conf.set_override("versioned_notifications_topics", [vtopic], group="notifications")
    transport = oslo_messaging.get_notification_transport(conf, url=broker_url)
    colls, listeners = (Collector(), Collector()), []
    for topic, coll in zip((vtopic, ltopic), colls, strict=True):
        listener = oslo_messaging.get_notification_listener(
            transport, [oslo_messaging.Target(topic=topic, exchange="nova")], [coll])
        listener.start()
        listeners.append(listener)
    yield conf, colls[0], colls[1]
    for listener in listeners:
        listener.stop()
        listener.wait()
    transport.cleanup()


def _of(got, uuid, key):
    return [(prio, pub, etype, p) for prio, pub, etype, p in got
            if (p.get("nova_object.data") or p).get(key) == uuid]


def _isotime(dt: datetime.datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_a_reclaim_sends_novas_delete_events_versioned_and_legacy(tmp_path, bus):
    conf, vcoll, lcoll = bus
    reaper, handles, cast = demo.build(str(tmp_path / "host"))
    billed = fx.add_billable_instance(handles["engine"], demo.HOST)
    uuid, row0 = billed["row"]["uuid"], billed["row"]
    soft_old = next(m.uuid for m in cast if m.label == "soft_old")   # has a domain
    events = nova_notify.enable(reaper, conf)
    assert events is not None
    # Published to Nova's exchange (where Ceilometer binds), not the reaper's: the
    # queues would take them from either, so the exchange is checked where it is set.
    assert events.versioned.transport._driver._default_exchange == "nova"
    assert conf.control_exchange != "nova"              # the override did not leak
    order = []          # (uuid, step, events queued so far), from a listener after ours
    reaper.step_listeners.append(
        lambda ctx, plan, step, pass_id: order.append((plan.instance_uuid, step, events.queued)))
    try:
        rep = reaper.run_pass("reclaim")
        assert rep.exit_code == 4, rep.to_table()
        assert events.flush(30)
        vgot = vcoll.wait_for(lambda g: len(_of(g, uuid, "uuid")) == 2)
        lgot = lcoll.wait_for(lambda g: len(_of(g, uuid, "instance_id")) == 2)
    finally:
        events.close()
        reaper.close()
    row = novadb.get_instance(handles["engine"], uuid)
    assert row["vm_state"] == "deleted" and row["deleted"] == row["id"]

    # .start right after the claim, before any host step; .end after finalize.
    steps = [(s, n) for u, s, n in order if u == soft_old]
    assert [s for s, _ in steps] == ["claim", "destroy_domain", "delete_files",
                                     "undefine_domain", "finalize_db"]
    claimed_at, destroyed_at = steps[0][1], steps[1][1]
    assert claimed_at == destroyed_at and steps[-1][1] == claimed_at + 2

    # versioned: event types in order, Nova's publisher, INFO, the envelope
    v = _of(vgot, uuid, "uuid")
    assert [e for _, _, e, _ in v] == ["instance.delete.start", "instance.delete.end"]
    assert {(prio, pub) for prio, pub, _, _ in v} == {("INFO", f"nova-compute:{demo.HOST}")}
    start, end = (p for _, _, _, p in v)
    for p in (start, end):
        assert {k: p[k] for k in p if k != "nova_object.data"} == {
            "nova_object.name": "InstanceActionPayload", "nova_object.namespace": "nova",
            "nova_object.version": "1.9"}
        d = p["nova_object.data"]
        assert set(d) == VERSIONED_KEYS
        assert (d["uuid"], d["tenant_id"], d["user_id"], d["host"], d["node"]) == (
            uuid, row0["project_id"], row0["user_id"], demo.HOST, demo.HOST)
        assert d["display_name"] == "billing-vm" and d["image_uuid"] == row0["image_ref"]
        assert d["launched_at"] == _isotime(row0["launched_at"])
        assert d["created_at"] == _isotime(row0["created_at"])
        f = d["flavor"]
        assert f["nova_object.name"] == "FlavorPayload" and f["nova_object.version"] == "1.4"
        assert set(f["nova_object.data"]) == FLAVOR_KEYS
        assert {k: f["nova_object.data"][k] for k in ("name", "flavorid", "memory_mb", "vcpus",
                                                      "root_gb", "ephemeral_gb", "extra_specs")
                } == {k: fx.FLAVOR[k] for k in ("name", "flavorid", "memory_mb", "vcpus",
                                                "root_gb", "ephemeral_gb", "extra_specs")}
        assert [b["nova_object.data"]["volume_id"] for b in d["block_devices"]] == \
            billed["volumes"]
        assert d["metadata"] == {"role": "db", "billing-code": "cc-17"}
        assert d["locked"] is True and d["locked_reason"] == "compliance hold"
        assert d["auto_disk_config"] == "AUTO" and d["fault"] is None
    s, e = start["nova_object.data"], end["nova_object.data"]
    assert (s["state"], s["task_state"], s["power_state"]) == ("soft-delete", "deleting",
                                                               "shutdown")
    assert s["deleted_at"] == _isotime(row0["deleted_at"]) and s["terminated_at"] is None
    assert sorted((i["nova_object.data"]["port_uuid"], i["nova_object.data"]["address"])
                  for i in s["ip_addresses"]) == sorted(zip(billed["ports"],
                                                            ["10.0.0.5", "fd00::5"], strict=True))
    assert (e["state"], e["task_state"], e["power_state"]) == ("deleted", None, "pending")
    assert e["deleted_at"] == e["terminated_at"] == _isotime(row["deleted_at"])
    assert e["ip_addresses"] == []

    # legacy: Nova's other notifier, flat dict
    legacy = _of(lgot, uuid, "instance_id")
    assert [e for _, _, e, _ in legacy] == ["compute.instance.delete.start",
                                            "compute.instance.delete.end"]
    assert {(prio, pub) for prio, pub, _, _ in legacy} == {("INFO", f"compute.{demo.HOST}")}
    lstart, lend = (p for _, _, _, p in legacy)
    for p in (lstart, lend):
        assert set(p) == LEGACY_KEYS
        assert (p["tenant_id"], p["user_id"], p["instance_type"], p["instance_flavor_id"],
                p["memory_mb"], p["vcpus"], p["disk_gb"]) == (
            row0["project_id"], row0["user_id"], "m1.small", "2", 2048, 1, 25)
        assert p["image_meta"] == {"base_image_ref": row0["image_ref"], "os_distro": "debian",
                                   "min_ram": "0"}
        assert p["launched_at"] == row0["launched_at"].strftime("%Y-%m-%dT%H:%M:%S.%f")
    assert (lstart["state"], lstart["state_description"], lstart["terminated_at"]) == (
        "soft-delete", "deleting", "")
    deleted = row["deleted_at"].strftime("%Y-%m-%dT%H:%M:%S.%f")
    assert (lend["state"], lend["state_description"], lend["deleted_at"],
            lend["terminated_at"]) == ("deleted", "", deleted, deleted)
    # the demo's reclaims are notified as well (row-only and with a domain)
    reclaimed = {m.uuid for m in cast if m.label in ("soft_old", "soft_rowonly")} | {uuid}
    assert {p["nova_object.data"]["uuid"] for _, _, et, p in vgot
            if et == "instance.delete.end"} == reclaimed


def test_an_unreachable_broker_never_holds_up_or_fails_a_reclaim(tmp_path):
    import socket
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()                                   # nothing listens there now
    conf = conf_for(f"rabbit://guest:guest@127.0.0.1:{port}/", "reaper-test-nowhere")
    conf.register_opts(conf_notifications.notify_opts, group="notifications")
    conf.set_override("notification_format", "both", group="notifications")
    reaper, handles, _ = demo.build(str(tmp_path / "host"))
    uuid = fx.add_billable_instance(handles["engine"], demo.HOST)["row"]["uuid"]
    events = nova_notify.enable(reaper, conf)
    assert events is not None
    done, result = threading.Event(), {}

    def run():
        result["rep"] = reaper.run_pass("reclaim")
        done.set()
    threading.Thread(target=run, daemon=True).start()
    try:
        assert done.wait(120), "the reclaim is stuck behind the dead broker"
        assert result["rep"].exit_code == 4, result["rep"].to_table()
        assert all(a["result"] == "done" for a in result["rep"].actions)
        assert events.queued >= 4
        t0 = time.monotonic()
        events.close(timeout=5)
        assert time.monotonic() - t0 < 60
    finally:
        reaper.close()
    assert novadb.get_instance(handles["engine"], uuid)["vm_state"] == "deleted"


def test_no_driver_or_switched_off_sends_nothing(tmp_path):
    reaper, _, _ = demo.build(str(tmp_path / "host"))
    try:
        conf = conf_for("rabbit://guest:guest@127.0.0.1:1/", "x", driver="noop")
        conf.register_opts(conf_notifications.notify_opts, group="notifications")
        assert nova_notify.enable(reaper, conf) is None
        conf = conf_for("rabbit://guest:guest@127.0.0.1:1/", "x")
        conf.register_opts(conf_notifications.notify_opts, group="notifications")
        conf.set_override("nova_delete_events", False, group="notifications")
        assert nova_notify.enable(reaper, conf) is None
        assert reaper.step_listeners == [] and reaper.nova_delete_events is None
    finally:
        reaper.close()


def test_the_end_event_of_a_resumed_finalize_describes_the_destroyed_instance(tmp_path):
    """After a crash between finalize and .end, the rows soft-deleted with the instance
    are what .end is made of (nothing live is left)."""
    reaper, handles, _ = demo.build(str(tmp_path / "host"))
    try:
        eng = handles["engine"]
        billed = fx.add_billable_instance(eng, demo.HOST)
        uuid = billed["row"]["uuid"]
        from reaper.nova import reclaim
        now = novadb.utcnow()
        assert reclaim.claim(eng, uuid, demo.HOST, 60, now, "req-t")
        before = nova_snapshot.read(eng, uuid)
        assert reclaim.finalize(eng, uuid, now, host=demo.HOST)["finalized"]
        after = nova_snapshot.read(eng, uuid)
        assert (after.flavor, after.metadata, after.network_info) == (
            before.flavor, before.metadata, before.network_info)
        assert [b["volume_id"] for b in after.bdms] == billed["volumes"]
        # another instance's deleted rows are never mixed in
        other = fx.add_billable_instance(eng, demo.HOST)["row"]["uuid"]
        assert nova_snapshot.read(eng, other).metadata == before.metadata
        assert nova_snapshot.read(eng, novadb.new_uuid()) is None
    finally:
        reaper.close()
