"""Fault-matrix scenarios of issue 9 items 5 (stranded reclaim claims), 9 (node identity
as Nova names it) and 10 (evacuations in progress).

Real parts: libvirt's test driver (in process, or in a ``reaper-manage`` /
``reaper-agent`` subprocess on the same node file), SQLite files and, for every
scenario that writes a claim, MariaDB too (``nova_db``). Each scenario uses a host
name of its own; the node name is libvirt's getHostname(), as nova-compute's libvirt
driver reports it.
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import uuid as uuidlib

import libvirt
import pytest
import sqlalchemy as sa

from reaper import audit as audit_mod
from reaper import demo
from reaper import policy as policy_mod
from reaper import reconcile
from reaper import state as state_mod
from reaper.executor import teardown
from reaper.nova import reclaim as nova_reclaim
from reaper.nova import schema
from reaper.objects.fields import Action, Classification
from tests.fixtures import novadb
from tests.fixtures.domains import domain_exists
from tests.fixtures.reclaim import libvirt_node_name

pytestmark = pytest.mark.functional

OTHER = "fm-reclaim-dest"
OLD = datetime.timedelta(days=2)
INTERVAL = 3600
NODE = libvirt_node_name()


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

@pytest.fixture
def host():
    return f"fm-reclaim-{uuidlib.uuid4().hex[:8]}"


def ago(delta) -> datetime.datetime:
    return novadb.utcnow() - delta


class Host:
    """A compute host on the test driver: a node file, instances_path, state_path."""

    def __init__(self, tmp_path, db, name):
        self.tmp, self.db, self.name = tmp_path, db, name
        self.instances = tmp_path / "instances"
        self.instances.mkdir(exist_ok=True)
        self.state_path = tmp_path / "state"
        self.audit_path = tmp_path / "audit.log"
        self.node_file = tmp_path / "node.xml"
        self.domains: list[str] = []
        self.conn = None

    def domain(self, uuid: str, *, running: bool, disk: bool = True) -> None:
        """A Nova domain with its disk in ``<instances>/<uuid>/disk``."""
        disks = []
        if disk:
            d = self.instances / uuid
            d.mkdir(exist_ok=True)
            (d / "disk").write_bytes(b"\0" * 4096)
            disks = [str(d / "disk")]
        self.domains.append(demo.domain_xml(
            uuid, f"instance-{len(self.domains) + 1:08x}",
            state=demo.RUNNING if running else demo.SHUTOFF, disks=disks))
        self.node_file.write_text(demo.node_xml(self.domains))

    @property
    def uri(self) -> str:
        if not self.node_file.exists():
            self.node_file.write_text(demo.node_xml(self.domains))
        return f"test://{self.node_file}"

    def open(self):
        """A fresh test-driver connection: the host as the node file describes it (what
        a restarted process sees)."""
        self.conn = libvirt.open(self.uri)
        return self.conn

    def reaper(self, node: str | None = NODE, **pol) -> reconcile.Reaper:
        """An in-process Reaper on the shared connection. ``node=""`` leaves the node
        name to libvirt's getHostname(), the default."""
        base = dict(host=self.name, hypervisor_hostname=node, instances_path=str(self.instances),
                    actions=policy_mod.default_actions(), grace_observations=1,
                    grace_seconds=0, max_destroy_per_pass=10, max_destroy_fraction=1.0,
                    instances_path_shared="false", running_deleted_timeout=0,
                    reclaim_instance_interval=INTERVAL)
        base.update(pol)
        conn = self.conn if self.conn is not None else self.open()
        return reconcile.Reaper(
            policy=policy_mod.Policy(**base), libvirt_uri=self.uri,
            engine=engine_of(self.db), state=state_mod.StateDB(str(self.state_path)),
            audit=audit_mod.AuditLog(str(self.audit_path), self.name),
            compute_id_file=str(self.tmp / "compute_id"), connect=lambda: conn)

    def conf(self, node: str | None = NODE, uri: str | None = None, **reaper_opts) -> str:
        opts = dict(grace_observations=1, grace_seconds=0, max_destroy_fraction=1.0,
                    instances_path_shared="false", audit_log=str(self.audit_path),
                    reclaim_instance_interval=INTERVAL, reconcile_interval=3600,
                    reclaim_poll_interval=-1, interval_jitter=0)
        opts.update(reaper_opts)
        node_line = f"hypervisor_hostname = {node}\n" if node else ""
        p = self.tmp / "reaper.conf"
        p.write_text(
            f"[DEFAULT]\nhost = {self.name}\n{node_line}instances_path = {self.instances}\n"
            f"state_path = {self.state_path}\ncompute_id_file = {self.tmp / 'compute_id'}\n"
            f"use_stderr = true\n[database]\nconnection = {self.db.url}\n"
            f"[libvirt]\nconnection_uri = {uri or self.uri}\n[network]\nenabled = false\n"
            f"[rpc]\nenabled = false\n[reaper]\n"
            + "".join(f"{k} = {v}\n" for k, v in opts.items()))
        return str(p)

    def audit(self) -> list[dict]:
        if not self.audit_path.exists():
            return []
        return [json.loads(x) for x in self.audit_path.read_text().splitlines()]

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None


@pytest.fixture
def fmhost(tmp_path, nova_db, host):
    h = Host(tmp_path, nova_db, host)
    novadb.add_compute_node(nova_db.engine, host, hypervisor_hostname=NODE)
    yield h
    h.close()


def engine_of(db, lock_timeout: float | None = None) -> sa.Engine:
    """The reaper's own engine on the Nova DB (a short lock wait when asked)."""
    if db.kind == "sqlite":
        args = {"timeout": lock_timeout} if lock_timeout else {}
        return sa.create_engine(db.url, poolclass=sa.pool.NullPool, connect_args=args)
    eng = sa.create_engine(db.url, poolclass=sa.pool.NullPool)
    if lock_timeout:
        @sa.event.listens_for(eng, "connect")
        def _short_lock_wait(dbapi_conn, _record):
            with dbapi_conn.cursor() as cur:
                cur.execute(f"SET SESSION innodb_lock_wait_timeout = {int(lock_timeout)}")
    return eng


def soft_deleted(engine, host, deleted_at=None) -> str:
    u = novadb.add_instance(engine, host=host, vm_state="soft-delete", power_state=4,
                            deleted_at=deleted_at or ago(OLD))["uuid"]
    novadb.add_dependents(engine, u)
    return u


def markers(engine, uuid) -> list[tuple[str, int]]:
    """Every reaper_claim row of the instance, live or not: (value, deleted)."""
    m = schema.instance_system_metadata
    with engine.connect() as c:
        return [(r.value, r.deleted) for r in c.execute(
            sa.select(m.c.value, m.c.deleted).where(m.c.instance_uuid == uuid,
                                                     m.c.key == "reaper_claim"))]


def set_row(engine, uuid, **values) -> None:
    with engine.begin() as c:
        c.execute(sa.update(schema.instances).where(schema.instances.c.uuid == uuid)
                  .values(**values))


def set_migration(engine, mid, **values) -> None:
    with engine.begin() as c:
        c.execute(sa.update(schema.migrations).where(schema.migrations.c.id == mid)
                  .values(**values))


def snapshot(engine, uuid) -> dict:
    """The instance's row and every dependent row, to prove nothing changed."""
    out = {}
    with engine.connect() as c:
        for table, col in [(schema.instances, "uuid"), *schema.DEPENDENT_TABLES]:
            out[table.name] = sorted(tuple(r) for r in c.execute(
                sa.select(table).where(table.c[col] == uuid)))
    return out


def is_active(conn, uuid) -> bool:
    return bool(conn.lookupByUUIDString(uuid).isActive())


CRASH_AFTER_CLAIM = textwrap.dedent("""
    import os, signal, sys
    from reaper.nova import reclaim
    orig = reclaim.claim
    def claim(*args, **kwargs):
        won = orig(*args, **kwargs)        # committed: the row is ours now
        if won:
            os.kill(os.getpid(), signal.SIGKILL)
        return won
    reclaim.claim = claim
    from reaper.cmd import manage
    sys.exit(manage.main(sys.argv[1:]))
""")


def run(module_or_code: str, conf: str, *args, code: bool = False, timeout=120):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    argv = ["-c", module_or_code] if code else ["-m", module_or_code]
    return subprocess.run([sys.executable, *argv, "--config-file", conf, *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def manage(conf: str, *args):
    r = run("reaper.cmd.manage", conf, *args, "--format", "json")
    return r, (json.loads(r.stdout) if r.stdout.strip().startswith("{") else None)


# --------------------------------------------------------------------------
# item 5: stranded claims
# --------------------------------------------------------------------------

@pytest.mark.parametrize("layout", [
    pytest.param("domain", id="domain-and-dir"),
    pytest.param("dir", id="dir-only"),
    pytest.param("row", id="row-only"),
])
def test_claim_crash_wiped_state_reclaim_finished(fmhost, nova_db, layout):
    """A reap is SIGKILLed right after its claim committed, and state_path is then wiped
    (journal lost): the row is left at soft-delete / task_state=deleting.

    Expect: the next pass recognises its own claim by the reaper_claim marker, finishes
    the reclaim (classification reclaimable, claim step "adopted", exit 4): domain and
    files gone, row and dependents soft-deleted as Nova does, no marker left.
    """
    u = soft_deleted(nova_db.engine, fmhost.name)
    if layout == "domain":
        fmhost.domain(u, running=False)
    elif layout == "dir":
        (fmhost.instances / u).mkdir()
        (fmhost.instances / u / "disk").write_bytes(b"x")
    crashed = run(CRASH_AFTER_CLAIM, fmhost.conf(), "reap", code=True)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    row = novadb.get_instance(nova_db.engine, u)
    assert (row["vm_state"], row["task_state"], row["deleted"]) == ("soft-delete", "deleting", 0)
    ((value, deleted),) = markers(nova_db.engine, u)
    assert value.startswith(fmhost.name + ":") and deleted == 0
    shutil.rmtree(fmhost.state_path)                        # the journal is lost

    r = fmhost.reaper()
    rep = r.run_pass("reap")
    assert [(a["instance_uuid"], a["classification"], a["action"], a["result"])
            for a in rep.actions] == [(u, "reclaimable", "reclaim", "done")], rep.to_table()
    assert rep.exit_code == 4
    (claim_step,) = [d for s, d in rep.actions[0]["steps"] if s == "claim"]
    assert claim_step.startswith("adopted this host's stranded claim")
    (f,) = [f for f in rep.findings if f["instance_uuid"] == u]
    assert f["evidence"]["stranded_claim"]["host"] == fmhost.name
    if layout == "domain":
        assert not domain_exists(fmhost.conn, u)
    assert os.listdir(fmhost.instances) == []
    row = novadb.get_instance(nova_db.engine, u)
    assert row["deleted"] == row["id"] and row["vm_state"] == "deleted"
    assert row["task_state"] is None
    assert markers(nova_db.engine, u) == []                 # Nova's end state, no trace
    with nova_db.engine.connect() as c:
        for table, col in schema.DEPENDENT_TABLES:
            assert c.execute(sa.select(sa.func.count()).select_from(table).where(
                table.c[col] == u, table.c.deleted == 0)).scalar() == 0, table.name
    again = r.run_pass("reap")
    assert again.actions == [] and again.exit_code == 0, again.to_table()
    r.close()


@pytest.mark.parametrize("change", [
    pytest.param({"reclaim_instance_interval": 0}, id="reclaim-disabled"),
    pytest.param({"reclaim_instance_interval": 30 * 86400}, id="interval-raised"),
])
def test_claim_crash_wiped_state_claim_released(fmhost, nova_db, change):
    """A reap is SIGKILLed after its claim, state_path is wiped, and meanwhile the
    operator disabled reclaim (or raised the interval past the instance's age).

    Expect: the next pass releases its own claim (classification stranded_claim,
    action release, exit 4): task_state NULL, the marker gone, the instance restorable;
    domain and files kept.
    """
    u = soft_deleted(nova_db.engine, fmhost.name)
    fmhost.domain(u, running=False)
    crashed = run(CRASH_AFTER_CLAIM, fmhost.conf(), "reap", code=True)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
    shutil.rmtree(fmhost.state_path)
    r = fmhost.reaper(**change)
    rep = r.run_pass("reap")
    assert [(a["classification"], a["action"], a["result"]) for a in rep.actions] == [
        ("stranded_claim", "release", "done")], rep.to_table()
    row = novadb.get_instance(nova_db.engine, u)
    assert (row["vm_state"], row["task_state"], row["deleted"]) == ("soft-delete", None, 0)
    assert markers(nova_db.engine, u) == []
    assert domain_exists(fmhost.conn, u) and (fmhost.instances / u / "disk").exists()
    recs = [x for x in fmhost.audit() if x["event"] == "action"]
    assert recs[-1]["classification"] == "stranded_claim" and recs[-1]["action"] == "release"
    again = r.run_pass("reap")
    assert again.actions == [], again.to_table()
    r.close()


@pytest.mark.parametrize("marker", [
    pytest.param(None, id="no-marker-nova-force-delete"),
    pytest.param("other-host:2026-01-01T00:00:00:req-x", id="other-hosts-marker"),
])
@pytest.mark.parametrize("interval", [pytest.param(INTERVAL, id="reclaim-on"),
                                      pytest.param(0, id="reclaim-off")])
def test_foreign_claim_untouched(fmhost, nova_db, marker, interval):
    """A soft-deleted row of this host is at task_state=deleting with no marker (Nova's
    own force-delete in progress) or another host's marker, and no journal entry.

    Expect: reported as foreign_claim on every pass (exit 3), never released or
    finished: the row, its dependents, the domain and the files stay exactly as they are.
    """
    u = soft_deleted(nova_db.engine, fmhost.name)
    fmhost.domain(u, running=False)
    set_row(nova_db.engine, u, task_state="deleting")
    if marker:
        novadb.add_row(nova_db.engine, schema.instance_system_metadata, instance_uuid=u,
                       key="reaper_claim", value=marker)
    before = snapshot(nova_db.engine, u)
    r = fmhost.reaper(reclaim_instance_interval=interval)
    for _ in range(2):
        rep = r.run_pass("reap")
        assert [(f["classification"], f["action"]) for f in rep.findings] == [
            ("foreign_claim", "log")], rep.to_table()
        assert rep.actions == [] and rep.exit_code == 3
    assert snapshot(nova_db.engine, u) == before
    assert domain_exists(fmhost.conn, u) and (fmhost.instances / u / "disk").exists()
    r.close()


def test_claim_db_error_releases_only_ours(fmhost, nova_db, monkeypatch):
    """Between plan and act Nova's force-delete of the soft-deleted instance takes the
    row (task_state=deleting, uncommitted); the reaper's claim waits on its lock and
    fails with a DB error, and Nova then commits.

    Expect: the failed claim releases nothing (the row is not our claim: no marker),
    so Nova's delete keeps its row at deleting; the action fails (exit 1) and the
    journaled attempt backs off on the next pass, which reports a foreign_claim; domain
    and files untouched.
    """
    u = soft_deleted(nova_db.engine, fmhost.name)
    fmhost.domain(u, running=False)
    r = fmhost.reaper()
    r.engine = engine_of(nova_db, lock_timeout=1)
    nova = {"conn": None, "trans": None}
    original_verify, original_release = teardown._verify, nova_reclaim.release

    def force_delete_lands(ctx, plan, **kw):
        out = original_verify(ctx, plan, **kw)
        if nova["conn"] is None:
            nova["conn"] = nova_db.engine.connect()
            nova["trans"] = nova["conn"].begin()
            nova["conn"].execute(sa.update(schema.instances).where(
                schema.instances.c.uuid == u, schema.instances.c.task_state.is_(None))
                .values(task_state="deleting"))
        return out

    def nova_commits_before_the_release(*args, **kwargs):
        if nova["trans"] is not None and nova["trans"].is_active:
            nova["trans"].commit()
        return original_release(*args, **kwargs)

    monkeypatch.setattr(teardown, "_verify", force_delete_lands)
    monkeypatch.setattr(nova_reclaim, "release", nova_commits_before_the_release)
    try:
        rep = r.run_pass("reap")
    finally:
        if nova["trans"] is not None and nova["trans"].is_active:
            nova["trans"].rollback()
        if nova["conn"] is not None:
            nova["conn"].close()
    row = novadb.get_instance(nova_db.engine, u)
    assert (row["vm_state"], row["task_state"]) == ("soft-delete", "deleting"), \
        "Nova's own delete must keep its claim"
    ((step, _), (rstep, rdetail)) = rep.actions[0]["steps"]
    assert (step, rep.actions[0]["result"]) == ("claim", "failed"), rep.to_table()
    assert (rstep, rdetail) == ("release_claim", "nothing of ours to release")
    assert markers(nova_db.engine, u) == []
    monkeypatch.setattr(teardown, "_verify", original_verify)
    rep = r.run_pass("reap")
    assert [(a["result"], a.get("resumed_from") is not None) for a in rep.actions] == [
        ("backed_off", True)], rep.to_table()
    assert [f["classification"] for f in rep.findings] == ["foreign_claim"]
    assert novadb.get_instance(nova_db.engine, u)["task_state"] == "deleting"
    assert domain_exists(fmhost.conn, u) and (fmhost.instances / u / "disk").exists()
    r.close()


# --------------------------------------------------------------------------
# item 9: node identity as Nova names it
# --------------------------------------------------------------------------

def _agent(conf: str):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    env.pop("NOTIFY_SOCKET", None)
    return subprocess.Popen([sys.executable, "-m", "reaper.cmd.agent", "--config-file", conf],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(h: Host, pred, timeout=60) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred(h.audit()):
            return True
        time.sleep(0.2)
    return False


def _init_host_pass_done(recs: list[dict]) -> bool:
    """The agent started and its init_host pass ended (an audit record each)."""
    starts = [i for i, x in enumerate(recs) if x["event"] == "agent_state"
              and x.get("result") == "started"]
    return bool(starts) and any(x["event"] == "pass_summary" for x in recs[starts[-1]:])


def _gone(agent) -> str:
    if agent.poll() is None:
        return "the agent did not finish its init_host pass"
    return f"the agent exited {agent.returncode}: {agent.stderr.read()[-3000:]}"


def _orphan(h: Host, engine) -> str:
    u = novadb.add_instance(engine, host=h.name, deleted=True, deleted_at=ago(OLD))["uuid"]
    (h.instances / u).mkdir()
    (h.instances / u / "disk").write_bytes(b"x")
    return u


@pytest.mark.parametrize("nova_db", ["sqlite"], indirect=True)
@pytest.mark.parametrize("compute_id", [pytest.param(False, id="no-compute-id-file"),
                                        pytest.param(True, id="compute-id-matches")])
def test_node_named_after_libvirt_hostname_not_host(fmhost, nova_db, compute_id):
    """[DEFAULT] host differs from the node name: compute_nodes.hypervisor_hostname is
    libvirt's getHostname(), as nova-compute's libvirt driver names it, and
    hypervisor_hostname is not configured.

    Expect: the identity check passes: reaper-manage reap acts (exit 4, an orphan
    directory reaped), and reaper-agent starts and stops cleanly (exit 0, not 78).
    """
    assert fmhost.name != NODE
    if compute_id:
        with nova_db.engine.connect() as c:
            cn = c.execute(sa.select(schema.compute_nodes.c.uuid).where(
                schema.compute_nodes.c.host == fmhost.name)).scalar()
        (fmhost.tmp / "compute_id").write_text(cn + "\n")
    u = _orphan(fmhost, nova_db.engine)
    conf = fmhost.conf(node=None)
    r, rep = manage(conf, "reap")
    assert r.returncode == 4, r.stdout[-3000:] + r.stderr[-3000:]
    assert rep["guards"] == [] and not (fmhost.instances / u).exists()
    agent = _agent(conf)
    try:
        assert _wait_for(fmhost, _init_host_pass_done), _gone(agent)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(60) == 0, agent.stderr.read()[-3000:]
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    started = [x for x in fmhost.audit() if x["event"] == "agent_state"]
    assert [x["result"] for x in started] == ["started", "stopped"]


@pytest.mark.parametrize("nova_db", ["sqlite"], indirect=True)
@pytest.mark.parametrize("rename", [
    pytest.param("row", id="compute-node-named-otherwise"),
    pytest.param("compute_id", id="compute-id-of-another-node"),
    pytest.param("configured", id="configured-node-name-differs"),
])
def test_renamed_node_refused(fmhost, nova_db, rename):
    """The node was renamed: libvirt's getHostname() names no compute_nodes row of this
    host, or nova-compute's compute_id file holds another uuid, or a configured
    hypervisor_hostname names no row.

    Expect: every pass is refused by host_identity (exit 5, the orphan directory kept)
    and reaper-agent refuses to start with exit 78.
    """
    if rename == "row":
        with nova_db.engine.begin() as c:
            c.execute(sa.update(schema.compute_nodes)
                      .where(schema.compute_nodes.c.host == fmhost.name)
                      .values(hypervisor_hostname="old-" + NODE))
    elif rename == "compute_id":
        (fmhost.tmp / "compute_id").write_text(novadb.new_uuid())
    u = _orphan(fmhost, nova_db.engine)
    conf = fmhost.conf(node="renamed-node" if rename == "configured" else None)
    r, rep = manage(conf, "reap")
    assert r.returncode == 5, r.stdout[-3000:] + r.stderr[-3000:]
    assert [g["guard"] for g in rep["guards"]] == ["host_identity"]
    assert (fmhost.instances / u / "disk").exists()
    agent = _agent(conf)
    try:
        assert agent.wait(60) == 78, agent.stderr.read()[-3000:]
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert [x["event"] for x in fmhost.audit()][-1] == "guard_tripped"


@pytest.mark.parametrize("nova_db", ["sqlite"], indirect=True)
def test_node_name_unknown_libvirt_down(fmhost, nova_db):
    """hypervisor_hostname is not configured and libvirt cannot be reached, so the node
    name nova-compute uses cannot be learnt.

    Expect: passes are refused (host_identity: node name unknown; exit 1 since the
    domain collector failed too), nothing is reaped; reaper-agent does not exit 78 (it
    starts, waiting for libvirt) and stops with 0.
    """
    u = _orphan(fmhost, nova_db.engine)
    conf = fmhost.conf(node=None, uri=f"test://{fmhost.tmp / 'missing' / 'node.xml'}")
    r, rep = manage(conf, "reap")
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    ident = [g for g in rep["guards"] if g["guard"] == "host_identity"]
    assert ident and "node's name is unknown" in ident[0]["reason"]
    assert (fmhost.instances / u / "disk").exists()
    agent = _agent(conf)
    try:
        assert _wait_for(fmhost, _init_host_pass_done), _gone(agent)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(60) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait()
    assert (fmhost.instances / u / "disk").exists()


# --------------------------------------------------------------------------
# item 10: evacuations in progress
# --------------------------------------------------------------------------

def _evacuating(h: Host, engine, status: str, row_on: str) -> tuple[str, int]:
    u = novadb.add_instance(engine, host=h.name if row_on == "source" else OTHER,
                            task_state="rebuilding")["uuid"]
    mid = novadb.add_migration(engine, u, h.name, OTHER, status, "evacuation")["id"]
    h.domain(u, running=True)
    return u, mid


@pytest.mark.parametrize("nova_db", ["sqlite"], indirect=True)
@pytest.mark.parametrize("status,row_on", [
    pytest.param("accepted", "source", id="accepted-row-here"),
    pytest.param("accepted", "dest", id="accepted-row-at-dest"),
    pytest.param("pre-migrating", "source", id="pre-migrating-row-here"),
    pytest.param("pre-migrating", "dest", id="pre-migrating-row-at-dest"),
])
def test_evacuation_in_progress_guest_powered_off(fmhost, nova_db, status, row_on):
    """Three guests run here while their instances are being evacuated from this host
    (migration accepted or pre-migrating; the row names this host or the destination),
    with the default grace period (2 passes over 300 s) and max_destroy_per_pass = 1.

    Expect: the first pass powers all three off (evacuating/shutdown, exit 4), neither
    the grace period nor the mass-destruction guard holds them; definitions and files
    stay; the next pass only reports them (exit 3).
    """
    guests = [_evacuating(fmhost, nova_db.engine, status, row_on)[0] for _ in range(3)]
    keep = novadb.add_instance(nova_db.engine, host=fmhost.name)["uuid"]
    fmhost.domain(keep, running=True)
    r = fmhost.reaper(grace_observations=2, grace_seconds=300, max_destroy_per_pass=1,
                      max_destroy_fraction=0.5)
    rep = r.run_pass("reap")
    assert rep.guards == [] and rep.exit_code == 4, rep.to_table()
    assert sorted((a["instance_uuid"], a["classification"], a["action"], a["result"])
                  for a in rep.actions) == sorted(
        (u, "evacuating", "shutdown", "done") for u in guests)
    for u in guests:
        assert domain_exists(fmhost.conn, u) and not is_active(fmhost.conn, u)
        assert (fmhost.instances / u / "disk").exists()
    assert is_active(fmhost.conn, keep)
    again = r.run_pass("reap")
    assert again.actions == [] and again.exit_code == 3, again.to_table()
    assert {f["classification"] for f in again.findings} == {"evacuating"}
    r.close()


@pytest.mark.parametrize("nova_db", ["sqlite"], indirect=True)
def test_mass_evacuation_power_offs_run_while_reaps_wait(fmhost, nova_db):
    """A whole host is being evacuated: three evacuations are done (evacuated: reap) and
    two are still accepted, all five guests running, max_destroy_per_pass = 2.

    Expect: the mass-destruction guard trips for the reaps (exit 5, the three evacuated
    guests kept until an operator's approve), yet the two evacuating guests are
    powered off in that same pass (kept, with their files).
    """
    done = []
    for _ in range(3):
        u, mid = _evacuating(fmhost, nova_db.engine, "done", "dest")
        set_row(nova_db.engine, u, task_state=None)
        done.append(u)
    running = [_evacuating(fmhost, nova_db.engine, "accepted", "source")[0] for _ in range(2)]
    r = fmhost.reaper(max_destroy_per_pass=2, max_destroy_fraction=1.0)
    rep = r.run_pass("reap")
    assert [g["guard"] for g in rep.guards] == ["mass_destruction"] and rep.exit_code == 5
    assert sorted((a["instance_uuid"], a["action"], a["result"]) for a in rep.actions) == \
        sorted((u, "shutdown", "done") for u in running), rep.to_table()
    for u in running:
        assert domain_exists(fmhost.conn, u) and not is_active(fmhost.conn, u)
    for u in done:
        assert is_active(fmhost.conn, u) and (fmhost.instances / u / "disk").exists()
    results = {f["instance_uuid"]: f["result"] for f in rep.findings}
    assert {results[u] for u in done} == {"blocked"}
    assert {results[u] for u in running} == {"planned"}
    r.close()


@pytest.mark.parametrize("nova_db", ["sqlite"], indirect=True)
def test_evacuation_done_after_power_off_torn_down(fmhost, nova_db):
    """An evacuating guest was powered off; the evacuation then completes (migration
    done, the row on the destination).

    Expect: the next pass does the full evacuated teardown (exit 4): domain undefined,
    its directory removed (local storage).
    """
    u, mid = _evacuating(fmhost, nova_db.engine, "accepted", "source")
    r = fmhost.reaper()
    assert [a["action"] for a in r.run_pass("reap").actions] == ["shutdown"]
    set_migration(nova_db.engine, mid, status="done")
    set_row(nova_db.engine, u, host=OTHER, node=OTHER, task_state=None)
    rep = r.run_pass("reap")
    assert [(a["classification"], a["action"], a["result"]) for a in rep.actions] == [
        ("evacuated", "reap", "done")], rep.to_table()
    assert not domain_exists(fmhost.conn, u) and not (fmhost.instances / u).exists()
    r.close()


@pytest.mark.parametrize("nova_db", ["sqlite"], indirect=True)
@pytest.mark.parametrize("status,row_on", [
    pytest.param("error", "source", id="error-row-here"),
    pytest.param("failed", "dest", id="failed-row-at-dest"),
])
def test_evacuation_failed_guest_stays_stopped(fmhost, nova_db, status, row_on):
    """An evacuating guest was powered off; the evacuation then fails (no valid host:
    error; or the destination failed: failed), the instance in vm_state error.

    Expect: the guest stays defined and stopped with its files, reported as
    evacuation_failed (log only, exit 3) on every pass, never deleted or started.
    """
    u, mid = _evacuating(fmhost, nova_db.engine, "accepted", "source")
    r = fmhost.reaper()
    assert [a["action"] for a in r.run_pass("reap").actions] == ["shutdown"]
    set_migration(nova_db.engine, mid, status=status)
    set_row(nova_db.engine, u, vm_state="error", task_state=None,
            **({"host": OTHER, "node": OTHER} if row_on == "dest" else {}))
    for _ in range(3):
        rep = r.run_pass("reap")
        assert [(f["classification"], f["action"]) for f in rep.findings] == [
            ("evacuation_failed", "log")], rep.to_table()
        assert rep.actions == [] and rep.exit_code == 3
    assert domain_exists(fmhost.conn, u) and not is_active(fmhost.conn, u)
    assert (fmhost.instances / u / "disk").exists()
    r.close()


@pytest.mark.parametrize("nova_db", ["sqlite"], indirect=True)
@pytest.mark.parametrize("meanwhile", [
    pytest.param("error", id="evacuation-failed"),
    pytest.param("done", id="evacuation-done"),
])
def test_evacuation_changes_between_plan_and_power_off(fmhost, nova_db, monkeypatch,
                                                        meanwhile):
    """The evacuation planned as accepted fails (error) or completes (done) between plan
    and act.

    Expect: the power-off is re-verified against a fresh read of the migration: after a
    failure it is aborted and the guest keeps running; after done it still runs (the
    destination has the instance) and the guest is powered off, kept.
    """
    u, mid = _evacuating(fmhost, nova_db.engine, "accepted", "dest")
    r = fmhost.reaper()
    original = teardown._verify

    def migration_moves_on(ctx, plan, **kw):
        set_migration(nova_db.engine, mid, status=meanwhile)
        return original(ctx, plan, **kw)

    monkeypatch.setattr(teardown, "_verify", migration_moves_on)
    rep = r.run_pass("reap")
    if meanwhile == "error":
        assert [(a["action"], a["result"]) for a in rep.actions] == [("shutdown", "aborted")]
        assert is_active(fmhost.conn, u)
    else:
        assert [(a["action"], a["result"]) for a in rep.actions] == [("shutdown", "done")]
        assert domain_exists(fmhost.conn, u) and not is_active(fmhost.conn, u)
    assert (fmhost.instances / u / "disk").exists()
    r.close()


@pytest.mark.parametrize("nova_db", ["sqlite"], indirect=True)
def test_evacuating_action_log_keeps_guest_running(fmhost, nova_db):
    """evacuating_action = log while an evacuation from this host is accepted.

    Expect: the guest is reported as evacuating (log, exit 3) and keeps running.
    """
    u, _ = _evacuating(fmhost, nova_db.engine, "accepted", "source")
    acts = policy_mod.default_actions() | {Classification.EVACUATING: Action.LOG}
    r = fmhost.reaper(actions=acts)
    rep = r.run_pass("reap")
    assert [(f["classification"], f["action"]) for f in rep.findings] == [
        ("evacuating", "log")] and rep.actions == [] and rep.exit_code == 3
    assert is_active(fmhost.conn, u)
    r.close()
