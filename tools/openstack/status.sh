#!/usr/bin/env bash
# Say which processes of the OpenStack test stack answer; exit 1 unless all do
# and the last start.sh finished (see lib.sh for the layout).
set -uo pipefail
. "$(dirname "$0")/lib.sh"
rc=0
for p in "${PROCS[@]}"; do
    if "up_$p"; then echo "$p: up (pid $(pid_of "$p"))"; else echo "$p: DOWN"; rc=1; fi
done
if [[ ! -e $RUN/ready ]]; then echo "stack: not ready (start.sh did not finish)"; rc=1; fi
exit $rc
