#!/usr/bin/env bash
# The nova venv: Nova's own code (the `nova` package from PyPI, at one pinned
# version) in a virtualenv of its own, .venv-nova at the repository root. The
# functional test tests/functional/test_nova_parity.py builds a Nova DB schema with
# it and runs Nova's own delete (Instance.save() of the final states, instance_destroy)
# in a subprocess, to compare the DB end state with the reaper's reclaim. The
# reaper's venv never imports nova: the two only meet through the database file.
#
# Cheap to call: the venv is rebuilt only when the pin, the constraints or the
# Python version change (a stamp in the venv, as tools/install-deps.sh does). The
# first build downloads some 135 packages (about 400 MB installed); it needs only
# python3-venv (tools/install-deps.sh installs it) and the package registry.
#
#   tools/nova-venv.sh          build or update .venv-nova, print its nova version
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=.venv-nova
# The pin: change it together with tools/nova-venv-constraints.txt (the pip freeze
# of a venv built with the new pin), so every machine runs the same Nova code.
NOVA=nova==34.0.0
CONSTRAINTS=tools/nova-venv-constraints.txt
# PyMySQL: Nova's schema on the test host's MariaDB (nova itself does not require it).
EXTRA=PyMySQL

PYTHON=${PYTHON:-python3}
want=$( (echo "$NOVA $EXTRA"; cat "$CONSTRAINTS"; "$PYTHON" -V 2>&1) | sha256sum | cut -d' ' -f1)
stamp=$VENV/.reaper-nova
if [[ $(cat "$stamp" 2>/dev/null) != "$want" ]]; then
    rm -rf "$VENV"
    echo "nova-venv: creating $VENV with $NOVA ($(command -v "$PYTHON"))"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check \
        -c "$CONSTRAINTS" "$NOVA" "$EXTRA"
    echo "$want" >"$stamp"
fi
"$VENV/bin/python" -c 'from importlib.metadata import version; print("nova-venv: nova", version("nova"))'
