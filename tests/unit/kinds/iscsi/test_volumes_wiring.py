"""volume_wiring.enable plugs iSCSI into a Reaper; one in-process audit pass shows it.

The initiator is simulated (tests/iscsi_sim: no real session can log in on a test host); the pass
reads it through the [iscsi] options and PATH. Audit only: nothing is disconnected
(disconnects run against the real os-brick in tests/functional/test_iscsi_reaper.py).
"""
from __future__ import annotations

import dataclasses

import pytest
import sqlalchemy as sa
from oslo_config import cfg

from reaper import audit as audit_mod
from reaper import reconcile
from reaper.kinds.iscsi import plugin as volume_wiring
from reaper import policy as policy_mod
from reaper import state as state_mod
from reaper.nova import schema
from reaper.objects.fields import Action, Classification, ResourceKind
from tests import iscsi_sim
from tests.fixtures import novadb

CONF = cfg.CONF
HOST = "wiring-host"
P1 = "10.0.0.1:3260"


@pytest.fixture
def sim(tmp_path, monkeypatch, conf):
    s = iscsi_sim.SimHost(str(tmp_path / "iscsi")).init()
    for k, v in iscsi_sim.env(s.root).items():
        if k in ("PATH", "ISCSI_SIM_ROOT"):
            monkeypatch.setenv(k, v)
    conf.config(group="iscsi", sysfs_root=s.sys, dev_root=s.dev)
    return s


def make_reaper(tmp_path, url, conn) -> reconcile.Reaper:
    pol = policy_mod.Policy(host=HOST, hypervisor_hostname=HOST,
                            instances_path=str(tmp_path / "instances"),
                            actions=policy_mod.default_actions(), grace_observations=1,
                            grace_seconds=0, instances_path_shared="false")
    (tmp_path / "instances").mkdir(exist_ok=True)
    return reconcile.Reaper(policy=pol, libvirt_uri="test:///default",
                            engine=sa.create_engine(url),
                            state=state_mod.StateDB(str(tmp_path / "state")),
                            audit=audit_mod.AuditLog(str(tmp_path / "audit.log"), HOST),
                            connect=lambda: conn)


def test_options_and_defaults():
    assert policy_mod.default_actions()[Classification.LEAKED_ISCSI] is Action.LOG
    assert CONF.reaper.leaked_iscsi_action == "log"
    from reaper.conf import opts
    groups = dict(opts.list_opts())
    assert [o.dest for o in groups["iscsi"]] == ["sysfs_root", "dev_root", "iscsiadm",
                                                 "iscsiadm_timeout"]
    assert "leaked_iscsi_action" in [o.dest for o in groups["reaper"]]
    # [os_brick] is os-brick's own namespace in the sample generator's configuration
    from tests.unit.conf.test_conf_layout import generator_namespaces
    assert "os_brick" in generator_namespaces()


def test_enable_registers_every_part(tmp_path, conf):
    r = make_reaper(tmp_path, f"sqlite:///{tmp_path / 'n.sqlite'}", None)
    r.policy = dataclasses.replace(r.policy, actions={})
    conf.config(group="reaper", leaked_iscsi_action="reap")
    volume_wiring.enable(r)
    kind = r.kinds.get("iscsi")
    assert r.kinds.names() == ["instance", "iscsi"] and kind.handles is not None
    assert kind.describe().collectors == ("iscsi_session",)
    assert r.kinds.leak_kind(Classification.LEAKED_ISCSI) is ResourceKind.ISCSI_SESSION
    assert Classification.LEAKED_ISCSI in r.kinds.reverifiers()
    assert r.kinds.owner_of("disconnect_volumes") is kind
    assert r.policy.actions[Classification.LEAKED_ISCSI] is Action.REAP
    volume_wiring.enable(r)                 # idempotent
    assert r.kinds.names() == ["instance", "iscsi"]
    r.close()


def test_audit_pass_reports_leaks_and_keeps_used_sessions(tmp_path, sim):
    import libvirt
    url = f"sqlite:///{tmp_path / 'nova.sqlite'}"
    eng = sa.create_engine(url)
    schema.create_all(eng)
    novadb.add_compute_node(eng, HOST)
    live = novadb.add_instance(eng, host=HOST)["uuid"]
    used, leaked = "iqn.2010-10.org.openstack:volume-used", "iqn.2010-10.org.openstack:volume-gone"
    sim.add_target(used, [P1], [1])
    sim.add_target(leaked, [P1], [0])
    sim.connect(P1, used)
    sim.connect(P1, leaked)
    novadb.add_bdm(eng, live, connection_info=novadb.iscsi_connection_info(
        "v", target_portal=P1, target_iqn=used, target_lun=1))
    conn = libvirt.open("test:///default")
    r = volume_wiring.enable(make_reaper(tmp_path, url, conn))
    try:
        rep = r.run_pass("audit")
    finally:
        r.close()
        conn.close()
        eng.dispose()
    found = [f for f in rep.findings if f["classification"] == "leaked_iscsi"]
    assert [(f["kind"], f["resource"], f["action"], f["result"]) for f in found] == [
        ("iscsi_session", f"{P1} {leaked} lun 0 (sdb)", "log", "logged")]
    assert rep.exit_code == 3 and rep.actions == []
    assert len(sim.sessions()) == 2
    assert not [c for c in sim.commands("iscsiadm") if "--logout" in c["argv"]]


def test_observation_guard_holds_a_leak_back(tmp_path, sim):
    import libvirt
    url = f"sqlite:///{tmp_path / 'nova.sqlite'}"
    eng = sa.create_engine(url)
    schema.create_all(eng)
    novadb.add_compute_node(eng, HOST)
    novadb.add_instance(eng, host=HOST)
    sim.add_target("iqn.x:gone", [P1], [0])
    sim.connect(P1, "iqn.x:gone")
    conn = libvirt.open("test:///default")
    r = volume_wiring.enable(make_reaper(tmp_path, url, conn))
    r.policy = dataclasses.replace(r.policy, grace_observations=2, grace_seconds=0, actions={
        **r.policy.actions, Classification.LEAKED_ISCSI: Action.REAP})
    try:
        rep = r.run_pass("reap")
    finally:
        r.close()
        conn.close()
        eng.dispose()
    (f,) = [f for f in rep.findings if f["classification"] == "leaked_iscsi"]
    assert f["action"] == "reap" and f["result"] == "waiting_grace"
    assert rep.actions == [] and len(sim.sessions()) == 1


def test_the_collector_adds_the_operator_notes_of_the_state_db(tmp_path, sim):
    """Sessions the disconnect step could not log out (kept in the state DB) reach the
    planner with the host's iSCSI state, so they are reported rather than retried."""
    import json

    from reaper.kinds.iscsi import disconnect as vol_exec
    from reaper.kinds.iscsi.objects import IscsiOperatorNote

    class R:
        state = state_mod.StateDB(str(tmp_path / "state"))
    try:
        assert volume_wiring.collect(R).items == ()
        R.state.set_flag(vol_exec.NOTE_FLAG, json.dumps(
            [{"portal": P1, "iqn": "iqn.x:y", "sid": "3", "reason": "r", "since": "t"}]),
            __import__("datetime").datetime(2026, 1, 1))
        res = volume_wiring.collect(R)
        assert res.ok and res.items == (IscsiOperatorNote(P1, "iqn.x:y", "3", "r", "t"),)
    finally:
        R.state.close()
