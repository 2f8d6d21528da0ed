#!/bin/bash
# Starts a private Cyrus IMAP 3.x instance for tests and benchmarks.
#
#   start.sh DIR IMAP_PORT LMTP_PORT [SIEVE_PORT [SYNC_PORT]]
#
# Environment: CYRUS_TLS_CERT and CYRUS_TLS_KEY (PEM files: STARTTLS offered), CYRUS_DELETE_MODE (delayed, the default, or immediate) and CYRUS_EXPUNGE_MODE
# (delayed, the default, semidelayed or immediate) set imapd.conf's delete_mode and
# expunge_mode, for tests of what a server that really deletes at once leaves behind.
#
# Everything lives under DIR (created if missing, owned by the cyrus user):
#   DIR/imapd.conf DIR/cyrus.conf     the instance's own configuration
#   DIR/conf/                         configdirectory (mailboxes.db, user/, lock/, proc/ ...)
#   DIR/spool/p1/ DIR/spool/p2/       partitions `default` and `p2`
#   DIR/sieve/                        sievedir
#   DIR/run/                          unix sockets, master.pid
#   DIR/log/master.log                stdout/stderr of master and of every service
# IMAP, LMTP (preauthenticated: lmtpd -a), managesieve (if SIEVE_PORT is given) and the
# replication server sync_server (csync, as Cyrus's own sync_client and `restore` speak it; if
# SYNC_PORT is given) listen on 127.0.0.1 only. Any password is accepted
# (sasl_pwcheck_method: alwaystrue); `admin` is an admin, and the only user sync_server lets
# in (it serves admins only; SASL PLAIN over plain TCP, as allowplaintext allows). The system's own Cyrus (/etc/imapd.conf, /var/spool/cyrus) is never touched.
#
# Cyrus services log through syslog(3) only; where no syslog daemon runs (CI), those lines are
# lost, and DIR/log/master.log holds what master and the services print (fatal errors included).
# Stop with stop.sh DIR.
# Exit status: 0 running, 3 a port was already in use (retry with other ports), 1 other errors.
set -euo pipefail

CYRUS_BIN=${CYRUS_BIN:-/usr/lib/cyrus/bin}
# How long the services may take to answer: a few seconds on a quiet machine; only a stuck
# start takes two minutes, however loaded the machine is.
START_TIMEOUT=${CYRUS_START_TIMEOUT:-120}

die() { echo "start.sh: $*" >&2; exit 1; }

[ $# -ge 3 ] && [ $# -le 5 ] || die "usage: start.sh DIR IMAP_PORT LMTP_PORT [SIEVE_PORT [SYNC_PORT]]"
DIR=$(realpath -m -- "$1")
IMAP_PORT=$2
LMTP_PORT=$3
SIEVE_PORT=${4:-}
SYNC_PORT=${5:-}
# Every port the instance listens on, for the readiness wait and the busy-port check.
PORTS="$IMAP_PORT $LMTP_PORT $SIEVE_PORT $SYNC_PORT"
for p in $PORTS; do
    [[ "$p" =~ ^[0-9]+$ ]] && [ "$p" -gt 0 ] && [ "$p" -lt 65536 ] || die "bad port: $p"
done
DELETE_MODE=${CYRUS_DELETE_MODE:-delayed}
EXPUNGE_MODE=${CYRUS_EXPUNGE_MODE:-delayed}
case $DELETE_MODE in immediate|delayed) ;; *)
    die "CYRUS_DELETE_MODE=$DELETE_MODE: Cyrus 3.6 knows immediate or delayed" ;; esac
case $EXPUNGE_MODE in immediate|semidelayed|delayed) ;; *)
    die "CYRUS_EXPUNGE_MODE=$EXPUNGE_MODE: Cyrus 3.6 knows immediate, semidelayed or delayed" ;; esac

if [ "$(id -u)" != 0 ]; then
    # master must start as root (or cyrus) and the directories must belong to cyrus.
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        exec sudo -n --preserve-env=CYRUS_BIN,CYRUS_START_TIMEOUT,CYRUS_DELETE_MODE,CYRUS_EXPUNGE_MODE,CYRUS_TLS_CERT,CYRUS_TLS_KEY "$0" "$@"
    fi
    die "must run as root (master serves as the cyrus user; DIR must belong to cyrus)"
fi
[ -x "$CYRUS_BIN/master" ] || die "$CYRUS_BIN/master not found: run tests/cyrus/install.sh"
id cyrus >/dev/null 2>&1 || die "no cyrus user: run tests/cyrus/install.sh"

PIDFILE="$DIR/run/master.pid"
if [ -s "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    die "an instance already runs in $DIR (pid $(cat "$PIDFILE")); stop it with stop.sh"
fi

mkdir -p "$DIR"
# The services run as cyrus: every parent of DIR must be searchable by it.
runuser -u cyrus -- test -x "$(dirname "$DIR")" ||
    die "the cyrus user cannot reach $(dirname "$DIR"); put DIR somewhere like /tmp"

mkdir -p "$DIR"/conf/{lock,proc,socket,log,db,sieve,user,quota} "$DIR"/spool/{p1,p2} \
    "$DIR"/sieve "$DIR"/run "$DIR"/log
rm -f "$DIR"/run/master.pid.lock "$DIR"/run/lmtp "$DIR"/run/idle "$DIR"/run/notify

cat > "$DIR/imapd.conf" <<CONF
# Private test instance (tests/cyrus/start.sh). Loopback only, any password accepted.
configdirectory: $DIR/conf
defaultpartition: default
partition-default: $DIR/spool/p1
partition-p2: $DIR/spool/p2
sievedir: $DIR/sieve
proc_path: $DIR/conf/proc
mboxname_lockpath: $DIR/conf/lock
idlesocket: $DIR/run/idle
lmtpsocket: $DIR/run/lmtp
notifysocket: $DIR/run/notify
admins: admin
allowplaintext: yes
sasl_pwcheck_method: alwaystrue
sasl_mech_list: PLAIN LOGIN
unixhierarchysep: yes
altnamespace: yes
lmtp_downcase_rcpt: yes
# Debian's and Cyrus's defaults (unless CYRUS_EXPUNGE_MODE / CYRUS_DELETE_MODE say otherwise),
# spelled out because the backup relies on them.
expunge_mode: $EXPUNGE_MODE
delete_mode: $DELETE_MODE
singleinstancestore: yes
umask: 077
# Keep 8-bit header bytes as delivered (Cyrus's default rewrites them to 'X'), so that the
# spool holds raw UTF-8 headers as older servers and APPENDed mail do.
munge8bit: no
# populate.py delivers the same Message-ID to several mailboxes on purpose.
duplicatesuppression: no
syslog_prefix: mbtest-$(basename "$DIR")
# A port taken by someone else must fail the start at once, not leave a half-served instance.
master_bind_errors_fatal: yes
# RENAME user/a user/b renames a whole user (the user-lifecycle tests).
allowusermoves: yes
CONF
if [ -n "${CYRUS_TLS_CERT:-}" ]; then
    # STARTTLS on IMAP and sync_server: the services read these as the cyrus user.
    chown cyrus:mail "$CYRUS_TLS_CERT" "$CYRUS_TLS_KEY" "$(dirname "$CYRUS_TLS_KEY")"
    chmod 600 "$CYRUS_TLS_KEY"
    printf 'tls_server_cert: %s\ntls_server_key: %s\n' "$CYRUS_TLS_CERT" "$CYRUS_TLS_KEY" >> "$DIR/imapd.conf"
fi

SIEVE_LINE=""
if [ -n "$SIEVE_PORT" ]; then
    SIEVE_LINE="  sieve     cmd=\"$CYRUS_BIN/timsieved -C $DIR/imapd.conf\" listen=\"127.0.0.1:$SIEVE_PORT\" prefork=0 maxchild=20"
fi
SYNC_LINE=""
if [ -n "$SYNC_PORT" ]; then
    SYNC_LINE="  syncserver cmd=\"$CYRUS_BIN/sync_server -C $DIR/imapd.conf\" listen=\"127.0.0.1:$SYNC_PORT\" prefork=0 maxchild=10"
fi
cat > "$DIR/cyrus.conf" <<CONF
# Private test instance (tests/cyrus/start.sh). master does not pass its -C on to the
# programs it starts: each one names the config itself.
START {
  recover   cmd="$CYRUS_BIN/ctl_cyrusdb -C $DIR/imapd.conf -r"
}
SERVICES {
  imap      cmd="$CYRUS_BIN/imapd -C $DIR/imapd.conf" listen="127.0.0.1:$IMAP_PORT" prefork=1 maxchild=100
  lmtp      cmd="$CYRUS_BIN/lmtpd -C $DIR/imapd.conf -a" listen="127.0.0.1:$LMTP_PORT" prefork=0 maxchild=20
  lmtpunix  cmd="$CYRUS_BIN/lmtpd -C $DIR/imapd.conf" listen="$DIR/run/lmtp" prefork=0 maxchild=20
$SIEVE_LINE
$SYNC_LINE
}
EVENTS {
  checkpoint cmd="$CYRUS_BIN/ctl_cyrusdb -C $DIR/imapd.conf -c" period=30
}
CONF

# Not recursive: deeper files are Cyrus's own (or bulk.py's, written as cyrus), and a big
# spool would take long to walk on every restart.
find "$DIR" -maxdepth 2 ! -user cyrus -exec chown cyrus:mail {} +
chmod 755 "$DIR"

: > "$DIR/log/master.log"
chown cyrus:mail "$DIR/log/master.log"
# -d: daemonise; returns once the child holds the pid file (or failed to).
if ! "$CYRUS_BIN/master" -C "$DIR/imapd.conf" -M "$DIR/cyrus.conf" -p "$PIDFILE" -d \
        -L "$DIR/log/master.log" </dev/null; then
    echo "start.sh: master failed to start; tail of $DIR/log/master.log:" >&2
    tail -n 30 "$DIR/log/master.log" >&2 || true
    exit 1
fi

# Reads the first line a server sends on connect; true if it starts with $2.
greets() {
    local port=$1 want=$2 line=""
    { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
    IFS= read -r -t 2 line <&3 || true
    exec 3<&- 3>&-
    [[ "$line" == "$want"* ]]
}

# sync_server's banner: capability lines `* SASL PLAIN LOGIN`, `* STARTTLS`, ... then
# `* OK <host> Cyrus sync server <version>`. True once that last line came.
sync_greets() {
    local port=$1 line="" n=0
    { exec 3<>"/dev/tcp/127.0.0.1/$port"; } 2>/dev/null || return 1
    while IFS= read -r -t 2 line <&3 && [ $n -lt 20 ]; do
        n=$((n + 1))
        line=${line%$'\r'}
        [[ "$line" == "* "* ]] || break
        if [[ "$line" == "* OK "* ]]; then
            exec 3<&- 3>&-
            return 0
        fi
    done
    exec 3<&- 3>&-
    return 1
}

deadline=$((SECONDS + START_TIMEOUT))
pending="imap lmtp${SIEVE_PORT:+ sieve}${SYNC_PORT:+ sync}"
while :; do
    pid=$(cat "$PIDFILE" 2>/dev/null || true)
    if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
        echo "start.sh: master (pid ${pid:-?}) is not running; tail of $DIR/log/master.log:" >&2
        tail -n 30 "$DIR/log/master.log" >&2 || true
        # master_bind_errors_fatal: a port someone else holds kills master (the reason goes
        # to syslog only). Say which, and exit 3 so that callers may retry with other ports.
        busy=""
        for p in $PORTS; do
            if { exec 3<>"/dev/tcp/127.0.0.1/$p"; } 2>/dev/null; then
                exec 3<&- 3>&-
                busy="$busy $p"
            fi
        done
        if [ -n "$busy" ]; then
            echo "start.sh: port(s)$busy on 127.0.0.1 are in use by another process" >&2
            exit 3
        fi
        exit 1
    fi
    still=""
    for s in $pending; do
        case $s in
            imap) greets "$IMAP_PORT" "* OK" || still="$still imap" ;;
            lmtp) greets "$LMTP_PORT" "220" || still="$still lmtp" ;;
            sieve) greets "$SIEVE_PORT" '"IMPLEMENTATION"' || still="$still sieve" ;;
            sync) sync_greets "$SYNC_PORT" || still="$still sync" ;;
        esac
    done
    pending=$still
    [ -z "$pending" ] && break
    if [ $SECONDS -ge $deadline ]; then
        echo "start.sh: after ${START_TIMEOUT}s, no answer from:$pending; tail of $DIR/log/master.log:" >&2
        tail -n 30 "$DIR/log/master.log" >&2 || true
        "$(dirname "$0")/stop.sh" "$DIR" >&2 || true
        exit 1
    fi
    sleep 0.1
done
echo "start.sh: cyrus running in $DIR (pid $pid) imap=127.0.0.1:$IMAP_PORT lmtp=127.0.0.1:$LMTP_PORT${SIEVE_PORT:+ sieve=127.0.0.1:$SIEVE_PORT}${SYNC_PORT:+ sync=127.0.0.1:$SYNC_PORT} delete_mode=$DELETE_MODE expunge_mode=$EXPUNGE_MODE"
