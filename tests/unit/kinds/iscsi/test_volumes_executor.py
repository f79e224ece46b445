"""The disconnect step's compare-and-act, on the simulated initiator with os-brick faked.

The initiator is simulated (no real session can log in on a test host); here os-brick's connector
and LinuxSCSI are small fakes acting on the simulator, so the step's decisions can be
checked one by one. The real os-brick runs against the simulator in
tests/functional/test_iscsi_reaper.py.
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess

import pytest
import sqlalchemy as sa

from reaper import exception
from reaper.executor import teardown
from reaper.kinds.iscsi import disconnect as vx
from reaper.kinds.iscsi import collector as iscsi
from reaper.nova import schema
from reaper.kinds.iscsi import rules as vp
from reaper.policy import Policy, default_actions
from reaper.objects.fields import Action, Classification
from reaper.objects.host import CollectorResult, Domain, DomainDisk
from reaper.objects.plan import TeardownPlan
from tests import iscsi_sim
from tests.fixtures import novadb

from oslo_config import cfg

from reaper.kinds.instance.plugin import InstanceKind
from reaper.kinds.iscsi.plugin import IscsiKind
from reaper.kinds.manager import KindManager

CONF = cfg.CONF


def _disconnect(ctx, plan) -> str:
    """The step as the executor runs it: through the iscsi kind; the text it journals."""
    return str(ctx.kinds.run_step(ctx, "disconnect_volumes", plan))

HOST = "cmp-1"
P1 = "10.0.0.1:3260"
IQN = "iqn.2010-10.org.openstack:volume-1"
IQN2 = "iqn.2010-10.org.openstack:volume-2"
NOW = datetime.datetime(2026, 11, 23, 12, 0, 0)


class FakeConnector:
    """os-brick's ISCSIConnector.disconnect_volume, acted out on the simulator."""

    def __init__(self, sim, calls, fail=None):
        self.sim, self.calls, self.fail = sim, calls, fail

    def disconnect_volume(self, props, device_info, force=False, ignore_errors=False):
        self.calls.append(("disconnect_volume", props, device_info))
        if self.fail:
            raise RuntimeError(self.fail)
        targets = list(zip(props.get("target_portals", [props["target_portal"]]),
                           props.get("target_iqns", [props["target_iqn"]]),
                           props.get("target_luns", [props["target_lun"]]), strict=True))
        for portal, iqn, lun in targets:
            for s in self.sim.sessions():
                if (f"{s['address']}:{s['port']}", s["iqn"]) == (portal, iqn):
                    devs = self.sim.devices(s["sid"])
                    if lun in devs:
                        self.sim.delete_device(devs[lun])
                    if not self.sim.devices(s["sid"]) and self.sim.iscsid_running():
                        self.sim.logout(s["sid"])   # iscsid down: iscsiadm exits 21
            for path, rec in self.sim.node_records():
                if rec["node.name"] == iqn and not any(s["iqn"] == iqn
                                                       for s in self.sim.sessions()):
                    self.sim.node_delete(path)


class FakeLinuxSCSI:
    def __init__(self, sim, calls):
        self.sim, self.calls = sim, calls

    def remove_connection(self, names, force=False, exc=None, path_used=None,
                          was_multipath=False):
        self.calls.append(("remove_connection", list(names), path_used))
        for n in names:
            self.sim.delete_device(n)


@pytest.fixture
def sim(tmp_path):
    s = iscsi_sim.SimHost(str(tmp_path / "host")).init()
    s.add_target(IQN, [P1], [0, 1])
    s.add_target(IQN2, [P1], [0])
    return s


@pytest.fixture
def engine(tmp_path):
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'nova.sqlite'}")
    schema.create_all(eng)
    yield eng
    eng.dispose()


class World:
    def __init__(self, sim, engine, tmp_path):
        self.sim, self.engine = sim, engine
        self.calls: list = []
        self.domains: list[Domain] = []
        self.fail = None
        self.lock_path = str(tmp_path / "locks")
        env = iscsi_sim.env(sim.root)
        self.handles = vx.Handles(
            collect=lambda: iscsi.collect(sim.sys, sim.dev, env=env),
            list_domains=lambda conn: CollectorResult("domain", True, tuple(self.domains)),
            connector=lambda: FakeConnector(sim, self.calls, self.fail),
            linuxscsi=lambda: FakeLinuxSCSI(sim, self.calls),
            lock_path=lambda: self.lock_path,
            logout_session=self.logout_session)
        self.state = None

    def logout_session(self, sid):
        """The simulator's own iscsiadm, as the real step runs it."""
        self.calls.append(("logout_session", sid))
        r = subprocess.run(["iscsiadm", "-m", "session", "-r", str(sid), "-u"],
                           capture_output=True, text=True, env=iscsi_sim.env(self.sim.root))
        return r.stderr.strip()

    def ctx(self):
        pol = Policy(host=HOST, hypervisor_hostname=HOST, instances_path="/x",
                     actions=default_actions())
        return teardown.Context(conn=object(), engine=self.engine, state=self.state,
                                policy=pol, clock=lambda: NOW,
                                kinds=KindManager([InstanceKind(CONF),
                                                   IscsiKind(CONF, self.handles)]))

    def plan(self):
        """What the planner makes of the simulated host right now (leaks reaped)."""
        res = iscsi.collect(self.sim.sys, self.sim.dev, env=iscsi_sim.env(self.sim.root))
        from reaper import planner
        from reaper.objects.host import Inventory
        from reaper.objects.nova import NovaView
        inv = Inventory(CollectorResult("domain", True, tuple(self.domains)),
                        CollectorResult("instance_dir", True, ()),
                        extra={"iscsi_session": res})
        pol = Policy(host=HOST, hypervisor_hostname=HOST, instances_path="/x",
                     actions=default_actions() | {Classification.LEAKED_ISCSI: Action.REAP})
        view = NovaView(ok=True)
        ctx = planner.PlanContext(inv, view, pol, NOW, planner.Plan((), ()))
        return vp.extend(ctx)


@pytest.fixture
def world(sim, engine, tmp_path):
    return World(sim, engine, tmp_path)


def leak_plan(world, resource_part: str) -> TeardownPlan:
    (t,) = [t for t in world.plan().teardowns if resource_part in t.instance_uuid]
    return t


def test_leak_is_disconnected_through_os_brick_without_secrets(world, sim):
    sim.connect(P1, IQN2, username="u", password="sysfs-secret")
    t = leak_plan(world, IQN2)
    detail = _disconnect(world.ctx(), t)
    assert "disconnected through os-brick" in detail and "logged out" in detail
    ((_, props, info),) = world.calls
    assert props == {"target_portal": P1, "target_iqn": IQN2, "target_lun": 0,
                     "target_portals": [P1], "target_iqns": [IQN2], "target_luns": [0],
                     "device_path": "/dev/sda"}
    assert info == {"path": "/dev/sda"}
    assert sim.sessions() == [] and sim.node_records() == []


def test_leak_now_in_a_domain_is_aborted(world, sim):
    sim.connect(P1, IQN2)
    t = leak_plan(world, IQN2)
    world.domains.append(Domain("u1", "instance-1", "running", True, "u1",
                                disks=(DomainDisk("vdb", "disk", "block", "/dev/sda"),)))
    with pytest.raises(exception.Aborted, match="no longer leaked: .*domain instance-1"):
        _disconnect(world.ctx(), t)
    assert world.calls == [] and sim.devices(1) == {0: "sda"}


def test_leak_now_open_is_aborted(world, sim):
    sim.connect(P1, IQN2)
    t = leak_plan(world, IQN2)
    fd = os.open(os.path.join(sim.dev, "sda"), os.O_RDONLY)
    try:
        with pytest.raises(exception.Aborted, match="open by pid"):
            _disconnect(world.ctx(), t)
    finally:
        os.close(fd)
    assert world.calls == []


def test_leak_is_not_touched_while_an_attach_may_be_in_progress(world, sim, engine):
    sim.connect(P1, IQN2)
    t = leak_plan(world, IQN2)
    u = novadb.add_instance(engine, host=HOST)["uuid"]
    novadb.add_bdm(engine, u, connection_info=None)
    with pytest.raises(exception.Aborted, match="no connection_info yet"):
        _disconnect(world.ctx(), t)
    assert world.calls == []


def test_leak_named_by_a_new_bdm_is_aborted(world, sim, engine):
    sim.connect(P1, IQN2)
    t = leak_plan(world, IQN2)
    u = novadb.add_instance(engine, host=HOST)["uuid"]
    novadb.add_bdm(engine, u, connection_info=novadb.iscsi_connection_info(
        "v", target_portal=P1, target_iqn=IQN2, target_lun=0))
    with pytest.raises(exception.Aborted, match="bdm"):
        _disconnect(world.ctx(), t)


def test_other_lun_named_by_a_bdm_without_device_keeps_the_session(world, sim, engine):
    sid = sim.connect(P1, IQN, luns=[0])     # LUN 1 has no device here
    t = leak_plan(world, IQN)
    u = novadb.add_instance(engine, host=HOST)["uuid"]
    novadb.add_bdm(engine, u, connection_info=novadb.iscsi_connection_info(
        "v", target_portal=P1, target_iqn=IQN, target_lun=1))
    detail = _disconnect(world.ctx(), t)
    assert "session kept" in detail
    assert [c[0] for c in world.calls] == ["remove_connection"]
    assert sim.devices(sid) == {} and len(sim.sessions()) == 1


def test_reused_device_name_is_not_removed(world, sim):
    sid = sim.connect(P1, IQN2)
    t = leak_plan(world, IQN2)
    sim.delete_device("sda")                 # gone meanwhile; the name is reused:
    sid2 = sim.connect(P1, IQN, luns=[0])
    assert sim.devices(sid2) == {0: "sda"}
    u_dom = Domain("u1", "instance-1", "running", True, "u1",
                   disks=(DomainDisk("vdb", "disk", "block", "/dev/sda"),))
    world.domains.append(u_dom)
    detail = _disconnect(world.ctx(), t)
    assert "removed" not in detail and "logged out" in detail
    assert sim.devices(sid2) == {0: "sda"}
    assert all(s["sid"] != sid for s in sim.sessions())     # the empty session went


def test_teardown_item_in_use_by_another_domain_is_kept(world, sim):
    sim.connect(P1, IQN2)
    item = {"volume_id": "v1", "origin": "domain_xml", "device_path": "/dev/sda",
            "multipath": False, "dm": None, "keep": None,
            "targets": [{"portal": P1, "iqn": IQN2, "session_portal": P1, "session_iqn": IQN2,
                         "sid": "1", "lun": 0, "device": "sda", "hctl": "2:0:0:0",
                         "wwid": None, "logout": True}]}
    t = TeardownPlan("c1", Classification.EVACUATED, Action.REAP, "instance-c", (), True,
                     False, "evacuated", volumes=(item,))
    world.domains.append(Domain("u1", "instance-1", "running", True, "u1",
                                disks=(DomainDisk("vdb", "disk", "block", "/dev/sda"),)))
    world.domains.append(Domain("c1", "instance-c", "shutoff", True, "c1",
                                disks=(DomainDisk("vdb", "disk", "block", "/dev/sda"),)))
    detail = _disconnect(world.ctx(), t)
    assert detail == "volume v1: kept, in use: " \
                     f"{P1} {IQN2} lun 0: domain instance-1"
    assert world.calls == []


def test_errors_are_recorded_on_a_delete_with_disks_and_raised_otherwise(world, sim):
    sim.connect(P1, IQN2)
    world.fail = "iscsiadm exploded"
    item = leak_plan(world, IQN2).volumes[0] | {"volume_id": "v1"}
    with_disks = TeardownPlan("c1", Classification.RUNNING_DELETED, Action.REAP, "i-c", (),
                              True, False, "deleted", volumes=(item,))
    detail = _disconnect(world.ctx(), with_disks)
    assert detail == "volume v1: FAILED, ignored as on a delete with disks: iscsiadm exploded"
    shared = TeardownPlan("c1", Classification.EVACUATED, Action.REAP, "i-c", (),
                          False, False, "evacuated, shared storage", volumes=(item,))
    with pytest.raises(exception.VolumeError, match="iscsiadm exploded"):
        _disconnect(world.ctx(), shared)
    leak = leak_plan(world, IQN2)
    with pytest.raises(exception.VolumeError, match="iscsiadm exploded"):
        _disconnect(world.ctx(), leak)


def test_shared_item_is_kept_without_touching_anything(world, sim):
    item = {"volume_id": "v1", "keep": "shared: still used by domain instance-1 (multi-attach)",
            "targets": []}
    t = TeardownPlan("c1", Classification.EVACUATED, Action.REAP, "i-c", (), True, False,
                     "x", volumes=(item,))
    assert _disconnect(world.ctx(), t) == \
        "volume v1: kept: shared: still used by domain instance-1 (multi-attach)"


def test_no_lock_path_is_an_error(world, sim):
    sim.connect(P1, IQN2)
    world.lock_path = None
    with pytest.raises(exception.VolumeError, match="lock_path"):
        _disconnect(world.ctx(), leak_plan(world, IQN2))


def test_reread_bdms(engine):
    mine = novadb.add_instance(engine, host=HOST)["uuid"]
    coming = novadb.add_instance(engine, host="cmp-9")["uuid"]
    novadb.add_migration(engine, coming, "cmp-9", HOST, "running", "live-migration")
    elsewhere = novadb.add_instance(engine, host="cmp-9")["uuid"]
    gone = novadb.add_instance(engine, host=HOST, deleted=True)["uuid"]
    keep = [novadb.add_bdm(engine, mine)["id"], novadb.add_bdm(engine, coming)["id"]]
    novadb.add_bdm(engine, mine, deleted=True)
    novadb.add_bdm(engine, mine, source_type="image", destination_type="local",
                   device_name="/dev/vda")
    novadb.add_bdm(engine, elsewhere)
    novadb.add_bdm(engine, gone)
    rows = vx.reread_bdms(engine, HOST)
    assert [r[0] for r in rows] == keep
    assert json.loads(rows[0][3])["driver_volume_type"] == "iscsi"


# --------------------------------------------------------------------------
# Partitions and the host's own sessions at act time (issue 9, item 12)
# --------------------------------------------------------------------------

def test_leak_whose_partition_is_now_open_is_aborted(world, sim):
    sim.connect(P1, IQN2)
    sim.add_partition("sda", 1)
    t = leak_plan(world, IQN2)
    fd = os.open(os.path.join(sim.dev, "sda1"), os.O_RDONLY)
    try:
        with pytest.raises(exception.Aborted, match="partition sda1 open by pid"):
            _disconnect(world.ctx(), t)
    finally:
        os.close(fd)
    assert world.calls == []


def test_leak_whose_partition_got_an_lvm_map_is_aborted(world, sim):
    sim.connect(P1, IQN2)
    sim.add_partition("sda", 1)
    t = leak_plan(world, IQN2)
    sim.add_dm(["sda1"], "vg-lv", "LVM-1", lvm=("vg", "lv"))
    with pytest.raises(exception.Aborted, match=r"partition sda1 held by dm-0 \(LVM-1\)"):
        _disconnect(world.ctx(), t)


def test_leak_of_a_target_the_firmware_booted_from_is_aborted(world, sim):
    sim.connect(P1, IQN2)
    t = leak_plan(world, IQN2)
    sim.set_ibft(P1, IQN2)
    with pytest.raises(exception.Aborted, match="the host booted from target"):
        _disconnect(world.ctx(), t)
    assert world.calls == [] and len(sim.sessions()) == 1


# --------------------------------------------------------------------------
# Sessions without a node record (issue 9, item 14)
# --------------------------------------------------------------------------

@pytest.fixture
def state(tmp_path):
    from reaper.state import StateDB
    db = StateDB(str(tmp_path / "state"))
    yield db
    db.close()


def test_props_always_name_their_targets_explicitly(world, sim):
    """So that os-brick never looks a single-path target up in the discovery database
    (empty for a session without a node record: it would then skip the cleanup)."""
    sim.login(P1, IQN2)
    detail = _disconnect(world.ctx(), leak_plan(world, IQN2))
    ((_, props, _),) = [c for c in world.calls if c[0] == "disconnect_volume"]
    assert (props["target_portals"], props["target_iqns"], props["target_luns"]) == \
        ([P1], [IQN2], [0])
    assert "logged out" in detail and sim.sessions() == []


def test_nodeless_session_left_by_os_brick_is_logged_out_by_its_id(world, sim):
    sid = sim.login(P1, IQN2)
    t = leak_plan(world, IQN2)
    assert t.volumes[0]["targets"][0]["node"] is False
    world.fail = "iscsiadm -m discoverydb: exit 21"        # os-brick gave up
    detail = _disconnect(world.ctx(), t)
    assert [c[0] for c in world.calls] == ["disconnect_volume", "remove_connection",
                                           "logout_session"]
    assert f"logged out by session id the session(s) without a node record ({sid})" in detail
    assert sim.sessions() == []


def test_os_brick_failure_with_a_node_record_still_fails_the_step(world, sim):
    sim.connect(P1, IQN2)
    world.fail = "flush failed"
    with pytest.raises(exception.VolumeError, match="flush failed"):
        _disconnect(world.ctx(), leak_plan(world, IQN2))
    assert [c[0] for c in world.calls] == ["disconnect_volume"]


def test_nodeless_session_that_stays_logged_in_needs_an_operator(world, sim, state):
    sid = sim.login(P1, IQN2)
    other = sim.login(P1, IQN, luns=[0])
    world.state = state
    t = leak_plan(world, IQN2)
    sim.set_iscsid(False)
    with pytest.raises(exception.Aborted, match=f"needs an operator: session {sid} .* "
                                               f"iscsiadm -m session -r {sid} -u"):
        _disconnect(world.ctx(), t)
    assert sim.devices(sid) == {} and len(sim.sessions()) == 2
    (note,) = vx.operator_notes(state)
    assert (note.portal, note.iqn, note.sid, note.since) == (P1, IQN2, str(sid),
                                                             NOW.isoformat())
    assert "No matching sessions found" in note.reason
    # the planner now reports it and plans nothing for it; the other leak still goes
    res = iscsi.collect(sim.sys, sim.dev, env=iscsi_sim.env(sim.root))
    from reaper import planner
    from reaper.objects.host import Inventory
    from reaper.objects.nova import NovaView
    inv = Inventory(CollectorResult("domain", True, ()), CollectorResult("instance_dir", True, ()),
                    extra={"iscsi_session": CollectorResult(
                        "iscsi_session", True, res.items + vx.operator_notes(state))})
    pol = Policy(host=HOST, hypervisor_hostname=HOST, instances_path="/x",
                 actions=default_actions() | {Classification.LEAKED_ISCSI: Action.REAP})
    plan = vp.extend(planner.PlanContext(inv, NovaView(ok=True), pol, NOW,
                                         planner.Plan((), ())))
    acts = {f.resource: f.action for f in plan.findings}
    mine = f"{P1} {IQN} lun 0 ({sim.devices(other)[0]})"
    assert acts == {f"{P1} {IQN2} (no LUN)": Action.LOG, mine: Action.REAP}
    assert [t.instance_uuid for t in plan.teardowns] == [mine]
    # a note of a session that is gone is dropped when the next one is written
    sim.set_iscsid(True)
    sim.logout(sid)
    sim.set_iscsid(False)
    t2 = leak_plan(world, IQN)
    with pytest.raises(exception.Aborted, match="needs an operator"):
        _disconnect(world.ctx(), t2)
    assert [n.sid for n in vx.operator_notes(state)] == [str(other)]


def test_operator_notes_survive_garbage():
    class S:
        def __init__(self, v):
            self.v = v

        def get_flag(self, name):
            return self.v
    assert vx.operator_notes(None) == ()
    assert vx.operator_notes(S("{not json")) == ()
    assert vx.operator_notes(S('[{"portal": 1}]')) == ()
    assert vx.operator_notes(S(None)) == ()


def test_nodeless_session_that_got_a_new_lun_meanwhile_is_kept(world, sim, state):
    sid = sim.login(P1, IQN, luns=[0])
    world.state = state
    t = leak_plan(world, IQN)

    class Racing(FakeConnector):
        def disconnect_volume(self, props, device_info, force=False, ignore_errors=False):
            self.calls.append(("disconnect_volume", props, device_info))
            self.sim.delete_device(self.sim.devices(sid)[0])
            self.sim.add_lun(sid, 1)            # nova-compute attached LUN 1 meanwhile

    world.handles.connector = lambda: Racing(sim, world.calls)
    detail = _disconnect(world.ctx(), t)
    assert f"kept session(s) {sid}: a LUN appeared on it meanwhile" in detail
    assert [c[0] for c in world.calls] == ["disconnect_volume"]
    assert list(sim.devices(sid)) == [1] and vx.operator_notes(state) == ()
