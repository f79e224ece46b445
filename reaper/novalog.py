"""Watch nova-compute's log; audit an instance when Nova says an operation on it failed.

Nova knows first when a delete, a volume detach, an evacuation or a migration goes
wrong half way (a detach that timed out: the guest released the volume later, or
never, while Nova had already rolled the volume back to in-use, and nobody looked at
the host: R13's attachment drift). Such a failure is exactly when
leftovers appear, so ``reaper-manage watch-nova-log`` follows the log like
``tail -F`` and runs a targeted, read-only audit of that one instance.

Layers, pure to effectful:

- ``parse_line``: one line in oslo.log's format (Nova's default
  ``logging_context_format_string``: ``%(asctime)s.%(msecs)03d %(process)d
  %(levelname)s %(name)s [<context>] %(instance)s%(message)s``, ``instance`` being
  ``[instance: <uuid>] ``; traceback lines repeat the shorter
  ``logging_exception_prefix``, without the ``[<context>]``).
- ``Assembler``: lines into records (a head line, its traceback and raw continuation).
- ``RULES`` / ``classify``: which records are failures of which operation, on
  which instance; each rule names where in Nova its message is logged.
- ``Detector``: the three above plus a per-instance debounce.
- ``Follower``: ``tail -F`` over rotation (rename and create, copytruncate).
- ``Position`` / ``PositionStore``: where the watcher had read to, kept under
  ``state_path`` so a restarted watcher catches up on what was logged while it
  was down, also across a rotation it did not see.
- ``watch``: the loop: follow, detect, audit, record; it survives bad lines,
  database outages and pass errors, and stops on request.
"""
from __future__ import annotations

import base64
import collections
import dataclasses
import hashlib
import json
import os
import re
import threading
import time
import uuid as uuidlib
from typing import Callable, Iterable

from oslo_log import log as logging

from reaper import exception

LOG = logging.getLogger(__name__)

TRIGGER_EVENT = "nova_log_trigger"
MAX_EXTRA_LINES = 400       # a record's traceback kept for classification, at most
_UUID = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
_LINE = re.compile(
    r"^(?P<asctime>\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?) "
    r"(?P<pid>\d+) (?P<level>[A-Z]+) (?P<logger>[\w.-]+) "
    r"(?:\[(?!instance: )(?P<context>[^\]]*)\] )?"
    rf"(?:\[instance: (?P<uuid>{_UUID})\] )?"
    r"(?P<message>.*)$")
_FRAME = re.compile(r'^\s*File "[^"]*", line \d+, in (?P<func>\w+)')


# -- lines and records -----------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LogLine:
    asctime: str
    pid: int
    level: str
    logger: str
    context: str | None     # None on traceback lines (logging_exception_prefix)
    instance_uuid: str | None
    message: str

    @property
    def request_id(self) -> str | None:
        """The local request id: the last ``req-`` token of the context (the first
        one, when there are two, is the global request id)."""
        ids = [t for t in (self.context or "").split() if t.startswith("req-")]
        return ids[-1] if ids else None


def parse_line(text: str) -> LogLine | None:
    """One line in oslo.log's format, or None (a raw continuation, or not Nova's)."""
    m = _LINE.match(text.rstrip("\r\n"))
    if m is None:
        return None
    uuid = m["uuid"].lower() if m["uuid"] else None
    return LogLine(m["asctime"], int(m["pid"]), m["level"], m["logger"], m["context"],
                   uuid, m["message"])


@dataclasses.dataclass
class NovaRecord:
    """One logging call: its head line and what followed it (traceback, raw lines)."""
    head: LogLine
    extra: list[str] = dataclasses.field(default_factory=list)

    def frames(self) -> list[str]:
        """Function names of the traceback, outermost first."""
        return [m["func"] for m in map(_FRAME.match, self.extra) if m]

    @property
    def exception(self) -> str | None:
        """The traceback's last non-empty line: the exception raised."""
        for line in reversed(self.extra):
            if line.strip() and not _FRAME.match(line) and not line.startswith("    "):
                return line.strip()
        return None


class Assembler:
    """Lines in, complete records out (a record ends when the next one starts)."""

    def __init__(self):
        self._pending: NovaRecord | None = None
        self.unparsed = 0       # lines that belong to no record

    def feed(self, text: str) -> list[NovaRecord]:
        line = parse_line(text)
        pending = self._pending
        if line is None:
            if pending is None:
                self.unparsed += 1
            elif len(pending.extra) < MAX_EXTRA_LINES:
                pending.extra.append(text.rstrip("\r\n"))
            return []
        if (line.context is None and pending is not None
                and (line.asctime, line.pid, line.logger)
                == (pending.head.asctime, pending.head.pid, pending.head.logger)):
            if len(pending.extra) < MAX_EXTRA_LINES:
                pending.extra.append(line.message)
            return []
        self._pending = NovaRecord(line)
        return [pending] if pending is not None else []

    def flush(self) -> list[NovaRecord]:
        """The record in progress, when the writer has gone quiet."""
        pending, self._pending = self._pending, None
        return [pending] if pending is not None else []


# -- which records are failures ---------------------------------------------------

DETACH, DELETE, EVACUATION, REBUILD, MIGRATION = (
    "detach", "delete", "evacuation", "rebuild", "migration")

# Frames of the traceback that say what a generic "Setting instance vm_state to
# ERROR" was doing (nova/compute/manager.py).
_DELETE_FRAMES = {"do_terminate_instance", "terminate_instance", "_delete_instance",
                  "_shutdown_instance"}
_REBUILD_FRAMES = {"rebuild_instance", "_do_rebuild_instance_with_claim",
                   "_do_rebuild_instance", "_rebuild_default_impl"}
_MIGRATION_FRAMES = {"prep_resize", "_prep_resize", "resize_instance", "_resize_instance",
                     "finish_resize", "_finish_resize", "_finish_resize_helper",
                     "revert_resize", "finish_revert_resize", "confirm_resize",
                     "_confirm_resize", "migrate_disk_and_power_off", "live_migration",
                     "_do_live_migration", "pre_live_migration",
                     "post_live_migration_at_destination"}


@dataclasses.dataclass(frozen=True)
class Rule:
    name: str
    operation: str
    pattern: re.Pattern     # matched at the start of the head line's message
    source: str             # where Nova logs it
    frames: frozenset = frozenset()     # when set: only with a traceback through one of these


def _rule(name, operation, pattern, source, frames=()):
    return Rule(name, operation, re.compile(pattern), source, frozenset(frames))


_ERROR_STATE = r"Setting instance vm_state to ERROR"
_IN_INSTANCE = rf"from instance (?P<uuid>{_UUID})"
RULES: tuple[Rule, ...] = (
    # Volume detach: Nova gave up, the guest may still hold the volume (R13).
    _rule("detach_failed", DETACH,
          rf"Failed to detach volume (?P<volume_id>{_UUID}) from (?P<mountpoint>[^\s:]+)",
          "nova/virt/block_device.py DriverVolumeBlockDevice._driver_detach (Pike+; "
          "nova/compute/manager.py ComputeManager._driver_detach_volume up to Ocata)"),
    _rule("detach_refused", DETACH, rf"Guest refused to detach volume (?P<volume_id>{_UUID})",
          "nova/virt/block_device.py DriverVolumeBlockDevice._driver_detach "
          "(DeviceDetachFailed)"),
    _rule("detach_on_delete_failed", DETACH,
          rf"Failed to detach volume: (?P<volume_id>{_UUID}) due to",
          "nova/compute/manager.py ComputeManager._cleanup_volumes (terminate)"),
    _rule("libvirt_detach_retries_exhausted", DETACH,
          r"Run out of retry while detaching device (?P<device>[^\s:]+) with device alias "
          rf"(?P<alias>[^\s:]+) {_IN_INSTANCE}",
          "nova/virt/libvirt/driver.py LibvirtDriver._detach_from_live_with_retry"),
    _rule("libvirt_device_removal_failed", DETACH,
          r"Received DeviceRemovalFailedEvent from libvirt for the detach of device "
          rf"(?P<device>[^\s:]+) with device alias (?P<alias>[^\s:]+) {_IN_INSTANCE}",
          "nova/virt/libvirt/driver.py LibvirtDriver._detach_from_live_and_wait_for_event"),
    _rule("libvirt_detach_error", DETACH,
          rf"Unexpected libvirt error while detaching device (?P<device>[^\s:]+) {_IN_INSTANCE}",
          "nova/virt/libvirt/driver.py LibvirtDriver._detach_sync"),
    _rule("libvirt_detach_persistent_failed", DETACH,
          rf"Failed to detach device (?P<device>[^\s:]+) {_IN_INSTANCE} from the persistent",
          "nova/virt/libvirt/driver.py LibvirtDriver._detach_from_persistent"),
    # Delete / terminate.
    _rule("terminate_failed", DELETE, _ERROR_STATE,
          "nova/compute/manager.py ComputeManager.terminate_instance.do_terminate_instance",
          _DELETE_FRAMES),
    _rule("delete_volume_failed", DELETE, rf"Failed to delete volume: (?P<volume_id>{_UUID}) due to",
          "nova/compute/manager.py ComputeManager._cleanup_volumes (terminate)"),
    _rule("libvirt_destroy_error", DELETE, r"Error from libvirt during destroy\. Code=",
          "nova/virt/libvirt/driver.py LibvirtDriver._destroy"),
    _rule("libvirt_undefine_error", DELETE, r"Error from libvirt during undefine\. Code=",
          "nova/virt/libvirt/driver.py LibvirtDriver._undefine_domain"),
    # Evacuation: the source host cleaning up after it (informational, but exactly
    # when leftovers show), and a rebuild on the destination failing.
    _rule("evacuated_instance_destroyed", EVACUATION,
          r"(?:Destroying|Deleting) instance as it has been evacuated from this host",
          "nova/compute/manager.py ComputeManager._destroy_evacuated_instances "
          "('Deleting ...' up to Pike, 'Destroying ... but still exists in the "
          "hypervisor' from Queens)"),
    _rule("rebuild_failed", REBUILD, _ERROR_STATE,
          "nova/compute/manager.py ComputeManager._error_out_instance_on_exception "
          "around rebuild_instance (an evacuation when 'Evacuating instance' was logged)",
          _REBUILD_FRAMES),
    # Migration: live migration, resize, cold migration, their rollbacks.
    _rule("pre_live_migration_failed", MIGRATION,
          r"Pre live migration failed at (?P<dest>[^\s:]+)",
          "nova/compute/manager.py ComputeManager._do_pre_live_migration_from_source"),
    _rule("live_migration_failed", MIGRATION, r"Live migration failed\.",
          "nova/compute/manager.py ComputeManager._do_live_migration"),
    _rule("libvirt_live_migration_failure", MIGRATION, r"Live Migration failure: ",
          "nova/virt/libvirt/driver.py LibvirtDriver._live_migration_operation"),
    _rule("libvirt_migration_aborted", MIGRATION, r"Migration operation has aborted",
          "nova/virt/libvirt/driver.py LibvirtDriver._live_migration_monitor"),
    _rule("live_migration_rollback_network_failed", MIGRATION,
          r"Network cleanup failed for destination host (?P<dest>[^\s:]+) during live "
          r"migration rollback",
          "nova/compute/manager.py ComputeManager._rollback_live_migration"),
    _rule("revert_crashed_migration_failed", MIGRATION, r"Failed to revert crashed migration",
          "nova/compute/manager.py ComputeManager._init_instance"),
    _rule("confirm_resize_failed", MIGRATION,
          r"Confirm resize failed on source host (?P<source>[^\s:.]+(?:\.[^\s:.]+)*)",
          "nova/compute/manager.py ComputeManager.confirm_resize"),
    _rule("finish_revert_migration_failed", MIGRATION,
          r"An error occurred during finish_revert_migration",
          "nova/compute/manager.py ComputeManager._finish_revert_resize_network_migrate_"
          "finish (and the snapshot-based variant)"),
    _rule("migration_failed", MIGRATION, _ERROR_STATE,
          "nova/compute/manager.py ComputeManager._error_out_instance_on_exception "
          "around prep_resize / resize_instance / finish_resize / live_migration",
          _MIGRATION_FRAMES),
)
# "Evacuating instance" (ComputeManager.rebuild_instance, INFO) tells an evacuation
# from a rebuild in place when the rebuild then fails.
_EVACUATING = re.compile(r"Evacuating instance\b")


@dataclasses.dataclass(frozen=True)
class Trigger:
    """Nova said an operation on this instance failed: audit it."""
    instance_uuid: str
    operation: str
    rule: str
    source: str
    logged_at: str
    level: str
    logger: str
    request_id: str | None
    message: str
    exception: str | None
    facts: dict            # what the message names: volume_id, device, dest...

    def as_evidence(self) -> dict:
        d = dataclasses.asdict(self)
        del d["instance_uuid"]          # the record's own field
        d["nova_message"] = d.pop("message")
        return d


def classify(rec: NovaRecord, evacuating: Callable[[str], bool] = lambda _u: False
             ) -> Trigger | None:
    """The failure ``rec`` reports, or None. ``evacuating(uuid)``: whether an
    evacuation of that instance was seen starting (turns a failed rebuild into a
    failed evacuation)."""
    head = rec.head
    if head.context is None:        # a stray traceback line: its head was elsewhere
        return None
    frames = None
    for rule in RULES:
        m = rule.pattern.match(head.message)
        if m is None:
            continue
        if rule.frames:
            frames = frames if frames is not None else set(rec.frames())
            if not frames & rule.frames:
                continue
        facts = {k: v for k, v in m.groupdict().items() if v is not None and k != "uuid"}
        uuid = head.instance_uuid or (m.groupdict().get("uuid") or "").lower() or None
        if uuid is None:
            return None
        op = rule.operation
        if op == REBUILD and evacuating(uuid):
            op = EVACUATION
        return Trigger(uuid, op, rule.name, rule.source, head.asctime, head.level,
                       head.logger, head.request_id, head.message, rec.exception, facts)
    return None


class Debouncer:
    """At most one trigger per key per ``seconds`` (one failure logs several lines)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic):
        self.seconds = seconds
        self._clock = clock
        self._last: dict[str, float] = {}

    def allow(self, key: str) -> bool:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self.seconds:
            return False
        self._last[key] = now
        if len(self._last) > 10000:     # a long-lived watcher forgets old instances
            self._last = {k: t for k, t in self._last.items() if now - t < self.seconds}
        return True


@dataclasses.dataclass
class DetectStats:
    lines: int = 0
    records: int = 0
    unparsed: int = 0
    failures: int = 0       # records classified as a failure
    debounced: int = 0      # of those, dropped by the debounce


class Detector:
    """Lines of nova-compute's log in, debounced triggers out."""

    def __init__(self, debounce: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self._assembler = Assembler()
        self._debounce = Debouncer(debounce, clock)
        self._evacuating: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.stats = DetectStats()

    def feed(self, text: str) -> list[Trigger]:
        self.stats.lines += 1
        out = self._handle(self._assembler.feed(text))
        self.stats.unparsed = self._assembler.unparsed
        return out

    def flush(self) -> list[Trigger]:
        return self._handle(self._assembler.flush())

    def _handle(self, records: Iterable[NovaRecord]) -> list[Trigger]:
        out = []
        for rec in records:
            self.stats.records += 1
            head = rec.head
            if head.instance_uuid and _EVACUATING.match(head.message):
                self._evacuating[head.instance_uuid] = None
                self._evacuating.move_to_end(head.instance_uuid)
                while len(self._evacuating) > 1000:
                    self._evacuating.popitem(last=False)
            trig = classify(rec, lambda u: u in self._evacuating)
            if trig is None:
                continue
            self.stats.failures += 1
            if not self._debounce.allow(trig.instance_uuid):
                self.stats.debounced += 1
                LOG.debug("debounced %s: %s", trig.operation, trig.message,
                          instance_uuid=trig.instance_uuid)
                continue
            out.append(trig)
        return out


# -- tail -F -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Position:
    """How far the watcher had handled a log: the file (device and inode, which
    survive a rename), the byte offset just past the last line handled, and the
    bytes before that offset (to tell the same file from one rewritten in place,
    or a new file that got the old inode back)."""
    path: str
    dev: int
    ino: int
    offset: int
    tail: bytes = b""

    def to_json(self) -> dict:
        return {"path": self.path, "dev": self.dev, "ino": self.ino, "offset": self.offset,
                "tail": base64.b64encode(self.tail).decode("ascii")}

    @classmethod
    def from_json(cls, d: dict) -> "Position":
        return cls(str(d["path"]), int(d["dev"]), int(d["ino"]), int(d["offset"]),
                   base64.b64decode(d.get("tail") or ""))


class PositionStore:
    """One small JSON file per watched log, replaced atomically (write, fsync,
    rename), so a crash leaves the previous position or the new one."""

    def __init__(self, path: str):
        self.path = path

    @classmethod
    def under(cls, state_path: str, log_path: str) -> "PositionStore":
        """The store for ``log_path`` in ``state_path`` (named after the log, with a
        hash of its absolute path so two watchers of two logs never share one)."""
        abspath = os.path.abspath(log_path)
        digest = hashlib.sha256(abspath.encode()).hexdigest()[:12]
        name = f"nova-log-position.{os.path.basename(abspath)}.{digest}.json"
        return cls(os.path.join(state_path, name))

    def load(self) -> Position | None:
        try:
            with open(self.path) as f:
                return Position.from_json(json.load(f))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            LOG.warning("ignoring unreadable position file %s: %s", self.path, e)
            return None

    def save(self, pos: Position) -> None:
        tmp = f"{self.path}.tmp"
        with open(tmp, "w") as f:
            json.dump(pos.to_json(), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


def _rotated_candidates(path: str) -> list[str]:
    """``path`` and its uncompressed rotated siblings (``nova-compute.log.1``,
    ``nova-compute.log-20240311``), where a file we were reading may now be."""
    d, base = os.path.split(os.path.abspath(path))
    try:
        names = os.listdir(d)
    except OSError:
        return [path]
    sibs = sorted(n for n in names if n != base and n.startswith(base)
                  and not n.endswith((".gz", ".bz2", ".xz", ".zst", ".lz4", ".tmp")))
    return [path] + [os.path.join(d, n) for n in sibs]


class Follower:
    """Complete new lines of a file, across rotation like ``tail -F``: a renamed
    file is read to its end before the new one is opened (from its start); a file
    truncated in place (copytruncate) is read again from its start, also when it
    has grown past where we were by the time we look (the bytes just before our
    position changed); a missing file is waited for."""

    CHUNK = 1 << 16
    SIGNATURE = 64      # bytes before our position, re-read to notice a rewrite

    def __init__(self, path: str, from_start: bool = False, resume: Position | None = None):
        self.path = path
        self._from_start = from_start
        self._resume = resume
        self._f = None
        self._ino = None
        self._buf = b""
        self._sig = b""
        self._waited = False
        self.rotations = 0
        self.truncations = 0
        self.resumed: str | None = None     # how a saved position was used (see _resume_at)

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def _open(self, at_end: bool) -> bool:
        try:
            f = open(self.path, "rb")
        except FileNotFoundError:
            return False
        except OSError as e:
            LOG.warning("cannot open %s: %s", self.path, e)
            return False
        st = os.fstat(f.fileno())
        if at_end:
            f.seek(0, os.SEEK_END)
        self._f, self._ino, self._sig = f, (st.st_dev, st.st_ino), b""
        return True

    def position(self) -> Position | None:
        """Where the lines returned so far end (a partial line is not included), or
        None while no file is open."""
        if self._f is None:
            return None
        dev, ino = self._ino
        offset = self._f.tell() - len(self._buf)
        n = min(self.SIGNATURE, offset)
        tail = os.pread(self._f.fileno(), n, offset - n) if n else b""
        return Position(self.path, dev, ino, offset, tail)

    def _resume_at(self, pos: Position) -> bool:
        """Reopen the file ``pos`` was in, wherever rotation moved it (the path
        itself, or an uncompressed sibling such as ``.1``), at ``pos.offset``; the
        normal rotation check then reads its rest and moves on to the new file.
        If that file was rewritten in place, read it from its start; if it is gone
        (compressed, removed), read the current file from its start and say what
        may have been missed."""
        for cand in _rotated_candidates(self.path):
            try:
                f = open(cand, "rb")
            except OSError:
                continue
            st = os.fstat(f.fileno())
            if (st.st_dev, st.st_ino) != (pos.dev, pos.ino):
                f.close()
                continue
            n = len(pos.tail)
            same = st.st_size >= pos.offset and (
                not n or os.pread(f.fileno(), n, pos.offset - n) == pos.tail)
            if same:
                f.seek(pos.offset)
                self._f, self._ino, self._sig = f, (st.st_dev, st.st_ino), pos.tail
                self.resumed = "here" if cand == self.path else f"rotated:{cand}"
                LOG.info("resuming %s at byte %d%s", cand, pos.offset,
                         "" if cand == self.path else f" (rotated from {self.path})")
                return True
            f.close()
            if cand == self.path:
                self.truncations += 1
                self.resumed = "rewritten"
                LOG.warning("%s was truncated or rewritten while not watched: reading it "
                            "from its start", self.path)
                return self._open(at_end=False)
            break
        self.resumed = "lost"
        LOG.warning("the file last read as %s (inode %d, up to byte %d) is gone, maybe "
                    "compressed or removed by rotation: reading %s from its start; what "
                    "was logged to the old file after that byte was not seen",
                    pos.path, pos.ino, pos.offset, self.path)
        return self._open(at_end=False)

    def _drain(self) -> bytes:
        chunks = []
        while True:
            data = self._f.read(self.CHUNK)
            if not data:
                break
            chunks.append(data)
        data = b"".join(chunks)
        self._sig = (self._sig + data)[-self.SIGNATURE:]
        return data

    def _rewritten(self) -> bool:
        pos = self._f.tell()
        size = os.fstat(self._f.fileno()).st_size
        if size < pos:
            return True
        sig = self._sig
        return bool(sig) and os.pread(self._f.fileno(), len(sig), pos - len(sig)) != sig

    def read_lines(self) -> list[str]:
        """Whatever complete lines were written since the last call (maybe none)."""
        if self._f is None and self._resume is not None and self._ino is None:
            pos, self._resume = self._resume, None
            if not self._resume_at(pos):
                self._waited = True
                return []
        if self._f is None:
            # Start at the end of a file that is there when we start (like tail);
            # read a file that appears later, or replaces one, from its start.
            at_end = self._ino is None and not self._from_start and not self._waited
            if not self._open(at_end=at_end):
                self._waited = True
                return []
        if self._rewritten():
            self.truncations += 1
            self._f.seek(0)
            self._buf, self._sig = b"", b""
        data = self._drain()
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            st = None
        except OSError as e:
            LOG.warning("cannot stat %s: %s", self.path, e)
            st = None
        if st is not None and (st.st_dev, st.st_ino) != self._ino:
            # Rotated: the old file was just read to its end; the rest is in the new one.
            self.rotations += 1
            lines = self._split(data, final=True)
            self.close()
            if self._open(at_end=False):
                lines += self._split(self._drain())
            return lines
        return self._split(data)

    def _split(self, data: bytes, final: bool = False) -> list[str]:
        *lines, self._buf = (self._buf + data).split(b"\n")
        if final and self._buf:
            lines.append(self._buf)
            self._buf = b""
        return [x.decode("utf-8", errors="replace").rstrip("\r") for x in lines]


# -- the watch loop (imperative shell) ----------------------------------------------

@dataclasses.dataclass
class WatchStats:
    triggers: int = 0
    audits_failed: int = 0
    detect: DetectStats = dataclasses.field(default_factory=DetectStats)
    rotations: int = 0
    truncations: int = 0
    resumed: str | None = None      # None: started fresh; else how the saved position was used


def _result_of(rep) -> str:
    if rep.exit_code == 1 or rep.errors:
        return "error"
    return "findings" if rep.findings else "clean"


def audit_instance(reaper, trig: Trigger, log_path: str) -> dict:
    """Run the targeted, read-only audit ``trig`` asks for and record the trigger
    with what it found in the audit log (with the pass's id, so ``audit-log story``
    shows the trigger next to its findings). Never raises for a failed pass: a
    database outage or a collector failure is in the record's result."""
    paused = None
    try:
        rep = reaper.run_pass("audit", only_uuid=trig.instance_uuid, source="nova-log watcher")
    except exception.Busy as e:
        # Another pass held the host longer than [reaper] pass_lock_timeout.
        LOG.warning("targeted audit not run: %s", e, instance_uuid=trig.instance_uuid)
        pass_id, result, found, errors, guards, code = (
            f"req-{uuidlib.uuid4()}", "busy", [], [f"busy: {e}"], [], 75)
    except Exception as e:  # run_pass reports its own errors; belt and braces
        LOG.exception("targeted audit failed", instance_uuid=trig.instance_uuid)
        pass_id, result, found, errors, guards, code = (
            f"req-{uuidlib.uuid4()}", "error", [], [f"audit failed: {e}"], [], 1)
    else:
        pass_id, result, errors, code = rep.pass_id, _result_of(rep), rep.errors, rep.exit_code
        found = [{k: f.get(k) for k in ("kind", "resource", "classification", "action",
                                          "result")} for f in rep.findings]
        guards = [g.get("guard") for g in rep.guards]
        paused = rep.paused
    return reaper.audit.record(
        TRIGGER_EVENT, pass_id, kind="instance", resource=trig.instance_uuid,
        instance_uuid=trig.instance_uuid, action="audit", result=result,
        reason=f"nova-compute logged a failed {trig.operation}: {trig.message}",
        evidence={**trig.as_evidence(), "nova_log": log_path, "findings": found,
                  "guards": guards, "errors": errors, "exit_code": code,
                  **({"host_paused": paused} if paused else {})})


_FROM_STATE = object()


def _default_store(reaper, path: str) -> PositionStore | None:
    """The position store in the reaper's ``state_path`` (where its state DB is)."""
    db_path = getattr(getattr(reaper, "state", None), "path", None)
    if not db_path:
        return None
    return PositionStore.under(os.path.dirname(db_path), path)


def watch(reaper, path: str, *, from_start: bool = False, debounce: float = 60.0,
          poll_interval: float = 0.5, max_triggers: int | None = None,
          exit_at_eof: bool = False, stop: threading.Event | None = None,
          clock: Callable[[], float] = time.monotonic,
          on_audit: Callable[[dict], None] | None = None,
          position_store: PositionStore | None | object = _FROM_STATE) -> WatchStats:
    """Follow ``path`` and audit every instance Nova reports a failed detach, delete,
    evacuation, rebuild or migration for, until ``stop`` is set, ``max_triggers``
    audits have run, or (``exit_at_eof``) the file has been read to its end.
    ``reaper`` needs ``run_pass(mode, only_uuid=...)`` and ``audit.record``;
    ``on_audit`` gets each trigger's audit record (the CLI prints it).

    The position is kept in ``position_store`` (by default a file in the reaper's
    ``state_path``; None keeps none) each time everything read so far has been
    handled (the writer went quiet and the last record was classified and
    audited). A watcher started again resumes there, across a rotation too (see
    ``Follower._resume_at``), so failures logged while it was stopped are still
    audited; ``from_start`` ignores the saved position and reads the whole file.
    A stop in the middle of a burst keeps the previous position: the lines after
    it are read again on the next start (an audit may run twice, never none)."""
    stop = stop or threading.Event()
    store = _default_store(reaper, path) if position_store is _FROM_STATE else position_store
    saved = store.load() if store is not None and not from_start else None
    follower = Follower(path, from_start=from_start, resume=saved)
    detector = Detector(debounce, clock)
    stats = WatchStats(detect=detector.stats)
    LOG.info("watching %s for failed nova-compute operations (debounce %ss)%s", path, debounce,
             f"; resuming at byte {saved.offset} of inode {saved.ino}" if saved else "")
    last_saved = saved

    def checkpoint() -> None:
        nonlocal last_saved
        pos = follower.position() if store is not None else None
        if pos is None or pos == last_saved:
            return
        try:
            store.save(pos)
            last_saved = pos
        except OSError as e:
            LOG.warning("cannot save the position in %s: %s", store.path, e)

    def handle(triggers: list[Trigger]) -> bool:
        for trig in triggers:
            if stop.is_set():
                return False
            LOG.warning("nova-compute logged a failed %s (%s); auditing it",
                        trig.operation, trig.rule, instance_uuid=trig.instance_uuid)
            try:
                rec = audit_instance(reaper, trig, path)
                if rec.get("result") in ("error", "busy"):
                    stats.audits_failed += 1
                if on_audit is not None:
                    on_audit(rec)
            except Exception:  # e.g. the audit log cannot be written
                stats.audits_failed += 1
                LOG.exception("recording the audit failed", instance_uuid=trig.instance_uuid)
            stats.triggers += 1
            if max_triggers is not None and stats.triggers >= max_triggers:
                return False
        return True

    try:
        while not stop.is_set():
            try:
                lines = follower.read_lines()
            except OSError as e:
                LOG.warning("reading %s failed: %s", path, e)
                follower.close()
                lines = []
            # Nothing new: the writer is quiet, so the last record is complete.
            steps = [(line, detector.feed) for line in lines] or [(None, detector.flush)]
            go_on = True
            for line, step in steps:
                try:
                    triggers = step(line) if line is not None else step()
                except Exception:  # one bad line never stops the watcher
                    LOG.exception("cannot handle nova log line %r", (line or "")[:200])
                    continue
                if not handle(triggers):
                    go_on = False
                    break
            if go_on and not lines:
                checkpoint()        # everything read so far is handled
            if not go_on or (not lines and exit_at_eof):
                break
            if not lines:
                stop.wait(poll_interval)
    finally:
        follower.close()
        stats.rotations, stats.truncations = follower.rotations, follower.truncations
        stats.resumed = follower.resumed
    LOG.info("stopped watching %s: %s", path, stats)
    return stats
