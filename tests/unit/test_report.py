"""Exit codes (after nova-manage placement audit) and renderings of the pass report."""
from __future__ import annotations

import json

import pytest

from reaper.report import PassReport


def rep(findings=(), guards=(), actions=(), errors=()):
    r = PassReport(host="h", pass_id="p", mode="reap", dry_run=False, started_at="t")
    r.findings = [dict(kind="domain", resource="instance-1", instance_uuid="u",
                       classification=c, action=a, result="logged", reason="why")
                  for c, a in findings]
    r.guards = [dict(guard=g, reason="r") for g in guards]
    r.actions = [dict(result=x, classification="evacuated", instance_uuid="u", reason="r",
                      steps=[("destroy_domain", "destroyed")]) for x in actions]
    r.errors = list(errors)
    return r


@pytest.mark.parametrize("kw,code", [
    ({}, 0),
    ({"findings": [("in_flight", "none")]}, 0),
    ({"findings": [("foreign", "log")]}, 3),
    ({"findings": [("evacuated", "reap")], "actions": ["done"]}, 4),
    ({"findings": [("evacuated", "reap")], "actions": ["aborted"]}, 3),
    ({"findings": [("evacuated", "reap")], "guards": ["mass_destruction"]}, 5),
    ({"guards": ["host_identity"]}, 5),
    ({"guards": ["view_unavailable"]}, 1),
    ({"guards": ["collector_failed"]}, 1),
    ({"actions": ["done", "failed"]}, 1),
    ({"errors": ["boom"]}, 1),
])
def test_exit_codes(kw, code):
    assert rep(**kw).exit_code == code


def test_json_and_table_render():
    r = rep(findings=[("evacuated", "reap")], actions=["done"])
    d = json.loads(r.to_json())
    assert d["host"] == "h" and d["pass_id"] == "p" and d["summary"]["exit_code"] == 4
    assert d["findings"][0]["classification"] == "evacuated"
    table = r.to_table()
    assert "CLASSIFICATION" in table and "evacuated" in table and "DONE" in table


def test_summary_line_reads_as_words():
    r = rep(findings=[("evacuated", "reap"), ("orphan_dir", "reap")], actions=["done", "done"])
    assert r.to_table().splitlines()[-1] == ("summary: 2 findings, actions: done 2, guards: "
                                             "none, exit 4")
    r = rep(findings=[("evacuated", "reap")], guards=["view_unavailable", "collector_failed"])
    assert r.to_table().splitlines()[-1] == ("summary: 1 findings, actions: none, guards: "
                                             "view_unavailable, collector_failed, exit 1")
    assert json.loads(r.to_json())["summary"]["guards_tripped"] == ["view_unavailable",
                                                                    "collector_failed"]
