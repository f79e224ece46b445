"""Which directory a domain uses (R8-R10 and every teardown deleting files), and R9
for a live instance's _resize: the pure rules, table by table."""
from __future__ import annotations

import pytest

from reaper import planner
from reaper.kinds.instance import rules
from reaper.objects.fields import Action, Classification, DirKind, ResourceKind
from reaper.objects.host import Domain
from reaper.objects.nova import MigrationRow
from reaper.objects.plan import TeardownPlan
from tests.fixtures import records
from tests.unit.engine.test_planner import HOST, NOW, OLD, OTHER, ROOT, U, domain, idir, policy, row, run

V = "99999999-2222-3333-4444-555555555555"
DELETED = row(deleted=7, vm_state="deleted", deleted_at=OLD)


def mig(mid=1, mtype="resize", status="confirmed", source=HOST, dest=HOST) -> MigrationRow:
    return records.migration(id=mid, uuid=f"m{mid}", instance_uuid=U, mtype=mtype,
                             status=status, source=source, dest=dest)


def other(*files, uuid=V, name="rescue-box") -> Domain:
    """A non-Nova domain using ``files`` (resolved paths, as the collector records them)."""
    return domain(uuid=uuid, nova=False, name=name, files=files)


def unreadable(uuid=V, name="broken-xml") -> Domain:
    return records.domain(uuid=uuid, name=name, state="unknown", nova=False)


def own(*files, state="running") -> Domain:
    return domain(files=files or (f"{ROOT}/{U}/disk",), state=state)


# (id, domains, dirs, rows, migrations, fs, expected (classification, action) of the
# directory's finding, or None for no directory finding)
DIR_TABLE = [
    ("R8 another domain's NVRAM pins an orphan dir", [other(f"{ROOT}/{U}/nvram")], [idir()],
     [DELETED], [], "ext4", (Classification.ORPHAN_DIR, Action.LOG)),
    ("R8 a file deep inside pins", [other(f"{ROOT}/{U}/a/b/console.log")], [idir()],
     [DELETED], [], "ext4", (Classification.ORPHAN_DIR, Action.LOG)),
    ("R8 a <filesystem> source that is the dir itself pins", [other(f"{ROOT}/{U}")], [idir()],
     [DELETED], [], "ext4", (Classification.ORPHAN_DIR, Action.LOG)),
    ("R8 a file in a look-alike sibling does not pin", [other(f"{ROOT}/{U}_resize/disk",
                                                              f"{ROOT}/{U}x/disk")],
     [idir()], [DELETED], [], "ext4", (Classification.ORPHAN_DIR, Action.REAP)),
    ("R8 a file elsewhere does not pin", [other("/srv/images/disk", ROOT)], [idir()],
     [DELETED], [], "ext4", (Classification.ORPHAN_DIR, Action.REAP)),
    ("R8 an unreadable domain may use any dir", [unreadable()], [idir()], [DELETED], [],
     "ext4", (Classification.ORPHAN_DIR, Action.LOG)),
    ("R10 a _del its own-uuid domain uses", [own(f"{ROOT}/{U}_del/disk")],
     [idir(DirKind.DELETING)], [DELETED], [], "ext4",
     (Classification.INTERRUPTED_DELETE, Action.LOG)),
    ("R10 a _del with its own-uuid domain elsewhere", [own()], [idir(DirKind.DELETING)],
     [DELETED], [], "ext4", (Classification.INTERRUPTED_DELETE, Action.REAP)),
    ("R9 live instance, newest same-host resize confirmed", [own()], [idir(DirKind.RESIZE)],
     [row()], [mig()], "ext4", (Classification.STALE_RESIZE, Action.REAP)),
    ("R9 live instance, newest resize reverted", [own()], [idir(DirKind.RESIZE)],
     [row()], [mig(status="reverted")], "ext4", (Classification.STALE_RESIZE, Action.REAP)),
    ("R9 live instance, cold migration to us confirmed", [own()], [idir(DirKind.RESIZE)],
     [row()], [mig(mtype="migration", source=OTHER)], "ext4",
     (Classification.STALE_RESIZE, Action.REAP)),
    # Ended otherwise than confirmed/reverted: the _resize may hold the only disk copy.
    ("R9 live instance, cold migration ended 'completed'", [own()], [idir(DirKind.RESIZE)],
     [row()], [mig(mtype="migration", source=OTHER, status="completed")], "ext4",
     (Classification.STALE_RESIZE, Action.LOG)),
    ("R9 live instance, newest resize failed half way", [own()], [idir(DirKind.RESIZE)],
     [row()], [mig(status="error")], "ext4", (Classification.STALE_RESIZE, Action.LOG)),
    ("R9 live instance, newest resize cancelled", [own()], [idir(DirKind.RESIZE)],
     [row()], [mig(status="failed")], "ext4", (Classification.STALE_RESIZE, Action.LOG)),
    ("R9 live instance, its domain uses a file in _resize",
     [own(f"{ROOT}/{U}/disk", f"{ROOT}/{U}_resize/disk.config")], [idir(DirKind.RESIZE)],
     [row()], [mig()], "ext4", (Classification.STALE_RESIZE, Action.LOG)),
    ("R9 live instance, another domain uses a file in _resize",
     [own(), other(f"{ROOT}/{U}_resize/disk")], [idir(DirKind.RESIZE)], [row()], [mig()],
     "ext4", (Classification.STALE_RESIZE, Action.LOG)),
    ("R9 live instance, no resize record: only logged", [own()], [idir(DirKind.RESIZE)],
     [row()], [], "ext4", (Classification.STALE_RESIZE, Action.LOG)),
    ("R9 live instance, awaiting confirm (vm_state resized)", [own()], [idir(DirKind.RESIZE)],
     [row(vm_state="resized")], [mig(status="finished")], "ext4", None),
    ("R9 live instance, newest resize in progress", [own()], [idir(DirKind.RESIZE)],
     [row(task_state="resize_migrating")], [mig(), mig(2, status="migrating")], "ext4", None),
    ("R9 live instance, reverting", [own()], [idir(DirKind.RESIZE)],
     [row(task_state="resize_reverting")], [mig(status="reverting")], "ext4", None),
    ("R9 live instance, old resize row left unfinished", [own()], [idir(DirKind.RESIZE)],
     [row()], [mig(status="post-migrating"), mig(2)], "ext4", None),
    ("R9 live instance on shared storage: only logged", [own()], [idir(DirKind.RESIZE)],
     [row()], [mig()], "nfs", (Classification.STALE_RESIZE, Action.LOG)),
    ("R9 _resize of a domain whose row is on another host goes with the domain", [own()],
     [idir(DirKind.RESIZE)], [row(host=OTHER)], [mig()], "ext4", None),
    ("R9 _resize of a soft-deleted instance goes with the domain", [own(state="shutoff")],
     [idir(DirKind.RESIZE)], [row(vm_state="soft-delete", deleted_at=NOW)], [mig()], "ext4",
     None),
]


@pytest.mark.parametrize("case", DIR_TABLE, ids=[c[0] for c in DIR_TABLE])
def test_dir_rules_with_domains(case):
    _, domains, dirs, rows, migs, fs, want = case
    plan = run(domains, dirs, rows, migs, fs=fs, instances_path_shared="auto")
    got = [(f.classification, f.action) for f in plan.findings
           if f.kind is ResourceKind.INSTANCE_DIR]
    assert got == ([want] if want else [])
    dir_teardowns = [t for t in plan.teardowns if t.domain_name is None]
    assert bool(dir_teardowns) == (want is not None and want[1] is Action.REAP)


def test_pinned_dir_names_the_domain_and_the_file():
    plan = run([other(f"{ROOT}/{U}/nvram")], [idir()], [DELETED])
    (f,) = plan.findings
    assert "rescue-box" in f.reason and f"{ROOT}/{U}/nvram" in f.reason
    assert "rescue-box" in f.evidence["used_by_domain"]


# (id, domains besides the torn-down one, expected dirs of its teardown)
TEARDOWN_DIRS = [
    ("own files are the teardown's own business", [], (f"{ROOT}/{U}", f"{ROOT}/{U}_resize")),
    ("another domain's disk keeps that dir", [other(f"{ROOT}/{U}/disk")],
     (f"{ROOT}/{U}_resize",)),
    ("another domain's console log in _resize keeps it", [other(f"{ROOT}/{U}_resize/x.log")],
     (f"{ROOT}/{U}",)),
    ("an unreadable domain keeps them all", [unreadable()], ()),
]


@pytest.mark.parametrize("case", TEARDOWN_DIRS, ids=[c[0] for c in TEARDOWN_DIRS])
def test_domain_teardown_deletes_only_dirs_no_other_domain_uses(case):
    _, others, want = case
    dying = own(f"{ROOT}/{U}/disk", f"{ROOT}/{U}_resize/disk")
    plan = run([dying, *others], [idir(), idir(DirKind.RESIZE)], [DELETED])
    (t,) = plan.teardowns
    assert (t.classification, t.domain_name) == (Classification.RUNNING_DELETED, dying.name)
    assert t.dirs == want
    (f,) = [f for f in plan.findings if f.kind is ResourceKind.DOMAIN]
    kept = set(f.evidence.get("dirs_kept", {}))
    assert kept == {f"{ROOT}/{U}", f"{ROOT}/{U}_resize"} - set(want)


def test_row_only_reclaim_keeps_dirs_another_domain_uses():
    plan = run([other(f"{ROOT}/{U}/disk")], [idir()], [row(vm_state="soft-delete",
                                                          deleted_at=OLD)])
    (t,) = plan.teardowns
    assert t.classification is Classification.RECLAIMABLE and t.dirs == ()
    assert f"{ROOT}/{U}" in plan.findings[0].evidence["dirs_kept"]


def plan_of(cls, domain_name=None, dirs=(f"{ROOT}/{U}",)) -> TeardownPlan:
    return TeardownPlan(U, cls, Action.RECLAIM if cls is Classification.RECLAIMABLE
                        else Action.REAP, domain_name, dirs, True, False, "x",
                        shared_storage=False)


ORPHAN, RESIZE, DEL = (Classification.ORPHAN_DIR, Classification.STALE_RESIZE,
                       Classification.INTERRUPTED_DELETE)
# (id, plan, domains now, expected: None (free) or a word of the reason)
IN_USE = [
    ("orphan dir, nothing defined", plan_of(ORPHAN), [], None),
    ("orphan dir, same-uuid domain on its disk", plan_of(ORPHAN),
     [own(f"{ROOT}/{U}/disk")], "in use"),
    ("orphan dir, same-uuid domain with no file there", plan_of(ORPHAN),
     [own("/srv/elsewhere.img")], "defined again"),
    ("orphan dir, another domain's console log", plan_of(ORPHAN),
     [other(f"{ROOT}/{U}/console.log")], "in use"),
    ("orphan dir, a domain uses the _del it is renamed to", plan_of(ORPHAN),
     [other(f"{ROOT}/{U}_del/disk")], "_del is in use"),
    ("orphan dir, an unreadable domain", plan_of(ORPHAN), [unreadable()], "could not be read"),
    ("row-only reclaim, same-uuid domain defined", plan_of(Classification.RECLAIMABLE),
     [own("/srv/elsewhere.img")], "defined again"),
    ("evacuated, its own domain's disk", plan_of(Classification.EVACUATED, "instance-00000007"),
     [own(f"{ROOT}/{U}/disk")], None),
    ("evacuated, same uuid under another name", plan_of(Classification.EVACUATED, "renamed"),
     [own(f"{ROOT}/{U}/disk")], "in use"),
    ("evacuated, another domain's disk", plan_of(Classification.EVACUATED, "instance-00000007"),
     [own(f"{ROOT}/{U}/disk"), other(f"{ROOT}/{U}/disk")], "rescue-box"),
    ("stale resize, the live instance's domain elsewhere", plan_of(RESIZE, dirs=(
        f"{ROOT}/{U}_resize",)), [own(f"{ROOT}/{U}/disk")], None),
    ("stale resize, its domain uses a file in it", plan_of(RESIZE, dirs=(
        f"{ROOT}/{U}_resize",)), [own(f"{ROOT}/{U}_resize/disk.config")], "in use"),
    ("interrupted delete, same-uuid domain elsewhere", plan_of(DEL, dirs=(f"{ROOT}/{U}_del",)),
     [own(f"{ROOT}/{U}/disk")], None),
]


@pytest.mark.parametrize("case", IN_USE, ids=[c[0] for c in IN_USE])
def test_dirs_in_use_at_act_time(case):
    _, plan, domains, want = case
    why = planner.dirs_in_use(plan, plan.dirs, domains)
    if want is None:
        assert why is None
    else:
        assert why is not None and want in why


def test_stale_resize_reverified_with_its_domain_present():
    t = plan_of(RESIZE, dirs=(f"{ROOT}/{U}_resize",))
    ok = planner.reverify_dir(t, row(), [mig()], policy(), domain_present=True)
    assert ok[0] is True
    # without any resize record it would only have been logged
    assert planner.reverify_dir(t, row(), [], policy(), domain_present=True)[0] is False
    # a new resize started since
    assert planner.reverify_dir(t, row(task_state="resize_prep"),
                                [mig(), mig(2, status="pre-migrating")], policy(),
                                domain_present=True)[0] is False
    # the row-only re-check (no domain) keeps its old rule
    assert planner.reverify(t, row(), [], policy(), NOW)[0] is True


def test_file_index_covers_every_ancestor():
    d = other(f"{ROOT}/{U}/a/disk")
    idx = rules.file_index([d])
    for p in (f"{ROOT}/{U}/a/disk", f"{ROOT}/{U}/a", f"{ROOT}/{U}", ROOT, "/"):
        assert idx[p] == [(d, f"{ROOT}/{U}/a/disk")]
    assert rules.dir_user(f"{ROOT}/{U}", idx) is not None
    assert rules.dir_user(f"{ROOT}/{U}", idx, own=(V, "rescue-box")) is None
    assert rules.dir_user(f"{ROOT}/{U}x", idx) is None
