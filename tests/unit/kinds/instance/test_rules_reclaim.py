"""Stranded reclaim claims, evacuations in progress and the node identity, as pure
rules (planner, reverify, guards), table by table, without libvirt or a DB."""
from __future__ import annotations

import dataclasses

import pytest

from reaper import guards, planner
from reaper.policy import default_actions
from reaper.objects.fields import Action, Classification, DirKind, ResourceKind
from reaper.objects.host import CollectorResult, Inventory
from reaper.objects.nova import ClaimMarker, ComputeNodeRow, NovaView
from reaper.objects.plan import TeardownPlan
from tests.unit.engine.test_planner import (
    HOST, NOW, OLD, OTHER, RECENT, ROOT, U, domain, idir, mig, policy, row,
)

MINE = f"{HOST}:2026-11-20T10:00:00:req-lost"
THEIRS = f"{OTHER}:2026-11-20T10:00:00:req-other"


def claimed(deleted_at=OLD, host=HOST):
    return row(host=host, vm_state="soft-delete", task_state="deleting", deleted_at=deleted_at)


def plan_of(domains=(), dirs=(), rows=(), migs=(), markers=None, journaled=(), dom_ok=True,
            **pol):
    inv = Inventory(CollectorResult("domain", dom_ok, tuple(domains),
                                    None if dom_ok else "libvirt down"),
                    CollectorResult("instance_dir", True, tuple(dirs)), instances_fs_type="ext4")
    view = NovaView(ok=True, instances={r.uuid: r for r in rows}, migrations=tuple(migs),
                    claim_markers=markers or {})
    return planner.build_plan(inv, view, policy(**pol), NOW, journaled=frozenset(journaled))


# --------------------------------------------------------------------------
# the claim marker
# --------------------------------------------------------------------------

@pytest.mark.parametrize("value,parsed", [
    (MINE, ClaimMarker(HOST, "2026-11-20T10:00:00", "req-lost")),
    ("h.example.org:2026-11-20T10:00:00:req-1", ClaimMarker("h.example.org",
                                                              "2026-11-20T10:00:00", "req-1")),
    ("", None), (None, None), ("justahost", None), ("host:time", None), (":t:p", None),
    ("h::p", None), ("h:t:", None),
], ids=["ours", "fqdn", "empty", "none", "no-colon", "two-fields", "no-host", "no-time",
        "no-pass"])
def test_claim_marker_parse(value, parsed):
    assert ClaimMarker.parse(value) == parsed
    if parsed is not None:
        assert parsed.value == value


def test_claim_marker_make_drops_microseconds():
    m = ClaimMarker.make(HOST, NOW.replace(microsecond=123), "req-1")
    assert m.value == f"{HOST}:{NOW.isoformat()}:req-1" and ClaimMarker.parse(m.value) == m


# --------------------------------------------------------------------------
# claimed rows (soft-delete, task_state 'deleting') on our host
# --------------------------------------------------------------------------

# (id, domains, dirs, row, markers, journaled, policy, expected classification, action,
#  expected teardown (action, domain?, dirs?, claim_marker) or None)
CLAIM_TABLE = [
    ("our stranded claim, still expired: finished", [domain(state="shutoff")], [idir()],
     claimed(), (MINE,), False, {}, Classification.RECLAIMABLE, Action.RECLAIM,
     (Action.RECLAIM, True, True, MINE)),
    ("our stranded claim, row only: finished", [], [], claimed(), (MINE,), False, {},
     Classification.RECLAIMABLE, Action.RECLAIM, (Action.RECLAIM, False, False, MINE)),
    ("our stranded claim with its dir: finished with the dir", [], [idir()], claimed(),
     (MINE,), False, {}, Classification.RECLAIMABLE, Action.RECLAIM,
     (Action.RECLAIM, False, True, MINE)),
    ("our claim, journaled: the journal resumes it", [domain(state="shutoff")], [idir()],
     claimed(), (MINE,), True, {}, None, None, None),
    ("our claim, row only, journaled", [], [], claimed(), (MINE,), True, {}, None, None, None),
    ("our claim, reclaim now disabled: released", [domain(state="shutoff")], [idir()],
     claimed(), (MINE,), False, {"reclaim_instance_interval": 0},
     Classification.STRANDED_CLAIM, Action.RELEASE, (Action.RELEASE, False, False, MINE)),
    ("our claim, interval raised past its age: released", [], [], claimed(RECENT), (MINE,),
     False, {}, Classification.STRANDED_CLAIM, Action.RELEASE,
     (Action.RELEASE, False, False, MINE)),
    ("no marker (Nova's force-delete): log only", [domain(state="shutoff")], [idir()],
     claimed(), (), False, {}, Classification.FOREIGN_CLAIM, Action.LOG, None),
    ("no marker, row only: log only", [], [], claimed(), (), False, {},
     Classification.FOREIGN_CLAIM, Action.LOG, None),
    ("another host's marker: log only", [], [idir()], claimed(), (THEIRS,), False, {},
     Classification.FOREIGN_CLAIM, Action.LOG, None),
    ("two markers, one ours: log only", [], [], claimed(), (MINE, THEIRS), False, {},
     Classification.FOREIGN_CLAIM, Action.LOG, None),
    ("unparsable marker: log only", [], [], claimed(), ("garbage",), False, {},
     Classification.FOREIGN_CLAIM, Action.LOG, None),
    ("a host name we only prefix is not ours", [], [], claimed(),
     (f"{HOST}x:2026-11-20T10:00:00:req-1",), False, {}, Classification.FOREIGN_CLAIM,
     Action.LOG, None),
    ("no marker, reclaim disabled: still reported, never released", [], [], claimed(), (),
     False, {"reclaim_instance_interval": 0}, Classification.FOREIGN_CLAIM, Action.LOG, None),
    ("claimed row of another host: not ours to judge", [], [], claimed(host=OTHER), (MINE,),
     False, {}, None, None, None),
]


@pytest.mark.parametrize("case", CLAIM_TABLE, ids=[c[0] for c in CLAIM_TABLE])
def test_claimed_rows(case):
    _, domains, dirs, r, markers, journaled, pol, want_cls, want_action, want_t = case
    plan = plan_of(domains, dirs, [r], markers={U: markers} if markers else {},
                   journaled=[U] if journaled else [], **pol)
    got = [(f.classification, f.action) for f in plan.findings]
    if want_cls is None:
        assert got == [] and plan.teardowns == ()
        return
    assert got == [(want_cls, want_action)], plan.findings
    if want_t is None:
        assert plan.teardowns == ()
        return
    (t,) = plan.teardowns
    action, has_domain, has_dirs, marker = want_t
    assert t.action is action and t.claim_marker == marker
    assert (t.domain_name is not None) is has_domain and bool(t.dirs) is has_dirs
    assert t.finalize_db is (action is Action.RECLAIM)
    f = plan.findings[0]
    if marker:
        assert f.evidence["stranded_claim"]["pass_id"] == "req-lost"
        assert ("finishing" if action is Action.RECLAIM else "releasing") in f.reason


def test_a_stranded_claim_waits_for_the_domain_list():
    plan = plan_of([], [], [claimed()], markers={U: (MINE,)}, dom_ok=False)
    assert plan.teardowns == ()


def test_a_stranded_reclaims_dirs_are_not_also_orphans():
    plan = plan_of([], [idir(), idir(DirKind.DELETING)], [claimed()], markers={U: (MINE,)})
    assert [(f.classification, f.kind) for f in plan.findings] == [
        (Classification.RECLAIMABLE, ResourceKind.INSTANCE_DIR)]
    (t,) = plan.teardowns
    assert sorted(t.dirs) == [f"{ROOT}/{U}", f"{ROOT}/{U}_del"]


def test_a_foreign_claims_dir_is_not_an_orphan():
    plan = plan_of([], [idir()], [claimed()], markers={U: (THEIRS,)})
    assert [(f.classification, f.kind, f.resource) for f in plan.findings] == [
        (Classification.FOREIGN_CLAIM, ResourceKind.INSTANCE, U)]


# --------------------------------------------------------------------------
# evacuating
# --------------------------------------------------------------------------

def test_evacuating_action_log_and_ignore():
    acts = default_actions() | {Classification.EVACUATING: Action.LOG}
    plan = plan_of([domain()], [idir()], [row()], [mig(status="accepted")], actions=acts)
    assert [(f.classification, f.action) for f in plan.findings] == [
        (Classification.EVACUATING, Action.LOG)]
    assert plan.teardowns == ()
    acts = default_actions() | {Classification.EVACUATING: Action.IGNORE}
    plan = plan_of([domain()], [idir()], [row()], [mig(status="accepted")], actions=acts)
    assert plan.findings == () and plan.teardowns == ()


def test_evacuating_is_never_more_than_a_power_off():
    # even if a policy were built with 'reap' for it, nothing beyond a power-off runs
    acts = default_actions() | {Classification.EVACUATING: Action.REAP}
    plan = plan_of([domain()], [idir()], [row(host=OTHER)], [mig(status="accepted")],
                   actions=acts)
    assert plan.teardowns == ()


def test_evacuating_keeps_its_directory_and_the_default_is_shutdown():
    assert default_actions()[Classification.EVACUATING] is Action.SHUTDOWN
    plan = plan_of([domain()], [idir(), idir(DirKind.RESIZE)], [row()],
                   [mig(status="pre-migrating")])
    (t,) = plan.teardowns
    assert t.action is Action.SHUTDOWN and t.dirs == () and not t.destroy_disks
    assert [f.kind for f in plan.findings] == [ResourceKind.DOMAIN]


def power_off() -> TeardownPlan:
    return TeardownPlan(U, Classification.EVACUATING, Action.SHUTDOWN, "instance-00000007",
                        (), False, False, "x")


# (id, fresh row, fresh migrations, still justified?)
REVERIFY_EVACUATING = [
    ("still accepted", row(), [mig(status="accepted")], True),
    ("now pre-migrating, row moved", row(host=OTHER), [mig(status="pre-migrating")], True),
    ("now done: the destination runs it", row(host=OTHER), [mig(status="done")], True),
    ("failed meanwhile", row(vm_state="error"), [mig(status="error")], False),
    ("failed meanwhile, row on the destination", row(host=OTHER, vm_state="error"),
     [mig(status="failed")], False),
    ("a move back to us started", row(host=OTHER),
     [mig(status="accepted"), mig(mtype="live-migration", status="running", source=OTHER,
                                   dest=HOST, id=2)], False),
    ("instance deleted meanwhile", row(deleted=7, vm_state="deleted", deleted_at=NOW),
     [mig(status="accepted")], False),
    ("migration row gone", row(), [], False),
]


@pytest.mark.parametrize("case", REVERIFY_EVACUATING, ids=[c[0] for c in REVERIFY_EVACUATING])
def test_reverify_evacuating_power_off(case):
    _, r, migs, ok = case
    assert planner.reverify(power_off(), r, migs, policy(), NOW)[0] is ok


def test_reverify_evacuating_follows_the_configured_action():
    acts = default_actions() | {Classification.EVACUATING: Action.LOG}
    ok, why = planner.reverify(power_off(), row(), [mig(status="accepted")],
                               policy(actions=acts), NOW)
    assert not ok and "now log" in why


def finish(marker=MINE):
    return TeardownPlan(U, Classification.RECLAIMABLE, Action.RECLAIM, None, (), True, True,
                        "x", claim_marker=marker)


def release():
    return TeardownPlan(U, Classification.STRANDED_CLAIM, Action.RELEASE, None, (), False,
                        False, "x", claim_marker=MINE)


REVERIFY_CLAIMS = [
    ("finish: still claimed and expired", finish(), claimed(), {}, True),
    ("finish: reclaim disabled meanwhile", finish(), claimed(), {"reclaim_instance_interval": 0},
     False),
    ("finish: interval raised past its age", finish(), claimed(RECENT), {}, False),
    ("finish: already finalized (a resume)", finish(),
     row(deleted=7, vm_state="deleted", deleted_at=NOW), {}, True),
    ("release: still claimed here", release(), claimed(), {}, True),
    ("release: no longer claimed", release(), row(vm_state="soft-delete", deleted_at=OLD), {},
     False),
    ("release: row gone", release(), None, {}, False),
    ("release: claimed on another host", release(), claimed(host=OTHER), {}, False),
]


@pytest.mark.parametrize("case", REVERIFY_CLAIMS, ids=[c[0] for c in REVERIFY_CLAIMS])
def test_reverify_claims(case):
    _, t, r, pol, ok = case
    assert planner.reverify(t, r, [], policy(**pol), NOW)[0] is ok


# --------------------------------------------------------------------------
# guards: power-offs of evacuating guests, node identity
# --------------------------------------------------------------------------

def _inv(n):
    doms = tuple(domain(uuid=f"{i:08d}-0000-0000-0000-000000000000", name=f"instance-{i:08x}")
                 for i in range(n))
    return Inventory(CollectorResult("domain", True, doms), CollectorResult("instance_dir", True))


def _t(i, cls, action, dom=True):
    return TeardownPlan(f"{i:08d}-0000-0000-0000-000000000000", cls, action,
                        f"instance-{i:08x}" if dom else None, (), False, False, "")


def test_evacuating_power_offs_skip_grace_and_mass_count():
    pol = policy(max_destroy_per_pass=2, max_destroy_fraction=0.5)
    offs = [_t(i, Classification.EVACUATING, Action.SHUTDOWN) for i in range(10)]
    # a whole host being evacuated: every guest must stop, and none is destroyed
    assert not guards.mass_destruction(offs, _inv(10), pol, False).tripped
    assert not any(guards.waits_for_grace(t) for t in offs)
    # other power-offs (an operator's choice instead of a reap) still count and wait
    other = [_t(i, Classification.RUNNING_DELETED, Action.SHUTDOWN) for i in range(3)]
    assert guards.mass_destruction(other, _inv(10), pol, False).tripped
    assert all(guards.waits_for_grace(t) for t in other)
    mixed = offs + [_t(20, Classification.EVACUATED, Action.REAP),
                    _t(21, Classification.STRANDED_CLAIM, Action.RELEASE, dom=False)]
    g = guards.mass_destruction(mixed, _inv(10), pol, False)
    assert not g.tripped and g.evidence["instances"] == 1


CN = ComputeNodeRow(1, "cn-uuid", HOST, "cmp-1.example.org")

# (id, configured/filled node name, node_error, compute_id, tripped?, reason fragment)
IDENTITY = [
    ("node named after libvirt's getHostname()", "cmp-1.example.org", None, None, False, ""),
    ("with nova-compute's compute_id", "cmp-1.example.org", None, "cn-uuid", False, ""),
    ("node name = host, but Nova named it after libvirt", HOST, None, None, True,
     "possible rename"),
    ("renamed node (another getHostname())", "cmp-1-new.example.org", None, None, True,
     "possible rename"),
    ("compute_id of another node", "cmp-1.example.org", None, "other-uuid", True,
     "compute_id_file"),
    ("node name unknown (libvirt down)", "", "libvirt is unreachable", None, True,
     "libvirt is unreachable"),
]


@pytest.mark.parametrize("case", IDENTITY, ids=[c[0] for c in IDENTITY])
def test_host_identity_with_the_node_name(case):
    _, node, err, cid, tripped, why = case
    view = NovaView(ok=True, compute_nodes=(CN,))
    pol = dataclasses.replace(policy(), hypervisor_hostname=node)
    g = guards.host_identity(view, pol, cid, err)
    assert g.tripped is tripped and why in g.reason


def test_node_name_from_libvirt_or_configuration():
    from reaper import identity

    class Conn:
        def __init__(self, name=None, exc=None):
            self.name, self.exc, self.asked = name, exc, 0

        def getHostname(self):
            self.asked += 1
            if self.exc:
                raise self.exc
            return self.name

    c = Conn("cmp-1.example.org")
    assert identity.node_name(c, "") == ("cmp-1.example.org", "libvirt getHostname()")
    assert identity.node_name(c, "set-by-operator")[0] == "set-by-operator" and c.asked == 1
    assert identity.node_name(None, "")[0] is None
    name, why = identity.node_name(Conn(exc=RuntimeError("connection closed")), "")
    assert name is None and "connection closed" in why
    assert identity.node_name(Conn(""), "")[0] is None


def test_policy_leaves_the_node_name_to_libvirt_by_default(conf):
    from reaper import config  # noqa: F401 - registers [DEFAULT]
    from reaper import policy as policy_mod
    assert policy_mod.from_conf(policy_mod.CONF).hypervisor_hostname == ""
    conf.config(hypervisor_hostname="node-7")
    assert policy_mod.from_conf(policy_mod.CONF).hypervisor_hostname == "node-7"
    assert policy_mod.CONF.reaper.evacuating_action == "shutdown"
    from reaper.conf import reaper as conf_reaper
    opt = next(o for o in conf_reaper.ALL_OPTS if o.dest == "evacuating_action")
    assert list(opt.type.choices) == ["ignore", "log", "shutdown"]
    assert "pre-migrating" in opt.help and "never deleted" in opt.help


def test_compute_id_file_defaults_to_nova_computes():
    from reaper.conf import default as conf_default
    (opt,) = [o for o in conf_default.ALL_OPTS if o.dest == "compute_id_file"]
    assert opt.default == "/var/lib/nova/compute_id"


def test_an_evacuation_in_progress_keeps_its_directories_without_a_domain():
    # No domain left here (an operator undefined it), the evacuation still running:
    # the directory may be the only copy if the evacuation fails.
    for status in ("accepted", "pre-migrating"):
        plan = plan_of([], [idir(), idir(DirKind.RESIZE)], [row(host=OTHER)],
                       [mig(status=status)])
        assert plan.findings == () and plan.teardowns == ()
    # once it is done the directory is an ordinary orphan of another host's instance
    plan = plan_of([], [idir()], [row(host=OTHER)], [mig(status="done")])
    assert [f.classification for f in plan.findings] == [Classification.ORPHAN_DIR]
