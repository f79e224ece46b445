"""Notifications through a real RabbitMQ to a real oslo.messaging notification
listener, from real passes on the demo host (libvirt's test driver, SQLite Nova DB,
instance dirs on disk). A topic of this run's own keeps runs apart."""
from __future__ import annotations

import os
import threading
import time
import uuid as uuidlib

import pytest
from oslo_config import cfg

from reaper import demo, notifications, rpc
from reaper.conf import opts
from reaper.conf import reaper as conf_reaper
from tests.conftest import service_unavailable

pytestmark = pytest.mark.functional

BROKER = os.environ.get("REAPER_TEST_AMQP", "127.0.0.1:5672")


def conf_for(url: str, topic: str, driver: str = "messagingv2") -> cfg.ConfigOpts:
    conf = cfg.ConfigOpts()
    for group, group_opts in opts.list_opts():
        conf.register_opts(list(group_opts), group=None if group == "DEFAULT" else group)
    conf.register_opts(conf_reaper.notification_opts, group="reaper")
    conf([], project="reaper-test")
    import oslo_messaging
    rpc.prepare_conf(conf)
    oslo_messaging.get_notification_transport(conf, url=url).cleanup()   # registers options
    conf.set_override("driver", [driver], group="oslo_messaging_notifications")
    conf.set_override("topics", [topic], group="oslo_messaging_notifications")
    conf.set_override("transport_url", url, group="oslo_messaging_notifications")
    return conf


class Collector:
    def __init__(self):
        self.got, self.cond = [], threading.Condition()

    def _add(self, priority, publisher_id, event_type, payload):
        with self.cond:
            self.got.append((priority, publisher_id, event_type, payload))
            self.cond.notify_all()

    def info(self, ctxt, publisher_id, event_type, payload, metadata):
        self._add("INFO", publisher_id, event_type, payload)

    def warn(self, ctxt, publisher_id, event_type, payload, metadata):
        self._add("WARN", publisher_id, event_type, payload)

    def error(self, ctxt, publisher_id, event_type, payload, metadata):
        self._add("ERROR", publisher_id, event_type, payload)

    def wait_for(self, pred, timeout=30):
        with self.cond:
            assert self.cond.wait_for(lambda: pred(self.got), timeout), self.got
            return list(self.got)


@pytest.fixture
def listened(broker_url):
    """(conf, collector): a notification listener on a topic of this test's own."""
    import oslo_messaging
    topic = f"reaper-test-{uuidlib.uuid4().hex[:10]}"
    conf = conf_for(broker_url, topic)
    transport = oslo_messaging.get_notification_transport(conf, url=broker_url)
    coll = Collector()
    listener = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(topic=topic)], [coll])
    listener.start()
    yield conf, coll
    listener.stop()
    listener.wait()
    transport.cleanup()


@pytest.fixture
def broker_url():
    from kombu import Connection
    try:
        with Connection(f"amqp://guest:guest@{BROKER}//", connect_timeout=5) as c:
            c.connect()
    except Exception as exc:  # noqa: BLE001 - any failure: no broker, skip
        service_unavailable(f"RabbitMQ ({BROKER})", exc)
    return f"rabbit://guest:guest@{BROKER}/"


def test_reap_and_reclaim_are_notified_with_the_leftovers(tmp_path, listened):
    conf, coll = listened
    reaper, _, cast = demo.build(str(tmp_path / "host"))
    u = {m.label: m.uuid for m in cast}
    emitter = notifications.enable(reaper, conf)
    try:
        assert emitter is not None
        rep = reaper.run_pass("reap")
        assert emitter.flush(30)
        got = coll.wait_for(lambda g: any(e == "reaper.pass.end" for _, _, e, _ in g))
    finally:
        if emitter:
            emitter.close()
        reaper.close()
    assert {p for _, p, _, _ in got} == {f"reaper.{demo.HOST}"}
    by_type = {}
    for prio, _, etype, payload in got:
        by_type.setdefault(etype, []).append((prio, payload))
    reaped = {p["instance_uuid"] for _, p in by_type["reaper.instance.reaped"]}
    assert reaped == {u["evacuated"], u["deleted_old"]}
    reclaimed = {p["instance_uuid"]: p for _, p in by_type["reaper.instance.reclaimed"]}
    assert set(reclaimed) == {u["soft_old"], u["soft_rowonly"]}
    left = reclaimed[u["soft_old"]]["leftovers"]
    assert left and left == reclaimed[u["soft_old"]]["evidence"]["controller_leftovers"]
    cleaned = {p["classification"] for _, p in by_type["reaper.leak.cleaned"]}
    assert cleaned == {"orphan_dir", "stale_resize", "interrupted_delete"}
    (end,) = by_type["reaper.pass.end"]
    assert end[0] == "INFO" and end[1]["pass_id"] == rep.pass_id
    # one notification per action done, the audit record as payload
    assert sum(len(v) for k, v in by_type.items() if k != "reaper.pass.end") == len(rep.actions)
    assert "reaper.guard.tripped" not in by_type


def test_a_tripped_guard_is_a_warning(tmp_path, listened):
    import dataclasses
    conf, coll = listened
    reaper, _, _ = demo.build(str(tmp_path / "host"))
    reaper.policy = dataclasses.replace(reaper.policy, max_destroy_per_pass=1)
    emitter = notifications.enable(reaper, conf)
    try:
        reaper.run_pass("reap")
        got = coll.wait_for(lambda g: any(e == "reaper.guard.tripped" for _, _, e, _ in g))
    finally:
        emitter.close()
        reaper.close()
    (prio, _, _, payload), = [g for g in got if g[2] == "reaper.guard.tripped"]
    assert prio == "WARN" and payload["guard"] == "mass_destruction"


def test_an_unreachable_broker_never_holds_up_a_pass(tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()                                   # nothing listens there now
    url = f"rabbit://guest:guest@127.0.0.1:{port}/"
    conf = conf_for(url, "reaper-test-nowhere")
    reaper, _, _ = demo.build(str(tmp_path / "host"))
    emitter = notifications.enable(reaper, conf)
    done = threading.Event()
    result = {}

    def run():
        result["rep"] = reaper.run_pass("reap")
        done.set()
    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        # a hang guard, not a speed target: the pass only queues its notifications
        assert done.wait(120), "the pass is stuck behind the dead broker"
        assert result["rep"].exit_code == 4
        t0 = time.monotonic()
        emitter.close(timeout=5)
        assert time.monotonic() - t0 < 60
    finally:
        reaper.close()


def test_default_driver_sends_nothing(tmp_path):
    conf = conf_for("rabbit://guest:guest@127.0.0.1:1/", "x", driver="noop")
    reaper, _, _ = demo.build(str(tmp_path / "host"))
    try:
        assert notifications.enable(reaper, conf) is None
    finally:
        reaper.close()
