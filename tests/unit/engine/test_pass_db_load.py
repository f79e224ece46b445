"""What a pass reads of Nova's DB when nothing is new (the fleet's DB load), on the demo
host (libvirt's test driver, a SQLite Nova DB, instance directories on disk).

- The reclaim pass reads this host's soft-deleted rows first and the whole view only
  when one of them may be reclaimed or released.
- With ``full_view_interval`` a pass whose change check matches the last full view,
  and whose plan from that view has no teardown, reads nothing more. A missed change
  (a stale "unchanged") can only lead to doing nothing.
"""
from __future__ import annotations

import datetime
import json
import os

import libvirt
import pytest
import sqlalchemy as sa

from reaper import demo, reconcile
from reaper.nova import changes as nova_changes
from reaper.nova import db as nova_db
from reaper.nova import schema as s
from reaper.objects.fields import Action, Classification
from reaper.objects.plan import TeardownPlan

RECLAIM_KINDS = {"reclaimable", "stranded_claim", "foreign_claim"}


@pytest.fixture
def host(tmp_path):
    reaper, handles, cast = demo.build(str(tmp_path / "host"))
    clock = [reconcile.utcnow()]
    mono = [1000.0]
    reaper.clock = lambda: clock[0]
    reaper.monotonic = lambda: mono[0]
    reaper.full_view_interval = 3600
    yield reaper, handles, {m.label: m.uuid for m in cast}, clock, mono
    reaper.close()


def quiet(reaper):
    """The demo's first pass reaps what it can; the next one has nothing to do."""
    assert reaper.run_pass("reap").actions
    rep = reaper.run_pass("reap")
    assert rep.actions == [] and rep.db_view == "full", rep.to_table()
    return rep


def defined(handles, uuid) -> bool:
    try:
        handles["conn"].lookupByUUIDString(uuid)
        return True
    except libvirt.libvirtError:
        return False


def observations(reaper):
    return sorted(reaper.state._db.execute("SELECT * FROM observations").fetchall())


def update_instance(handles, uuid, **values):
    i_ = s.instances
    with handles["engine"].begin() as c:
        assert c.execute(sa.update(i_).where(i_.c.uuid == uuid).values(**values)).rowcount == 1


def stale_check(monkeypatch, reaper):
    """A change check that always answers "unchanged": the worst a missed change can do."""
    monkeypatch.setattr(nova_changes, "read",
                        lambda *a, **k: reaper._view_cache.fingerprint)


def pass_summaries(handles):
    with open(handles["audit_log"]) as f:
        return [r for r in map(json.loads, f) if r["event"] == "pass_summary"]


# --------------------------------------------------------------------------
# The change check
# --------------------------------------------------------------------------

def test_an_unchanged_pass_costs_one_statement_and_records_no_observation(host):
    reaper, handles, u, clock, mono = host
    full = quiet(reaper)
    seen = observations(reaper)
    clock[0] += datetime.timedelta(seconds=60)
    mono[0] += 60
    with nova_db.QueryCounter(handles["engine"]) as qc:
        rep = reaper.run_pass("reap")
    assert (rep.db_view, rep.db_queries, qc.count) == ("unchanged", 1, 1)
    assert rep.actions == [] and rep.exit_code == full.exit_code
    assert [(f["resource"], f["classification"], f["result"]) for f in rep.findings] == \
        [(f["resource"], f["classification"], f["result"]) for f in full.findings]
    assert observations(reaper) == seen, "a pass on a cached view counted as an observation"
    assert pass_summaries(handles)[-1]["db_view"] == "unchanged"
    assert reaper.run_pass("audit").db_view == "unchanged"


def test_a_change_of_this_hosts_rows_reads_the_whole_view(host):
    reaper, handles, u, clock, mono = host
    quiet(reaper)
    update_instance(handles, u["live2"], vm_state="active", power_state=1)
    rep = reaper.run_pass("reap")
    assert rep.db_view == "full" and rep.db_queries > 1
    assert reaper.run_pass("reap").db_view == "unchanged"


def test_a_bdm_or_info_cache_change_alone_waits_for_the_next_full_view(host):
    """The check leaves block device mappings and info caches to the full view
    (reaper.nova.changes): such a change alone is read at the latest by the first pass
    full_view_interval after the last full read."""
    reaper, handles, u, clock, mono = host
    quiet(reaper)
    b, ic = s.block_device_mapping, s.instance_info_caches
    with handles["engine"].begin() as c:
        assert c.execute(sa.update(b).where(b.c.instance_uuid == u["drift"]).values(
            connection_info=json.dumps({"driver_volume_type": "iscsi", "data": {
                "target_lun": 7}}))).rowcount == 1
        c.execute(sa.insert(ic).values(instance_uuid=u["live1"], deleted=0,
                                       network_info=json.dumps([])))
    views = []
    for _ in range(6):
        mono[0] += 600
        views.append(reaper.run_pass("reap").db_view)
    assert views == ["unchanged"] * 5 + ["full"]
    assert reaper._view_cache.view.info_caches[u["live1"]].network_info == "[]"


def test_a_deep_check_sees_a_bdm_or_info_cache_change_within_its_interval(host, monkeypatch):
    """deep_check_interval 1200, full_view_interval a day: light checks in between,
    a deep one once 1200 s have passed since the full read or the last deep check;
    the deep check that sees the change makes the pass read the whole view."""
    reaper, handles, u, clock, mono = host
    reaper.full_view_interval, reaper.deep_check_interval = 86400, 1200
    quiet(reaper)
    assert reaper._view_cache.fingerprint.deep
    deep_reads = []
    real = nova_changes.read

    def read(*a, deep=False, **k):
        deep_reads.append(deep)
        return real(*a, deep=deep, **k)
    monkeypatch.setattr(nova_changes, "read", read)
    views = []
    for _ in range(4):              # 600, 1200 (deep), 1800, 2400 (deep)
        mono[0] += 600
        views.append(reaper.run_pass("reap").db_view)
    assert views == ["unchanged"] * 4 and deep_reads == [False, True, False, True]
    ic = s.instance_info_caches
    with handles["engine"].begin() as c:
        c.execute(sa.insert(ic).values(instance_uuid=u["live1"], deleted=0,
                                       network_info=json.dumps([])))
    mono[0] += 600                  # a light check: not seen
    assert reaper.run_pass("reap").db_view == "unchanged"
    mono[0] += 600                  # the deep check: seen, read in full
    assert reaper.run_pass("reap").db_view == "full"
    assert deep_reads[-2:] == [False, True]
    assert reaper._view_cache.view.info_caches[u["live1"]].network_info == "[]"


def test_deep_checks_only_when_more_often_than_full_reads(host):
    reaper, handles, u, clock, mono = host
    reaper.deep_check_interval = 3600           # = full_view_interval: none
    quiet(reaper)
    assert not reaper._view_cache.fingerprint.deep


def test_a_stale_unchanged_answer_never_leads_to_an_action(host, monkeypatch):
    """The instance is deleted in Nova, but the check misses it: nothing is done
    until the next full read, at most full_view_interval later; then it is reaped."""
    reaper, handles, u, clock, mono = host
    quiet(reaper)
    stale_check(monkeypatch, reaper)
    update_instance(handles, u["live1"], deleted=99, vm_state="deleted",
                    deleted_at=clock[0] - datetime.timedelta(days=1))
    for _ in range(3):
        mono[0] += 1000
        rep = reaper.run_pass("reap")
        assert rep.db_view == "unchanged" and rep.actions == []
        assert defined(handles, u["live1"])
    mono[0] += 600          # 3600 s since the last full read: read it whole
    rep = reaper.run_pass("reap")
    assert rep.db_view == "full"
    assert [(a["instance_uuid"], a["classification"], a["result"]) for a in rep.actions] == \
        [(u["live1"], "running_deleted", "done")]
    assert not defined(handles, u["live1"])


def test_a_stale_view_that_would_act_is_read_again_and_the_fresh_one_wins(host, monkeypatch):
    """soft_new is restored in Nova and the check misses it; an hour later the cached
    row would be reclaimable: that plan has a teardown, so the pass reads the whole
    view, which says the instance is live: nothing is reclaimed."""
    reaper, handles, u, clock, mono = host
    quiet(reaper)
    stale_check(monkeypatch, reaper)
    update_instance(handles, u["soft_new"], vm_state="active", deleted_at=None)
    clock[0] += datetime.timedelta(hours=2)
    mono[0] += 60
    rep = reaper.run_pass("reap")
    assert rep.db_view == "full", rep.to_table()
    # (deleted_recent is past running_deleted_timeout by now: that reap is right)
    assert [a["instance_uuid"] for a in rep.actions] == [u["deleted_recent"]]
    assert defined(handles, u["soft_new"])
    with reaper.engine.connect() as c:
        row = c.execute(sa.select(s.instances.c.vm_state, s.instances.c.task_state)
                        .where(s.instances.c.uuid == u["soft_new"])).one()
    assert tuple(row) == ("active", None)


def test_time_alone_makes_a_teardown_so_the_view_is_read(host):
    """No write to the DB: deleted_recent passes running_deleted_timeout."""
    reaper, handles, u, clock, mono = host
    quiet(reaper)
    assert reaper.run_pass("reap").db_view == "unchanged"
    clock[0] += datetime.timedelta(seconds=700)
    rep = reaper.run_pass("reap")
    assert rep.db_view == "full"
    assert [(a["instance_uuid"], a["result"]) for a in rep.actions] == \
        [(u["deleted_recent"], "done")]


def test_what_makes_a_pass_read_the_whole_view(host):
    reaper, handles, u, clock, mono = host
    quiet(reaper)
    # the monotonic clock going backwards (it cannot, but a cache must not outlive it)
    mono[0] -= 1
    assert reaper.run_pass("reap").db_view == "full"
    # a targeted pass
    assert reaper.run_pass("audit", only_uuid=u["live1"]).db_view == "full"
    assert reaper.run_pass("reap").db_view == "unchanged"
    # a new instance directory: the view's input changed; and as long as it is an
    # orphan with a teardown planned (waiting or not), every pass reads in full
    new = os.path.join(handles["instances_path"], "6d4b4b7e-0f43-4f4e-9d4c-7d5f0c9a1b2c")
    os.makedirs(new)
    assert [reaper.run_pass("audit").db_view for _ in range(2)] == ["full", "full"]
    os.rmdir(new)       # gone again: the input changed back, read once more
    assert [reaper.run_pass("audit").db_view for _ in range(2)] == ["full", "unchanged"]
    # a journaled teardown waits
    plan = TeardownPlan("0d4b4b7e-0f43-4f4e-9d4c-7d5f0c9a1b2c", Classification.ORPHAN_DIR,
                        Action.REAP, None, (), True, False, "orphan")
    jid = reaper.state.begin(plan, "req-x", clock[0])
    assert reaper.run_pass("audit").db_view == "full"
    reaper.state.finish(jid, "done", clock[0])


def test_a_wall_clock_jump_neither_acts_on_the_cache_nor_extends_it(host):
    """Backwards: the rules see less expired, so the cached plan stays empty and the
    pass does nothing; the cache's age is on the monotonic clock, so it still ends."""
    reaper, handles, u, clock, mono = host
    quiet(reaper)
    clock[0] -= datetime.timedelta(days=3)
    mono[0] += 3000
    rep = reaper.run_pass("reap")
    assert rep.db_view == "unchanged" and rep.actions == []
    mono[0] += 600
    assert reaper.run_pass("reap").db_view == "full"


def test_full_view_interval_zero_reads_the_whole_view_every_pass(host):
    reaper, handles, u, clock, mono = host
    reaper.full_view_interval = 0
    quiet(reaper)
    assert {reaper.run_pass("reap").db_view for _ in range(2)} == {"full"}
    assert reaper._view_cache is None


# --------------------------------------------------------------------------
# The reclaim pass
# --------------------------------------------------------------------------

def test_a_reclaim_pass_with_nothing_to_reclaim_is_one_statement(host):
    reaper, handles, u, clock, mono = host
    quiet(reaper)               # soft_old and soft_rowonly are reclaimed; soft_new is recent
    with nova_db.QueryCounter(handles["engine"]) as qc:
        rep = reaper.run_pass("reclaim")
    assert (rep.db_view, rep.db_queries, qc.count) == ("reclaim_check", 1, 1)
    assert (rep.exit_code, rep.findings, rep.actions, rep.guards) == (0, [], [], [])
    assert defined(handles, u["soft_new"])
    # the same DB, read in full: no reclaim finding and no reclaim to plan either
    reaper.full_view_interval = 0
    reaper._nothing_to_reclaim = lambda rep, pol: False
    full = reaper.run_pass("reclaim")
    assert full.db_view == "full" and full.actions == []
    assert not RECLAIM_KINDS & {f["classification"] for f in full.findings}


def test_a_reclaim_pass_reads_the_view_once_a_row_expires(host):
    reaper, handles, u, clock, mono = host
    quiet(reaper)
    assert reaper.run_pass("reclaim").db_view == "reclaim_check"
    clock[0] += datetime.timedelta(seconds=3700)
    rep = reaper.run_pass("reclaim")
    assert rep.db_view == "full"
    assert [(a["instance_uuid"], a["classification"], a["result"]) for a in rep.actions] == \
        [(u["soft_new"], "reclaimable", "done")]


def test_a_claimed_row_is_read_in_full_and_only_reported(host):
    """soft-delete at task_state 'deleting' without our marker: Nova's own delete."""
    reaper, handles, u, clock, mono = host
    quiet(reaper)
    update_instance(handles, u["soft_new"], task_state="deleting")
    rep = reaper.run_pass("reclaim")
    assert rep.db_view == "full" and rep.actions == []
    assert [(f["instance_uuid"], f["classification"]) for f in rep.findings
            if f["classification"] in RECLAIM_KINDS] == [(u["soft_new"], "foreign_claim")]


def test_the_first_reclaim_pass_of_the_demo_reclaims_as_before(host):
    reaper, handles, u, clock, mono = host
    rep = reaper.run_pass("reclaim")
    assert rep.db_view == "full"
    assert sorted(a["instance_uuid"] for a in rep.actions if a["result"] == "done") == \
        sorted([u["soft_old"], u["soft_rowonly"]])


def test_a_reclaim_pass_that_cannot_read_goes_on_in_full_and_reports_it(host, monkeypatch):
    reaper, handles, u, clock, mono = host
    quiet(reaper)
    with handles["engine"].begin() as c:
        c.execute(sa.text("ALTER TABLE instances RENAME TO instances_gone"))
    rep = reaper.run_pass("reclaim")
    assert rep.db_view == "full" and rep.actions == []
    assert "view_unavailable" in [g["guard"] for g in rep.guards]


def test_with_reclaim_disabled_the_timers_reclaim_pass_reads_nothing(host):
    """As nova-compute's _reclaim_queued_deletes; a stranded claim of this host is
    released by the next reconcile pass (and reaper-manage reclaim still reads)."""
    import dataclasses

    from reaper.nova import reclaim
    reaper, handles, u, clock, mono = host
    quiet(reaper)
    reaper.policy = dataclasses.replace(reaper.policy, reclaim_instance_interval=0)
    assert reclaim.claim(handles["engine"], u["soft_new"], reaper.policy.host, 0, clock[0],
                         "req-lost")
    with nova_db.QueryCounter(handles["engine"]) as qc:
        rep = reaper.run_pass("reclaim", source="timer")
    assert (rep.db_view, rep.db_queries, qc.count, rep.actions) == (
        "reclaim_disabled", 0, 0, [])
    rep = reaper.run_pass("reap", source="timer")
    assert rep.db_view == "full"
    assert [(a["instance_uuid"], a["classification"], a["result"]) for a in rep.actions] == \
        [(u["soft_new"], "stranded_claim", "done")]
    assert reaper.run_pass("reclaim").db_view == "reclaim_check"


def test_an_unchanged_pass_plans_once_with_the_checks_plan(host, monkeypatch):
    """The change check's plan (from the cached view, no teardown) is the pass's plan:
    one plan per unchanged pass, and a full pass plans on its own fresh view."""
    reaper, handles, *_ = host
    quiet(reaper)
    calls = []
    real = reaper.kinds.plan

    def counted(*a, **k):
        calls.append(k.get("journaled", frozenset()))
        return real(*a, **k)
    monkeypatch.setattr(reaper.kinds, "plan", counted)
    rep = reaper.run_pass("audit")
    assert rep.db_view == "unchanged" and len(calls) == 1
    reaper._view_cache = None               # the next pass reads the whole view
    calls.clear()
    rep = reaper.run_pass("audit")
    assert rep.db_view == "full" and len(calls) == 1
    assert reaper._check_plan is None
