#!/usr/bin/env bash
# Stop the OpenStack test stack: each process by its pid (run/<name>.pid), all at once,
# SIGTERM first and SIGKILL after a grace period; then, on the test host's
# broker (OPENSTACK_RABBIT=shared), remove the stack's vhost and user (a private
# broker node goes with its data). Data and logs stay under
# $OPENSTACK_STATE until the next start.sh. Stopping a stopped stack is a no-op.
set -uo pipefail
. "$(dirname "$0")/lib.sh"

[[ $(id -u) == 0 ]] || { log "must run as root"; exit 2; }
lock_stack

# children PID: the direct children of PID (cinder-volume forks one per backend,
# uWSGI's master its worker).
children() { pgrep -P "$1" 2>/dev/null || true; }

# stop_proc NAME: TERM the process and its children, KILL whatever is left after
# 10 s. cinder-volume's backend child may ignore the parent's shutdown for longer.
stop_proc() {
    local name=$1 pid kids deadline p
    pid=$(pid_of "$name")
    [[ -n $pid ]] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kids=$(children "$pid")
        kill -TERM "$pid" 2>/dev/null
        deadline=$((SECONDS + 10))
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
        for p in $kids; do kill -TERM "$p" 2>/dev/null; done
        while ((SECONDS < deadline)); do
            local any=0
            for p in $pid $kids; do kill -0 "$p" 2>/dev/null && any=1; done
            ((any)) || break
            sleep 0.2
        done
        for p in $pid $kids; do
            if kill -0 "$p" 2>/dev/null; then
                log "$name: pid $p ignores SIGTERM, killing it"; kill -KILL "$p" 2>/dev/null
            fi
        done
    fi
    rm -f "$RUN/$name.pid"
}

rm -f "$RUN/ready" "$RUN/rabbitmq-vm.pid"   # the broker VM's own pid file
pids=()
for ((i = ${#PROCS[@]} - 1; i >= 0; i--)); do
    p=${PROCS[i]}
    [[ -e $RUN/$p.pid ]] || continue
    log "stopping $p"
    stop_proc "$p" & pids+=($!)
done
for p in "${pids[@]}"; do wait "$p"; done
# Leftovers in no pid file: a child whose parent was killed (cinder-volume's
# backend process, the broker's VM) still has this stack's daemon command line:
# its config under etc/ (or, for the VM, its data under data/rabbitmq/).
left=$(pgrep -f -- "(--config-file|--ini) $ETC/|$DATA/rabbitmq/" || true)
if [[ -n $left ]]; then
    log "stopping leftover processes: $(echo $left)"
    kill -TERM $left 2>/dev/null; sleep 3
    for p in $left; do kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null; done
fi
if [[ $RABBIT_MODE == shared ]] && rabbitmqctl_q list_vhosts 2>/dev/null | grep -qx "$RABBIT_VHOST"; then
    rabbitmqctl_q delete_vhost "$RABBIT_VHOST" >/dev/null
    rabbitmqctl_q delete_user "$RABBIT_USER" >/dev/null 2>&1 || true
fi
log "stopped"
