"""The agent: pause/approve, status, and the periodic main loop.

Every pass of the agent (timers, init_host, RPC calls) goes through
``Agent.run_pass`` into ``Reaper.run_pass``, which holds the host's pass lock
(reaper.passlock: one pass per host, across processes, reaper-manage and the
nova-log watcher included) and reads the host's pause itself; the agent only
chooses how long a caller waits (``busy`` after that) and turns a paused refusal
into :class:`Paused` for RPC. The main loop runs the timers, pings the systemd
watchdog, reloads mutable options on SIGHUP between passes, and on SIGTERM lets
the current teardown finish the step it is in, then exits; the journal holds the
rest for the next start.

Everything the running agent reads from its configuration comes from one
immutable :class:`reaper.confsnap.ConfigSnapshot` (``Agent.config``), replaced
whole by a reload that validated every option, never piecemeal. Whatever a pass
raises, the loop logs it, records the pass as failed and keeps serving.
"""
from __future__ import annotations

import random
import signal
import threading
import time
import uuid as uuidlib
from typing import Callable

from oslo_log import log as logging

from reaper import exception
from reaper import config, confsnap, reconcile
from reaper import state as state_mod
from reaper.agent import schedule
from reaper.agent.sdnotify import SdNotify
from reaper.conf import CONF
from reaper.report import PassReport

LOG = logging.getLogger(__name__)


# sysexits' EX_CONFIG: a bad configuration or a host identity that does not match
# the DB. The unit's RestartPreventExitStatus keeps systemd from looping on it.
EXIT_CONFIG = 78


class Agent:
    def __init__(self, reaper: reconcile.Reaper, conf=CONF, notify: SdNotify | None = None,
                 rng: random.Random | None = None,
                 monotonic: Callable[[], float] = time.monotonic):
        self.reaper = reaper
        self.conf = conf
        self.host = reaper.policy.host
        self.sd = notify if notify is not None else SdNotify()
        self.stop_event = threading.Event()
        self._wake = threading.Event()
        self._reload = threading.Event()
        self._last: PassReport | None = None
        self._ready = False
        self._rng = rng or random.Random()
        self._mono = monotonic
        # The configuration every reader uses: taken here, replaced whole by a good
        # reload only, so a refused edit never reaches the loop, the passes or RPC.
        self._config = confsnap.take(conf, reaper.policy)
        # Called as fn(agent, report) after every pass (metrics, tests).
        self.pass_listeners: list[Callable[["Agent", PassReport], None]] = []
        reaper.should_stop = self.stop_event.is_set
        reaper.heartbeat = self.sd.watchdog

    # -- what RPC and the loop share ---------------------------------------------

    @property
    def config(self) -> confsnap.ConfigSnapshot:
        """The last validated configuration (one reference: read it once per use)."""
        return self._config

    @property
    def _iv(self) -> dict:
        return self._config.intervals.as_dict()

    @property
    def paused(self) -> str | None:
        """The reason given to pause, or None when not paused (survives restarts)."""
        pause = self.reaper.state.pause_state()
        return None if pause is None else pause["reason"]

    def _paused_or_unknown(self) -> str | None:
        """``paused``, for what must not fail (status lines, the main loop): a state
        DB that cannot be read right now shows as unknown."""
        try:
            return self.paused
        except state_mod.StateError as e:
            LOG.warning("cannot read the pause flag: %s", e)
            return "unknown: the state DB cannot be read"

    def run_pass(self, mode: str, dry_run: bool | None = None, only_uuid: str | None = None,
                 *, source: str = "timer", wait: float | None = None) -> PassReport:
        """One pass through the reaper (which holds the host's pass lock and checks
        the pause). ``wait``: seconds to wait for a running pass (default
        ``[reaper] pass_lock_timeout``), then :class:`Busy`. A destructive pass the
        pause refused raises :class:`Paused` after it ran as an audit."""
        if mode not in reconcile.MODES:
            raise ValueError(f"mode must be one of {', '.join(reconcile.MODES)}")
        if self.stop_event.is_set() and mode != "audit":
            raise exception.Busy("the agent is stopping")
        rep = self.reaper.run_pass(mode, dry_run=dry_run, only_uuid=only_uuid,
                                   on_planned=self._planned, source=source, wait=wait)
        self._last = rep
        self.sd.status(self.status_line())
        for listener in list(self.pass_listeners):
            try:
                listener(self, rep)
            except Exception:  # metrics never stop the agent
                LOG.exception("pass listener %r failed", listener)
        refused = [g for g in rep.guards if g["guard"] == "paused"]
        if refused:
            raise exception.Paused(refused[0]["reason"], rep)
        return rep

    def _planned(self, rep: PassReport) -> None:
        if not self._ready:
            self._ready = True
            self.sd.ready(f"first pass planned: {rep.summary['findings']} findings; "
                          f"executing")

    def status(self) -> dict:
        """What RPC's status() answers. A state DB that cannot be read right now
        (locked, broken) shows as None counts and a ``state_error``, never an error."""
        last = self._last
        st = self.reaper.state
        state_error = None
        try:
            pause = st.pause_state()
            backlog, quarantined = st.backlog(), st.quarantined()
            blocked = st.blocked_unapproved()
        except state_mod.StateError as e:
            state_error = f"state DB: {e}"
            pause, backlog, quarantined, blocked = None, None, None, []
        out = {
            "host": self.host,
            "paused": pause is not None,
            "paused_reason": None if pause is None else pause["reason"],
            "paused_by": None if pause is None else pause["by"],
            "paused_since": None if pause is None else pause["since"],
            # the pass holding the host's pass lock: the agent's or another process's
            "running": self.reaper.pass_lock.holder(),
            "last_pass": None if last is None else {
                "pass_id": last.pass_id, "mode": last.mode, "dry_run": last.dry_run,
                "started_at": last.started_at, "finished_at": last.finished_at,
                "summary": last.summary},
            "journal_backlog": backlog,
            "journal_quarantined": quarantined,
            "guards_tripped": [] if last is None else [g["guard"] for g in last.guards],
            "blocked_passes": blocked,
            "dry_run": self.reaper.policy.dry_run,
        }
        if state_error:
            out["state_error"] = state_error
        return out

    def status_line(self) -> str:
        """One line for systemd's STATUS= (``systemctl status``)."""
        last = self._last
        head = "PAUSED; " if self._paused_or_unknown() is not None else ""
        if last is None:
            return head + "no pass yet"
        s = last.summary
        acts = ", ".join(f"{k} {v}" for k, v in sorted(s["actions"].items())) or "none"
        guards = ", ".join(s["guards_tripped"]) or "none"
        return (f"{head}last {last.mode} pass at {last.finished_at[:19]}: "
                f"{s['findings']} findings, actions {acts}, guards {guards}, "
                f"exit {s['exit_code']}")

    def pause(self, reason: str = "", by: str | None = None) -> dict:
        """Set the host's persistent pause flag (every pass of every process reads
        it); ``by`` says who asked (RPC: the caller), for the refusal's message."""
        reason = reason.strip() or "paused by an operator"
        self.reaper.state.set_pause(reason, by, reconcile.utcnow())
        self.reaper.audit.record("agent_state", "-", result="paused", reason=reason,
                                 **({"by": by} if by else {}))
        self.sd.status(self.status_line())
        return self.status()

    def resume(self, by: str | None = None) -> dict:
        self.reaper.state.set_pause(None, None, reconcile.utcnow())
        self.reaper.audit.record("agent_state", "-", result="resumed", reason="resumed",
                                 **({"by": by} if by else {}))
        self.sd.status(self.status_line())
        return self.status()

    def approve(self, pass_id: str) -> bool:
        return self.reaper.state.approve(pass_id, reconcile.utcnow())

    # -- signals and reload --------------------------------------------------------

    def request_stop(self, *_args) -> None:
        self.stop_event.set()
        self._wake.set()

    def request_reload(self, *_args) -> None:
        self._reload.set()
        self._wake.set()

    def reload(self) -> bool:
        """SIGHUP: re-read the config files; mutable options (actions, intervals,
        dry_run, guards, RPC permissions) apply from the next pass or call.

        All or nothing: the files are parsed into a fresh ConfigOpts and every
        option is validated before the new snapshot replaces the running one; a
        file refused at any point changes nothing. Options that need a restart
        are reported and keep their running value."""
        try:
            out = confsnap.reread(self._config, self.conf)
        except (Exception, SystemExit) as e:  # noqa: BLE001 - a bad edit must not stop the agent
            LOG.error("reload failed, keeping the running configuration: %s", e)
            self._record_state("reload_failed", f"reload refused: {e}")
            return False
        self._config = out.snapshot
        self.reaper.policy = out.snapshot.policy
        config.warn_unknown_names(self.conf, LOG)      # a name misspelled in this edit
        self.reaper.lock_timeout = out.snapshot.intervals.pass_lock_timeout
        if out.needs_restart:
            LOG.warning("configuration reloaded; these options change only on a restart "
                        "and keep their running value: %s", ", ".join(sorted(out.needs_restart)))
        LOG.info("configuration reloaded; changed: %s",
                 ", ".join(f"{k} {v[0]!r} -> {v[1]!r}" for k, v in sorted(out.changed.items()))
                 or "nothing")
        self._record_state("reloaded", "configuration reloaded (SIGHUP)",
                           evidence={"changed": out.changed,
                                     "needs_restart": out.needs_restart})
        return True

    def _record_state(self, result: str, reason: str, **fields) -> None:
        """An agent_state audit record; an unwritable audit log is logged, never fatal."""
        try:
            self.reaper.audit.record("agent_state", "-", result=result, reason=reason,
                                     **fields)
        except Exception:  # the agent outlives a full or broken audit log
            LOG.exception("cannot write the agent_state %s audit record", result)

    # -- the service ----------------------------------------------------------------

    def _periodic(self, mode: str, source: str) -> PassReport | None:
        """A timer's pass. On a paused host it runs as an audit, so reports and
        metrics stay current without a refused pass (and a 'paused' guard record)
        every interval; the pass itself still refuses should the pause come between.
        Never raises: the main loop must survive anything a pass meets."""
        started = reconcile.utcnow().isoformat()
        try:
            if self._paused_or_unknown() is not None and not self.reaper.policy.dry_run:
                mode, source = "audit", source + " (paused: audit only)"
            return self.run_pass(mode, source=source)
        except (exception.Paused, exception.Busy) as e:
            LOG.info("%s pass skipped: %s", mode, e)
            return None
        except Exception as e:  # whatever a pass raises, the agent serves on
            LOG.exception("%s pass (%s) failed; the agent keeps serving", mode, source)
            return self._failed_pass(mode, source, started, e)

    def _failed_pass(self, mode: str, source: str, started: str,
                     exc: BaseException) -> PassReport:
        """Record a pass that raised (a locked state DB, a full audit filesystem,
        RecursionError, MemoryError...) as failed: exit code 1 in status, STATUS=,
        the audit log (when it can be written) and the pass listeners."""
        rep = PassReport(host=self.host, pass_id=f"req-{uuidlib.uuid4()}", mode=mode,
                         dry_run=self.reaper.policy.dry_run, started_at=started,
                         finished_at=reconcile.utcnow().isoformat(),
                         errors=[f"pass failed: {type(exc).__name__}: {exc}"[:1000]])
        self._last = rep
        try:
            self.reaper.audit.record("pass_summary", rep.pass_id, result=str(rep.exit_code),
                                     reason=f"{mode} pass failed ({source})",
                                     evidence=rep.summary, mode=mode,
                                     started_at=rep.started_at, finished_at=rep.finished_at,
                                     error=rep.errors[0])
        except Exception:
            LOG.exception("cannot write the failed pass to the audit log")
        try:
            self.sd.status(self.status_line())
        except Exception:  # noqa: BLE001 - a status line never fails the report
            self.sd.status(f"last {mode} pass failed: {rep.errors[0][:200]}")
        for listener in list(self.pass_listeners):
            try:
                listener(self, rep)
            except Exception:
                LOG.exception("pass listener %r failed", listener)
        return rep

    def serve(self) -> int:
        """Run until SIGTERM: identity check, init_host pass, then the timers."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        signal.signal(signal.SIGHUP, self.request_reload)
        try:
            db_ok, ident = self.reaper.check_identity()
        except Exception as e:  # noqa: BLE001 - reported; the start goes on
            db_ok, ident = False, None
            LOG.warning("cannot check host identity at start: %s", e)
        if db_ok and ident is not None and ident.tripped:
            LOG.error("refusing to start: %s", ident.reason)
            self.reaper.audit.guard("-", ident)
            self.sd.stopping(f"refusing to start: {ident.reason}")
            return EXIT_CONFIG
        if not db_ok:
            LOG.warning("cannot check host identity at start (%s): passes report it and "
                        "change nothing until it can be checked",
                        ident.reason if ident is not None else "see above")
        self._record_state("started", "reaper-agent started",
                           evidence={"intervals": self._iv,
                                     "dry_run": self.reaper.policy.dry_run})

        # init_host: what nova-compute does at start-up, evacuated instances first.
        self._periodic("reap", "init_host")
        if not self._ready:          # the pass failed before planning: still up
            self._ready = True
            self.sd.ready(self.status_line())

        frac = self._iv["jitter"]
        now = self._mono()
        timers = [schedule.Timer(m, self._iv[m], schedule.first_due(now, self._iv[m], frac,
                                                                      self._rng))
                  for m in ("reap", "reclaim")]
        while not self.stop_event.is_set():
            if self._reload.is_set():
                self._reload.clear()
                if self.reload():
                    frac = self._iv["jitter"]
                    now = self._mono()
                    timers = [schedule.reschedule(t, now, self._iv[t.mode], frac, self._rng)
                              for t in timers]
            self.sd.watchdog()
            now = self._mono()
            t = schedule.pick(timers, now)
            if t is not None:
                started = self._mono()
                self._periodic(t.mode, "timer")
                finished = self._mono()
                t.due, overran = schedule.next_due(started, finished, t.interval, frac,
                                                   self._rng)
                if overran:
                    LOG.warning("the %s pass took %.0fs, longer than its interval %ss: the "
                                "next one waits a whole interval after it", t.mode,
                                finished - started, t.interval)
                continue
            cap = self.sd.watchdog_interval or 5.0
            self._wake.wait(schedule.sleep_for(timers, now, cap))
            self._wake.clear()

        self.sd.stopping("stopping: the current step finishes, the journal keeps the rest")
        self.reaper.pass_lock.wait_idle()   # an RPC-started pass stops at its next step too
        try:
            backlog = self.reaper.state.backlog()
        except Exception as e:  # noqa: BLE001 - stopping must not fail on the state DB
            backlog = f"unknown: {e}"
        self._record_state("stopped", "SIGTERM: stopped between steps",
                           evidence={"journal_backlog": backlog})
        return 0

