"""The reaper's local state DB (SQLite under state_path).

Holds what must survive a restart or a crash: observations for the grace guard,
the teardown journal, and operator approvals for the mass-destruction guard.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import functools
import sqlite3
import threading
from typing import Iterable

from reaper.records import Action, Classification, Finding, TeardownPlan

_SCHEMA = """
CREATE TABLE IF NOT EXISTS observations (
    key TEXT PRIMARY KEY,
    classification TEXT NOT NULL,
    first_seen TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    count INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS journal (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    pass_id TEXT NOT NULL,
    instance_uuid TEXT,
    plan TEXT NOT NULL,
    status TEXT NOT NULL,          -- running | done | aborted
    attempts INTEGER NOT NULL DEFAULT 1,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS journal_status_idx ON journal (status);
CREATE TABLE IF NOT EXISTS journal_steps (
    journal_id INTEGER NOT NULL,
    step TEXT NOT NULL,
    status TEXT NOT NULL,          -- started | done | failed
    detail TEXT,
    updated_at TEXT NOT NULL,
    PRIMARY KEY (journal_id, step)
);
CREATE TABLE IF NOT EXISTS flags (
    name TEXT PRIMARY KEY,         -- e.g. 'paused' (survives a restart)
    value TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS blocked_passes (
    pass_id TEXT PRIMARY KEY,
    teardown_keys TEXT NOT NULL,   -- JSON list: what the blocked plan would destroy
    created_at TEXT NOT NULL,
    approved_at TEXT,
    used_at TEXT
);
"""


def _ts(now: datetime.datetime) -> str:
    return now.isoformat()


def teardown_key(plan: TeardownPlan) -> str:
    """What an operator approves: the same action, for the same reason, on the same things."""
    return f"{plan.action.value}:{plan.classification.value}:{plan.instance_uuid}:{plan.domain_name or ''}:" + ",".join(plan.dirs)


def plan_to_json(plan: TeardownPlan) -> str:
    d = dataclasses.asdict(plan)
    d["findings"] = []
    d["classification"] = plan.classification.value
    d["action"] = plan.action.value
    return json.dumps(d, sort_keys=True)


def plan_from_json(text: str) -> TeardownPlan:
    d = json.loads(text)
    d["classification"] = Classification(d["classification"])
    d["action"] = Action(d["action"])
    d["dirs"] = tuple(d["dirs"])
    d["vifs"] = tuple(d.get("vifs", ()))
    d["volumes"] = tuple(d.get("volumes", ()))
    d["findings"] = ()
    known = {f.name for f in dataclasses.fields(TeardownPlan)}
    return TeardownPlan(**{k: v for k, v in d.items() if k in known})


@dataclasses.dataclass(frozen=True)
class JournalEntry:
    id: int
    pass_id: str
    plan: TeardownPlan
    steps: dict[str, str]          # step -> status
    attempts: int


def _locked(method):
    """The agent's RPC threads read status while a pass writes: one statement group at a time."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return wrapper


class StateDB:
    def __init__(self, state_path: str):
        os.makedirs(state_path, mode=0o700, exist_ok=True)
        self.path = os.path.join(state_path, "reaper-state.sqlite")
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # Every journal write must be on disk before the step it describes runs.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    @_locked
    def close(self) -> None:
        self._db.close()

    # -- observations ---------------------------------------------------------

    @_locked
    def observe(self, findings: Iterable[Finding], now: datetime.datetime) -> dict[str, tuple[int, datetime.datetime]]:
        """Record this pass's findings; anything not seen again starts over."""
        seen = {}
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            old = {k: (c, n, datetime.datetime.fromisoformat(f)) for k, c, n, f in
                   self._db.execute("SELECT key, classification, count, first_seen FROM observations")}
            self._db.execute("DELETE FROM observations")
            for f in findings:
                prev = old.get(f.key)
                if prev and prev[0] == f.classification.value:
                    count, first = prev[1] + 1, prev[2]
                else:
                    count, first = 1, now
                if f.key in seen:
                    continue
                seen[f.key] = (count, first)
                self._db.execute(
                    "INSERT INTO observations VALUES (?, ?, ?, ?, ?)",
                    (f.key, f.classification.value, _ts(first), _ts(now), count))
        return seen

    @_locked
    def observed(self, keys: Iterable[str]) -> dict[str, tuple[int, datetime.datetime]]:
        """What full passes recorded for ``keys``, without counting this look."""
        want = set(keys)
        return {k: (n, datetime.datetime.fromisoformat(f)) for k, n, f in self._db.execute(
            "SELECT key, count, first_seen FROM observations") if k in want}

    # -- journal -------------------------------------------------------------

    @_locked
    def begin(self, plan: TeardownPlan, pass_id: str, now: datetime.datetime) -> int:
        cur = self._db.execute(
            "INSERT INTO journal (pass_id, instance_uuid, plan, status, created_at, updated_at) "
            "VALUES (?, ?, ?, 'running', ?, ?)",
            (pass_id, plan.instance_uuid, plan_to_json(plan), _ts(now), _ts(now)))
        return cur.lastrowid

    @_locked
    def step(self, journal_id: int, step: str, status: str, now: datetime.datetime,
             detail: str | None = None) -> None:
        self._db.execute(
            "INSERT INTO journal_steps VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (journal_id, step) DO UPDATE SET status=excluded.status, "
            "detail=excluded.detail, updated_at=excluded.updated_at",
            (journal_id, step, status, detail, _ts(now)))

    @_locked
    def finish(self, journal_id: int, status: str, now: datetime.datetime,
               error: str | None = None) -> None:
        self._db.execute("UPDATE journal SET status=?, error=?, updated_at=? WHERE id=?",
                         (status, error, _ts(now), journal_id))

    @_locked
    def retry(self, journal_id: int, now: datetime.datetime, error: str | None) -> None:
        self._db.execute(
            "UPDATE journal SET attempts=attempts+1, error=?, updated_at=? WHERE id=?",
            (error, _ts(now), journal_id))

    @_locked
    def unfinished(self) -> list[JournalEntry]:
        rows = self._db.execute(
            "SELECT id, pass_id, plan, attempts FROM journal WHERE status='running' ORDER BY id"
        ).fetchall()
        out = []
        for jid, pass_id, plan, attempts in rows:
            steps = dict(self._db.execute(
                "SELECT step, status FROM journal_steps WHERE journal_id=?", (jid,)))
            out.append(JournalEntry(jid, pass_id, plan_from_json(plan), steps, attempts))
        return out

    @_locked
    def backlog(self) -> int:
        return self._db.execute("SELECT count(*) FROM journal WHERE status='running'").fetchone()[0]

    # -- mass-destruction approvals -----------------------------------------

    @_locked
    def record_blocked(self, pass_id: str, keys: list[str], now: datetime.datetime) -> None:
        self._db.execute("INSERT OR REPLACE INTO blocked_passes (pass_id, teardown_keys, created_at) "
                         "VALUES (?, ?, ?)", (pass_id, json.dumps(sorted(keys)), _ts(now)))

    @_locked
    def approve(self, pass_id: str, now: datetime.datetime) -> bool:
        cur = self._db.execute(
            "UPDATE blocked_passes SET approved_at=? WHERE pass_id=? AND used_at IS NULL",
            (_ts(now), pass_id))
        return cur.rowcount == 1

    @_locked
    def approval_covering(self, keys: list[str],
                          not_before: datetime.datetime | None = None) -> str | None:
        """An approved, unused blocked pass whose plan covers all of ``keys`` (approved
        at or after ``not_before``: approvals expire)."""
        want = set(keys)
        since = _ts(not_before) if not_before is not None else ""
        for pass_id, blob in self._db.execute(
                "SELECT pass_id, teardown_keys FROM blocked_passes "
                "WHERE approved_at IS NOT NULL AND used_at IS NULL AND approved_at >= ? "
                "ORDER BY approved_at DESC", (since,)):
            if want <= set(json.loads(blob)):
                return pass_id
        return None

    @_locked
    def blocked_unapproved(self, limit: int = 20) -> list[dict]:
        """Passes the mass-destruction guard blocked that nobody approved yet, newest first."""
        return [{"pass_id": p, "created_at": c, "teardowns": len(json.loads(k))}
                for p, c, k in self._db.execute(
                    "SELECT pass_id, created_at, teardown_keys FROM blocked_passes "
                    "WHERE approved_at IS NULL ORDER BY created_at DESC LIMIT ?", (limit,))]

    @_locked
    def get_flag(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM flags WHERE name=?", (name,)).fetchone()
        return row[0] if row else None

    @_locked
    def set_flag(self, name: str, value: str | None, now: datetime.datetime) -> None:
        if value is None:
            self._db.execute("DELETE FROM flags WHERE name=?", (name,))
        else:
            self._db.execute("INSERT OR REPLACE INTO flags VALUES (?, ?, ?)",
                             (name, value, _ts(now)))

    @_locked
    def use_approval(self, pass_id: str, now: datetime.datetime) -> None:
        self._db.execute("UPDATE blocked_passes SET used_at=? WHERE pass_id=?", (_ts(now), pass_id))


# -- opening for a pass ----------------------------------------------------------

class StateDBError(Exception):
    """The state DB cannot be read whole or cannot be written: nothing may be done."""


# SQLite's result codes (sqlite3.Error.sqlite_errorname) by what the operator must do.
_NOT_WRITABLE = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")
_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


def open_checked(state_path: str) -> StateDB:
    """The state DB for a pass, known to be whole and writable; else StateDBError.

    Every teardown step is journaled here before it runs, and the grace period is
    counted here: a pass that cannot read all of it (a damaged page could hide a
    journaled teardown or inflate an observation count) or cannot write it must not
    act at all. An integrity check and taking the write lock once, at open, turn
    either into one clear error before anything is looked at, instead of an
    exception half way through a pass. A file that is simply absent is created: that
    only delays destruction (grace starts over; half-done teardowns are planned
    again from what is seen, and re-verified).
    """
    path = os.path.join(state_path, "reaper-state.sqlite")
    st = None
    try:
        st = StateDB(state_path)
        with st._lock:
            problems = [r[0] for r in st._db.execute("PRAGMA integrity_check(3)")]
            if problems != ["ok"]:
                text = " ".join(" ".join(p.split()) for p in problems)
                err = sqlite3.DatabaseError(f"integrity check: {text[:300]}")
                err.sqlite_errorname = "SQLITE_CORRUPT"
                raise err
            # A write that is rolled back: refused when the file or directory is
            # read-only (taking the write lock alone is not, on a read-only file).
            st._db.execute("BEGIN IMMEDIATE")
            try:
                st._db.execute("CREATE TABLE write_probe (x INTEGER)")
            finally:
                st._db.rollback()
    except (sqlite3.Error, OSError) as e:
        if st is not None:
            st.close()
        raise StateDBError(_unusable(path, e)) from None
    return st


def _unusable(path: str, e: Exception) -> str:
    name = getattr(e, "sqlite_errorname", "") or ""
    if name.startswith(_DAMAGED):
        return (f"state DB {path} is damaged ({e}); nothing was done. Move it and its "
                f"-wal/-shm files aside: the next pass starts a new one (grace starts "
                f"over, half-done teardowns are planned again from what is seen, and a "
                f"pause set with 'pause' is forgotten)")
    if name.startswith(_NOT_WRITABLE) or isinstance(e, OSError):
        return (f"state DB {path} is not writable ({e}); nothing was done: every "
                f"teardown step is journaled there before it runs. Make "
                f"{os.path.dirname(path)} and the file writable")
    return f"state DB {path} is unusable ({e}); nothing was done"
