"""The audit log file itself: not world-readable, one whole record per write."""
from __future__ import annotations

import json
import os
import stat

import pytest

from reaper import audit as audit_mod


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_new_audit_log_is_0640_in_a_0750_directory(tmp_path):
    old = os.umask(0o022)                   # the usual umask would give 0644
    try:
        log = audit_mod.AuditLog(str(tmp_path / "log" / "audit.log"), "h")
    finally:
        os.umask(old)
    log.record("agent_state", "-", result="started")
    log.close()
    assert mode(tmp_path / "log" / "audit.log") == 0o640
    assert mode(tmp_path / "log") == 0o750


@pytest.mark.parametrize("before, after", [
    pytest.param(0o644, 0o640, id="world-readable-is-restricted"),
    pytest.param(0o666, 0o640, id="world-writable-is-restricted"),
    pytest.param(0o600, 0o600, id="stricter-is-kept"),
    pytest.param(0o400, 0o400, id="read-only-is-kept"),
])
def test_an_existing_audit_log_keeps_a_stricter_mode(tmp_path, before, after):
    path = tmp_path / "audit.log"
    path.write_text('{"old": 1}\n')
    os.chmod(path, before)
    log = audit_mod.AuditLog(str(path), "h")
    log.close()
    assert mode(path) == after
    assert path.read_text() == '{"old": 1}\n'       # appended to, never truncated


def test_records_are_whole_lines(tmp_path):
    path = tmp_path / "audit.log"
    log = audit_mod.AuditLog(str(path), "h")
    big = "x" * 100_000                               # larger than any stdio buffer
    log.record("finding", "req-1", reason=big)
    log.record("finding", "req-2", reason="small")
    log.close()
    lines = path.read_text().splitlines()
    assert [json.loads(x)["pass_id"] for x in lines] == ["req-1", "req-2"]


def test_a_full_filesystem_fails_the_write_and_keeps_nothing_for_later(tmp_path):
    log = audit_mod.AuditLog("/dev/full", "h")
    with pytest.raises(OSError):
        log.record("agent_state", "-", result="started")
    log.close()                                        # no buffered record to flush
