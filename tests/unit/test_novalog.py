"""reaper.novalog: parsing nova-compute's oslo.log lines, telling failed detaches,
deletes, evacuations and migrations from the rest (tests/fixtures/nova-compute.log,
whose comments say where each message comes from in Nova and what to expect),
following a file like tail -F, and the watch loop on a real throwaway host
(libvirt's test driver, SQLite Nova DB) that survives bad lines and failed passes."""
from __future__ import annotations

import json
import os
import pathlib
import re
import threading

import libvirt
import pytest
import sqlalchemy as sa

from reaper import demo, novalog

FIXTURE = pathlib.Path(__file__).parent.parent / "fixtures" / "nova-compute.log"
SEED_UUID = "4bfefe2b-3611-4c65-a293-657cf6eaf271"


def fixture_lines() -> list[str]:
    return [x for x in FIXTURE.read_text().splitlines() if not x.startswith("#")]


def expected_triggers() -> list[tuple[str, str]]:
    out = []
    for line in FIXTURE.read_text().splitlines():
        if line.startswith("#") and "EXPECT trigger" in line:
            out += re.findall(r"(detach|delete|evacuation|rebuild|migration) "
                              r"([0-9a-f-]{36})", line)
    return out


def detect(lines, debounce=300.0, clock=lambda: 0.0):
    d = novalog.Detector(debounce, clock)
    out = []
    for line in lines:
        out += d.feed(line)
    return out + d.flush(), d.stats


# -- lines and records ---------------------------------------------------------------

def test_parse_line_formats():
    ocata = ("2017-06-20 14:27:43.093 2856 ERROR nova.compute.manager [req-912a0cce-d0ff-460d-"
             "a228-bc37c1ca94e5 1a236a52e6864cf5a5b26d4b816f719b 406cd353135e44f0ade96f53d92d5d5b"
             f" - - -] [instance: {SEED_UUID.upper()}] Failed to detach volume v from /dev/vdb")
    x = novalog.parse_line(ocata)
    assert (x.asctime, x.pid, x.level, x.logger) == (
        "2017-06-20 14:27:43.093", 2856, "ERROR", "nova.compute.manager")
    assert x.instance_uuid == SEED_UUID and x.request_id == "req-912a0cce-d0ff-460d-a228-bc37c1ca94e5"
    assert x.message == "Failed to detach volume v from /dev/vdb"
    modern = novalog.parse_line(
        "2024-03-11 09:14:02.118 41733 INFO nova.compute.manager [req-aaa req-bbb u p - default "
        "default] Detaching volume v")
    assert modern.request_id == "req-bbb" and modern.instance_uuid is None
    assert novalog.parse_line("2024-03-11 10:02:17.220 52001 INFO nova.compute.manager "
                              "[None req-ccc None None] hello").request_id == "req-ccc"
    plain = novalog.parse_line("2024-03-11 14:01:04.000 41733 INFO nova.compute.manager [-] hi")
    assert plain.context == "-" and plain.request_id is None and plain.message == "hi"
    tb = novalog.parse_line(f"2017-06-20 14:27:43.093 2856 ERROR nova.compute.manager "
                            f"[instance: {SEED_UUID}]   File \"x.py\", line 1, in f")
    assert tb.context is None and tb.instance_uuid == SEED_UUID
    assert tb.message == '  File "x.py", line 1, in f'
    for junk in ("", "garbage", "2024-03-11 14:01:03.0", "\x00\x00", "    raise x"):
        assert novalog.parse_line(junk) is None


def test_records_gather_tracebacks_and_raw_continuations():
    lines = fixture_lines()
    a = novalog.Assembler()
    records = [r for line in lines for r in a.feed(line)] + a.flush()
    seed = next(r for r in records if r.head.message.startswith("Failed to detach volume"))
    assert seed.frames()[0] == "_driver_detach_volume"
    assert seed.frames()[-1] == "_do_wait_and_retry_detach"
    assert seed.exception == ("DeviceDetachFailed: Device detach failed for vdb: Unable to "
                              "detach from guest transient domain.")
    # the raw lines after a record (truncated, garbage) stay with it, never crash
    last_error = next(r for r in records if r.head.message.startswith("Instance failed"))
    assert "\x00\x00garbage that is not a log line at all" in last_error.extra
    assert sum(len(r.extra) + 1 for r in records) == len(lines)
    # a traceback line whose head was never seen is a record of its own, not a failure
    b = novalog.Assembler()
    assert b.feed(lines[3]) == [] and novalog.classify(b.flush()[0]) is None
    assert novalog.Assembler().feed("garbage") == []


def test_fixture_triggers_what_its_comments_expect():
    got, stats = detect(fixture_lines())
    assert [(t.operation, t.instance_uuid) for t in got] == expected_triggers()
    assert len(got) == 9 and stats.debounced == 3
    assert "e5f6a7b8-c9d0-4e1f-8a2b-3c4d5e6f7a8b" not in {t.instance_uuid for t in got}
    seed = got[0]
    assert seed.instance_uuid == SEED_UUID and seed.rule == "detach_failed"
    assert seed.facts == {"volume_id": "0d6c7c6b-52a4-4c4c-9d60-2b4c6c1f6a52",
                          "mountpoint": "/dev/vdb"}
    assert "Unable to detach from guest transient domain" in seed.exception
    assert "_driver_detach" in seed.source
    libvirt_detach = got[1]
    assert libvirt_detach.rule == "libvirt_detach_retries_exhausted"
    assert libvirt_detach.facts == {"device": "vdb", "alias": "virtio-disk1"}
    ops = {t.rule: t.operation for t in got}
    assert ops["migration_failed"] == "migration" and ops["rebuild_failed"] == "evacuation"


def test_without_debounce_every_failure_line_triggers():
    got, stats = detect(fixture_lines(), debounce=0)
    assert stats.debounced == 0 and len(got) == 12
    assert [t.rule for t in got if t.instance_uuid == "5b0f8a2e-1c3d-4e5f-a6b7-c8d9e0f1a2b3"] \
        == ["libvirt_destroy_error", "terminate_failed"]


def test_generic_error_state_needs_a_known_traceback():
    u = "12345678-1234-4234-8234-123456789abc"
    head = (f"2024-01-01 00:00:00.000 1 ERROR nova.compute.manager [req-1 req-2 u p - d d] "
            f"[instance: {u}] Setting instance vm_state to ERROR: Exception: x")

    def tb(*funcs):
        return [head] + [f"2024-01-01 00:00:00.000 1 ERROR nova.compute.manager "
                         f"[instance: {u}]   File \"/n/nova/compute/manager.py\", line 1, in {f}"
                         for f in funcs]

    assert detect([head])[0] == []
    assert detect(tb("_build_and_run_instance", "spawn"))[0] == []
    assert [t.operation for t in detect(tb("do_terminate_instance", "_delete_instance"))[0]] \
        == ["delete"]
    assert [t.operation for t in detect(tb("rebuild_instance"))[0]] == ["rebuild"]
    assert [t.operation for t in detect(tb("finish_resize", "_finish_resize"))[0]] \
        == ["migration"]
    evacuating = (f"2024-01-01 00:00:00.000 1 INFO nova.compute.manager [req-1 req-2 u p - d d] "
                  f"[instance: {u}] Evacuating instance")
    assert [t.operation for t in detect([evacuating] + tb("rebuild_instance"))[0]] \
        == ["evacuation"]


def test_debounce_per_instance():
    now = [0.0]
    d = novalog.Debouncer(60, clock=lambda: now[0])
    assert d.allow("a") and not d.allow("a") and d.allow("b")
    now[0] = 59.9
    assert not d.allow("a")
    now[0] = 60.0
    assert d.allow("a") and not d.allow("a")


# -- tail -F -------------------------------------------------------------------------

def test_follower_tail_semantics(tmp_path):
    log = tmp_path / "nova-compute.log"
    log.write_text("old 1\nold 2\n")
    f = novalog.Follower(str(log))
    assert f.read_lines() == []                         # starts at the end, like tail
    with open(log, "a") as w:
        w.write("new 1\nnew 2 part")
    assert f.read_lines() == ["new 1"]                  # a partial line waits
    with open(log, "a") as w:
        w.write("ial\r\n")
    assert f.read_lines() == ["new 2 partial"]
    # rename + create (logrotate's default): the old file's rest first, then the new one
    with open(log, "a") as w:
        w.write("last of old\nunterminated")
    os.rename(log, tmp_path / "nova-compute.log.1")
    log.write_text("first of new\n")
    assert f.read_lines() == ["last of old", "unterminated", "first of new"]
    assert f.rotations == 1
    # copytruncate: same file, emptied, written again
    with open(log, "r+") as w:
        w.truncate(0)
    with open(log, "a") as w:
        w.write("after truncate\n")
    assert f.read_lines() == ["after truncate"] and f.truncations == 1
    # removed and recreated later
    log.unlink()
    assert f.read_lines() == []
    log.write_text("recreated\n")
    assert f.read_lines() == ["recreated"]
    f.close()


def test_follower_from_start_and_a_file_that_appears_later(tmp_path):
    log = tmp_path / "nova-compute.log"
    log.write_text("a\nb\n")
    f = novalog.Follower(str(log), from_start=True)
    assert f.read_lines() == ["a", "b"]
    f.close()
    later = tmp_path / "later.log"
    g = novalog.Follower(str(later))
    assert g.read_lines() == []
    later.write_bytes(b"written before we saw it\n\xff\xfe not utf-8\n")
    assert g.read_lines() == ["written before we saw it", "\ufffd\ufffd not utf-8"]
    g.close()


# -- the watch loop on a real throwaway host -------------------------------------------

@pytest.fixture
def host(tmp_path):
    reaper, handles, cast = demo.build(str(tmp_path / "host"))
    yield reaper, handles, cast
    reaper.close()


def audit_records(path) -> list[dict]:
    return [json.loads(x) for x in open(path)]


def test_watch_audits_each_failed_instance_once(host, tmp_path):
    reaper, handles, cast = host
    log = tmp_path / "nova-compute.log"
    log.write_text("\n".join(fixture_lines()) + "\n")
    seen = []
    stats = novalog.watch(reaper, str(log), from_start=True, exit_at_eof=True,
                          debounce=300, on_audit=seen.append)
    assert stats.triggers == 9 and stats.audits_failed == 0
    recs = audit_records(handles["audit_log"])
    triggers = [r for r in recs if r["event"] == novalog.TRIGGER_EVENT]
    assert [(r["evidence"]["operation"], r["instance_uuid"]) for r in triggers] \
        == expected_triggers()
    assert seen == triggers
    t = triggers[0]
    assert t["kind"] == "instance" and t["resource"] == SEED_UUID and t["action"] == "audit"
    # none of these instances is on the demo host: each targeted audit is clean
    assert {r["result"] for r in triggers} == {"clean"}
    assert t["reason"].startswith("nova-compute logged a failed detach: Failed to detach volume")
    ev = t["evidence"]
    assert ev["nova_log"] == str(log) and ev["logged_at"] == "2017-06-20 14:27:43.093"
    assert ev["rule"] == "detach_failed" and ev["findings"] == [] and ev["exit_code"] == 0
    # each trigger carries the id of its own audit pass, which the log holds too
    summaries = {r["pass_id"]: r for r in recs if r["event"] == "pass_summary"}
    assert all(summaries[r["pass_id"]]["evidence"]["findings"] == 0 for r in triggers)


def test_watch_targets_the_instance_named(host, tmp_path):
    """A failed delete of an instance that left a running domain behind: the audit
    finds it, and only it, although the host has a dozen other findings."""
    reaper, handles, cast = host
    u = next(m.uuid for m in cast if m.label == "deleted_old")
    log = tmp_path / "nova-compute.log"
    log.write_text(
        f"2024-03-11 09:20:41.517 41733 ERROR nova.virt.libvirt.driver [req-1 req-2 u p - d d] "
        f"[instance: {u}] Error from libvirt during destroy. Code=38 Error=Failed to "
        "terminate process 73122 with SIGKILL: Device or resource busy\n")
    stats = novalog.watch(reaper, str(log), from_start=True, exit_at_eof=True)
    assert stats.triggers == 1
    recs = audit_records(handles["audit_log"])
    trig = recs[-1]
    assert trig["event"] == novalog.TRIGGER_EVENT and trig["result"] == "findings"
    assert trig["evidence"]["operation"] == "delete"
    assert trig["evidence"]["findings"] == [{
        "kind": "domain", "resource": "instance-00000007", "classification": "running_deleted",
        # a targeted audit is not an observation: it says the grace period is pending
        "action": "reap", "result": "waiting_grace"}]
    findings = [r for r in recs if r["event"] == "finding"]
    assert [(r["instance_uuid"], r["pass_id"]) for r in findings] == [(u, trig["pass_id"])]
    assert demo.RUNNING == handles["conn"].lookupByUUIDString(u).info()[0]   # read-only


def test_watch_survives_a_database_outage_and_failing_passes(host, tmp_path):
    reaper, handles, cast = host
    lines = fixture_lines()
    log = tmp_path / "nova-compute.log"
    log.write_text("\n".join(lines) + "\n")
    # the Nova DB goes away: every pass reports the error, the watcher goes on
    reaper.engine = sa.create_engine(f"sqlite:///{tmp_path / 'gone' / 'nova.sqlite'}")
    stats = novalog.watch(reaper, str(log), from_start=True, exit_at_eof=True,
                          max_triggers=3)
    assert stats.triggers == 3 and stats.audits_failed == 3
    trig = [r for r in audit_records(handles["audit_log"]) if r["event"] == "nova_log_trigger"]
    assert [r["result"] for r in trig] == ["error"] * 3
    assert all(r["evidence"]["exit_code"] == 1 for r in trig)
    # libvirt cannot even be opened: run_pass raises; still recorded, still going
    reaper.connect = lambda: libvirt.open(f"test://{tmp_path / 'no-such-node.xml'}")
    stats = novalog.watch(reaper, str(log), from_start=True, exit_at_eof=True)
    assert stats.triggers == 9 and stats.audits_failed == 9
    trig = [r for r in audit_records(handles["audit_log"]) if r["event"] == "nova_log_trigger"]
    assert len(trig) == 12 and trig[-1]["evidence"]["errors"][0].startswith("audit failed:")


def test_watch_stops_when_asked(host, tmp_path):
    reaper, handles, _ = host
    log = tmp_path / "nova-compute.log"
    log.write_text("")
    stop = threading.Event()
    result = {}
    t = threading.Thread(target=lambda: result.update(
        stats=novalog.watch(reaper, str(log), poll_interval=0.05, stop=stop)))
    t.start()
    stop.set()
    t.join(timeout=30)
    assert not t.is_alive() and result["stats"].triggers == 0


# -- the position kept across restarts ---------------------------------------------------

U1, U2, U3 = (f"{n}1111111-2222-4333-8444-555555555555" for n in "abc")


def destroy_failed(u: str, second: int = 41) -> str:
    return (f"2024-03-11 09:20:{second:02d}.517 41733 ERROR nova.virt.libvirt.driver "
            f"[req-1 req-2 u p - d d] [instance: {u}] Error from libvirt during destroy. "
            "Code=38 Error=Failed to terminate process 73122 with SIGKILL\n")


def history(n: int = 20) -> str:
    return "".join(f"2024-03-11 09:00:{i % 60:02d}.000 41733 INFO nova.compute.manager [-] "
                   f"line {i}\n" for i in range(n))


def triggered(stats_and_records) -> list[str]:
    return [r["instance_uuid"] for r in stats_and_records]


def run_once(reaper, log) -> tuple[novalog.WatchStats, list[str]]:
    """One watcher run that stops at the end of the file, as a restarted service
    would see it (no --from-start)."""
    seen = []
    stats = novalog.watch(reaper, str(log), exit_at_eof=True, on_audit=seen.append)
    return stats, triggered(seen)


def test_lines_logged_while_the_watcher_was_down_are_seen_after_restart(host, tmp_path):
    reaper, handles, _ = host
    log = tmp_path / "nova-compute.log"
    log.write_text(history())
    stats, seen = run_once(reaper, log)             # first start: from the end, like tail
    assert seen == [] and stats.resumed is None
    state_dir = pathlib.Path(reaper.state.path).parent
    [pos_file] = state_dir.glob("nova-log-position.nova-compute.log.*.json")
    saved = json.loads(pos_file.read_text())
    assert (saved["ino"], saved["offset"]) == (os.stat(log).st_ino, log.stat().st_size)
    with open(log, "a") as w:                       # logged while the watcher is stopped
        w.write(destroy_failed(U1) + history(3) + "a partial li")
    stats, seen = run_once(reaper, log)
    assert seen == [U1] and stats.resumed == "here"
    # the partial line is not part of the saved position: it is read once complete
    with open(log, "a") as w:
        w.write("ne\n" + destroy_failed(U2))
    stats, seen = run_once(reaper, log)
    assert seen == [U2] and stats.detect.lines == 2
    # nothing new: nothing audited again
    assert run_once(reaper, log)[1] == []


def test_restart_after_a_rotation_reads_the_rest_of_the_old_file_then_the_new(host, tmp_path):
    reaper, handles, _ = host
    log = tmp_path / "nova-compute.log"
    log.write_text(history())
    run_once(reaper, log)
    with open(log, "a") as w:
        w.write(destroy_failed(U1))
    os.rename(log, tmp_path / "nova-compute.log.1")     # logrotate, create mode
    log.write_text(history(2) + destroy_failed(U2, 50))
    stats, seen = run_once(reaper, log)
    assert seen == [U1, U2] and stats.rotations == 1
    assert stats.resumed == f"rotated:{tmp_path / 'nova-compute.log.1'}"
    assert run_once(reaper, log)[1] == []


def test_restart_when_the_old_file_is_gone_or_rewritten(host, tmp_path):
    reaper, handles, _ = host
    log = tmp_path / "nova-compute.log"
    log.write_text(history())
    run_once(reaper, log)
    # rotated and compressed while stopped: its rest cannot be read, the new file is
    os.rename(log, tmp_path / "nova-compute.log.1")
    log.write_text(destroy_failed(U1))
    (tmp_path / "nova-compute.log.1").unlink()       # (gzip removes the original)
    stats, seen = run_once(reaper, log)
    assert seen == [U1] and stats.resumed == "lost"
    # a new file that got the old inode back is told apart by the bytes before the
    # saved offset, and read from its start
    pos = novalog.Position(str(log), log.stat().st_dev, log.stat().st_ino, 10, b"different")
    f = novalog.Follower(str(log), resume=pos)
    assert f.read_lines() == [destroy_failed(U1).rstrip("\n")] and f.resumed == "rewritten"
    f.close()
    # copytruncate while stopped, and already longer than where we were: from its start
    with open(log, "r+") as w:
        w.truncate(0)
        w.write(history(40) + destroy_failed(U2))
    stats, seen = run_once(reaper, log)
    assert seen == [U2] and stats.resumed == "rewritten" and stats.truncations == 1


def test_from_start_ignores_the_saved_position_and_none_keeps_none(host, tmp_path):
    reaper, handles, _ = host
    log = tmp_path / "nova-compute.log"
    log.write_text(destroy_failed(U1) + destroy_failed(U3, 45))
    stats = novalog.watch(reaper, str(log), from_start=True, exit_at_eof=True, debounce=0)
    assert stats.triggers == 2 and stats.resumed is None
    stats = novalog.watch(reaper, str(log), from_start=True, exit_at_eof=True, debounce=0)
    assert stats.triggers == 2
    store = novalog.PositionStore(str(tmp_path / "other.json"))
    novalog.watch(reaper, str(log), exit_at_eof=True, position_store=None)
    assert not (tmp_path / "other.json").exists()
    novalog.watch(reaper, str(log), exit_at_eof=True, position_store=store)
    assert store.load().offset == log.stat().st_size
    (tmp_path / "other.json").write_text("{not json")   # a damaged file: started afresh
    assert store.load() is None
