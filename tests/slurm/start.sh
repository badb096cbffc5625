#!/usr/bin/env bash
# A real single-node Slurm cluster on this machine, for tests/test_slurm.py and for trying the
# Slurm profile by hand (Debian/Ubuntu, as root):
#
#   tests/slurm/start.sh [STATE_DIR]      # default $MM_SLURM_DIR or /tmp/motionmatcher-slurm
#   source STATE_DIR/env.sh               # SLURM_CONF=STATE_DIR/etc/slurm.conf
#   sinfo; snakemake --profile profiles/slurm ...
#   tests/slurm/stop.sh [STATE_DIR]
#
# Installs slurmctld, slurmd, slurm-client, slurmdbd, munge and mariadb-server when missing,
# then starts, each from its own config (slurm.conf from tests/slurm/slurm.conf.template),
# state, log and pid files under STATE_DIR and on private ports (a system MySQL keeps running; /etc/slurm/slurm.conf, where job steps look for the
# configuration, becomes a link to STATE_DIR/etc/slurm.conf while the cluster runs; start.sh
# refuses to run when another slurm.conf is there):
#   munged (only when no munged answers on /run/munge already), mariadbd (own datadir, socket,
#   TCP 127.0.0.1:$MM_SLURM_PORT+3), slurmdbd, slurmctld, slurmd -N localhost,
# with MM_SLURM_GPUS fake GPUs (character devices /dev/fakegpuN, gres/gpu) so that `--gpus=1`
# jobs are schedulable, partition `debug` (default), accounting in slurmdbd (sacct works;
# AllocTRES/ReqTRES record gres/gpu; job comments are stored; no enforcement).
# PIDs of every daemon it started go to STATE_DIR/pids/<name>.pid; stop.sh kills exactly those.
#
# Environment: MM_SLURM_DIR, MM_SLURM_PORT (base port, default 16817: slurmctld, +1 slurmd,
# +2 slurmdbd, +3 mariadb), MM_SLURM_GPUS (default 2), MM_SLURM_CLUSTER (default mmtest),
# MM_SLURM_MIN_JOB_AGE (default 300), MM_SLURM_ACCOUNTING (1 = slurmdbd, default; 0 = no
# slurmdbd/mariadb: sacct does not work, use the profile option `slurm-status-command: squeue`).
set -euo pipefail

STATE=${1:-${MM_SLURM_DIR:-/tmp/motionmatcher-slurm}}
PORT=${MM_SLURM_PORT:-16817}
NGPU=${MM_SLURM_GPUS:-2}
CLUSTER=${MM_SLURM_CLUSTER:-mmtest}
MIN_JOB_AGE=${MM_SLURM_MIN_JOB_AGE:-300}
ACCOUNTING=${MM_SLURM_ACCOUNTING:-1}
NODE=localhost
PARTITION=debug

log() { echo "[slurm start] $*" >&2; }
die() {
    log "ERROR: $*"
    # stop what this run already started (nothing before the PID folder exists)
    if [ -n "${STARTED:-}" ]; then bash "$(dirname "$0")/stop.sh" "$STATE" >&2 || true; fi
    exit 1
}

[ "$(id -u)" = 0 ] || die "must run as root (installs packages, runs the daemons as root)"

# ------------------------------------------------------------------ packages
PKGS=(slurmctld slurmd slurm-client munge)
BINS=(slurmctld slurmd sbatch munged)
if [ "$ACCOUNTING" = 1 ]; then
    PKGS+=(slurmdbd mariadb-server)
    BINS+=(slurmdbd mariadbd)
fi
missing=0
for b in "${BINS[@]}"; do
    command -v "$b" >/dev/null 2>&1 || [ -x "/usr/sbin/$b" ] || missing=1
done
if [ "$missing" = 1 ]; then
    command -v apt-get >/dev/null 2>&1 || die "Slurm is not installed and there is no apt-get"
    log "installing ${PKGS[*]}"
    # No service of the packages may start (ours run from STATE); a container usually has
    # this policy already, a host gets it for the duration of the install only.
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y --no-install-recommends "${PKGS[@]}" >"/tmp/mm-slurm-apt.log" 2>&1; then
        log "apt-get install failed, running apt-get update first"
        apt-get update >>"/tmp/mm-slurm-apt.log" 2>&1 || true
        apt-get install -y --no-install-recommends "${PKGS[@]}" >>"/tmp/mm-slurm-apt.log" 2>&1 \
            || { [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d; tail -20 /tmp/mm-slurm-apt.log >&2; die "apt-get install failed (log /tmp/mm-slurm-apt.log)"; }
    fi
    [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi
export PATH="$PATH:/usr/sbin:/sbin"

# ------------------------------------------------------------------ already running?
alive() { [ -s "$STATE/pids/$1.pid" ] && kill -0 "$(cat "$STATE/pids/$1.pid")" 2>/dev/null; }
if alive slurmctld && alive slurmd; then
    export SLURM_CONF="$STATE/etc/slurm.conf"
    if sinfo -h -N -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
        log "already running in $STATE"
        exit 0
    fi
    die "daemons of $STATE are running but the node is not usable; run tests/slurm/stop.sh $STATE first"
fi

mkdir -p "$STATE"/{etc,log,pids,run,state/ctld,state/d,mysql}
STATE=$(cd "$STATE" && pwd)
rm -f "$STATE"/pids/*.pid
STARTED=1
export SLURM_CONF="$STATE/etc/slurm.conf"

# start_daemon NAME CMD...: run in the foreground mode of the daemon, in the background here
start_daemon() {
    local name=$1; shift
    "$@" >>"$STATE/log/$name.out" 2>&1 &
    echo $! >"$STATE/pids/$name.pid"
}
# wait_for WHAT SECONDS CMD...: poll CMD until it succeeds
wait_for() {
    local what=$1 secs=$2; shift 2
    for _ in $(seq 1 $((secs * 4))); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.25
    done
    die "$what did not come up within ${secs}s; logs in $STATE/log"
}
check_alive() {
    alive "$1" || { tail -30 "$STATE/log/$1".* >&2 || true; die "$1 exited; logs in $STATE/log"; }
}

# ------------------------------------------------------------------ free ports, slurm.conf path
for p in "$PORT" $((PORT + 1)) $((PORT + 2)) $((PORT + 3)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        die "port $p is in use (another cluster?); set MM_SLURM_PORT to a free base port"
    fi
done
# Job steps: the plugin's jobstep runs `srun` with every SLURM_* variable (SLURM_CONF too)
# removed, so srun finds the configuration only at the compiled-in path. Link it there, unless
# another Slurm's configuration is in the way (a dangling link of an earlier run is replaced).
SYSCONF=/etc/slurm/slurm.conf
if [ -L "$SYSCONF" ] && { [ "$(readlink "$SYSCONF")" = "$STATE/etc/slurm.conf" ] || [ ! -e "$SYSCONF" ]; }; then
    rm -f "$SYSCONF"
fi
if [ -e "$SYSCONF" ]; then
    other=$(dirname "$(dirname "$(readlink -f "$SYSCONF")")")
    if [ -e "$other/.motionmatcher-slurm" ]; then
        die "another test cluster runs from $other (its $SYSCONF link); stop it first: tests/slurm/stop.sh $other"
    fi
    die "$SYSCONF exists (a Slurm installation of this machine?); job steps of the test cluster need that path; move it away or test on that cluster"
fi
mkdir -p /etc/slurm
ln -s "$STATE/etc/slurm.conf" "$SYSCONF"
echo "$SYSCONF" >"$STATE/created_links"
touch "$STATE/.motionmatcher-slurm"

# ------------------------------------------------------------------ munge
munge_ok() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }
if munge_ok; then
    log "munged already running, using it"
else
    mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
    if [ ! -s /etc/munge/munge.key ]; then
        if command -v mungekey >/dev/null 2>&1; then mungekey --create --keyfile=/etc/munge/munge.key
        else create-munge-key -f; fi
    fi
    if id munge >/dev/null 2>&1; then
        chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge /etc/munge/munge.key
        chmod 0700 /etc/munge; chmod 0600 /etc/munge/munge.key; chmod 0755 /run/munge
        start_daemon munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged -F
    else
        start_daemon munged /usr/sbin/munged -F --force
    fi
    wait_for munged 20 munge_ok
fi

# ------------------------------------------------------------------ fake GPUs
: >"$STATE/fake_devices"
GRES_LINES=""
# (major 240: "local/experimental use", no driver claims it). Where mknod is not allowed (a
# container without CAP_MKNOD), distinct existing character devices stand in: with
# task/none nothing ever opens or constrains them, Slurm only counts and numbers them.
SPARE_DEVS=(/dev/zero /dev/full /dev/urandom /dev/random /dev/tty /dev/ptmx /dev/kmsg /dev/mem)
for i in $(seq 0 $((NGPU - 1))); do
    dev=/dev/fakegpu$i
    if [ ! -e "$dev" ]; then
        if mknod "$dev" c 240 "$i" 2>/dev/null; then
            echo "$dev" >>"$STATE/fake_devices"
        else
            dev=${SPARE_DEVS[$i]:-}
            [ -n "$dev" ] && [ -c "$dev" ] || die "mknod /dev/fakegpu$i failed and no spare character device; set MM_SLURM_GPUS=0"
            log "mknod not permitted: fake GPU $i is $dev"
        fi
    fi
    GRES_LINES+="NodeName=$NODE Name=gpu File=$dev"$'\n'
done

# ------------------------------------------------------------------ node size
read -r CPUS REALMEM < <(slurmd -C | awk '/^NodeName/ {for (i=1;i<=NF;i++) {split($i,a,"="); v[a[1]]=a[2]} print v["CPUs"], v["RealMemory"]}')
[ -n "${CPUS:-}" ] && [ -n "${REALMEM:-}" ] || die "slurmd -C did not report CPUs/RealMemory"
REALMEM=$((REALMEM * 9 / 10))          # leave room for the daemons and the workflow itself
DEFMEM=$((REALMEM / CPUS / 4))          # a job that asks for no memory gets a quarter per CPU
GRES_NODE=""; [ "$NGPU" -gt 0 ] && GRES_NODE="Gres=gpu:$NGPU"

# ------------------------------------------------------------------ accounting: mariadb + slurmdbd
ACCT_LINES="AccountingStorageType=accounting_storage/none"
if [ "$ACCOUNTING" = 1 ]; then
    DBPORT=$((PORT + 3)); DBDPORT=$((PORT + 2))
    SOCK="$STATE/run/mysqld.sock"
    DBPASS=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
    if [ ! -d "$STATE/mysql/mysql" ]; then
        log "initialising mariadb in $STATE/mysql"
        mariadb-install-db --no-defaults --datadir="$STATE/mysql" --user=root \
            --auth-root-authentication-method=socket --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1 \
            || { tail -20 "$STATE/log/mariadb-install.log" >&2; die "mariadb-install-db failed"; }
    fi
    start_daemon mariadb /usr/sbin/mariadbd --no-defaults --user=root --datadir="$STATE/mysql" \
        --socket="$SOCK" --pid-file="$STATE/run/mariadb.pid" --log-error="$STATE/log/mariadb.log" \
        --port="$DBPORT" --bind-address=127.0.0.1 --skip-name-resolve \
        --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 --innodb-log-file-size=64M
    mysql_ok() { mariadb --no-defaults -S "$SOCK" -uroot -e 'SELECT 1'; }
    wait_for mariadb 60 mysql_ok
    check_alive mariadb
    mariadb --no-defaults -S "$SOCK" -uroot -e "
        CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DBPASS';
        ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DBPASS';
        GRANT ALL ON \`slurm_acct_db\`.* TO 'slurm'@'127.0.0.1';
        FLUSH PRIVILEGES;" || die "could not create the slurm database user"

    cat >"$STATE/etc/slurmdbd.conf" <<EOF
# written by tests/slurm/start.sh
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBDPORT
SlurmUser=root
DebugLevel=info
LogFile=$STATE/log/slurmdbd.log
PidFile=$STATE/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DBPORT
StorageUser=slurm
StoragePass=$DBPASS
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$STATE/etc/slurmdbd.conf"
    ACCT_LINES="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBDPORT
AccountingStorageTRES=gres/gpu
AccountingStoreFlags=job_comment
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=30"
fi

# ------------------------------------------------------------------ slurm.conf
SLURMD_PORT=$((PORT + 1))
render() {  # expand the ${VARIABLES} of a template (no command substitution: templates are ours)
    local line
    while IFS= read -r line || [ -n "$line" ]; do
        eval "printf '%s\\n' \"$line\""
    done <"$1"
}
render "$(dirname "$0")/slurm.conf.template" >"$STATE/etc/slurm.conf"
printf '%s' "$GRES_LINES" >"$STATE/etc/gres.conf"
cat >"$STATE/env.sh" <<EOF
# source this to talk to the test cluster in $STATE
export SLURM_CONF=$STATE/etc/slurm.conf
EOF

if [ "$ACCOUNTING" = 1 ]; then
    start_daemon slurmdbd /usr/sbin/slurmdbd -D
    wait_for slurmdbd 60 sacctmgr -n list cluster
    check_alive slurmdbd
    sacctmgr -i add cluster "$CLUSTER" >/dev/null 2>&1 || true
    sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || die "cluster $CLUSTER not registered in slurmdbd"
fi

# ------------------------------------------------------------------ slurmctld, slurmd
start_daemon slurmctld /usr/sbin/slurmctld -D
wait_for slurmctld 60 scontrol ping
check_alive slurmctld
start_daemon slurmd /usr/sbin/slurmd -D -N "$NODE"
node_idle() { sinfo -h -N -n "$NODE" -o '%T' | grep -qx idle; }
wait_for "node $NODE (idle)" 90 node_idle
check_alive slurmd
log "cluster $CLUSTER up in $STATE: node $NODE CPUs=$CPUS RealMemory=$REALMEM gpus=$NGPU, partition $PARTITION"
log "use it with: source $STATE/env.sh"
