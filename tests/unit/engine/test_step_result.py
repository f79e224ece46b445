"""Typed step results and journal step statuses (reaper.objects.step, fields.StepStatus).

Steps return a StepResult; the journal, the audit records and the reports hold its
``str()``, which must be exactly the text steps returned when they were strings
(journals and audit logs written before are read the same; the golden master compares
whole passes). Callers decide on ``outcome`` and ``detail``, never on the text.
"""
from __future__ import annotations

import ast
import datetime
import json
import pathlib
import sqlite3

import pytest

from reaper import state as state_mod
from reaper.kinds.network import ovs as ovs_inv
from reaper.objects.fields import Action, Classification, StepStatus
from reaper.objects.plan import TeardownPlan
from reaper.objects.step import StepOutcome, StepResult, TeardownResult
from tests.unit.kinds.network.test_network_unplug import (P, FakeNetlink, FakeOvs, ctx_for,
                                                          engine, hybrid_links,
                                                          item, leak_plan)

T0 = datetime.datetime(2026, 1, 1)
REPO = pathlib.Path(__file__).resolve().parents[3]

__all__ = ["engine"]        # the fixture, imported for the tests below


@pytest.mark.parametrize("result,text,outcome", [
    (StepResult.done("destroyed"), "destroyed", StepOutcome.DONE),
    (StepResult.absent("no such domain"), "no such domain", StepOutcome.ABSENT),
    (StepResult.kept("not on br-int"), "kept: not on br-int", StepOutcome.KEPT),
    (StepResult.in_use("p iqn lun 1: domain x"), "kept, in use: p iqn lun 1: domain x",
     StepOutcome.KEPT),
    (StepResult.not_done("[neutron] is not configured here (no auth_type)"),
     "not done: [neutron] is not configured here (no auth_type)", StepOutcome.NOT_DONE),
    (StepResult.done_earlier(), "done earlier", StepOutcome.DONE_EARLIER),
    (StepResult.waits_for("remove_node_allocations"), "waits for remove_node_allocations",
     StepOutcome.WAITING),
    (StepResult.failed(RuntimeError("boom")), "failed: boom", StepOutcome.FAILED),
    # a detail with braces is text, never a format string
    (StepResult.kept("iface-id is now '{x}'"), "kept: iface-id is now '{x}'",
     StepOutcome.KEPT),
    (StepResult(StepOutcome.DONE, "instances 1, instance_extra 1", "finalized: {}"),
     "finalized: instances 1, instance_extra 1", StepOutcome.DONE),
], ids=lambda v: v if isinstance(v, str) else None)
def test_str_is_the_text_the_journal_always_held(result, text, outcome):
    assert str(result) == text and result.outcome is outcome
    with pytest.raises(AttributeError):
        result.detail = "changed"       # frozen


def test_kept_detail_is_the_reason_without_the_wording():
    assert StepResult.kept("marked reaper-skip=true").detail == "marked reaper-skip=true"


def test_a_kind_that_returns_text_is_taken_as_done_with_that_text():
    assert StepResult.of("removed console.log") == StepResult.done("removed console.log")
    r = StepResult.absent("already gone")
    assert StepResult.of(r) is r


def test_step_status_values_are_the_journals_text():
    assert [s.value for s in StepStatus] == ["started", "done", "failed"]
    assert str(StepStatus.DONE) == "done" and f"{StepStatus.FAILED}" == "failed"
    assert StepStatus.DONE == "done" and {"done": 1}[StepStatus.DONE] == 1


def test_teardown_results_are_the_audit_records_words():
    """Outcome.result is a TeardownResult; the audit record carries its value."""
    assert {r.value for r in TeardownResult} == {
        "done", "aborted", "backed_off", "failed", "interrupted", "held_elsewhere",
        "held_read_only"}
    assert TeardownResult.BACKED_OFF == "backed_off" and str(TeardownResult.DONE) == "done"
    assert json.dumps({"result": TeardownResult.FAILED}) == '{"result": "failed"}'


def test_step_statuses_are_journaled_as_plain_text_and_old_rows_read_the_same(tmp_path):
    st = state_mod.StateDB(str(tmp_path))
    plan = TeardownPlan("u", Classification.RECLAIMABLE, Action.RECLAIM, "instance-1",
                        ("/x/u",), True, True, "r")
    jid = st.begin(plan, "req-1", T0)
    st.step(jid, "claim", StepStatus.DONE, T0, str(StepResult.done("claimed")))
    st.step(jid, "destroy_domain", "started", T0)        # as an older version wrote it
    st.close()
    raw = sqlite3.connect(str(tmp_path / state_mod.DB_NAME))
    assert sorted(raw.execute("SELECT step, status, typeof(status), detail "
                              "FROM journal_steps")) == [
        ("claim", "done", "text", "claimed"), ("destroy_domain", "started", "text", None)]
    raw.close()
    st = state_mod.StateDB(str(tmp_path))
    (entry,) = st.unfinished()
    assert entry.steps == {"claim": StepStatus.DONE, "destroy_domain": StepStatus.STARTED}
    assert all(type(v) is str for v in entry.steps.values())    # read as text, not parsed
    st.close()


def test_the_ovs_delete_result_is_an_outcome_the_unplug_step_decides_on(engine, monkeypatch):
    """A port the OVSDB transaction finds changed is kept: the unplug step reports the
    reason (the result's detail) without re-slicing the text."""
    def delete(handle, bridge, name, prefix, iface_id, vm_uuids):
        return StepResult.kept("marked reaper-skip=true")
    monkeypatch.setattr(ovs_inv, "delete_vif_port", delete)
    links = hybrid_links()
    ctx = ctx_for(engine, FakeNetlink(links), FakeOvs(["qvo" + P]))
    res = ctx.kinds.run_step(ctx, "unplug_vifs", leak_plan([item(links)]))
    assert res.outcome is StepOutcome.DONE      # the rest of the VIF was removed
    assert f"kept ovs br-int:qvo{P} (marked reaper-skip=true, changed while unplugging)" \
        in str(res)


def test_no_kind_reaches_into_another_modules_private_names():
    """A kind's modules use each other's public names only (the disconnect step once
    used the iSCSI rules' private helpers)."""
    found = []
    for path in sorted((REPO / "reaper" / "kinds").rglob("*.py")):
        tree = ast.parse(path.read_text())
        modules = {a.asname or a.name for n in ast.walk(tree)
                   if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("reaper")
                   for a in n.names}
        modules |= {(a.asname or a.name).split(".")[0] for n in ast.walk(tree)
                    if isinstance(n, ast.Import) for a in n.names
                    if a.name.startswith("reaper")}
        found += [f"{path.relative_to(REPO)}:{n.lineno} {n.value.id}.{n.attr}"
                  for n in ast.walk(tree)
                  if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
                  and n.value.id in modules and n.attr.startswith("_")
                  and not n.attr.startswith("__")]
    assert found == []
