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


_TORN = """
import resource, signal, sys
from reaper import audit
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)       # EFBIG instead of a kill
log = audit.AuditLog(sys.argv[1], "h")
log.record("finding", "req-first")
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
size = open(sys.argv[1], "rb").seek(0, 2)
resource.setrlimit(resource.RLIMIT_FSIZE, (size + 10, hard))   # room for 10 bytes
try:
    log.record("finding", "req-torn")
except OSError as e:
    print("raised", e.errno)
resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
log.record("finding", "req-next")
log.close()
"""


def test_a_record_torn_by_a_full_disk_does_not_swallow_the_next(tmp_path):
    """The kernel writes part of a record, then refuses the rest (here RLIMIT_FSIZE:
    a short write, then EFBIG, as a filling disk does with ENOSPC): the fragment
    stays, and the next record starts on a line of its own, so it still parses."""
    import subprocess
    import sys
    path = tmp_path / "audit.log"
    r = subprocess.run([sys.executable, "-c", _TORN, str(path)], capture_output=True,
                       text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()), timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("raised 27"), r.stdout + r.stderr
    lines = path.read_text().split("\n")
    assert json.loads(lines[0])["pass_id"] == "req-first"
    assert len(lines[1]) == 10                     # the torn fragment
    assert json.loads(lines[2])["pass_id"] == "req-next"
