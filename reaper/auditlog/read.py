"""Stream audit records out of JSON-lines files: rotated siblings, ``.gz``, time windows.

Everything here is a generator: a report over a year of rotated logs holds one
line at a time, never the whole log. A line that is not a record (not JSON, not
an object, no ``event``, no readable ``ts``) is counted and a few are kept as
examples; an unreadable or truncated file is reported; neither stops the read.
"""
from __future__ import annotations

import dataclasses
import datetime
import gzip
import json
import os
import re
import sys
from typing import Iterable, Iterator

UTC = datetime.timezone.utc
MAX_EXAMPLES = 5

# audit.log, audit.log.1, audit.log.2.gz (logrotate's numbering, savelog's too),
# audit.log-20260101[.gz] (logrotate's dateext), audit.log.gz.
_ROTATED = re.compile(r"^(?P<base>.*?)(?:\.(?P<num>\d+)|-(?P<date>\d{8,14}))?(?P<gz>\.gz)?$")
_RELATIVE = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[smhdw])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def utcnow() -> datetime.datetime:
    return datetime.datetime.now(UTC)


def parse_time(text: str, now: datetime.datetime | None = None) -> datetime.datetime:
    """An aware UTC datetime from ``2026-11-23T22:41:25[+00:00]``, ``2026-11-23``,
    ``now`` or a relative age (``90m``, ``24h``, ``7d``, ``30s``, ``2w``: that long
    before ``now``). Naive ISO times are UTC, as the audit log writes them."""
    now = now or utcnow()
    text = text.strip()
    if text.lower() == "now":
        return now
    m = _RELATIVE.match(text)
    if m:
        return now - datetime.timedelta(**{_UNITS[m["unit"]]: float(m["n"])})
    try:
        t = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use ISO 8601 like 2026-11-23T22:00:00, "
                         f"or an age like 90m, 24h, 7d)") from None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def record_time(rec: dict) -> datetime.datetime | None:
    """The record's ``ts`` as an aware datetime (UTC when the text is naive)."""
    ts = rec.get("ts")
    if not isinstance(ts, str):
        return None
    try:
        t = datetime.datetime.fromisoformat(ts)
    except ValueError:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


@dataclasses.dataclass(frozen=True)
class Window:
    """``since <= ts < until``; either end open when None."""
    since: datetime.datetime | None = None
    until: datetime.datetime | None = None

    def __post_init__(self):
        if self.since and self.until and self.since >= self.until:
            raise ValueError(f"empty time window: since {self.since.isoformat()} is not "
                             f"before until {self.until.isoformat()}")

    @classmethod
    def parse(cls, since: str | None, until: str | None,
              now: datetime.datetime | None = None) -> "Window":
        now = now or utcnow()
        return cls(parse_time(since, now) if since else None,
                   parse_time(until, now) if until else None)

    def __contains__(self, t: datetime.datetime) -> bool:
        return (self.since is None or t >= self.since) and (self.until is None or t < self.until)

    def as_dict(self) -> dict:
        return {"since": self.since.isoformat() if self.since else None,
                "until": self.until.isoformat() if self.until else None}


@dataclasses.dataclass
class ReadStats:
    """What a read went through, for the report's footer: nothing is silently lost."""
    files: list[str] = dataclasses.field(default_factory=list)
    lines: int = 0
    records: int = 0        # well-formed records read
    matched: int = 0        # of those, inside the window and of the host asked for
    skipped: int = 0        # lines not parsed: they cannot mention the subject asked for
    malformed: int = 0
    examples: list[str] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)

    def bad_line(self, where: str, why: str) -> None:
        self.malformed += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{where}: {why}")

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _family(path: str) -> tuple[str, tuple]:
    """(the live file's path, the chronological sort key within its rotation family)."""
    d, name = os.path.split(path)
    m = _ROTATED.match(name)
    base = os.path.join(d, m["base"])
    if m["date"]:
        return base, (0, m["date"])
    if m["num"]:
        return base, (1, -int(m["num"]))
    return base, (2, 0)


def rotated_siblings(path: str) -> list[str]:
    """``path`` and its rotated copies that exist, oldest first:
    ``audit.log-20260101.gz, audit.log.3.gz, audit.log.2.gz, audit.log.1, audit.log``."""
    d, name = os.path.split(os.path.abspath(path))
    try:
        names = os.listdir(d)
    except OSError:
        return [path] if os.path.exists(path) else []
    found = []
    for n in names:
        m = _ROTATED.match(n)
        if m and m["base"] == name and (m["num"] or m["date"] or n == name):
            found.append(os.path.join(d, n))
    return sorted(found, key=lambda p: _family(p)[1])


def order_files(paths: Iterable[str]) -> list[str]:
    """Put files given on the command line in reading order: each rotation family
    oldest first (a shell glob ``audit.log*`` sorts them the wrong way round),
    families in the order they were first named, duplicates dropped."""
    families: dict[str, list[str]] = {}
    for p in paths:
        if p == "-":
            families.setdefault("-", ["-"])
            continue
        base, _ = _family(os.path.abspath(p))
        members = families.setdefault(base, [])
        if p not in members:
            members.append(p)
    out = []
    for members in families.values():
        out.extend(sorted(members, key=lambda p: _family(os.path.abspath(p))[1])
                   if members != ["-"] else members)
    return out


def _open(path: str):
    if path == "-":
        return sys.stdin
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":    # compressed whatever its name says (delaycompress, .gz)
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def _lines(path: str, stats: ReadStats) -> Iterator[tuple[int, str]]:
    stats.files.append(path)
    try:
        f = _open(path)
    except OSError as e:
        stats.errors.append(f"{path}: cannot read: {e.strerror or e}")
        return
    n = 0
    try:
        for n, line in enumerate(f, 1):
            yield n, line
    except (OSError, EOFError) as e:    # truncated or corrupt gzip: keep what was read
        stats.errors.append(f"{path}: unreadable after line {n}: {e}")
    finally:
        if f is not sys.stdin:
            f.close()


def iter_records(paths: Iterable[str], window: Window | None = None,
                 host: str | None = None, contains: str | None = None,
                 stats: ReadStats | None = None) -> Iterator[dict]:
    """Every well-formed record of ``paths`` (in the order given; see order_files)
    inside ``window`` and, when given, of ``host``. ``contains``: skip lines whose
    text does not contain that string before parsing them (a story over a big log
    parses only the lines that can belong to it). ``stats`` is filled as the
    generator runs."""
    stats = stats if stats is not None else ReadStats()
    window = window or Window()
    for path in paths:
        for n, line in _lines(path, stats):
            stats.lines += 1
            if not line.strip():
                continue
            if contains is not None and contains not in line:
                stats.skipped += 1
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                stats.bad_line(f"{path}:{n}", f"not JSON ({e.msg})")
                continue
            if not isinstance(rec, dict) or not isinstance(rec.get("event"), str):
                stats.bad_line(f"{path}:{n}", "not an audit record (no 'event')")
                continue
            t = record_time(rec)
            if t is None:
                stats.bad_line(f"{path}:{n}", f"no readable 'ts' ({rec.get('ts')!r})")
                continue
            stats.records += 1
            if t not in window or (host is not None and rec.get("host") != host):
                continue
            stats.matched += 1
            yield rec
