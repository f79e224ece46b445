#!/usr/bin/env bash
# The project's single test command (CI runs it through .ci/run): install what is
# missing, bring the real test host up, run the whole suite. Extra arguments go
# to pytest (e.g. tools/run-tests.sh -k testhost -x).
set -euo pipefail

cd "$(dirname "$0")/.."

bash tools/install-deps.sh
bash tools/testhost.sh start

# pytest exits 5 when nothing was collected; with a test suite in place that
# means the run went wrong, so it fails like any other non-zero status.
rc=0
.venv/bin/python -m pytest tests -v -p no:cacheprovider "$@" || rc=$?
if ((rc == 5)); then
    echo "run-tests: pytest collected no tests; treating that as a failure" >&2
fi
exit "$rc"
