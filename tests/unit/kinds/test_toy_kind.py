"""The toy ``console_log`` kind (tests/fixtures/toy_kind), enabled through its entry
point alone, in whole passes: found, audited, reaped by its own step under its own
action option, journaled and read back; a file a domain still has is kept.

Nothing in reaper/ names the toy kind: this is doc/adding-a-resource-kind.md, run.
"""
from __future__ import annotations

import dataclasses
import json

import pytest
import sqlalchemy as sa
from oslo_config import cfg

from reaper import audit as audit_mod
from reaper import reconcile
from reaper import state as state_mod
from reaper.kinds.manager import KindManager
from reaper.nova import schema
from reaper.policy import Policy
from reaper.objects.fields import Action
from tests.fixtures import novadb
from tests.fixtures.toy_kind import plugin as toy
from tests.unit.kinds.test_contract import toy_installed  # noqa: F401

CONF = cfg.CONF
HOST = "kinds-toy-host"
LEFT = "33333333-4444-5555-6666-777777777777"       # no domain: a leftover
TEST_DOMAIN = "6695eb01-f6a4-8304-79aa-97f2502e193f"  # test:///default's own domain


@pytest.fixture
def host(tmp_path, toy_installed):  # noqa: F811
    import libvirt
    inst = tmp_path / "instances"
    inst.mkdir()
    (inst / f"{LEFT}.console.log").write_text("boot\n")
    (inst / f"{TEST_DOMAIN}.console.log").write_text("running\n")
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'nova.sqlite'}")
    schema.create_all(eng)
    novadb.add_compute_node(eng, HOST)
    conn = libvirt.open("test:///default")
    kinds = KindManager.from_conf(CONF, names=["instance", toy.NAME])

    def make(action: Action) -> reconcile.Reaper:
        actions = {cls: Action(opt.default) for cls, opt in kinds.action_options().items()}
        actions[toy.ToyClassification.LEFTOVER_CONSOLE_LOG] = action
        pol = Policy(host=HOST, hypervisor_hostname=HOST, instances_path=str(inst),
                     actions=actions, grace_observations=1, grace_seconds=0,
                     instances_path_shared="false")
        return reconcile.Reaper(policy=pol, libvirt_uri="test:///default", engine=eng,
                                state=state_mod.StateDB(str(tmp_path / "state")),
                                audit=audit_mod.AuditLog(str(tmp_path / "audit.log"), HOST),
                                connect=lambda: conn, kinds=kinds)
    yield make, inst
    conn.close()
    eng.dispose()


def test_default_action_is_log_and_the_finding_is_the_kinds_own(host):
    make, inst = host
    r = make(Action.LOG)
    try:
        rep = r.run_pass("reap")
    finally:
        r.close()
    found = [f for f in rep.findings if f["classification"] == "leftover_console_log"]
    assert [(f["kind"], f["resource"], f["action"], f["result"]) for f in found] == [
        ("console_log", str(inst / f"{LEFT}.console.log"), "log", "logged")]
    assert rep.actions == [] and (inst / f"{LEFT}.console.log").exists()
    assert CONF.reaper.leftover_console_log_action == "log"


def test_reap_removes_the_leftover_and_keeps_the_used_one(host, tmp_path):
    make, inst = host
    r = make(Action.REAP)
    try:
        rep = r.run_pass("reap")
        unfinished = r.state.unfinished(r.kinds.steps_for)
    finally:
        r.close()
    (a,) = rep.actions
    assert (a["kind"], a["classification"], a["result"], a["instance_uuid"]) == (
        "console_log", "leftover_console_log", "done", None)
    assert a["resource"] == toy.LEAK_PREFIX + LEFT
    assert [s for s, _ in a["steps"]] == [toy.STEP]
    assert not (inst / f"{LEFT}.console.log").exists()
    assert (inst / f"{TEST_DOMAIN}.console.log").exists()     # its domain is there
    assert unfinished == []
    assert rep.exit_code == 4


def test_a_journaled_toy_teardown_reads_back_with_its_own_classification(host):
    make, _ = host
    r = make(Action.REAP)
    try:
        plan = r.kinds.plan(*r._load(r._open_libvirt(), r.policy), r.policy, r.clock())
        (t,) = [t for t in plan.teardowns if t.classification == "leftover_console_log"]
        jid = r.state.begin(t, "req-toy", r.clock())
        (entry,) = r.state.unfinished(r.kinds.steps_for)
        assert entry.id == jid
        assert entry.plan == dataclasses.replace(t, findings=())
        assert entry.plan.classification is toy.ToyClassification.LEFTOVER_CONSOLE_LOG
        assert json.loads(state_mod.plan_to_json(t))["classification"] == "leftover_console_log"
        # without the kind installed the entry cannot be read: set aside, never guessed
        with pytest.raises(ValueError):
            state_mod.plan_from_json(state_mod.plan_to_json(t))
    finally:
        r.close()
