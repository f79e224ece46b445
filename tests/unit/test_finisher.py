"""reaper-ctl finish's reading and deciding (reaper.finisher), and its shell on a real
SQLite Nova DB with services that are not configured or not reachable. The steps on
real services: tests/functional/test_finish.py."""
from __future__ import annotations

import datetime
import json

import pytest
import sqlalchemy as sa

from reaper import audit as audit_mod
from reaper import finisher
from reaper.nova import schema as s
from tests.fixtures import novadb

NOW = datetime.datetime(2026, 11, 30, 8, 0, 0)
FACTS = {"uuid": "u1", "host": "cmp-1", "node": "cmp-1", "node_uuid": None,
         "ports": [{"id": "p1", "preserve_on_delete": False}], "network_info": "ok",
         "volumes": [], "migration_id": None}


def rec(uuid="u1", host="cmp-1", ts="2026-11-30T07:00:00+00:00", services=None, facts=FACTS,
        classification="reclaimable", notification=False, **left):
    leftovers = {"instance_uuid": uuid, "ports": ["p1"], "allocations": {"consumer": uuid},
                 **left}
    if services is not None:
        leftovers["services"] = services
    if facts is not None:
        leftovers["facts"] = {**facts, "uuid": uuid}
    r = {"ts": ts, "host": host, "pass_id": "req-1", "event": "action",
         "instance_uuid": uuid, "classification": classification, "result": "done"}
    if notification:
        return {**r, "leftovers": leftovers, "evidence": {"controller_leftovers": leftovers}}
    return {**r, "evidence": {"controller_leftovers": leftovers}}


FAILED = {"network": {"status": "failed", "detail": "refused"},
          "block-storage": {"status": "done"}, "placement": {"status": "not_configured"}}


def test_the_newest_record_of_an_instance_wins_and_other_records_are_ignored():
    older = rec(ts="2026-11-30T06:00:00+00:00", services=FAILED)
    newer = rec(ts="2026-11-30T07:00:00+00:00", services={
        k: {"status": "done"} for k in FAILED}, facts=None)
    other = {"event": "finding", "instance_uuid": "u2"}
    evac = rec(uuid="u3", classification="evacuated", services=FAILED)
    ours = {**rec(uuid="u4", services=FAILED), "classification": finisher.CLASSIFICATION}
    got = finisher.latest_leftovers([newer, older, other, evac, ours])
    assert list(got) == ["u1"] and got["u1"].pending() == []
    got = finisher.latest_leftovers([rec(services=FAILED, notification=True)])
    assert got["u1"].source == "notification"
    assert [(svc, step) for svc, step, _ in got["u1"].pending()] == [
        ("network", "release_ports"), ("placement", "delete_allocations")]


def test_a_record_without_service_steps_is_pending_but_never_acted_on():
    lo = finisher.leftover_of(rec(facts=None, volumes_attached=[], allocations=None))
    assert [step for _, step, _ in lo.pending()] == ["release_ports"]
    (d,) = finisher.decide(lo, finisher.HostState("cmp-1", False, "gone"), True, "deleted",
                           lambda g: True)
    assert not d.act and "no facts" in d.reason


@pytest.mark.parametrize("host_up,include_up,row,configured,act,why", [
    (False, False, True, True, True, "release_ports left by cmp-1"),
    (True, False, True, True, False, "is up"),
    (True, True, True, True, True, "release_ports left"),
    (False, False, False, True, False, "not deleted"),
    (False, False, None, True, False, "not proven deleted"),
    (False, False, True, False, False, "not configured here"),
])
def test_decide(host_up, include_up, row, configured, act, why):
    lo = finisher.leftover_of(rec(services={"network": {"status": "failed"},
                                            "block-storage": {"status": "done"},
                                            "placement": {"status": "done"}}))
    (d,) = finisher.decide(lo, finisher.HostState("cmp-1", host_up, "x"), row, "why",
                           lambda g: configured, include_up)
    assert d.act is act and why in d.reason and d.result == ("planned" if act else "skipped")


def test_host_states_as_novas_servicegroup():
    old, fresh = NOW - datetime.timedelta(minutes=5), NOW - datetime.timedelta(seconds=10)
    rows = [dict(host="a", deleted=0, forced_down=False, last_seen_up=fresh),
            dict(host="b", deleted=0, forced_down=False, last_seen_up=old),
            dict(host="c", deleted=0, forced_down=True, last_seen_up=fresh),
            dict(host="d", deleted=3, forced_down=False, last_seen_up=fresh),
            dict(host="e", deleted=4, forced_down=False, last_seen_up=fresh),
            dict(host="e", deleted=0, forced_down=False, last_seen_up=fresh),
            dict(host="f", deleted=0, forced_down=False, last_seen_up=None,
                 updated_at=fresh)]
    st = finisher.host_states(rows, NOW, 60)
    assert {h: v.up for h, v in st.items()} == {"a": True, "b": False, "c": False,
                                                "d": False, "e": True, "f": True}
    assert "deleted" in st["d"].why and "forced down" in st["c"].why
    assert finisher.host_states(rows, NOW, 3600)["b"].up


def test_exit_codes():
    lo = finisher.leftover_of(rec(services=FAILED))
    d = lambda result: finisher.Decision(lo, "network", "release_ports", True, "", result)  # noqa: E731
    assert finisher.exit_code([], []) == 0
    assert finisher.exit_code([d("dry_run"), d("skipped")], []) == 3
    assert finisher.exit_code([d("done"), d("done")], []) == 4
    assert finisher.exit_code([d("done"), d("skipped")], []) == 3
    assert finisher.exit_code([d("done"), d("failed")], []) == 1
    assert finisher.exit_code([], ["db"]) == 1


@pytest.fixture
def nova(tmp_path):
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'nova.sqlite'}")
    s.create_all(eng)
    yield eng
    eng.dispose()


class _Clients:
    """Clients with no section configured (as reaper.services.session.Clients)."""
    def __init__(self, adapters=None):
        self.adapters = adapters or {}

    def get(self, group):
        import types
        return types.SimpleNamespace(adapter=self.adapters.get(group))


def test_finish_rereads_the_rows_audits_each_decision_and_changes_nothing_in_a_dry_run(
        nova, tmp_path):
    gone = novadb.add_instance(nova, host="cmp-1", deleted=True)["uuid"]
    live = novadb.add_instance(nova, host="cmp-1")["uuid"]
    novadb.add_row(nova, s.services, uuid=novadb.new_uuid(), host="cmp-1",
                   binary="nova-compute", topic="compute", report_count=1, disabled=False,
                   forced_down=True, version=66, last_seen_up=novadb.utcnow())
    log = tmp_path / "audit.log"
    audit = audit_mod.AuditLog(str(log), "controller")
    adapters = {"neutron": object(), "cinder": object()}       # never called: dry run
    try:
        rep = finisher.finish([rec(uuid=gone, services=FAILED), rec(uuid=live,
                                                                    services=FAILED)],
                              nova, _Clients(adapters), audit, dry_run=True)
    finally:
        audit.close()
    by = {(d.leftover.instance_uuid, d.step): d for d in rep.decisions}
    assert by[(gone, "release_ports")].result == "dry_run"
    assert by[(gone, "delete_allocations")].result == "skipped"      # [placement] not here
    assert "not configured" in by[(gone, "delete_allocations")].reason
    assert {d.result for (u, _), d in by.items() if u == live} == {"skipped"}
    assert rep.exit_code == 3 and rep.records_read == 2 and rep.instances == 2
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["event"] for x in lines] == ["action"] * 4 + ["finish_summary"]
    assert all(x["classification"] == "controller_leftover" for x in lines[:4])
    assert lines[-1]["evidence"]["steps"] == {"dry_run": 1, "skipped": 3}


def test_an_unreachable_service_fails_its_step_and_the_others_go_on(nova, tmp_path):
    from keystoneauth1 import adapter as ks_adapter
    from keystoneauth1 import session as ks_session
    import socket
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    dead = ks_adapter.Adapter(ks_session.Session(), endpoint_override=f"http://127.0.0.1:{port}")
    gone = novadb.add_instance(nova, host="cmp-9", deleted=True)["uuid"]    # no service row
    audit = audit_mod.AuditLog(str(tmp_path / "audit.log"), "controller")
    try:
        rep = finisher.finish([rec(uuid=gone, host="cmp-9", services=FAILED)], nova,
                              _Clients({"neutron": dead, "placement": dead}), audit,
                              dry_run=False)
    finally:
        audit.close()
    assert [(d.step, d.result) for d in rep.decisions] == [
        ("release_ports", "failed"), ("delete_allocations", "failed")]
    assert rep.exit_code == 1
    assert all(d.record and d.record["status"] == "failed" for d in rep.decisions)


def test_nothing_left_is_exit_0_and_a_broken_db_is_exit_1(nova, tmp_path):
    audit = audit_mod.AuditLog(None, "controller")
    done = {k: {"status": "done"} for k in FAILED}
    assert finisher.finish([rec(services=done, facts=None)], nova, _Clients(),
                           audit).exit_code == 0
    broken = sa.create_engine(f"sqlite:///{tmp_path / 'empty.sqlite'}")
    rep = finisher.finish([rec(services=FAILED)], broken, _Clients(), audit)
    assert rep.exit_code == 1 and "services" in rep.errors[0]
