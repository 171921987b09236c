#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for the requeue test and for trying the
# templates in slurm/ without a cluster. Needs root and Debian's packages:
#   apt-get install -y slurmctld slurmd slurm-client munge
#
#   slurm/local-cluster.sh start    # write slurm.conf, start munged, slurmctld, slurmd; wait for the node
#   slurm/local-cluster.sh status   # sinfo
#   slurm/local-cluster.sh stop     # stop the daemons
#
# Settings that work in a container without cgroups or systemd (SLURM 22.05): process tracking
# by /proc (proctrack/linuxproc), no task plugin, cons_tres selecting cores only (no memory
# accounting), and one node named after this host with its CPU count.
set -euo pipefail

CONF_DIR=/etc/slurm
STATE=/var/spool/slurmctld
SPOOL=/var/spool/slurmd
LOGS=/var/log/slurm
HOST=$(hostname -s)
CPUS=$(nproc)

need() { command -v "$1" >/dev/null 2>&1 || { echo "local-cluster: $1 not found; apt-get install -y slurmctld slurmd slurm-client munge" >&2; exit 2; }; }

write_conf() {
    mkdir -p "$CONF_DIR" "$STATE" "$SPOOL" "$LOGS"
    cat > "$CONF_DIR/slurm.conf" <<EOF
ClusterName=local
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE
SlurmdSpoolDir=$SPOOL
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
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

start() {
    need munged; need slurmctld; need slurmd; need sinfo
    write_conf
    if ! pgrep -x munged >/dev/null; then
        mkdir -p /run/munge && chown munge:munge /run/munge
        runuser -u munge -- /usr/sbin/munged
    fi
    pgrep -x slurmctld >/dev/null || slurmctld
    pgrep -x slurmd >/dev/null || slurmd
    for _ in $(seq 1 60); do
        state=$(sinfo -h -n "$HOST" -o %T 2>/dev/null || true)
        case "$state" in
            idle*|mixed*|allocated*) echo "local-cluster: node $HOST is $state"; return 0 ;;
            down*|drain*) scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true ;;
        esac
        sleep 1
    done
    echo "local-cluster: node $HOST did not come up; see $LOGS/slurmctld.log and $LOGS/slurmd.log" >&2
    exit 1
}

stop() {
    pkill -x slurmd || true
    pkill -x slurmctld || true
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) sinfo ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
