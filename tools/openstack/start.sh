#!/usr/bin/env bash
# Start the OpenStack test stack (Keystone, Placement, Neutron, Cinder) on
# loopback, from the venv tools/openstack/install.sh builds, and wait until
# every API answers and Cinder's scheduler knows the volume backend's pool.
#
# Idempotent: when the stack is already up this says so and returns 0. When
# some of it is up and some not, what is left is stopped and the stack starts
# afresh (new databases: tests create their own uuid-named resources and never
# rely on earlier ones). Layout, ports and credentials: lib.sh. Stop: stop.sh.
#
# Why the pieces look the way they do (each was needed on a 2-core test host):
# * SQLite for every service; Neutron's migrations do not run on SQLite (they
#   ALTER constraints), so its schema is created from the models and stamped.
# * WAL mode plus BEGIN IMMEDIATE (pylib/sitecustomize.py): Cinder's three
#   processes share one database file and would otherwise fail with "database
#   is locked" instead of waiting.
# * uWSGI sends "Connection: close": its http-socket resets kept-alive
#   connections, which keystoneauth sessions reuse.
# * No Neutron agents: the bind_any_host ML2 driver (pylib/) binds ports.
# * Cinder's fake volume driver (in its wheel) makes volumes that cost nothing.
# * cinder-volume announces its pool once at start, then only every 60 s: it
#   starts only once the scheduler's fanout queue exists, or the first
#   announcement is lost and volume creation fails with "No valid backend".
# * RabbitMQ serves Cinder's RPC, through a vhost and user of the stack's own,
#   on a broker node of its own by default (lib.sh: OPENSTACK_RABBIT). Neutron
#   has no agents to talk to and uses the in-process fake:// transport.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

[[ $(id -u) == 0 ]] || { log "must run as root"; exit 2; }
[[ -x $VENV/bin/uwsgi ]] || { log "no $VENV: run tools/openstack/install.sh"; exit 2; }
lock_stack

if stack_up; then
    log "already up"
    exit 0
fi
if ls "$RUN"/*.pid >/dev/null 2>&1; then
    log "partly up: stopping what is left first"
    bash "$HERE/stop.sh"
fi

# A start that fails stops what it started (the logs stay for a look).
finish() {
    local rc=$?
    if ((rc != 0)); then
        log "start failed (logs: $LOGS); stopping what was started"
        bash "$HERE/stop.sh" || true
    fi
}
trap finish EXIT

t0=$SECONDS
# stack.json goes first: until the catalog is made again, it would name users
# of the old Keystone.
rm -rf "$STATE/stack.json" "$STATE/admin-openrc" "$ETC" "$DATA" "$RUN"
mkdir -p "$ETC"/{keystone,placement,neutron/plugins/ml2,cinder} "$RUN" "$LOGS" \
    "$DATA"/{keystone,placement,neutron,cinder}/lock
# Each start gets fresh logs; the previous ones are kept once (*.log.1).
for f in "$LOGS"/*.log; do [[ -e $f ]] && mv -f "$f" "$f.1"; done

export PATH=$VENV/bin:$PATH
# The services' Python finds sitecustomize.py and the ML2 driver in pylib/.
export PYTHONPATH=$HERE/pylib
export REAPER_OS_SQLITE_IMMEDIATE=1

KS_URL=http://$HOST:$KEYSTONE_PORT/v3
sqlite_url() { echo "sqlite:///$DATA/$1/$1.db?timeout=60"; }

# authtoken SERVICE_USER: the [keystone_authtoken] section of an API service.
authtoken() {
    cat <<INI
[keystone_authtoken]
www_authenticate_uri = $KS_URL
auth_url = $KS_URL
auth_type = password
username = $1
password = $PASSWORD
project_name = service
user_domain_name = Default
project_domain_name = Default
region_name = RegionOne
service_token_roles_required = true
INI
}

# uwsgi_ini NAME PORT MODULE [EXTRA...]: one process, two threads, own log and pid.
uwsgi_ini() {
    local name=$1 port=$2 module=$3; shift 3
    {
        cat <<INI
[uwsgi]
home = $VENV
http-socket = $HOST:$port
module = $module
master = true
processes = 1
threads = 2
enable-threads = true
lazy-apps = true
die-on-term = true
need-app = true
buffer-size = 65535
add-header = Connection: close
# A worker still busy 3 s after SIGTERM is killed.
worker-reload-mercy = 3
reload-mercy = 3
pidfile = $RUN/$name.pid
logto = $LOGS/$name.log
INI
        local line; for line in "$@"; do echo "$line"; done
    } >"$ETC/$name.uwsgi.ini"
}

# spawn NAME CMD...: run a daemon in a session of its own, without the lock fds
# (8: ours, 9: tools/testhost.sh's); its pid goes to run/NAME.pid.
spawn() {
    local name=$1; shift
    (exec setsid "$@" </dev/null >"$LOGS/$name.out" 2>&1 8>&- 9>&-) &
    echo $! >"$RUN/$name.pid"
}

# wait_for WHAT LOG CMD...: poll CMD until it succeeds, or fail with the log's tail.
wait_for() {
    local what=$1 logfile=$2 deadline=$((SECONDS + TIMEOUT)); shift 2
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            log "ERROR: $what not ready within ${TIMEOUT}s"
            [[ -f $logfile ]] && { log "last lines of $logfile:"; tail -n 40 "$logfile" >&2; }
            return 1
        fi
        sleep 0.5
    done
}

# step NAME CMD...: run a setup command, its output into log/setup-NAME.log.
step() {
    local name=$1 t=$SECONDS; shift
    if ! "$@" >"$LOGS/setup-$name.log" 2>&1; then
        log "ERROR: $name failed: $*"; tail -n 40 "$LOGS/setup-$name.log" >&2; return 1
    fi
    echo "$name: $((SECONDS - t))s" >>"$LOGS/setup-times.log"
}

# ---------------------------------------------------------------- configs

cat >"$ETC/keystone/keystone.conf" <<INI
[DEFAULT]
log_file = $LOGS/keystone-app.log
[database]
connection = $(sqlite_url keystone)
[token]
provider = fernet
[fernet_tokens]
key_repository = $DATA/keystone/fernet-keys
[credential]
key_repository = $DATA/keystone/credential-keys
[identity]
# bcrypt's minimum: a password check costs ~1 ms instead of ~300 ms.
password_hash_rounds = 4
[cache]
enabled = false
INI
uwsgi_ini keystone $KEYSTONE_PORT keystone.wsgi.api:application \
    "env = OS_KEYSTONE_CONFIG_DIR=$ETC/keystone"

cat >"$ETC/placement/placement.conf" <<INI
[DEFAULT]
log_file = $LOGS/placement-app.log
[api]
auth_strategy = keystone
[placement_database]
connection = $(sqlite_url placement)
$(authtoken placement)
INI
uwsgi_ini placement $PLACEMENT_PORT placement.wsgi.api:application \
    "env = OS_PLACEMENT_CONFIG_DIR=$ETC/placement"

cp "$VENV/etc/neutron/api-paste.ini" "$ETC/neutron/api-paste.ini"
cat >"$ETC/neutron/neutron.conf" <<INI
[DEFAULT]
log_file = $LOGS/neutron-app.log
core_plugin = ml2
service_plugins =
auth_strategy = keystone
api_paste_config = $ETC/neutron/api-paste.ini
notify_nova_on_port_status_changes = false
notify_nova_on_port_data_changes = false
dhcp_agent_notification = false
state_path = $DATA/neutron
# No agents to talk to: the in-process transport, so Neutron needs no RabbitMQ.
transport_url = fake://
[database]
connection = $(sqlite_url neutron)
[oslo_concurrency]
lock_path = $DATA/neutron/lock
$(authtoken neutron)
[placement]
# The segments plugin asks Placement about a network's segments when one is
# deleted; without credentials it logs a traceback per network.
auth_type = password
auth_url = $KS_URL
username = neutron
password = $PASSWORD
project_name = service
user_domain_name = Default
project_domain_name = Default
region_name = RegionOne
INI
cat >"$ETC/neutron/plugins/ml2/ml2_conf.ini" <<INI
[ml2]
type_drivers = flat,local
tenant_network_types = local
mechanism_drivers = bind_any_host
extension_drivers = port_security
[ml2_type_flat]
flat_networks = physnet1
INI
uwsgi_ini neutron $NEUTRON_PORT neutron.wsgi.api:application \
    "env = OS_NEUTRON_CONFIG_DIR=$ETC/neutron" "start-time = %t"

cp "$VENV/etc/cinder/api-paste.ini" "$VENV/etc/cinder/resource_filters.json" "$ETC/cinder/"
cat >"$ETC/cinder/cinder.conf" <<INI
[DEFAULT]
log_dir = $LOGS
auth_strategy = keystone
transport_url = $RABBIT_URL
enabled_backends = fake
default_volume_type = __DEFAULT__
state_path = $DATA/cinder
my_ip = $HOST
osapi_volume_listen = $HOST
api_paste_config = $ETC/cinder/api-paste.ini
resource_query_filters_file = $ETC/cinder/resource_filters.json
graceful_shutdown_timeout = 2
periodic_interval = 5
periodic_fuzzy_delay = 0
[database]
connection = $(sqlite_url cinder)
[oslo_concurrency]
lock_path = $DATA/cinder/lock
[fake]
# Ships in cinder's wheel (needs the fixtures package): volumes cost nothing,
# initialize_connection returns an iSCSI-looking connection without a target.
volume_driver = cinder.tests.fake_driver.FakeLoggingVolumeDriver
volume_backend_name = fake
$(authtoken cinder)
INI
# The Cinder API reads its configuration from argv.
uwsgi_ini cinder-api $CINDER_PORT cinder.wsgi.api:application \
    "pyargv = --config-file $ETC/cinder/cinder.conf --log-file $LOGS/cinder-api-app.log"

# ---------------------------------------------------------------- databases

# The databases are independent: build them side by side.
setup_keystone() {
    local k=(keystone-manage --config-file "$ETC/keystone/keystone.conf")
    "${k[@]}" db_sync &&
    "${k[@]}" fernet_setup --keystone-user root --keystone-group root &&
    "${k[@]}" credential_setup --keystone-user root --keystone-group root &&
    "${k[@]}" bootstrap --bootstrap-password "$PASSWORD" \
        --bootstrap-admin-url "$KS_URL" --bootstrap-public-url "$KS_URL" \
        --bootstrap-internal-url "$KS_URL" --bootstrap-region-id RegionOne
}
setup_neutron() {
    python "$HERE/neutron_sqlite_init.py" "$(sqlite_url neutron)" &&
    neutron-db-manage --config-file "$ETC/neutron/neutron.conf" \
        --config-file "$ETC/neutron/plugins/ml2/ml2_conf.ini" stamp heads
}
# The private broker: the plain start script (not Debian's wrapper, which
# would run it as user rabbitmq with the test host's cookie); it stops the VM
# cleanly on SIGTERM. RABBITMQ_CONF_ENV_FILE: not the test host's settings.
start_private_rabbit() {
    mkdir -p "$RABBIT_HOME" "$DATA/rabbitmq/mnesia" "$LOGS/rabbitmq" "$ETC/rabbitmq"
    # The node's Erlang cookie, made before the node or rabbitmqctl could race
    # to make one each.
    (umask 077; head -c 32 /dev/urandom | sha256sum | cut -c1-32 >"$RABBIT_HOME/.erlang.cookie")
    echo "[]." >"$ETC/rabbitmq/enabled_plugins"
    HOME=$RABBIT_HOME RABBITMQ_NODENAME=$RABBIT_NODE RABBITMQ_NODE_IP_ADDRESS=$HOST \
    RABBITMQ_NODE_PORT=$RABBIT_PORT RABBITMQ_DIST_PORT=$((RABBIT_PORT + 20000)) \
    RABBITMQ_MNESIA_BASE=$DATA/rabbitmq/mnesia RABBITMQ_LOG_BASE=$LOGS/rabbitmq \
    RABBITMQ_ENABLED_PLUGINS_FILE=$ETC/rabbitmq/enabled_plugins \
    RABBITMQ_CONFIG_FILE=$ETC/rabbitmq/none RABBITMQ_CONF_ENV_FILE=/dev/null \
    RABBITMQ_PID_FILE=$RUN/rabbitmq-vm.pid \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}" \
        spawn rabbitmq /usr/lib/rabbitmq/bin/rabbitmq-server
}
amqp_listening() { (exec 3<>"/dev/tcp/$HOST/$RABBIT_PORT") 2>/dev/null; }
setup_rabbit() {
    if [[ $RABBIT_MODE == private ]]; then
        # The AMQP listener opens when the node has booted; polling it costs
        # nothing, unlike a rabbitmqctl call per try.
        wait_for "the stack's RabbitMQ node" "$LOGS/rabbitmq.out" amqp_listening || return 1
    fi
    # A fresh vhost: stale queues of an earlier run would fool the wait for the
    # scheduler's fanout queue below.
    rabbitmqctl_q delete_vhost "$RABBIT_VHOST" >/dev/null 2>&1 || true
    rabbitmqctl_q add_vhost "$RABBIT_VHOST" || return 1
    # add_user fails when the user exists (then its password is set) and, on a
    # loaded host, when the CLI's own VM times out: try again rather than fail.
    local try
    for try in 1 2 3; do
        if rabbitmqctl_q add_user "$RABBIT_USER" "$PASSWORD" >/dev/null 2>&1 ||
                rabbitmqctl_q change_password "$RABBIT_USER" "$PASSWORD"; then
            break
        fi
        ((try < 3)) || return 1
        log "setting the RabbitMQ user failed (try $try), trying again"
    done
    rabbitmqctl_q set_permissions -p "$RABBIT_VHOST" "$RABBIT_USER" '.*' '.*' '.*'
}
log "preparing databases and the RabbitMQ vhost"
if [[ $RABBIT_MODE == private ]]; then start_private_rabbit; fi
pids=()
step keystone-db setup_keystone & pids+=($!)
step placement-db placement-manage --config-file "$ETC/placement/placement.conf" db sync & pids+=($!)
step neutron-db setup_neutron & pids+=($!)
step cinder-db cinder-manage --config-file "$ETC/cinder/cinder.conf" db sync & pids+=($!)
step rabbit setup_rabbit & pids+=($!)
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=1; done
((rc == 0)) || exit 1
# WAL: readers never block the writer (the setting is kept in the file).
python - "$DATA"/*/*.db <<'PY'
import sqlite3, sys
for path in sys.argv[1:]:
    sqlite3.connect(path).execute("PRAGMA journal_mode=WAL").close()
PY
log "databases ready after $((SECONDS - t0))s"

# ---------------------------------------------------------------- services

spawn keystone uwsgi --ini "$ETC/keystone.uwsgi.ini"
wait_for keystone "$LOGS/keystone.log" ready_keystone
# The other APIs start while the catalog is filled: they need Keystone only
# when the first request comes in.
spawn placement uwsgi --ini "$ETC/placement.uwsgi.ini"
spawn neutron uwsgi --ini "$ETC/neutron.uwsgi.ini"
spawn cinder-api uwsgi --ini "$ETC/cinder-api.uwsgi.ini"
spawn cinder-scheduler cinder-scheduler --config-file "$ETC/cinder/cinder.conf" \
    --log-file "$LOGS/cinder-scheduler.log"
step catalog python "$HERE/stackctl.py" catalog --state "$STATE" --password "$PASSWORD"

fanout_queue() {
    rabbitmqctl_q list_queues -p "$RABBIT_VHOST" name | grep -q '^cinder-scheduler_fanout'
}
wait_for "the scheduler's fanout queue" "$LOGS/cinder-scheduler.log" fanout_queue
spawn cinder-volume cinder-volume --config-file "$ETC/cinder/cinder.conf" \
    --log-file "$LOGS/cinder-volume.log"

for p in placement neutron cinder-api; do wait_for "$p" "$LOGS/$p.log" "ready_$p"; done
wait_for "cinder's volume pool" "$LOGS/cinder-volume.log" \
    python "$HERE/stackctl.py" has-pool --state "$STATE"
for p in "${PROCS[@]}"; do "up_$p" || { log "ERROR: $p died"; tail -n 40 "$LOGS/$p.log" >&2; exit 1; }; done

touch "$RUN/ready"
log "up after $((SECONDS - t0))s: keystone :$KEYSTONE_PORT, placement :$PLACEMENT_PORT," \
    "neutron :$NEUTRON_PORT, cinder :$CINDER_PORT ($STATE/stack.json)"
