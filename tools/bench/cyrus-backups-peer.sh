#!/usr/bin/env bash
# Cyrus's own backup system (Cyrus Backups: `backupd` fed by `sync_client`) as a benchmark peer.
#
#   cyrus-backups-peer.sh start BDIR PORT MAILDIR
#   cyrus-backups-peer.sh sync MAILDIR [USER...]
#   cyrus-backups-peer.sh size BDIR
#   cyrus-backups-peer.sh stop BDIR
#
# start  Starts a separate Cyrus master in BDIR acting as the backup server: its own
#        BDIR/imapd.conf and BDIR/cyrus.conf, configdirectory BDIR/conf (backups.db lives there),
#        backuppartition-default BDIR/backups, backup_staging_path BDIR/tmp/staging, temp_path
#        BDIR/tmp, one service `backupd` on 127.0.0.1:PORT, any password accepted
#        (sasl_pwcheck_method: alwaystrue), `admin` is admin. Waits until PORT greets.
#        Then writes into MAILDIR/imapd.conf (an instance of tests/cyrus/start.sh) the channel
#        `backup`: backup_sync_host/port/authname/password/try_imap, between marker lines; a
#        second start replaces that block instead of appending another. The mail instance needs
#        NO restart: sync_client is a stand-alone program that reads the file when it starts.
#        (sync_log is not turned on: `sync -A` does not need it, and nothing would drain it.)
#        The backup side also gets sync_authname/sync_password/sync_try_imap: no, which is what
#        Cyrus's `restore` reads (since 3.4) to replay into a mail server.
#        Exit status 3 if PORT is already taken.
# sync   As the cyrus user: `sync_client -C MAILDIR/imapd.conf -n backup -A` (every user, one
#        connection), then waits until backupd has closed every backup file it opened (it
#        answers EXIT first and ends the chunks after; ~50 ms for 20 users). Prints nothing but
#        errors; exits with sync_client's status.
#        With USERs: one `sync_client -u USER` process per user, two at a time (xargs -P 2),
#        so that no session ever holds two users' backups open: the way to avoid the
#        quadratic first backup described below (mailbackup-tools bench uses this form).
# size   Bytes of every file under BDIR/backups (per user one gzip-chunked data file and its
#        SQLite .index; apparent sizes): one number. BDIR/conf/backups.db is not counted.
# stop   Stops the instance (tests/cyrus/stop.sh BDIR: SIGTERM, SIGKILL after 10 s).
#
# Restore one message's bytes from the backup (the fastest analog of a single-message restore):
#   runuser -u cyrus -- /usr/lib/cyrus/bin/cyr_backup -C BDIR/imapd.conf -u USER dump message GUID
# (GUID: the SHA-1 of the message file, also `cyr_backup ... -u USER list messages`).
# Backups present: /usr/lib/cyrus/bin/ctl_backups -C BDIR/imapd.conf list -A
#
# Verified on Debian 12, Cyrus 3.6.1, 2 shared cores (load ~1.7), mail instance of
# tests/cyrus/start.sh filled by bulk.py --users 20 --folders 8 --messages 20 --size-scale 0.15
# (3,200 messages, 25.7 MB): start, second start refused while running, restart on another
# PORT replaces the block; first `sync` 11.7-20.4 s; `ctl_backups list -A` lists all 20 users;
# no-change `sync` 0.4-0.9 s warm (1.8-2.0 s right after the first), incremental: it opens no
# message file (strace: only cyrus.header + cyrus.index of the 160 folders), but each run
# appends an empty chunk (~55 bytes + index rows) to every user's backup; 3 deliveries, 6 flag
# changes, 1 expunge, a new folder with 2 messages: 0.72 s, +5.7 kB; `dump message` output
# byte-identical to the spool file, 0.04-0.07 s.
# Known Cyrus 3.6 behaviour to keep in mind when reading numbers: backupd appends messages it
# receives without a reserve (every folder of a user never backed up before) to EVERY backup
# it opened in the session in the last 5 minutes. So the first -A is quadratic in users and
# a new user's mail lands in other users' backup files: 20 users -> 198 MB stored for 25.7 MB
# (24.4 MB after `ctl_backups compact -A`, 18 s); 300 small users -> 65.7 s and 1.09 GB for
# 10 MB. `ctl_backups compact` exits 75 even when it worked.
#
# Runs as root (master starts as root and serves as cyrus; the directories belong to cyrus).
# Environment: CYRUS_BIN (default /usr/lib/cyrus/bin), CYRUS_START_TIMEOUT (default 30 s).
set -euo pipefail

CYRUS_BIN=${CYRUS_BIN:-/usr/lib/cyrus/bin}
START_TIMEOUT=${CYRUS_START_TIMEOUT:-30}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
STOP_SH=$HERE/../../tests/cyrus/stop.sh
BEGIN_MARK="# >>> cyrus-backups-peer: channel backup (tools/bench/cyrus-backups-peer.sh)"
END_MARK="# <<< cyrus-backups-peer"

die() { echo "cyrus-backups-peer.sh: $*" >&2; exit 1; }
usage() {
    die "usage: cyrus-backups-peer.sh start BDIR PORT MAILDIR | sync MAILDIR | size BDIR | stop BDIR"
}
need_root() { [ "$(id -u)" = 0 ] || die "$1 must run as root"; }

# True if something accepts connections on 127.0.0.1:$1.
port_open() {
    { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
    exec 3<&- 3>&-
}

# True if the server on 127.0.0.1:$1 sends a line starting with `* OK` within 2 s (backupd
# greets like sync_server, after its capability lines).
greets_ok() {
    local line
    { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
    while IFS= read -r -t 2 line <&3; do
        if [[ "$line" == "* OK"* ]]; then
            exec 3<&- 3>&-
            return 0
        fi
    done
    exec 3<&- 3>&-
    return 1
}

cmd_start() {
    [ $# -eq 3 ] || usage
    need_root start
    local bdir port maildir pidfile
    bdir=$(realpath -m -- "$1")
    port=$2
    maildir=$(realpath -m -- "$3")
    [[ "$port" =~ ^[0-9]+$ ]] && [ "$port" -gt 0 ] && [ "$port" -lt 65536 ] || die "bad port: $port"
    [ -f "$maildir/imapd.conf" ] || die "no $maildir/imapd.conf: start the mail instance first (tests/cyrus/start.sh)"
    [ -x "$CYRUS_BIN/backupd" ] || die "$CYRUS_BIN/backupd not found (package cyrus-common)"
    [ -x "$CYRUS_BIN/sync_client" ] || die "$CYRUS_BIN/sync_client not found (package cyrus-replication)"
    id cyrus >/dev/null 2>&1 || die "no cyrus user (install cyrus-common)"
    [ "$bdir" != "$maildir" ] || die "BDIR and MAILDIR must differ"

    pidfile=$bdir/run/master.pid
    if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
        die "an instance already runs in $bdir (pid $(cat "$pidfile")); stop it first"
    fi
    if port_open "$port"; then
        echo "cyrus-backups-peer.sh: 127.0.0.1:$port is already in use" >&2
        exit 3
    fi

    mkdir -p "$bdir"
    runuser -u cyrus -- test -x "$(dirname "$bdir")" ||
        die "the cyrus user cannot reach $(dirname "$bdir"); put BDIR somewhere like /tmp"
    mkdir -p "$bdir"/conf/{lock,proc,socket,log,db,user,quota,sieve} "$bdir"/backups \
        "$bdir"/tmp/staging "$bdir"/spool "$bdir"/run "$bdir"/log
    rm -f "$bdir"/run/master.pid.lock

    cat >"$bdir/imapd.conf" <<CONF
# Cyrus Backups server for benchmarks (tools/bench/cyrus-backups-peer.sh). Loopback only,
# any password accepted.
configdirectory: $bdir/conf
# Unused by backupd; spelled out so that no tool falls back to the system's partition.
defaultpartition: default
partition-default: $bdir/spool
backuppartition-default: $bdir/backups
backup_staging_path: $bdir/tmp/staging
temp_path: $bdir/tmp
backup_retention: 7d
sievedir: $bdir/conf/sieve
proc_path: $bdir/conf/proc
mboxname_lockpath: $bdir/conf/lock
admins: admin
allowplaintext: yes
sasl_pwcheck_method: alwaystrue
sasl_mech_list: PLAIN LOGIN
unixhierarchysep: yes
altnamespace: yes
umask: 077
# What restore(8) reads (since 3.4) to log in to the mail server it replays into; without
# sync_try_imap: no it first waits out a 10 s IMAP attempt.
sync_authname: admin
sync_password: x
sync_try_imap: no
syslog_prefix: cyrbackups-$(basename "$bdir")
master_bind_errors_fatal: yes
CONF

    cat >"$bdir/cyrus.conf" <<CONF
# Cyrus Backups server (tools/bench/cyrus-backups-peer.sh). master does not pass its -C on.
START {
  recover   cmd="$CYRUS_BIN/ctl_cyrusdb -C $bdir/imapd.conf -r"
}
SERVICES {
  backupd   cmd="$CYRUS_BIN/backupd -C $bdir/imapd.conf" listen="127.0.0.1:$port" prefork=0 maxchild=50
}
EVENTS {
  checkpoint cmd="$CYRUS_BIN/ctl_cyrusdb -C $bdir/imapd.conf -c" period=30
}
CONF

    find "$bdir" -maxdepth 2 ! -user cyrus -exec chown cyrus:mail {} +
    chmod 755 "$bdir"
    : >"$bdir/log/master.log"
    chown cyrus:mail "$bdir/log/master.log"
    if ! "$CYRUS_BIN/master" -C "$bdir/imapd.conf" -M "$bdir/cyrus.conf" -p "$pidfile" -d \
            -L "$bdir/log/master.log" </dev/null; then
        tail -n 30 "$bdir/log/master.log" >&2 || true
        die "master failed to start in $bdir (log above)"
    fi

    local deadline=$((SECONDS + START_TIMEOUT)) pid
    while :; do
        pid=$(cat "$pidfile" 2>/dev/null || true)
        if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
            tail -n 30 "$bdir/log/master.log" >&2 || true
            if port_open "$port"; then
                echo "cyrus-backups-peer.sh: 127.0.0.1:$port is in use by another process" >&2
                exit 3
            fi
            die "master (pid ${pid:-?}) in $bdir is not running (log above)"
        fi
        greets_ok "$port" && break
        if [ $SECONDS -ge $deadline ]; then
            tail -n 30 "$bdir/log/master.log" >&2 || true
            "$STOP_SH" "$bdir" >&2 || true
            die "backupd on 127.0.0.1:$port did not greet within ${START_TIMEOUT}s (log above)"
        fi
        sleep 0.1
    done

    # The channel `backup` in the mail instance's config: drop an earlier block of ours (a
    # start with another PORT), then append the current one.
    local conf=$maildir/imapd.conf tmp
    tmp=$(mktemp "$conf.XXXXXX")
    awk -v b="$BEGIN_MARK" -v e="$END_MARK" '
        $0 == b { skip = 1; next }
        skip && $0 == e { skip = 0; next }
        !skip { print }' "$conf" >"$tmp"
    grep -q '^backup_sync_' "$tmp" &&
        { rm -f "$tmp"; die "$conf has backup_sync_* keys outside this script's block; remove them"; }
    cat >>"$tmp" <<CONF
$BEGIN_MARK
# backup server dir: $bdir
backup_sync_host: 127.0.0.1
backup_sync_port: $port
backup_sync_authname: admin
backup_sync_password: x
backup_sync_try_imap: no
$END_MARK
CONF
    chmod --reference="$conf" "$tmp"
    chown --reference="$conf" "$tmp"
    mv -f "$tmp" "$conf"
    echo "cyrus-backups-peer.sh: backupd running in $bdir (pid $pid) on 127.0.0.1:$port; channel backup added to $conf"
}

cmd_sync() {
    [ $# -ge 1 ] || usage
    need_root sync
    local maildir bdir rc=0
    maildir=$(realpath -m -- "$1")
    shift
    grep -qx "$BEGIN_MARK" "$maildir/imapd.conf" 2>/dev/null ||
        die "$maildir/imapd.conf has no channel backup: run start first"
    bdir=$(sed -n 's/^# backup server dir: //p' "$maildir/imapd.conf" | tail -n 1)
    # sync_client writes its progress to syslog only; stderr carries its errors.
    if [ $# -eq 0 ]; then
        runuser -u cyrus -- "$CYRUS_BIN/sync_client" -C "$maildir/imapd.conf" -n backup -A || rc=$?
    else
        printf '%s\n' "$@" | xargs -P 2 -I USER runuser -u cyrus -- \
            "$CYRUS_BIN/sync_client" -C "$maildir/imapd.conf" -n backup -u USER || rc=$?
    fi
    # backupd answers EXIT before it closes the backups it opened in the session, and only the
    # close ends each chunk (gzip trailer, index rows) and drops the lock: wait for that, so
    # that a timed sync covers the whole backup and size/ctl_backups see finished files.
    local deadline=$((SECONDS + 60))
    while [ -n "$bdir" ] && backups_open "$bdir"; do
        [ $SECONDS -lt $deadline ] || die "backupd of $bdir still holds backups open after 60 s"
        sleep 0.01
    done
    exit "$rc"
}

# True if a backupd of the instance in $1 holds a file under $1/backups open.
backups_open() {
    local p f
    for p in $(pgrep -f -- "backupd -C $1/imapd.conf" || true); do
        for f in /proc/"$p"/fd/*; do
            [[ "$(readlink "$f" 2>/dev/null)" == "$1/backups/"* ]] && return 0
        done
    done
    return 1
}

cmd_size() {
    [ $# -eq 1 ] || usage
    local dir
    dir=$(realpath -m -- "$1")/backups
    [ -d "$dir" ] || die "no $dir"
    find "$dir" -type f -printf '%s\n' | awk '{ s += $1 } END { printf "%d\n", s }'
}

cmd_stop() {
    [ $# -eq 1 ] || usage
    need_root stop
    [ -x "$STOP_SH" ] || die "$STOP_SH not found (this script lives in tools/bench of mailbackup)"
    "$STOP_SH" "$1"
}

[ $# -ge 1 ] || usage
sub=$1
shift
case $sub in
    start) cmd_start "$@" ;;
    sync) cmd_sync "$@" ;;
    size) cmd_size "$@" ;;
    stop) cmd_stop "$@" ;;
    *) usage ;;
esac
