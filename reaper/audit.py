"""The audit log: one JSON object per line for every decision, also sent to the normal log."""
from __future__ import annotations

import datetime
import enum
import json
import logging as std_logging
import os
import stat
import threading

from oslo_config import cfg
from oslo_log import log as logging

from reaper.records import Finding, GuardResult

LOG = logging.getLogger("reaper.audit")
CONF = cfg.CONF

audit_opts = [
    cfg.StrOpt("audit_log", default="/var/log/reaper/audit.log",
               help="JSON-lines audit log (one record per finding, action, tripped guard "
                    "and pass summary). Created mode 0640 (its directory 0750 when the "
                    "reaper creates it); an existing file keeps a stricter mode and loses "
                    "any permission beyond 0640. Empty: only the normal log. Changing it "
                    "needs a restart."),
]
CONF.register_opts(audit_opts, group="reaper")

# Keys never written to the audit log, wherever they appear in evidence.
_SECRET_KEYS = {"auth_password", "auth_username", "password", "discovery_auth_password",
                "discovery_auth_username", "secret", "connection", "transport_url"}

_LEVELS = {"finding": std_logging.INFO, "action": std_logging.WARNING,
           "guard_tripped": std_logging.WARNING, "pass_summary": std_logging.INFO,
           "rpc_call": std_logging.INFO, "nova_log_trigger": std_logging.WARNING}

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
        # Called with every record after it is written (notifications, metrics).
        # A listener that raises is logged and ignored: the audit never fails a pass.
        self._listeners: list = []
        if path:
            self._fd = open_private(path)

    def close(self) -> None:
        with self._lock:
            fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

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
            if self._fd is not None:
                data = (line + "\n").encode("utf-8")
                try:
                    _write_all(self._fd, b"\n" + data if self._torn else data)
                    self._torn = False
                except OSError as e:
                    self._torn = self._torn or getattr(e, "written", 0) > 0
                    raise
        LOG.log(_LEVELS.get(event, std_logging.INFO), "%s", line)
        for listener in list(self._listeners):
            try:
                listener(rec)
            except Exception:   # noqa: BLE001 - see subscribe()
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
