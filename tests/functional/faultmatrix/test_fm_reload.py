"""Fault matrix, reload slice: SIGHUP with good and bad files, the files the reaper
writes, and an agent loop that outlives passes that raise.

Agents run as real ``reaper-agent`` processes (libvirt's test driver
``test:///default``, a SQLite Nova DB, instance directories on disk) and serve RPC
on the test host's RabbitMQ, in a vhost of this module's own; the real
``reaper-ctl`` script calls them. Host names and the vhost contain ``fmreload``.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
import uuid as uuidlib

import pytest

from reaper import demo, metrics
from reaper.agent import service
from tests.fixtures import novadb
from tests.functional import test_reaper_real as reaper_real

pytestmark = pytest.mark.functional

BROKER = os.environ.get("REAPER_TEST_AMQP", "127.0.0.1:5672")
ENV = dict(os.environ, PYTHONPATH=os.getcwd())
CTL_ENV = dict(os.environ, ERL_EPMD_ADDRESS="127.0.0.1",
               RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}")


# --------------------------------------------------------------------------
# helpers: broker, config file, agent process, reaper-ctl
# --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def vhost_url():
    """A RabbitMQ vhost for this module only (deleted afterwards)."""
    from kombu import Connection
    from kombu.exceptions import OperationalError

    from tests.conftest import service_unavailable

    def rabbitmqctl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["rabbitmqctl", "-q", *args], env=CTL_ENV,
                              capture_output=True, text=True, timeout=60)
    try:
        with Connection(f"amqp://guest:guest@{BROKER}//", connect_timeout=5) as conn:
            conn.connect()
    except (OSError, OperationalError) as exc:
        service_unavailable(f"RabbitMQ ({BROKER})", exc)
    name = f"reaper-fmreload-{uuidlib.uuid4().hex[:10]}"
    r = rabbitmqctl("add_vhost", name)
    if r.returncode:
        service_unavailable("rabbitmqctl add_vhost", r.stderr.strip())
    try:
        r = rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        assert r.returncode == 0, r.stderr
        yield f"rabbit://guest:guest@{BROKER}/{name}"
    finally:
        rabbitmqctl("delete_vhost", name)


class Host:
    """One agent host: its Nova DB, instance dir, config file and agent process."""

    def __init__(self, tmp_path, nova_db, instances_path, url: str | None):
        self.tmp = tmp_path
        self.db = nova_db
        self.ip = instances_path
        self.url = url
        self.name = f"fmreload-{uuidlib.uuid4().hex[:8]}"
        self.conf = str(tmp_path / "reaper.conf")
        self.proc: subprocess.Popen | None = None
        self.err_path = tmp_path / "agent.stderr"
        novadb.add_compute_node(nova_db.engine, self.name)

    # -- the config file ---------------------------------------------------------

    def write(self, rpc: dict | None = None, default: dict | None = None,
              raw: str = "", **reaper_opts) -> None:
        """(Re)write the agent's config file: quiet timers, RPC on, remote reap off,
        the grace period two full passes (so only a second full pass may destroy)."""
        opts = dict(reconcile_interval=3600, reclaim_poll_interval=-1, interval_jitter=0,
                    grace_observations=2)
        opts.update(reaper_opts)
        reaper_real.write_conf(self.tmp, self.db, self.name, self.ip.path, **opts)
        text = open(self.conf).read().replace("connection_uri = qemu:///system",
                                              "connection_uri = test:///default")
        rpc_opts = dict(enabled="true" if self.url else "false",
                        allow_remote_reap="false", pass_wait_timeout=2)
        rpc_opts.update(rpc or {})
        default_opts = dict(hypervisor_hostname=self.name)
        if self.url:
            default_opts["transport_url"] = self.url
        default_opts.update(default or {})
        text += "[rpc]\n" + "".join(f"{k} = {v}\n" for k, v in rpc_opts.items())
        text += "[DEFAULT]\n" + "".join(f"{k} = {v}\n" for k, v in default_opts.items())
        with open(self.conf, "w") as f:
            f.write(text + raw)

    # -- the agent -----------------------------------------------------------------

    def start(self, *args: str, umask: int | None = None) -> None:
        def pre():
            if umask is not None:
                os.umask(umask)
        with open(self.err_path, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "reaper.cmd.agent", "--config-file", self.conf, *args],
                env=ENV, stdout=subprocess.DEVNULL, stderr=err, preexec_fn=pre)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr(self) -> str:
        return self.err_path.read_text() if self.err_path.exists() else ""

    def hup(self) -> None:
        self.proc.send_signal(signal.SIGHUP)

    def stop(self, timeout: float = 60) -> int:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    # -- the audit log -----------------------------------------------------------

    def audit(self, event: str | None = None, result: str | None = None) -> list[dict]:
        p = self.tmp / "audit.log"
        if not p.exists():
            return []
        recs = [json.loads(x) for x in p.read_text().splitlines() if x.strip()]
        return [r for r in recs if event in (None, r["event"])
                and result in (None, r.get("result"))]

    def wait_audit(self, event: str, result: str | None = None, count: int = 1,
                   timeout: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            recs = self.audit(event, result)
            if len(recs) >= count:
                return recs
            assert self.alive(), f"agent exited {self.proc.returncode}: {self.stderr()[-3000:]}"
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {event} {result}; audit: "
                             f"{[(r['event'], r.get('result')) for r in self.audit()]}")

    # -- reaper-ctl ----------------------------------------------------------------

    def ctl(self, *args: str) -> tuple[int, dict | None, str]:
        conf = self.tmp / "ctl.conf"
        if not conf.exists():
            conf.write_text(f"[DEFAULT]\nhost = controller-fmreload\n"
                            f"transport_url = {self.url}\n")
        r = subprocess.run([sys.executable, "-m", "reaper.cmd.ctl", "--config-file", str(conf),
                            "--host", self.name, "--format", "json", "--timeout", "20", *args],
                           capture_output=True, text=True, env=ENV, timeout=90)
        try:
            out = json.loads(r.stdout)
        except ValueError:
            out = None
        return r.returncode, out, r.stderr

    def wait_rpc(self, timeout: float = 60) -> dict:
        """The RPC server connects in the background: status until it answers."""
        deadline = time.monotonic() + timeout
        while True:
            code, out, err = self.ctl("status")
            if code == 0:
                return out["hosts"][self.name]
            assert self.alive(), f"agent exited: {self.stderr()[-3000:]}"
            assert time.monotonic() < deadline, err
            time.sleep(0.5)

    def status(self) -> dict:
        code, out, err = self.ctl("status")
        assert code == 0, err
        return out["hosts"][self.name]

    def orphan_dir(self):
        """A directory whose instance was deleted: an orphan_dir a reap pass removes."""
        row = novadb.add_instance(self.db.engine, host=self.name, deleted=True)
        return self.ip.instance(row["uuid"])


@pytest.fixture
def fm_host(tmp_path, nova_db, instances_path, vhost_url):
    h = Host(tmp_path, nova_db, instances_path, vhost_url)
    yield h
    h.kill()


def no_traceback(h: Host) -> None:
    assert "Traceback" not in h.stderr(), h.stderr()[-4000:]


# --------------------------------------------------------------------------
# item 8: a refused reload still took effect
# --------------------------------------------------------------------------

@pytest.mark.parametrize("nova_db", ["sqlite"], indirect=True)
@pytest.mark.parametrize("edit", [
    pytest.param(dict(rpc={"allow_remote_reap": "true"}, max_destroy_per_pass=-1),
                 id="allow-true-next-to-invalid-max_destroy_per_pass"),
    pytest.param(dict(rpc={"allow_remote_reap": "maybe"}), id="allow_remote_reap-maybe"),
])
def test_refused_reload_grants_no_remote_reap(fm_host, edit):
    """SIGHUP with [rpc] allow_remote_reap = true beside an invalid max_destroy_per_pass, or
    allow_remote_reap = maybe: the reload is refused, then a remote reap arrives.

    Expect: reload_failed audited; the remote reap is refused (error code refused, audited as
    rpc_call, no traceback) and the orphan directory stays; after a good reload that sets
    allow_remote_reap = true the reloaded record lists rpc.allow_remote_reap false -> true
    and a remote reap removes it (exit 4); SIGTERM exits 0.
    """
    h = fm_host
    orphan = h.orphan_dir()
    h.write()
    h.start()
    h.wait_audit("pass_summary")                       # init_host: one observation
    h.wait_rpc()
    code, _, err = h.ctl("reap")
    assert code == 1 and "refused: reap is destructive" in err

    h.write(**edit)
    h.hup()
    h.wait_audit("agent_state", "reload_failed")
    code, out, err = h.ctl("reap")
    assert code == 1, (out, err)
    assert f"{h.name}: error: refused: reap is destructive" in err, err
    assert orphan.exists()
    assert [r["result"] for r in h.audit("rpc_call") if r["method"] == "reap"] == [
        "refused", "refused"]
    assert h.audit("agent_state", "reloaded") == []
    assert h.status()["dry_run"] is False

    h.write(rpc={"allow_remote_reap": "true"})         # the positive control
    h.hup()
    (rec,) = h.wait_audit("agent_state", "reloaded")
    assert rec["evidence"]["changed"] == {"rpc.allow_remote_reap": [False, True]}
    code, out, err = h.ctl("reap")
    assert code == 4, (out, err)
    assert not orphan.exists()
    assert h.stop() == 0
    no_traceback(h)


# --------------------------------------------------------------------------
# a good reload lists everything it changed; a broken one changes nothing
# --------------------------------------------------------------------------

@pytest.mark.parametrize("nova_db", ["sqlite"], indirect=True)
def test_reload_lists_every_changed_option(fm_host, tmp_path):
    """SIGHUP after editing seven mutable options ([reaper] and [rpc]) and three that need a
    restart (instances_path, notification_queue_size, [database] connection).

    Expect: one reloaded record whose changed lists exactly the seven with old -> new and
    whose needs_restart lists the three (the DB URL masked); the new values apply (status
    shows dry_run, remote reap allowed but a dry run), the restart-only ones keep their
    running value (the orphan in the old instances_path is still found).
    """
    h = fm_host
    orphan = h.orphan_dir()
    h.write()
    h.start()
    h.wait_audit("pass_summary")
    h.wait_rpc()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    h.write(rpc={"allow_remote_reap": "true", "pass_wait_timeout": 7},
            default={"instances_path": elsewhere},
            dry_run="true", orphan_dir_action="log", reconcile_interval=1800,
            interval_jitter=0.25, grace_seconds=5, notification_queue_size=5)
    text = open(h.conf).read().replace(f"connection = {h.db.url}",
                                       "connection = mysql+pymysql://nova:s3cret@db/nova")
    with open(h.conf, "w") as f:                   # [DEFAULT] instances_path twice: last wins
        f.write(text)
    h.hup()
    (rec,) = h.wait_audit("agent_state", "reloaded")
    assert rec["evidence"]["changed"] == {
        "reaper.dry_run": [False, True],
        "reaper.orphan_dir_action": ["reap", "log"],
        "reaper.reconcile_interval": [3600, 1800],
        "reaper.interval_jitter": [0.0, 0.25],
        "reaper.grace_seconds": [0, 5],
        "rpc.allow_remote_reap": [False, True],
        "rpc.pass_wait_timeout": [2.0, 7.0],
    }
    assert rec["evidence"]["needs_restart"] == {
        "DEFAULT.instances_path": [str(h.ip.path), str(elsewhere)],
        "database.connection": ["***", "***"],
        "reaper.notification_queue_size": [10000, 5],
    }
    assert "s3cret" not in (tmp_path / "audit.log").read_text()
    assert h.status()["dry_run"] is True
    code, out, err = h.ctl("reap")                 # allowed now; dry_run from the host
    assert code == 3, (out, err)
    rep = out["hosts"][h.name]
    assert rep["dry_run"] is True
    assert [(f["resource"], f["action"]) for f in rep["findings"]
            if f["classification"] == "orphan_dir"] == [(str(orphan), "log")]
    assert orphan.exists()
    assert h.stop() == 0
    no_traceback(h)


@pytest.mark.parametrize("nova_db", ["sqlite"], indirect=True)
@pytest.mark.parametrize("breakage", [
    pytest.param("not-ini", id="syntax-error"),
    pytest.param("bad-value", id="one-bad-value-among-good-changes"),
    pytest.param("deleted", id="config-file-deleted"),
])
def test_broken_file_keeps_everything(fm_host, breakage):
    """SIGHUP with a file that cannot be used: malformed, one invalid value next to good
    changes (dry_run, allow_remote_reap, intervals, an action), or deleted.

    Expect: reload_failed audited and no reloaded record; dry_run, the remote-reap refusal,
    the orphan_dir action and the timers all stay as started (the orphan is still reaped by
    the next full pass once remote reap is allowed by a good file).
    """
    h = fm_host
    orphan = h.orphan_dir()
    h.write()
    h.start()
    h.wait_audit("pass_summary")
    h.wait_rpc()
    changes = dict(rpc={"allow_remote_reap": "true"}, dry_run="true",
                   orphan_dir_action="log", reconcile_interval=1, grace_observations=1)
    if breakage == "not-ini":
        h.write(raw="[reaper\ngrace_seconds = 1\n", **changes)
    elif breakage == "bad-value":
        h.write(interval_jitter=1.5, **changes)        # max 1.0
    else:
        h.write(**changes)
        os.rename(h.conf, h.conf + ".moved")
    h.hup()
    h.wait_audit("agent_state", "reload_failed")
    time.sleep(3)                                   # a 1 s timer would have run by now
    assert len(h.audit("pass_summary")) == 1
    assert h.audit("agent_state", "reloaded") == []
    st = h.status()
    assert st["dry_run"] is False and st["last_pass"]["mode"] == "reap"
    code, _, err = h.ctl("reap")
    assert code == 1 and "refused: reap is destructive" in err
    assert orphan.exists()

    if breakage == "deleted":
        os.rename(h.conf + ".moved", h.conf)
    h.write(rpc={"allow_remote_reap": "true"})
    h.hup()
    h.wait_audit("agent_state", "reloaded")
    code, out, err = h.ctl("reap")               # second full pass: grace is over
    assert code == 4, (out, err)
    assert not orphan.exists()
    assert h.stop() == 0
    no_traceback(h)


# --------------------------------------------------------------------------
# files the reaper writes
# --------------------------------------------------------------------------

def test_metrics_textfile_symlink_attack(tmp_path):
    """A local user plants symlinks to a file of root's at every name prometheus_client's
    write_to_textfile would use (<file>.<pid>.<thread id>) before the agent's passes.

    Expect: the symlinks' target keeps its content; the metrics file is a regular file,
    mode 0644, written after each pass and on pause; no temporary file is left.
    """
    victim = tmp_path / "shadow"
    victim.write_text("root:x:0:0\n")
    reaper, _, _ = demo.build(str(tmp_path / "host"))
    prom = tmp_path / "textfile" / "reaper.prom"
    prom.parent.mkdir()
    planted = [prom.parent / f"reaper.prom.{os.getpid()}.{t.ident}"
               for t in threading.enumerate()]
    for link in planted:
        link.symlink_to(victim)
    try:
        m = metrics.Metrics(str(prom), backlog=reaper.state.backlog,
                            paused=lambda: reaper.state.get_flag("paused") is not None)
        reaper.audit.subscribe(m)
        agent = service.Agent(reaper)
        agent.run_pass("audit")
        agent.run_pass("reap")
        agent.pause("fm")
    finally:
        reaper.close()
    assert victim.read_text() == "root:x:0:0\n"
    st = os.lstat(prom)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644
    assert "reaper_paused 1.0" in prom.read_text()
    assert sorted(p.name for p in prom.parent.iterdir()) == sorted(
        ["reaper.prom"] + [p.name for p in planted])


@pytest.mark.parametrize("nova_db", ["sqlite"], indirect=True)
@pytest.mark.parametrize("before, after", [
    pytest.param(None, 0o640, id="new-file-umask-022"),
    pytest.param(0o644, 0o640, id="existing-world-readable"),
    pytest.param(0o600, 0o600, id="existing-stricter-kept"),
])
def test_audit_log_mode(tmp_path, nova_db, instances_path, before, after):
    """reaper-agent --once, started with umask 022, writes its audit log: absent before,
    an existing world-readable one, or an existing 0600 one.

    Expect: the audit log is mode 0640 (0600 kept), never world-readable, its old records
    kept; the pass exits 0.
    """
    h = Host(tmp_path, nova_db, instances_path, None)
    log = tmp_path / "audit.log"
    if before is not None:
        log.write_text('{"event": "old"}\n')
        os.chmod(log, before)
    h.write()
    h.start("--once", umask=0o022)
    assert h.proc.wait(120) == 0, h.stderr()[-3000:]
    assert stat.S_IMODE(os.stat(log).st_mode) == after
    assert [r["event"] for r in h.audit()][-1] == "pass_summary"
    assert (before is None) or log.read_text().startswith('{"event": "old"}\n')


# --------------------------------------------------------------------------
# the agent loop outlives a pass that raises
# --------------------------------------------------------------------------

def _mount_tmpfs(path, size="256k") -> None:
    path.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755",
                        "fmreload-audit", str(path)], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs (needs root): {r.stderr.strip()}")


def _fill(path) -> None:
    """Fill the filesystem to the last byte."""
    fd = os.open(path / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (65536, 4096, 1):
            try:
                while os.write(fd, b"\0" * chunk):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)


@pytest.mark.parametrize("nova_db", ["sqlite"], indirect=True)
def test_agent_loop_survives_a_full_audit_filesystem(fm_host, tmp_path):
    """The audit log's filesystem fills up while the agent runs 1 s timers: every pass
    raises (ENOSPC) when it writes its records.

    Expect: the agent keeps running and answering RPC (status: the last pass failed, exit
    1, No space left on device); once space is freed, the next timer pass is audited
    again; SIGTERM exits 0.
    """
    h = fm_host
    logs = tmp_path / "logfs"
    _mount_tmpfs(logs)
    try:
        h.write(audit_log=logs / "audit.log", reconcile_interval=1)
        h.start()
        deadline = time.monotonic() + 60
        while not (logs / "audit.log").exists() or b"pass_summary" not in (
                logs / "audit.log").read_bytes():
            assert h.alive() and time.monotonic() < deadline, h.stderr()[-3000:]
            time.sleep(0.1)
        h.wait_rpc()
        _fill(logs)
        deadline = time.monotonic() + 60
        while True:
            time.sleep(1)
            assert h.alive(), f"agent exited {h.proc.returncode}: {h.stderr()[-3000:]}"
            last = h.status()["last_pass"]
            if last["summary"]["exit_code"] == 1:
                break
            assert time.monotonic() < deadline, last
        assert "No space left on device" in h.stderr()
        time.sleep(2)                               # more timer passes fail
        assert h.alive()
        os.unlink(logs / "filler")
        before = (logs / "audit.log").read_bytes().count(b"pass_summary")
        deadline = time.monotonic() + 30
        while (logs / "audit.log").read_bytes().count(b"pass_summary") <= before:
            assert h.alive() and time.monotonic() < deadline, h.stderr()[-3000:]
            time.sleep(0.2)
        assert h.status()["last_pass"]["summary"]["exit_code"] in (0, 3)
        assert h.stop() == 0
    finally:
        h.kill()
        subprocess.run(["umount", "-l", str(logs)], capture_output=True)


@pytest.mark.parametrize("nova_db", ["sqlite"], indirect=True)
def test_agent_loop_survives_a_locked_state_db(fm_host):
    """Another process holds BEGIN EXCLUSIVE on the agent's state DB through a timer pass
    (sqlite3 'database is locked' after the 30 s busy timeout).

    Expect: that pass is recorded as failed (pass_summary exit 1, the state_unavailable
    guard: database is locked); the
    agent stays up; after the lock is released the next timer pass succeeds and RPC status
    reports it; SIGTERM exits 0.
    """
    h = fm_host
    # full_view_interval = 0: every pass reads the whole view and records its
    # observations in the state DB (a pass that relies on the change check writes
    # nothing there, and WAL lets it read past the lock)
    h.write(reconcile_interval=2, full_view_interval=0)
    h.start()
    h.wait_audit("pass_summary")
    h.wait_rpc()
    db = sqlite3.connect(str(h.tmp / "state" / "reaper-state.sqlite"), timeout=30,
                         isolation_level=None)
    try:
        db.execute("BEGIN EXCLUSIVE")
        failed = h.wait_audit("pass_summary", "1", timeout=120)
    finally:
        db.execute("ROLLBACK")
        db.close()
    ev = failed[0]["evidence"]
    # the pass trips the state_unavailable guard (nothing it cannot journal is done)
    assert ev["errors"] == 1 or "state_unavailable" in ev["guards_tripped"], ev
    assert "database is locked" in h.stderr()
    n = len(h.audit("pass_summary"))
    recs = h.wait_audit("pass_summary", count=n + 1, timeout=60)
    assert recs[-1]["result"] in ("0", "3")
    assert h.alive()
    assert h.status()["last_pass"]["summary"]["exit_code"] in (0, 3)
    assert h.stop() == 0
