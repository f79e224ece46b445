"""[database] read_only on the demo host (libvirt's test driver, SQLite Nova DB, instance
dirs on disk): a pass that may not write Nova's DB reaps everything that only reads it,
reports reclaims and releases as 'log' with the reason, and leaves journaled reclaims
waiting; the DB is not changed at all. (On MariaDB, with real grants:
tests/functional/test_nova_db_grants.py.)"""
from __future__ import annotations

import dataclasses
import json
import os

import pytest
import sqlalchemy as sa

from reaper import demo, planner, reconcile
from reaper.nova import reclaim
from reaper.nova import schema as s
from reaper.objects.fields import Action, Classification, ResourceKind
from reaper.objects.plan import Finding, Plan, TeardownPlan
from tests.fixtures import records

RECLAIMS = ("soft_old", "soft_rowonly")


@pytest.fixture
def host(tmp_path):
    reaper, handles, cast = demo.build(str(tmp_path / "host"))
    yield reaper, handles, {m.label: m.uuid for m in cast}
    reaper.close()


def db_dump(engine) -> dict:
    """Every row of every table of the slice."""
    with engine.connect() as c:
        return {t.name: sorted((tuple(str(v) for v in r) for r in c.execute(sa.select(t))))
                for t in s.metadata.sorted_tables}


def dirs(handles) -> set[str]:
    return set(os.listdir(handles["instances_path"]))


def by_uuid(records) -> dict:
    return {r["instance_uuid"]: r for r in records}


def test_a_read_only_reap_reaps_what_only_reads_the_db_and_reports_reclaims(host):
    reaper, handles, u = host
    reaper.db_read_only = "true"
    before = db_dump(handles["engine"])
    rep = reaper.run_pass("reap")
    assert rep.exit_code == 4, rep.to_table()
    acted = {(a["classification"], a["result"]) for a in rep.actions}
    assert acted == {("evacuated", "done"), ("running_deleted", "done"),
                     ("orphan_dir", "done"), ("stale_resize", "done"),
                     ("interrupted_delete", "done")}, rep.to_table()
    found = by_uuid(rep.findings)
    for label in RECLAIMS:
        f = found[u[label]]
        assert (f["classification"], f["action"], f["result"]) == ("reclaimable", "log",
                                                                     "logged")
        assert "not reclaimed: the Nova DB is read-only for the reaper " \
               "([database] read_only = true)" in f["reason"]
    assert db_dump(handles["engine"]) == before, "a read-only pass wrote the Nova DB"
    assert rep.db_read_only == "[database] read_only = true"
    assert "NOVA DB READ-ONLY" in rep.to_table()
    assert u["soft_old"] in {d.UUIDString() for d in handles["conn"].listAllDomains(0)}
    (summary,) = [json.loads(x) for x in open(handles["audit_log"])
                  if '"pass_summary"' in x]
    assert summary["db_read_only"] == "[database] read_only = true"


def test_a_read_only_reclaim_pass_changes_nothing(host):
    reaper, handles, u = host
    reaper.db_read_only = "true"
    before, before_dirs = db_dump(handles["engine"]), dirs(handles)
    rep = reaper.run_pass("reclaim")
    assert rep.exit_code == 3 and rep.actions == [], rep.to_table()
    assert db_dump(handles["engine"]) == before and dirs(handles) == before_dirs
    assert {by_uuid(rep.findings)[u[x]]["action"] for x in RECLAIMS} == {"log"}


def test_the_db_is_not_asked_when_nothing_would_write_it(host):
    reaper, handles, u = host
    reaper.policy = dataclasses.replace(reaper.policy, reclaim_instance_interval=0)
    reaper.db_read_only = "true"
    rep = reaper.run_pass("reap")
    assert rep.db_read_only is None and rep.exit_code == 4


def test_stranded_claims_are_neither_adopted_nor_released_read_only(host):
    reaper, handles, u = host
    eng, h = handles["engine"], reaper.policy.host
    now = reconcile.utcnow()
    # Claims of this host whose journal is gone: one still expired (adopt and finish),
    # one not (release).
    assert reclaim.claim(eng, u["soft_rowonly"], h, 3600, now, "req-lost")
    assert reclaim.claim(eng, u["soft_new"], h, 0, now, "req-lost")
    reaper.db_read_only = "true"
    before = db_dump(eng)
    rep = reaper.run_pass("reap")
    found = by_uuid(rep.findings)
    assert found[u["soft_rowonly"]]["action"] == "log"
    assert found[u["soft_new"]]["classification"] == "stranded_claim"
    assert "claim not released: the Nova DB is read-only" in found[u["soft_new"]]["reason"]
    assert not {a["instance_uuid"] for a in rep.actions} & {u["soft_rowonly"], u["soft_new"]}
    assert db_dump(eng) == before
    # Writable again: the same host finishes one and releases the other.
    reaper.db_read_only = "auto"
    rep = reaper.run_pass("reap")
    done = {a["instance_uuid"]: (a["classification"], a["result"]) for a in rep.actions}
    assert done[u["soft_rowonly"]] == ("reclaimable", "done")
    assert done[u["soft_new"]] == ("stranded_claim", "done")


def _journaled_reclaim(reaper, handles, uuid) -> int:
    """A reclaim of ``uuid`` (no domain, no dir) claimed by a process that died
    before finalize."""
    now = reconcile.utcnow()
    assert reclaim.claim(handles["engine"], uuid, reaper.policy.host, 3600, now, "req-crashed")
    plan = TeardownPlan(uuid, Classification.RECLAIMABLE, Action.RECLAIM, None, (), True,
                        True, "reclaim")
    jid = reaper.state.begin(plan, "req-crashed", now)
    reaper.state.step(jid, "claim", "done", now)
    gone = {"pid": 1 << 22, "start": 1, "boot_id": "x", "process": "reaper-manage"}
    reaper.state._db.execute("UPDATE journal SET owner=? WHERE id=?", (json.dumps(gone), jid))
    return jid


def test_a_journaled_reclaim_waits_while_the_db_is_read_only(host):
    reaper, handles, u = host
    uuid = u["soft_rowonly"]
    _journaled_reclaim(reaper, handles, uuid)
    reaper.db_read_only = "true"
    before = db_dump(handles["engine"])
    rep = reaper.run_pass("reap")
    held = [a for a in rep.actions if a["instance_uuid"] == uuid]
    assert [a["result"] for a in held] == ["held_read_only"], rep.to_table()
    assert "finalize_db write Nova's DB, which is read-only" in held[0]["reason"]
    assert db_dump(handles["engine"]) == before
    (entry,) = [e for e in reaper.state.unfinished() if e.plan.instance_uuid == uuid]
    assert entry.steps == {"claim": "done"}
    reaper.db_read_only = "auto"
    rep = reaper.run_pass("reap")
    resumed = [a for a in rep.actions if a.get("resumed_from") == "req-crashed"]
    assert [(a["instance_uuid"], a["result"]) for a in resumed] == [(uuid, "done")]
    with handles["engine"].connect() as c:
        row = c.execute(sa.select(s.instances).where(s.instances.c.uuid == uuid)).one()
    assert row.vm_state == "deleted" and row.deleted == row.id


def test_auto_on_a_read_only_sqlite_file_is_read_only(host):
    reaper, handles, u = host
    path = handles["engine"].url.database
    reaper.engine = sa.create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    rep = reaper.run_pass("reclaim")
    assert rep.exit_code == 3 and rep.actions == [] and "read-only" in rep.db_read_only


def test_without_db_writes_keeps_every_other_teardown():
    f1 = _finding("a", Classification.RECLAIMABLE, Action.RECLAIM)
    f2 = _finding("b", Classification.ORPHAN_DIR, Action.REAP)
    f3 = _finding("c", Classification.STRANDED_CLAIM, Action.RELEASE)
    t1 = TeardownPlan("a", Classification.RECLAIMABLE, Action.RECLAIM, "dom-a", ("/i/a",),
                      True, True, "r", (f1,))
    t2 = TeardownPlan("b", Classification.ORPHAN_DIR, Action.REAP, None, ("/i/b",), True,
                      False, "o", (f2,))
    t3 = TeardownPlan("c", Classification.STRANDED_CLAIM, Action.RELEASE, None, (), False,
                      False, "s", (f3,))
    plan = Plan(findings=(f1, f2, f3), teardowns=(t1, t2, t3))
    out = planner.without_db_writes(plan, "why")
    assert out.teardowns == (t2,)
    assert [f.action for f in out.findings] == [Action.LOG, Action.REAP, Action.LOG]
    assert out.findings[0].evidence["db_read_only"] == "why"
    assert out.findings[2].reason.endswith("claim not released: the Nova DB is read-only "
                                           "for the reaper (why)")
    assert planner.without_db_writes(Plan((f2,), (t2,)), "why") == \
        Plan((f2,), (t2,))


def _finding(uuid, cls, action) -> Finding:
    return records.finding(kind=ResourceKind.INSTANCE, resource=uuid, instance_uuid=uuid,
                           classification=cls, action=action, reason="reason")
