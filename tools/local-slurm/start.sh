#!/usr/bin/env bash
# tools/local-slurm/start.sh -- install, configure and start a single-host Slurm
# "cluster" (munged + slurmctld + N x slurmd [+ MariaDB + slurmdbd]) on
# localhost, as root, without systemd and without cgroups. benscale's tests run
# the scaling study through profiles/slurm on it (tests/test_slurm.py).
#
# Idempotent: re-running it is a no-op when everything is already up with the
# same configuration; a changed configuration restarts the slurm daemons.
# stop.sh stops exactly the daemons this script started.
# (Adapted from the reference harness in ../shared/tools/local-slurm/.)
#
# Tunables (environment):
#   LOCAL_SLURM_DIR        state/log/pid dir            (default: $TMPDIR or /tmp, then /benscale-slurm)
#   LOCAL_SLURM_NODES      number of fake compute nodes (default: 2)
#   LOCAL_SLURM_CPUS       CPUs advertised per node     (default: 4)
#   LOCAL_SLURM_MEM_MB     RealMemory per node (MB)     (default: 8000)
#   LOCAL_SLURM_GPUS       fake GPUs per node, 0 = none (default: 2)
#   LOCAL_SLURM_PARTITION  default partition name       (default: debug)
#   LOCAL_SLURM_TIMEOUT    seconds to wait for idle     (default: 60)
#   LOCAL_SLURM_MIN_JOB_AGE seconds finished jobs stay visible to squeue/scontrol (default: 300)
#   LOCAL_SLURM_ACCOUNTING 1 = also run slurmdbd on a private MariaDB so that
#                          sacct/sacctmgr/sshare work   (default: 0)
#   LOCAL_SLURM_DB_PORT    MariaDB TCP port on 127.0.0.1 (default: 3307)
#
# The config is written to /etc/slurm/slurm.conf (+ gres.conf): it MUST be at
# the compiled-in default path, because snakemake-executor-plugin-slurm-jobstep
# strips SLURM_CONF (and every other SLURM_* variable) from the environment of
# the nested srun it runs inside each job.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BASE=${LOCAL_SLURM_DIR:-${TMPDIR:-/tmp}/benscale-slurm}
NNODES=${LOCAL_SLURM_NODES:-2}
CPUS=${LOCAL_SLURM_CPUS:-4}
MEM=${LOCAL_SLURM_MEM_MB:-8000}
GPUS=${LOCAL_SLURM_GPUS:-2}
PART=${LOCAL_SLURM_PARTITION:-debug}
WAIT=${LOCAL_SLURM_TIMEOUT:-60}
MINJOBAGE=${LOCAL_SLURM_MIN_JOB_AGE:-300}
ACCT=${LOCAL_SLURM_ACCOUNTING:-0}
DBPORT=${LOCAL_SLURM_DB_PORT:-3307}
CONF_DIR=/etc/slurm
RUN=$BASE/run
LOG=$BASE/log
T0=$(date +%s%N)

log() { local ms=$(( ($(date +%s%N) - T0) / 1000000 )); printf '[benscale-slurm %d.%03ds] %s\n' $((ms / 1000)) $((ms % 1000)) "$*"; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root"

# shellcheck source=pidfiles.sh
. "$SCRIPT_DIR/pidfiles.sh"

wait_alive() {  # daemons write their pid file only after forking
  local i; for i in $(seq 1 100); do alive "$1" "$2" && return 0; sleep 0.1; done; return 1
}


# ---------------------------------------------------------------- 1. install
PKGS="slurmctld slurmd slurm-client munge"
[ "$ACCT" = 1 ] && PKGS="$PKGS slurmdbd mariadb-server"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
  log "installing:$missing"
  APTLOG=${TMPDIR:-/tmp}/benscale-slurm-apt.log
  # never let the packages' maintainer scripts start services
  made_policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  # try with the lists we have; on failure (none, or stale) update and retry
  if ! apt-get install -y -q --no-install-recommends $missing >"$APTLOG" 2>&1; then
    apt-get update -q >>"$APTLOG" 2>&1 || true
    if ! apt-get install -y -q --no-install-recommends $missing >>"$APTLOG" 2>&1; then
      [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
      tail -20 "$APTLOG"; die "apt-get install failed (see $APTLOG)"
    fi
  fi
  [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
  log "installed $(dpkg-query -W -f='${Package}=${Version} ' slurmctld munge)"
fi

# ---------------------------------------------------------------- 2. configure
HOST=$(hostname -s)
mkdir -p "$BASE/ctld" "$RUN" "$LOG" "$CONF_DIR"
# per-node TmpFS: the PMIx plugin puts its client dir under TmpFS, and two
# slurmd on one host would otherwise collide on /tmp/spmix_appdir_<job>.<step>
for i in $(seq 1 "$NNODES"); do mkdir -p "$BASE/spool/node$i" "$BASE/tmp/node$i"; chmod 1777 "$BASE/tmp/node$i"; done
if [ "$NNODES" -gt 1 ]; then NODES="node[1-$NNODES]"; PORTS="[17001-$((17000 + NNODES))]"; else NODES=node1; PORTS=17001; fi

GRES_NODE=""; GRESTYPES=""
if [ "$GPUS" -gt 0 ]; then
  # gres/gpu needs File= entries that are character devices ("file-less" GPUs
  # are dropped by slurmd). Symlinks to /dev/null are accepted; with
  # task/none there is no device cgroup, CUDA_VISIBLE_DEVICES is still set.
  mkdir -p "$BASE/fakegpu"
  for g in $(seq 0 $((GPUS - 1))); do ln -sfn /dev/null "$BASE/fakegpu/nvidia$g"; done
  GRES_NODE=" Gres=gpu:$GPUS"; GRESTYPES="GresTypes=gpu"
fi

if [ "$ACCT" = 1 ]; then
  ACCT_CONF="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux"
else
  ACCT_CONF="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi

NEWCONF=$(mktemp); NEWGRES=$(mktemp)
cat >"$NEWCONF" <<EOF
# generated by benscale tools/local-slurm/start.sh -- single-host test cluster
ClusterName=localcluster
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
SlurmctldPort=6817
StateSaveLocation=$BASE/ctld
SlurmdSpoolDir=$BASE/spool/%n
TmpFS=$BASE/tmp/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/slurmd-%n.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
$ACCT_CONF
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# without a default, a job that gives no --mem gets the whole node's memory
DefMemPerCPU=$((MEM / CPUS))
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
ReturnToService=2
MinJobAge=$MINJOBAGE
MpiDefault=none
MailProg=/bin/true
$GRESTYPES
NodeName=$NODES NodeHostname=$HOST NodeAddr=127.0.0.1 Port=$PORTS CPUs=$CPUS RealMemory=$MEM$GRES_NODE State=UNKNOWN
PartitionName=$PART Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
{
  echo "# generated by benscale tools/local-slurm/start.sh"
  echo "AutoDetect=off"
  if [ "$GPUS" -gt 0 ]; then echo "NodeName=$NODES Name=gpu File=$BASE/fakegpu/nvidia[0-$((GPUS - 1))]"; fi
} >"$NEWGRES"

if ! cmp -s "$NEWCONF" "$CONF_DIR/slurm.conf" || ! cmp -s "$NEWGRES" "$CONF_DIR/gres.conf"; then
  log "configuration changed: (re)writing $CONF_DIR/slurm.conf, gres.conf"
  # restart slurm daemons that this script started with the old config
  for pf in "$RUN"/slurmd-*.pid; do [ -e "$pf" ] && stop_pidfile "$pf" slurmd; done
  stop_pidfile "$RUN/slurmctld.pid" slurmctld
  if [ -e "$CONF_DIR/slurm.conf" ] && ! grep -q 'generated by' "$CONF_DIR/slurm.conf"; then
    cp "$CONF_DIR/slurm.conf" "$CONF_DIR/slurm.conf.orig.$(date +%s)"
  fi
  cp "$NEWCONF" "$CONF_DIR/slurm.conf"; cp "$NEWGRES" "$CONF_DIR/gres.conf"
  chmod 644 "$CONF_DIR/slurm.conf" "$CONF_DIR/gres.conf"
fi
rm -f "$NEWCONF" "$NEWGRES"
unset SLURM_CONF

# ---------------------------------------------------------------- 2b. node names
# On a real cluster node names resolve; here the fake nodes are all 127.0.0.1. Ranks use
# the first node of SLURM_JOB_NODELIST as their rendezvous host, so make the names
# resolvable (marked lines, removed again by stop.sh).
HOSTS_MARK="# benscale-local-slurm"
NODE_NAMES=$(for i in $(seq 1 "$NNODES"); do printf 'node%d ' "$i"; done)
if ! grep -q "$HOSTS_MARK" /etc/hosts 2>/dev/null || \
   [ "$(grep "$HOSTS_MARK" /etc/hosts | sed "s/ *$HOSTS_MARK//")" != "127.0.0.1 ${NODE_NAMES% }" ]; then
  sed -i "/$HOSTS_MARK/d" /etc/hosts 2>/dev/null || true
  echo "127.0.0.1 ${NODE_NAMES% } $HOSTS_MARK" >>/etc/hosts || die "cannot add the node names to /etc/hosts"
fi

# ---------------------------------------------------------------- 3. munged
munge_ok() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }
if ! munge_ok; then
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
      || dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
  fi
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/lib/munge /var/log/munge
  chown munge:munge /run/munge /var/lib/munge /var/log/munge; chmod 755 /run/munge
  runuser -u munge -- /usr/sbin/munged --force </dev/null >>"$LOG/munged.out" 2>&1
  for i in $(seq 1 50); do munge_ok && break; sleep 0.1; done
  munge_ok || die "munged did not come up (see /var/log/munge/munged.log)"
  cp /run/munge/munged.pid "$RUN/munged.pid"   # marks munged as ours
  log "munged started (pid $(cat "$RUN/munged.pid"))"
fi

# ---------------------------------------------------------------- 4. accounting (optional)
if [ "$ACCT" = 1 ]; then
  DB=$BASE/mysql; SOCK=$DB/mysqld.sock
  sql() { mariadb --protocol=socket --socket="$SOCK" -u root "$@"; }
  if ! alive "$RUN/mariadbd.pid" mariadbd; then
    if [ ! -d "$DB/mysql" ]; then
      mkdir -p "$DB"; chown mysql:mysql "$DB"
      mariadb-install-db --user=mysql --datadir="$DB" --auth-root-authentication-method=socket \
        --skip-test-db >"$LOG/mariadb-install.log" 2>&1 || die "mariadb-install-db failed (see $LOG/mariadb-install.log)"
    fi
    # pid and error files must be writable by the mysql user: keep them in the datadir
    /usr/sbin/mariadbd --no-defaults --user=mysql --datadir="$DB" --socket="$SOCK" \
      --pid-file="$DB/mariadbd.pid" --log-error="$DB/mariadbd.err" \
      --bind-address=127.0.0.1 --port="$DBPORT" --skip-name-resolve \
      --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 </dev/null >/dev/null 2>&1 &
    for i in $(seq 1 150); do sql -e 'select 1' >/dev/null 2>&1 && break; sleep 0.2; done
    sql -e 'select 1' >/dev/null 2>&1 || die "mariadbd did not come up: $(tail -5 "$DB/mariadbd.err" 2>/dev/null)"
    cp "$DB/mariadbd.pid" "$RUN/mariadbd.pid"
    log "mariadbd started (pid $(cat "$RUN/mariadbd.pid"), 127.0.0.1:$DBPORT)"
  fi
  sql -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
          CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
          GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';" || die "cannot create slurm_acct_db"
  NEWDBD=$(mktemp)
  {
    echo "# generated by benscale tools/local-slurm/start.sh"
    echo "AuthType=auth/munge"
    echo "DbdHost=$HOST"
    echo "DbdAddr=127.0.0.1"
    echo "DbdPort=6819"
    echo "SlurmUser=root"
    echo "StorageType=accounting_storage/mysql"
    echo "StorageHost=127.0.0.1"
    echo "StoragePort=$DBPORT"
    echo "StorageUser=slurm"
    echo "StoragePass=slurm"
    echo "StorageLoc=slurm_acct_db"
    echo "PidFile=$RUN/slurmdbd.pid"
    echo "LogFile=$LOG/slurmdbd.log"
  } >"$NEWDBD"
  if ! cmp -s "$NEWDBD" "$CONF_DIR/slurmdbd.conf"; then
    stop_pidfile "$RUN/slurmdbd.pid" slurmdbd
    cp "$NEWDBD" "$CONF_DIR/slurmdbd.conf"
  fi
  rm -f "$NEWDBD"; chmod 600 "$CONF_DIR/slurmdbd.conf"
  if ! alive "$RUN/slurmdbd.pid" slurmdbd; then
    slurmdbd </dev/null >>"$LOG/slurmdbd.out" 2>&1 || die "slurmdbd failed: $(tail -5 "$LOG/slurmdbd.log")"
    wait_alive "$RUN/slurmdbd.pid" slurmdbd || die "slurmdbd did not stay up: $(tail -5 "$LOG/slurmdbd.log")"
    for i in $(seq 1 100); do sacctmgr -n list cluster >/dev/null 2>&1 && break; sleep 0.1; done
    log "slurmdbd started (pid $(cat "$RUN/slurmdbd.pid"))"
  fi
fi

# ---------------------------------------------------------------- 5. slurmctld
if ! alive "$RUN/slurmctld.pid" slurmctld; then
  slurmctld -i </dev/null >>"$LOG/slurmctld.out" 2>&1 || die "slurmctld failed: $(tail -5 "$LOG/slurmctld.log")"
  wait_alive "$RUN/slurmctld.pid" slurmctld || die "slurmctld did not stay up: $(tail -5 "$LOG/slurmctld.log")"
  for i in $(seq 1 100); do scontrol ping 2>/dev/null | grep -q 'UP' && break; sleep 0.1; done
  log "slurmctld started (pid $(cat "$RUN/slurmctld.pid"))"
fi

# ---------------------------------------------------------------- 6. slurmd x N
for i in $(seq 1 "$NNODES"); do
  if ! alive "$RUN/slurmd-node$i.pid" slurmd; then
    slurmd -N "node$i" </dev/null >>"$LOG/slurmd.out" 2>&1 || die "slurmd node$i failed: $(tail -5 "$LOG/slurmd-node$i.log")"
    wait_alive "$RUN/slurmd-node$i.pid" slurmd || die "slurmd node$i did not stay up: $(tail -5 "$LOG/slurmd-node$i.log")"
    log "slurmd node$i started (pid $(cat "$RUN/slurmd-node$i.pid"))"
  fi
done

# ---------------------------------------------------------------- 7. wait until idle
deadline=$(( $(date +%s) + WAIT ))
while :; do
  states=$(sinfo -h -N -p "$PART" -o '%N %T' 2>/dev/null || true)
  n_ok=$(echo "$states" | awk '$2 ~ /^(idle|mixed|allocated|completing)$/' | wc -l)
  [ "$n_ok" -ge "$NNODES" ] && break
  # nodes left DOWN/DRAIN by an earlier unclean stop: resume them
  echo "$states" | awk '$2 ~ /(down|drain|inval)/ {print $1}' | while read -r n; do
    scontrol update NodeName="$n" State=RESUME 2>/dev/null || true
  done
  [ "$(date +%s)" -ge "$deadline" ] && { echo "$states"; die "nodes not idle after ${WAIT}s (see $LOG)"; }
  sleep 0.5
done
if [ "$ACCT" = 1 ]; then
  for i in $(seq 1 100); do sacctmgr -n list cluster format=cluster%40 2>/dev/null | grep -qw localcluster && break; sleep 0.2; done
  sacctmgr -n list cluster format=cluster%40 2>/dev/null | grep -qw localcluster || die "cluster not registered in slurmdbd"
fi
log "cluster up: $(sinfo -h -o '%P %a %D %T %c cpus/node %G' | tr '\n' ' ')"
