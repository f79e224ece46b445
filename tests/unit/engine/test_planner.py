"""The rule table (R1-R13, doc/design.md "Classifications"), row by row, without libvirt or a DB."""
from __future__ import annotations

import datetime
import functools

import pytest

from reaper import planner
from reaper.policy import default_actions
from reaper.objects.fields import Action, Classification, DirKind, ResourceKind
from reaper.objects.host import CollectorResult, Domain, DomainDisk, InstanceDir, Inventory
from reaper.objects.nova import BdmRow, MigrationRow, NovaView
from tests.fixtures import records

HOST = "cmp-1"
OTHER = "cmp-2"
NOW = datetime.datetime(2026, 11, 23, 12, 0, 0)
OLD = NOW - datetime.timedelta(days=1)
RECENT = NOW - datetime.timedelta(seconds=10)
ROOT = "/var/lib/nova/instances"
U = "11111111-2222-3333-4444-555555555555"


policy = functools.partial(records.policy, running_deleted_timeout=600)
row = functools.partial(records.row, uuid=U, host=HOST)
mig = functools.partial(records.migration, instance_uuid=U, source=HOST, dest=OTHER)
domain = functools.partial(records.domain, uuid=U)


def idir(kind=DirKind.INSTANCE, uuid=U) -> InstanceDir:
    suffix = {DirKind.INSTANCE: "", DirKind.RESIZE: "_resize", DirKind.DELETING: "_del"}[kind]
    return InstanceDir(name=uuid + suffix, uuid=uuid, kind=kind, path=f"{ROOT}/{uuid}{suffix}",
                       size_bytes=10, mtime=0.0)


def run(domains=(), dirs=(), rows=(), migs=(), bdms=(), fs="ext4", **pol):
    inv = records.inventory(domains=domains, dirs=dirs, fs=fs)
    view = records.nova_view(rows=rows, migrations=migs, bdms=tuple(bdms))
    return planner.build_plan(inv, view, policy(**pol), NOW)


# (id, domains, dirs, rows, migrations, expected classification or None, expected action)
DOMAIN_TABLE = [
    ("R1 live on our host", [domain()], [], [row()], [], None, None),
    ("R2 evacuated, done", [domain()], [], [row(host=OTHER)], [mig()],
     Classification.EVACUATED, Action.REAP),
    ("R2a evacuating, accepted, row still on our host", [domain()], [], [row()],
     [mig(status="accepted")], Classification.EVACUATING, Action.SHUTDOWN),
    ("R2a evacuating, accepted, row on the destination", [domain()], [], [row(host=OTHER)],
     [mig(status="accepted")], Classification.EVACUATING, Action.SHUTDOWN),
    ("R2a evacuating, pre-migrating", [domain()], [], [row(host=OTHER)],
     [mig(status="pre-migrating")], Classification.EVACUATING, Action.SHUTDOWN),
    ("R2a evacuating, pre-migrating, row on our host", [domain()], [],
     [row(task_state="rebuilding")], [mig(status="pre-migrating")],
     Classification.EVACUATING, Action.SHUTDOWN),
    ("R2a evacuating, soft-deleted migration row still counts", [domain()], [], [row()],
     [mig(status="accepted", deleted=1)], Classification.EVACUATING, Action.SHUTDOWN),
    ("R2a evacuating guest already shut off: reported, nothing to do",
     [domain(state="shutoff")], [], [row()], [mig(status="accepted")],
     Classification.EVACUATING, Action.SHUTDOWN),
    ("R2a deleted row wins over an evacuation", [domain()], [],
     [row(deleted=7, vm_state="deleted", deleted_at=OLD)], [mig(status="accepted")],
     Classification.RUNNING_DELETED, Action.REAP),
    ("R2a evacuating, but a move back to us is in flight", [domain()], [], [row()],
     [mig(status="accepted"), mig(mtype="live-migration", status="running", source=OTHER,
                                   dest=HOST, id=2)], None, None),
    ("R2a done while the row is back on our host: ours", [domain()], [], [row()], [mig()],
     None, None),
    ("R2b failed evacuation, guest powered off, row on our host in error",
     [domain(state="shutoff")], [], [row(vm_state="error")], [mig(status="error")],
     Classification.EVACUATION_FAILED, Action.LOG),
    ("R2b failed evacuation, row on the destination", [domain(state="shutoff")], [],
     [row(host=OTHER, vm_state="error")], [mig(status="failed")],
     Classification.EVACUATION_FAILED, Action.LOG),
    ("R2b failed evacuation, guest running again: ours", [domain()], [],
     [row(vm_state="error")], [mig(status="error")], None, None),
    ("R2b failed evacuation, Nova says stopped too: ours", [domain(state="shutoff")], [],
     [row(vm_state="stopped")], [mig(status="failed")], None, None),
    ("R2b failed, then evacuated again: the newest decides", [domain()], [], [row()],
     [mig(status="error"), mig(status="accepted", id=2)],
     Classification.EVACUATING, Action.SHUTDOWN),
    ("R2 evacuation row soft-deleted still counts", [domain()], [], [row(host=OTHER)],
     [mig(deleted=1)], Classification.EVACUATED, Action.REAP),
    ("R2 evacuation already completed -> foreign", [domain()], [], [row(host=OTHER)],
     [mig(status="completed")], Classification.FOREIGN, Action.LOG),
    ("R2 evacuation from another host -> foreign", [domain()], [], [row(host=OTHER)],
     [mig(source="cmp-9")], Classification.FOREIGN, Action.LOG),
    ("R3 live migration in progress from us", [domain()], [], [row(host=OTHER)],
     [mig(mtype="live-migration", status="running")], Classification.IN_FLIGHT, Action.NONE),
    ("R3 incoming migration to us", [domain()], [], [row(host=OTHER)],
     [mig(mtype="migration", status="migrating", source=OTHER, dest=HOST)],
     Classification.IN_FLIGHT, Action.NONE),
    ("R3 in-flight wins over an old evacuation record", [domain()], [], [row(host=OTHER)],
     [mig(), mig(mtype="live-migration", status="preparing", source=OTHER, dest=HOST)],
     Classification.IN_FLIGHT, Action.NONE),
    ("R3 vm_state resized", [domain()], [], [row(host=OTHER, vm_state="resized")], [],
     Classification.IN_FLIGHT, Action.NONE),
    ("R3 task_state resize_migrating", [domain()], [],
     [row(host=OTHER, task_state="resize_migrating")], [mig()],
     Classification.IN_FLIGHT, Action.NONE),
    ("R3 task_state migrating", [domain()], [], [row(host=OTHER, task_state="migrating")], [],
     Classification.IN_FLIGHT, Action.NONE),
    ("R4 foreign: other host, no evacuation (bug 1471887)", [domain()], [],
     [row(host=OTHER)], [], Classification.FOREIGN, Action.LOG),
    ("R4 foreign: row with no host", [domain()], [], [row(host=None)], [],
     Classification.FOREIGN, Action.LOG),
    ("R5 running deleted, old", [domain()], [],
     [row(deleted=7, vm_state="deleted", deleted_at=OLD)], [],
     Classification.RUNNING_DELETED, Action.REAP),
    ("R5 running deleted on another host too", [domain()], [],
     [row(host=OTHER, deleted=7, vm_state="deleted", deleted_at=OLD)], [],
     Classification.RUNNING_DELETED, Action.REAP),
    ("R5 running deleted, NULL deleted_at counts as old", [domain()], [],
     [row(deleted=7, vm_state="deleted", deleted_at=None)], [],
     Classification.RUNNING_DELETED, Action.REAP),
    ("R5 running deleted, within the timeout", [domain()], [],
     [row(deleted=7, vm_state="deleted", deleted_at=RECENT)], [],
     Classification.PENDING, Action.LOG),
    ("R6 no row at all", [domain()], [], [], [], Classification.UNKNOWN, Action.LOG),
    ("R6 archived row", [domain()], [],
     [row(deleted=7, vm_state="deleted", deleted_at=OLD, archived=True)], [],
     Classification.UNKNOWN, Action.LOG),
    ("R7 soft-deleted, expired", [domain(state="shutoff")], [],
     [row(vm_state="soft-delete", deleted_at=OLD)], [],
     Classification.RECLAIMABLE, Action.RECLAIM),
    ("R7 soft-deleted, NULL deleted_at counts as old", [domain(state="shutoff")], [],
     [row(vm_state="soft-delete", deleted_at=None)], [],
     Classification.RECLAIMABLE, Action.RECLAIM),
    ("R7 soft-deleted, not yet expired: restorable", [domain(state="shutoff")], [],
     [row(vm_state="soft-delete", deleted_at=RECENT)], [], None, None),
    ("R7 soft-deleted with a task_state (restoring)", [domain(state="shutoff")], [],
     [row(vm_state="soft-delete", task_state="restoring", deleted_at=OLD)], [], None, None),
    ("R7 soft-deleted on another host is not ours to reclaim", [domain(state="shutoff")], [],
     [row(host=OTHER, vm_state="soft-delete", deleted_at=OLD)], [],
     Classification.FOREIGN, Action.LOG),
    ("not Nova's domain: not even listed", [domain(nova=False, name="build-box")], [],
     [], [], None, None),
]


@pytest.mark.parametrize("case", DOMAIN_TABLE, ids=[c[0] for c in DOMAIN_TABLE])
def test_domain_rules(case):
    _, domains, dirs, rows, migs, want_cls, want_action = case
    plan = run(domains, dirs, rows, migs)
    doms = [f for f in plan.findings if f.kind is ResourceKind.DOMAIN]
    if want_cls is None:
        assert doms == []
        assert plan.teardowns == ()
        return
    assert [(f.classification, f.action) for f in doms] == [(want_cls, want_action)]
    destroying = [t for t in plan.teardowns if t.domain_name]
    if want_action in (Action.REAP, Action.RECLAIM):
        assert len(destroying) == 1 and destroying[0].classification is want_cls
    elif want_action is Action.SHUTDOWN and domains[0].active:
        (t,) = plan.teardowns
        assert (t.action, t.classification, t.dirs, t.vifs, t.volumes) == (
            Action.SHUTDOWN, want_cls, (), (), ())
    else:
        assert destroying == []


def test_reclaim_disabled_when_interval_zero():
    plan = run([domain(state="shutoff")], [], [row(vm_state="soft-delete", deleted_at=OLD)],
               reclaim_instance_interval=0)
    assert plan.findings == () and plan.teardowns == ()


def test_reclaim_row_alone_and_with_dir():
    u2 = "22222222-2222-3333-4444-555555555555"
    plan = run([], [idir(uuid=u2)], [row(vm_state="soft-delete", deleted_at=OLD),
                                     row(vm_state="soft-delete", deleted_at=None, uuid=u2)])
    by_uuid = {t.instance_uuid: t for t in plan.teardowns}
    assert by_uuid[U].finalize_db and by_uuid[U].dirs == () and by_uuid[U].domain_name is None
    assert by_uuid[u2].dirs == (f"{ROOT}/{u2}",) and by_uuid[u2].finalize_db
    assert {f.classification for f in plan.findings} == {Classification.RECLAIMABLE}


def test_evacuated_keeps_disks_on_shared_storage():
    plan = run([domain()], [idir()], [row(host=OTHER)], [mig()], fs="nfs4",
               instances_path_shared="auto")
    (t,) = plan.teardowns
    assert t.destroy_disks is False and t.dirs == ()
    assert "keeping instance files" in t.reason


def test_evacuated_keeps_disks_when_unsure():
    plan = run([domain()], [idir()], [row(host=OTHER)], [mig()], fs="fuse.mystery",
               instances_path_shared="auto")
    (t,) = plan.teardowns
    assert t.destroy_disks is False and "unsure" in t.reason


def test_evacuated_deletes_disks_on_local_storage():
    plan = run([domain()], [idir(), idir(DirKind.RESIZE)], [row(host=OTHER)], [mig()],
               fs="xfs", instances_path_shared="auto")
    (t,) = plan.teardowns
    assert t.destroy_disks is True
    assert sorted(t.dirs) == [f"{ROOT}/{U}", f"{ROOT}/{U}_resize"]
    assert "dir" not in {f.kind.value for f in plan.findings}


DIR_TABLE = [
    ("R8 dir of a deleted instance", [idir()], [row(deleted=7, vm_state="deleted",
                                                    deleted_at=OLD)], [], "ext4",
     Classification.ORPHAN_DIR, Action.REAP),
    ("R8 dir with no row on local storage", [idir()], [], [], "ext4",
     Classification.ORPHAN_DIR, Action.REAP),
    ("R8 dir with no row on shared storage: log only", [idir()], [], [], "nfs",
     Classification.ORPHAN_DIR, Action.LOG),
    ("R8 dir of an instance live elsewhere, shared storage: log only", [idir()],
     [row(host=OTHER)], [], "nfs", Classification.ORPHAN_DIR, Action.LOG),
    ("R8 dir of an instance live elsewhere, unknown fs: log only", [idir()],
     [row(host=OTHER)], [], None, Classification.ORPHAN_DIR, Action.LOG),
    ("R8 dir of an instance live elsewhere, local storage", [idir()], [row(host=OTHER)], [],
     "ext4", Classification.ORPHAN_DIR, Action.REAP),
    ("R8 dir of a live local instance", [idir()], [row()], [], "ext4", None, None),
    ("R8 dir while a migration to us is in flight", [idir()], [row(host=OTHER)],
     [mig(mtype="live-migration", status="running", source=OTHER, dest=HOST)], "ext4",
     None, None),
    ("R9 stale resize dir", [idir(DirKind.RESIZE)], [row()], [], "ext4",
     Classification.STALE_RESIZE, Action.REAP),
    ("R9 resize awaiting confirm", [idir(DirKind.RESIZE)], [row(host=OTHER, vm_state="resized")],
     [mig(mtype="resize", status="finished")], "ext4", None, None),
    ("R9 resize done long ago", [idir(DirKind.RESIZE)], [row()],
     [mig(mtype="resize", status="confirmed")], "ext4", Classification.STALE_RESIZE,
     Action.REAP),
    ("R10 interrupted delete", [idir(DirKind.DELETING)], [row()], [], "ext4",
     Classification.INTERRUPTED_DELETE, Action.REAP),
    ("R10 interrupted delete, no row, shared", [idir(DirKind.DELETING)], [], [], "nfs",
     Classification.INTERRUPTED_DELETE, Action.REAP),
]


@pytest.mark.parametrize("case", DIR_TABLE, ids=[c[0] for c in DIR_TABLE])
def test_dir_rules(case):
    _, dirs, rows, migs, fs, want_cls, want_action = case
    plan = run([], dirs, rows, migs, fs=fs, instances_path_shared="auto")
    got = [(f.classification, f.action) for f in plan.findings]
    if want_cls is None:
        assert got == [] and plan.teardowns == ()
        return
    assert got == [(want_cls, want_action)]
    assert bool(plan.teardowns) == (want_action is Action.REAP)


def test_dir_with_a_domain_goes_with_the_domain():
    plan = run([domain()], [idir()], [row(host=OTHER)], [])   # foreign domain + its dir
    assert [f.kind for f in plan.findings] == [ResourceKind.DOMAIN]
    assert plan.teardowns == ()


def test_dir_pinned_by_another_domains_disk_is_only_logged():
    other = "99999999-2222-3333-4444-555555555555"
    pinning = domain(uuid=other, nova=False, name="rescue-box",
                     disks=[DomainDisk("vda", "disk", "file", f"{ROOT}/{U}/disk")])
    plan = run([pinning], [idir()], [row(deleted=7, vm_state="deleted", deleted_at=OLD)])
    (f,) = plan.findings
    assert f.classification is Classification.ORPHAN_DIR and f.action is Action.LOG
    assert "rescue-box" in f.reason and plan.teardowns == ()


def test_actions_follow_policy_and_ignore_hides():
    acts = default_actions() | {Classification.EVACUATED: Action.SHUTDOWN,
                                Classification.ORPHAN_DIR: Action.IGNORE}
    u2 = "22222222-2222-3333-4444-555555555555"
    plan = run([domain()], [idir(uuid=u2)], [row(host=OTHER)], [mig()], actions=acts)
    assert [(f.classification, f.action) for f in plan.findings] == [
        (Classification.EVACUATED, Action.SHUTDOWN)]
    (t,) = plan.teardowns
    assert t.action is Action.SHUTDOWN and t.dirs == ()


def test_attachment_drift_is_log_only():
    vol_xml, vol_bdm = "aaaaaaaa-0000-0000-0000-000000000001", "bbbbbbbb-0000-0000-0000-000000000002"
    d = domain(disks=[DomainDisk("vda", "disk", "file", f"{ROOT}/{U}/disk"),
                      DomainDisk("vdb", "disk", "block", "/dev/sdb", serial=vol_xml)])
    bdm = BdmRow(1, U, vol_bdm, "volume", "volume", "/dev/vdc", False, None, None)
    plan = run([d], [idir()], [row()], [], bdms=[bdm])
    got = {(f.evidence["volume_id"], f.evidence["in_domain_xml"]) for f in plan.findings}
    assert got == {(vol_xml, True), (vol_bdm, False)}
    assert all(f.classification is Classification.ATTACHMENT_DRIFT and f.action is Action.LOG
               for f in plan.findings)
    assert plan.teardowns == ()


def test_unavailable_collector_yields_nothing_for_its_kind():
    inv = Inventory(CollectorResult("domain", False, error="boom"),
                    CollectorResult("instance_dir", True, (idir(),)), "ext4")
    view = NovaView(ok=True, instances={U: row(deleted=7, vm_state="deleted", deleted_at=OLD)})
    plan = planner.build_plan(inv, view, policy(), NOW)
    # Without the domain list the dir cannot be known to be free of a running
    # guest's disk: it is listed, but only logged.
    (f,) = plan.findings
    assert f.kind is ResourceKind.INSTANCE_DIR and f.action is Action.LOG
    assert "domain list is unavailable" in f.reason and plan.teardowns == ()


REVERIFY = [
    ("evacuated still evacuated", Classification.EVACUATED, row(host=OTHER), [mig()], True),
    ("evacuated instance came back to us", Classification.EVACUATED, row(), [mig()], False),
    ("evacuated now migrating back", Classification.EVACUATED, row(host=OTHER),
     [mig(), mig(mtype="live-migration", status="running", source=OTHER, dest=HOST)], False),
    ("running deleted stays deleted", Classification.RUNNING_DELETED,
     row(deleted=7, vm_state="deleted", deleted_at=OLD), [], True),
]


@pytest.mark.parametrize("case", REVERIFY, ids=[c[0] for c in REVERIFY])
def test_reverify(case):
    from reaper.objects.plan import TeardownPlan
    _, cls, r, migs, ok = case
    t = TeardownPlan(U, cls, Action.REAP, "instance-00000007", (), True, False, "x")
    assert planner.reverify(t, r, migs, policy(), NOW)[0] is ok


def test_reverify_orphan_dir_refuses_when_instance_is_back():
    from reaper.objects.plan import TeardownPlan
    t = TeardownPlan(U, Classification.ORPHAN_DIR, Action.REAP, None, (f"{ROOT}/{U}",), True,
                     False, "x")
    assert planner.reverify(t, row(), [], policy(), NOW)[0] is False
    assert planner.reverify(t, row(deleted=7, vm_state="deleted"), [], policy(), NOW)[0] is True


def test_unreadable_domain_still_pins_its_directory():
    # A domain whose XML could not be parsed is kept as not-Nova's with state
    # "unknown"; its instance directory must not look orphaned.
    unreadable = Domain(uuid=U, name="instance-00000007", state="unknown", nova_owned=False,
                        nova_uuid=None)
    plan = run([unreadable], [idir()], [row(deleted=7, vm_state="deleted", deleted_at=OLD)])
    assert plan.findings == () and plan.teardowns == ()


def test_row_only_reclaim_waits_for_the_domain_list():
    inv = Inventory(CollectorResult("domain", False, error="libvirt down"),
                    CollectorResult("instance_dir", True, (idir(),)), "ext4")
    view = NovaView(ok=True, instances={U: row(vm_state="soft-delete", deleted_at=OLD)})
    plan = planner.build_plan(inv, view, policy(), NOW)
    assert plan.teardowns == ()


def test_incoming_evacuation_is_in_flight_for_domains_and_dirs():
    incoming = mig(source=OTHER, dest=HOST, status="pre-migrating")
    plan = run([domain()], [], [row(host=OTHER, task_state="rebuild_spawning")], [incoming])
    assert [(f.classification, f.action) for f in plan.findings] == [
        (Classification.IN_FLIGHT, Action.NONE)]
    # the rebuild's directory, before the domain is defined, is not an orphan
    plan = run([], [idir()], [row(host=OTHER, task_state="rebuild_spawning")], [incoming])
    assert plan.findings == () and plan.teardowns == ()
    # an evacuation leaving us is still R2 (evacuating while it runs), not in flight
    plan = run([domain()], [], [row(host=OTHER)], [mig(status="pre-migrating")])
    assert plan.findings[0].classification is Classification.EVACUATING


def test_an_evacuation_followed_by_a_move_back_is_not_evacuated():
    back = MigrationRow(id=2, uuid="m2", instance_uuid=U, source_compute=OTHER,
                        dest_compute=HOST, source_node=OTHER, dest_node=HOST,
                        status="failed", migration_type="evacuation", deleted=0)
    plan = run([domain()], [idir()], [row(host=OTHER, vm_state="error")], [mig(), back])
    assert [(f.classification, f.action) for f in plan.findings] == [
        (Classification.FOREIGN, Action.LOG)]
    assert plan.teardowns == ()


def test_reverify_refuses_when_the_configured_action_changed():
    from reaper.objects.plan import TeardownPlan
    t = TeardownPlan(U, Classification.EVACUATED, Action.REAP, "instance-00000007", (), True,
                     False, "x")
    acts = default_actions() | {Classification.EVACUATED: Action.LOG}
    ok, why = planner.reverify(t, row(host=OTHER), [mig()], policy(actions=acts), NOW)
    assert not ok and "now log" in why
    r = TeardownPlan(U, Classification.RECLAIMABLE, Action.RECLAIM, None, (), True, True, "x")
    assert not planner.reverify(r, row(), [], policy(reclaim_instance_interval=0), NOW)[0]
