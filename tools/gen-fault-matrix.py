#!/usr/bin/env python3
"""Generate doc/fault-matrix.md from the fault-matrix scenarios.

Reads (with ast, importing nothing) every ``tests/functional/faultmatrix/test_fm_*.py``.
A scenario is a test function (or a method of a ``Test*`` class) whose docstring is

    <One sentence: the situation / the fault.>

    Expect: <the expected end state: what stays, what goes, exit code.>

One row per parameter set that has an id (``pytest.param(..., id="...")`` or
``ids=[...]`` in its ``pytest.mark.parametrize``; several such decorators combine
as pytest combines them); a test without ids is one row. Decorators whose
parameters have no ids at all (an indirect fixture's variants, say) add no rows.
Parameters written as literals (or module-level names bound to literals) are read
from the source; only a test whose parameters are computed (a comprehension...) has
its module imported to read them from its parametrize marks.

    python tools/gen-fault-matrix.py            # write doc/fault-matrix.md
    python tools/gen-fault-matrix.py --check    # exit 1 if it is out of date

Exit 2 when a scenario does not follow the docstring convention (listed on stderr).
tests/unit/test_fault_matrix_doc.py runs the same checks.
"""
from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib.util
import inspect
import itertools
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCENARIOS = ROOT / "tests" / "functional" / "faultmatrix"
DOC = ROOT / "doc" / "fault-matrix.md"
PATTERN = "test_fm_*.py"


@dataclasses.dataclass(frozen=True)
class Row:
    module: str             # file name
    test: str               # function name (Class::function for methods)
    param_id: str | None
    situation: str
    expect: str

    @property
    def scenario(self) -> str:
        name = self.test.split("::")[-1].removeprefix("test_")
        return f"{name}[{self.param_id}]" if self.param_id else name


class ConventionError(Exception):
    pass


class _Computed(Exception):
    """Parameters that only exist at run time: read them from the imported module."""


def _squash(text: str) -> str:
    return " ".join(text.split())


def parse_docstring(doc: str | None, where: str) -> tuple[str, str]:
    """(situation, expect) from a scenario docstring."""
    if not doc:
        raise ConventionError(f"{where}: no docstring")
    paras = [p for p in re.split(r"\n\s*\n", inspect.cleandoc(doc)) if p.strip()]
    at = next((i for i, p in enumerate(paras) if p.lstrip().startswith("Expect:")), None)
    if at is None:
        raise ConventionError(f"{where}: no 'Expect:' paragraph in its docstring")
    if at == 0:
        raise ConventionError(f"{where}: the docstring starts with 'Expect:', not the situation")
    situation = _squash(" ".join(paras[:at]))
    expect = _squash(" ".join(paras[at:]).lstrip()[len("Expect:"):])
    if not expect:
        raise ConventionError(f"{where}: 'Expect:' is empty")
    return situation, expect


def _is_parametrize(dec: ast.expr) -> bool:
    return (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute)
            and dec.func.attr == "parametrize")


def _is_param(node: ast.expr) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr == "param")


def _const_str(node: ast.expr | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


class _Module:
    """Module-level names bound to literals (parameter lists kept in a constant)."""

    def __init__(self, tree: ast.Module):
        self.names: dict[str, ast.expr] = {}
        for node in tree.body:
            if isinstance(node, ast.Assign):
                for t in node.targets:
                    if isinstance(t, ast.Name):
                        self.names[t.id] = node.value
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) \
                    and node.value is not None:
                self.names[node.target.id] = node.value

    def elements(self, node: ast.expr, where: str) -> list[ast.expr]:
        """The entries of a parametrize argvalues expression."""
        if isinstance(node, ast.Name) and node.id in self.names:
            return self.elements(self.names[node.id], where)
        if isinstance(node, (ast.List, ast.Tuple)):
            return list(node.elts)
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
            return self.elements(node.left, where) + self.elements(node.right, where)
        raise _Computed(where)


def _auto_id(entry: ast.expr, argnames: list[str], index: int) -> str:
    """pytest's id for a parameter set without one (constants as themselves)."""
    values = entry.args if _is_param(entry) else (
        entry.elts if len(argnames) > 1 and isinstance(entry, (ast.Tuple, ast.List))
        else [entry])
    parts = []
    for name, v in zip(argnames, values, strict=False):
        if isinstance(v, ast.Constant) and (v.value is None
                                            or isinstance(v.value, (str, int, float, bool))):
            parts.append(str(v.value))
        else:
            parts.append(f"{name}{index}")
    return "-".join(parts)


def _decorator_ids(dec: ast.Call, mod: _Module, where: str) -> list[str] | None:
    """The ids of one parametrize decorator; None when it names none at all."""
    kw = {k.arg: k.value for k in dec.keywords}
    names_node = dec.args[0] if dec.args else kw.get("argnames")
    values_node = dec.args[1] if len(dec.args) > 1 else kw.get("argvalues")
    if names_node is None or values_node is None:
        raise ConventionError(f"{where}: cannot read its parametrize decorator")
    names = _const_str(names_node)
    argnames = ([n.strip() for n in names.split(",") if n.strip()] if names is not None
                else [_const_str(e) or "arg" for e in getattr(names_node, "elts", [])])
    entries = mod.elements(values_node, where)
    given = [None] * len(entries)
    if "ids" in kw:
        ids = mod.elements(kw["ids"], where)
        given = [_const_str(i) for i in ids] + [None] * (len(entries) - len(ids))
    for i, e in enumerate(entries):
        if _is_param(e):
            pid = _const_str(next((k.value for k in e.keywords if k.arg == "id"), None))
            if pid is not None:
                given[i] = pid
    if not any(given):
        return None
    return [g if g is not None else _auto_id(e, argnames, i)
            for i, (g, e) in enumerate(zip(given, entries, strict=False))]


def _runtime_id(name_of, argname: str, value, index: int) -> str:
    named = name_of(value)
    if named is not None:
        return str(named)
    if value is None or isinstance(value, (str, int, float, bool)):
        return str(value)
    return f"{argname}{index}"


def _runtime_dims(path: pathlib.Path, name: str, where: str) -> list[list[str]]:
    """The ids of a test's parametrize marks, from its imported module."""
    try:
        spec = importlib.util.spec_from_file_location(
            f"_fault_matrix_{path.stem}", path)
        mod = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = mod
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        spec.loader.exec_module(mod)
        obj = mod
        for part in name.split("::"):
            obj = getattr(obj, part)
    except Exception as e:  # noqa: BLE001 - reported as the scenario's problem
        raise ConventionError(f"{where}: its parameters are computed and importing "
                              f"{path.name} to read them failed: {e}") from None
    dims = []
    # pytestmark lists marks in the order they were applied: bottom decorator first.
    for mark in getattr(obj, "pytestmark", []):
        if mark.name != "parametrize":
            continue
        argnames = mark.args[0] if mark.args else mark.kwargs["argnames"]
        values = list(mark.args[1] if len(mark.args) > 1 else mark.kwargs["argvalues"])
        if isinstance(argnames, str):
            argnames = [n.strip() for n in argnames.split(",") if n.strip()]
        ids = mark.kwargs.get("ids")
        name_of = ids if callable(ids) else (lambda _v: None)
        given = [i if isinstance(i, str) else None for i in (
            [] if callable(ids) or ids is None else list(ids))]
        given += [None] * (len(values) - len(given))
        for i, v in enumerate(values):
            if getattr(v, "id", None) is not None and hasattr(v, "values"):
                given[i] = v.id
        if not (any(given) or callable(ids)):
            continue
        for i, v in enumerate(values):
            if given[i] is None:
                vals = v.values if hasattr(v, "values") else (
                    v if len(argnames) > 1 else (v,))
                given[i] = "-".join(_runtime_id(name_of, n, x, i)
                                    for n, x in zip(argnames, vals, strict=False))
        dims.append(given)
    return dims


def _tests(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                and node.name.startswith("test"):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)) \
                        and sub.name.startswith("test"):
                    yield f"{node.name}::{sub.name}", sub


def scenarios_of(path: pathlib.Path) -> tuple[list[Row], list[str]]:
    """The rows of one module, and the convention errors found in it."""
    tree = ast.parse(path.read_text(), filename=str(path))
    mod = _Module(tree)
    rows, errors = [], []
    for name, fn in _tests(tree):
        where = f"{path.name}::{name}"
        try:
            situation, expect = parse_docstring(ast.get_docstring(fn, clean=False), where)
            # Decorators apply bottom-up; pytest joins ids in that order and varies
            # the last-applied (topmost) one fastest.
            try:
                dims = [ids for dec in reversed(fn.decorator_list) if _is_parametrize(dec)
                        for ids in [_decorator_ids(dec, mod, where)] if ids is not None]
            except _Computed:
                dims = _runtime_dims(path, name, where)
        except ConventionError as e:
            errors.append(str(e))
            continue
        combos = ["-".join(c) for c in itertools.product(*dims)] if dims else [None]
        rows += [Row(path.name, name, c, situation, expect) for c in combos]
    return rows, errors


def collect(directory: pathlib.Path = SCENARIOS) -> tuple[list[Row], list[str]]:
    rows, errors = [], []
    for path in sorted(directory.glob(PATTERN)):
        r, e = scenarios_of(path)
        rows += r
        errors += e
    return rows, errors


def _cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|")


def render(rows: list[Row]) -> str:
    modules = sorted({r.module for r in rows})
    per_module = ", ".join(f"{m} {sum(r.module == m for r in rows)}" for m in modules)
    out = [
        "# Fault matrix",
        "",
        "<!-- Generated by tools/gen-fault-matrix.py from the scenarios' docstrings: "
        "do not edit. -->",
        "",
        "What is proven, on real parts (libvirtd with KVM guests, real directories, network "
        "devices and Open vSwitch ports, the iSCSI simulator, SQLite and MariaDB), by the "
        "tests in `tests/functional/faultmatrix/`: each row is one scenario, its situation "
        "or fault, and the end state the test checks. A scenario runs with "
        "`pytest tests/functional/faultmatrix/<module> -k '<scenario id>'`.",
        "",
        f"{len(rows)} scenarios ({per_module}).",
        "",
        "| Scenario | Situation | Expected end state | Module |",
        "|---|---|---|---|",
    ]
    prev = None
    for r in rows:
        same = prev is not None and (prev.module, prev.test) == (r.module, r.test)
        situation, expect = ("as above", "as above") if same else (r.situation, r.expect)
        out.append(f"| `{_cell(r.scenario)}` | {_cell(situation)} | {_cell(expect)} "
                   f"| {_cell(r.module)} |")
        prev = r
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true",
                   help="do not write; exit 1 if doc/fault-matrix.md is out of date")
    p.add_argument("--output", type=pathlib.Path, default=DOC)
    args = p.parse_args(argv)
    rows, errors = collect()
    if errors:
        print("fault-matrix scenarios that break the docstring convention:\n  "
              + "\n  ".join(errors), file=sys.stderr)
        return 2
    text = render(rows)
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date: run tools/gen-fault-matrix.py",
                  file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}: {len(rows)} scenarios")
    return 0


if __name__ == "__main__":
    sys.exit(main())
