"""The local state DB: observations, journal, approvals survive a reopen."""
from __future__ import annotations

import dataclasses
import datetime

from reaper import state as state_mod
from reaper.records import Action, Classification, Finding, ResourceKind, TeardownPlan

T0 = datetime.datetime(2026, 11, 23, 12, 0, 0)


def finding(res="instance-1", cls=Classification.EVACUATED):
    return Finding(ResourceKind.DOMAIN, res, "u", cls, Action.REAP, "why")


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
