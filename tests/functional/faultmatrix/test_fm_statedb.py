"""The reaper's state DB (journal, grace observations, approvals, pause) deleted,
corrupted or read-only between two passes (issue 9, the fault matrix).

The rule: a pass never acts on a state DB it cannot fully read or cannot write (the
journal records every step before it runs; the observations decide the grace
period), and says so in one line naming the file; a state DB that is simply gone is
started anew, which only ever delays destruction (grace starts over, half-done
teardowns are planned again from what is seen and re-verified).
"""
from __future__ import annotations

import os
import shutil
import stat

import pytest

pytestmark = pytest.mark.functional


def _crashed_evacuated_teardown(fm_host) -> dict:
    """A live instance and an evacuated one whose teardown a SIGKILL stopped after its
    domain was destroyed; returns the host as it was before that pass."""
    fm_host.bystander()
    fm_host.build("evacuated")
    before = fm_host.snapshot()
    killed = fm_host.run("reap", kill_after="destroy_domain")
    assert killed.killed, killed
    assert [e.steps for e in fm_host.journal()] == [{"destroy_domain": "done"}]
    return before


def _one_error_line(p) -> str:
    assert p.stdout == "" and "Traceback" not in p.stderr, p
    lines = [x for x in p.stderr.splitlines() if x.startswith("reaper-manage")]
    assert len(lines) == 1, p
    return lines[0]


def _finishes(fm_host, before) -> None:
    p = fm_host.run("reap")
    assert p.rc == 4 and p.actions() == [("evacuated", "done")], p
    fm_host.assert_torn_down(before, "evacuated")


@pytest.mark.parametrize("what", [
    pytest.param("all", id="state-db-deleted-mid-teardown"),
    pytest.param("main", id="state-db-main-file-deleted-wal-kept"),
])
def test_state_db_deleted_between_passes(fm_host, what):
    """After a reap pass was SIGKILLed half way through an evacuated teardown (domain destroyed, files and definition left), the state DB is deleted with its -wal and -shm, or only its main file (the uncheckpointed -wal left behind).

    Expect: the next pass starts with a new state DB, finds the shut-off evacuated
    domain again and ends as an uninterrupted pass does: exit 4, the target's domain,
    directory, VIF gone, the live instance untouched, no running journal entry.
    """
    before = _crashed_evacuated_teardown(fm_host)
    for name in fm_host.state_files():
        if what == "all" or name == "reaper-state.sqlite":
            os.unlink(fm_host.state_path / name)
    _finishes(fm_host, before)


def test_state_db_deleted_grace_starts_over(fm_host):
    """With grace_observations = 2, an orphan directory seen by one pass loses that observation when the state DB is deleted before the next pass.

    Expect: the pass after the deletion only observes it again (directory kept, exit
    3, result waiting_grace); the following pass reaps it (exit 4): losing the state
    DB never makes anything be destroyed sooner.
    """
    fm_host.write_conf(grace_observations=2)
    fm_host.bystander()
    fm_host.build("orphan_dir")
    before = fm_host.snapshot()
    for _ in range(2):
        p = fm_host.run("reap")
        assert p.rc == 3 and p.report["actions"] == [], p
        (f,) = fm_host.own([f for f in p.report["findings"]
                            if f["classification"] == "orphan_dir"])
        assert f["result"] == "waiting_grace", p
        assert fm_host.snapshot() == before
        shutil.rmtree(fm_host.state_path)
    p = fm_host.run("reap")
    assert p.rc == 3, p
    p = fm_host.run("reap")
    assert p.rc == 4 and p.actions() == [("orphan_dir", "done")], p
    fm_host.assert_torn_down(before, "orphan_dir")


def _garbage(fm_host, damage: str) -> None:
    db = fm_host.state_db
    data = bytearray(db.read_bytes())
    rnd = os.urandom(len(data))
    if damage == "file":
        data[:] = rnd
    elif damage == "pages":
        data[4096:] = rnd[4096:]
    else:       # only the page holding the journal entry
        at = data.find(fm_host.journal()[0].pass_id.encode())
        page = at // 4096 * 4096
        data[page:page + 4096] = rnd[:4096]
    db.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [
    pytest.param("file", id="state-db-garbage-file"),
    pytest.param("pages", id="state-db-garbage-after-header"),
    pytest.param("journal-page", id="state-db-garbage-journal-page"),
])
def test_state_db_corrupted_between_passes(fm_host, damage):
    """After a reap pass was SIGKILLed half way through an evacuated teardown and its journal checkpointed into the main file, garbage bytes overwrite the whole state DB, every page after its header, or only the page holding the journal entry.

    Expect: the next pass does nothing at all and exits 1 with one line that names the
    state DB as damaged and says to move it aside; the host and the damaged file stay
    exactly as they were; once the file is moved aside, a pass finds the evacuated
    domain again and ends as an uninterrupted pass does (exit 4).
    """
    before = _crashed_evacuated_teardown(fm_host)
    fm_host.checkpoint_state()
    _garbage(fm_host, damage)
    host, files = fm_host.snapshot(), fm_host.state_files()

    line = _one_error_line(p := fm_host.run("reap"))
    assert p.rc == 1 and str(fm_host.state_db) in line and "damaged" in line, line
    assert "aside" in line, line
    assert fm_host.snapshot() == host and fm_host.state_files() == files

    aside = fm_host.tmp / "damaged-state"
    aside.mkdir()
    for name in files:
        os.rename(fm_host.state_path / name, aside / name)
    _finishes(fm_host, before)


@pytest.mark.parametrize("wal", [
    pytest.param("left", id="state-db-read-only-after-crash"),
    pytest.param("checkpointed", id="state-db-read-only-checkpointed"),
])
def test_state_db_read_only_between_passes(fm_host, wal):
    """After a reap pass was SIGKILLed half way through an evacuated teardown, the state DB is read-only for the next pass: file 0400, directory 0500 and, as root ignores mode bits, a read-only bind mount of state_path in that pass's mount namespace; its -wal and -shm left by the crash, or checkpointed away.

    Expect: the pass does nothing and exits 1 with one line that names the state DB
    as not writable; host and file unchanged; once it is writable again the next pass
    finishes the teardown as an uninterrupted pass does (exit 4).
    """
    before = _crashed_evacuated_teardown(fm_host)
    if wal == "checkpointed":
        fm_host.checkpoint_state()
    host, files = fm_host.snapshot(), fm_host.state_files()
    os.chmod(fm_host.state_db, 0o400)
    os.chmod(fm_host.state_path, 0o500)
    try:
        p = fm_host.run("reap", read_only=[fm_host.state_path])
    finally:
        os.chmod(fm_host.state_path, 0o700)
        os.chmod(fm_host.state_db, stat.S_IRUSR | stat.S_IWUSR)
    line = _one_error_line(p)
    assert p.rc == 1 and str(fm_host.state_db) in line and "writ" in line, line
    assert fm_host.snapshot() == host and fm_host.state_files() == files
    _finishes(fm_host, before)
