#!/usr/bin/env bash
# Install everything the tests and the demo need on a Debian 12 host, as root.
# Idempotent and fast on a host that already has it all: apt is skipped when
# dpkg-query finds every package, and pip is skipped while setup.cfg is unchanged.
#
#   --no-services-packages   only what the demo needs (libvirt-python's build deps
#                            and a venv); no daemons, no service users, no
#                            OpenStack venv.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$PWD

SERVICES=1
for arg in "$@"; do
    case $arg in
        --no-services-packages) SERVICES=0 ;;
        *) echo "usage: $0 [--no-services-packages]" >&2; exit 2 ;;
    esac
done

# libvirt-python and systemd-python (the journal extra) are built from PyPI against
# libvirt-dev and libsystemd-dev, hence pkg-config and gcc.
PKGS=(libvirt-dev libsystemd-dev pkg-config gcc python3-venv python3-dev)
if ((SERVICES)); then
    # systemd: systemd-analyze checks the unit file and a private systemd-journald
    # takes --use-journal's logs in a test (not run as init here); logrotate rotates
    # a live audit log with etc/logrotate.d/reaper in a test.
    PKGS+=(libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86
           mariadb-server openvswitch-switch rabbitmq-server open-iscsi tgt iproute2
           systemd    # systemd-analyze checks the unit files; not run as init here
           logrotate  # the shipped logrotate file is run on a test log
           prometheus)  # promtool checks and unit-tests the alert rules
fi

missing=()
for p in "${PKGS[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [[ $status == installed ]] || missing+=("$p")
done

if ((${#missing[@]})); then
    echo "install-deps: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Without systemd, package scripts would start daemons through init.d; the
    # test host starts them itself (tools/testhost.sh), so forbid that meanwhile.
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"; chmod +x "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    apt-get update -q
    apt-get install -y -q "${missing[@]}"
fi

if ((SERVICES)); then
    # libvirt's qemu driver runs guests as libvirt-qemu:kvm (Debian's build
    # defaults); libvirt-daemon-system would create them, but it wants systemd.
    getent group kvm >/dev/null || groupadd --system kvm
    getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
    id -u libvirt-qemu >/dev/null 2>&1 ||
        useradd --system --gid kvm --groups libvirt-qemu --home-dir /var/lib/libvirt \
                --no-create-home --shell /usr/sbin/nologin libvirt-qemu
    id -u kvm >/dev/null 2>&1 ||
        useradd --system --gid kvm --no-create-home --shell /usr/sbin/nologin kvm
fi

# The venv uses whichever python3 is first on PATH (a pyenv 3.11 on some hosts).
if [[ ! -x .venv/bin/python ]]; then
    echo "install-deps: creating .venv with $(command -v python3)"
    python3 -m venv .venv
fi

# Re-run pip only when the declared dependencies change: a stamp in the venv
# records the hash of the packaging files last installed.
meta=()
for f in setup.cfg setup.py pyproject.toml; do [[ -f $f ]] && meta+=("$f"); done
if ((${#meta[@]})); then
    want=$(cat "${meta[@]}" | sha256sum | cut -d' ' -f1)
    target=(-e "${REPO}[test,journal]")
else
    # Before the lead's packaging lands: the runtime and test dependencies by name.
    want=bare
    target=(oslo.config oslo.log oslo.messaging libvirt-python pyroute2 ovsdbapp
            os-brick SQLAlchemy PyMySQL tenacity pytest ruff)
fi
stamp=.venv/.reaper-deps
if [[ $(cat "$stamp" 2>/dev/null) != "$want" ]]; then
    echo "install-deps: pip install ${target[*]}"
    .venv/bin/python -m pip install -q "${target[@]}"
    echo "$want" >"$stamp"
fi
# The OpenStack services of the test host (Keystone, Placement, Neutron, Cinder),
# in a venv of their own, .venv-openstack; rebuilt only when their pins change.
if ((SERVICES)); then
    bash tools/openstack/install.sh
fi
echo "install-deps: ok"
