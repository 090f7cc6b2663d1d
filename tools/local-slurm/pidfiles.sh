# pidfiles.sh -- sourced by start.sh and stop.sh: daemons are tracked only through the pid
# files under $RUN, never by process name, so nothing this harness did not start is touched.

# alive PIDFILE COMM -> 0 if the pid in PIDFILE is alive and its comm matches.
# (Daemons re-parent to PID 1, which reaps late here: zombies count as dead.)
alive() {
  local pf=$1 comm=$2 pid
  [ -s "$pf" ] || return 1
  pid=$(cat "$pf" 2>/dev/null) || return 1
  [ -n "$pid" ] && [ -r "/proc/$pid/comm" ] || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$comm" ] || return 1
  [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]
}

stop_pidfile() {  # stop_pidfile PIDFILE COMM: TERM, wait up to 20 s, then KILL
  local pf=$1 comm=$2 pid i
  if alive "$pf" "$comm"; then
    pid=$(cat "$pf")
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do alive "$pf" "$comm" || break; sleep 0.2; done
    if alive "$pf" "$comm"; then kill -KILL "$pid" 2>/dev/null || true; echo "killed $comm ($pid)"
    else echo "stopped $comm ($pid)"; fi
  fi
  rm -f "$pf"
}
