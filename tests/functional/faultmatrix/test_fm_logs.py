"""Fault matrix, logs slice: the audit log across rotations under load and under the
real logrotate with the shipped etc/logrotate.d/reaper, the listeners across a
reopen, ``--use-journal`` with a real journald and without the bindings, and what
the console scripts print on stderr.

Writers are real processes (and a thread) appending through ``reaper.audit``;
journald is a real systemd-journald in a private mount namespace of the test's own
(its sockets and its volatile journal on tmpfs there), so the host's /run is left
alone. Passes run on libvirt's test driver and a SQLite Nova DB (the CLI tests' host).
"""
from __future__ import annotations

import collections
import gzip
import json
import os
import pathlib
import random
import shutil
import stat
import subprocess
import sys
import threading
import time
import uuid as uuidlib

import pytest

from reaper import audit as audit_mod
from reaper import demo, metrics, notifications
from tests.conftest import service_unavailable
from tests.functional.test_notifications import Collector, broker_url, conf_for  # noqa: F401
from tests.unit import test_cli

pytestmark = pytest.mark.functional

REPO = pathlib.Path(__file__).resolve().parents[3]
ENV = dict(os.environ, PYTHONPATH=str(REPO))
BIN = pathlib.Path(sys.executable).parent
LOGROTATE_CONF = REPO / "etc" / "logrotate.d" / "reaper"

# A writer process: appends records tagged (writer, seq) until the stop file appears,
# then prints how many it wrote.
_WRITER = """
import os, sys
from reaper import audit
path, name, stop, pause = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
log = audit.AuditLog(path, "fmlogs")
n = 0
while not os.path.exists(stop):
    for _ in range(20):
        log.record("finding", "req-fmlogs", writer=name, seq=n)
        n += 1
    if n == 20:
        open(stop + "." + name + ".started", "w").close()
    if pause:
        import time
        time.sleep(pause)
log.close()
print(n)
"""


class Writers:
    """Processes (and one thread of the test's own) appending to one audit log, as the
    agent and ``watch-nova-log`` do on a host."""

    def __init__(self, tmp_path: pathlib.Path, path: pathlib.Path, procs: int = 2,
                 thread: bool = True, pause: float = 0.0):
        self.path, self.stop_file = path, tmp_path / "stop-writers"
        self.procs = [subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), f"p{i}", str(self.stop_file),
             str(pause)], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for i in range(procs)]
        self.counts: dict[str, int] = {}
        self._stop, self._started = threading.Event(), threading.Event()
        self._thread = None
        if thread:
            self._thread = threading.Thread(target=self._write, args=(pause,), daemon=True)
            self._thread.start()

    def _write(self, pause: float) -> None:
        log, n = audit_mod.AuditLog(str(self.path), "fmlogs"), 0
        try:
            while not self._stop.is_set():
                log.record("finding", "req-fmlogs", writer="t", seq=n)
                n += 1
                self._started.set()
                if pause and n % 20 == 0:
                    time.sleep(pause)
        finally:
            log.close()
            self.counts["t"] = n

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.poll() is None] + [os.getpid()]

    def names(self) -> list[str]:
        return [f"p{i}" for i in range(len(self.procs))] + (["t"] if self._thread else [])

    def wait_started(self, timeout: float = 60) -> None:
        """Until every writer has written (and so opened the log)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if (all(os.path.exists(f"{self.stop_file}.p{i}.started")
                    for i in range(len(self.procs)))
                    and (self._thread is None or self._started.is_set())):
                return
            for p in self.procs:
                assert p.poll() is None, p.communicate()
            time.sleep(0.05)
        raise AssertionError("writers did not start")

    def stop(self) -> dict[str, int]:
        self.stop_file.touch()
        self._stop.set()
        for i, p in enumerate(self.procs):
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            self.counts[f"p{i}"] = int(out)
        if self._thread:
            self._thread.join(60)
        return self.counts

    def kill(self) -> None:
        self.stop_file.touch()
        self._stop.set()
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


def read_all(directory: pathlib.Path, prefix: str = "audit.log") -> list[dict]:
    """Every record of every (rotated, compressed) audit log file in ``directory``;
    each line must parse: no torn or interleaved records."""
    out = []
    for f in sorted(directory.iterdir()):
        if not f.name.startswith(prefix):
            continue
        opener = gzip.open if f.name.endswith(".gz") else open
        with opener(f, "rt") as fh:
            for line in fh:
                rec = json.loads(line)
                rec["_file"] = f.name
                out.append(rec)
    return out


def assert_exactly_once(directory: pathlib.Path, counts: dict[str, int]) -> None:
    """Every record each writer wrote is in exactly one file, once, and in each file
    every writer's records keep their order."""
    recs = read_all(directory)
    got = collections.Counter((r["writer"], r["seq"]) for r in recs)
    dup = [k for k, n in got.items() if n > 1]
    want = {(w, i) for w, n in counts.items() for i in range(n)}
    missing = sorted(want - set(got))
    assert not dup and not missing, f"duplicated {dup[:10]}, missing {missing[:10]}"
    assert set(got) == want
    per_file = collections.defaultdict(list)
    for r in recs:
        per_file[(r["_file"], r["writer"])].append(r["seq"])
    for seqs in per_file.values():
        assert seqs == sorted(seqs)


def held_open(path: pathlib.Path, pids: list[int]) -> bool:
    """Whether one of ``pids`` has ``path`` open (its /proc/PID/fd)."""
    st = os.stat(path)
    for pid in pids:
        fds = f"/proc/{pid}/fd"
        try:
            names = os.listdir(fds)
        except FileNotFoundError:
            continue
        for n in names:
            try:
                s = os.stat(os.path.join(fds, n))
            except OSError:
                continue
            if (s.st_dev, s.st_ino) == (st.st_dev, st.st_ino):
                return True
    return False


def compress(path: pathlib.Path) -> None:
    with open(path, "rb") as src, gzip.open(f"{path}.gz", "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.unlink(path)


# --------------------------------------------------------------------------
# rotation under load
# --------------------------------------------------------------------------

ROTATIONS = 150


@pytest.mark.parametrize("style", [
    pytest.param("rename", id="rename"),
    pytest.param("rename-create", id="rename-then-create"),
    pytest.param("rename-gzip-delete", id="rename-then-gzip-and-delete"),
])
def test_audit_log_rotated_under_load(tmp_path, style):
    """Two writer processes and a writer thread append thousands of records to the audit
    log while it is renamed away 150 times, every few milliseconds (the new file left to
    the writers, or created 0640 at once as logrotate's create does, or each renamed file
    gzipped and deleted as soon as no writer has it open, which delaycompress ensures).

    Expect: every record is in exactly one file, exactly once, whole, in order; the
    writers reopened the new file each time (it is 0640 and holds the last records).
    """
    logdir = tmp_path / "log"
    logdir.mkdir()
    path = logdir / "audit.log"
    w = Writers(tmp_path, path, pause=0.0005)
    pending: list[pathlib.Path] = []
    rotated = 0
    try:
        w.wait_started()
        for i in range(1, ROTATIONS + 1):
            time.sleep(random.uniform(0, 0.004))
            target = logdir / f"audit.log.{i}"
            try:
                os.rename(path, target)
            except FileNotFoundError:       # no writer recreated it yet
                continue
            rotated += 1
            if style == "rename-create":
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))
                except FileExistsError:     # a writer was faster
                    pass
            if style == "rename-gzip-delete":
                pending.append(target)
                for p in list(pending):
                    if not held_open(p, w.pids()):
                        compress(p)
                        pending.remove(p)
        time.sleep(0.05)
        counts = w.stop()
    finally:
        w.kill()
    for p in pending:
        compress(p)
    assert rotated >= ROTATIONS // 2
    assert sum(counts.values()) >= 3000, counts          # thousands of records
    assert_exactly_once(logdir, counts)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640
    files = {r["_file"] for r in read_all(logdir)}
    assert "audit.log" in files and len(files) >= rotated // 2   # the writers followed
    if style == "rename-gzip-delete":
        assert not [f for f in logdir.iterdir() if f.name not in ("audit.log",)
                    and not f.name.endswith(".gz")]


# --------------------------------------------------------------------------
# the real logrotate with the shipped file
# --------------------------------------------------------------------------

def logrotate(conf: pathlib.Path, state: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run(["logrotate", "--force", "--state", str(state), str(conf)],
                          capture_output=True, text=True, timeout=120)


def wait_for_records(path: pathlib.Path, timeout: float = 30) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and path.stat().st_size > 0:
            return
        time.sleep(0.02)
    raise AssertionError(f"nothing written to {path}")


def test_logrotate_rotates_a_live_audit_log(tmp_path):
    """The real logrotate, run with the shipped etc/logrotate.d/reaper (pointed at a
    temporary log directory, with a state file of its own), rotates an audit log twice
    while a writer process and a writer thread keep appending to it.

    Expect: after each rotation the next records land in the new audit.log (0640,
    group adm, created by logrotate); audit.log.1 stays plain (delaycompress) and the
    older one is audit.log.2.gz; every record is in exactly one file, once.
    """
    if shutil.which("logrotate") is None:
        service_unavailable("logrotate", "not installed (tools/install-deps.sh)")
    logdir = tmp_path / "log"
    logdir.mkdir(mode=0o750)
    text = LOGROTATE_CONF.read_text()
    directives = [x.split("#")[0].strip() for x in text.splitlines()]
    assert "/var/log/reaper/*.log {" in directives and "create 0640 root adm" in directives
    assert not [d for d in directives if d.startswith("copytruncate")]
    conf = tmp_path / "reaper.logrotate"
    conf.write_text(text.replace("/var/log/reaper/", f"{logdir}/"))
    state = tmp_path / "logrotate.status"
    path = logdir / "audit.log"
    w = Writers(tmp_path, path, procs=1, pause=0.002)
    try:
        w.wait_started()
        inodes = []
        for _ in range(2):
            r = logrotate(conf, state)
            assert r.returncode == 0 and "error" not in r.stderr.lower(), r.stderr
            inodes.append(path.stat().st_ino)
            wait_for_records(path)
            st = path.stat()
            assert st.st_ino == inodes[-1]                 # logrotate's file, written to
            assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == 4   # adm
        counts = w.stop()
    finally:
        w.kill()
    assert sorted(f.name for f in logdir.iterdir()) == [
        "audit.log", "audit.log.1", "audit.log.2.gz"]
    assert_exactly_once(logdir, counts)
    recs = read_all(logdir)
    newest = {f: max(r["ts"] for r in recs if r["_file"] == f)
              for f in ("audit.log.2.gz", "audit.log.1", "audit.log")}
    assert newest["audit.log.2.gz"] < newest["audit.log.1"] < newest["audit.log"]
    assert state.read_text().count(str(path)) == 1


# --------------------------------------------------------------------------
# listeners across a reopen
# --------------------------------------------------------------------------

def test_listeners_survive_a_rotation(tmp_path, broker_url):  # noqa: F811
    """The agent's metrics textfile and notifications (over the test host's RabbitMQ)
    are fed by the audit log; between two passes the audit log is rotated (renamed,
    a new one created 0640, the old one gzipped and deleted).

    Expect: both passes are notified and counted; the first pass's records are in
    the compressed file, the second's in the new audit.log.
    """
    import oslo_messaging
    topic = f"reaper-fmlogs-{uuidlib.uuid4().hex[:10]}"
    conf = conf_for(broker_url, topic)
    transport = oslo_messaging.get_notification_transport(conf, url=broker_url)
    coll = Collector()
    listener = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(topic=topic)], [coll])
    listener.start()
    reaper, handles, _ = demo.build(str(tmp_path / "host"))
    log = pathlib.Path(handles["audit_log"])
    prom = tmp_path / "reaper.prom"
    emitter = notifications.enable(reaper, conf)
    m = metrics.Metrics(str(prom), backlog=reaper.state.backlog)
    reaper.audit.subscribe(m)
    try:
        first = reaper.run_pass("audit")
        os.rename(log, f"{log}.1")
        os.close(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))
        compress(pathlib.Path(f"{log}.1"))
        second = reaper.run_pass("audit")
        assert emitter.flush(30)
        got = coll.wait_for(lambda g: sum(e == "reaper.pass.end" for _, _, e, _ in g) >= 2)
    finally:
        if emitter:
            emitter.close()
        reaper.close()
        listener.stop()
        listener.wait()
        transport.cleanup()
    ends = [p["pass_id"] for _, _, e, p in got if e == "reaper.pass.end"]
    assert ends == [first.pass_id, second.pass_id]
    assert 'reaper_passes_total{exit_code="3",mode="audit"} 2.0' in prom.read_text()
    by_file = {(r["_file"], r["pass_id"]) for r in read_all(log.parent)}
    assert by_file == {("audit.log.1.gz", first.pass_id), ("audit.log", second.pass_id)}


# --------------------------------------------------------------------------
# --use-journal
# --------------------------------------------------------------------------

_JOURNALD_CONF = """[Journal]
Storage=volatile
ReadKMsg=no
ForwardToSyslog=no
ForwardToWall=no
ForwardToConsole=no
ForwardToKMsg=no
"""

# Runs inside `unshare --mount`: journald's sockets and journal on tmpfs mounts that
# only this namespace sees, then the command, then the journal as JSON.
_IN_NAMESPACE = r"""
set -eu
conf=$1; out=$2; shift 2
mount -t tmpfs -o mode=0755 tmpfs /run/systemd
mount -t tmpfs -o mode=0755 tmpfs /run/log
mount --bind "$conf" /etc/systemd/journald.conf
/lib/systemd/systemd-journald &
jpid=$!
trap 'kill $jpid; wait $jpid 2>/dev/null || true' EXIT
for _ in $(seq 200); do [ -S /run/systemd/journal/socket ] && break; sleep 0.05; done
rc=0
"$@" >"$out/stdout" 2>"$out/stderr" || rc=$?
echo "$rc" >"$out/rc"
journalctl --sync
journalctl -D /run/log/journal -o json --no-pager >"$out/journal.json"
"""


def with_journald(tmp_path, *cmd: str) -> tuple[int, str, str, list[dict]]:
    """Run ``cmd`` with a private journald: (exit code, stdout, stderr, journal entries)."""
    try:
        from systemd import journal  # noqa: F401
    except ImportError as e:
        service_unavailable("systemd-python (pip install -e '.[journal]')", e)
    journald = "/lib/systemd/systemd-journald"
    if not (os.path.exists(journald) and shutil.which("unshare")
            and os.path.exists("/etc/systemd/journald.conf")):
        service_unavailable("systemd-journald", "not installed (package systemd)")
    out = tmp_path / "journald-run"
    out.mkdir()
    (tmp_path / "journald.conf").write_text(_JOURNALD_CONF)
    (tmp_path / "in-ns.sh").write_text(_IN_NAMESPACE)
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "bash",
                        str(tmp_path / "in-ns.sh"), str(tmp_path / "journald.conf"), str(out),
                        *cmd], env=ENV, capture_output=True, text=True, timeout=300)
    if not (out / "rc").exists():
        service_unavailable("a private journald (unshare --mount)", r.stderr.strip()[-500:])
    assert r.returncode == 0, r.stderr
    entries = [json.loads(x) for x in (out / "journal.json").read_text().splitlines()]
    return (int((out / "rc").read_text()), (out / "stdout").read_text(),
            (out / "stderr").read_text(), entries)


def cli_host(tmp_path, libvirt_uri: str | None = None) -> pathlib.Path:
    url, uri, _ = test_cli._host(tmp_path)
    return test_cli.write_conf(tmp_path, test_cli.base_conf(tmp_path, url, libvirt_uri or uri))


def messages(entries: list[dict], ident: str) -> list[tuple[int, str]]:
    return [(int(e["PRIORITY"]), e["MESSAGE"]) for e in entries
            if e.get("SYSLOG_IDENTIFIER") == ident]


def test_manage_use_journal_logs_to_journald(tmp_path):
    """``reaper-manage --use-journal audit`` on a host whose libvirt cannot be reached
    (an error and a tripped guard to log), with journald running.

    Expect: the error and the guard's short line are in the journal as
    SYSLOG_IDENTIFIER=reaper-manage with their priorities, not on stderr; no
    traceback; the report on stdout; exit 1 (the collector failed).
    """
    conf = cli_host(tmp_path, "qemu+unix:///system?socket=/nonexistent-fmlogs")
    rc, out, err, entries = with_journald(
        tmp_path, str(BIN / "reaper-manage"), "--config-file", str(conf), "--use-journal",
        "audit")
    assert rc == 1 and "Traceback" not in err and "collector_failed" in out, err
    got = messages(entries, "reaper-manage")
    assert any(p == 3 and "cannot connect to libvirt" in m for p, m in got), got
    assert any(p == 4 and "reaper.audit [-] guard_tripped collector_failed" in m
               for p, m in got), got
    assert "cannot connect to libvirt" not in err and "guard_tripped" not in err


def test_agent_use_journal_logs_to_journald(tmp_path):
    """``reaper-agent --use-journal --once`` (one reap pass) on a host with a deleted
    instance's domain and an orphan directory, with journald running.

    Expect: the audit records' short lines (findings, actions, the pass summary) are
    in the journal as SYSLOG_IDENTIFIER=reaper-agent, never the JSON records; stderr
    has no log line (journald has them: not twice); exit 4 (actions).
    """
    conf = cli_host(tmp_path)
    rc, out, err, entries = with_journald(
        tmp_path, str(BIN / "reaper-agent"), "--config-file", str(conf), "--use-journal",
        "--once")
    assert rc == 4, err
    assert err == "", err
    got = [m.split(" [-] ", 1)[-1] for _, m in messages(entries, "reaper-agent")]
    for line in ("finding reap running_deleted domain", "action reap orphan_dir",
                 "pass_summary: 4"):
        assert any(m.startswith(line) for m in got), (line, got)
    assert not any("{" in m for m in got), got


_WITHOUT_BINDINGS = """
import runpy, sys
sys.modules["systemd"] = None          # as if systemd-python were not installed
sys.argv[0] = sys.argv[1]
del sys.argv[1]
runpy.run_module({module!r}, run_name="__main__")
"""


@pytest.mark.parametrize("prog, module, args", [
    pytest.param("reaper-manage", "reaper.cmd.manage", ["audit"], id="manage"),
    pytest.param("reaper-agent", "reaper.cmd.agent", [], id="agent"),
    pytest.param("reaper-ctl", "reaper.cmd.ctl", ["--host", "h", "status"], id="ctl"),
])
def test_use_journal_without_bindings(tmp_path, prog, module, args):
    """``--use-journal`` where the systemd Python bindings are not installed.

    Expect: one line naming the missing bindings and how to install them, no
    traceback, exit 78 (EX_CONFIG: the unit does not restart it).
    """
    conf = cli_host(tmp_path)
    r = subprocess.run([sys.executable, "-c", _WITHOUT_BINDINGS.format(module=module), prog,
                        "--config-file", str(conf), "--use-journal", *args],
                       env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 78, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"{prog}: configuration error: use_journal")
    assert "reaper[journal]" in r.stderr


# --------------------------------------------------------------------------
# stderr: no duplicated records, no eventlet noise
# --------------------------------------------------------------------------

def test_audit_records_are_not_repeated_on_stderr(tmp_path):
    """``reaper-manage reap`` and then ``reaper-agent --once`` act on a host (a deleted
    instance's domain, an orphan directory), both with an audit file.

    Expect: every record is in the audit file; stderr carries no JSON record: the
    agent's log has one short line per record, reaper-manage's stderr nothing for
    actions that were done (its report shows them).
    """
    conf = cli_host(tmp_path)
    r = subprocess.run([str(BIN / "reaper-manage"), "--config-file", str(conf), "reap"],
                       env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 4 and "orphan_dir" in r.stdout, r.stderr
    assert r.stderr == "", r.stderr
    # libvirt's test driver starts each connection from node.xml: the domain is back
    r = subprocess.run([str(BIN / "reaper-agent"), "--config-file", str(conf), "--once"],
                       env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 4, r.stderr
    lines = [x.split(" [-] ", 1)[-1] for x in r.stderr.splitlines()]
    assert '{"' not in r.stderr
    assert any(x.startswith("action reap running_deleted domain") for x in lines), lines
    recs = read_all(tmp_path)
    assert [x["event"] for x in recs].count("action") == 3
    assert [x["event"] for x in recs].count("pass_summary") == 2


@pytest.mark.parametrize("args", [
    pytest.param(["reaper-manage", "demo"], id="manage-demo"),
    pytest.param(["reaper-agent", "--once"], id="agent-once"),
    pytest.param(["reaper-ctl", "--hosts-file", "/nonexistent-fmlogs", "status"], id="ctl"),
])
def test_no_eventlet_warning(tmp_path, args):
    """A console script whose dependencies import eventlet (the OVS library,
    oslo.messaging), which warns on import although the reaper never uses it.

    Expect: no EventletDeprecationWarning on stderr (other warnings are not hidden).
    """
    conf = cli_host(tmp_path)
    r = subprocess.run([str(BIN / args[0]), "--config-file", str(conf), *args[1:]],
                       env=ENV, capture_output=True, text=True, timeout=120)
    assert "Traceback" not in r.stderr, r.stderr
    assert "Eventlet is deprecated" not in r.stderr, r.stderr
    assert "EventletDeprecationWarning" not in r.stderr, r.stderr
