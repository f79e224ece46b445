"""tools/floor-constraints.txt pins exactly the floors setup.cfg declares, so the
floor run (tools/test-floor.sh, tox -e floor) tests what the package promises."""
from __future__ import annotations

import configparser
import pathlib

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = pathlib.Path(__file__).resolve().parents[2]


def declared() -> dict[str, Version]:
    cp = configparser.ConfigParser()
    cp.read(REPO / "setup.cfg")
    out = {}
    for line in cp["options"]["install_requires"].strip().splitlines():
        req = Requirement(line.split("#", 1)[0].strip())
        [spec] = list(req.specifier)
        assert spec.operator == ">=", f"{line}: a floor is declared with >="
        out[canonicalize_name(req.name)] = Version(spec.version)
    return out


def pinned() -> dict[str, Version]:
    out = {}
    for line in (REPO / "tools/floor-constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            [spec] = list(req.specifier)
            assert spec.operator == "==", line
            out[canonicalize_name(req.name)] = Version(spec.version)
    return out


def test_every_floor_is_pinned_and_nothing_else():
    assert pinned() == declared()
