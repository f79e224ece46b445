"""Reports over a stream of audit records: summary, story, failures.

Pure: each builder folds an iterable of record dicts (``read.iter_records``) into a
dataclass, holding counters or the few records it must show, never the stream
itself; ``render`` turns any of them into a table for people or JSON for tools.
"""
from __future__ import annotations

import dataclasses
import datetime
import heapq
import itertools
import json
import re
from typing import Iterable

from reaper.auditlog.read import ReadStats, Window, record_time

# Results of an ``action`` record that mean the teardown did not finish
# (reaper.executor.teardown.Outcome): failed mid-way, aborted by the compare-and-act
# re-check or a step, or backed off a reclaim claim that a restore won.
FAILED_ACTION_RESULTS = ("failed", "aborted", "backed_off")
# Results of an ``rpc_call`` or ``nova_log_trigger`` record that mean it went wrong.
ERROR_RESULTS = ("error", "failed")
NONE = "-"


def _ts_key(rec: dict) -> datetime.datetime:
    return record_time(rec) or datetime.datetime.min.replace(tzinfo=datetime.timezone.utc)


def _str(value) -> str:
    return NONE if value is None or value == "" else str(value)


# -- summary -----------------------------------------------------------------------

@dataclasses.dataclass
class Summary:
    """Counts by host x event x classification x result, and by event and host."""
    records: int = 0
    first_ts: str | None = None
    last_ts: str | None = None
    by_event: dict[str, int] = dataclasses.field(default_factory=dict)
    by_host: dict[str, int] = dataclasses.field(default_factory=dict)
    cells: dict[tuple[str, str, str, str], int] = dataclasses.field(default_factory=dict)

    def as_dict(self) -> dict:
        return {"report": "summary", "records": self.records, "first_ts": self.first_ts,
                "last_ts": self.last_ts, "by_event": dict(sorted(self.by_event.items())),
                "by_host": dict(sorted(self.by_host.items())),
                "rows": [{"host": h, "event": e, "classification": c, "result": r, "count": n}
                         for (h, e, c, r), n in sorted(self.cells.items())]}

    def table_lines(self) -> list[str]:
        if not self.records:
            return ["no records"]
        lines = [f"{self.records} records from {self.first_ts} to {self.last_ts}", ""]
        lines += _table([("HOST", "EVENT", "CLASSIFICATION", "RESULT", "COUNT")]
                        + [(h, e, c, r, n) for (h, e, c, r), n in sorted(self.cells.items())],
                        right={4})
        lines.append("")
        lines += _table([("EVENT", "COUNT")] + sorted(self.by_event.items()), right={1})
        if len(self.by_host) > 1:
            lines.append("")
            lines += _table([("HOST", "COUNT")] + sorted(self.by_host.items()), right={1})
        return lines


def summary(records: Iterable[dict]) -> Summary:
    s = Summary()
    first = last = None
    for rec in records:
        s.records += 1
        host, event = _str(rec.get("host")), _str(rec.get("event"))
        key = (host, event, _str(rec.get("classification")), _str(rec.get("result")))
        s.cells[key] = s.cells.get(key, 0) + 1
        s.by_event[event] = s.by_event.get(event, 0) + 1
        s.by_host[host] = s.by_host.get(host, 0) + 1
        t = record_time(rec)
        if t is not None:
            if first is None or t < first[0]:
                first = (t, rec["ts"])
            if last is None or t > last[0]:
                last = (t, rec["ts"])
    s.first_ts = first[1] if first else None
    s.last_ts = last[1] if last else None
    return s


# -- story -------------------------------------------------------------------------

def subject_pattern(subject: str) -> re.Pattern:
    """``subject`` as a whole name: ``instance-0000000a`` is not in
    ``instance-0000000ab`` nor ``tap1234abcd-12`` in ``tap1234abcd-123``, but a uuid
    is in ``<uuid>_del``, ``/var/lib/nova/instances/<uuid>/disk``,
    ``instance-00000003:<volume>`` and ``iqn...:volume-<volume>``."""
    return re.compile(r"(?<![A-Za-z0-9])" + re.escape(subject) + r"(?![A-Za-z0-9-])")


def mentions(value, pattern: re.Pattern) -> bool:
    """Whether any string anywhere in ``value`` (a record, nested) names the subject."""
    if isinstance(value, str):
        return pattern.search(value) is not None
    if isinstance(value, dict):
        return any(mentions(v, pattern) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(mentions(v, pattern) for v in value)
    return False


@dataclasses.dataclass
class Story:
    """Every record that names one instance uuid or resource, oldest first."""
    subject: str
    records: list[dict] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict:
        return {"report": "story", "subject": self.subject, "count": len(self.records),
                "passes": len({r.get("pass_id") for r in self.records}),
                "records": self.records}

    def table_lines(self) -> list[str]:
        if not self.records:
            return [f"no record mentions {self.subject}"]
        passes = len({r.get("pass_id") for r in self.records})
        lines = [f"{self.subject}: {len(self.records)} records in {passes} passes, "
                 f"{self.records[0].get('ts')} to {self.records[-1].get('ts')}", ""]
        for r in self.records:
            lines.append("  ".join(x for x in (
                _str(r.get("ts")), _str(r.get("host")), _str(r.get("pass_id")),
                _str(r.get("event")), _str(r.get("kind")), _str(r.get("resource")),
                _what(r)) if x != NONE))
            for detail in _details(r):
                lines.append(f"    {detail}")
        return lines


def _what(r: dict) -> str:
    cls, action, result = r.get("classification"), r.get("action"), r.get("result")
    head = "/".join(x for x in (cls, action) if x)
    return f"{head} -> {result}" if head and result else (head or _str(result))


def _details(r: dict) -> list[str]:
    out = []
    if r.get("reason"):
        out.append(str(r["reason"]))
    ev = r.get("evidence") or {}
    if r.get("event") == "action" and ev.get("steps"):
        out.append("steps: " + ", ".join(f"{s}: {d}" for s, d in ev["steps"]))
    if r.get("event") == "guard_tripped" and r.get("guard"):
        out.append(f"guard {r['guard']} (scope {r.get('scope') or 'pass'})")
    if r.get("event") in ("rpc_call", "nova_log_trigger"):
        # rpc_call (reaper.rpc.server) keeps method, caller and args at the top level
        for key in ("method", "caller", "args", "nova_message", "operation", "exception",
                    "findings", "errors"):
            value = r.get(key, ev.get(key))
            if value in (None, "", [], {}) or (key == "nova_message"
                                                and value in str(r.get("reason") or "")):
                continue
            out.append(f"{key}: {_compact(value)}")
    return out


def _compact(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)


def story(records: Iterable[dict], subject: str) -> Story:
    """The records that mention ``subject`` anywhere (uuid, resource, evidence,
    an RPC call's arguments, a nova-log trigger), sorted by time."""
    pattern = subject_pattern(subject)
    found = [r for r in records if mentions(r, pattern)]
    # sort is stable: records of one pass with equal timestamps keep the log's order
    found.sort(key=_ts_key)
    return Story(subject, found)


# -- failures ----------------------------------------------------------------------

def failure_category(rec: dict) -> str | None:
    """What went wrong in ``rec``, or None when nothing did."""
    event, result = rec.get("event"), rec.get("result")
    if event == "action" and result in FAILED_ACTION_RESULTS:
        return f"action {result}"
    if event == "guard_tripped":
        return f"guard {rec.get('guard') or _str(rec.get('reason'))}"
    if event == "pass_summary":
        errors = (rec.get("evidence") or {}).get("errors") or 0
        if isinstance(errors, (int, float)) and errors > 0:
            return "pass error"
    if event in ("rpc_call", "nova_log_trigger") and result in ERROR_RESULTS:
        return f"{event} {result}"
    if event == "journal_quarantined":     # a teardown this version cannot resume
        return "journal quarantined"
    return None


@dataclasses.dataclass
class Failures:
    """Failed/aborted/backed-off actions, tripped guards, passes with errors, failed
    RPC calls and triggered audits: counted in full, the latest ``limit`` shown."""
    limit: int
    total: int = 0
    by_category: dict[str, int] = dataclasses.field(default_factory=dict)
    by_host: dict[str, int] = dataclasses.field(default_factory=dict)
    latest: list[dict] = dataclasses.field(default_factory=list)

    def as_dict(self) -> dict:
        return {"report": "failures", "total": self.total, "limit": self.limit,
                "by_category": dict(sorted(self.by_category.items())),
                "by_host": dict(sorted(self.by_host.items())),
                "latest": [dict(r, failure=failure_category(r)) for r in self.latest]}

    def table_lines(self) -> list[str]:
        if not self.total:
            return ["no failures"]
        lines = _table([("FAILURE", "COUNT")] + sorted(self.by_category.items()), right={1})
        if len(self.by_host) > 1:
            lines.append("")
            lines += _table([("HOST", "COUNT")] + sorted(self.by_host.items()), right={1})
        shown = len(self.latest)
        lines += ["", f"latest {shown} of {self.total}:" if shown < self.total
                  else f"all {self.total}:"]
        lines += _table([("TIME", "HOST", "FAILURE", "INSTANCE", "RESOURCE", "REASON")] + [
            (_str(r.get("ts")), _str(r.get("host")), failure_category(r),
             _str(r.get("instance_uuid")), _str(r.get("resource")), _str(r.get("reason")))
            for r in self.latest])
        return lines


def failures(records: Iterable[dict], limit: int = 50) -> Failures:
    if limit < 0:
        raise ValueError("limit must be >= 0")
    f = Failures(limit=limit)
    heap: list[tuple] = []      # the ``limit`` newest, oldest on top
    seq = itertools.count()
    for rec in records:
        category = failure_category(rec)
        if category is None:
            continue
        f.total += 1
        f.by_category[category] = f.by_category.get(category, 0) + 1
        host = _str(rec.get("host"))
        f.by_host[host] = f.by_host.get(host, 0) + 1
        if limit:
            item = (_ts_key(rec), next(seq), rec)
            if len(heap) < limit:
                heapq.heappush(heap, item)
            else:
                heapq.heappushpop(heap, item)
    f.latest = [rec for _, _, rec in sorted(heap, key=lambda x: x[:2])]
    return f


# -- rendering ---------------------------------------------------------------------

def _table(rows: list[tuple], right: frozenset | set = frozenset()) -> list[str]:
    rows = [tuple(_str(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if i in right else c.ljust(w)
                      for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
            for r in rows]


def render(report, fmt: str = "table", stats: ReadStats | None = None,
           window: Window | None = None, host: str | None = None) -> str:
    """``report`` (Summary, Story, Failures) as ``table`` or ``json``, with where the
    records came from and what could not be read."""
    if fmt == "json":
        d = report.as_dict()
        d["filters"] = {**(window or Window()).as_dict(), "host": host}
        if stats is not None:
            d["source"] = stats.as_dict()
        return json.dumps(d, indent=2, default=str)
    if fmt != "table":
        raise ValueError(f"unknown format {fmt!r}")
    lines = report.table_lines()
    if stats is not None:
        lines += ["", _source_line(stats, window, host)]
        for e in stats.errors:
            lines.append(f"ERROR {e}")
        for ex in stats.examples:
            lines.append(f"malformed: {ex}")
    return "\n".join(lines)


def _source_line(stats: ReadStats, window: Window | None, host: str | None) -> str:
    parts = [f"read {len(stats.files)} file{'s' if len(stats.files) != 1 else ''}, "
             f"{stats.records} records"]
    if stats.matched != stats.records:
        filters = []
        if window and window.since:
            filters.append(f"since {window.since.isoformat()}")
        if window and window.until:
            filters.append(f"until {window.until.isoformat()}")
        if host:
            filters.append(f"host {host}")
        parts.append(f"{stats.matched} {' '.join(filters) or 'selected'}")
    if stats.skipped:
        parts.append(f"{stats.skipped} lines not naming the subject skipped unparsed")
    parts.append(f"{stats.malformed} malformed lines")
    return ", ".join(parts)
