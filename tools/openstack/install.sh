#!/usr/bin/env bash
# Install the OpenStack services of the test stack (Keystone, Placement, Neutron,
# Cinder and uWSGI, exact versions in pins.txt) into one virtualenv,
# .venv-openstack at the repository root, separate from the project's .venv so
# their dependencies never constrain reaper's.
#
# Idempotent: a stamp in the venv records the hash of pins.txt (and of the
# interpreter's version); while both are unchanged this returns at once. When
# they change, the venv is rebuilt from scratch. About 65 s cold (uWSGI is built
# from source, hence gcc and python3-dev, which tools/install-deps.sh installs).
#
#   OPENSTACK_VENV   where the venv goes (default: <repo>/.venv-openstack)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
VENV=${OPENSTACK_VENV:-$REPO/.venv-openstack}
PINS=$HERE/pins.txt

want=$( (cat "$PINS"; python3 -c 'import sys; print(sys.version)') | sha256sum | cut -d' ' -f1)
stamp=$VENV/.reaper-openstack-pins
if [[ $(cat "$stamp" 2>/dev/null) == "$want" ]]; then
    echo "openstack/install: $VENV up to date"
    exit 0
fi

start=$SECONDS
echo "openstack/install: building $VENV from $PINS"
rm -rf "$VENV"
python3 -m venv "$VENV"
# pip prints one warning per package for index locations of this host that do
# not hold it; keep the real errors.
"$VENV/bin/python" -m pip install -q -r "$PINS" 2> >(grep -v 'is ignored: it is neither' >&2)
echo "$want" >"$stamp"
echo "openstack/install: done in $((SECONDS - start))s"
