"""Pass and action counters as a Prometheus textfile (node_exporter's textfile collector).

Fed by the audit log's records, like the notifications, so what is counted is
exactly what was audited. The file is rewritten after every pass and every
pause/resume, atomically, so node_exporter never reads half a file (see
:func:`write_textfile`). No host label: node_exporter's scrape adds the instance.
Counters start from zero when the agent starts, as Prometheus counters may.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import tempfile
from typing import Callable

from oslo_log import log as logging
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from reaper.conf import CONF

LOG = logging.getLogger(__name__)


# node_exporter (another user) reads the file: world-readable, written by us only.
TEXTFILE_MODE = 0o644


def write_textfile(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically, through a temporary file nobody
    can predict.

    prometheus_client's write_to_textfile opens ``<path>.<pid>.<thread id>``, a name
    a local user who can write to the directory can create first as a symlink: the
    agent (root) would then write through it and rename the link into place.
    mkstemp creates a new file with O_EXCL under a random name (never following a
    link), in the target's directory so the rename stays on one filesystem; the
    data is fsynced before the rename, so a crash leaves the old file or the new
    one, never a truncated one. The temporary name does not end in ``.prom``, so
    the textfile collector never reads it.
    """
    target = os.path.abspath(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp",
                               dir=os.path.dirname(target))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), TEXTFILE_MODE)
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _epoch(ts: str | None) -> float | None:
    if not ts:
        return None
    t = datetime.datetime.fromisoformat(ts)
    if t.tzinfo is None:                      # the passes' clock is naive UTC, as Nova's
        t = t.replace(tzinfo=datetime.timezone.utc)
    return t.timestamp()


class Metrics:
    def __init__(self, path: str, backlog: Callable[[], int] = lambda: 0,
                 paused: Callable[[], bool] = lambda: False):
        self.path = path
        self._backlog = backlog
        self._paused = paused
        r = self.registry = CollectorRegistry()
        self.passes = Counter("reaper_passes", "Passes run, by mode and exit code "
                              "(0 nothing, 3 findings, 4 actions, 5 guard, 1 error).",
                              ["mode", "exit_code"], registry=r)
        self.actions = Counter("reaper_actions", "Teardowns by classification, action "
                               "and result (done, failed, aborted, backed_off, "
                               "interrupted).", ["classification", "action", "result"],
                               registry=r)
        self.guards = Counter("reaper_guard_trips", "Guards that refused a plan.",
                              ["guard"], registry=r)
        self.rpc = Counter("reaper_rpc_calls", "RPC calls served, by method and result.",
                           ["method", "result"], registry=r)
        self.triggers = Counter("reaper_nova_log_triggers", "Targeted audits started by "
                                "nova-compute's log, by result.", ["result"], registry=r)
        self.findings = Gauge("reaper_last_pass_findings", "Findings of the last pass of "
                              "each mode, by classification.", ["mode", "classification"],
                              registry=r)
        self.last_end = Gauge("reaper_last_pass_end_timestamp_seconds",
                              "When the last pass of each mode ended.", ["mode"], registry=r)
        self.last_duration = Gauge("reaper_last_pass_duration_seconds",
                                   "How long the last pass of each mode took.", ["mode"],
                                   registry=r)
        self.last_exit = Gauge("reaper_last_pass_exit_code",
                               "Exit code of the last pass of each mode.", ["mode"],
                               registry=r)
        self.last_queries = Gauge("reaper_last_pass_db_queries",
                                  "Nova DB round trips of the last pass of each mode.",
                                  ["mode"], registry=r)
        self.backlog = Gauge("reaper_journal_backlog",
                             "Journaled teardowns not finished (they resume next pass).",
                             registry=r)
        self.paused = Gauge("reaper_paused", "1 while the host is paused (no destruction).",
                            registry=r)
        self._classes: dict[str, set[str]] = {}

    def __call__(self, rec: dict) -> None:
        event = rec.get("event")
        if event == "action":
            self.actions.labels(rec.get("classification") or "-", rec.get("action") or "-",
                                rec.get("result") or "-").inc()
        elif event == "guard_tripped":
            self.guards.labels(rec.get("guard") or "-").inc()
        elif event == "rpc_call":
            self.rpc.labels(rec.get("method") or "-", rec.get("result") or "-").inc()
        elif event == "nova_log_trigger":
            self.triggers.labels(rec.get("result") or "-").inc()
        elif event == "pass_summary":
            self._pass(rec)
            self.write()
        elif event == "agent_state" and rec.get("result") in ("paused", "resumed"):
            self.write()

    def _pass(self, rec: dict) -> None:
        mode = rec.get("mode") or "-"
        summary = rec.get("evidence") or {}
        self.passes.labels(mode, str(rec.get("result"))).inc()
        by_cls = summary.get("by_classification") or {}
        # a classification seen before and absent now is 0, not a stale value
        for cls in self._classes.setdefault(mode, set()) | set(by_cls):
            self.findings.labels(mode, cls).set(by_cls.get(cls, 0))
        self._classes[mode] |= set(by_cls)
        start, end = _epoch(rec.get("started_at")), _epoch(rec.get("finished_at"))
        if end is not None:
            self.last_end.labels(mode).set(end)
            if start is not None:
                self.last_duration.labels(mode).set(max(0.0, end - start))
        if summary.get("exit_code") is not None:
            self.last_exit.labels(mode).set(summary["exit_code"])
        if rec.get("db_queries") is not None:
            self.last_queries.labels(mode).set(rec["db_queries"])

    def write(self) -> None:
        try:
            self.backlog.set(self._backlog())
            self.paused.set(1 if self._paused() else 0)
            write_textfile(self.path, generate_latest(self.registry))
        except Exception as e:  # noqa: BLE001 - metrics never fail a pass
            LOG.warning("cannot write metrics file %s: %s", self.path, e)


def enable(reaper, conf=CONF) -> Metrics | None:
    """Subscribe a Metrics to ``reaper.audit``; ``conf`` is the agent's configuration
    snapshot (``agent.config.conf``) or a ConfigOpts. None without a metrics_file."""
    path = conf.reaper.metrics_file
    if not path:
        return None
    m = Metrics(path, backlog=reaper.state.backlog,
                paused=lambda: reaper.state.get_flag("paused") is not None)
    reaper.audit.subscribe(m)
    m.write()
    return m
