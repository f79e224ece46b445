"""monitoring/: the Prometheus alert rules (promtool check rules, and promtool test
rules with their own test file) and the Grafana dashboard (lint: well-formed
panels on a 24-column grid, every query parses as PromQL, by promtool); both name
only metrics and labels that a real reaper-agent textfile carries (demo passes,
an RPC call, a nova-log trigger and a guard trip through reaper.metrics), and
that textfile passes promtool check metrics."""
from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from reaper import demo, metrics
from reaper.agent import service
from tests.conftest import under_ci

MON = pathlib.Path(__file__).resolve().parents[2] / "monitoring"
RULES = MON / "reaper-alerts.yml"
DASHBOARD = MON / "reaper-dashboard.json"
# what node_exporter's scrape adds to every textfile series
SCRAPE_LABELS = {"instance", "job"}
# Grafana's variables, replaced by a value of their kind for promtool
GRAFANA_VARS = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h",
                "$instance": ".*"}
_SELECTOR = re.compile(r"\b(reaper_[a-z_]+)\b(?:\{([^}]*)\})?")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_MATCHER = re.compile(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)")
_IN_TEMPLATE = re.compile(r"\{\{[^}]*\}\}")


def promtool(*args, cwd=None) -> subprocess.CompletedProcess:
    if shutil.which("promtool") is None:
        if under_ci():
            pytest.fail("promtool missing (tools/install-deps.sh installs prometheus)")
        pytest.skip("promtool missing")
    return subprocess.run(["promtool", *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_alert_rules_check():
    r = promtool("check", "rules", RULES)
    assert r.returncode == 0, r.stdout + r.stderr


def test_alert_rules_unit_tests():
    r = promtool("test", "rules", "reaper-alerts.test.yml", cwd=MON)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_the_five_alerts_asked_for_are_there():
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    names = {r["alert"] for r in rules}
    assert {"ReaperNoPass", "ReaperGuardTripped", "ReaperHostPausedLong",
            "ReaperJournalBacklog", "ReaperActionsFailed"} <= names
    assert all(r["annotations"]["summary"] and r["labels"]["severity"] for r in rules)


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def panel_exprs(dash: dict) -> list[tuple[str, str]]:
    out = []
    for p in dash["panels"]:
        for t in p.get("targets", ()):
            out.append((p["title"], t["expr"]))
    return out


def for_promtool(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr}"
    return expr


def test_dashboard_is_well_formed():
    dash = dashboard()
    assert dash["title"] and dash["uid"] and dash["schemaVersion"] >= 36
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    cells = set()
    for p in dash["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24, p["title"]
        here = {(x, y) for x in range(g["x"], g["x"] + g["w"])
                for y in range(g["y"], g["y"] + g["h"])}
        assert not (cells & here), f"{p['title']} overlaps another panel"
        cells |= here
        if p["type"] == "row":
            continue
        assert p["title"] and p.get("description") and p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}" and t["refId"], p["title"]
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "instance"} <= names


def test_every_dashboard_query_parses_as_promql(tmp_path):
    exprs = panel_exprs(dashboard())
    assert len(exprs) >= 12
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:panel_{i}", "expr": for_promtool(e)}
        for i, (_, e) in enumerate(exprs)]}]}
    f = tmp_path / "dashboard-queries.yml"
    f.write_text(yaml.safe_dump(rules))
    r = promtool("check", "rules", f)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.fixture(scope="module")
def textfile(tmp_path_factory) -> str:
    """The textfile of a real agent on the demo host: audit and reap passes, a pause,
    and one record of each other event the metrics count."""
    tmp = tmp_path_factory.mktemp("metrics")
    reaper, handles, cast = demo.build(str(tmp / "host"))
    path = str(tmp / "reaper.prom")
    m = metrics.Metrics(path, backlog=reaper.state.backlog,
                        paused=lambda: reaper.state.get_flag("paused") is not None)
    reaper.audit.subscribe(m)
    agent = service.Agent(reaper)
    try:
        agent.run_pass("audit")
        agent.run_pass("reap")
        agent.run_pass("reclaim")
        reaper.audit.record("rpc_call", "-", method="status", result="ok")
        reaper.audit.record("nova_log_trigger", "-", result="clean")
        reaper.audit.record("guard_tripped", "-", guard="mass_destruction", result="blocked")
        agent.pause("test")
        agent.run_pass("audit")
    finally:
        reaper.close()
    return pathlib.Path(path).read_text()


def families(text: str) -> dict[str, set[str]]:
    """{sample name: its label names}."""
    out: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


def test_textfile_passes_promtool_check_metrics(textfile):
    r = subprocess.run(["promtool", "check", "metrics"], input=textfile, capture_output=True,
                       text=True, timeout=60) if shutil.which("promtool") else None
    if r is None:
        promtool("--version")       # skips, or fails under CI
    assert r.returncode == 0, r.stdout + r.stderr


def used(expr: str) -> tuple[set[str], set[str]]:
    """Metric names and label names (matchers and grouping) an expression uses."""
    expr = _IN_TEMPLATE.sub("", expr)
    names, labels = set(), set()
    for name, matchers in _SELECTOR.findall(expr):
        names.add(name)
        labels.update(_MATCHER.findall(matchers or ""))
    for group in _GROUPING.findall(expr):
        labels.update(x.strip() for x in group.split(",") if x.strip())
    return names, labels


@pytest.mark.parametrize("source", ["dashboard", "alerts"])
def test_queries_name_only_metrics_and_labels_the_agent_writes(textfile, source):
    fams = families(textfile)
    if source == "dashboard":
        exprs = [e for _, e in panel_exprs(dashboard())]
        exprs += [v["definition"] for v in dashboard()["templating"]["list"]
                  if v.get("definition")]
    else:
        exprs = [r["expr"] for r in yaml.safe_load(RULES.read_text())["groups"][0]["rules"]]
    seen = set()
    for expr in exprs:
        names, labels = used(expr)
        assert names, expr
        unknown = names - set(fams)
        assert not unknown, f"{sorted(unknown)} not in the textfile ({expr})"
        allowed = set().union(*(fams[n] for n in names)) | SCRAPE_LABELS
        assert labels <= allowed, f"{sorted(labels - allowed)} unknown labels in {expr}"
        seen |= names
    if source == "dashboard":   # every metric the agent writes is on the dashboard
        written = {n for n in fams if not n.endswith("_created")}
        assert written <= seen, sorted(written - seen)
