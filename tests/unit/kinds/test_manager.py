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
