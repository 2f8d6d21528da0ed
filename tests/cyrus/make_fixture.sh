#!/bin/bash
# Captures the repository's Cyrus 3.6 fixture, tests/fixtures/cyrus-3.6, from a private Cyrus.
#
#   tests/cyrus/make_fixture.sh [OUT]        (as root; OUT defaults to tests/fixtures/cyrus-3.6)
#
# start.sh on free ports of 127.0.0.1 in a new directory under /tmp, fixture_populate.py (one
# user, five folders, 20 small messages), imap_truth.py (truth.json), stop.sh, then
# `ctl_mboxlist -d` (mboxlist.json). Everything in OUT except README.md is then replaced by:
#
#   imapd.conf                 the instance's config, its directory replaced by @ROOT@
#   conf/mailboxes.db          the mailbox list
#   conf/user/...              the user's files (sub.db, conversations.db ...)
#   spool/p1/..., spool/p2/... cyrus.header, cyrus.index, cyrus.cache, cyrus.annotations and
#                              the message files <UID>. of every folder
#   mboxlist.json, truth.json
#
# The instance's directory is removed at the end (MAILBACKUP_KEEP_CYRUS=1 keeps it). Needs
# tests/cyrus/install.sh first. Exit status 0 when the fixture was written.
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
OUT=$(realpath -m -- "${1:-$REPO/tests/fixtures/cyrus-3.6}")
FIXTURE_USER=fx0
CYRUS_BIN=${CYRUS_BIN:-/usr/lib/cyrus/bin}

die() { echo "make_fixture.sh: $*" >&2; exit 1; }
# The spool's files are the cyrus user's, mode 0600: copying them needs root.
[ "$(id -u)" = 0 ] || die "must run as root (the spool's files are readable by cyrus only)"
[ -x "$CYRUS_BIN/ctl_mboxlist" ] || die "$CYRUS_BIN/ctl_mboxlist not found: run tests/cyrus/install.sh"

# INTERNALDATEs as IMAP prints them, in UTC (the tests expect +0000).
export TZ=UTC

WORK=$(mktemp -d /tmp/mailbackup-fixture.XXXXXX)
chmod 755 "$WORK"
DIR=$WORK/cyrus-3.6
started=no
cleanup() {
    [ "$started" = yes ] && "$HERE/stop.sh" "$DIR" >/dev/null 2>&1 || true
    if [ "${MAILBACKUP_KEEP_CYRUS:-0}" != 0 ]; then
        echo "make_fixture.sh: MAILBACKUP_KEEP_CYRUS: keeping $WORK" >&2
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

free_ports() {
    python3 -c '
import socket
socks = [socket.socket() for _ in range(2)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))'
}

for attempt in 1 2 3 4 5; do
    read -r IMAP LMTP < <(free_ports)
    rc=0
    "$HERE/start.sh" "$DIR" "$IMAP" "$LMTP" || rc=$?
    [ $rc = 0 ] && { started=yes; break; }
    # 3: a port was taken in between; anything else is fatal.
    [ $rc = 3 ] || die "start.sh failed ($rc)"
done
[ "$started" = yes ] || die "start.sh found no free ports in 5 attempts"

python3 "$HERE/fixture_populate.py" 127.0.0.1 "$IMAP" "$LMTP" --user "$FIXTURE_USER"
python3 "$HERE/imap_truth.py" 127.0.0.1 "$IMAP" --users "$FIXTURE_USER" --out "$WORK/truth.json"
"$HERE/stop.sh" "$DIR"
started=no
# After the stop: the dump describes exactly the mailboxes.db copied below.
runuser -u cyrus -- "$CYRUS_BIN/ctl_mboxlist" -C "$DIR/imapd.conf" -d > "$WORK/mboxlist.json"

NEW=$WORK/new
mkdir -p "$NEW/conf"
conf=$(cat "$DIR/imapd.conf")
printf '%s\n' "${conf//"$DIR"/@ROOT@}" > "$NEW/imapd.conf"
cp "$DIR/conf/mailboxes.db" "$NEW/conf/"
(
    cd "$DIR"
    find conf/user -type f
    find spool -type f \( -name 'cyrus.*' -o -name '[0-9]*.' \)
) | sort | while read -r f; do
    mkdir -p "$NEW/$(dirname "$f")"
    cp "$DIR/$f" "$NEW/$f"
done
cp "$WORK/truth.json" "$WORK/mboxlist.json" "$NEW/"
find "$NEW" -type d -exec chmod 755 {} +
find "$NEW" -type f -exec chmod 644 {} +
grep -rlF "$DIR" "$NEW" && die "the files above still name $DIR"

mkdir -p "$OUT"
find "$OUT" -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
cp -R "$NEW/." "$OUT/"
if [ -n "${SUDO_UID:-}" ]; then
    chown -R "$SUDO_UID:${SUDO_GID:-$SUDO_UID}" "$OUT"
fi
echo "make_fixture.sh: wrote $OUT: $(find "$OUT" -type f | wc -l) files, $(du -sb "$OUT" | cut -f1) bytes"
