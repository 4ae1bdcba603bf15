#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for `sweep.py --executor slurm` and its tests.
#
#   sudo bash scripts/local_slurm.sh      # idempotent: safe to run again, never starts second daemons
#
# Installs Debian's slurm-wlm and munge (apt-get, as root), writes a munge key and /etc/slurm/slurm.conf
# (node "localhost" with this machine's cores and memory, partition "debug"), starts munged, slurmctld
# and slurmd as daemons, and waits until `srun hostname` works. Never fatal: without root or apt it
# says why and exits 0, and on any other failure it prints what went wrong and exits 0 (the tests that
# need Slurm skip themselves when it is not there).
set -uo pipefail

say() { echo "local_slurm: $*" >&2; }
give_up() { say "$*"; exit 0; }
# A daemon is up when a live (not zombie) process has its exact name.
up() { pgrep -x "$1" -r R,S,D,I >/dev/null 2>&1 || pgrep -x "$1" -r R,S,D >/dev/null 2>&1; }

# Already up (e.g. a second run): nothing to do.
if command -v sinfo >/dev/null && timeout 10 sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
  echo "local_slurm: Slurm is already running ($(sinfo -h -o '%P %D %T' | head -1))"
  exit 0
fi

[ "$(id -u)" = 0 ] || give_up "not root: cannot install or start Slurm (run: sudo bash $0)"
command -v apt-get >/dev/null || give_up "no apt-get: install slurm-wlm and munge by hand"

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
  say "installing slurm-wlm and munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  (apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null 2>&1 \
         && apt-get install -y -q --no-install-recommends slurm-wlm munge >/dev/null 2>&1; }) \
    || give_up "apt-get could not install slurm-wlm and munge"
fi

# munge: a key readable by the munge user only, then the daemon as that user.
install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  if command -v mungekey >/dev/null; then
    mungekey --create --force --keyfile=/etc/munge/munge.key >/dev/null 2>&1
  else
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
if ! up munged; then
  runuser -u munge -- /usr/sbin/munged || give_up "munged did not start (see /var/log/munge/munged.log)"
fi
for _ in $(seq 20); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.5; done
munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || give_up "munge does not work (see /var/log/munge/munged.log)"

# slurm.conf: one node with this machine's cores and memory (MiB, less a margin for the system).
cpus=$(nproc)
mem_mib=$(awk '/^MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
install -d -m 0755 /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
conf=/etc/slurm/slurm.conf
new_conf=$(cat <<EOF
# Written by scripts/local_slurm.sh: a one-node cluster on localhost.
ClusterName=local
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
JobRequeue=1
MpiDefault=none
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
KillWait=30
MinJobAge=300
Waittime=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mib State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
)
if [ ! -f "$conf" ] || [ "$(cat "$conf")" != "$new_conf" ]; then
  printf '%s\n' "$new_conf" > "$conf"
  up slurmctld && timeout 10 scontrol reconfigure >/dev/null 2>&1  # daemons already up read it again
fi

if ! up slurmctld; then
  slurmctld || give_up "slurmctld did not start (see /var/log/slurm/slurmctld.log)"
fi
if ! up slurmd; then
  slurmd -N localhost || give_up "slurmd did not start (see /var/log/slurm/slurmd.log)"
fi

# Wait (at most 60 s) for the node to be idle and a job step to run.
for _ in $(seq 60); do
  state=$(timeout 5 sinfo -h -n localhost -o %T 2>/dev/null | head -1)
  case "$state" in
    idle|mixed|allocated) break ;;
    down*|drain*) timeout 5 scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 ;;
  esac
  sleep 1
done
case "$state" in idle|mixed|allocated) ;; *) give_up "node localhost is '${state:-unknown}' after 60 s (see /var/log/slurm/)";; esac
host=$(timeout 60 srun -N1 -n1 -t 1 hostname 2>&1) || give_up "srun hostname failed: $host"
echo "local_slurm: ready: partition debug, node localhost ($cpus CPUs, ${mem_mib} MiB), srun ran on $host"
