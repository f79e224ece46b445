"""Fault matrix: Nova's delete notifications of reclaims (reaper.nova_notify) and the
controller-side finisher (reaper-ctl finish, reaper.finisher).

Both run on the demo host (libvirt's test driver, a SQLite Nova DB, instance dirs):
what is under test is the reclaim's and the finisher's behaviour, not the guest."""
from __future__ import annotations

import datetime
import socket
import types

import pytest
import sqlalchemy as sa

from reaper import audit as audit_mod
from reaper import demo, finisher, nova_notify
from reaper.conf import notifications as conf_notifications
from reaper.nova import schema as s
from tests.fixtures import notify as fx
from tests.fixtures import novadb
from tests.functional.test_notifications import conf_for

pytestmark = pytest.mark.functional


def _closed_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def test_reclaim_with_the_notification_broker_down(tmp_path):
    """A reclaim runs while the broker of [oslo_messaging_notifications] refuses every
    connection, so instance.delete.start/.end cannot be delivered.

    Expect: the reclaim is done and the row finalized (exit 4), within the pass's own
    time; the events were queued, tried once and dropped (logged); closing the sender
    takes bounded time.
    """
    conf = conf_for(f"rabbit://guest:guest@127.0.0.1:{_closed_port()}/", "fm-notify-nowhere")
    conf.register_opts(conf_notifications.notify_opts, group="notifications")
    conf.set_override("notification_format", "both", group="notifications")
    reaper, handles, _ = demo.build(str(tmp_path / "host"))
    uuid = fx.add_billable_instance(handles["engine"], demo.HOST)["row"]["uuid"]
    events = nova_notify.enable(reaper, conf)
    try:
        rep = reaper.run_pass("reclaim")
        assert rep.exit_code == 4, rep.to_table()
        assert events.queued >= 4
        events.close(timeout=5)
    finally:
        reaper.close()
    row = novadb.get_instance(handles["engine"], uuid)
    assert row["vm_state"] == "deleted" and row["deleted"] == row["id"]


def _leftover(uuid: str, host: str, facts: bool = True) -> dict:
    left = {"instance_uuid": uuid, "ports": ["p1"],
            "services": {"network": {"status": "failed"}, "block-storage": {"status": "done"},
                         "placement": {"status": "done"}}}
    if facts:
        left["facts"] = {"uuid": uuid, "host": host, "ports": [{"id": "p1"}]}
    return {"ts": "2026-11-30T07:00:00+00:00", "event": "action", "host": host,
            "pass_id": "req-1", "instance_uuid": uuid, "classification": "reclaimable",
            "result": "done", "evidence": {"controller_leftovers": left}}


@pytest.mark.parametrize("situation", [
    pytest.param("restored", id="instance-restored"),
    pytest.param("host_up", id="host-still-up"),
    pytest.param("no_facts", id="record-without-facts"),
    pytest.param("no_row", id="row-not-found"),
])
def test_finish_refuses_what_it_cannot_prove(tmp_path, situation):
    """reaper-ctl finish --yes meets a leftover it must not act on: the instance's row
    was restored since (or is gone from the DB), its host is up again, or the record
    has no facts.

    Expect: the step is skipped with its reason in the report and the audit record;
    no service is called (a call would fail: the service is down); exit 3.
    """
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'nova.sqlite'}")
    s.create_all(eng)
    host = "fm-notify-cmp"
    uuid = novadb.add_instance(eng, host=host, deleted=situation != "restored")["uuid"]
    if situation == "no_row":
        uuid = novadb.new_uuid()
    seen = novadb.utcnow() - (datetime.timedelta(seconds=5) if situation == "host_up"
                              else datetime.timedelta(hours=5))
    novadb.add_row(eng, s.services, uuid=novadb.new_uuid(), host=host, binary="nova-compute",
                   topic="compute", report_count=1, disabled=False, forced_down=False,
                   version=66, last_seen_up=seen)
    from keystoneauth1 import adapter as ks_adapter
    from keystoneauth1 import session as ks_session
    dead = ks_adapter.Adapter(ks_session.Session(),
                              endpoint_override=f"http://127.0.0.1:{_closed_port()}")
    clients = types.SimpleNamespace(get=lambda g: types.SimpleNamespace(adapter=dead))
    audit = audit_mod.AuditLog(str(tmp_path / "audit.log"), "controller")
    try:
        rep = finisher.finish([_leftover(uuid, host, facts=situation != "no_facts")], eng,
                              clients, audit, dry_run=False, down_after=600)
    finally:
        audit.close()
        eng.dispose()
    (d,) = rep.decisions
    assert d.result == "skipped" and d.record is None, rep.to_dict()
    assert rep.exit_code == 3
