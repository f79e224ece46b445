"""The local state DB: observations, journal, approvals survive a reopen."""
from __future__ import annotations

import dataclasses
import datetime
import json
import os

import pytest

from reaper import state as state_mod
from reaper.objects.fields import Action, Classification
from reaper.objects.plan import Finding, TeardownPlan
from tests.fixtures import records

T0 = datetime.datetime(2026, 11, 23, 12, 0, 0)


def finding(res="instance-1", cls=Classification.EVACUATED) -> Finding:
    return records.finding(resource=res, instance_uuid="u", classification=cls)


def test_observations_count_consecutive_passes_and_reset(tmp_path):
    st = state_mod.StateDB(str(tmp_path))
    assert st.observe([finding()], T0)["domain:instance-1"] == (1, T0)
    t1 = T0 + datetime.timedelta(minutes=5)
    assert st.observe([finding()], t1)["domain:instance-1"] == (2, T0)
    # classified differently: starts over
    t2 = t1 + datetime.timedelta(minutes=5)
    assert st.observe([finding(cls=Classification.FOREIGN)], t2)["domain:instance-1"] == (1, t2)
    # missing from a pass: starts over
    st.observe([], t2)
    st.close()
    st = state_mod.StateDB(str(tmp_path))
    assert st.observe([finding()], t2)["domain:instance-1"] == (1, t2)


def test_journal_roundtrip_and_unfinished(tmp_path):
    st = state_mod.StateDB(str(tmp_path))
    plan = TeardownPlan("u", Classification.RECLAIMABLE, Action.RECLAIM, "instance-1",
                        ("/x/u",), True, True, "r")
    jid = st.begin(plan, "req-1", T0)
    st.step(jid, "claim", "started", T0)
    st.step(jid, "claim", "done", T0, "claimed")
    st.step(jid, "destroy_domain", "started", T0)
    st.close()
    st = state_mod.StateDB(str(tmp_path))
    (entry,) = st.unfinished()
    assert entry.plan == plan and entry.steps == {"claim": "done", "destroy_domain": "started"}
    assert st.backlog() == 1
    st.finish(jid, "done", T0)
    assert st.unfinished() == [] and st.backlog() == 0


def test_approval_covers_only_what_was_blocked(tmp_path):
    st = state_mod.StateDB(str(tmp_path))
    st.record_blocked("req-1", ["a", "b", "c"], T0)
    assert st.approval_covering(["a"]) is None          # not approved yet
    assert st.approve("req-1", T0)
    assert st.approval_covering(["a", "b"]) == "req-1"
    assert st.approval_covering(["a", "d"]) is None      # d was never shown to the operator
    st.use_approval("req-1", T0)
    assert st.approval_covering(["a"]) is None           # once only
    assert not st.approve("req-1", T0)
    assert not st.approve("req-unknown", T0)


def test_approvals_expire(tmp_path):
    st = state_mod.StateDB(str(tmp_path))
    st.record_blocked("req-1", ["a"], T0)
    assert st.approve("req-1", T0)
    hour = datetime.timedelta(hours=1)
    assert st.approval_covering(["a"], not_before=T0 - hour) == "req-1"
    assert st.approval_covering(["a"], not_before=T0 + hour) is None    # approved too long ago


def test_an_approval_names_the_classification_it_was_shown():
    plan = TeardownPlan(instance_uuid="u1", classification=Classification.EVACUATED,
                        action=Action.REAP, domain_name="instance-1", dirs=(),
                        destroy_disks=True, finalize_db=False, reason="r")
    other = dataclasses.replace(plan, classification=Classification.RUNNING_DELETED)
    assert state_mod.teardown_key(plan) != state_mod.teardown_key(other)


def _plan(u="u"):
    return TeardownPlan(u, Classification.ORPHAN_DIR, Action.REAP, None, (f"/x/{u}",),
                        True, False, "r")


def test_journal_entries_record_their_owner_and_a_resume_takes_them_over(tmp_path):
    st = state_mod.StateDB(str(tmp_path))
    jid = st.begin(_plan(), "req-1", T0)
    (entry,) = st.unfinished()
    assert entry.owner["pid"] == os.getpid() and entry.owner["boot_id"]
    assert st.is_me(entry.owner)
    dead = {"pid": 1 << 22, "start": 1, "boot_id": entry.owner["boot_id"]}
    st._db.execute("UPDATE journal SET owner=? WHERE id=?", (json.dumps(dead), jid))
    (entry,) = st.unfinished()
    assert not st.is_me(entry.owner)
    st.take_over(jid, T0)
    assert st.is_me(st.unfinished()[0].owner)


def test_a_journal_of_an_earlier_version_gets_the_owner_column(tmp_path):
    import sqlite3
    db = sqlite3.connect(tmp_path / state_mod.DB_NAME)
    db.executescript(state_mod._SCHEMA.replace(
        ",\n    owner TEXT                     -- JSON: pid, start, boot_id, process "
        "(reaper.procid)\n", "\n"))
    db.execute("INSERT INTO journal (pass_id, instance_uuid, plan, status, created_at, "
               "updated_at) VALUES ('req-0', 'u', ?, 'running', 't', 't')",
               (state_mod.plan_to_json(_plan()),))
    db.commit()
    db.close()
    st = state_mod.StateDB(str(tmp_path))
    (entry,) = st.unfinished()
    assert entry.owner is None and entry.plan == _plan()


BAD_PLANS = {
    "bad-json": "{not json",
    "unknown-classification": json.dumps({**json.loads(state_mod.plan_to_json(_plan())),
                                          "classification": "from_the_future"}),
    "unknown-action": json.dumps({**json.loads(state_mod.plan_to_json(_plan())),
                                  "action": "vaporize"}),
    "not-an-object": "[1, 2]",
}


@pytest.mark.parametrize("plan_text", list(BAD_PLANS.values()), ids=list(BAD_PLANS))
def test_an_unreadable_entry_is_quarantined_once_and_never_raises(tmp_path, plan_text):
    st = state_mod.StateDB(str(tmp_path))
    good = st.begin(_plan("good"), "req-1", T0)
    bad = st.begin(_plan("bad"), "req-1", T0)
    st._db.execute("UPDATE journal SET plan=? WHERE id=?", (plan_text, bad))
    assert [e.id for e in st.unfinished()] == [good]          # no exception
    (q,) = st.quarantine_unreadable(T0)
    assert q.id == bad and q.instance_uuid == "bad" and q.error
    assert st.quarantine_unreadable(T0) == []                  # audited once
    assert st.quarantined() == 1 and st.backlog() == 1
    status, error = st._db.execute("SELECT status, error FROM journal WHERE id=?",
                                   (bad,)).fetchone()
    assert status == "quarantined" and error == q.error


def test_a_step_this_version_does_not_know_quarantines_the_entry(tmp_path):
    st = state_mod.StateDB(str(tmp_path))
    jid = st.begin(_plan(), "req-1", T0)
    st.step(jid, "delete_files", "done", T0)
    st.step(jid, "shred_disks", "started", T0)                 # a newer version's step

    def known(plan):
        return ["delete_files"]
    assert st.unfinished(known) == []
    assert [e.id for e in st.unfinished()] == [jid]            # without a step list
    (q,) = st.quarantine_unreadable(T0, known)
    assert "shred_disks" in q.error


def test_quarantine_spares_live_owners_and_other_instances(tmp_path):
    st = state_mod.StateDB(str(tmp_path))
    a, b = st.begin(_plan("a"), "req-1", T0), st.begin(_plan("b"), "req-1", T0)
    st._db.execute("UPDATE journal SET plan='{' WHERE id IN (?, ?)", (a, b))
    assert st.quarantine_unreadable(T0, leave=lambda owner: True) == []
    assert [q.id for q in st.quarantine_unreadable(T0, instance_uuid="b")] == [b]
    assert st.quarantined() == 1


def test_a_quarantined_entry_a_later_version_can_read_is_resumable(tmp_path):
    st = state_mod.StateDB(str(tmp_path))
    jid = st.begin(_plan(), "req-1", T0)
    st._db.execute("UPDATE journal SET status='quarantined' WHERE id=?", (jid,))
    (entry,) = st.unfinished()
    assert entry.id == jid and entry.status == "quarantined"
    st.take_over(jid, T0)
    assert st.backlog() == 1 and st.quarantined() == 0


def test_pause_with_who_and_since_survives_a_reopen(tmp_path):
    st = state_mod.StateDB(str(tmp_path))
    assert st.pause_state() is None
    st.set_pause("kernel upgrade", "user alice over RPC", T0)
    st.close()
    st = state_mod.StateDB(str(tmp_path))
    assert st.pause_state() == {"reason": "kernel upgrade", "by": "user alice over RPC",
                                "since": T0.isoformat()}
    assert st.get_flag("paused") == "kernel upgrade"            # what metrics read
    st.set_pause(None, None, T0)
    assert st.pause_state() is None and st.get_flag("paused_by") is None


def test_state_dir_and_db_files_are_private(tmp_path):
    old = os.umask(0o022)
    try:
        st = state_mod.StateDB(str(tmp_path / "state"))
        st.begin(_plan(), "req-1", T0)              # a write: -wal and -shm exist now
        mode = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "state").iterdir()}
        st.close()
    finally:
        os.umask(old)
    assert (tmp_path / "state").stat().st_mode & 0o777 == 0o700
    assert mode == {state_mod.DB_NAME: 0o600, state_mod.DB_NAME + "-wal": 0o600,
                    state_mod.DB_NAME + "-shm": 0o600}


def test_an_existing_world_readable_db_is_narrowed(tmp_path):
    st = state_mod.StateDB(str(tmp_path))
    st.close()
    os.chmod(tmp_path / state_mod.DB_NAME, 0o644)
    state_mod.StateDB(str(tmp_path)).close()
    assert (tmp_path / state_mod.DB_NAME).stat().st_mode & 0o777 == 0o600
