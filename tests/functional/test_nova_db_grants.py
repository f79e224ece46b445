"""The least-privilege grants (reaper.nova.grants) on the test host's MariaDB, with
accounts holding exactly what ``reaper-manage db-grants`` prints:

- every statement the reaper runs on Nova's DB works with them: the view, the
  compare-and-act re-reads, the VIF and volume ownership re-reads (read grants), and
  claim, adopt, release, finalize in every outcome (reclaim grants); and every single
  privilege in them is needed (revoke one column's and some path fails);
- the read-only account refuses every write, changing nothing;
- ``reaper-manage`` audit, reap and reclaim as those accounts (libvirt's test driver,
  instance directories on disk): the read-only account audits and reaps what needs no
  DB write (an orphan directory, a running deleted guest), and its reclaim is refused
  up front ([database] read_only = auto) or, forced writable, fails at the claim; in
  both cases the DB and the host stay as they were. The reclaim account reclaims.

Databases and users are named fmgrants_* and dropped afterwards.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import subprocess
import sys

import pytest
import sqlalchemy as sa

from reaper import exception
from reaper import demo, finisher
from reaper.kinds.network import unplug as net_exec
from reaper.kinds.iscsi import disconnect as vol_exec
from reaper.nova import changes
from reaper.nova import evacuation
from reaper.nova import grants
from reaper.nova import reclaim
from reaper.nova import schema as s
from reaper.nova import snapshot as nova_snapshot
from reaper.nova import view as nova_view
from reaper.objects.nova import CLAIM_MARKER_KEY
from tests.conftest import service_unavailable
from tests.fixtures import novadb
from tests.fixtures.grants import GrantsDB, db_dump, generated_sql

pytestmark = pytest.mark.functional

HOST, OTHER = "fmgrants-host", "fmgrants-other"
OLD = datetime.timedelta(days=2)


@pytest.fixture(scope="module")
def gdb(request):
    """A Nova DB slice and three accounts: ``ro`` (read grants), ``rc`` (read +
    reclaim), ``ctl`` (reaper-ctl's), from the real reaper-manage db-grants."""
    server = request.getfixturevalue("_mariadb_server")
    if not isinstance(server, sa.Engine):
        service_unavailable("MariaDB", getattr(server, "orig", server))
    g = GrantsDB(server)
    try:
        novadb.add_compute_node(g.admin, HOST)
        g.account("ro", generated_sql(g.user("ro"), g.name))
        g.account("rc", generated_sql(g.user("rc"), g.name, "--reclaim"))
        ctl = generated_sql(g.user("ctl"), g.name, "--ctl")
        assert "`services`" in ctl
        g.account("ctl", ctl)
        yield g
    finally:
        g.drop()


# --------------------------------------------------------------------------
# every statement, as the accounts
# --------------------------------------------------------------------------

@dataclasses.dataclass
class Rows:
    live: str           # live on HOST: BDM (iSCSI volume), info cache with its port
    live_port: str
    archived: str       # only in shadow_instances
    moving: str         # live on OTHER, live-migrating from HOST: info cache with its port
    moving_port: str
    claimed: str        # soft-delete/deleting on HOST with HOST's reaper_claim marker
    reclaimable: str    # soft-deleted two days ago on HOST, a row in every dependent table
    young: str          # soft-deleted just now on HOST
    evacuated: str      # live on OTHER, evacuated from HOST (migration 'done')
    evacuation: int     # that migration's id


def build_rows(admin: sa.Engine) -> Rows:
    old = novadb.utcnow() - OLD
    live = novadb.add_instance(admin, host=HOST)["uuid"]
    live_port = novadb.new_uuid()
    novadb.add_info_cache(admin, live, [novadb.vif(live_port)])
    novadb.add_bdm(admin, live)
    archived = novadb.add_instance(admin, host=HOST, deleted=True, deleted_at=old)["uuid"]
    novadb.archive_instance(admin, archived)
    moving = novadb.add_instance(admin, host=OTHER)["uuid"]
    novadb.add_migration(admin, moving, HOST, OTHER, "running", "live-migration")
    moving_port = novadb.new_uuid()
    novadb.add_info_cache(admin, moving, [novadb.vif(moving_port)])
    claimed = novadb.add_instance(admin, host=HOST, vm_state="soft-delete",
                                  task_state="deleting", deleted_at=old)["uuid"]
    novadb.add_row(admin, s.instance_system_metadata, instance_uuid=claimed,
                   key=CLAIM_MARKER_KEY, value=reclaim.marker_for(HOST, old, "req-lost"))
    rec = novadb.add_instance(admin, host=HOST, vm_state="soft-delete", power_state=4,
                              deleted_at=old)["uuid"]
    novadb.add_dependents(admin, rec)
    young = novadb.add_instance(admin, host=HOST, vm_state="soft-delete", power_state=4,
                                deleted_at=novadb.utcnow())["uuid"]
    evacuated = novadb.add_instance(admin, host=OTHER)["uuid"]
    evacuation = novadb.add_migration(admin, evacuated, HOST, OTHER, "done",
                                      "evacuation")["id"]
    return Rows(live, live_port, archived, moving, moving_port, claimed, rec, young,
                evacuated, evacuation)


def read_paths(eng: sa.Engine, r: Rows) -> None:
    """Every read statement of the reaper, each checked for its answer. A statement
    the account may not run raises NovaDBError (the view's error is raised as one)."""
    local = [r.live, r.archived, r.moving, r.claimed, r.reclaimable, novadb.new_uuid()]
    view = nova_view.load_view(eng, HOST, local, fingerprint=True)
    if not view.ok:
        raise exception.NovaDBError(view.error)
    # the change check swallows its errors (None: read the whole view): a denied
    # column would only show as None here
    assert view.fingerprint is not None and view.fingerprint.missing
    assert changes.read(eng, HOST, view.fingerprint.others,
                        view.fingerprint.missing) == view.fingerprint
    assert {u.uuid for u in nova_view.load_soft_deleted(eng, HOST)} >= {
        r.claimed, r.reclaimable, r.young}
    assert view.instances[r.archived].archived and view.claim_markers[r.claimed]
    assert {b.instance_uuid for b in view.bdms} >= {r.live, r.reclaimable}
    assert {r.live, r.moving} <= set(view.info_caches)
    assert [c.host for c in view.compute_nodes] == [HOST]
    assert r.moving in {m.instance_uuid for m in view.migrations}
    row, migs = nova_view.reread(eng, r.moving)
    assert row.host == OTHER and migs
    assert nova_view.reread_instance(eng, r.archived).archived
    assert nova_view.reread_migrations(eng, r.moving)
    assert nova_view.reread_claim_markers(eng, r.claimed)
    left = reclaim.leftovers(eng, r.reclaimable)
    assert left["volumes_delete_on_termination"] and left["ports"]
    prefixes = [r.live_port[:11], r.moving_port[:11]]
    assert net_exec.db_claims(eng, HOST, prefixes) == {r.live_port[:11]: [r.live],
                                                    r.moving_port[:11]: [r.moving]}
    assert net_exec.vm_claims(eng, HOST, [r.live, r.moving]) == {
        r.live: "live on this host", r.moving: "in flight to or from this host"}
    assert r.live in {u for _, u, _, _ in vol_exec.reread_bdms(eng, HOST)}


def write_paths(eng: sa.Engine, r: Rows) -> None:
    """claim, adopt, release and finalize in each of their outcomes."""
    now = novadb.utcnow()
    assert not reclaim.claim(eng, r.young, HOST, 3600, now, "req-1")       # not expired
    assert reclaim.claim(eng, r.reclaimable, HOST, 3600, now, "req-1")
    assert not reclaim.claim(eng, r.reclaimable, HOST, 3600, now, "req-1")  # claimed
    first = reclaim.marker_for(HOST, now, "req-1")
    assert reclaim.adopt(eng, r.reclaimable, HOST, first, now, "req-2")
    assert not reclaim.adopt(eng, r.reclaimable, HOST, first, now, "req-3")  # stale marker
    second = reclaim.marker_for(HOST, now, "req-2")
    assert reclaim.release(eng, r.reclaimable, HOST, now, marker=second)
    assert not reclaim.release(eng, r.reclaimable, HOST, now, marker=second)
    assert reclaim.claim(eng, r.reclaimable, HOST, 3600, now, "req-4")
    res = reclaim.finalize(eng, r.reclaimable, now, host=HOST, ports_released=True)
    assert res["result"] == "finalized", res
    # an evacuation torn down here ends 'completed' (reaper.nova.evacuation)
    assert evacuation.complete_migration(eng, r.evacuation, r.evacuated, HOST,
                                         now) == "completed"
    assert evacuation.complete_migration(eng, r.evacuation, r.evacuated, HOST,
                                         now) == "already completed"
    assert all(res["counts"][t.name] >= 1 for t, _ in s.DEPENDENT_TABLES), res
    assert all(res["counts"][t.name] >= 1 for t, _ in s.HARD_DELETED_TABLES), res
    assert res["clean_attempts"] == "1" and res["network_info_emptied"] == 1, res
    assert reclaim.finalize(eng, r.reclaimable, now, host=HOST)["result"] == "already_finalized"
    assert reclaim.finalize(eng, r.live, now, host=HOST)["result"] == "not_claimed"
    assert reclaim.finalize(eng, r.archived, now)["result"] == "already_finalized"
    assert reclaim.finalize(eng, novadb.new_uuid(), now)["result"] == "not_found"
    assert reclaim.release(eng, r.claimed, HOST, now)           # any marker of this host


def notify_paths(eng: sa.Engine, r: Rows) -> None:
    """The delete notifications' reads (reaper.nova.snapshot): an instance claimed for
    its reclaim (.start) and, finalized, the rows soft-deleted with it (.end)."""
    now = novadb.utcnow()
    assert reclaim.claim(eng, r.reclaimable, HOST, 3600, now, "req-n")
    start = nova_snapshot.read(eng, r.reclaimable)
    assert start.instance["task_state"] == "deleting" and start.bdms and start.network_info
    assert start.metadata and start.system_metadata
    assert reclaim.finalize(eng, r.reclaimable, now, host=HOST)["finalized"]
    end = nova_snapshot.read(eng, r.reclaimable)
    assert end.instance["vm_state"] == "deleted" and end.metadata == start.metadata
    assert end.bdms == [dict(b, deleted=b["id"], deleted_at=now) for b in start.bdms]


# The functions of the reaper that run statements on Nova's DB, and the modules that
# hold them: a new one must be added to the paths above (and its grants reviewed).
EXERCISED = {
    "reaper.nova.view": {"load_view", "reread", "reread_instance", "reread_migrations",
                         "reread_claim_markers", "list_compute_hosts", "load_soft_deleted"},
    "reaper.nova.changes": {"read", "available"},
    "reaper.nova.reclaim": {"claim", "adopt", "release", "finalize", "leftovers",
                            "marker_for"},
    "reaper.kinds.network.unplug": {"db_claims", "vm_claims"},
    "reaper.kinds.iscsi.disconnect": {"reread_bdms"},
    "reaper.nova.snapshot": {"read"},
    "reaper.finisher": {"compute_services", "finish"},
    "reaper.nova.evacuation": {"complete_migration"},
}
# Modules that import the schema slice without querying Nova's DB on a compute host:
# the demo builds its own DB, reaper-ctl reads services (the --ctl grants), grants
# names the tables, columns names the view's columns (the view runs them).
NOT_QUERYING = {"reaper.demo", "reaper.cmd.ctl", "reaper.nova.grants", "reaper.nova.schema",
                "reaper.nova.columns"}


def test_every_function_that_queries_nova_is_exercised():
    import importlib
    import inspect
    import pathlib
    import reaper
    root = pathlib.Path(reaper.__file__).parent
    users = set()
    for path in root.rglob("*.py"):
        text = path.read_text()
        if "nova import schema" in text or "nova.schema" in text:
            users.add(".".join(path.relative_to(root.parent).with_suffix("").parts))
    assert users - NOT_QUERYING == set(EXERCISED), "a new module reads Nova's schema"
    for name, covered in EXERCISED.items():
        mod = importlib.import_module(name)
        public = {n for n, f in vars(mod).items() if inspect.isfunction(f)
                  and f.__module__ == name and not n.startswith("_")
                  and "engine" in inspect.signature(f).parameters}
        assert public <= covered | {"marker_for"}, f"{name}: {public - covered} not exercised"


def test_the_read_grants_run_every_read(gdb):
    rows = build_rows(gdb.admin)
    read_paths(gdb.engine("ro"), rows)
    with pytest.raises(exception.NovaDBError, match="command denied"):
        nova_view.list_compute_hosts(gdb.engine("ro"))          # services: reaper-ctl's
    assert HOST in nova_view.list_compute_hosts(gdb.engine("ctl"))
    # reaper-ctl finish: which hosts are gone, and the rows read again before acting
    assert HOST in {sv["host"] for sv in finisher.compute_services(gdb.engine("ctl"))}
    assert nova_view.reread_instance(gdb.engine("ctl"), rows.archived).archived
    assert nova_view.reread_instance(gdb.engine("ctl"), rows.live).deleted == 0
    import types
    from reaper import audit as audit_mod
    left = {"instance_uuid": rows.archived, "facts": {"uuid": rows.archived},
            "services": {"network": {"status": "failed"}}}
    rep = finisher.finish(
        [{"event": "action", "instance_uuid": rows.archived, "host": HOST,
          "classification": "reclaimable", "evidence": {"controller_leftovers": left}}],
        gdb.engine("ctl"), types.SimpleNamespace(get=lambda g: None),
        audit_mod.AuditLog(None, "controller"), dry_run=True)
    assert not rep.errors and rep.decisions, rep.to_dict()
    assert not grants.detect(gdb.engine("ro")).writable


def test_the_reclaim_grants_run_every_write(gdb):
    rows = build_rows(gdb.admin)
    eng = gdb.engine("rc")
    assert grants.detect(eng).writable, grants.detect(eng).reason
    read_paths(eng, rows)
    write_paths(eng, rows)
    row = novadb.get_instance(gdb.admin, rows.reclaimable)
    assert row["vm_state"] == "deleted" and row["deleted"] == row["id"]
    notify_paths(eng, build_rows(gdb.admin))


def test_the_read_grants_cannot_read_the_delete_notifications(gdb):
    """Without the reclaim grants the notification reads are refused (and no reclaim
    runs there anyway: read_only = auto)."""
    rows = build_rows(gdb.admin)
    with pytest.raises(exception.NovaDBError, match="denied"):
        nova_snapshot.read(gdb.engine("ro"), rows.reclaimable)


def test_the_read_grants_refuse_every_write_and_change_nothing(gdb):
    r = build_rows(gdb.admin)
    eng, now = gdb.engine("ro"), novadb.utcnow()
    before = db_dump(gdb.admin)
    for call in (lambda: reclaim.claim(eng, r.reclaimable, HOST, 3600, now, "req-ro"),
                 lambda: reclaim.adopt(eng, r.claimed, HOST, "x", now, "req-ro"),
                 lambda: reclaim.release(eng, r.claimed, HOST, now),
                 lambda: reclaim.finalize(eng, r.claimed, now, host=HOST)):
        with pytest.raises(exception.NovaDBError, match="command denied"):
            call()
    assert db_dump(gdb.admin) == before


def _revoke(gdb, role: str, need, grant_back: bool = False) -> None:
    priv, table, col = need
    what = f"{priv} (`{col}`)" if col else priv
    verb, prep = ("GRANT", "TO") if grant_back else ("REVOKE", "FROM")
    gdb.execute(f"{verb} {what} ON `{gdb.name}`.`{table}` {prep} '{gdb.user(role)}'@'%'")


def _denied(fn, *args) -> str | None:
    """The error of ``fn`` if the DB refused one of its statements, None if it ran."""
    try:
        fn(*args)
    except exception.NovaDBError as e:
        if "denied" in str(e):
            return str(e)
        raise
    return None


def test_every_privilege_granted_is_needed(gdb):
    """One column's privilege (or DELETE) revoked: some path fails, and for a reclaim
    privilege [database] read_only = auto says read-only (no reclaim would start)."""
    rows = build_rows(gdb.admin)
    unneeded = []
    for need in grants.needs(grants.READ):
        _revoke(gdb, "ro", need)
        try:
            if _denied(read_paths, gdb.engine("ro"), rows) is None:
                unneeded.append(need)
        finally:
            _revoke(gdb, "ro", need, grant_back=True)
    eng = gdb.engine("rc")
    for need in grants.needs(grants.RECLAIM):
        _revoke(gdb, "rc", need)
        try:
            assert not grants.detect(eng).writable, need
            if _denied(write_paths, eng, build_rows(gdb.admin)) is None:
                unneeded.append(need)
        finally:
            _revoke(gdb, "rc", need, grant_back=True)
    for need in grants.needs(grants.NOTIFY):
        _revoke(gdb, "rc", need)
        try:
            assert grants.detect(eng).writable, need        # reads: not asked by detect
            if _denied(notify_paths, eng, build_rows(gdb.admin)) is None:
                unneeded.append(need)
        finally:
            _revoke(gdb, "rc", need, grant_back=True)
    assert unneeded == [], "granted but never needed"
    assert grants.detect(eng).writable


# --------------------------------------------------------------------------
# reaper-manage as those accounts
# --------------------------------------------------------------------------

@dataclasses.dataclass
class Host:
    tmp: object
    gdb: GrantsDB
    name: str
    node_xml: str
    instances: object
    uuids: dict

    def conf(self, role: str, url: str | None = None, **database) -> str:
        path = self.tmp / f"reaper-{role}.conf"
        path.write_text(
            f"[DEFAULT]\nhost = {self.name}\nhypervisor_hostname = {self.name}\n"
            f"instances_path = {self.instances}\nstate_path = {self.tmp / 'state'}\n"
            f"compute_id_file =\nuse_stderr = true\n"
            f"[database]\nconnection = {url or self.gdb.url(role)}\n"
            + "".join(f"{k} = {v}\n" for k, v in database.items())
            + f"[libvirt]\nconnection_uri = test://{self.node_xml}\n"
            f"[network]\nenabled = false\n"
            f"[reaper]\naudit_log = {self.tmp / 'audit.log'}\ngrace_observations = 1\n"
            f"grace_seconds = 0\nmax_destroy_fraction = 1.0\ninstances_path_shared = false\n"
            f"reclaim_instance_interval = 3600\nrunning_deleted_timeout = 0\n")
        return str(path)

    def manage(self, role: str, *args: str, url: str | None = None,
               **database) -> tuple[int, dict | None, str]:
        r = subprocess.run([sys.executable, "-m", "reaper.cmd.manage", "--config-file",
                            self.conf(role, url, **database), *args],
                           capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, PYTHONPATH=os.getcwd()))
        assert "Traceback" not in r.stderr, r.stderr
        try:
            report = json.loads(r.stdout)
        except ValueError:
            report = None
        return r.returncode, report, r.stdout + r.stderr

    def dirs(self) -> list[str]:
        return sorted(os.listdir(self.instances))

    def journal(self) -> list:
        from reaper import state as state_mod
        st = state_mod.StateDB(str(self.tmp / "state"))
        try:
            return st.unfinished()
        finally:
            st.close()


@pytest.fixture
def host(gdb, tmp_path, instances_path):
    """A host of its own on the grants DB: a live guest, an orphan directory, a running
    deleted guest and a reclaimable (shut off) guest, each with its directory; the
    guests are libvirt test-driver domains (each process starts from the node file)."""
    name = f"fmgrants-{os.urandom(4).hex()}"
    eng = gdb.admin
    novadb.add_compute_node(eng, name)
    old = novadb.utcnow() - OLD
    u = {k: novadb.new_uuid() for k in ("live", "orphan", "running_deleted", "reclaimable")}
    novadb.add_instance(eng, u["live"], host=name)
    novadb.add_instance(eng, u["orphan"], host=name, deleted=True, deleted_at=old)
    novadb.add_instance(eng, u["running_deleted"], host=name, deleted=True, deleted_at=old)
    novadb.add_instance(eng, u["reclaimable"], host=name, vm_state="soft-delete",
                        power_state=4, deleted_at=old)
    novadb.add_dependents(eng, u["reclaimable"])
    domains = []
    for label, state in (("live", demo.RUNNING), ("running_deleted", demo.RUNNING),
                         ("reclaimable", demo.SHUTOFF)):
        d = instances_path.instance(u[label])
        domains.append(demo.domain_xml(u[label], f"{name}-{label}", state=state,
                                       disks=[str(d / "disk")]))
    instances_path.instance(u["orphan"])
    node = tmp_path / "node.xml"
    node.write_text(demo.node_xml(domains))
    return Host(tmp_path, gdb, name, str(node), instances_path.path, u)


def _by_uuid(report: dict, key: str) -> dict:
    return {x["instance_uuid"]: x for x in report[key]}


def test_reaper_manage_as_the_read_only_account(host):
    u, eng = host.uuids, host.gdb.admin
    before, before_dirs = db_dump(eng), host.dirs()

    rc, rep, out = host.manage("ro", "audit", "--format", "json")
    assert rc == 3, out
    f = _by_uuid(rep, "findings")
    assert f[u["reclaimable"]]["action"] == "log" and rep["db_read_only"]
    assert f[u["orphan"]]["classification"] == "orphan_dir"

    # reclaim: refused up front, nothing changes anywhere
    rc, rep, out = host.manage("ro", "reclaim", "--format", "json")
    assert rc == 3 and rep["actions"] == [], out
    assert "holds none of the privileges a reclaim writes with" in rep["db_read_only"]
    f = _by_uuid(rep, "findings")[u["reclaimable"]]
    assert (f["classification"], f["action"]) == ("reclaimable", "log")
    assert "not reclaimed: the Nova DB is read-only" in f["reason"]
    assert db_dump(eng) == before and host.dirs() == before_dirs and host.journal() == []
    rc, _, out = host.manage("ro", "reclaim")            # the table says it too
    assert rc == 3 and "NOVA DB READ-ONLY" in out

    # reap: what needs no DB write is done
    rc, rep, out = host.manage("ro", "reap", "--format", "json")
    assert rc == 4, out
    acts = {a["instance_uuid"]: (a["classification"], a["result"]) for a in rep["actions"]}
    assert acts == {u["orphan"]: ("orphan_dir", "done"),
                    u["running_deleted"]: ("running_deleted", "done")}, out
    assert host.dirs() == sorted([u["live"], u["reclaimable"]])
    assert db_dump(eng) == before, "the read-only account changed the Nova DB"


def test_forced_writable_read_only_account_fails_at_the_claim_changing_nothing(host):
    u, eng = host.uuids, host.gdb.admin
    before, before_dirs = db_dump(eng), host.dirs()
    rc, rep, out = host.manage("ro", "reclaim", "--format", "json", read_only="false")
    assert rc == 1, out
    (act,) = rep["actions"]
    assert (act["instance_uuid"], act["result"]) == (u["reclaimable"], "failed")
    steps = dict(act["steps"])
    assert "UPDATE command denied" in steps["claim"], steps
    assert "release failed too" in steps["release_claim"] or \
        steps["release_claim"] == "nothing of ours to release", steps
    assert [s for s, _ in act["steps"]] == ["claim", "release_claim"], "went past the claim"
    assert rep["db_read_only"] is None
    assert db_dump(eng) == before and host.dirs() == before_dirs
    # The journal keeps the attempt: a reap resumes it, and it fails the same way.
    only = ("--instance", u["reclaimable"], "--format", "json")
    rc, rep, out = host.manage("ro", "reap", *only, read_only="false")
    assert rc == 1 and [a["result"] for a in rep["actions"]] == ["failed"], out
    assert db_dump(eng) == before and host.dirs() == before_dirs
    # Detection on: the attempt waits instead of failing.
    rc, rep, out = host.manage("ro", "reap", *only)
    assert [a["result"] for a in rep["actions"]] == ["held_read_only"], out
    assert rc == 3 and db_dump(eng) == before and host.dirs() == before_dirs, out
    assert len(host.journal()) == 1


def test_reaper_manage_as_the_reclaim_account(host):
    u, eng = host.uuids, host.gdb.admin
    rc, rep, out = host.manage("rc", "reclaim", "--format", "json")
    assert rc == 4, out
    acts = {a["instance_uuid"]: (a["classification"], a["result"]) for a in rep["actions"]}
    assert acts == {u["reclaimable"]: ("reclaimable", "done")}, out
    row = novadb.get_instance(eng, u["reclaimable"])
    assert row["vm_state"] == "deleted" and row["deleted"] == row["id"]
    with eng.connect() as c:
        for table, col in s.DEPENDENT_TABLES:
            live = c.execute(sa.select(sa.func.count()).select_from(table).where(
                table.c[col] == u["reclaimable"], table.c.deleted == 0)).scalar()
            assert live == 0, table.name
    assert u["reclaimable"] not in host.dirs() and host.journal() == []
    rc, rep, out = host.manage("rc", "reap", "--format", "json")
    assert rc == 4 and rep["db_read_only"] is None, out


def test_db_grants_check_reports_what_each_account_holds(host):
    rc, _, out = host.manage("ro", "db-grants", "--check")
    assert rc == 0, out
    assert "read: complete" in out and "reclaim: missing" in out and "(not asked for)" in out
    assert "read-only (reclaim off)" in out and "beyond what it needs" not in out
    rc, _, out = host.manage("ro", "db-grants", "--check", "--reclaim")
    assert rc == 1, out
    rc, _, out = host.manage("rc", "db-grants", "--check", "--reclaim")
    assert rc == 0 and "may write (reclaim on)" in out, out
    # The test host's own account holds everything: reported as more than needed.
    admin = host.gdb.admin_url.render_as_string(hide_password=False)
    rc, _, out = host.manage("admin", "db-grants", "--check", "--reclaim", url=admin)
    assert rc == 0 and "beyond what it needs: ALL PRIVILEGES ON *.*" in out, out
