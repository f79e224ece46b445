"""The reaper's local state DB (SQLite under state_path).

Holds what must survive a restart or a crash: observations for the grace guard,
the teardown journal, operator approvals for the mass-destruction guard, and the
host's pause. The directory is created 0700 and the DB (with its -wal/-shm, which
SQLite creates with the DB file's mode) 0600: plans name instances and paths.

Every journal entry records its owner (pid, process start time, boot id: see
reaper.procid), so a pass can tell a crashed entry from one a live process holds.
An entry this version cannot read (plan JSON that does not parse, a classification,
action or step it does not know, as a newer version may write) is quarantined
instead of stopping every later pass.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import functools
import sqlite3
import threading
from typing import Any, Callable, Iterable

from reaper import exception
from reaper import procid
from reaper.objects.fields import Action, Classification, StepStatus
from reaper.objects.plan import Finding, TeardownPlan

DB_NAME = "reaper-state.sqlite"
# Errors of a state DB that cannot be used right now (locked beyond the busy
# timeout, unreadable, read-only, full): a pass reports them and acts on nothing
# it cannot journal.
StateError = sqlite3.Error

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
    status TEXT NOT NULL,          -- running | done | aborted | quarantined
    attempts INTEGER NOT NULL DEFAULT 1,
    error TEXT,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL,
    owner TEXT                     -- JSON: pid, start, boot_id, process (reaper.procid)
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


def plan_from_json(text: str, classify: Callable[[str], Any] = Classification
                   ) -> TeardownPlan:
    """The plan of a journal entry; raises ValueError (or TypeError/KeyError) when this
    version cannot read it. ``classify``: value -> classification (default: the
    primary kind's; a Reaper's state reads those of every known kind)."""
    d = json.loads(text)
    if not isinstance(d, dict):
        raise ValueError("the plan is not a JSON object")
    d["classification"] = classify(d["classification"])
    d["action"] = Action(d["action"])
    d["dirs"] = tuple(d["dirs"])
    d["vifs"] = tuple(d.get("vifs", ()))
    d["volumes"] = tuple(d.get("volumes", ()))
    d["services"] = tuple(d.get("services", ()))
    d["findings"] = ()
    known = {f.name for f in dataclasses.fields(TeardownPlan)}
    return TeardownPlan(**{k: v for k, v in d.items() if k in known})


@dataclasses.dataclass(frozen=True)
class JournalEntry:
    id: int
    pass_id: str
    plan: TeardownPlan
    # step -> status, as the journal holds it: the text of a StepStatus (rows of any
    # version compare equal to its members; unknown ones stay as they are)
    steps: dict[str, str]
    attempts: int
    owner: dict | None = None      # reaper.procid identity of the process that runs it
    status: str = "running"


@dataclasses.dataclass(frozen=True)
class Quarantined:
    """A journal entry this version could not read, now set aside."""
    id: int
    pass_id: str
    instance_uuid: str | None
    error: str
    plan_text: str                 # the start of the unreadable plan, for the audit


def _owner_from(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        owner = json.loads(text)
    except ValueError:
        return None
    return owner if isinstance(owner, dict) else None


def _locked(method):
    """The agent's RPC threads read status while a pass writes: one statement group at a time."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._lock:
            return method(self, *args, **kwargs)
    return wrapper


def _private_file(path: str) -> None:
    """Create ``path`` 0600 if missing; narrow it to 0600 if it is ours and wider."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600))
    st = os.lstat(path)
    if st.st_uid == os.geteuid() and st.st_mode & 0o077:
        os.chmod(path, 0o600)


class StateDB:
    def __init__(self, state_path: str, busy_timeout: float = 30.0):
        """``busy_timeout``: seconds a statement waits for another process's write
        lock on the DB before it fails with ``database is locked``."""
        # Reads the classification of a journaled plan (the Reaper sets its kinds').
        self.classify: Callable[[str], Any] = Classification
        # A new directory is private; an existing one is left as the operator made it
        # (it may be shared with something else): only our files in it are narrowed.
        os.makedirs(state_path, mode=0o700, exist_ok=True)
        self.path = os.path.join(state_path, DB_NAME)
        _private_file(self.path)
        for suffix in ("-wal", "-shm"):
            if os.path.exists(self.path + suffix):
                _private_file(self.path + suffix)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # Every journal write must be on disk before the step it describes runs.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)         # no write lock needed once it exists
        if not self._has_owner_column():        # a DB of an earlier version
            self._db.execute("ALTER TABLE journal ADD COLUMN owner TEXT")
        self._me = procid.current()

    def _has_owner_column(self) -> bool:
        return any(r[1] == "owner" for r in self._db.execute("PRAGMA table_info(journal)"))

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
        """A new entry, owned by this process."""
        cur = self._db.execute(
            "INSERT INTO journal (pass_id, instance_uuid, plan, status, created_at, "
            "updated_at, owner) VALUES (?, ?, ?, 'running', ?, ?, ?)",
            (pass_id, plan.instance_uuid, plan_to_json(plan), _ts(now), _ts(now),
             json.dumps(self._me)))
        return cur.lastrowid

    @_locked
    def take_over(self, journal_id: int, now: datetime.datetime) -> None:
        """This process resumes the entry: it is ours from now on (a third process
        sees a live owner and leaves it alone)."""
        self._db.execute("UPDATE journal SET owner=?, status='running', updated_at=? "
                         "WHERE id=?", (json.dumps(self._me), _ts(now), journal_id))

    def is_me(self, owner: dict | None) -> bool:
        """Whether a journal owner is this process (this StateDB's opener)."""
        return procid.same(owner, self._me)

    @_locked
    def step(self, journal_id: int, step: str, status: StepStatus | str,
             now: datetime.datetime, detail: str | None = None) -> None:
        """Journal a step's status and, once done, what it did (``str()`` of its
        reaper.objects.step.StepResult)."""
        self._db.execute(
            "INSERT INTO journal_steps VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (journal_id, step) DO UPDATE SET status=excluded.status, "
            "detail=excluded.detail, updated_at=excluded.updated_at",
            (journal_id, step, str(status), detail, _ts(now)))

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

    def _read(self, row, known_steps) -> JournalEntry | str:
        """The entry of a journal row, or why this version cannot read it."""
        jid, pass_id, _uuid, plan_text, attempts, owner, status = row
        steps = dict(self._db.execute(
            "SELECT step, status FROM journal_steps WHERE journal_id=?", (jid,)))
        try:
            plan = plan_from_json(plan_text, self.classify)
        except (ValueError, TypeError, KeyError) as e:
            return f"unreadable plan: {type(e).__name__}: {e}"
        if known_steps is not None:
            try:
                known = set(known_steps(plan))
            except Exception as e:  # noqa: BLE001 - an odd plan must not stop the reader
                return f"cannot tell the steps of the plan: {type(e).__name__}: {e}"
            unknown = sorted(set(steps) - known)
            if unknown:
                return f"step(s) {', '.join(unknown)} unknown to this version"
        return JournalEntry(jid, pass_id, plan, steps, attempts, _owner_from(owner), status)

    def _rows(self, statuses: tuple[str, ...]):
        marks = ",".join("?" * len(statuses))
        return self._db.execute(
            "SELECT id, pass_id, instance_uuid, plan, attempts, owner, status FROM journal "
            f"WHERE status IN ({marks}) ORDER BY id", statuses).fetchall()

    @_locked
    def unfinished(self, known_steps: Callable[[TeardownPlan], Iterable[str]] | None = None
                   ) -> list[JournalEntry]:
        """Entries to resume: running ones, and quarantined ones this version can read
        (a newer version may have set aside what an older one could not read). Entries
        that cannot be read are left out, never raised: see quarantine_unreadable.
        ``known_steps(plan)``: the steps this version knows for a plan."""
        out = []
        for row in self._rows(("running", "quarantined")):
            entry = self._read(row, known_steps)
            if isinstance(entry, JournalEntry):
                out.append(entry)
        return out

    @_locked
    def quarantine_unreadable(self, now: datetime.datetime,
                              known_steps: Callable[[TeardownPlan], Iterable[str]] | None = None,
                              instance_uuid: str | None = None,
                              leave: Callable[[dict | None], bool] = lambda _o: False
                              ) -> list[Quarantined]:
        """Set aside the running entries this version cannot read (only those of
        ``instance_uuid`` when given; never one whose owner ``leave`` says to leave
        alone, such as a live process that can read it); returns the newly set aside."""
        out = []
        for row in self._rows(("running",)):
            jid, pass_id, uuid, plan_text, _attempts, owner, _status = row
            if instance_uuid is not None and uuid != instance_uuid:
                continue
            why = self._read(row, known_steps)
            if isinstance(why, JournalEntry) or leave(_owner_from(owner)):
                continue
            self._db.execute("UPDATE journal SET status='quarantined', error=?, updated_at=? "
                             "WHERE id=? AND status='running'", (why, _ts(now), jid))
            out.append(Quarantined(jid, pass_id, uuid, why, str(plan_text)[:500]))
        return out

    @_locked
    def backlog(self) -> int:
        return self._db.execute("SELECT count(*) FROM journal WHERE status='running'").fetchone()[0]

    @_locked
    def quarantined(self) -> int:
        """Entries set aside as unreadable (they wait for a version that reads them)."""
        return self._db.execute(
            "SELECT count(*) FROM journal WHERE status='quarantined'").fetchone()[0]

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

    # -- pause -------------------------------------------------------------------

    @_locked
    def pause_state(self) -> dict | None:
        """The host's pause: {"reason", "by", "since"}, or None when not paused."""
        rows = dict((n, (v, t)) for n, v, t in self._db.execute(
            "SELECT name, value, updated_at FROM flags WHERE name IN ('paused', 'paused_by')"))
        if "paused" not in rows:
            return None
        reason, since = rows["paused"]
        return {"reason": reason, "by": rows.get("paused_by", (None, None))[0],
                "since": since}

    @_locked
    def set_pause(self, reason: str | None, by: str | None, now: datetime.datetime) -> None:
        """Pause (``reason`` given) or resume (None), with who asked, in one transaction."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM flags WHERE name IN ('paused', 'paused_by')")
            if reason is not None:
                self._db.execute("INSERT INTO flags VALUES ('paused', ?, ?)",
                                 (reason, _ts(now)))
                if by:
                    self._db.execute("INSERT INTO flags VALUES ('paused_by', ?, ?)",
                                     (by, _ts(now)))

    @_locked
    def use_approval(self, pass_id: str, now: datetime.datetime) -> None:
        self._db.execute("UPDATE blocked_passes SET used_at=? WHERE pass_id=?", (_ts(now), pass_id))


# -- opening for a pass ----------------------------------------------------------


# SQLite's result codes (sqlite3.Error.sqlite_errorname) by what the operator must do.
_NOT_WRITABLE = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")
_DAMAGED = ("SQLITE_CORRUPT", "SQLITE_NOTADB")
_TRANSIENT = ("SQLITE_BUSY", "SQLITE_LOCKED")


def open_checked(state_path: str, busy_timeout: float = 30.0) -> StateDB:
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
        st = StateDB(state_path, busy_timeout=busy_timeout)
        with st._lock:
            problems = [r[0] for r in st._db.execute("PRAGMA integrity_check(3)")]
            if problems != ["ok"]:
                text = " ".join(" ".join(p.split()) for p in problems)
                err = sqlite3.DatabaseError(f"integrity check: {text[:300]}")
                err.sqlite_errorname = "SQLITE_CORRUPT"
                raise err
            # A write that is rolled back: refused when the file or directory is
            # read-only (taking the write lock alone is not, on a read-only file).
            # Another process holding the write lock (SQLITE_BUSY) is no damage: the
            # pass then trips its state_unavailable guard, and a later one runs.
            try:
                st._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                if not (getattr(e, "sqlite_errorname", "") or "").startswith(_TRANSIENT):
                    raise
            else:
                try:
                    st._db.execute("CREATE TABLE write_probe (x INTEGER)")
                finally:
                    st._db.rollback()
    except (sqlite3.Error, OSError) as e:
        if st is not None:
            st.close()
        name = getattr(e, "sqlite_errorname", "") or ""
        raise exception.StateDBError(_unusable(path, e), needs_operator=isinstance(e, OSError)
                                     or name.startswith(_DAMAGED + _NOT_WRITABLE)) from None
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
