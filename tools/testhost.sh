#!/usr/bin/env bash
# The real parts the functional tests use: libvirt (qemu:///system), MariaDB,
# Open vSwitch and RabbitMQ, started by hand because there is no systemd here,
# and the OpenStack test stack (Keystone, Placement, Neutron, Cinder from PyPI,
# tools/openstack/; its venv comes from tools/install-deps.sh).
#
#   testhost.sh start    start whatever is not answering yet, wait until it answers
#   testhost.sh stop     stop what `start` started (a marker per service), nothing else
#   testhost.sh status   say what answers; exit 1 unless everything does
#
# Everything listens on loopback or unix sockets only. Run as root.
# TESTHOST_TIMEOUT (seconds, default 60) bounds each readiness wait.
set -euo pipefail

TIMEOUT=${TESTHOST_TIMEOUT:-60}
MARKERS=/run/reaper-testhost          # one empty file per service we started
OVS_RUN=/var/run/openvswitch
OVS_DB=/var/lib/openvswitch/conf.db   # our own db; the package's is in /etc/openvswitch
OVS_SCHEMA=/usr/share/openvswitch/vswitch.ovsschema
MYSQL_SOCK=/run/mysqld/mysqld.sock
MYSQL_LOG=/var/log/mysql/error.log
RABBIT_LOG_DIR=/var/log/rabbitmq
# Every Erlang VM here (the broker, and each rabbitmqctl, which may be the first
# to spawn epmd) binds epmd and its distribution port to loopback only.
export ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
OPENSTACK=$(cd "$(dirname "$0")" && pwd)/openstack
SERVICES=(virtlogd libvirtd mariadb ovsdb-server ovs-vswitchd rabbitmq openstack)

# --------------------------------------------------------------------------
# helpers

log() { echo "testhost: $*" >&2; }

# Launch a daemon without our lock fd (9), or it would hold the lock forever.
spawn() { "$@" 9>&-; }

# pid_alive PIDFILE: the pidfile names a live process.
pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# wait_until NAME LOGFILE CMD...: poll CMD until it succeeds or TIMEOUT runs
# out; then say so with the tail of the service's log and fail.
wait_until() {
    local name=$1 logfile=$2 deadline=$((SECONDS + TIMEOUT)); shift 2
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "ERROR: $name did not become ready within ${TIMEOUT}s ($*)"
            if [[ -f $logfile ]]; then
                log "last lines of $logfile:"; tail -n 30 "$logfile" >&2
            fi
            return 1
        fi
        sleep 0.5
    done
}

# stop_pid NAME PIDFILE: TERM the process and wait (bounded) for it to go.
stop_pid() {
    local name=$1 pidfile=$2 pid deadline=$((SECONDS + TIMEOUT))
    pid_alive "$pidfile" || return 0
    pid=$(cat "$pidfile")
    kill "$pid"
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS < deadline)) || { log "ERROR: $name (pid $pid) ignores SIGTERM"; return 1; }
        sleep 0.2
    done
}

# --------------------------------------------------------------------------
# per service: up_X answers "is it serving?", start_X launches it and waits,
# stop_X stops it.

up_virtlogd() { pid_alive /run/virtlogd.pid && [[ -S /run/libvirt/virtlogd-sock ]]; }
start_virtlogd() {
    mkdir -p /var/run/libvirt /var/log/libvirt
    LIBVIRT_LOG_OUTPUTS="3:file:/var/log/libvirt/virtlogd.log" spawn virtlogd -d
    wait_until virtlogd /var/log/libvirt/virtlogd.log up_virtlogd
}
stop_virtlogd() { stop_pid virtlogd /run/virtlogd.pid; }

up_libvirtd() { timeout 10 virsh -c qemu:///system version; }
start_libvirtd() {
    mkdir -p /var/run/libvirt /var/log/libvirt
    # -d daemonizes; no --listen, so only the unix sockets under /run/libvirt.
    LIBVIRT_LOG_OUTPUTS="3:file:/var/log/libvirt/libvirtd.log" spawn libvirtd -d
    wait_until libvirtd /var/log/libvirt/libvirtd.log up_libvirtd
}
# Guests (qemu processes) outlive libvirtd; the next libvirtd reconnects to them.
stop_libvirtd() { stop_pid libvirtd /run/libvirtd.pid; }

up_mariadb() { mysqladmin --socket="$MYSQL_SOCK" --connect-timeout=5 ping; }
start_mariadb() {
    mkdir -p /var/run/mysqld /var/log/mysql
    chown mysql:mysql /var/run/mysqld /var/log/mysql
    if [[ ! -d /var/lib/mysql/mysql ]]; then   # the package normally does this
        mysql_install_db --user=mysql --datadir=/var/lib/mysql \
            >/var/log/mysql/install.log 2>&1 || { tail -n 30 /var/log/mysql/install.log >&2; return 1; }
    fi
    # Debian's config logs to syslog, which nobody reads here: log to a file.
    # setsid -f: detach into a session of its own and return at once.
    spawn setsid -f mysqld_safe --skip-syslog --log-error="$MYSQL_LOG" \
        --bind-address=127.0.0.1 --socket="$MYSQL_SOCK" </dev/null >/dev/null 2>&1
    wait_until mariadb "$MYSQL_LOG" up_mariadb
}
# Tests connect as reaper:reaper over TCP and create/drop their own databases.
# root@localhost uses unix_socket auth on Debian, so root needs no password.
mariadb_users() {
    mysql --socket="$MYSQL_SOCK" <<'SQL'
CREATE USER IF NOT EXISTS 'reaper'@'localhost' IDENTIFIED BY 'reaper';
CREATE USER IF NOT EXISTS 'reaper'@'127.0.0.1' IDENTIFIED BY 'reaper';
GRANT ALL PRIVILEGES ON *.* TO 'reaper'@'localhost' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'reaper'@'127.0.0.1' WITH GRANT OPTION;
SQL
}
# mysqld_safe exits by itself once mysqld shuts down cleanly.
stop_mariadb() {
    up_mariadb >/dev/null 2>&1 || return 0
    mysqladmin --socket="$MYSQL_SOCK" shutdown
}

up_ovsdb-server() {
    pid_alive $OVS_RUN/ovsdb-server.pid &&
        ovs-vsctl --db=unix:$OVS_RUN/db.sock --timeout=5 --no-wait show
}
start_ovsdb-server() {
    mkdir -p $OVS_RUN /var/log/openvswitch "$(dirname $OVS_DB)"
    if [[ ! -f $OVS_DB ]]; then
        ovsdb-tool create $OVS_DB $OVS_SCHEMA
    elif ovsdb-tool needs-conversion $OVS_DB $OVS_SCHEMA | grep -q yes; then
        ovsdb-tool convert $OVS_DB $OVS_SCHEMA     # after a package upgrade
    fi
    spawn ovsdb-server $OVS_DB --remote=punix:$OVS_RUN/db.sock \
        --remote=ptcp:6640:127.0.0.1 --pidfile=$OVS_RUN/ovsdb-server.pid \
        --detach -vconsole:off --log-file=/var/log/openvswitch/ovsdb-server.log
    wait_until ovsdb-server /var/log/openvswitch/ovsdb-server.log up_ovsdb-server
    ovs-vsctl --db=unix:$OVS_RUN/db.sock --no-wait init
}
stop_ovsdb-server() { stop_pid ovsdb-server $OVS_RUN/ovsdb-server.pid; }

# No kernel datapath module here: bridges must use datapath_type=netdev.
up_ovs-vswitchd() { pid_alive $OVS_RUN/ovs-vswitchd.pid && ovs-appctl -t ovs-vswitchd version; }
start_ovs-vswitchd() {
    spawn ovs-vswitchd unix:$OVS_RUN/db.sock --pidfile=$OVS_RUN/ovs-vswitchd.pid \
        --detach -vconsole:off --log-file=/var/log/openvswitch/ovs-vswitchd.log
    wait_until ovs-vswitchd /var/log/openvswitch/ovs-vswitchd.log up_ovs-vswitchd
}
stop_ovs-vswitchd() { stop_pid ovs-vswitchd $OVS_RUN/ovs-vswitchd.pid; }

up_rabbitmq() { timeout 20 rabbitmqctl -q status; }
# AMQP and Erlang distribution bound to loopback; guest/guest works
# on loopback by default. Node name is Debian's default, rabbit@$(hostname -s).
launch_rabbitmq() {
    # A stock 1024-descriptor node has about 830 sockets: each reaper-agent holds
    # two connections, so bench/bench_fanout.py at 1,000 agents would exhaust it
    # (and the node's mnesia tables broke when it did). systemd's unit sets 65536.
    (ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
     RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
     RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        spawn rabbitmq-server -detached)
}
wait_rabbitmq() {
    # The node needs longer than the others to boot; give it twice the budget.
    TIMEOUT=$((TIMEOUT * 2)) wait_until rabbitmq \
        "$RABBIT_LOG_DIR/rabbit@$(hostname -s).log" up_rabbitmq
}
start_rabbitmq() { launch_rabbitmq && wait_rabbitmq; }
stop_rabbitmq() {
    up_rabbitmq >/dev/null 2>&1 || return 0
    # Given the node's pid file, `rabbitmqctl stop` waits until the VM is gone.
    timeout "$TIMEOUT" rabbitmqctl -q stop \
        "/var/lib/rabbitmq/mnesia/rabbit@$(hostname -s).pid" >/dev/null || return 1
    epmd -kill >/dev/null 2>&1 || true   # refuses while other nodes are registered
}

# The OpenStack services: tools/openstack/{start,stop,status}.sh (ports 5000,
# 8778, 9696, 8776; state and logs in /var/lib/reaper-test/openstack). Its
# Cinder uses a RabbitMQ node of its own (unless OPENSTACK_RABBIT=shared), so
# it does not wait for ours.
up_openstack() { bash "$OPENSTACK/status.sh"; }
start_openstack() { bash "$OPENSTACK/start.sh"; }
stop_openstack() { bash "$OPENSTACK/stop.sh"; }

# --------------------------------------------------------------------------

cmd_start() {
    mkdir -p $MARKERS
    local rabbit_pending=0 svc
    # RabbitMQ takes several seconds to boot: launch it first, wait for it last.
    if ! up_rabbitmq >/dev/null 2>&1; then
        log "starting rabbitmq"; touch $MARKERS/rabbitmq; launch_rabbitmq; rabbit_pending=1
    fi
    for svc in "${SERVICES[@]}"; do
        [[ $svc == rabbitmq || $svc == openstack ]] && continue
        if "up_$svc" >/dev/null 2>&1; then
            log "$svc already up"
        else
            log "starting $svc"; touch "$MARKERS/$svc"; "start_$svc"
        fi
    done
    mariadb_users
    # The OpenStack stack takes the longest (some 30 s): it starts while RabbitMQ
    # boots, and is waited for last.
    local os_pid=""
    if [[ ${OPENSTACK_RABBIT:-private} == shared ]] && ((rabbit_pending)); then
        wait_rabbitmq; rabbit_pending=0         # its Cinder needs our broker then
    fi
    if up_openstack >/dev/null 2>&1; then
        log "openstack already up"
    else
        log "starting openstack"; touch $MARKERS/openstack; start_openstack & os_pid=$!
    fi
    local rc=0
    if ((rabbit_pending)); then wait_rabbitmq || rc=1; else log "rabbitmq already up"; fi
    if [[ -n $os_pid ]]; then wait "$os_pid" || rc=1; fi
    ((rc == 0)) || return 1
    log "all services up"
}

cmd_stop() {
    local i svc rc=0
    for ((i = ${#SERVICES[@]} - 1; i >= 0; i--)); do
        svc=${SERVICES[i]}
        [[ -e $MARKERS/$svc ]] || continue
        log "stopping $svc"
        if "stop_$svc"; then rm -f "$MARKERS/$svc"; else rc=1; fi
    done
    return $rc
}

cmd_status() {
    local svc rc=0 by
    for svc in "${SERVICES[@]}"; do
        by=""; [[ -e $MARKERS/$svc ]] && by=" (started by testhost.sh)"
        if "up_$svc" >/dev/null 2>&1; then echo "$svc: up$by"; else echo "$svc: DOWN"; rc=1; fi
    done
    return $rc
}

[[ $(id -u) == 0 ]] || { log "must run as root"; exit 2; }
# One start/stop at a time (parallel test runs share this host).
mkdir -p "$(dirname $MARKERS)"
exec 9>"$MARKERS.lock"
flock 9
case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
