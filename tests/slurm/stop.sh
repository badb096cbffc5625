#!/usr/bin/env bash
# Stop the test cluster of tests/slurm/start.sh: cancel its jobs, then kill every daemon that
# start.sh started, by the PID it recorded (slurmd, slurmctld, slurmdbd, mariadb, munged),
# then every job process the cluster left behind (slurmstepd and job scripts survive their
# slurmd by design; a killed test, or a dead slurmctld that cannot scancel, would leave them
# running), and remove the fake GPU device nodes and the /etc/slurm/slurm.conf link it
# created. Logs and state stay in STATE_DIR.
#
# Job processes are found from this cluster's own state only: the PIDs `scontrol listpids`
# reports while slurmd is up, the children of the recorded slurmd, and processes whose
# environment names this cluster's configuration (SLURM_CONF=STATE_DIR/etc/slurm.conf, which
# slurmd and its slurmstepd inherit from start.sh and Slurm sets in every job) and that are a
# job (SLURM_JOB_ID set) or a slurmstepd. Nothing is matched by a process name alone.
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

# job_pids: job processes of this cluster (see the header), one PID a line
job_pids() {
    local pid env cmd slurmd_pid=""
    [ -s "$STATE/pids/slurmd.pid" ] && slurmd_pid=$(cat "$STATE/pids/slurmd.pid")
    if alive slurmd; then
        scontrol listpids 2>/dev/null | awk 'NR > 1 && $1 ~ /^[0-9]+$/ {print $1}'
        [ -n "$slurmd_pid" ] && pgrep -P "$slurmd_pid" 2>/dev/null
    fi
    for dir in /proc/[0-9]*; do
        pid=${dir#/proc/}
        [ "$pid" = "$$" ] && continue
        # (braces: a process gone since the glob fails the redirection itself, quietly)
        env=$({ tr '\0' '\n' <"$dir/environ"; } 2>/dev/null) || continue
        grep -qxF "SLURM_CONF=$SLURM_CONF" <<<"$env" || continue
        cmd=$({ tr '\0' ' ' <"$dir/cmdline"; } 2>/dev/null)
        if grep -q '^SLURM_JOB_ID=' <<<"$env" || [[ $cmd == slurmstepd* ]]; then
            echo "$pid"
        fi
    done
}

kill_job_processes() {
    local pids
    pids=$(job_pids | sort -un | grep -vx "$$" || true)
    [ -n "$pids" ] || return 0
    log "ending job processes left by the cluster: $(echo $pids)"
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
    for _ in $(seq 1 40); do
        local left=""
        for pid in $pids; do
            [ -d "/proc/$pid" ] && [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ] && left="$left $pid"
        done
        [ -z "$left" ] && return 0
        sleep 0.25
    done
    log "still alive after SIGKILL:$left"
}

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

kill_job_processes   # while slurmd is up, it names its jobs' PIDs
for name in slurmd slurmctld slurmdbd mariadb munged; do
    stop_pid "$name"
done
kill_job_processes   # whatever outlived slurmd

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
