"""Journals written by the previous layout resume unchanged.

Why: the reaper's state DB (reaper/state.py) outlives an upgrade. A teardown that a
crash interrupted under one version is resumed by the next: its plan JSON, its
step names and their statuses must still be read, re-verified and finished the
same way after issue 10 moves the code. The saved journals under
tests/golden/journal/ were written by the code before the refactor; this test loads
each into a fresh state dir and resumes it with the code under test.

Each case is the demo host (reaper/demo.py, seeded uuids: libvirt's test driver,
SQLite Nova DB, instance dirs) whose reap pass crashed at one step of one teardown:
either right after the step was journaled ``started`` (before it ran) or right
after it ran (before ``done`` was written). The crash is a BaseException raised
from around the executor's step runner, which nothing in the reaper catches: like a
kill, the entry stays ``running``. Saved per case (``@ROOT@`` stands for the host's
temporary root, the one rewrite done on loading): the state DB and the Nova DB as
SQL dumps, the test driver's node XML as the crash left it, the instance files, and
``expected.json``: the resumed pass (normalized) and the end state.

``REAPER_GOLDEN_REGEN=1`` writes the cases again WITH THE CURRENT CODE: do that only
before a layout change, never to make this test pass after one.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import sqlite3
import types
import uuid as uuidlib

import pytest
import sqlalchemy as sa

from reaper import audit as audit_mod
from reaper import demo, reconcile
from reaper import state as state_mod
from reaper.executor import teardown
from reaper.kinds.instance import libvirt as libvirt_inv
from tests.fixtures import golden

CASE_DIR = golden.GOLDEN_DIR / "journal"
SEED = 10

# (teardown type, demo label, step to crash at, when): every step of each teardown
# type the demo host has.
CASES = [
    ("evacuated", "evacuated", "destroy_domain", "before"),
    ("evacuated", "evacuated", "destroy_domain", "after"),
    ("evacuated", "evacuated", "delete_files", "before"),
    ("evacuated", "evacuated", "delete_files", "after"),
    ("evacuated", "evacuated", "undefine_domain", "before"),
    ("running_deleted", "deleted_old", "destroy_domain", "after"),
    ("running_deleted", "deleted_old", "delete_files", "before"),
    ("running_deleted", "deleted_old", "undefine_domain", "after"),
    ("reclaim", "soft_old", "claim", "before"),
    ("reclaim", "soft_old", "claim", "after"),
    ("reclaim", "soft_old", "destroy_domain", "after"),
    ("reclaim", "soft_old", "delete_files", "before"),
    ("reclaim", "soft_old", "delete_files", "after"),
    ("reclaim", "soft_old", "undefine_domain", "after"),
    ("reclaim", "soft_old", "finalize_db", "before"),
    ("reclaim", "soft_old", "finalize_db", "after"),
    ("reclaim_row_only", "soft_rowonly", "claim", "after"),
    ("reclaim_row_only", "soft_rowonly", "finalize_db", "before"),
    ("orphan_dir", "orphan", "delete_files", "before"),
    ("orphan_dir", "orphan", "delete_files", "after"),
    ("stale_resize", "stale_resize", "delete_files", "after"),
    ("interrupted_delete", "interrupted", "delete_files", "before"),
]


def case_id(c) -> str:
    return f"{c[0]}-{c[2]}-{c[3]}"


class Crash(BaseException):
    """A kill -9 between two journal writes."""


def _seeded(monkeypatch) -> None:
    rnd = random.Random(SEED)
    monkeypatch.setattr(demo, "uuidlib", types.SimpleNamespace(
        uuid4=lambda: uuidlib.UUID(int=rnd.getrandbits(128), version=4)))


def _node_xml(handles) -> str:
    """The test driver's domains as the passes left them (its changes live in the
    connection only), like demo.keep."""
    left = []
    for dom in sorted(handles["conn"].listAllDomains(0), key=lambda d: d.name()):
        left.append(re.sub(r"<test:runstate>\d+</test:runstate>",
                           f"<test:runstate>{dom.state()[0]}</test:runstate>",
                           handles["domain_xml"][dom.name()]))
    return demo.node_xml(left)


def _dump(path: str) -> str:
    db = sqlite3.connect(path)
    try:
        return "\n".join(db.iterdump()) + "\n"
    finally:
        db.close()


def _files(inst_path: str) -> dict[str, str]:
    out = {}
    for d, subdirs, fs in os.walk(inst_path):
        rel = os.path.relpath(d, inst_path)
        if not fs and not subdirs:
            out[rel + "/"] = ""
        for f in fs:
            with open(os.path.join(d, f), "rb") as fh:
                data = fh.read()
            # the demo's disks are zeros: saved as their size
            out[os.path.join(rel, f)] = (f"<{len(data)} zero bytes>" if data and not data.strip(b"\0")
                                         else data.decode("latin-1"))
    return dict(sorted(out.items()))


def record(case, tmp_path, monkeypatch) -> None:
    """Write a case's saved journal and scene with the current code."""
    kind, label, step, when = case
    _seeded(monkeypatch)
    root = str(tmp_path / "rec")
    os.makedirs(root)
    reaper, handles, cast = demo.build(root)
    target = next(m.uuid for m in cast if m.label == label)
    real = teardown._run_step

    def crashing(ctx, plan, s, *a, **kw):
        if plan.instance_uuid == target and s == step:
            if when == "before":
                raise Crash(s)
            real(ctx, plan, s, *a, **kw)
            raise Crash(s)
        return real(ctx, plan, s, *a, **kw)

    monkeypatch.setattr(teardown, "_run_step", crashing)
    with pytest.raises(Crash):
        reaper.run_pass("reap")
    monkeypatch.setattr(teardown, "_run_step", real)
    reaper.state._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    out = CASE_DIR / case_id(case)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rel = lambda text: text.replace(root, "@ROOT@")      # noqa: E731
    (out / "state.sql").write_text(rel(_dump(reaper.state.path)))
    (out / "nova.sql").write_text(rel(_dump(os.path.join(root, "nova.sqlite"))))
    (out / "node.xml").write_text(rel(_node_xml(handles)))
    (out / "files.json").write_text(json.dumps(_files(handles["instances_path"]), indent=1,
                                               sort_keys=True) + "\n")
    (out / "case.json").write_text(json.dumps(
        {"kind": kind, "label": label, "step": step, "when": when, "instance_uuid": target,
         "labels": {m.uuid: m.label for m in cast}}, indent=1, sort_keys=True) + "\n")
    reaper.close()


def load(case_dir, root: str):
    """A fresh demo host from a saved case: its Reaper, connection and Nova engine."""
    sub = lambda text: text.replace("@ROOT@", root)     # noqa: E731
    inst = os.path.join(root, "instances")
    os.makedirs(inst)
    for rel, content in json.loads((case_dir / "files.json").read_text()).items():
        p = os.path.normpath(os.path.join(inst, rel))
        if rel.endswith("/"):
            os.makedirs(p, exist_ok=True)
            continue
        os.makedirs(os.path.dirname(p), exist_ok=True)
        m = re.fullmatch(r"<(\d+) zero bytes>", content)
        with open(p, "wb") as f:
            f.write(b"\0" * int(m.group(1)) if m else content.encode("latin-1"))
    nova = os.path.join(root, "nova.sqlite")
    db = sqlite3.connect(nova)
    db.executescript(sub((case_dir / "nova.sql").read_text()))
    db.close()
    os.makedirs(os.path.join(root, "state"), mode=0o700)
    db = sqlite3.connect(os.path.join(root, "state", state_mod.DB_NAME))
    db.executescript(sub((case_dir / "state.sql").read_text()))
    db.close()
    node = os.path.join(root, "node.xml")
    with open(node, "w") as f:
        f.write(sub((case_dir / "node.xml").read_text()))
    conn = libvirt_inv.open_connection(f"test://{node}")
    engine = sa.create_engine(f"sqlite:///{nova}")
    pol = demo.policy_mod.Policy(
        host=demo.HOST, hypervisor_hostname=demo.HOST, instances_path=inst,
        actions=demo.policy_mod.default_actions(), reclaim_instance_interval=3600,
        running_deleted_timeout=600, grace_observations=1, grace_seconds=0,
        max_destroy_per_pass=10, max_destroy_fraction=1.0, instances_path_shared="false")
    reaper = reconcile.Reaper(
        policy=pol, libvirt_uri=f"test://{node}", engine=engine,
        state=state_mod.StateDB(os.path.join(root, "state")),
        audit=audit_mod.AuditLog(os.path.join(root, "audit.log"), demo.HOST),
        connect=lambda: conn)
    return reaper, conn, engine


def resume(case_dir, root: str) -> dict:
    """Resume the saved journal with the code under test: a reap pass of the
    interrupted instance only (the rest of the demo host ages with the wall clock,
    this instance's teardown does not depend on it)."""
    meta = json.loads((case_dir / "case.json").read_text())
    u = meta["instance_uuid"]
    reaper, conn, engine = load(case_dir, root)
    try:
        before = {e.id: dict(e.steps) for e in reaper.state.unfinished(teardown.steps_for)}
        rep = reaper.run_pass("reap", only_uuid=u)
        again = reaper.run_pass("reap", only_uuid=u)
        with engine.connect() as c:
            row = c.execute(sa.text("SELECT vm_state, task_state, deleted, host FROM "
                                    "instances WHERE uuid=:u"), {"u": u}).mappings().first()
        state = golden.journal_rows(reaper.state.path)
        got = {
            "unfinished_before": before,
            "resume_pass": {"exit_code": rep.exit_code, "actions": rep.actions,
                            "findings": rep.findings, "errors": rep.errors,
                            "guards": rep.guards, "quarantined": rep.quarantined,
                            "journal": rep.journal},
            "next_pass": {"exit_code": again.exit_code, "actions": again.actions,
                          "findings": again.findings},
            "journal_of_instance": [j for j in state["journal"] if j["instance_uuid"] == u],
            "steps_of_instance": [s for s in state["journal_steps"] if s["journal_id"] in {
                j["id"] for j in state["journal"] if j["instance_uuid"] == u}],
            "unfinished_after": len(reaper.state.unfinished(teardown.steps_for)),
            "domain_left": any(d.UUIDString() == u for d in conn.listAllDomains(0)),
            "dirs_left": sorted(d for d in os.listdir(os.path.join(root, "instances"))
                                if d.startswith(u)),
            "nova_row": dict(row) if row else None,
        }
    finally:
        reaper.close()
    norm = golden.Normalizer({root: "<root>"})
    for uu, label in meta["labels"].items():
        norm.add(uu, f"<{label}>")
    return norm(got)


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_saved_journal_resumes_unchanged(case, tmp_path, monkeypatch):
    case_dir = CASE_DIR / case_id(case)
    if golden.REGEN:
        record(case, tmp_path, monkeypatch)
        monkeypatch.undo()
    assert (case_dir / "state.sql").exists(), \
        f"no saved journal {case_dir}: REAPER_GOLDEN_REGEN=1 records it (old layout only)"
    got = resume(case_dir, str(tmp_path / "resume"))
    # what must hold whatever was recorded: the entry was read, resumed and finished
    assert got["unfinished_before"], "the saved entry was not read as unfinished"
    assert got["unfinished_after"] == 0
    assert not got["domain_left"] and got["dirs_left"] == []
    golden.check(f"journal/{case_id(case)}/expected", got)
