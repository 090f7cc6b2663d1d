#!/usr/bin/env bash
# Install the Debian packages the test suite needs, if missing: Slurm + munge (the real-Slurm
# tests start slurmctld/slurmd on localhost), chromium (the report opens in a real browser),
# and zstd + pigz (`benscale extract ARCHIVE` decompresses through them when present; without
# them it falls back to Python's decompressors, slower).
# Never lets the packages' maintainer scripts start services.
set -euo pipefail
PKGS="slurmctld slurmd slurm-client munge chromium zstd pigz"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "install-system-deps: missing Debian packages:$missing (run as root, or install them; tests needing them are skipped)" >&2
  exit 0
fi
made_policy=""
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
fi
export DEBIAN_FRONTEND=noninteractive
echo "install-system-deps: installing$missing"
if ! apt-get install -y -q --no-install-recommends $missing >/tmp/benscale-apt.log 2>&1; then
  apt-get update -q >>/tmp/benscale-apt.log 2>&1 || true
  apt-get install -y -q --no-install-recommends $missing >>/tmp/benscale-apt.log 2>&1 \
    || { tail -20 /tmp/benscale-apt.log; [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d; exit 1; }
fi
[ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
exit 0
