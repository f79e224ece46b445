"""reaper.auditlog and `reaper-manage audit-log`: reading rotated/compressed logs,
time windows, the summary/story/failures reports, on real records (the demo host's
passes) and on a generated log of 100,000 records checked against what the
generator wrote."""
from __future__ import annotations

import collections
import datetime
import gzip
import json
import os
import random
import subprocess
import sys
import tracemalloc

import pytest

from reaper import audit as audit_mod
from reaper import demo
from reaper.auditlog import read, reports
from reaper.objects.fields import Action, Classification, ResourceKind
from reaper.objects.plan import Finding, GuardResult
from tests.fixtures import auditgen

UTC = datetime.timezone.utc
N = 100_000


def manage(*args, conf=None, stdin=None):
    cmd = [sys.executable, "-m", "reaper.cmd.manage", "--config-file", str(conf or os.devnull)]
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.run(cmd + list(args), capture_output=True, text=True, env=env,
                          input=stdin, timeout=120)


def rec(ts, event="finding", host="h1", **kw):
    return {"ts": ts, "host": host, "pass_id": kw.pop("pass_id", "req-1"), "event": event,
            "kind": kw.pop("kind", None), "resource": kw.pop("resource", None),
            "instance_uuid": kw.pop("instance_uuid", None),
            "classification": kw.pop("classification", None), "action": kw.pop("action", None),
            "result": kw.pop("result", None), "reason": kw.pop("reason", None),
            "evidence": kw.pop("evidence", {}), **kw}


def write_lines(path, lines, compress=False):
    opener = gzip.open if compress else open
    with opener(path, "wt", encoding="utf-8") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return str(path)


# -- the generated 100,000-record log --------------------------------------------------

@pytest.fixture(scope="module")
def big(tmp_path_factory):
    d = tmp_path_factory.mktemp("big")
    paths, truths = auditgen.write_family(str(d), N)
    return paths, truths


def _cells(truths):
    return collections.Counter(
        (t.host, t.event, t.classification or "-", t.result or "-") for t in truths if t)


def test_generator_writes_what_the_audit_log_writes(tmp_path):
    """The generated records carry the real writer's keys, so the reports are tested
    on the real shape."""
    log = audit_mod.AuditLog(str(tmp_path / "audit.log"), "h1")
    f = Finding(ResourceKind.DOMAIN, "instance-00000001", "u1", Classification.RUNNING_DELETED,
                Action.REAP, "why", {"db_row": {}})
    log.finding("req-1", f, "planned")
    log.guard("req-1", GuardResult("mass_destruction", True, "too many", {"n": 3}))
    log.record("action", "req-1", kind="domain", resource="instance-00000001",
               instance_uuid="u1", classification="running_deleted", action="reap",
               result="failed", reason="x", evidence={"steps": []})
    log.record("pass_summary", "req-1", result="3", reason="audit pass", evidence={},
               mode="audit", db_queries=1)
    # as reaper.rpc.server and reaper.novalog write theirs
    log.record("rpc_call", "req-1", method="audit", caller="ctl", args={"instance": "u1"},
               result="ok", reason="done")
    log.record("nova_log_trigger", "req-1", kind="instance", resource="u1", instance_uuid="u1",
               action="audit", result="clean", reason="nova-compute logged a failed detach",
               evidence={"operation": "detach"})
    log.close()
    real = {r["event"]: set(r) for r in map(json.loads, open(tmp_path / "audit.log"))}
    generated = {}
    for line, truth in auditgen.generate(2000):
        if truth is not None:
            generated.setdefault(truth.event, set(json.loads(line)))
    for event, keys in real.items():
        assert keys <= generated[event], event


def test_summary_of_100k_records(big):
    paths, truths = big
    assert read.rotated_siblings(paths[-1]) == paths
    stats = read.ReadStats()
    s = reports.summary(read.iter_records(read.rotated_siblings(paths[-1]), stats=stats))
    good = [t for t in truths if t]
    assert s.records == stats.records == stats.matched == N
    assert stats.malformed == sum(t is None for t in truths) > 0
    assert len(stats.examples) <= read.MAX_EXAMPLES and stats.errors == []
    assert stats.files == paths
    assert s.cells == _cells(truths)
    assert s.by_event == collections.Counter(t.event for t in good)
    assert s.by_host == collections.Counter(t.host for t in good)
    assert read.parse_time(s.first_ts) == good[0].ts
    assert read.parse_time(s.last_ts) == good[-1].ts


def test_window_and_host_filter_on_100k_records(big):
    paths, truths = big
    good = [t for t in truths if t]
    since, until = good[N // 3].ts, good[N // 2].ts
    window = read.Window(since, until)
    stats = read.ReadStats()
    s = reports.summary(read.iter_records(paths, window, host="compute-2", stats=stats))
    want = [t for t in good if since <= t.ts < until and t.host == "compute-2"]
    assert s.records == stats.matched == len(want) > 1000
    assert s.cells == _cells(want)
    assert stats.records == N


def test_failures_of_100k_records(big):
    paths, truths = big
    f = reports.failures(read.iter_records(paths), limit=50)
    failed = [t for t in truths if t and t.failure]
    assert f.total == len(failed)
    assert f.by_category == collections.Counter(t.failure for t in failed)
    assert set(f.by_category) >= {"action failed", "action aborted", "action backed_off",
                                  "pass error", "rpc_call error", "nova_log_trigger error",
                                  "guard mass_destruction"}
    assert "action interrupted" not in f.by_category
    assert [read.record_time(r) for r in f.latest] == [t.ts for t in failed[-50:]]
    assert [reports.failure_category(r) for r in f.latest] == [t.failure for t in failed[-50:]]


def test_story_of_100k_records(big):
    paths, truths = big
    good = [t for t in truths if t]
    uuid = next(iter(sorted(m for m in good[1000].mentions if not m.startswith("instance-"))))
    stats = read.ReadStats()
    st = reports.story(read.iter_records(paths, contains=uuid, stats=stats), uuid)
    want = [t for t in good if uuid in t.mentions]
    assert len(st.records) == len(want) > 100
    assert [read.record_time(r) for r in st.records] == [t.ts for t in want]
    # the story reaches records that only name it in their evidence
    assert {"finding", "action", "rpc_call", "nova_log_trigger"} <= {
        r["event"] for r in st.records}
    assert stats.skipped > N // 2
    # a resource name, without the parse-skipping shortcut
    name = "instance-00000007"
    st = reports.story(read.iter_records(paths), name)
    assert len(st.records) == sum(name in t.mentions for t in good) > 100


def test_reports_stream_instead_of_loading_the_log(big):
    """Aggregating holds one record at a time: the peak of Python memory allocated
    during a summary of the two plain files (50,000 records, over 20 MB of JSON, far
    more once parsed) stays a small fraction of that."""
    paths, _ = big
    tracemalloc.start()
    try:
        s = reports.summary(read.iter_records(paths[2:]))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert s.records == N // 2
    assert sum(os.path.getsize(p) for p in paths[2:]) > 20_000_000
    assert peak < 3_000_000, peak


def test_cli_reports_on_100k_records(big):
    paths, truths = big
    shuffled = paths[:]
    random.Random(1).shuffle(shuffled)          # a shell glob's order, or worse
    r = manage("audit-log", "summary", *shuffled, "--format", "json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["records"] == N and out["source"]["files"] == paths
    assert out["source"]["malformed"] == sum(t is None for t in truths)
    cells = {(x["host"], x["event"], x["classification"], x["result"]): x["count"]
             for x in out["rows"]}
    assert cells == _cells(truths)
    assert "malformed lines" in r.stderr
    r = manage("audit-log", "failures", *paths, "--host", "compute-1", "--limit", "5")
    assert r.returncode == 3, r.stderr
    n = sum(1 for t in truths if t and t.failure and t.host == "compute-1")
    assert f"latest 5 of {n}:" in r.stdout
    assert "read 4 files, 100000 records" in r.stdout and "compute-2" not in r.stdout


# -- reading -----------------------------------------------------------------------

def test_rotated_siblings_oldest_first(tmp_path):
    for name in ("audit.log", "audit.log.1", "audit.log.2.gz", "audit.log.10.gz",
                 "audit.log-20260101.gz", "audit.log-20260102", "audit.log.bak",
                 "other.log.1", "audit.logx.1"):
        (tmp_path / name).write_text("")
    got = [os.path.basename(p) for p in read.rotated_siblings(str(tmp_path / "audit.log"))]
    assert got == ["audit.log-20260101.gz", "audit.log-20260102", "audit.log.10.gz",
                   "audit.log.2.gz", "audit.log.1", "audit.log"]
    assert read.rotated_siblings(str(tmp_path / "missing" / "audit.log")) == []


def test_order_files_keeps_families_and_drops_duplicates(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    named = [f"{b}/audit.log", f"{a}/audit.log", f"{b}/audit.log.2.gz", f"{a}/audit.log.1",
             f"{b}/audit.log.1", f"{a}/audit.log"]
    assert read.order_files(named) == [f"{b}/audit.log.2.gz", f"{b}/audit.log.1",
                                       f"{b}/audit.log", f"{a}/audit.log.1", f"{a}/audit.log"]


def test_gzip_is_read_by_content_and_truncation_is_reported(tmp_path):
    lines = [rec(f"2026-01-01T00:00:{i:02d}+00:00", resource=f"r{i}") for i in range(50)]
    # compressed without a .gz name (rotated by hand, delaycompress undone...)
    p1 = write_lines(tmp_path / "audit.log.1", lines[:25], compress=True)
    p2 = write_lines(tmp_path / "audit.log.2.gz", lines * 40, compress=True)
    data = open(p2, "rb").read()
    open(p2, "wb").write(data[: len(data) // 2])        # cut mid-stream
    stats = read.ReadStats()
    got = list(read.iter_records(read.rotated_siblings(str(tmp_path / "audit.log")),
                                 stats=stats))
    assert 0 < len(got) - 25 < 2000 and got[-1]["resource"] == "r24"
    assert len(stats.errors) == 1 and "audit.log.2.gz: unreadable after line" in stats.errors[0]
    assert stats.files == [p2, p1]


def test_malformed_and_missing_input_never_raise(tmp_path):
    good = rec("2026-01-01T00:00:00+00:00")
    p = write_lines(tmp_path / "audit.log", [
        good, "", "{not json", "[1]", json.dumps({"ts": "2026-01-01T00:00:00"}),
        json.dumps(dict(good, ts="yesterday")), json.dumps(dict(good, ts=None))])
    with open(p, "ab") as f:
        f.write(b"\xff\xfe not utf-8\n")
        f.write((json.dumps(good) + "\n").encode())
        f.write((json.dumps(dict(good, ts="2026-01-01T01:00:00")) + "\n").encode())  # naive
    stats = read.ReadStats()
    got = list(read.iter_records([str(tmp_path / "nope.log"), p], stats=stats))
    assert len(got) == 3 and stats.records == 3
    assert stats.malformed == 6 and len(stats.examples) == 5
    assert stats.examples[0] == f"{p}:3: not JSON (Expecting property name enclosed in " \
                                "double quotes)"
    assert stats.errors == [f"{tmp_path / 'nope.log'}: cannot read: No such file or directory"]
    assert read.record_time(got[2]) == datetime.datetime(2026, 1, 1, 1, tzinfo=UTC)


def test_parse_time_and_window():
    now = datetime.datetime(2026, 6, 30, 12, 0, tzinfo=UTC)
    assert read.parse_time("90m", now) == now - datetime.timedelta(minutes=90)
    assert read.parse_time("24h", now) == now - datetime.timedelta(hours=24)
    assert read.parse_time("7d", now) == now - datetime.timedelta(days=7)
    assert read.parse_time("1.5h", now) == now - datetime.timedelta(minutes=90)
    assert read.parse_time("2w", now) == now - datetime.timedelta(days=14)
    assert read.parse_time("now", now) == now
    assert read.parse_time("2026-06-01", now) == datetime.datetime(2026, 6, 1, tzinfo=UTC)
    assert read.parse_time("2026-06-01T10:00:00Z", now) == \
        datetime.datetime(2026, 6, 1, 10, tzinfo=UTC)
    assert read.parse_time("2026-06-01T12:00:00+02:00", now) == \
        datetime.datetime(2026, 6, 1, 10, tzinfo=UTC)
    for bad in ("yesterday", "7x", "-3d", ""):
        with pytest.raises(ValueError, match="not a time"):
            read.parse_time(bad, now)
    w = read.Window.parse("2d", "1d", now)
    assert now - datetime.timedelta(hours=36) in w
    assert now - datetime.timedelta(days=1) not in w            # until is exclusive
    assert now - datetime.timedelta(days=2) in w                # since is inclusive
    with pytest.raises(ValueError, match="empty time window"):
        read.Window.parse("1d", "2d", now)


# -- reports -------------------------------------------------------------------------

def test_subject_matches_whole_names():
    p = reports.subject_pattern("6f1d2c3b-0000-4000-8000-000000000001")
    u = "6f1d2c3b-0000-4000-8000-000000000001"
    for text in (u, f"/var/lib/nova/instances/{u}_del", f"instance-00000003:{u}",
                 f"{u}_resize", f"iqn.2010-10.org.openstack:volume-{u}"):
        assert p.search(text), text
    assert not p.search(f"{u}0") and not p.search(f"a{u}") and not p.search(f"{u}-2")
    q = reports.subject_pattern("instance-0000000a")
    assert q.search("instance-0000000a") and q.search("instance-0000000a:vol")
    assert not q.search("instance-0000000ab")
    t = reports.subject_pattern("tap1234abcd-12")
    assert not t.search("tap1234abcd-123") and t.search("qbr tap1234abcd-12 gone")
    assert reports.mentions({"evidence": {"args": [{"instance": "tap1234abcd-12"}]}}, t)
    assert not reports.mentions({"evidence": {"n": 12}}, t)


def test_story_orders_by_time_across_hosts_and_renders():
    u = "11111111-2222-4333-8444-555555555555"
    recs = [
        rec("2026-01-02T00:00:00+00:00", "action", host="h2", instance_uuid=u,
            classification="running_deleted", action="reap", result="failed",
            reason="destroy_domain failed: boom",
            evidence={"steps": [["destroy_domain", "failed: boom"]]}),
        rec("2026-01-01T00:00:00+00:00", "finding", instance_uuid=u, kind="domain",
            resource="instance-00000001", classification="running_deleted", action="reap",
            result="planned", reason="deleted in Nova"),
        rec("2026-01-03T00:00:00+00:00", "rpc_call", result="ok", reason="done",
            method="audit", caller="ctl", args={"instance": u}),
        rec("2026-01-03T00:00:01+00:00", "nova_log_trigger", instance_uuid=u, result="findings",
            evidence={"operation": "detach", "nova_message": "Failed to detach volume v"}),
        rec("2026-01-04T00:00:00+00:00", "finding", instance_uuid="other"),
    ]
    st = reports.story(recs, u)
    assert [r["event"] for r in st.records] == ["finding", "action", "rpc_call",
                                                "nova_log_trigger"]
    text = reports.render(st)
    assert text.startswith(f"{u}: 4 records in 1 passes")
    assert "running_deleted/reap -> failed" in text
    assert "steps: destroy_domain: failed: boom" in text
    assert "method: audit" in text and f'args: {{"instance": "{u}"}}' in text
    assert "nova_message: Failed to detach volume v" in text
    d = json.loads(reports.render(st, "json"))
    assert d["count"] == 4 and d["subject"] == u and d["filters"]["since"] is None
    assert reports.render(reports.story(recs, "nobody")) == "no record mentions nobody"


def test_failures_categories_and_limits():
    recs = [
        rec("2026-01-01T00:00:00+00:00", "action", result="done"),
        rec("2026-01-01T00:00:01+00:00", "action", result="interrupted"),
        rec("2026-01-01T00:00:02+00:00", "action", result="aborted", reason="row restored"),
        rec("2026-01-01T00:00:03+00:00", "guard_tripped", guard="mass_destruction",
            result="blocked", host="h2"),
        rec("2026-01-01T00:00:04+00:00", "pass_summary", result="1", evidence={"errors": 2}),
        rec("2026-01-01T00:00:05+00:00", "pass_summary", result="3", evidence={"errors": 0}),
        rec("2026-01-01T00:00:06+00:00", "rpc_call", result="error", method="reap"),
        rec("2026-01-01T00:00:06+00:00", "rpc_call", result="busy", method="reap"),
        rec("2026-01-01T00:00:07+00:00", "nova_log_trigger", result="clean"),
        rec("2026-01-01T00:00:08+00:00", "finding", result="blocked"),
    ]
    f = reports.failures(recs, limit=2)
    assert f.total == 4
    assert f.by_category == {"action aborted": 1, "guard mass_destruction": 1,
                             "pass error": 1, "rpc_call error": 1}
    assert [r["event"] for r in f.latest] == ["pass_summary", "rpc_call"]
    assert f.by_host == {"h1": 3, "h2": 1}
    text = reports.render(f)
    assert "latest 2 of 4:" in text and "guard mass_destruction" in text
    assert reports.failures(recs, limit=0).latest == []
    assert reports.render(reports.failures(recs[:2])) == "no failures"
    with pytest.raises(ValueError):
        reports.failures(recs, limit=-1)


def test_reports_on_a_real_demo_host(tmp_path):
    """The demo host's audit, reap and audit passes: the summary counts what the
    writer wrote, and the story of the evacuated instance reads like its history."""
    reaper, handles, cast = demo.build(str(tmp_path))
    reaper.run_pass("audit")
    reaper.run_pass("reap")
    reaper.close()
    lines = [json.loads(x) for x in open(handles["audit_log"])]
    stats = read.ReadStats()
    s = reports.summary(read.iter_records([handles["audit_log"]], stats=stats))
    assert stats.malformed == 0 and s.records == len(lines)
    assert s.by_event == collections.Counter(x["event"] for x in lines)
    assert s.cells[(demo.HOST, "action", "evacuated", "done")] == 1
    evac = next(m.uuid for m in cast if m.label == "evacuated")
    st = reports.story(read.iter_records([handles["audit_log"]], contains=evac), evac)
    assert [(r["event"], r["result"]) for r in st.records] == [
        ("finding", "audit_only"), ("finding", "planned"), ("action", "done")]
    assert "steps: destroy_domain: destroyed" in reports.render(st)
    assert reports.failures(read.iter_records([handles["audit_log"]])).total == 0


# -- the CLI ---------------------------------------------------------------------------

def test_cli_default_files_windows_and_errors(tmp_path):
    now = datetime.datetime.now(UTC)
    u = "22222222-3333-4444-8555-666666666666"
    log = tmp_path / "log" / "audit.log"
    log.parent.mkdir()
    write_lines(str(log) + ".2.gz", [rec((now - datetime.timedelta(days=3)).isoformat(),
                                         instance_uuid=u, result="planned")], compress=True)
    write_lines(str(log) + ".1", [rec((now - datetime.timedelta(hours=2)).isoformat(),
                                      "action", instance_uuid=u, classification="orphan_dir",
                                      action="reap", result="failed")])
    write_lines(log, [rec((now - datetime.timedelta(minutes=5)).isoformat(), "pass_summary",
                          result="0"), "garbage"])
    conf = tmp_path / "reaper.conf"
    conf.write_text(f"[reaper]\naudit_log = {log}\n")
    r = manage("audit-log", "summary", "--format", "json", conf=conf)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["records"] == 3 and out["source"]["malformed"] == 1
    assert out["source"]["files"] == [str(log) + ".2.gz", str(log) + ".1", str(log)]
    r = manage("audit-log", "story", u, "--since", "24h", conf=conf)
    assert r.returncode == 0, r.stderr
    assert f"{u}: 1 records in 1 passes" in r.stdout
    assert "orphan_dir/reap -> failed" in r.stdout
    r = manage("audit-log", "failures", "--until", "1h", conf=conf)
    assert r.returncode == 3 and "action failed" in r.stdout
    r = manage("audit-log", "failures", "--since", "1h", conf=conf)
    assert r.returncode == 0 and "no failures" in r.stdout
    r = manage("audit-log", "summary", "-", stdin=json.dumps(rec(now.isoformat())) + "\n")
    assert r.returncode == 0 and "1 records from" in r.stdout
    # errors: one clear line each, no traceback
    for args, msg in (
            (("summary", "--since", "last tuesday"), "not a time: 'last tuesday'"),
            (("summary", str(tmp_path / "nope")), "no such file")):
        r = manage("audit-log", *args, conf=conf)
        assert r.returncode == 1 and msg in r.stderr and "Traceback" not in r.stderr, args
    conf.write_text(f"[reaper]\naudit_log = {tmp_path / 'none' / 'audit.log'}\n")
    r = manage("audit-log", "summary", conf=conf)
    assert r.returncode == 1 and "no audit log at" in r.stderr


def test_cli_help_lists_the_new_commands():
    r = manage("--help")
    assert r.returncode == 0 and "audit-log" in r.stdout and "watch-nova-log" in r.stdout
    r = manage("audit-log", "--help")
    assert r.returncode == 0
    for report in ("summary", "story", "failures"):
        assert report in r.stdout
