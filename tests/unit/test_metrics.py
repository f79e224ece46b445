"""The Prometheus textfile after real passes on the demo host, parsed with
prometheus_client's own parser (the text format node_exporter reads)."""
from __future__ import annotations

import os

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
        assert not [f for f in os.listdir(tmp_path) if f.startswith("reaper.prom.")]
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
