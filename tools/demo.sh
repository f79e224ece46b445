#!/usr/bin/env bash
# Run `reaper-manage demo` on a fresh Debian 12 machine: installs only what the
# demo needs (libvirt-python's build deps and the venv), then runs the demo,
# which builds a throwaway host in a temporary directory. No services, no root
# needed for the demo itself.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) == 0 ]]; then
    bash tools/install-deps.sh --no-services-packages
fi
exec .venv/bin/reaper-manage demo "$@"
