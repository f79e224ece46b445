"""The audit log across rotations (reopened like WatchedFileHandler) and its lines in
the normal log (a short human line, not the JSON a second time).

Rotation under load, the real logrotate and the listeners over RabbitMQ are
fault-matrix scenarios (tests/functional/faultmatrix/test_fm_logs.py).
"""
from __future__ import annotations

import json
import logging
import os
import stat

import pytest

from reaper import audit as audit_mod
from reaper import demo, metrics
from reaper.agent import service


def records(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def ids(path) -> list[str]:
    return [r["pass_id"] for r in records(path)]


def test_a_renamed_audit_log_is_reopened(tmp_path):
    path = tmp_path / "audit.log"
    log = audit_mod.AuditLog(str(path), "h")
    log.record("finding", "req-1")
    os.rename(path, tmp_path / "audit.log.1")            # logrotate without create
    log.record("finding", "req-2")
    log.record("finding", "req-3")
    log.close()
    assert ids(tmp_path / "audit.log.1") == ["req-1"]
    assert ids(path) == ["req-2", "req-3"]
    assert stat.S_IMODE(os.stat(path).st_mode) == audit_mod.AUDIT_MODE


def test_the_file_logrotate_created_is_the_one_written(tmp_path):
    """logrotate's ``create``: rename, then a new empty file of its own making."""
    path = tmp_path / "audit.log"
    log = audit_mod.AuditLog(str(path), "h")
    log.record("finding", "req-1")
    os.rename(path, tmp_path / "audit.log.1")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
    os.close(fd)
    created = os.stat(path).st_ino
    log.record("finding", "req-2")
    log.close()
    assert os.stat(path).st_ino == created and ids(path) == ["req-2"]
    assert ids(tmp_path / "audit.log.1") == ["req-1"]


def test_a_removed_audit_log_is_created_again(tmp_path):
    path = tmp_path / "audit.log"
    log = audit_mod.AuditLog(str(path), "h")
    log.record("finding", "req-1")
    os.unlink(path)
    log.record("finding", "req-2")
    log.close()
    assert ids(path) == ["req-2"]


def test_a_failed_reopen_fails_the_record_and_is_retried(tmp_path):
    """The path cannot be opened for a while (here a directory stands there): that
    record raises, as any failed write does, and the next one reopens."""
    path = tmp_path / "audit.log"
    log = audit_mod.AuditLog(str(path), "h")
    log.record("finding", "req-1")
    os.rename(path, tmp_path / "audit.log.1")
    path.mkdir()
    with pytest.raises(OSError):
        log.record("finding", "req-lost")
    path.rmdir()
    log.record("finding", "req-2")
    log.close()
    assert ids(path) == ["req-2"] and ids(tmp_path / "audit.log.1") == ["req-1"]


def test_no_record_is_written_after_close(tmp_path):
    path = tmp_path / "audit.log"
    log = audit_mod.AuditLog(str(path), "h")
    log.close()
    os.unlink(path)
    log.record("finding", "req-1")                        # logged only, no file again
    assert not path.exists()


@pytest.fixture
def audit_lines(caplog):
    """(level, message) of what reaper.audit sends to the normal log."""
    caplog.set_level(logging.DEBUG, logger="reaper.audit")

    def lines():
        return [(r.levelno, r.getMessage()) for r in caplog.records
                if r.name == "reaper.audit" and "reopening" not in r.getMessage()]
    return lines


def test_the_normal_log_gets_a_short_line_not_the_json(tmp_path, audit_lines):
    log = audit_mod.AuditLog(str(tmp_path / "audit.log"), "h")
    log.record("action", "req-1", kind="domain", resource="instance-00000001",
               instance_uuid="u-1", classification="evacuated", action="reap",
               result="done", reason="evacuated to\nhost2 " + "x" * 500,
               evidence={"steps": ["destroy"] * 50})
    log.record("action", "req-1", kind="instance_dir", resource="/i/u-2", action="reap",
               classification="orphan_dir", instance_uuid="u-2", result="failed",
               reason="EBUSY")
    log.record("guard_tripped", "req-2", action="refuse", result="blocked",
               reason="too many", guard="mass_destruction")
    log.close()
    (lvl1, msg1), (lvl2, msg2), (lvl3, msg3) = audit_lines()
    for msg in (msg1, msg2, msg3):
        assert "{" not in msg and "\n" not in msg and len(msg) < 400, msg
    assert msg1.startswith("action reap evacuated domain instance-00000001 instance u-1: "
                           "done (evacuated to host2 xxx")
    assert msg1.endswith("...) [req-1]") and lvl1 == logging.INFO
    assert lvl2 == logging.ERROR and "orphan_dir instance_dir /i/u-2 instance u-2: failed" in msg2
    assert lvl3 == logging.WARNING
    assert msg3 == "guard_tripped mass_destruction refuse: blocked (too many) [req-2]"


def test_without_an_audit_file_the_normal_log_gets_the_whole_record(audit_lines):
    """``audit_log =``: the normal log is the only copy, so it keeps the JSON."""
    log = audit_mod.AuditLog(None, "h")
    log.record("finding", "req-1", kind="domain", resource="instance-1",
               evidence={"why": "x"})
    [(lvl, msg)] = audit_lines()
    assert json.loads(msg)["evidence"] == {"why": "x"} and lvl == logging.INFO


def test_listeners_keep_working_across_a_reopen(tmp_path):
    """The metrics textfile counts the passes on both sides of a rotation."""
    reaper, _, _ = demo.build(str(tmp_path / "host"))
    path = str(tmp_path / "reaper.prom")
    m = metrics.Metrics(path, backlog=reaper.state.backlog)
    seen: list[dict] = []
    reaper.audit.subscribe(m)
    reaper.audit.subscribe(seen.append)
    agent = service.Agent(reaper)
    log = str(tmp_path / "host" / "audit.log")
    try:
        first = agent.run_pass("audit")
        os.rename(log, log + ".1")
        second = agent.run_pass("audit")
    finally:
        reaper.close()
    assert {r["pass_id"] for r in records(log + ".1")} == {first.pass_id}
    assert {r["pass_id"] for r in records(log)} == {second.pass_id}
    assert [r["pass_id"] for r in seen if r["event"] == "pass_summary"] == [
        first.pass_id, second.pass_id]
    with open(path) as f:
        text = f.read()
    assert f'reaper_passes_total{{exit_code="{second.exit_code}",mode="audit"}} 2.0' in text
