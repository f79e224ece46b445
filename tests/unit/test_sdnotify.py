"""sd_notify against a real AF_UNIX datagram socket, as systemd listens on one."""
from __future__ import annotations

import os
import socket
import tempfile
import time

import pytest

from reaper.agent.sdnotify import SdNotify


@pytest.fixture
def listener():
    d = tempfile.mkdtemp(prefix="sdn-", dir="/tmp")     # sun_path is short: keep it so
    path = os.path.join(d, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield path, sock
    sock.close()
    os.unlink(path)
    os.rmdir(d)


def recv_all(sock) -> list[dict]:
    out = []
    sock.settimeout(0.2)
    while True:
        try:
            data = sock.recv(4096)
        except socket.timeout:
            return out
        out.append(dict(line.split("=", 1) for line in data.decode().split("\n")))


def test_ready_status_watchdog_and_stopping(listener):
    path, sock = listener
    n = SdNotify({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    assert n.enabled and n.watchdog_interval == pytest.approx(0.1)
    assert n.ready("first pass planned: 3 findings")
    assert n.status("last reap pass: 3 findings\nexit 3")
    assert n.watchdog()
    assert not n.watchdog()           # rate-limited to half WATCHDOG_USEC
    time.sleep(0.12)
    assert n.watchdog()
    assert n.stopping("stopping")
    msgs = recv_all(sock)
    assert msgs == [
        {"READY": "1", "STATUS": "first pass planned: 3 findings"},
        {"STATUS": "last reap pass: 3 findings exit 3"},       # one line per field
        {"WATCHDOG": "1"}, {"WATCHDOG": "1"},
        {"STOPPING": "1", "STATUS": "stopping"},
    ]
    n.close()


def test_abstract_namespace_socket():
    name = f"reaper-test-{os.getpid()}-{time.monotonic_ns()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        n = SdNotify({"NOTIFY_SOCKET": "@" + name})
        assert n.ready("up")
        assert sock.recv(4096) == b"READY=1\nSTATUS=up"
    finally:
        sock.close()


def test_no_systemd_is_a_noop_and_watchdog_for_another_pid_is_ignored(listener):
    n = SdNotify({})
    assert not n.enabled and not n.ready("x") and not n.watchdog(force=True)
    path, sock = listener
    other = SdNotify({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000",
                      "WATCHDOG_PID": str(os.getpid() + 1)})
    assert other.watchdog_interval is None and not other.watchdog()


def test_a_vanished_socket_is_reported_not_raised(listener):
    path, sock = listener
    n = SdNotify({"NOTIFY_SOCKET": path + "-gone"})
    assert n.enabled and n.ready("x") is False
