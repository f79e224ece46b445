"""Whole passes against real parts: libvirtd with KVM domains, instance directories on
disk, and a Nova DB on MariaDB and on SQLite (the services tools/testhost.sh starts).

Each test uses a host name of its own, so the other domains libvirtd may hold are
"unknown" to it and, by the rules under test, never touched.
"""
from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid as uuidlib

import pytest
import sqlalchemy as sa

from reaper import audit as audit_mod
from reaper import policy as policy_mod
from reaper import reconcile
from reaper import state as state_mod
from reaper.executor import teardown
from reaper.nova import schema
from tests.fixtures import novadb
from tests.fixtures.domains import domain_exists

pytestmark = pytest.mark.functional

OTHER = "ft-other-host"
OLD = datetime.timedelta(days=2)


@pytest.fixture
def host():
    return f"ft-{uuidlib.uuid4().hex[:8]}"


def make_reaper(tmp_path, db, host, instances_path, **pol) -> reconcile.Reaper:
    base = dict(host=host, hypervisor_hostname=host, instances_path=str(instances_path),
                actions=policy_mod.default_actions(), grace_observations=1, grace_seconds=0,
                max_destroy_per_pass=10, max_destroy_fraction=1.0,
                instances_path_shared="false", running_deleted_timeout=0)
    base.update(pol)
    eng = sa.create_engine(db.url, poolclass=sa.pool.NullPool)
    return reconcile.Reaper(policy=policy_mod.Policy(**base), libvirt_uri="qemu:///system",
                            engine=eng, state=state_mod.StateDB(str(tmp_path / "state")),
                            audit=audit_mod.AuditLog(str(tmp_path / "audit.log"), host))


def domain_with_dir(factory, instances_path, uuid, **kw):
    d = instances_path.instance(uuid)
    dom = factory(uuid, start=True, disks=[d / "disk"], **kw)
    return dom, d


def row(engine, uuid) -> dict:
    return novadb.get_instance(engine, uuid)


def ago(delta) -> datetime.datetime:
    return novadb.utcnow() - delta


def test_evacuated_instance_is_destroyed_and_its_files_removed(
        tmp_path, nova_db, host, kvm_domain_factory, libvirt_conn, instances_path):
    novadb.add_compute_node(nova_db.engine, host)
    u = novadb.new_uuid()
    novadb.add_instance(nova_db.engine, u, host=OTHER)
    novadb.add_migration(nova_db.engine, u, host, OTHER, "done", "evacuation")
    dom, d = domain_with_dir(kvm_domain_factory, instances_path, u)
    assert dom.isActive()
    r = make_reaper(tmp_path, nova_db, host, instances_path)
    audit = r.run_pass("audit")
    assert audit.exit_code == 3 and domain_exists(libvirt_conn, u) and d.exists()
    rep = r.run_pass("reap")
    assert rep.exit_code == 4, rep.to_table()
    assert not domain_exists(libvirt_conn, u)
    assert not d.exists() and os.listdir(instances_path.path) == []
    # idempotent: a second pass finds nothing more to do
    again = r.run_pass("reap")
    assert again.actions == [] and again.exit_code == 0, again.to_table()
    lines = [json.loads(x) for x in (tmp_path / "audit.log").read_text().splitlines()]
    act = [x for x in lines if x["event"] == "action"]
    assert act[0]["classification"] == "evacuated" and act[0]["result"] == "done"
    assert act[0]["evidence"]["destroy_disks"] is True


def test_evacuated_instance_keeps_files_on_shared_storage(
        tmp_path, nova_db, host, kvm_domain_factory, libvirt_conn, instances_path):
    novadb.add_compute_node(nova_db.engine, host)
    u = novadb.new_uuid()
    novadb.add_instance(nova_db.engine, u, host=OTHER)
    novadb.add_migration(nova_db.engine, u, host, OTHER, "done", "evacuation", deleted=True)
    _, d = domain_with_dir(kvm_domain_factory, instances_path, u)
    r = make_reaper(tmp_path, nova_db, host, instances_path, instances_path_shared="true")
    rep = r.run_pass("reap")
    assert rep.exit_code == 4, rep.to_table()
    assert not domain_exists(libvirt_conn, u)
    assert (d / "disk").exists(), "the destination's disk on shared storage must survive"


def test_running_deleted_is_reaped_only_after_the_timeout(
        tmp_path, nova_db, host, kvm_domain_factory, libvirt_conn, instances_path):
    novadb.add_compute_node(nova_db.engine, host)
    u = novadb.new_uuid()
    novadb.add_instance(nova_db.engine, u, host=host, deleted=True,
                        deleted_at=ago(datetime.timedelta(seconds=30)))
    _, d = domain_with_dir(kvm_domain_factory, instances_path, u)
    r = make_reaper(tmp_path, nova_db, host, instances_path, running_deleted_timeout=3600)
    rep = r.run_pass("reap")
    assert [f["classification"] for f in rep.findings] == ["pending"]
    assert rep.actions == [] and domain_exists(libvirt_conn, u) and d.exists()
    with nova_db.engine.begin() as c:
        c.execute(sa.update(schema.instances).where(schema.instances.c.uuid == u)
                  .values(deleted_at=ago(OLD)))
    rep = r.run_pass("reap")
    assert [(a["classification"], a["result"]) for a in rep.actions] == [
        ("running_deleted", "done")], rep.to_table()
    assert not domain_exists(libvirt_conn, u) and not d.exists()


def test_foreign_unknown_and_in_flight_domains_are_left_alone(
        tmp_path, nova_db, host, kvm_domain_factory, libvirt_conn, instances_path):
    novadb.add_compute_node(nova_db.engine, host)
    live = novadb.add_instance(nova_db.engine, host=host)["uuid"]
    foreign = novadb.add_instance(nova_db.engine, host=OTHER)["uuid"]
    flying = novadb.add_instance(nova_db.engine, host=OTHER, task_state="migrating")["uuid"]
    novadb.add_migration(nova_db.engine, flying, host, OTHER, "running", "live-migration")
    unknown = novadb.new_uuid()                      # no row at all
    notnova = novadb.new_uuid()
    for u in (live, foreign, flying, unknown):
        domain_with_dir(kvm_domain_factory, instances_path, u)
    kvm_domain_factory(notnova, name=f"build-{notnova[:8]}", nova=False, start=True)
    r = make_reaper(tmp_path, nova_db, host, instances_path)
    rep = r.run_pass("reap")
    got = {f["instance_uuid"]: f["classification"] for f in rep.findings
           if f["instance_uuid"] in (live, foreign, flying, unknown, notnova)}
    assert got == {foreign: "foreign", flying: "in_flight", unknown: "unknown"}
    assert rep.actions == []
    for u in (live, foreign, flying, unknown, notnova):
        assert domain_exists(libvirt_conn, u)
        assert libvirt_conn.lookupByUUIDString(u).isActive()
    assert len(os.listdir(instances_path.path)) == 4


def _soft_deleted(engine, host, deleted_at):
    u = novadb.add_instance(engine, host=host, vm_state="soft-delete", power_state=4,
                            deleted_at=deleted_at)["uuid"]
    novadb.add_dependents(engine, u)
    return u


def test_reclaim_tears_down_and_soft_deletes_rows(
        tmp_path, nova_db, host, kvm_domain_factory, libvirt_conn, instances_path):
    novadb.add_compute_node(nova_db.engine, host)
    u = _soft_deleted(nova_db.engine, host, ago(OLD))
    keep = _soft_deleted(nova_db.engine, host, ago(datetime.timedelta(seconds=60)))
    dom, d = domain_with_dir(kvm_domain_factory, instances_path, u)
    dom.destroy()                                    # Nova powers soft-deleted guests off
    _, dk = domain_with_dir(kvm_domain_factory, instances_path, keep)
    r = make_reaper(tmp_path, nova_db, host, instances_path, reclaim_instance_interval=3600)
    rep = r.run_pass("reap")
    assert [(a["instance_uuid"], a["result"]) for a in rep.actions] == [(u, "done")], \
        rep.to_table()
    assert not domain_exists(libvirt_conn, u) and not d.exists()
    got = row(nova_db.engine, u)
    assert got["deleted"] == got["id"] and got["vm_state"] == "deleted"
    assert got["task_state"] is None and got["power_state"] == 0
    assert got["terminated_at"] is not None and got["deleted_at"] is not None
    with nova_db.engine.connect() as c:
        for table, col in schema.DEPENDENT_TABLES:
            live = c.execute(sa.select(sa.func.count()).select_from(table).where(
                table.c[col] == u, table.c.deleted == 0)).scalar()
            assert live == 0, table.name
            kept = c.execute(sa.select(sa.func.count()).select_from(table).where(
                table.c[col] == keep, table.c.deleted == 0)).scalar()
            assert kept >= 1, f"{table.name} of the restorable instance must stay"
    leftovers = rep.actions[0]["evidence"]["controller_leftovers"]
    assert leftovers["allocations"] == {"consumer": u}
    # the not-yet-expired one is untouched and still restorable
    assert domain_exists(libvirt_conn, keep) and dk.exists()
    assert row(nova_db.engine, keep)["vm_state"] == "soft-delete"


def test_a_restore_that_lands_first_wins(
        tmp_path, nova_db, host, kvm_domain_factory, libvirt_conn, instances_path, monkeypatch):
    novadb.add_compute_node(nova_db.engine, host)
    u = _soft_deleted(nova_db.engine, host, ago(OLD))
    _, d = domain_with_dir(kvm_domain_factory, instances_path, u)
    r = make_reaper(tmp_path, nova_db, host, instances_path, reclaim_instance_interval=3600)
    original = teardown._verify

    def restore_then_verify(ctx, plan, **kw):
        # nova-api's restore: vm_state back to active, only while task_state is NULL
        with nova_db.engine.begin() as c:
            c.execute(sa.update(schema.instances).where(
                schema.instances.c.uuid == u, schema.instances.c.task_state.is_(None))
                .values(vm_state="active", deleted_at=None))
        return original(ctx, plan, **kw)

    monkeypatch.setattr(teardown, "_verify", restore_then_verify)
    rep = r.run_pass("reap")
    assert [(a["instance_uuid"], a["result"]) for a in rep.actions] == [(u, "backed_off")]
    assert domain_exists(libvirt_conn, u) and libvirt_conn.lookupByUUIDString(u).isActive()
    assert (d / "disk").exists()
    got = row(nova_db.engine, u)
    assert got["vm_state"] == "active" and got["deleted"] == 0 and got["task_state"] is None


def test_unreachable_db_destroys_nothing(tmp_path, host, kvm_domain_factory, libvirt_conn,
                                         instances_path):
    u = novadb.new_uuid()
    _, d = domain_with_dir(kvm_domain_factory, instances_path, u)
    bad = type("DB", (), {"url": "mysql+pymysql://nova:secret@127.0.0.1:1/nova"})()
    r = make_reaper(tmp_path, bad, host, instances_path)
    rep = r.run_pass("reap")
    assert rep.exit_code == 1 and rep.actions == []
    assert "view_unavailable" in [g["guard"] for g in rep.guards]
    assert "secret" not in json.dumps(rep.as_dict())
    assert domain_exists(libvirt_conn, u) and d.exists()


def test_db_with_zero_instances_for_our_host_destroys_nothing(
        tmp_path, nova_db, host, kvm_domain_factory, libvirt_conn, instances_path):
    novadb.add_compute_node(nova_db.engine, host)
    u = novadb.new_uuid()
    _, d = domain_with_dir(kvm_domain_factory, instances_path, u)
    orphan = instances_path.instance()
    r = make_reaper(tmp_path, nova_db, host, instances_path)
    rep = r.run_pass("reap")
    assert rep.exit_code == 5 and rep.actions == []
    assert [g["guard"] for g in rep.guards] == ["empty_view"]
    assert domain_exists(libvirt_conn, u) and d.exists() and orphan.exists()


def test_unknown_host_identity_refuses_everything(
        tmp_path, nova_db, host, kvm_domain_factory, libvirt_conn, instances_path):
    novadb.add_compute_node(nova_db.engine, "renamed-" + host)
    u = novadb.add_instance(nova_db.engine, host=host, deleted=True, deleted_at=ago(OLD))["uuid"]
    domain_with_dir(kvm_domain_factory, instances_path, u)
    rep = make_reaper(tmp_path, nova_db, host, instances_path).run_pass("reap")
    assert [g["guard"] for g in rep.guards] == ["host_identity"] and rep.exit_code == 5
    assert domain_exists(libvirt_conn, u)


def test_mass_destruction_guard_trips_until_approved(
        tmp_path, nova_db, host, kvm_domain_factory, libvirt_conn, instances_path):
    novadb.add_compute_node(nova_db.engine, host)
    doomed = [novadb.add_instance(nova_db.engine, host=host, deleted=True,
                                  deleted_at=ago(OLD))["uuid"] for _ in range(3)]
    for u in doomed:
        domain_with_dir(kvm_domain_factory, instances_path, u)
    r = make_reaper(tmp_path, nova_db, host, instances_path, max_destroy_per_pass=2)
    rep = r.run_pass("reap")
    assert rep.exit_code == 5 and [g["guard"] for g in rep.guards] == ["mass_destruction"]
    assert all(domain_exists(libvirt_conn, u) for u in doomed)
    assert {f["result"] for f in rep.findings} == {"blocked"}
    assert r.state.approve(rep.pass_id, novadb.utcnow())
    rep2 = r.run_pass("reap")
    assert sorted(a["instance_uuid"] for a in rep2.actions if a["result"] == "done") == \
        sorted(doomed), rep2.to_table()
    assert not any(domain_exists(libvirt_conn, u) for u in doomed)


# ---------------------------------------------------------------------------
# crash safety: SIGKILL after each step, then a normal pass finishes the job
# ---------------------------------------------------------------------------

CRASHER = textwrap.dedent("""
    import os, signal, sys
    from reaper import state
    target = os.environ["REAPER_TEST_KILL_AFTER"]
    orig = state.StateDB.step
    def step(self, jid, name, status, now, detail=None):
        orig(self, jid, name, status, now, detail)
        if name == target and status == "done":
            os.kill(os.getpid(), signal.SIGKILL)
    state.StateDB.step = step
    from reaper.cmd import manage
    sys.exit(manage.main(sys.argv[1:]))
""")


def write_conf(tmp_path, db, host, instances_path, **reaper_opts) -> str:
    opts = dict(grace_observations=1, grace_seconds=0, max_destroy_fraction=1.0,
                instances_path_shared="false", audit_log=str(tmp_path / "audit.log"))
    opts.update(reaper_opts)
    conf = tmp_path / "reaper.conf"
    conf.write_text(
        f"[DEFAULT]\nhost = {host}\nhypervisor_hostname = {host}\n"
        f"instances_path = {instances_path}\n"
        f"state_path = {tmp_path / 'state'}\nuse_stderr = true\n"
        f"[database]\nconnection = {db.url}\n"
        f"[libvirt]\nconnection_uri = qemu:///system\n[network]\nenabled = false\n[reaper]\n"
        + "".join(f"{k} = {v}\n" for k, v in opts.items()))
    return str(conf)


def manage(conf, *args, kill_after=None):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    code = ["-c", CRASHER] if kill_after else ["-m", "reaper.cmd.manage"]
    if kill_after:
        env["REAPER_TEST_KILL_AFTER"] = kill_after
    return subprocess.run([sys.executable, *code, "--config-file", conf, *args],
                          capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("kill_after", ["claim", "destroy_domain", "delete_files",
                                        "undefine_domain", "finalize_db"])
def test_sigkill_between_reclaim_steps_resumes_to_the_same_end(
        tmp_path, nova_db, host, kvm_domain_factory, libvirt_conn, instances_path, kill_after):
    novadb.add_compute_node(nova_db.engine, host)
    u = _soft_deleted(nova_db.engine, host, ago(OLD))
    domain_with_dir(kvm_domain_factory, instances_path, u)
    conf = write_conf(tmp_path, nova_db, host, instances_path.path,
                      reclaim_instance_interval=3600)
    crashed = manage(conf, "reap", kill_after=kill_after)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    st = state_mod.StateDB(str(tmp_path / "state"))
    (entry,) = st.unfinished()
    assert entry.steps[kill_after] == "done"
    st.close()
    if kill_after != "finalize_db":
        assert row(nova_db.engine, u)["task_state"] == "deleting"
    resumed = manage(conf, "reap", "--format", "json")
    assert resumed.returncode in (0, 4), resumed.stdout[-3000:] + resumed.stderr[-3000:]
    report = json.loads(resumed.stdout)
    assert [(a["instance_uuid"], a["result"]) for a in report["actions"]] == [(u, "done")]
    assert not domain_exists(libvirt_conn, u)
    assert os.listdir(instances_path.path) == []
    got = row(nova_db.engine, u)
    assert got["deleted"] == got["id"] and got["vm_state"] == "deleted"
    assert got["task_state"] is None
    st = state_mod.StateDB(str(tmp_path / "state"))
    assert st.unfinished() == []
    st.close()
    final = manage(conf, "reap", "--format", "json")
    assert json.loads(final.stdout)["actions"] == []


@pytest.mark.parametrize("kill_after", ["destroy_domain", "delete_files"])
def test_sigkill_during_evacuated_teardown_resumes(
        tmp_path, nova_db, host, kvm_domain_factory, libvirt_conn, instances_path, kill_after):
    novadb.add_compute_node(nova_db.engine, host)
    u = novadb.add_instance(nova_db.engine, host=OTHER)["uuid"]
    novadb.add_migration(nova_db.engine, u, host, OTHER, "done", "evacuation")
    domain_with_dir(kvm_domain_factory, instances_path, u)
    conf = write_conf(tmp_path, nova_db, host, instances_path.path)
    assert manage(conf, "reap", kill_after=kill_after).returncode == -signal.SIGKILL
    resumed = manage(conf, "reap", "--format", "json")
    assert resumed.returncode == 4, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert not domain_exists(libvirt_conn, u) and os.listdir(instances_path.path) == []


@pytest.mark.parametrize("nova_db", ["sqlite"], indirect=True)
def test_mount_inside_an_orphan_dir_stops_its_removal_and_retries(
        tmp_path, nova_db, host, kvm_domain_factory, libvirt_conn, instances_path):
    """kubelet's guard: never remove across a mount; the step fails, is journaled,
    retried once per pass, and finishes once the mount is gone."""
    novadb.add_compute_node(nova_db.engine, host)
    u = novadb.add_instance(nova_db.engine, host=host, deleted=True,
                            deleted_at=ago(OLD))["uuid"]
    d = instances_path.instance(u)
    mnt = d / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    try:
        (mnt / "precious").write_text("on another filesystem")
        r = make_reaper(tmp_path, nova_db, host, instances_path)
        for _ in range(2):
            rep = r.run_pass("reap")
            assert [(a["classification"], a["result"]) for a in rep.actions] == [
                ("orphan_dir", "failed")], rep.to_table()
            assert "mount" in rep.actions[0]["reason"]
            assert (mnt / "precious").read_text() == "on another filesystem"
        assert len(r.state.unfinished()) == 1
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
    rep = r.run_pass("reap")
    assert [(a["classification"], a["result"]) for a in rep.actions] == [
        ("orphan_dir", "done")], rep.to_table()
    assert not d.exists() and r.state.unfinished() == []
