"""The host's pass lock (one pass per host across processes and threads) and the
process identity journal owners are recorded with."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from reaper import exception
from reaper import passlock, procid

HOLDER = textwrap.dedent("""
    import sys, time
    from reaper import passlock, procid
    procid.set_name("test-holder")
    with passlock.PassLock(sys.argv[1]).hold({"mode": "reap", "source": "test"}, 5):
        print("held", flush=True)
        time.sleep(60)
""")


def hold_in_other_process(state_path):
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    p = subprocess.Popen([sys.executable, "-c", HOLDER, str(state_path)], env=env,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_a_second_holder_in_the_same_process_waits_then_is_busy(tmp_path):
    a, b = passlock.PassLock(str(tmp_path)), passlock.PassLock(str(tmp_path))
    beats = []
    with a.hold({"mode": "reap", "source": "rpc"}, 1):
        assert b.holder()["source"] == "rpc"
        t0 = time.monotonic()
        with pytest.raises(exception.Busy, match=r"a reap pass \(rpc\) of .* pid %d" % os.getpid()):
            with b.hold({"mode": "audit", "source": "timer"}, 1.5, heartbeat=lambda: beats.append(1)):
                pass
        assert 1.4 < time.monotonic() - t0 < 5
        assert beats, "the watchdog is pinged while waiting"
    with b.hold({"mode": "audit", "source": "timer"}, 0):
        assert a.holder()["mode"] == "audit"
    assert a.holder() is None


def test_threads_of_one_process_take_turns(tmp_path):
    lock, inside, overlaps = passlock.PassLock(str(tmp_path)), [], []

    def run():
        with lock.hold({"mode": "audit", "source": "t"}, 30):
            if inside:
                overlaps.append(1)
            inside.append(1)
            time.sleep(0.05)
            inside.pop()
    threads = [threading.Thread(target=run) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert overlaps == []


def test_another_process_holding_the_lock_makes_us_busy_until_it_dies(tmp_path):
    p = hold_in_other_process(tmp_path)
    try:
        lock = passlock.PassLock(str(tmp_path))
        owner = lock.holder()
        assert owner["pid"] == p.pid and owner["process"] == "test-holder"
        with pytest.raises(exception.Busy) as exc:
            with lock.hold({"mode": "audit", "source": "me"}, 0.5):
                pass
        assert f"a reap pass (test) of test-holder pid {p.pid}" in str(exc.value)
        assert exc.value.holder["pid"] == p.pid
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(10)
    # the kernel dropped the dead holder's lock; its owner file is stale and ignored
    assert lock.holder() is None
    with lock.hold({"mode": "reap", "source": "me"}, 5) as owner:
        assert owner["pid"] == os.getpid()


def test_a_stopping_caller_gives_up_waiting(tmp_path):
    a, b = passlock.PassLock(str(tmp_path)), passlock.PassLock(str(tmp_path))
    with a.hold({"mode": "reap", "source": "rpc"}, 1):
        with pytest.raises(exception.Busy, match="stopping"):
            with b.hold({"mode": "reap", "source": "timer"}, 60, should_stop=lambda: True):
                pass


def test_lock_file_is_private(tmp_path):
    old = os.umask(0o022)
    try:
        with passlock.PassLock(str(tmp_path)).hold({"mode": "audit"}, 1):
            pass
    finally:
        os.umask(old)
    assert os.stat(tmp_path / passlock.LOCK_NAME).st_mode & 0o777 == 0o600


def test_a_link_planted_at_the_owner_files_temporary_name_is_replaced_not_written(tmp_path):
    """The owner file's temporary name is fixed per pid: a hard link or a symlink found
    there is unlinked and the file created anew, so the file it leads to keeps its
    content."""
    victim, other = tmp_path / "victim", tmp_path / "other"
    victim.write_text("precious")
    other.write_text("also precious")
    state = tmp_path / "state"
    state.mkdir()
    tmp = state / f".owner-{os.getpid()}.tmp"
    for plant in (lambda: os.link(victim, tmp), lambda: os.symlink(other, tmp)):
        plant()
        with passlock.PassLock(str(state)).hold({"mode": "audit"}, 1):
            with open(state / passlock.OWNER_NAME) as f:
                assert '"mode": "audit"' in f.read()
        assert not tmp.exists() and not tmp.is_symlink()
    assert victim.read_text() == "precious" and os.stat(victim).st_nlink == 1
    assert other.read_text() == "also precious"


def test_process_identity_survives_pid_reuse_and_reboots():
    me = procid.current()
    assert procid.alive(me) and procid.same(me, procid.current())
    assert not procid.alive({**me, "start": me["start"] + 1})        # pid reused
    assert not procid.alive({**me, "boot_id": "another-boot"})       # rebooted since
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    assert not procid.alive({"pid": dead.pid, "start": 1, "boot_id": me["boot_id"]})
    assert not procid.alive(None) and not procid.alive({"pid": "x"})
    assert not procid.same(me, {**me, "start": 0})
