"""One pass per host, across processes: the pass lock under ``state_path``.

The agent (timers, init_host, RPC), ``reaper-manage audit|reap|reclaim``,
``reaper-agent --once`` and the nova-log watcher all take this lock for the whole
of a pass, so two passes never plan or act on the same host at once; a second
pass waits a bounded time, then gives up with :class:`Busy`.

Two layers, because the file lock oslo.concurrency gives (``lockutils.external_lock``,
a POSIX record lock through fasteners) belongs to a process, not to a thread: a
second thread of the holding process would get it at once, and closing any other
descriptor of the file would drop it. So a process-wide ``threading.Lock`` per lock
file is taken first, and only its holder ever touches the file lock.

Who holds the lock (mode, source, process, pid, since) is written next to it, in
``reaper-pass.owner``, so a pass that gives up can say whom it waited for, and the
agent's ``status()`` shows a pass another process runs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import threading
import time
from typing import Callable, Iterator

from oslo_concurrency import lockutils

from reaper import exception
from reaper import procid

LOCK_NAME = "reaper-pass.lock"
OWNER_NAME = "reaper-pass.owner"
_SLICE = 1.0            # seconds between heartbeats while waiting


@dataclasses.dataclass
class _Local:
    lock: threading.Lock
    owner: dict | None = None
    ext: object = None          # the file lock, touched only by the holder of ``lock``


_REGISTRY: dict[str, _Local] = {}
_REGISTRY_LOCK = threading.Lock()


def describe(owner: dict | None) -> str:
    """One phrase naming the pass that holds the lock."""
    if not owner:
        return "another pass holds this host's pass lock"
    who = f"{owner.get('process', '?')} pid {owner.get('pid', '?')}"
    inst = f" of instance {owner['instance_uuid']}" if owner.get("instance_uuid") else ""
    return (f"a {owner.get('mode', '?')} pass{inst} ({owner.get('source', '?')}) of {who} "
            f"has held this host since {owner.get('since', '?')}")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class PassLock:
    """The pass lock of one ``state_path``; cheap to create, shared per process."""

    def __init__(self, state_path: str):
        self.dir = state_path
        self.path = os.path.join(state_path, LOCK_NAME)
        self.owner_path = os.path.join(state_path, OWNER_NAME)
        key = os.path.realpath(self.path)
        with _REGISTRY_LOCK:
            self._local = _REGISTRY.setdefault(key, _Local(threading.Lock()))

    @contextlib.contextmanager
    def hold(self, owner: dict, timeout: float,
             heartbeat: Callable[[], None] = lambda: None,
             should_stop: Callable[[], bool] = lambda: False) -> Iterator[dict]:
        """Hold the lock for a pass; wait at most ``timeout`` seconds for it (calling
        ``heartbeat`` about every second meanwhile), then raise :class:`Busy`; also
        give up when ``should_stop()`` turns true."""
        owner = {**procid.current(), "since": _now(), **owner}
        self._acquire(owner, timeout, heartbeat, should_stop)
        try:
            yield owner
        finally:
            self._release()

    def holder(self) -> dict | None:
        """The pass holding the lock: one of this process, or (from the owner file)
        of a live other process; None when the host is idle."""
        local = self._local.owner
        if local is not None:
            return dict(local)
        owner = self._read_owner()
        if owner and procid.alive(owner) and not procid.same(owner, procid.current()):
            return owner
        return None

    def wait_idle(self) -> None:
        """Wait until no pass of this process holds the lock (the agent's shutdown)."""
        with self._local.lock:
            pass

    # -- inside ----------------------------------------------------------------

    def _acquire(self, owner, timeout, heartbeat, should_stop) -> None:
        deadline = time.monotonic() + max(0.0, timeout)

        def give_up(holder: dict | None) -> bool:
            if should_stop():
                raise exception.Busy("stopping: not waiting for the pass lock", holder)
            return time.monotonic() >= deadline

        local = self._local
        while not local.lock.acquire(timeout=max(0.0, min(_SLICE, deadline - time.monotonic()))):
            heartbeat()
            if give_up(local.owner):
                raise exception.Busy(self._busy_text(local.owner, timeout), local.owner)
        try:
            if local.ext is None:
                os.makedirs(self.dir, mode=0o700, exist_ok=True)
                if not os.path.exists(self.path):
                    # fasteners would create it 0644; nobody else needs to read it
                    os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600))
                local.ext = lockutils.external_lock(LOCK_NAME, lock_path=self.dir)
            while not local.ext.acquire(
                    blocking=True, delay=0.02, max_delay=0.2,
                    timeout=max(0.0, min(_SLICE, deadline - time.monotonic()))):
                heartbeat()
                other = self._read_owner()
                if give_up(other):
                    raise exception.Busy(self._busy_text(other, timeout), other)
            try:
                self._write_owner(owner)
            except OSError:
                pass            # only the description of the holder is lost
            local.owner = owner
        except BaseException:
            if local.ext is not None and getattr(local.ext, "acquired", False):
                local.ext.release()
            local.lock.release()
            raise

    def _release(self) -> None:
        local = self._local
        try:
            try:
                os.unlink(self.owner_path)
            except OSError:
                pass
            local.owner = None
            local.ext.release()
        finally:
            local.lock.release()

    def _busy_text(self, holder: dict | None, timeout: float) -> str:
        return f"{describe(holder)}; gave up after {timeout:g}s, try again later"

    def _read_owner(self) -> dict | None:
        try:
            with open(self.owner_path) as f:
                owner = json.load(f)
        except (OSError, ValueError):
            return None
        return owner if isinstance(owner, dict) else None

    def _write_owner(self, owner: dict) -> None:
        # Only the holder of both locks writes here, so a fixed temporary name cannot
        # collide with another writer. Whatever is at that name (a crashed holder's
        # leftover, or a symlink or hard link planted there) is unlinked, never opened:
        # the file is created anew (O_EXCL), so no other file can be truncated through it.
        tmp = os.path.join(self.dir, f".owner-{os.getpid()}.tmp")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(owner, f)
            os.replace(tmp, self.owner_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
