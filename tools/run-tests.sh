#!/usr/bin/env bash
# The project's single test command (CI runs it through .ci/run): install what is
# missing, bring the real test host up, run the whole suite. Extra arguments go
# to pytest (e.g. tools/run-tests.sh -k testhost -x). The whole suite includes
# the documentation build (tests/docs, warnings as errors) and the promtool checks
# of the alert rules and dashboard (tests/unit/test_monitoring.py).
#
# REAPER_TEST_FLOOR=1 adds the unit suite on the declared minimum versions of the
# dependencies (tools/test-floor.sh, in .venv-floor). It is off by default here
# and on in CI (.ci/run): about 2 minutes (some 20 s to build the venv the first
# time, then the unit suite again, about 95 s); any failure there fails the run.
set -euo pipefail

cd "$(dirname "$0")/.."

bash tools/install-deps.sh
# Nova's own code for tests/functional/test_nova_parity.py (.venv-nova; a no-op
# while its pin is unchanged, some 50 s to build it the first time).
bash tools/nova-venv.sh
bash tools/testhost.sh start

# pytest exits 5 when nothing was collected; with a test suite in place that
# means the run went wrong, so it fails like any other non-zero status.
rc=0
.venv/bin/python -m pytest tests -v -p no:cacheprovider "$@" || rc=$?
if ((rc == 5)); then
    echo "run-tests: pytest collected no tests; treating that as a failure" >&2
fi

if [[ ${REAPER_TEST_FLOOR:-0} == 1 ]]; then
    floor_rc=0
    bash tools/test-floor.sh || floor_rc=$?
    if ((floor_rc)); then
        echo "run-tests: the unit suite failed at the dependency floors" >&2
        ((rc)) || rc=$floor_rc
    fi
fi
exit "$rc"
