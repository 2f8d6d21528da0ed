#!/bin/bash
# Stops the private Cyrus instance started by start.sh in DIR, and waits until master and
# every service it started are gone (so the ports are free when this returns).
#
#   stop.sh DIR
#
# SIGTERM first (master then sends SIGTERM to its process group; if master was killed, its
# lingering services get it directly); SIGKILL to whatever remains after CYRUS_STOP_TIMEOUT
# seconds (default 10). Only processes naming DIR/imapd.conf are ever signalled.
# Exits 0 when nothing runs any more, including when nothing was running.
set -euo pipefail

die() { echo "stop.sh: $*" >&2; exit 1; }
[ $# -eq 1 ] || die "usage: stop.sh DIR"
DIR=$(realpath -m -- "$1")
TIMEOUT=${CYRUS_STOP_TIMEOUT:-10}

if [ "$(id -u)" != 0 ] && command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    exec sudo -n --preserve-env=CYRUS_STOP_TIMEOUT "$0" "$@"
fi

PIDFILE="$DIR/run/master.pid"
pid=$(cat "$PIDFILE" 2>/dev/null || true)
[[ "$pid" =~ ^[0-9]+$ ]] || { echo "stop.sh: no pid file in $DIR/run: nothing to stop"; exit 0; }

# master daemonises with setsid(): its pid is the process group of every service it starts.
# Only processes of that group whose command line names this instance's imapd.conf are ours
# (the pid may have been reused since a crash).
ours() {
    local p cmd
    for p in $(pgrep -g "$pid" 2>/dev/null); do
        cmd=$( { tr '\0' ' ' < "/proc/$p/cmdline"; } 2>/dev/null) || continue
        [[ "$cmd" == *"$DIR/imapd.conf"* ]] && echo "$p"
    done
    true
}

if [ -n "$(ours)" ]; then
    # SIGTERM to master; it passes SIGTERM on to its process group. If master itself is gone
    # (killed), its services linger holding the ports: they get the same signal directly.
    if ours | grep -qx "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
    else
        kill -TERM $(ours) 2>/dev/null || true
    fi
    deadline=$((SECONDS + TIMEOUT))
    while [ -n "$(ours)" ]; do
        if [ $SECONDS -ge $deadline ]; then
            echo "stop.sh: still running after ${TIMEOUT}s, sending SIGKILL" >&2
            kill -KILL $(ours) 2>/dev/null || true
            # Gone as soon as the kernel has torn them down and they are reaped: wait for
            # that (a loaded machine takes its time); only a minute means they survived.
            killed=$((SECONDS + 60))
            while [ -n "$(ours)" ]; do
                [ $SECONDS -lt $killed ] || die "processes $(ours) of $DIR survive SIGKILL"
                sleep 0.05
            done
            break
        fi
        sleep 0.05
    done
    echo "stop.sh: stopped cyrus in $DIR (pid $pid)"
else
    echo "stop.sh: cyrus in $DIR (pid $pid) was not running"
fi
rm -f "$PIDFILE"
