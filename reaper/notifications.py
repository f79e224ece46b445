"""oslo.messaging notifications of what the reaper did, for tooling on the controllers.

Cinder, Neutron and Placement tooling learn here what a reclaim left for them (volumes
with delete_on_termination, ports, allocations) and monitoring learns of tripped
guards and failed teardowns. The payload is the audit record itself.

Where they go is oslo.messaging's own ``[oslo_messaging_notifications]`` (driver,
topics, transport_url); with its default driver nothing is sent. A worker thread
sends them, so a slow or absent broker never holds up a pass: the pass only puts
records on a bounded queue.
"""
from __future__ import annotations

import queue
import threading
import warnings

from oslo_log import log as logging

from reaper.conf import CONF

LOG = logging.getLogger(__name__)


# classification -> event type of a teardown that was done
_DONE_EVENTS = {
    "evacuated": "reaper.instance.reaped",
    "running_deleted": "reaper.instance.reaped",
    "reclaimable": "reaper.instance.reclaimed",
    "stranded_claim": "reaper.instance.claim_released",
}


def event_for(rec: dict) -> tuple[str, str, dict] | None:
    """(event_type, priority, payload) for an audit record, or None (not notified).

    Findings are not notified one by one (a host reports the same ones every pass);
    the pass summary carries their counts.
    """
    event = rec.get("event")
    if event == "action":
        result = rec.get("result")
        if result == "done":
            ev = rec.get("evidence") or {}
            if ev.get("services_retry"):
                # A journaled teardown whose host part and DB were done earlier
                # finished its Neutron/Cinder/Placement steps: not a second delete.
                return ("reaper.instance.services_finished", "info",
                        {**rec, "leftovers": ev.get("controller_leftovers") or {}})
            if rec.get("action") == "shutdown":
                return "reaper.instance.shutdown", "info", rec
            etype = _DONE_EVENTS.get(rec.get("classification"), "reaper.leak.cleaned")
            if etype == "reaper.instance.reclaimed":
                left = (rec.get("evidence") or {}).get("controller_leftovers") or {}
                return etype, "info", {**rec, "leftovers": left}
            return etype, "info", rec
        if result == "failed":
            return "reaper.action.failed", "error", rec
        if result in ("aborted", "backed_off"):
            return "reaper.action.aborted", "warn", rec
        return None         # interrupted: the journal resumes it; the resumed one notifies
    if event == "guard_tripped":
        return "reaper.guard.tripped", "warn", rec
    if event == "journal_quarantined":      # a teardown this version cannot resume
        return "reaper.journal.quarantined", "warn", rec
    if event == "pass_summary":
        return "reaper.pass.end", "info", rec
    if event == "agent_state" and rec.get("result") in ("paused", "resumed"):
        return f"reaper.host.{rec['result']}", "info", rec
    return None


class Emitter:
    """An audit listener that sends notifications from a worker thread."""

    def __init__(self, notifier, size: int = 10000):
        self.notifier = notifier
        self._q: queue.Queue = queue.Queue(maxsize=size)
        self.dropped = 0
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name="reaper-notify", daemon=True)
        self._thread.start()

    def __call__(self, rec: dict) -> None:
        out = event_for(rec)
        if out is None:
            return
        try:
            self._q.put_nowait((*out, {}, None))
        except queue.Full:
            self.dropped += 1
            LOG.warning("notification queue full: %s of pass %s dropped (it is in the "
                        "audit log)", out[0], rec.get("pass_id"))

    def send(self, event_type: str, priority: str, payload: dict, *, ctxt: dict | None = None,
             notifier=None) -> bool:
        """Queue one notification of any kind (``notifier``: another Notifier on the
        same transport, e.g. another publisher or topic). False when the queue is full:
        it is dropped and logged, never waited for."""
        try:
            self._q.put_nowait((event_type, priority, payload, ctxt or {}, notifier))
            return True
        except queue.Full:
            self.dropped += 1
            LOG.warning("notification queue full: %s dropped", event_type)
            return False

    def _run(self) -> None:
        while True:
            item = self._q.get()
            try:
                if item is None:
                    return
                etype, priority, payload, ctxt, notifier = item
                # oslo.messaging's Notifier logs and swallows delivery errors itself.
                getattr(notifier or self.notifier, priority)(ctxt, etype, payload)
                self.sent += 1
            except Exception:  # the worker must outlive a bad payload
                LOG.exception("sending notification failed")
            finally:
                self._q.task_done()

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait (bounded) until what is queued has been handed to the broker."""
        done = threading.Event()

        def wait():
            self._q.join()
            done.set()
        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        self.flush(timeout)
        try:
            self._q.put_nowait(None)
        except queue.Full:
            pass
        self._thread.join(timeout)
        try:
            self.notifier.transport.cleanup()
        except Exception:  # best effort on shutdown
            LOG.debug("notification transport cleanup failed", exc_info=True)


def enable(reaper, conf=CONF, queue_size: int | None = None) -> Emitter | None:
    """Subscribe notifications to ``reaper.audit``; None when the driver sends nothing.

    ``conf`` (a ConfigOpts) gives the transport, read once here; the agent passes
    ``queue_size`` from its validated configuration snapshot."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import oslo_messaging
    from reaper import rpc
    rpc.prepare_conf(conf)
    transport = oslo_messaging.get_notification_transport(conf)
    # retry=0: one delivery attempt, then oslo.messaging logs the failure and moves on
    # (the default retries forever and would stall the worker behind a dead broker).
    notifier = oslo_messaging.Notifier(transport, publisher_id=f"reaper.{reaper.policy.host}",
                                       retry=0)
    if not notifier.is_enabled():
        transport.cleanup()
        return None
    emitter = Emitter(notifier, conf.reaper.notification_queue_size
                      if queue_size is None else queue_size)
    reaper.audit.subscribe(emitter)
    return emitter
