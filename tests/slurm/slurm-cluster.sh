#!/usr/bin/env bash
# A private single-node SLURM for the test suite: its own munged (own key and socket), slurmctld
# and slurmd, with every file under DIR and free ports on 127.0.0.1. Needs root (munged --force,
# SlurmUser=root) and Debian's slurmctld, slurmd, slurm-client and munge (ops/install-deps.sh).
#   tests/slurm/slurm-cluster.sh up DIR [CPUS]   # start; prints "SLURM_CONF=DIR/slurm.conf"
#   tests/slurm/slurm-cluster.sh down DIR        # stop the three daemons by pid, then any job
#                                                # process they left (by SLURM_CONF in its environment)
# `up` waits until sinfo shows the node idle; on failure it prints the daemons' logs and exits 1.
set -euo pipefail
cmd=${1:?usage: slurm-cluster.sh up|down DIR [CPUS]}
dir=$(realpath -m "${2:?usage: slurm-cluster.sh up|down DIR [CPUS]}")
cpus=${3:-8}

stop() {
  for d in slurmd slurmctld munged; do
    [ -f "$dir/$d.pid" ] || continue
    pid=$(cat "$dir/$d.pid" 2>/dev/null || true)
    [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  done
  for d in slurmd slurmctld munged; do
    [ -f "$dir/$d.pid" ] || continue
    pid=$(cat "$dir/$d.pid" 2>/dev/null || true)
    for _ in $(seq 50); do [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/$d.pid"
  done
}

logs() {
  for f in munged.log slurmctld.log slurmd.log; do
    echo "===== $dir/$f" >&2
    tail -n 40 "$dir/$f" >&2 2>/dev/null || echo "(none)" >&2
  done
}

free_port() {
  python3 - <<'PY'
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
PY
}

if [ "$cmd" = down ]; then
  stop
  # Jobs the daemons left behind (slurmstepd, srun and their tasks outlive slurmd): every process
  # started with this cluster's SLURM_CONF in its environment.
  unset SLURM_CONF
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    [ "$pid" = "$$" ] && continue
    if { tr '\0' '\n' < "$p/environ"; } 2>/dev/null | grep -qxF "SLURM_CONF=$dir/slurm.conf"; then
      kill -9 "$pid" 2>/dev/null || true
    fi
  done
  exit 0
fi
[ "$cmd" = up ] || { echo "slurm-cluster.sh: unknown command $cmd (up or down)" >&2; exit 2; }
for tool in munged slurmctld slurmd sinfo; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || {
    echo "slurm-cluster.sh: $tool is not installed (run ops/install-deps.sh)" >&2; exit 1; }
done
mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
chmod 0700 "$dir/munge"
dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
chmod 0400 "$dir/munge/munge.key"
/usr/sbin/munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/socket" \
  --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge/seed" || {
  logs; exit 1; }
node=$(hostname -s)
ctld_port=$(free_port)
slurmd_port=$(free_port)
cat > "$dir/slurm.conf" <<CONF
ClusterName=dd2test
SlurmctldHost=$node(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/socket,cred_expire=10
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MpiDefault=none
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=10
MinJobAge=600
JobRequeue=1
SlurmdParameters=config_overrides
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=8000 State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
export SLURM_CONF=$dir/slurm.conf
/usr/sbin/slurmctld -c -f "$SLURM_CONF" || { logs; stop; exit 1; }
/usr/sbin/slurmd -N "$node" -f "$SLURM_CONF" || { logs; stop; exit 1; }
for _ in $(seq 300); do
  if sinfo -h -o %T 2>/dev/null | grep -q '^idle'; then
    echo "SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.1
done
echo "slurm-cluster.sh: the node did not become idle within 30 s; sinfo says: $(sinfo 2>&1 | tr '\n' ' ')" >&2
logs
stop
exit 1
