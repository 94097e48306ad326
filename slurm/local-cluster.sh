#!/usr/bin/env bash
# A single-node SLURM cluster on localhost, for trying lcbench's SLURM path on one machine.
#
#   slurm/local-cluster.sh start    install slurm-wlm and munge if missing (Debian/Ubuntu, as root), start
#                                   munged, slurmctld and slurmd; wait until the node is idle
#   slurm/local-cluster.sh stop     stop the daemons (state is kept under $LCBENCH_SLURM_DIR)
#   slurm/local-cluster.sh status   exit 0 when the cluster answers, 1 otherwise
#
# Fast requeue settings (credential expiry 10 s, scheduler passes every 5 s) let a preempted job restart in
# seconds instead of minutes. No accounting daemon: `sacct` does not work here, so lcbench never needs it.
set -euo pipefail

STATE_DIR=${LCBENCH_SLURM_DIR:-/var/tmp/lcbench-slurm}
HOST=$(hostname -s)
CONF=/etc/slurm/slurm.conf

die() { echo "local-cluster: $*" >&2; exit 1; }

cluster_up() { command -v sinfo >/dev/null && sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; }

install_packages() {
    command -v slurmctld >/dev/null && command -v munged >/dev/null && return
    [ "$(id -u)" = 0 ] || die "slurm-wlm and munge are not installed and installing them needs root"
    command -v apt-get >/dev/null || die "slurm-wlm and munge are missing and this is not a Debian system"
    echo "local-cluster: installing slurm-wlm and munge" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq slurm-wlm munge >/dev/null
}

start_munge() {
    pgrep -x munged >/dev/null && return
    mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
    [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
    chmod 400 /etc/munge/munge.key
    chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
    chmod 700 /etc/munge /var/log/munge /var/lib/munge
    runuser -u munge -- munged
}

write_conf() {
    local cpus mem
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    mkdir -p "$STATE_DIR"/{state,spool,log} /etc/slurm
    cat > "$CONF" <<EOF
# Written by lcbench slurm/local-cluster.sh: a single-node test cluster.
ClusterName=lcbench
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=10
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=5,bf_interval=5
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
MaxArraySize=10001
NodeName=$HOST CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
}

start() {
    if cluster_up; then echo "local-cluster: already up" >&2; return; fi
    install_packages
    start_munge
    write_conf
    pgrep -x slurmctld >/dev/null || slurmctld
    pgrep -x slurmd >/dev/null || slurmd
    for _ in $(seq 60); do
        if cluster_up; then echo "local-cluster: up ($HOST, $(nproc) CPUs)" >&2; return; fi
        scontrol update nodename="$HOST" state=resume >/dev/null 2>&1 || true
        sleep 1
    done
    die "the node did not become idle; see $STATE_DIR/log/"
}

stop() {
    pkill -x slurmd 2>/dev/null || true
    pkill -x slurmctld 2>/dev/null || true
    echo "local-cluster: stopped" >&2
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) cluster_up ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
