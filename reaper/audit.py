"""The audit log: one JSON object per line for every decision.

The file is what tools read (``reaper-manage audit-log``, log shippers). The
normal log (stderr, the journal, ``log_file``) gets one short human line per
record, not the JSON a second time; only without an audit file
(``audit_log =``) is the whole JSON record logged there, since it is then the
only copy.

Rotation: before each record the path is compared with the open file (device
and inode, as :class:`logging.handlers.WatchedFileHandler` does) and reopened
when it names another file or none, so logrotate's rename-and-create (or a
rename alone, or a removal) never leaves the records going to ``audit.log.1``
or a deleted file. A record written just as the file is renamed lands in the
renamed file, whole; so the rotated file must not be compressed at once
(logrotate's ``delaycompress``, as etc/logrotate.d/reaper does).
"""
from __future__ import annotations

import datetime
import enum
import json
import logging as std_logging
import os
import stat
import threading

from oslo_log import log as logging

from reaper.objects.plan import Finding, GuardResult

LOG = logging.getLogger("reaper.audit")


# Keys never written to the audit log, wherever they appear in evidence.
_SECRET_KEYS = {"auth_password", "auth_username", "password", "discovery_auth_password",
                "discovery_auth_username", "secret", "connection", "transport_url"}

# Level of a record's line in the normal log. Actions as their notifications: done
# (or only planned) is INFO, failed ERROR, anything else (aborted, backed off,
# interrupted) WARNING; reaper-manage shows WARNING and above on stderr, under its
# report.
_LEVELS = {"finding": std_logging.INFO, "action": std_logging.WARNING,
           "guard_tripped": std_logging.WARNING, "pass_summary": std_logging.INFO,
           "rpc_call": std_logging.INFO, "nova_log_trigger": std_logging.WARNING}
_ACTION_LEVELS = {"done": std_logging.INFO, "dry_run": std_logging.INFO,
                  "planned": std_logging.INFO, "failed": std_logging.ERROR}


def level(rec: dict) -> int:
    """The normal log's level for an audit record."""
    if rec.get("event") == "action":
        return _ACTION_LEVELS.get(rec.get("result"), std_logging.WARNING)
    return _LEVELS.get(rec.get("event"), std_logging.INFO)


# The reason in the normal log's line at most (the audit file has all of it).
_REASON_CHARS = 200

# Records name instances, hosts, paths and callers: readable by the owner and the
# log group (adm), never by every local user.
AUDIT_MODE = 0o640


def open_private(path: str) -> int:
    """Open ``path`` for appending (a file descriptor), created 0640; an existing
    regular file keeps a stricter mode and loses any bit beyond 0640 (group write,
    world read). The mode is set on the open descriptor, so a rename in between
    cannot redirect it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), mode=0o750, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, AUDIT_MODE)
    try:
        st = os.fstat(fd)
        mode = stat.S_IMODE(st.st_mode)
        if stat.S_ISREG(st.st_mode) and mode & ~AUDIT_MODE:
            os.fchmod(fd, mode & AUDIT_MODE)
    except OSError as e:
        LOG.warning("cannot restrict the mode of audit log %s: %s", path, e)
    return fd


def _write_all(fd: int, data: bytes) -> int:
    """One record, one O_APPEND write (lines of concurrent writers never interleave);
    no buffer keeps a record that failed (a full filesystem) to write it later.
    Returns the bytes written; an OSError carries them as ``written``."""
    view, written = memoryview(data), 0
    while view:
        try:
            n = os.write(fd, view)
        except OSError as e:
            e.written = written
            raise
        written += n
        view = view[n:]
    return written


def summary(rec: dict) -> str:
    """One line for people reading the normal log: what happened to what, with
    which result and why, and the pass to look up in the audit log."""
    words = [rec.get("event") or "record"]
    words += [str(rec[k]) for k in ("guard", "method", "action", "classification", "kind",
                                    "resource") if rec.get(k)]
    uuid = rec.get("instance_uuid")
    if uuid and uuid != rec.get("resource"):
        words.append(f"instance {uuid}")
    text = " ".join(words)
    if rec.get("result"):
        text += f": {rec['result']}"
    reason = " ".join(str(rec.get("reason") or "").split())      # one line
    if len(reason) > _REASON_CHARS:
        reason = reason[:_REASON_CHARS - 3] + "..."
    if reason:
        text += f" ({reason})"
    if rec.get("pass_id") and rec["pass_id"] != "-":
        text += f" [{rec['pass_id']}]"
    return text


def scrub(value):
    if isinstance(value, dict):
        return {k: ("***" if k in _SECRET_KEYS else scrub(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    return value


def _default(o):
    if isinstance(o, (datetime.datetime, datetime.date)):
        return o.isoformat()
    if hasattr(o, "value"):
        return o.value
    return str(o)


class AuditLog:
    def __init__(self, path: str | None, host: str):
        self.host = host
        self._lock = threading.Lock()
        self._fd: int | None = None
        # A write that failed half way (a full filesystem) left a line without its
        # newline: the next record starts on a line of its own.
        self._torn = False
        self._path = path or None
        # (st_dev, st_ino) of the open file, to notice a rotation.
        self._ident: tuple[int, int] | None = None
        # Called with every record after it is written (notifications, metrics).
        # A listener that raises is logged and ignored: the audit never fails a pass.
        self._listeners: list = []
        if self._path:
            self._reopen()

    def close(self) -> None:
        with self._lock:
            fd, self._fd, self._path = self._fd, None, None
        if fd is not None:
            os.close(fd)

    def _reopen(self) -> int:
        """Open (or create) the file at the path, closing the one we had."""
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)
        fd = open_private(self._path)
        st = os.fstat(fd)
        self._fd, self._ident = fd, (st.st_dev, st.st_ino)
        # A fragment torn by a full disk stays in the old file; the new one
        # starts on a line of its own.
        self._torn = False
        return fd

    def _current_fd(self) -> int:
        """The descriptor of the file the path names now: reopened after a rotation
        (the path names another file), a removal (none), or a failed reopen."""
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            st = None
        if (self._fd is not None and st is not None
                and (st.st_dev, st.st_ino) == self._ident):
            return self._fd
        if self._fd is not None:
            LOG.info("audit log %s was rotated or removed: reopening it", self._path)
        return self._reopen()

    def subscribe(self, listener) -> None:
        """Call ``listener(record)`` for every record from now on."""
        self._listeners.append(listener)

    def record(self, event: str, pass_id: str, **fields) -> dict:
        rec = {"ts": datetime.datetime.now(datetime.timezone.utc).isoformat(),
               "host": self.host, "pass_id": pass_id, "event": event}
        for key in ("kind", "resource", "instance_uuid", "classification", "action",
                    "result", "reason"):
            value = fields.pop(key, None)
            rec[key] = value.value if isinstance(value, enum.Enum) else value
        rec["evidence"] = scrub(fields.pop("evidence", {}) or {})
        rec.update(scrub(fields))
        line = json.dumps(rec, default=_default, sort_keys=False)
        with self._lock:
            to_file = self._path is not None
            if to_file:
                data = (line + "\n").encode("utf-8")
                fd = self._current_fd()
                try:
                    _write_all(fd, b"\n" + data if self._torn else data)
                    self._torn = False
                except OSError as e:
                    self._torn = self._torn or getattr(e, "written", 0) > 0
                    raise
        LOG.log(level(rec), "%s", summary(rec) if to_file else line)
        for listener in list(self._listeners):
            try:
                listener(rec)
            except Exception:  # see subscribe()
                LOG.exception("audit listener %r failed", listener)
        return rec

    def finding(self, pass_id: str, f: Finding, result: str, **extra) -> dict:
        return self.record("finding", pass_id, kind=f.kind, resource=f.resource,
                           instance_uuid=f.instance_uuid, classification=f.classification,
                           action=f.action, result=result, reason=f.reason,
                           evidence=f.evidence, **extra)

    def guard(self, pass_id: str, g: GuardResult) -> dict:
        return self.record("guard_tripped", pass_id, kind=None if g.scope == "pass" else g.scope,
                           action="refuse", result="blocked", reason=g.reason,
                           evidence=g.evidence, guard=g.name, scope=g.scope)
