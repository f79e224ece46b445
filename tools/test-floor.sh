#!/usr/bin/env bash
# The unit suite on the declared minimum versions of the runtime dependencies
# (tools/floor-constraints.txt, kept equal to setup.cfg's floors by
# tests/unit/test_floor_constraints.py), in a second virtualenv, .venv-floor.
# The venv is rebuilt only when setup.cfg or the constraints change (a stamp, as
# tools/install-deps.sh does); pip's cache is shared with .venv's.
# tools/run-tests.sh calls it when REAPER_TEST_FLOOR=1; `tox -e floor` does the
# same through tox.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=.venv-floor
CONSTRAINTS=tools/floor-constraints.txt

start=$SECONDS
# The extras the unit suite needs: test, and journal (tests/unit/test_logsetup.py
# runs the journal handler for real; under CI a missing binding is an error).
EXTRAS=test,journal
want=$( (cat setup.cfg pyproject.toml "$CONSTRAINTS"; echo "$EXTRAS") | sha256sum | cut -d' ' -f1)
stamp=$VENV/.reaper-floor
if [[ $(cat "$stamp" 2>/dev/null) != "$want" ]]; then
    rm -rf "$VENV"
    echo "test-floor: creating $VENV with the minimum versions of $CONSTRAINTS"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q -c "$CONSTRAINTS" -e ".[$EXTRAS]"
    echo "$want" >"$stamp"
fi
# Say which versions ran, so a pass is a pass on the floors and not on newer ones.
"$VENV/bin/python" - "$CONSTRAINTS" <<'PY'
import sys
from importlib.metadata import version
from packaging.requirements import Requirement
wrong = []
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if line:
        req = Requirement(line)
        have = version(req.name)
        if not req.specifier.contains(have, prereleases=True):
            wrong.append(f"{req.name} {have} (want {req.specifier})")
if wrong:
    sys.exit("test-floor: not at the floor: " + ", ".join(wrong))
print("test-floor: at the floors:", ", ".join(
    l.split("#")[0].strip() for l in open(sys.argv[1]) if l.split("#")[0].strip()))
PY
rc=0
"$VENV/bin/python" -m pytest tests/unit -q -p no:cacheprovider "$@" || rc=$?
echo "test-floor: ${SECONDS}s in all (venv and unit suite)"
exit "$rc"
