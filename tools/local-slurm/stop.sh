#!/usr/bin/env bash
# tools/local-slurm/stop.sh -- stop the daemons started by start.sh,
# using only the pid files it keeps under $LOCAL_SLURM_DIR/run (never by name).
# A munged that was already running before start.sh is left alone
# (the start script writes run/munged.pid only when it started munged itself).
#   LOCAL_SLURM_CANCEL=0  do not scancel the jobs of the local cluster first
set -uo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BASE=${LOCAL_SLURM_DIR:-${TMPDIR:-/tmp}/benscale-slurm}
RUN=$BASE/run

# shellcheck source=pidfiles.sh
. "$SCRIPT_DIR/pidfiles.sh"


[ -d "$RUN" ] || { echo "nothing to stop ($RUN missing)"; exit 0; }

# cancel whatever still runs on this throw-away cluster, so that no job
# processes (slurmstepd + user tasks) outlive the daemons
if [ "${LOCAL_SLURM_CANCEL:-1}" = 1 ] && alive "$RUN/slurmctld.pid" slurmctld; then
  jobs=$(squeue -h -o %i 2>/dev/null || true)
  if [ -n "$jobs" ]; then
    scancel --full $jobs 2>/dev/null || true
    for i in $(seq 1 50); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
  fi
fi

for pf in "$RUN"/slurmd-*.pid; do [ -e "$pf" ] && stop_pidfile "$pf" slurmd; done
stop_pidfile "$RUN/slurmctld.pid" slurmctld
[ -e "$RUN/slurmdbd.pid" ] && stop_pidfile "$RUN/slurmdbd.pid" slurmdbd
[ -e "$RUN/mariadbd.pid" ] && stop_pidfile "$RUN/mariadbd.pid" mariadbd
[ -e "$RUN/munged.pid" ] && stop_pidfile "$RUN/munged.pid" munged
# the node names start.sh added to /etc/hosts
sed -i '/# benscale-local-slurm/d' /etc/hosts 2>/dev/null || true
exit 0
