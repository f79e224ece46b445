"""The documentation builds with warnings as errors (what `tox -e docs` runs): the
HTML pages, the man pages of the three commands, the configuration reference
generated from the options, and the release notes (reno lint, then their build)."""
from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from tests.conftest import under_ci

REPO = pathlib.Path(__file__).resolve().parents[2]


def need(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        if under_ci():
            pytest.fail(f"{module} missing (setup.cfg's test extra installs it)")
        pytest.skip(f"{module} missing")


def build(source: pathlib.Path, builder: str, out: pathlib.Path) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q",
                        "-b", builder, str(source), str(out)],
                       capture_output=True, text=True, timeout=600, cwd=REPO,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r


@pytest.fixture(scope="module")
def html(tmp_path_factory) -> pathlib.Path:
    need("sphinx")
    need("myst_parser")
    out = tmp_path_factory.mktemp("html")
    build(REPO / "doc", "html", out)
    return out


def test_html_pages(html):
    for page in ("index", "design", "install", "operations", "monitoring",
                 "configuration", "fault-matrix", "man/reaper-agent", "man/reaper-manage",
                 "man/reaper-ctl"):
        assert (html / f"{page}.html").is_file(), page
    index = (html / "index.html").read_text()
    assert 'href="fault-matrix.html"' in index and 'href="design.html"' in index


def test_configuration_reference_lists_every_option(html):
    from reaper.conf import opts
    page = (html / "configuration.html").read_text()
    for group, options in opts.list_opts():
        for opt in options:
            assert opt.dest in page or opt.name in page, f"[{group}] {opt.name}"


def test_design_page_has_the_rule_table_and_the_teardown_order(html):
    page = (html / "design.html").read_text()
    for rule in [f"R{i}" for i in range(1, 14)]:
        assert f"<td><p>{rule}</p></td>" in page or f"<td>{rule}</td>" in page, rule
    for heading in ("Teardown order", "Guards", "What the reaper never touches"):
        assert heading in page


def test_man_pages(tmp_path):
    need("sphinx")
    need("myst_parser")
    build(REPO / "doc", "man", tmp_path)
    for cmd in ("reaper-agent", "reaper-manage", "reaper-ctl"):
        text = (tmp_path / f"{cmd}.8").read_text()
        assert text.startswith(".\\\" Man page generated from reStructuredText") or ".TH" in text
        assert f'.TH "{cmd.upper()}" "8"' in text, cmd


def test_release_notes(tmp_path):
    need("reno")
    r = subprocess.run([sys.executable, "-m", "reno.main", "lint"], capture_output=True,
                       text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
    build(REPO / "releasenotes/source", "html", tmp_path)
    page = (tmp_path / "index.html").read_text()
    assert "New Features" in page and "Upgrade Notes" in page
