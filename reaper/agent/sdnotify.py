"""sd_notify(3) over $NOTIFY_SOCKET, with no dependency on systemd being present.

oslo.service's systemd helper only sends READY=1; the agent also needs
WATCHDOG=1 and STATUS=, so these few lines speak the datagram protocol directly.
Outside systemd (no $NOTIFY_SOCKET) every call is a cheap no-op.
"""
from __future__ import annotations

import os
import socket
import time

from oslo_log import log as logging

LOG = logging.getLogger(__name__)


class SdNotify:
    def __init__(self, environ=None):
        env = os.environ if environ is None else environ
        addr = env.get("NOTIFY_SOCKET") or None
        if addr and addr.startswith("@"):          # abstract namespace
            addr = "\0" + addr[1:]
        self.address = addr
        # WATCHDOG_USEC is meant for us only when WATCHDOG_PID is unset or our pid.
        usec = env.get("WATCHDOG_USEC")
        pid = env.get("WATCHDOG_PID")
        mine = pid is None or pid == str(os.getpid())
        self.watchdog_interval = (int(usec) / 1e6 / 2) if usec and usec.isdigit() and mine else None
        self._last_ping = 0.0
        self._sock = None
        if addr:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, **fields: str | int) -> bool:
        """Send e.g. ``send(READY=1, STATUS="...")``; False when not under systemd or on error."""
        if self._sock is None:
            return False
        msg = "\n".join(f"{k}={_one_line(v)}" for k, v in fields.items())
        try:
            self._sock.sendto(msg.encode(), self.address)
            return True
        except OSError as e:
            LOG.warning("sd_notify to %r failed: %s", self.address, e)
            return False

    def ready(self, status: str) -> bool:
        return self.send(READY=1, STATUS=status)

    def status(self, status: str) -> bool:
        return self.send(STATUS=status)

    def stopping(self, status: str) -> bool:
        return self.send(STOPPING=1, STATUS=status)

    def watchdog(self, force: bool = False) -> bool:
        """WATCHDOG=1 at most every half WATCHDOG_USEC, as sd_watchdog_enabled(3) advises."""
        if self._sock is None:
            return False
        now = time.monotonic()
        interval = self.watchdog_interval
        if not force and (interval is None or now - self._last_ping < interval):
            return False
        self._last_ping = now
        return self.send(WATCHDOG=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _one_line(value) -> str:
    return str(value).replace("\n", " ")
