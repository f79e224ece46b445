"""Fault matrix, the pass itself: concurrent passes of different processes, the pause,
targeted passes, journal owners and quarantine, a locked or exposed state DB.

Every scenario runs real processes (``reaper-manage``, ``reaper-agent``) on a
throwaway host: a SQLite Nova DB, libvirt's test driver (a node XML with one live
instance, the same for every process) and instance directories on disk. What gets
destroyed is orphan directories, whose state persists across processes naturally.

A process can be held inside a teardown step (``FM_HOLD_AT=step:status``: it
writes ``FM_MARK`` and waits for ``FM_GO`` to exist) or killed there
(``FM_KILL_AT``), through the journal's own step hook.
"""
from __future__ import annotations

import datetime
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import uuid as uuidlib

import pytest
import sqlalchemy as sa

from reaper import exception
from reaper import audit as audit_mod
from reaper import demo, reconcile
from reaper import policy as policy_mod
from reaper import state as state_mod
from reaper.agent import service
from reaper.nova import schema
from tests.fixtures import novadb

pytestmark = pytest.mark.functional

HOOK = textwrap.dedent("""
    import os, signal, sys, time
    from reaper import state
    hold, kill = os.environ.get("FM_HOLD_AT"), os.environ.get("FM_KILL_AT")
    orig = state.StateDB.step
    def step(self, jid, name, status, now, detail=None):
        orig(self, jid, name, status, now, detail)
        here = f"{name}:{status}"
        if here == kill:
            os.kill(os.getpid(), signal.SIGKILL)
        if here == hold and not os.path.exists(os.environ["FM_MARK"]):
            with open(os.environ["FM_MARK"], "w") as f:
                f.write(str(os.getpid()))
            end = time.monotonic() + 120
            while not os.path.exists(os.environ["FM_GO"]) and time.monotonic() < end:
                time.sleep(0.02)
    state.StateDB.step = step
    if os.environ.get("FM_ENTRY") == "agent":
        from reaper.cmd import agent as entry
    else:
        from reaper.cmd import manage as entry
    sys.exit(entry.main(sys.argv[1:]))
""")

OLD = datetime.timedelta(days=2)


class CoreHost:
    """A throwaway compute host: one live instance (domain + directory, never to be
    touched) and ``orphans`` directories of deleted instances (to be reaped)."""

    def __init__(self, tmp_path, orphans: int = 2, **reaper_opts):
        self.root = tmp_path
        self.host = f"fm-core-{uuidlib.uuid4().hex[:8]}"
        self.instances = tmp_path / "instances"
        self.instances.mkdir()
        self.state_path = tmp_path / "state"
        self.url = f"sqlite:///{tmp_path / 'nova.sqlite'}"
        self.engine = sa.create_engine(self.url)
        schema.create_all(self.engine)
        novadb.add_compute_node(self.engine, self.host)
        live = novadb.add_instance(self.engine, host=self.host)
        self.live = live["uuid"]
        self._dir(self.live)
        old = novadb.utcnow() - OLD
        self.orphans = [novadb.add_instance(self.engine, host=self.host, deleted=True,
                                            deleted_at=old)["uuid"] for _ in range(orphans)]
        for u in self.orphans:
            self._dir(u)
        node = tmp_path / "node.xml"
        node.write_text(demo.node_xml([demo.domain_xml(
            self.live, f"instance-{live['id']:08x}",
            disks=[str(self.instances / self.live / "disk")])]))
        self.uri = f"test://{node}"
        self.go = tmp_path / "go"
        self.conf = self.write_conf(**reaper_opts)

    def _dir(self, u: str) -> None:
        d = self.instances / u
        d.mkdir()
        (d / "disk").write_bytes(b"\0" * 4096)

    def write_conf(self, **reaper_opts) -> str:
        opts = dict(grace_observations=1, grace_seconds=0, max_destroy_fraction=1.0,
                    instances_path_shared="false", audit_log=self.root / "audit.log",
                    reconcile_interval=3600, reclaim_poll_interval=-1, interval_jitter=0,
                    reclaim_instance_interval=3600)
        opts.update(reaper_opts)
        conf = self.root / "reaper.conf"
        conf.write_text(
            f"[DEFAULT]\nhost = {self.host}\nhypervisor_hostname = {self.host}\n"
            f"instances_path = {self.instances}\n"
            f"state_path = {self.state_path}\nuse_stderr = true\n"
            f"[database]\nconnection = {self.url}\n"
            f"[libvirt]\nconnection_uri = {self.uri}\n[network]\nenabled = false\n"
            "[rpc]\nenabled = false\n[reaper]\n"
            + "".join(f"{k} = {v}\n" for k, v in opts.items()))
        return str(conf)

    # -- processes -----------------------------------------------------------------

    def _env(self, hold_at=None, kill_at=None, mark=None, entry="manage"):
        env = dict(os.environ, PYTHONPATH=os.getcwd(), FM_ENTRY=entry,
                   FM_GO=str(self.go), FM_MARK=str(mark or self.root / "mark"))
        env.pop("NOTIFY_SOCKET", None)
        for k, v in (("FM_HOLD_AT", hold_at), ("FM_KILL_AT", kill_at)):
            if v:
                env[k] = v
        return env

    def start(self, *args, entry="manage", hold_at=None, kill_at=None,
              mark=None) -> subprocess.Popen:
        """``reaper-manage ARGS`` (or ``reaper-agent ARGS``) in the background."""
        return subprocess.Popen(
            [sys.executable, "-c", HOOK, "--config-file", self.conf, *args],
            env=self._env(hold_at, kill_at, mark, entry), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)

    def run(self, *args, **kw) -> subprocess.CompletedProcess:
        p = self.start(*args, **kw)
        out, err = p.communicate(timeout=180)
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)

    def wait_mark(self, proc, mark=None, timeout=60) -> int:
        """Wait until ``proc`` is held inside its step; returns its pid."""
        mark = mark or self.root / "mark"
        end = time.monotonic() + timeout
        while not os.path.exists(mark):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < end, "the held process never reached its step"
            time.sleep(0.02)
        return int(open(mark).read())

    def release(self) -> None:
        self.go.write_text("go")

    # -- looking -------------------------------------------------------------------

    def audit(self, event=None) -> list[dict]:
        p = self.root / "audit.log"
        recs = [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []
        return [r for r in recs if event is None or r["event"] == event]

    def dirs(self) -> set[str]:
        return set(os.listdir(self.instances))

    def journal(self) -> list[tuple]:
        db = sqlite3.connect(self.state_path / state_mod.DB_NAME)
        try:
            cols = {r[1] for r in db.execute("PRAGMA table_info(journal)")}
            owner = "owner" if "owner" in cols else "NULL"     # a journal without owners
            return db.execute(f"SELECT id, instance_uuid, status, error, {owner} FROM journal "
                              "ORDER BY id").fetchall()
        finally:
            db.close()

    def destroyed_once(self, uuids) -> None:
        """Each directory was deleted by exactly one action, and no other action ran."""
        done = [a["instance_uuid"] for a in self.audit("action") if a["result"] == "done"]
        assert sorted(done) == sorted(uuids), self.audit("action")
        assert not (set(uuids) & self.dirs()) and self.live in self.dirs()

    def crash_mid_teardown(self) -> None:
        """A reap killed (SIGKILL) right after journaling the start of its first
        delete: a journal entry whose owner is gone, its directory still here."""
        r = self.run("reap", kill_at="delete_files:started")
        assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]


def ok(r, code):
    assert r.returncode == code, f"exit {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"


def stderr_lines(text: str, prefix: str) -> list[str]:
    return [x for x in text.splitlines() if x.startswith(prefix)]


def non_overlapping(summaries) -> None:
    spans = sorted((s["started_at"], s["finished_at"]) for s in summaries)
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start, f"passes overlapped: {spans}"


# ---------------------------------------------------------------------------
# concurrent passes of different processes
# ---------------------------------------------------------------------------

def test_second_reap_waits_for_the_first_then_finds_nothing(tmp_path):
    """Two reaper-manage reap processes start together; the second waits on the host's pass lock while the first is inside a delete.

    Expect: the second runs after the first (exit 0, no action, nothing resumed); the first exits 4; each orphan directory is deleted exactly once, the live one stays.
    """
    h = CoreHost(tmp_path)
    first = h.start("reap", hold_at="delete_files:started")
    h.wait_mark(first)
    second = h.start("reap", "--format", "json", "--lock-timeout", "120")
    time.sleep(2)
    assert second.poll() is None, "the second pass did not wait for the first"
    h.release()
    out1, err1 = first.communicate(timeout=120)
    out2, err2 = second.communicate(timeout=120)
    assert first.returncode == 4, out1 + err1[-3000:]
    assert second.returncode == 0, out2 + err2[-3000:]
    assert json.loads(out2)["actions"] == []
    h.destroyed_once(h.orphans)
    non_overlapping(h.audit("pass_summary"))


def test_second_reap_gives_up_busy_with_exit_75(tmp_path):
    """A reap waits one second for another process's reap that is inside a delete.

    Expect: the waiting reap exits 75 with one line naming the holder (mode, reaper-manage, its pid) and writes nothing to the audit log; the holder then finishes (exit 4).
    """
    h = CoreHost(tmp_path)
    first = h.start("reap", hold_at="delete_files:started")
    pid = h.wait_mark(first)
    t0 = time.monotonic()
    second = h.run("reap", "--lock-timeout", "1")
    ok(second, 75)
    assert time.monotonic() - t0 < 60
    (line,) = stderr_lines(second.stderr, "reaper-manage")
    assert line.startswith("reaper-manage reap: busy: a reap pass (reaper-manage) of "
                           f"reaper-manage pid {pid} has held this host since "), line
    assert h.audit("pass_summary") == []
    h.release()
    first.communicate(timeout=120)
    assert first.returncode == 4
    h.destroyed_once(h.orphans)


def test_three_passes_reap_reap_audit_run_one_at_a_time(tmp_path):
    """Three processes at once: a reap held inside a delete, a second reap and an audit waiting for it.

    Expect: the three passes never overlap (audit-log start/end times); the first reap exits 4, the second reap 0 and the audit 0 or 3; each orphan directory is deleted once, by the first; nothing is resumed.
    """
    h = CoreHost(tmp_path, orphans=3)
    first = h.start("reap", hold_at="delete_files:started")
    h.wait_mark(first)
    others = [h.start("reap", "--lock-timeout", "120"),
              h.start("audit", "--lock-timeout", "120")]
    time.sleep(2)
    assert all(p.poll() is None for p in others)
    h.release()
    codes = [p.wait(120) for p in (first, *others)]
    assert codes[0] == 4 and codes[1] == 0 and codes[2] in (0, 3), codes
    h.destroyed_once(h.orphans)
    summaries = h.audit("pass_summary")
    assert sorted(s["mode"] for s in summaries) == ["audit", "reap", "reap"]
    non_overlapping(summaries)
    assert not any(a.get("resumed_from") for a in h.audit("action"))


def test_crashed_teardown_is_resumed_by_exactly_one_of_two_racing_reaps(tmp_path):
    """A reap is SIGKILLed right after journaling a delete; then two reaps start at once.

    Expect: exactly one of them resumes the crashed entry (resumed_from), the other sees it finished and does nothing for it; every orphan directory is deleted once; the journal ends with no running entry.
    """
    h = CoreHost(tmp_path)
    h.crash_mid_teardown()
    racers = [h.start("reap", "--format", "json", "--lock-timeout", "120") for _ in range(2)]
    reports = []
    for p in racers:
        out, err = p.communicate(timeout=180)
        assert p.returncode in (0, 4), err[-3000:]
        reports.append(json.loads(out))
    resumed = [a for r in reports for a in r["actions"] if a.get("resumed_from")]
    assert len(resumed) == 1 and resumed[0]["result"] == "done"
    h.destroyed_once(h.orphans)
    assert [row[2] for row in h.journal()] == ["done"] * len(h.orphans)


def test_pass_waits_for_the_agent_holding_the_lock(tmp_path):
    """reaper-agent's init_host pass is inside a delete when reaper-manage audit and reap start with a short lock timeout.

    Expect: both exit 75 naming the reaper-agent pass; once the agent's pass ends, an audit runs (exit 0) and finds nothing left; the agent stops on SIGTERM with exit 0.
    """
    h = CoreHost(tmp_path)
    agent = h.start(entry="agent", hold_at="delete_files:started")
    try:
        pid = h.wait_mark(agent)
        for cmd in ("audit", "reap"):
            r = h.run(cmd, "--lock-timeout", "0.5")
            ok(r, 75)
            (line,) = stderr_lines(r.stderr, "reaper-manage")
            assert f"a reap pass (init_host) of reaper-agent pid {pid}" in line, line
        h.release()
        end = time.monotonic() + 60
        while not h.audit("pass_summary"):
            assert time.monotonic() < end and agent.poll() is None
            time.sleep(0.05)
        ok(h.run("audit", "--lock-timeout", "60"), 0)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(60) == 0
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
    h.destroyed_once(h.orphans)


def test_agent_rpc_pass_answers_busy_while_reaper_manage_runs(tmp_path):
    """An RPC-started pass of the agent (in this process) meets a reaper-manage reap held inside a delete.

    Expect: the agent's pass answers Busy naming the reaper-manage pass and its pid, and the agent's status() shows that pass as running; nothing is destroyed by the agent.
    """
    h = CoreHost(tmp_path)
    first = h.start("reap", hold_at="delete_files:started")
    pid = h.wait_mark(first)
    pol = policy_mod.Policy(host=h.host, hypervisor_hostname=h.host,
                            instances_path=str(h.instances),
                            actions=policy_mod.default_actions(), grace_observations=1,
                            grace_seconds=0, max_destroy_fraction=1.0,
                            instances_path_shared="false")
    reaper = reconcile.Reaper(policy=pol, libvirt_uri=h.uri, engine=h.engine,
                              state=state_mod.StateDB(str(h.state_path)),
                              audit=audit_mod.AuditLog(None, h.host))
    try:
        agent = service.Agent(reaper)
        with pytest.raises(exception.Busy, match=f"a reap pass \\(reaper-manage\\) of "
                                               f"reaper-manage pid {pid}"):
            agent.run_pass("reap", source="rpc", wait=0.5)
        running = agent.status()["running"]
        assert running["pid"] == pid and running["mode"] == "reap"
    finally:
        reaper.close()
        h.release()
    first.communicate(timeout=120)
    assert first.returncode == 4
    h.destroyed_once(h.orphans)


# ---------------------------------------------------------------------------
# pause
# ---------------------------------------------------------------------------

def _pause(h, reason="kernel upgrade", by="user alice over RPC"):
    """What the agent's RPC pause does: the flag in the state DB."""
    reaper = reconcile.Reaper(
        policy=policy_mod.Policy(host=h.host, hypervisor_hostname=h.host,
                                 instances_path=str(h.instances)),
        libvirt_uri=h.uri, engine=h.engine, state=state_mod.StateDB(str(h.state_path)),
        audit=audit_mod.AuditLog(str(h.root / "audit.log"), h.host))
    try:
        service.Agent(reaper).pause(reason, by=by)
    finally:
        reaper.close()


def _watcher_log(h, uuid) -> str:
    from tests.functional import test_watch_nova_log as wl
    log = h.root / "nova-compute.log"
    log.write_text("\n".join(line.replace(wl.DELETED, uuid) for line in wl.sections()[3])
                   + "\n")
    return str(log)


@pytest.mark.parametrize("path", [
    pytest.param("manage-reap", id="reaper-manage-reap"),
    pytest.param("manage-reclaim", id="reaper-manage-reclaim"),
    pytest.param("agent-once", id="reaper-agent-once"),
    pytest.param("manage-audit", id="reaper-manage-audit"),
    pytest.param("watcher", id="nova-log-watcher"),
])
def test_pause_is_seen_by_every_path(tmp_path, path):
    """The host is paused (as RPC does it) with orphan directories and a crashed, journaled delete; one path runs a pass.

    Expect: reap, reclaim and --once exit 5 with one line "host H is paused (kernel upgrade) by user alice ..." and a 'paused' guard record; an audit exits 3 and reports the pause; the watcher's trigger record carries it; nothing is deleted and the journaled delete is not resumed.
    """
    h = CoreHost(tmp_path)
    h.crash_mid_teardown()
    before = h.dirs()
    _pause(h)
    if path == "watcher":
        log = _watcher_log(h, h.orphans[0])
        r = h.run("watch-nova-log", log, "--from-start", "--exit-at-eof")
        ok(r, 0)
        (trig,) = h.audit("nova_log_trigger")
        assert trig["evidence"]["host_paused"]["reason"] == "kernel upgrade"
        assert trig["evidence"]["findings"] and trig["result"] == "findings"
    elif path == "manage-audit":
        r = h.run("audit")
        ok(r, 3)
        assert "PAUSED (kernel upgrade)" in r.stdout
        (s,) = h.audit("pass_summary")
        assert s["paused"]["by"] == "user alice over RPC"
    else:
        if path == "agent-once":
            r, prefix = h.run("--once", entry="agent"), "reaper-agent"
        else:
            cmd = path.split("-")[1]
            r, prefix = h.run(cmd), f"reaper-manage {cmd}"
        ok(r, 5)
        (line,) = stderr_lines(r.stderr, "reaper-")
        assert line.startswith(f"{prefix}: host {h.host} is paused (kernel upgrade) by user "
                               f"alice over RPC since "), line
        (g,) = h.audit("guard_tripped")
        assert g["guard"] == "paused"
    assert h.audit("action") == [] and h.dirs() == before
    assert [row[2] for row in h.journal()] == ["running"]


# ---------------------------------------------------------------------------
# targeted passes, journal owners, quarantine
# ---------------------------------------------------------------------------

def test_targeted_reap_leaves_another_instances_journaled_teardown(tmp_path):
    """A crashed, journaled delete of orphan A; then reaper-manage reap --instance B.

    Expect: B's directory is deleted (exit 4), A's directory and its journal entry stay untouched; the next full reap resumes A's entry and deletes it.
    """
    h = CoreHost(tmp_path)
    h.crash_mid_teardown()
    (jid, a, status, _, _), = h.journal()
    (b,) = [u for u in h.orphans if u != a]
    ok(h.run("audit"), 3)                 # the full pass a targeted reap's grace needs
    r = h.run("reap", "--instance", b.upper(), "--format", "json")
    ok(r, 4)
    assert [(x["instance_uuid"], x["result"]) for x in json.loads(r.stdout)["actions"]] == \
        [(b, "done")]
    assert a in h.dirs() and b not in h.dirs()
    assert h.journal()[0][:3] == (jid, a, "running")
    r = h.run("reap", "--format", "json")
    ok(r, 4)
    (act,) = json.loads(r.stdout)["actions"]
    assert act["instance_uuid"] == a and act["resumed_from"] and act["result"] == "done"
    h.destroyed_once(h.orphans)


@pytest.mark.parametrize("owner", [
    pytest.param("live", id="owner-alive"),
    pytest.param("reused-pid", id="owner-pid-reused"),
    pytest.param("other-boot", id="owner-before-reboot"),
])
def test_journal_entry_owner_decides_who_may_resume_it(tmp_path, owner):
    """A journaled delete of orphan A whose owner is a live process, or a dead one whose pid a new process now has, or one from before a reboot; then reaper-manage reap.

    Expect: the live owner's entry is reported held_elsewhere and A stays (its teardown is not started again), B is reaped; an entry whose owner is gone (reused pid, other boot) is resumed and A is deleted.
    """
    h = CoreHost(tmp_path)
    h.crash_mid_teardown()
    (jid, a, _, _, recorded), = h.journal()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        ident = json.loads(recorded)
        start = state_mod.procid.start_time(sleeper.pid)
        ident.update(pid=sleeper.pid, start=start, process="reaper-agent")
        if owner == "reused-pid":
            ident["start"] = start - 1
        elif owner == "other-boot":
            ident["boot_id"] = str(uuidlib.uuid4())
        db = sqlite3.connect(h.state_path / state_mod.DB_NAME)
        db.execute("UPDATE journal SET owner=? WHERE id=?", (json.dumps(ident), jid))
        db.commit()
        db.close()
        r = h.run("reap", "--format", "json")
        acts = {x["instance_uuid"]: x for x in json.loads(r.stdout)["actions"]}
        if owner == "live":
            ok(r, 4)
            assert acts[a]["result"] == "held_elsewhere"
            assert f"reaper-agent pid {sleeper.pid}" in acts[a]["reason"]
            assert a in h.dirs() and h.journal()[0][2] == "running"
            assert [x["result"] for u, x in acts.items() if u != a] == ["done"]
            return
        ok(r, 4)
        assert acts[a]["result"] == "done" and acts[a]["resumed_from"]
        assert json.loads(h.journal()[0][4])["pid"] != sleeper.pid      # taken over
        h.destroyed_once(h.orphans)
    finally:
        sleeper.kill()
        sleeper.wait(10)


def _unreadable(kind: str, plan_text: str) -> str:
    d = json.loads(plan_text)
    return {"bad-json": plan_text[: len(plan_text) // 2],
            "unknown-classification": json.dumps({**d, "classification": "evacuating_v9"}),
            "unknown-action": json.dumps({**d, "action": "archive"})}.get(kind, plan_text)


@pytest.mark.parametrize("kind", ["bad-json", "unknown-classification", "unknown-action",
                                  "unknown-step"])
def test_unreadable_journal_entry_is_quarantined_and_reaping_goes_on(tmp_path, kind):
    """A journal entry this version cannot read (half a JSON plan, or a classification, action or step a newer version wrote), next to orphan directories.

    Expect: reaper-manage reap exits 4 and deletes the orphans; the entry is set to 'quarantined' with the error, one journal_quarantined audit record names it; a second reap writes no further record; the report counts 1 quarantined entry.
    """
    h = CoreHost(tmp_path, orphans=3)
    h.crash_mid_teardown()
    (jid, a, _, _, _), = h.journal()
    db = sqlite3.connect(h.state_path / state_mod.DB_NAME)
    (plan,) = db.execute("SELECT plan FROM journal WHERE id=?", (jid,)).fetchone()
    db.execute("UPDATE journal SET plan=? WHERE id=?", (_unreadable(kind, plan), jid))
    if kind == "unknown-step":
        db.execute("INSERT INTO journal_steps VALUES (?, 'shred_disk', 'done', NULL, 'now')",
                   (jid,))
    db.commit()
    db.close()
    r = h.run("reap", "--format", "json")
    ok(r, 4)
    rep = json.loads(r.stdout)
    assert rep["summary"]["journal_quarantined"] == 1
    (q,) = h.audit("journal_quarantined")
    assert q["evidence"]["journal_id"] == jid and q["instance_uuid"] == a
    (row,) = [x for x in h.journal() if x[0] == jid]
    assert row[2] == "quarantined" and row[3] == q["evidence"]["error"]
    assert not (set(h.orphans) & h.dirs()) and h.live in h.dirs()
    ok(h.run("reap"), 0)
    assert len(h.audit("journal_quarantined")) == 1


# ---------------------------------------------------------------------------
# the state DB
# ---------------------------------------------------------------------------

LOCKER = textwrap.dedent("""
    import sqlite3, sys, time
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("BEGIN EXCLUSIVE")
    db.execute("INSERT INTO flags VALUES ('fm-locker', 'x', 'now')")
    print("locked", flush=True)
    sys.stdin.read()
""")


def lock_state_db(h) -> subprocess.Popen:
    """Another process holding the state DB's SQLite write lock until its stdin closes."""
    state_mod.StateDB(str(h.state_path)).close()
    p = subprocess.Popen([sys.executable, "-c", LOCKER, str(h.state_path / state_mod.DB_NAME)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def unlock(p) -> None:
    p.stdin.close()
    p.wait(10)


def test_locked_state_db_fails_the_pass_and_destroys_nothing(tmp_path):
    """Another process holds the state DB's write lock beyond state_db_timeout while reaper-manage reap runs.

    Expect: exit 1 with the 'state_unavailable' guard, findings still reported, nothing deleted or journaled; once the lock is released the next reap deletes the orphans (exit 4).
    """
    h = CoreHost(tmp_path, state_db_timeout=0.5)
    before = h.dirs()
    locker = lock_state_db(h)
    try:
        r = h.run("reap", "--format", "json")
    finally:
        unlock(locker)
    ok(r, 1)
    rep = json.loads(r.stdout)
    assert [g["guard"] for g in rep["guards"]] == ["state_unavailable"]
    assert {f["instance_uuid"] for f in rep["findings"]} >= set(h.orphans)
    assert rep["actions"] == [] and h.dirs() == before and h.journal() == []
    ok(h.run("reap"), 4)
    h.destroyed_once(h.orphans)


def test_agent_loop_survives_a_locked_state_db(tmp_path):
    """reaper-agent runs its timer passes every second while another process holds the state DB's write lock.

    Expect: the agent stays up, its passes end with exit 1 and the 'state_unavailable' guard and delete nothing; after the lock is released a pass deletes the orphans; SIGTERM stops it with exit 0.
    """
    h = CoreHost(tmp_path, state_db_timeout=0.3, reconcile_interval=1)
    locker = lock_state_db(h)
    agent = h.start(entry="agent")
    try:
        end = time.monotonic() + 90
        while len([s for s in h.audit("pass_summary") if s["result"] == "1"]) < 2:
            assert agent.poll() is None, agent.communicate()[1][-3000:]
            assert time.monotonic() < end, h.audit()
            time.sleep(0.1)
        assert {g["guard"] for g in h.audit("guard_tripped")} == {"state_unavailable"}
        assert h.audit("action") == [] and set(h.orphans) <= h.dirs()
        unlock(locker)
        while set(h.orphans) & h.dirs():
            assert agent.poll() is None, agent.communicate()[1][-3000:]
            assert time.monotonic() < end + 60
            time.sleep(0.1)
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(60) == 0
    finally:
        if locker.poll() is None:
            unlock(locker)
        if agent.poll() is None:
            agent.kill()
            agent.wait(10)
    h.destroyed_once(h.orphans)


def test_state_files_are_private(tmp_path):
    """reaper-manage reap creates state_path and the state DB under a umask of 022 (looked at while the pass is inside a delete, when -wal and -shm exist).

    Expect: state_path is 0700; the DB and its -wal and -shm files are 0600; the pass-lock file is 0600.
    """
    h = CoreHost(tmp_path)
    old = os.umask(0o022)
    try:
        p = h.start("reap", hold_at="delete_files:started", mark=tmp_path / "mark")
    finally:
        os.umask(old)
    try:
        h.wait_mark(p)
        assert h.state_path.stat().st_mode & 0o777 == 0o700
        modes = {f.name: f.stat().st_mode & 0o777 for f in h.state_path.iterdir()
                 if f.name.startswith("reaper-state") or f.name == "reaper-pass.lock"}
    finally:
        h.release()
        p.communicate(timeout=120)
    assert p.returncode == 4
    assert set(modes) == {state_mod.DB_NAME, state_mod.DB_NAME + "-wal",
                          state_mod.DB_NAME + "-shm", "reaper-pass.lock"}, modes
    assert set(modes.values()) == {0o600}, modes
