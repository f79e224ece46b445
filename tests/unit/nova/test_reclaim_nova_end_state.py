"""A reclaim pass leaves Nova's databases as Nova's own reclaim does, on the demo host
(libvirt's test driver, SQLite Nova DB, instance dirs on disk): ``cleaned`` follows
whether the instance's files are gone, ``clean_attempts`` is counted, tags and console
tokens are deleted, and the API database (``[api_database] connection``) is never
touched. Row-by-row parity with Nova's own code: tests/functional/test_nova_parity.py.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import sqlite3
import subprocess
import sys

import pytest
import sqlalchemy as sa

from reaper import demo
from reaper import state as state_mod
from reaper.executor import teardown
from reaper.kinds.instance import libvirt as libvirt_inv
from reaper.nova import schema as s
from reaper.objects.fields import Action, Classification
from reaper.objects.plan import TeardownPlan
from tests.conftest import REPO
from tests.fixtures import novadb
from tests.unit.engine.test_planner import HOST, policy

RECLAIMED = ("soft_old", "soft_rowonly")


@pytest.fixture
def host(tmp_path):
    reaper, handles, cast = demo.build(str(tmp_path / "host"))
    u = {m.label: m.uuid for m in cast}
    for label in RECLAIMED + ("soft_new",):
        novadb.add_tag(handles["engine"], u[label])
        novadb.add_console_auth_token(handles["engine"], u[label])
    yield reaper, handles, u
    reaper.close()


def end_state(engine, uuid) -> dict:
    i, m, ic = s.instances, s.instance_system_metadata, s.instance_info_caches
    with engine.connect() as c:
        row = c.execute(sa.select(i).where(i.c.uuid == uuid)).mappings().one()
        attempts = c.execute(sa.select(m.c.value, m.c.deleted, m.c.id).where(
            m.c.instance_uuid == uuid, m.c.key == "clean_attempts")).all()
        cache = c.execute(sa.select(ic.c.network_info).where(
            ic.c.instance_uuid == uuid)).scalar()
        hard = {t.name: c.execute(sa.select(sa.func.count()).select_from(t).where(
            t.c[col] == uuid)).scalar() for t, col in s.HARD_DELETED_TABLES}
    return {"vm_state": row["vm_state"], "deleted": row["deleted"] == row["id"],
            "cleaned": row["cleaned"],
            "clean_attempts": [(v, d == rid) for v, d, rid in attempts],
            "network_info": cache, **hard}


def test_a_reclaim_pass_leaves_the_rows_as_novas_reclaim(host):
    reaper, handles, u = host
    eng = handles["engine"]
    cache_before = end_state(eng, u["soft_old"])["network_info"]
    rep = reaper.run_pass("reclaim")
    done = {a["instance_uuid"]: a["result"] for a in rep.actions}
    assert {done.get(u[x]) for x in RECLAIMED} == {"done"}, rep.to_table()
    for label in RECLAIMED:
        assert not os.path.exists(os.path.join(handles["instances_path"], u[label]))
        assert end_state(eng, u[label]) == {
            "vm_state": "deleted", "deleted": True, "cleaned": 1,
            "clean_attempts": [("1", True)],
            # No Neutron step here: the ports stay in the cache (reported as leftovers).
            "network_info": cache_before if label == "soft_old" else None,
            "tags": 0, "console_auth_tokens": 0}, label
    # the restorable one is untouched
    assert end_state(eng, u["soft_new"]) == {
        "vm_state": "soft-delete", "deleted": False, "cleaned": 0, "clean_attempts": [],
        "network_info": None, "tags": 1, "console_auth_tokens": 1}


@pytest.mark.parametrize("files_kept", [False, True], ids=["files-removed", "files-kept"])
def test_cleaned_says_whether_the_instances_files_are_gone(tmp_path, files_kept):
    """A reclaim whose plan keeps the directory (another domain uses it, or its
    contents could not be read) leaves ``cleaned = 0``, as Nova's own delete does when
    delete_instance_files fails, so nova-compute's _run_pending_deletes retries the
    files; clean_attempts is counted either way."""
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'nova.sqlite'}")
    s.create_all(eng)
    old = novadb.utcnow() - datetime.timedelta(days=2)
    u = novadb.add_instance(eng, host=HOST, vm_state="soft-delete", deleted_at=old)["uuid"]
    inst = tmp_path / "instances"
    (inst / u).mkdir(parents=True)
    (inst / u / "disk").write_bytes(b"disk")
    plan = TeardownPlan(u, Classification.RECLAIMABLE, Action.RECLAIM, None,
                        () if files_kept else (str(inst / u),), True, True, "reclaim")
    node = tmp_path / "node.xml"
    node.write_text(demo.node_xml([]))              # no domain uses the files
    conn = libvirt_inv.open_connection(f"test://{node}")
    st = state_mod.StateDB(str(tmp_path / "state"))
    ctx = teardown.Context(conn=conn, engine=eng, state=st,
                           policy=policy(instances_path=str(inst)), clock=novadb.utcnow)
    out = teardown.execute(ctx, plan, "req-1")
    assert out.result == "done", out
    assert (inst / u).exists() is files_kept
    got = end_state(eng, u)
    assert (got["vm_state"], got["deleted"]) == ("deleted", True)
    assert got["cleaned"] == (0 if files_kept else 1)
    assert got["clean_attempts"] == [("1", True)]
    st.close()
    conn.close()
    eng.dispose()


def _api_db(path) -> None:
    """An API DB's instance_mappings (Nova's columns) with the instances' mappings,
    queued for delete as nova-api leaves soft-deleted instances."""
    with sqlite3.connect(path) as c:
        c.execute("CREATE TABLE instance_mappings (created_at DATETIME, updated_at DATETIME,"
                  " id INTEGER PRIMARY KEY, instance_uuid VARCHAR(36) NOT NULL,"
                  " cell_id INTEGER, project_id VARCHAR(255) NOT NULL,"
                  " queued_for_delete BOOLEAN, user_id VARCHAR(255))")


def test_reaper_manage_reclaim_never_touches_the_api_database(host, tmp_path):
    """``[api_database] connection`` set (a known option, no warning): the reclaim is
    done and the API database's file is byte for byte what it was."""
    reaper, handles, u = host
    conf = demo.keep(str(tmp_path / "host"), reaper, handles)
    api = tmp_path / "nova_api.sqlite"
    _api_db(api)
    with sqlite3.connect(api) as c:
        for i, label in enumerate(RECLAIMED + ("soft_new",)):
            c.execute("INSERT INTO instance_mappings VALUES (?, NULL, ?, ?, 1, 'p', 1, 'u')",
                      ("2026-01-01 00:00:00", i + 1, u[label]))
    with open(conf, "a") as f:
        f.write(f"\n[api_database]\nconnection = sqlite:///{api}\n")
    before = hashlib.sha256(api.read_bytes()).hexdigest(), api.stat().st_mtime_ns
    r = subprocess.run([sys.executable, "-m", "reaper.cmd.manage", "--config-file", conf,
                        "reclaim", "--format", "json"], capture_output=True, text=True,
                       timeout=120, env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert "Traceback" not in r.stderr and "api_database" not in r.stderr, r.stderr
    rep = json.loads(r.stdout)
    done = {a["instance_uuid"]: a["result"] for a in rep["actions"]}
    assert {done.get(u[x]) for x in RECLAIMED} == {"done"}, r.stdout
    assert end_state(handles["engine"], u["soft_old"])["deleted"]
    assert (hashlib.sha256(api.read_bytes()).hexdigest(), api.stat().st_mtime_ns) == before
