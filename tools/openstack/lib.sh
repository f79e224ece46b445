# Shared by start.sh, stop.sh and status.sh (sourced, not run).
#
# The stack: Keystone, Placement, Neutron and the Cinder API under uWSGI, plus
# cinder-scheduler and cinder-volume as plain processes, all on 127.0.0.1 with
# fixed ports. State (configs, SQLite databases, pids, logs) lives under
# $OPENSTACK_STATE, default /var/lib/reaper-test/openstack:
#   etc/<service>/   generated configuration      data/<service>/  databases, keys
#   run/<name>.pid   one pid per process          log/<name>.log   one log per process
#   stack.json       endpoints and credentials (tests/fixtures/openstack_cloud.py reads it)
#   admin-openrc     the admin's OS_* variables, for poking at the stack by hand

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
VENV=${OPENSTACK_VENV:-$REPO/.venv-openstack}
STATE=${OPENSTACK_STATE:-/var/lib/reaper-test/openstack}
ETC=$STATE/etc
DATA=$STATE/data
RUN=$STATE/run
LOGS=$STATE/log
TIMEOUT=${OPENSTACK_TIMEOUT:-90}

HOST=127.0.0.1
# The usual ports. OPENSTACK_PORT_OFFSET (default 0) shifts all of them (and the
# private broker's), so a second stack, with its own OPENSTACK_STATE, can run
# beside the first (e.g. to try start/stop cycles without disturbing it).
OFFSET=${OPENSTACK_PORT_OFFSET:-0}
export OPENSTACK_KEYSTONE_PORT=$((5000 + OFFSET))
export OPENSTACK_PLACEMENT_PORT=$((8778 + OFFSET))
export OPENSTACK_NEUTRON_PORT=$((9696 + OFFSET))
export OPENSTACK_CINDER_PORT=$((8776 + OFFSET))
KEYSTONE_PORT=$OPENSTACK_KEYSTONE_PORT
PLACEMENT_PORT=$OPENSTACK_PLACEMENT_PORT
NEUTRON_PORT=$OPENSTACK_NEUTRON_PORT
CINDER_PORT=$OPENSTACK_CINDER_PORT
# Test-only secrets: everything listens on loopback only.
PASSWORD=secret

# Cinder's RPC goes through RabbitMQ (vhost and user os-svc). OPENSTACK_RABBIT:
#   private (default)  a RabbitMQ node of the stack's own (reaper-openstack@<host>,
#                      127.0.0.1:5673, data under data/rabbitmq): tests that load,
#                      stop or exhaust the test host's broker cannot take Cinder
#                      down with it. ~130 MB, boots while the databases are made.
#   shared             the test host's broker (tools/testhost.sh) on 5672.
RABBIT_MODE=${OPENSTACK_RABBIT:-private}
RABBIT_VHOST=os-svc
RABBIT_USER=os-svc
if [[ $RABBIT_MODE == private ]]; then
    RABBIT_PORT=$((5673 + OFFSET))
    RABBIT_NODE=reaper-openstack$( ((OFFSET)) && echo "-$OFFSET")@$(hostname -s)
    RABBIT_HOME=$DATA/rabbitmq/home    # its Erlang cookie; the VM runs as root
else
    RABBIT_PORT=5672
fi
RABBIT_URL="rabbit://$RABBIT_USER:$PASSWORD@$HOST:$RABBIT_PORT/$RABBIT_VHOST"

# Start order.
PROCS=(keystone placement neutron cinder-api cinder-scheduler cinder-volume)
if [[ $RABBIT_MODE == private ]]; then PROCS=(rabbitmq "${PROCS[@]}"); fi

# Every Erlang VM here binds epmd and its distribution port to loopback only, as
# tools/testhost.sh does.
export ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"

log() { echo "openstack: $*" >&2; }

# lock_stack: one start.sh/stop.sh at a time per state directory (fd 8; the
# daemons do not inherit it). stop.sh run from start.sh already holds it.
lock_stack() {
    [[ ${OPENSTACK_LOCKED:-} == "$STATE" ]] && return 0
    mkdir -p "$(dirname "$STATE")"
    exec 8>"$STATE.lock"
    flock 8
    export OPENSTACK_LOCKED=$STATE
}

# pid_of NAME: the recorded pid of process NAME, if that process is still one of
# this stack's (its command line or environment names $STATE/): after a reboot
# or a killed session, a stale pid file may name some unrelated process.
pid_of() {
    local pid
    pid=$(cat "$RUN/$1.pid" 2>/dev/null) || return 0
    [[ $pid =~ ^[0-9]+$ ]] || return 0
    if { tr '\0' '\n' </proc/"$pid"/cmdline; } 2>/dev/null | grep -qF "$STATE/" ||
       { tr '\0' '\n' </proc/"$pid"/environ; } 2>/dev/null | grep -qF "$STATE/"; then
        echo "$pid"
    fi
}
alive() { local pid; pid=$(pid_of "$1"); [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null; }

# http_up PORT PATH: the API answers (any status below 400) within 5 s.
http_up() {
    local code
    code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' "http://$HOST:$1$2" || true)
    [[ $code =~ ^[23] ]]
}
# http_serving PORT PATH: the API accepts the connection; an answer that is
# slow (a busy host) still counts: only a refused connection means it is gone.
http_serving() {
    local rc=0
    curl -s -o /dev/null -m 20 "http://$HOST:$1$2" || rc=$?
    ((rc == 0 || rc == 28))
}

# ready_X: answers now (start.sh waits for this); up_X: the process is alive and
# serving (status.sh, and start.sh's "already up", so that a slow answer on a
# loaded host never makes start.sh restart a stack others are using).
ready_keystone() { alive keystone && http_up $KEYSTONE_PORT /v3; }
ready_placement() { alive placement && http_up $PLACEMENT_PORT /; }
ready_neutron() { alive neutron && http_up $NEUTRON_PORT /; }
ready_cinder-api() { alive cinder-api && http_up $CINDER_PORT /; }
up_rabbitmq() { alive rabbitmq; }
up_keystone() { alive keystone && http_serving $KEYSTONE_PORT /v3; }
up_placement() { alive placement && http_serving $PLACEMENT_PORT /; }
up_neutron() { alive neutron && http_serving $NEUTRON_PORT /; }
up_cinder-api() { alive cinder-api && http_serving $CINDER_PORT /; }
up_cinder-scheduler() { alive cinder-scheduler; }
up_cinder-volume() { alive cinder-volume; }

# stack_up: the last start finished and every process still answers.
stack_up() {
    local p
    [[ -e $RUN/ready ]] || return 1
    for p in "${PROCS[@]}"; do "up_$p" || return 1; done
}

# rabbitmqctl_q ARGS...: rabbitmqctl against the stack's broker. Without the lock
# fds: the first Erlang VM on the host spawns epmd, which would keep them. The
# CLI boots an Erlang VM of its own: on a loaded host that alone takes many
# seconds, hence the generous timeout.
rabbitmqctl_q() {
    if [[ $RABBIT_MODE == private ]]; then
        HOME=$RABBIT_HOME timeout 60 /usr/lib/rabbitmq/bin/rabbitmqctl -q -n "$RABBIT_NODE" \
            "$@" 8>&- 9>&-
    else
        timeout 30 rabbitmqctl -q "$@" 8>&- 9>&-
    fi
}
