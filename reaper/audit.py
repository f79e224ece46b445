"""The audit log: one JSON object per line for every decision, also sent to the normal log."""
from __future__ import annotations

import datetime
import enum
import json
import logging as std_logging
import os
import threading

from oslo_config import cfg
from oslo_log import log as logging

from reaper.records import Finding, GuardResult

LOG = logging.getLogger("reaper.audit")
CONF = cfg.CONF

audit_opts = [
    cfg.StrOpt("audit_log", default="/var/log/reaper/audit.log",
               help="JSON-lines audit log (one record per finding, action, tripped guard "
                    "and pass summary). Empty: only the normal log."),
]
CONF.register_opts(audit_opts, group="reaper")

# Keys never written to the audit log, wherever they appear in evidence.
_SECRET_KEYS = {"auth_password", "auth_username", "password", "discovery_auth_password",
                "discovery_auth_username", "secret", "connection", "transport_url"}

_LEVELS = {"finding": std_logging.INFO, "action": std_logging.WARNING,
           "guard_tripped": std_logging.WARNING, "pass_summary": std_logging.INFO,
           "rpc_call": std_logging.INFO, "nova_log_trigger": std_logging.WARNING}


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
        self._f = None
        # Called with every record after it is written (notifications, metrics).
        # A listener that raises is logged and ignored: the audit never fails a pass.
        self._listeners: list = []
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            self._f = open(path, "a", buffering=1, encoding="utf-8")

    def close(self) -> None:
        if self._f:
            self._f.close()
            self._f = None

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
            if self._f:
                self._f.write(line + "\n")
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
