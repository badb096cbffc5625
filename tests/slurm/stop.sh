#!/usr/bin/env bash
# Stop the test cluster of tests/slurm/start.sh: cancel its jobs, then kill every daemon that
# start.sh started, by the PID it recorded (slurmd, slurmctld, slurmdbd, mariadb, munged),
# and remove the fake GPU device nodes and the /etc/slurm/slurm.conf link it created. Logs
# and state stay in STATE_DIR.
#
#   tests/slurm/stop.sh [STATE_DIR]      # default $MM_SLURM_DIR or /tmp/motionmatcher-slurm
set -uo pipefail

STATE=${1:-${MM_SLURM_DIR:-/tmp/motionmatcher-slurm}}
log() { echo "[slurm stop] $*" >&2; }
[ -d "$STATE/pids" ] || { log "nothing to stop in $STATE"; exit 0; }
export PATH="$PATH:/usr/sbin:/sbin"
export SLURM_CONF="$STATE/etc/slurm.conf"

alive() { [ -s "$STATE/pids/$1.pid" ] && kill -0 "$(cat "$STATE/pids/$1.pid")" 2>/dev/null; }

# Jobs first, so that no slurmstepd outlives its slurmd.
if alive slurmctld; then
    scancel --full --signal=KILL --cluster="$(awk -F= '/^ClusterName=/ {print $2}' "$SLURM_CONF")" \
        --state=RUNNING,PENDING --user="$(id -un)" >/dev/null 2>&1 || true
    for _ in $(seq 1 40); do
        [ -z "$(squeue -h -t RUNNING,PENDING,COMPLETING -o %i 2>/dev/null)" ] && break
        sleep 0.25
    done
fi

stop_pid() {
    local name=$1 pidfile="$STATE/pids/$1.pid" pid
    [ -s "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null
        for _ in $(seq 1 80); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.25
        done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name ($pid) ignored SIGTERM, sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
        log "stopped $name ($pid)"
    fi
    rm -f "$pidfile"
}

for name in slurmd slurmctld slurmdbd mariadb munged; do
    stop_pid "$name"
done

if [ -s "$STATE/fake_devices" ]; then
    while read -r dev; do
        [ -c "$dev" ] && rm -f "$dev"
    done <"$STATE/fake_devices"
    : >"$STATE/fake_devices"
fi
if [ -s "$STATE/created_links" ]; then
    while read -r link; do
        [ -L "$link" ] && [ "$(readlink "$link")" = "$STATE/etc/slurm.conf" ] && rm -f "$link"
    done <"$STATE/created_links"
    : >"$STATE/created_links"
fi
exit 0
