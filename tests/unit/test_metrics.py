"""The Prometheus textfile after real passes on the demo host, parsed with
prometheus_client's own parser (the text format node_exporter reads)."""
from __future__ import annotations

import os
import stat
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

from reaper import demo, metrics
from reaper.agent import service


def samples(path) -> dict[tuple, float]:
    out = {}
    with open(path) as f:
        for fam in text_string_to_metric_families(f.read()):
            for s in fam.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_follow_the_passes(tmp_path):
    reaper, handles, cast = demo.build(str(tmp_path / "host"))
    path = str(tmp_path / "reaper.prom")
    m = metrics.Metrics(path, backlog=reaper.state.backlog,
                        paused=lambda: reaper.state.get_flag("paused") is not None)
    reaper.audit.subscribe(m)
    agent = service.Agent(reaper)
    try:
        audit = agent.run_pass("audit")
        s = samples(path)
        assert s[("reaper_passes_total", (("exit_code", "3"), ("mode", "audit")))] == 1
        by_cls = audit.summary["by_classification"]
        for cls, n in by_cls.items():
            assert s[("reaper_last_pass_findings",
                      (("classification", cls), ("mode", "audit")))] == n
        assert s[("reaper_last_pass_exit_code", (("mode", "audit"),))] == 3
        assert s[("reaper_last_pass_db_queries", (("mode", "audit"),))] == audit.db_queries
        assert s[("reaper_last_pass_duration_seconds", (("mode", "audit"),))] >= 0
        assert s[("reaper_paused", ())] == 0 and s[("reaper_journal_backlog", ())] == 0

        reap = agent.run_pass("reap")
        s = samples(path)
        done = {}
        for a in reap.actions:
            done[a["classification"]] = done.get(a["classification"], 0) + 1
        for cls, n in done.items():
            act = "reclaim" if cls == "reclaimable" else "reap"
            assert s[("reaper_actions_total", (("action", act), ("classification", cls),
                                               ("result", "done")))] == n
        assert s[("reaper_passes_total", (("exit_code", "4"), ("mode", "reap")))] == 1

        agent.pause("maintenance")
        assert samples(path)[("reaper_paused", ())] == 1
        after = agent.run_pass("audit")
        s = samples(path)
        assert s[("reaper_passes_total", (("exit_code", str(after.exit_code)),
                                          ("mode", "audit")))] >= 1
        # classifications gone since the first audit read 0, not their old count
        gone = set(by_cls) - set(after.summary["by_classification"])
        assert gone and all(s[("reaper_last_pass_findings",
                               (("classification", c), ("mode", "audit")))] == 0 for c in gone)
        assert sorted(f for f in os.listdir(tmp_path) if "reaper.prom" in f) == ["reaper.prom"]
    finally:
        reaper.close()


def test_an_unwritable_metrics_file_never_fails_a_pass(tmp_path):
    reaper, _, _ = demo.build(str(tmp_path / "host"))
    m = metrics.Metrics(str(tmp_path / "no-such-dir" / "reaper.prom"))
    reaper.audit.subscribe(m)
    try:
        assert reaper.run_pass("audit").exit_code == 3
    finally:
        reaper.close()


def test_the_textfile_never_follows_a_planted_symlink(tmp_path):
    """prometheus_client's write_to_textfile writes to ``<path>.<pid>.<thread id>``:
    a local user who plants a symlink there makes root overwrite the link's target.
    The metrics go through an unpredictable mkstemp file instead."""
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    path = tmp_path / "reaper.prom"
    planted = [tmp_path / f"reaper.prom.{os.getpid()}.{t.ident}"
               for t in threading.enumerate()]
    for link in planted:
        link.symlink_to(victim)
    m = metrics.Metrics(str(path))
    m.write()
    m.write()
    assert victim.read_text() == "precious\n"
    st = os.lstat(path)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644
    assert "reaper_paused 0.0" in path.read_text()
    assert all(os.readlink(link) == str(victim) for link in planted)
    leftovers = {p.name for p in tmp_path.iterdir()} - {"victim", "reaper.prom"}
    assert leftovers == {link.name for link in planted}


def test_a_symlink_at_the_target_is_replaced_not_followed(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    path = tmp_path / "reaper.prom"
    path.symlink_to(victim)
    metrics.write_textfile(str(path), b"x 1\n")
    assert victim.read_text() == "precious\n"
    assert not path.is_symlink() and path.read_text() == "x 1\n"


def test_the_textfile_is_0644_whatever_the_umask_and_a_failed_write_leaves_nothing(tmp_path):
    old = os.umask(0o077)
    try:
        metrics.write_textfile(str(tmp_path / "a.prom"), b"x 1\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a.prom").st_mode) == 0o644
    with pytest.raises(TypeError):
        metrics.write_textfile(str(tmp_path / "b.prom"), "not bytes")   # type: ignore[arg-type]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.prom"]
