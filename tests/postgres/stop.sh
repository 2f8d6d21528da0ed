#!/bin/sh
# Stops the private PostgreSQL that start.sh started in DIR (immediate: a test cluster has
# nothing to flush that matters). Quiet when it is not running.
set -eu
dir=$1
[ -f "$dir/data/postmaster.pid" ] || exit 0
setpriv --reuid=mailbackup-pg --regid=mailbackup-pg --init-groups --reset-env -- \
    /usr/lib/postgresql/15/bin/pg_ctl -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
