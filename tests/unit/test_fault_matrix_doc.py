"""doc/fault-matrix.md is generated from the fault-matrix scenarios and must not drift
from them (tools/gen-fault-matrix.py)."""
from __future__ import annotations

import importlib.util
import pathlib
import subprocess
import sys
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _load():
    spec = importlib.util.spec_from_file_location(
        "gen_fault_matrix", ROOT / "tools" / "gen-fault-matrix.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod            # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


gen = _load()


def test_every_scenario_follows_the_docstring_convention():
    rows, errors = gen.collect()
    assert errors == [], "\n".join(errors)
    assert len(rows) >= 40          # issue 9 asks for at least 40 named scenarios
    dup = {r.scenario for r in rows if sum(x.scenario == r.scenario
                                           and x.module == r.module for x in rows) > 1}
    assert not dup, f"scenario ids used twice: {sorted(dup)}"


def test_the_doc_is_up_to_date():
    rows, _ = gen.collect()
    current = gen.DOC.read_text() if gen.DOC.exists() else ""
    assert current == gen.render(rows), (
        "doc/fault-matrix.md is out of date with tests/functional/faultmatrix/test_fm_*.py: "
        "run python tools/gen-fault-matrix.py and commit the result")


SAMPLE = '''
import pytest

DBS = [pytest.param("sqlite", id="sqlite"), pytest.param("mariadb", id="mariadb")]
MORE = DBS + [pytest.param("pg", id="pg")]


def helper():
    """Not a scenario."""


def test_plain():
    """A thing happens | with a pipe.

    Expect: it ends well,
    exit 4.
    """


@pytest.mark.parametrize("db", DBS)
@pytest.mark.parametrize("when", [pytest.param("a", id="early"), pytest.param("b", id="late")])
def test_stacked(db, when):
    """Two dimensions.

    Expect: four rows, in pytest's order.
    """


@pytest.mark.parametrize("db", ["sqlite"])
@pytest.mark.parametrize("x", ["one", "two"], ids=["first", "second"])
def test_ids_keyword_and_an_unnamed_dimension(x, db):
    """Ids given with ids=.

    Expect: two rows; the unnamed dimension adds none.
    """


@pytest.mark.parametrize(argnames="k", argvalues=MORE)
def test_names_and_sums(k):
    """Parameters kept in module constants.

    Expect: three rows.
    """


KINDS = ["evacuated", "orphan_dir"]


@pytest.mark.parametrize("kind,step", [pytest.param(k, "x", id=f"{k}-x") for k in KINDS])
@pytest.mark.parametrize("n", [1, 2], ids=lambda n: f"n{n}")
def test_computed(kind, step, n):
    """Parameters made by a comprehension.

    Expect: read from the imported module.
    """


class TestGroup:
    def test_method(self):
        """In a class.

        Expect: one row.
        """
'''


def test_parsing_ids_as_pytest_names_them(tmp_path):
    (tmp_path / "test_fm_sample.py").write_text(SAMPLE)
    rows, errors = gen.collect(tmp_path)
    assert errors == []
    assert [r.scenario for r in rows] == [
        "plain", "stacked[early-sqlite]", "stacked[early-mariadb]", "stacked[late-sqlite]",
        "stacked[late-mariadb]", "ids_keyword_and_an_unnamed_dimension[first]",
        "ids_keyword_and_an_unnamed_dimension[second]", "names_and_sums[sqlite]",
        "names_and_sums[mariadb]", "names_and_sums[pg]", "computed[n1-evacuated-x]",
        "computed[n1-orphan_dir-x]", "computed[n2-evacuated-x]", "computed[n2-orphan_dir-x]",
        "method"]
    assert (rows[0].situation, rows[0].expect) == ("A thing happens | with a pipe.",
                                                   "it ends well, exit 4.")
    doc = gen.render(rows)
    assert "15 scenarios (test_fm_sample.py 15)." in doc
    assert "| `plain` | A thing happens \\| with a pipe. | it ends well, exit 4. " \
           "| test_fm_sample.py |" in doc
    assert "| `stacked[early-mariadb]` | as above | as above |" in doc


def test_the_ids_are_the_ones_pytest_collects(tmp_path):
    """Where every parametrize names its parameters, the rows are pytest's own items."""
    (tmp_path / "test_fm_sample.py").write_text(SAMPLE)
    rows, _ = gen.collect(tmp_path)
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q",
                        "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                        str(tmp_path / "test_fm_sample.py")],
                       capture_output=True, text=True, cwd=tmp_path, timeout=120)
    items = [line.split("::", 1)[1] for line in r.stdout.splitlines() if "::" in line]
    assert items, r.stdout + r.stderr
    unnamed = "ids_keyword_and_an_unnamed_dimension"     # its db dimension has no id
    ours = [r.scenario for r in rows if unnamed not in r.test]
    theirs = [i.split("::")[-1].replace("test_", "", 1) for i in items if unnamed not in i]
    assert ours == theirs


@pytest.mark.parametrize("body,why", [
    ("pass", "no docstring"),
    ('"""Only a situation."""', "no 'Expect:'"),
    ('"""Expect: first."""', "starts with 'Expect:'"),
])
def test_a_scenario_that_breaks_the_convention_is_reported(tmp_path, body, why):
    (tmp_path / "test_fm_bad.py").write_text(textwrap.dedent(f"""
        def test_bad():
            {body}
        """))
    rows, errors = gen.collect(tmp_path)
    assert rows == [] and len(errors) == 1 and why in errors[0]
    assert "test_fm_bad.py::test_bad" in errors[0]
