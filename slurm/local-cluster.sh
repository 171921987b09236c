#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for the SLURM tests and for trying the
# templates in slurm/ without a cluster. Needs root and Debian's packages:
#   apt-get install -y slurmctld slurmd slurm-client munge
#
#   slurm/local-cluster.sh start    # write its slurm.conf, start munged (unless one runs), slurmctld, slurmd
#   export SLURM_CONF=/run/lightning-redd-slurm/slurm.conf   # what `start` prints: sbatch, sinfo, ... use it
#   slurm/local-cluster.sh status   # sinfo
#   slurm/local-cluster.sh stop     # stop the daemons this script started, and only those
#
# Everything lives in one folder of its own, $LOCAL_SLURM_DIR (default /run/lightning-redd-slurm):
# slurm.conf (the machine's /etc/slurm is never touched), state, spool, logs and one PID file per
# daemon it started. `stop` ends exactly the processes of those PID files (checking that each PID
# still runs that daemon); a munged that was already running is used and left running, and a
# slurmctld or slurmd not started by this script makes `start` refuse (it is never stopped).
#
# Settings that work in a container without cgroups or systemd (SLURM 22.05): process tracking
# by /proc (proctrack/linuxproc), no task plugin, cons_tres selecting cores only (no memory
# accounting), and one node named after this host with its CPU count.
set -euo pipefail

DIR=${LOCAL_SLURM_DIR:-/run/lightning-redd-slurm}
CONF=$DIR/slurm.conf
HOST=$(hostname -s)
# the cores this machine lets us use (not nproc alone: it honours OMP_NUM_THREADS, which a user or a
# test runner may have set to 1, and a 1-CPU node never starts a 2-task job)
CPUS=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)

need() { command -v "$1" >/dev/null 2>&1 || { echo "local-cluster: $1 not found; apt-get install -y slurmctld slurmd slurm-client munge" >&2; exit 2; }; }

# our_pid NAME: the PID in $DIR/NAME.pid if that process still runs NAME (else nothing)
our_pid() {
    local pid
    pid=$(cat "$DIR/$1.pid" 2>/dev/null || true)
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    [ "$(cat "/proc/$pid/comm" 2>/dev/null || true)" = "$1" ] && echo "$pid"
    return 0
}

# running PID: the process exists and has not ended (a zombie waiting for its parent has)
running() { [ -r "/proc/$1/stat" ] && ! sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | grep -q '^Z'; }

write_conf() {
    mkdir -p "$DIR/state" "$DIR/spool" "$DIR/log"
    cat > "$CONF" <<EOF
ClusterName=local
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=10
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=$HOST CPUs=$CPUS State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
EOF
}

start_daemon() {  # start_daemon NAME: start slurmctld/slurmd on our conf unless ours already runs
    local name=$1
    [ -n "$(our_pid "$name")" ] && return 0
    local other
    other=$(pgrep -x "$name" | tr '\n' ' ' || true)
    if [ -n "$other" ]; then
        echo "local-cluster: a $name not started by this script is running (PID $other); stop it yourself or use that cluster" >&2
        exit 1
    fi
    "$name" -f "$CONF"   # forks; writes $DIR/$name.pid (SlurmctldPidFile / SlurmdPidFile)
    for _ in $(seq 1 50); do [ -n "$(our_pid "$name")" ] && return 0; sleep 0.1; done
    echo "local-cluster: $name did not start; see $DIR/log/$name.log" >&2
    exit 1
}

start() {
    need munged; need slurmctld; need slurmd; need sinfo
    mkdir -p "$DIR"
    write_conf
    export SLURM_CONF=$CONF
    if [ -z "$(our_pid munged)" ] && ! pgrep -x munged >/dev/null; then
        mkdir -p /run/munge && chown munge:munge /run/munge
        runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
        cp /run/munge/munged.pid "$DIR/munged.pid"
    fi
    start_daemon slurmctld
    start_daemon slurmd
    for _ in $(seq 1 60); do
        state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null || true)
        case "$state" in
            idle*|mixed*|allocated*) echo "local-cluster: node $HOST is $state; export SLURM_CONF=$CONF"; return 0 ;;
            down*|drain*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 1
    done
    echo "local-cluster: node $HOST did not come up; see $DIR/log/slurmctld.log and $DIR/log/slurmd.log" >&2
    exit 1
}

stop() {
    local name pid
    for name in slurmd slurmctld munged; do
        pid=$(our_pid "$name")
        if [ -n "$pid" ]; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do running "$pid" || break; sleep 0.1; done
            running "$pid" && kill -KILL "$pid" 2>/dev/null || true
            echo "local-cluster: stopped $name (PID $pid)"
        fi
        rm -f "$DIR/$name.pid"
    done
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) SLURM_CONF=$CONF sinfo ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
