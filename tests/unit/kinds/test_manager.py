"""The kinds manager: [reaper] resource_kinds (and the deprecated [network] enabled)
decide what runs; the other installed kinds stay known, so a journal written while a
kind was on reads, and fails at that kind's step, exactly as before; nothing is shared
between two managers."""
from __future__ import annotations

import pytest
from oslo_config import cfg

from reaper import exception
from reaper.kinds.manager import KindManager
from reaper.objects.fields import Action, Classification, ResourceKind
from reaper.objects.plan import TeardownPlan

CONF = cfg.CONF
LEAK = TeardownPlan("vif:feed0001-aa", Classification.LEAKED_VIF, Action.REAP, None, (),
                    False, False, "leaked", vifs=({"prefix": "feed0001-aa"},))


@pytest.fixture
def override(conf):
    """``override(name, value, group)`` through the ``conf`` fixture (undone after)."""
    return lambda name, value, group: conf.config(group=group, **{name: value})


def test_the_network_switch_still_turns_the_network_kind_off(override):
    from reaper.kinds.network import plugin  # noqa: F401  ([network] enabled)
    override("enabled", False, "network")
    mgr = KindManager.from_conf(CONF)
    assert mgr.names() == ["instance", "iscsi", "services"]
    # still known: the steps of a journaled leak teardown, its audit kind
    assert mgr.steps_for(LEAK) == ["unplug_vifs"]
    assert mgr.leak_kind(Classification.LEAKED_VIF) is ResourceKind.VIF
    assert mgr.action_options()[Classification.LEAKED_VIF].name == "leaked_vif_action"
    # but not run: the step fails as an unknown one (retried), it is never skipped
    with pytest.raises(ValueError, match="unknown step unplug_vifs"):
        mgr.run_step(None, "unplug_vifs", LEAK)
    assert Classification.LEAKED_VIF not in mgr.reverifiers()


def test_order_and_names_come_from_the_option(override):
    override("resource_kinds", ["instance", "services", "network"], "reaper")
    assert KindManager.from_conf(CONF).names() == ["instance", "services", "network"]
    override("resource_kinds", ["network", "instance"], "reaper")
    with pytest.raises(exception.KindError, match="must start with 'instance'"):
        KindManager.from_conf(CONF)
    override("resource_kinds", ["instance", "no_such_kind"], "reaper")
    with pytest.raises(exception.KindError, match="no_such_kind"):
        KindManager.from_conf(CONF)


def test_two_managers_share_nothing():
    from reaper.kinds.network.plugin import NetworkKind
    a, b = KindManager.primary_only(CONF), KindManager.primary_only(CONF)
    a.add(NetworkKind(CONF))
    assert a.names() == ["instance", "network"] and b.names() == ["instance"]
    assert b.steps_for(LEAK) == [] and a.steps_for(LEAK) == ["unplug_vifs"]


class _Kind:
    """A kind whose collect runs ``fn`` (and records the thread it ran on)."""

    def __init__(self, name, collectors, fn):
        from reaper.kinds import KindInfo
        self.info = KindInfo(name=name, collectors=collectors)
        self.fn, self.thread = fn, None

    def describe(self):
        return self.info

    def collect(self, reaper, conn):
        import threading
        self.thread = threading.current_thread()
        return self.fn()


def test_the_primary_kind_collects_on_its_own_thread_while_the_others_collect():
    """The domains' collector overlaps the others: the primary kind here waits for the
    second kind to have started (a serial collection would time out and mark the
    primary failed), the others stay on the calling thread, results keep kind order,
    and a kind that raises, on either thread, only marks its own collectors failed."""
    import threading

    from reaper.objects.host import CollectorResult
    started = threading.Event()

    def primary():
        if not started.wait(10):
            raise RuntimeError("the other kinds did not collect meanwhile")
        return {"domain": CollectorResult("domain", True), "instance_dir":
                CollectorResult("instance_dir", True)}

    def second():
        started.set()
        return {"vif": CollectorResult("vif", True)}

    def broken():
        raise OSError("netlink gone")

    kinds = [_Kind("instance", ("domain", "instance_dir"), primary),
             _Kind("network", ("vif",), second), _Kind("iscsi", ("iscsi_session",), broken)]
    mgr = KindManager(kinds)
    got = mgr.collect(None, None)
    assert list(got) == ["domain", "instance_dir", "vif", "iscsi_session"]
    assert [r.ok for r in got.values()] == [True, True, True, False]
    assert got["iscsi_session"].error == "netlink gone"
    assert kinds[0].thread is not threading.current_thread()
    assert kinds[1].thread is threading.current_thread()
    assert kinds[2].thread is threading.current_thread()

    def primary_breaks():
        raise MemoryError("domain XML")
    kinds[0].fn = primary_breaks
    got = mgr.collect(None, None)
    assert [(c, r.ok) for c, r in got.items()] == [
        ("domain", False), ("instance_dir", False), ("vif", True), ("iscsi_session", False)]
