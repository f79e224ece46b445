"""The contract every resource kind of the ``reaper.resource_kinds`` entry points keeps
(reaper/kinds/__init__.py), checked on each of them, the toy kind of the tests
included (registered here through a real entry point, as a third-party kind is).

- ``describe()`` agrees with ``steps()`` (every step named, with its phase) and names
  only registered action options, with their registered defaults;
- ``collect()`` with broken handles (and no handles) returns results, ``ok=False``
  for what it could not read, and never raises;
- ``plan()`` does no I/O: sockets, ``open``, subprocesses and directory listings fail
  while it runs;
- ``run_step()`` on a resource that is already gone succeeds and says so, again and
  again (where a real one is cheap to build: instance, network, the toy kind).
"""
from __future__ import annotations

import builtins
import datetime
import importlib
import importlib.metadata
import os
import socket
import subprocess
import types

import pytest
from oslo_config import cfg

from reaper.kinds import KindInfo, Phase, PlanContext, ResourceKindPlugin
from reaper.kinds.manager import GROUP, KindManager
from reaper.policy import Policy
from reaper.objects.fields import Action, Classification, DirKind
from reaper.objects.host import CollectorResult, Domain, InstanceDir, Inventory
from reaper.objects.nova import BdmRow, InfoCacheRow, InstanceRow, NovaView
from reaper.objects.plan import Plan, TeardownPlan
from reaper.objects.step import StepOutcome, StepResult
from tests.fixtures.toy_kind import plugin as toy
from tests.unit.kinds.network import test_network_unplug as unplug_tests
from tests.unit.kinds.network.test_network_unplug import FakeNetlink, FakeOvs, hybrid_links, item

engine = unplug_tests.engine                    # fixtures, shared
fake_ovs_delete = unplug_tests.fake_ovs_delete

CONF = cfg.CONF
HOST = "kinds-contract-host"
NOW = datetime.datetime(2026, 11, 30, 12, 0, 0)
U = "11111111-2222-3333-4444-555555555555"
V = "22222222-2222-3333-4444-555555555555"
TOY_EP = f"{toy.NAME} = tests.fixtures.toy_kind.plugin:ConsoleLogKind"


def install_entry_point(root, line: str = TOY_EP, dist: str = "reaper_toy_kind") -> None:
    """A distribution with one ``reaper.resource_kinds`` entry point, in ``root``
    (which the caller puts on sys.path): what ``pip install`` of a kind leaves."""
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n{line}\n")
    importlib.invalidate_caches()


@pytest.fixture
def toy_installed(tmp_path, monkeypatch):
    """The toy kind installed for this test only. stevedore keeps the entry points of
    a group for the life of the process (ExtensionManager.ENTRY_POINT_CACHE): the
    group is read again with it, and again without it afterwards."""
    from stevedore import extension
    site = tmp_path / "site"
    install_entry_point(site)
    monkeypatch.syspath_prepend(str(site))
    extension.ExtensionManager.ENTRY_POINT_CACHE.pop(GROUP, None)
    yield
    extension.ExtensionManager.ENTRY_POINT_CACHE.pop(GROUP, None)
    importlib.invalidate_caches()


def installed_names() -> list[str]:
    return sorted(ep.name for ep in importlib.metadata.entry_points(group=GROUP))


NAMES = sorted({*installed_names(), toy.NAME})


@pytest.fixture(params=NAMES)
def kind(request, toy_installed) -> ResourceKindPlugin:
    (k,) = KindManager.from_conf(CONF, names=[request.param]).kinds
    yield k
    k.close()


def test_the_built_in_kinds_are_entry_points_in_the_default_order():
    assert {"instance", "iscsi", "network", "services"} <= set(installed_names())
    assert CONF.reaper.resource_kinds == ["instance", "iscsi", "network", "services"]
    assert KindManager.from_conf(CONF).names() == ["instance", "iscsi", "network", "services"]


def test_the_toy_kind_is_found_through_its_entry_point_only(toy_installed):
    assert toy.NAME in installed_names()
    mgr = KindManager.from_conf(CONF, names=["instance", toy.NAME])
    assert mgr.names() == ["instance", toy.NAME]
    assert type(mgr.kinds[1]).__name__ == "ConsoleLogKind"


# -- describe --------------------------------------------------------------------------

def test_describe_is_consistent(kind):
    info = kind.describe()
    assert isinstance(info, KindInfo) and info.name in NAMES
    assert all(isinstance(c, str) for c in info.collectors)
    assert all(isinstance(p, Phase) for p in info.steps.values())
    for cls, opt in info.actions.items():
        assert isinstance(cls, str), cls            # str values (enums of str)
        assert opt.name in CONF.reaper, f"{opt.name} is not a registered [reaper] option"
        assert CONF.reaper[opt.name] is not None
        registered = CONF._get_opt_info(opt.name, "reaper")["opt"]
        assert registered.default == opt.default, opt.name
        assert opt.default in registered.type.choices, opt.name
    # a leak teardown is acted on as its action option says, and audited as its kind
    assert set(info.leaks) <= set(info.actions)
    assert all(hasattr(k, "value") for k in info.leaks.values())


def _plan(uuid, cls, action, domain=None, dirs=(), **kw) -> TeardownPlan:
    kw.setdefault("finalize_db", False)
    return TeardownPlan(instance_uuid=uuid, classification=cls, action=action,
                        domain_name=domain, dirs=dirs, destroy_disks=True, reason="test", **kw)


def sample_plans() -> list[TeardownPlan]:
    """Teardowns of every shape the built-in and toy kinds make."""
    out = [
        _plan(U, Classification.RECLAIMABLE, Action.RECLAIM, "instance-1", ("/i/u",),
              finalize_db=True, vifs=({"prefix": "feed0001-aa"},), volumes=({"portal": "p"},),
              services=("release_ports", "detach_volumes", "delete_allocations"),
              service_facts={"uuid": U}),
        _plan(U, Classification.EVACUATED, Action.REAP, "instance-1",
              services=("remove_node_allocations", "complete_migration")),
        _plan(U, Classification.EVACUATING, Action.SHUTDOWN, "instance-1",
              vifs=({"prefix": "x"},)),
        _plan(U, Classification.STRANDED_CLAIM, Action.RELEASE),
        _plan(U, Classification.ORPHAN_DIR, Action.REAP, None, ("/i/u",)),
    ]
    for leak in (Classification.LEAKED_VIF, Classification.LEAKED_ISCSI,
                 toy.ToyClassification.LEFTOVER_CONSOLE_LOG):
        out.append(_plan("leak:x", leak, Action.REAP,
                         vifs=({"prefix": "x"},) if leak == "leaked_vif" else (),
                         volumes=({"portal": "p"},) if leak == "leaked_iscsi" else ()))
    return out


def test_steps_are_described_with_their_phase(kind):
    info = kind.describe()
    for plan in sample_plans():
        for phase, step in kind.steps(plan):
            assert info.steps.get(step) == phase, (info.name, step)


def test_leak_teardowns_of_a_kind_run_its_steps(kind):
    info = kind.describe()
    for plan in sample_plans():
        if plan.classification in info.leaks:
            assert kind.steps(plan), f"{info.name}: a {plan.classification} teardown runs nothing"


def test_the_default_kinds_keep_novas_teardown_order():
    mgr = KindManager.from_conf(CONF)
    reclaim, evacuated, shutdown, release, orphan = sample_plans()[:5]
    assert mgr.steps_for(reclaim) == [
        "claim", "destroy_domain", "unplug_vifs", "disconnect_volumes", "delete_files",
        "undefine_domain", "release_ports", "detach_volumes", "delete_allocations",
        "finalize_db"]
    assert mgr.steps_for(evacuated) == ["destroy_domain", "undefine_domain",
                                        "remove_node_allocations", "complete_migration"]
    assert mgr.steps_for(shutdown) == ["power_off"]
    assert mgr.steps_for(release) == ["release_claim"]
    assert mgr.steps_for(orphan) == ["delete_files"]


# -- collect -----------------------------------------------------------------------------

class Broken:
    """A handle whose every use fails, as a dead socket or session does."""

    def __getattr__(self, name):
        raise OSError(f"broken handle: {name}")

    def __call__(self, *a, **kw):
        raise OSError("broken handle")


def fake_reaper(tmp_path, state=None):
    pol = Policy(host=HOST, hypervisor_hostname=HOST,
                 instances_path=str(tmp_path / "missing-instances"))
    from reaper.kinds.instance import libvirt as libvirt_inv
    return types.SimpleNamespace(policy=pol, libvirt_uri="test:///nowhere", state=state,
                                 _parse_cache=libvirt_inv.ParseCache())


def _check_results(kind, res, tmp_path):
    info = kind.describe()
    assert set(res) <= set(info.collectors), (info.name, set(res))
    for key, r in res.items():
        assert isinstance(r, CollectorResult) and r.kind == key


def test_collect_without_handles_never_raises(kind, tmp_path):
    res = kind.collect(fake_reaper(tmp_path), None)
    _check_results(kind, res, tmp_path)


def test_collect_with_broken_handles_fails_softly(kind, tmp_path, monkeypatch, conf):
    """Broken: a closed libvirt connection, handles that fail on every use, iSCSI
    sessions in sysfs and no iscsiadm to read them, an instances_path that is not a
    directory."""
    import libvirt
    for attr in ("handles", "clients"):
        if hasattr(kind, attr):
            setattr(kind, attr, Broken())
    conn = libvirt.open("test:///default")
    conn.close()
    (tmp_path / "not-a-dir").write_text("")
    (tmp_path / "sys" / "class" / "iscsi_session" / "session1").mkdir(parents=True)
    conf.config(group="iscsi", sysfs_root=str(tmp_path / "sys"),
                iscsiadm="reaper-contract-no-such-iscsiadm")
    r = fake_reaper(tmp_path, state=Broken())
    r.policy = Policy(host=HOST, hypervisor_hostname=HOST,
                      instances_path=str(tmp_path / "not-a-dir"))
    res = kind.collect(r, conn)
    if hasattr(kind, "handles") or hasattr(kind, "clients"):
        kind.close()            # never raises, even on broken handles
    _check_results(kind, res, tmp_path)
    assert set(res) == set(kind.describe().collectors)
    assert all(not r.ok or r.error for r in res.values()), res


# -- plan --------------------------------------------------------------------------------

def _inventory(tmp_path) -> Inventory:
    dom = Domain(uuid=U, name="instance-00000001", state="running", nova_owned=True,
                 nova_uuid=U)
    gone = InstanceDir(name=V, uuid=V, kind=DirKind.INSTANCE, path=f"/i/{V}",
                       size_bytes=1, mtime=0.0)
    extra = {
        "vif": CollectorResult("vif", True, ()),
        "ovs_port": CollectorResult("ovs_port", True, ()),
        "iscsi_session": CollectorResult("iscsi_session", True, ()),
        toy.NAME: CollectorResult(toy.NAME, True, (
            toy.ConsoleLog(V, str(tmp_path / f"{V}.console.log")),)),
    }
    return Inventory(CollectorResult("domain", True, (dom,)),
                     CollectorResult("instance_dir", True, (gone,)), "ext4", extra)


def _view() -> NovaView:
    deleted = NOW - datetime.timedelta(days=2)
    return NovaView(ok=True, instances={
        U: InstanceRow(1, U, HOST, HOST, "active", None, 1, 0, None),
        V: InstanceRow(2, V, HOST, HOST, "soft-delete", None, 4, 0, deleted)},
        bdms=(BdmRow(1, V, "vol", "volume", "volume", "/dev/vdb", True,
                     '{"driver_volume_type": "iscsi", "data": {}}', None),),
        info_caches={V: InfoCacheRow(V, "[]")})


def _no_io(*a, **kw):
    raise AssertionError("plan() did I/O")


def test_plan_is_pure(kind, tmp_path):
    from reaper.kinds.manager import default_actions
    pol = Policy(host=HOST, hypervisor_hostname=HOST, instances_path=str(tmp_path),
                 actions={**default_actions(), **{c: Action.REAP for c in (
                     Classification.LEAKED_VIF, Classification.LEAKED_ISCSI,
                     toy.ToyClassification.LEFTOVER_CONSOLE_LOG)}},
                 reclaim_instance_interval=3600)
    inv, view = _inventory(tmp_path), _view()
    base = KindManager.primary_only(CONF).plan(inv, view, pol, NOW)
    ctx = PlanContext(inv, view, pol, NOW, base if kind.describe().name != "instance"
                      else Plan((), ()))
    with pytest.MonkeyPatch.context() as mp:
        for mod, name in ((socket, "socket"), (socket, "create_connection"),
                          (builtins, "open"), (subprocess, "Popen"), (os, "listdir"),
                          (os, "scandir"), (os, "stat"), (os, "lstat")):
            mp.setattr(mod, name, _no_io)
        plan = kind.plan(ctx)
    assert isinstance(plan, Plan)
    # it adds to what the kinds before it planned, it never drops any of it
    assert {f.key for f in ctx.plan.findings} <= {f.key for f in plan.findings}
    assert {t.instance_uuid for t in ctx.plan.teardowns} <= {
        t.instance_uuid for t in plan.teardowns}


# -- run_step on what is already gone ------------------------------------------------------

def test_instance_steps_on_a_gone_domain_and_gone_files(tmp_path):
    import libvirt

    from reaper.executor import teardown
    from reaper.kinds.instance.plugin import InstanceKind
    conn = libvirt.open("test:///default")
    try:
        pol = Policy(host=HOST, hypervisor_hostname=HOST, instances_path=str(tmp_path))
        kind = InstanceKind(CONF)
        ctx = teardown.Context(conn=conn, engine=None, state=None, policy=pol,
                               clock=lambda: NOW, kinds=KindManager([kind]))
        plan = TeardownPlan(U, Classification.RUNNING_DELETED, Action.REAP,
                            "instance-gone", (str(tmp_path / U),), True, False, "gone")
        for _ in range(2):
            for step in ("destroy_domain", "undefine_domain"):
                assert kind.run_step(ctx, step, plan) == StepResult(StepOutcome.ABSENT,
                                                                    "no such domain")
            kind.run_step(ctx, "delete_files", plan)
        assert not (tmp_path / U).exists()
    finally:
        conn.close()


@pytest.mark.usefixtures("fake_ovs_delete")
def test_network_step_on_gone_vifs(tmp_path, engine):
    from reaper.executor import teardown
    from reaper.kinds.network.plugin import NetworkKind
    from reaper.kinds.network.unplug import NetworkHandles
    eng = engine
    kind = NetworkKind(CONF, NetworkHandles(
        FakeNetlink([]), FakeOvs(), domains=lambda conn: CollectorResult("domain", True, ())))
    pol = Policy(host=HOST, hypervisor_hostname=HOST, instances_path=str(tmp_path))
    ctx = teardown.Context(conn=object(), engine=eng, state=None, policy=pol,
                           clock=lambda: NOW, kinds=KindManager([kind]))
    leak = TeardownPlan("vif:feed0001-aa", Classification.LEAKED_VIF, Action.REAP, None, (),
                        False, False, "leaked", vifs=(item(hybrid_links()),))
    for _ in range(2):
        res = kind.run_step(ctx, "unplug_vifs", leak)
        assert res.outcome is StepOutcome.ABSENT and str(res).endswith("already gone")
    eng.dispose()


def test_toy_step_on_a_gone_file(tmp_path, toy_installed):
    import libvirt

    from reaper.executor import teardown
    (kind,) = KindManager.from_conf(CONF, names=[toy.NAME]).kinds
    conn = libvirt.open("test:///default")
    try:
        pol = Policy(host=HOST, hypervisor_hostname=HOST, instances_path=str(tmp_path))
        ctx = teardown.Context(conn=conn, engine=None, state=None, policy=pol,
                               clock=lambda: NOW, kinds=KindManager([kind]))
        plan = TeardownPlan(toy.LEAK_PREFIX + V, toy.ToyClassification.LEFTOVER_CONSOLE_LOG,
                            Action.REAP, None, (), False, False, "leftover")
        for _ in range(2):
            res = kind.run_step(ctx, toy.STEP, plan)
            assert res.outcome is StepOutcome.ABSENT and str(res).endswith("already gone")
    finally:
        conn.close()
