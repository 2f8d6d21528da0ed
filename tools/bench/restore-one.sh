#!/usr/bin/env bash
# Issue 5's benchmark: restoring ONE message from a user with 50,000 messages backed up over 10
# runs, mailbackup against `restic restore --include` and `borg extract`, side by side, same
# data, same machine, same run.
#
# 1. Installs Debian's restic and borgbackup (and Cyrus) if missing; builds the release binaries.
# 2. Starts a private Cyrus on free 127.0.0.1 ports and builds one user (b00000) with
#    FOLDERS x MESSAGES messages with tests/cyrus/bulk.py (--size-scale SCALE keeps it small).
# 3. Backs the spool up RUNS times with each tool (mailbackup: backupd + `backup-server run`;
#    restic: init + backup SPOOL; borg: init -e none + create REPO::runN SPOOL, lz4 default);
#    between runs NEW messages are delivered to INBOX over LMTP, so every run is a distinct snapshot.
# 4. Times restoring the same message (INBOX, the first UID present after run 1) with each
#    tool, whole process, median of REPS, fresh target dir each time, after one untimed warm-up
#    so the page cache is warm for all; checks every restored copy's SHA-1 against the GUID.
# 5. Prints a markdown table and appends it, with the machine and the exact commands, to
#    docs/PERFORMANCE.md (APPEND=0 to skip).
#
# Needs root (Cyrus's master serves as the cyrus user).
# Usage: tools/bench/restore-one.sh [WORKDIR]    (default: a fresh directory under /tmp)
# Environment: FOLDERS=10 MESSAGES=5000 SCALE=0.15 RUNS=10 NEW=5 REPS=5 APPEND=1
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD

FOLDERS=${FOLDERS:-10}
MESSAGES=${MESSAGES:-5000}
SCALE=${SCALE:-0.15}
RUNS=${RUNS:-10}
NEW=${NEW:-5}
REPS=${REPS:-5}
APPEND=${APPEND:-1}
USER_NAME=b00000 # bulk.py's first user (prefix b), on partition `default` (spool/p1)

say() { printf '\n==> %s\n' "$*" >&2; }

say "Installing restic, borgbackup and Cyrus if missing"
missing=()
command -v restic >/dev/null || missing+=(restic)
command -v borg >/dev/null || missing+=(borgbackup)
if [ ${#missing[@]} -gt 0 ]; then
    apt-get install -y "${missing[@]}" >/dev/null
fi
bash tests/cyrus/install.sh

say "Building mailbackup (release)"
cargo build --quiet --release -p backupd -p backup-server
BACKUPD=$ROOT/target/release/backupd
SERVER=$ROOT/target/release/backup-server

WORK=${1:-$(mktemp -d /tmp/restore-one.XXXXXX)}
mkdir -p "$WORK"
WORK=$(realpath "$WORK")
chmod 755 "$WORK"
read -r IMAP LMTP BPORT < <(python3 - <<'PY'
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])
PY
)

BACKUPD_PID=
cleanup() {
    [ -n "$BACKUPD_PID" ] && { kill "$BACKUPD_PID" 2>/dev/null; wait "$BACKUPD_PID" 2>/dev/null || true; }
    say "Stopping Cyrus"
    bash tests/cyrus/stop.sh "$WORK/cyrus" || true
}
say "Starting a private Cyrus in $WORK/cyrus (IMAP 127.0.0.1:$IMAP, LMTP $LMTP)"
bash tests/cyrus/start.sh "$WORK/cyrus" "$IMAP" "$LMTP"
trap cleanup EXIT

BULK_CMD=(python3 tests/cyrus/bulk.py 127.0.0.1 "$IMAP" --dir "$WORK/cyrus" --users 1
    --folders "$FOLDERS" --messages "$MESSAGES" --size-scale "$SCALE")
say "Building the user: ${BULK_CMD[*]}"
"${BULK_CMD[@]}" | tee "$WORK/bulk.log" >&2
SPOOL=$WORK/cyrus/spool

say "Configuring and starting backupd on 127.0.0.1:$BPORT"
install -m 600 /dev/null "$WORK/backupd.secret"
head -c 32 /dev/urandom | base64 >"$WORK/backupd.secret"
cat >"$WORK/backupd.toml" <<TOML
listen = "127.0.0.1:$BPORT"
secret_file = "$WORK/backupd.secret"
imapd_conf = "$WORK/cyrus/imapd.conf"
TOML
"$BACKUPD" check --config "$WORK/backupd.toml" >/dev/null
"$BACKUPD" --config "$WORK/backupd.toml" >"$WORK/backupd.log" 2>&1 &
BACKUPD_PID=$!
for _ in $(seq 50); do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $BPORT), 0.2)" 2>/dev/null && break
    sleep 0.1
done
cat >"$WORK/backup-server.toml" <<TOML
store_root = "$WORK/stores"
state_db = "$WORK/state.sqlite3"

[[server]]
name = "bench"
address = "127.0.0.1:$BPORT"
secret_file = "$WORK/backupd.secret"

[[raidset]]
name = "bench-p1"
server = "bench"
partitions = ["default"]

[[raidset]]
name = "bench-p2"
server = "bench"
partitions = ["p2"]
TOML

export RESTIC_PASSWORD=bench RESTIC_REPOSITORY=$WORK/restic
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
restic init --quiet >/dev/null
borg init -e none "$WORK/borg"

# Wall time of a command in seconds (to the ms), its output to a log.
timed() {
    local log=$1
    shift
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >>"$log" 2>&1
    t1=$(date +%s.%N)
    python3 -c "print('%.3f' % ($t1 - $t0))"
}

deliver() { # $1 = run number: NEW messages to INBOX over LMTP
    python3 - "$LMTP" "$USER_NAME" "$1" "$NEW" <<'PY'
import sys
sys.path.insert(0, "tests/cyrus")
sys.dont_write_bytecode = True
from cyrlib import Lmtp
port, user, run, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
l = Lmtp("127.0.0.1", port)
for k in range(n):
    msg = ("From: a%d@example.test\r\nTo: %s@example.test\r\nSubject: run %d message %d\r\n"
           "Message-ID: <r%d.%d@example.test>\r\nDate: Mon, 23 Nov 2026 12:00:00 +0000\r\n\r\n"
           "Body of run %d message %d.\r\n" % (k, user, run, k, run, k, run, k)).encode()
    l.deliver("sender@example.test", [user], msg)
l.close()
PY
}

printf 'run\tmailbackup\trestic\tborg\n' >"$WORK/backups.tsv"
for run in $(seq 1 "$RUNS"); do
    [ "$run" -gt 1 ] && deliver "$run"
    say "Run $run of $RUNS"
    ours=$(timed "$WORK/ours.log" "$SERVER" --config "$WORK/backup-server.toml" run)
    rst=$(timed "$WORK/restic.log" restic backup --quiet "$SPOOL")
    brg=$(timed "$WORK/borg.log" borg create "$WORK/borg::run$run" "$SPOOL")
    printf '%s\t%s\t%s\t%s\n' "$run" "$ours" "$rst" "$brg" | tee -a "$WORK/backups.tsv" >&2
    if [ "$run" -eq 1 ]; then
        # The message: the first UID of INBOX present in run 1; its file found by its GUID.
        "$SERVER" --config "$WORK/backup-server.toml" ls --user "$USER_NAME" --folder INBOX >"$WORK/inbox.ls"
        MSG_UID=$(awk -F'\t' '$1 ~ /^[0-9]+$/ { print $1; exit }' "$WORK/inbox.ls")
        GUID=$(awk -F'\t' '$1 ~ /^[0-9]+$/ { print $NF; exit }' "$WORK/inbox.ls")
        MSG_FILE=
        for f in "$SPOOL"/p1/uuid/*/*/*/"$MSG_UID."; do
            [ "$(sha1sum "$f" | cut -d' ' -f1)" = "$GUID" ] && { MSG_FILE=$f; break; }
        done
        [ -n "$MSG_FILE" ] || { echo "no file in $SPOOL with UID $MSG_UID and GUID $GUID" >&2; exit 1; }
        say "The message: INBOX UID $MSG_UID, GUID $GUID, file $MSG_FILE ($(stat -c %s "$MSG_FILE") bytes)"
    fi
done

OURS_CMD="$SERVER --config $WORK/backup-server.toml restore --user $USER_NAME --folder INBOX --uid $MSG_UID --to eml:{T}"
RESTIC_CMD="restic restore latest --target {T} --include $MSG_FILE"
BORG_CMD="borg extract $WORK/borg::run$RUNS ${MSG_FILE#/}"

say "Timing the restores (median of $REPS, one warm-up each)"
SIZE_OURS=$(du -sb "$WORK/stores" "$WORK/state.sqlite3" | awk '{ s += $1 } END { print s }')
SIZE_RESTIC=$(du -sb "$WORK/restic" | cut -f1)
SIZE_BORG=$(du -sb "$WORK/borg" | cut -f1)
SIZE_SPOOL=$(du -sb "$SPOOL" | cut -f1)
NMSG=$(find "$SPOOL" -type f -name '*.' | wc -l)

python3 - "$WORK" "$REPS" "$GUID" "$OURS_CMD" "$RESTIC_CMD" "$BORG_CMD" <<'PY' >"$WORK/restores.tsv"
import hashlib, os, shlex, statistics, subprocess, sys, tempfile, time
work, reps, guid = sys.argv[1], int(sys.argv[2]), sys.argv[3]
tools = {"mailbackup": sys.argv[4], "restic": sys.argv[5], "borg": sys.argv[6]}
times = {k: [] for k in tools}
base = tempfile.mkdtemp(prefix="targets.", dir=work)
n = 0
for rep in range(reps + 1):  # rep 0: the warm-up, not counted
    for name, cmd in tools.items():
        n += 1
        target = os.path.join(base, "%s.%d" % (name, n))
        os.mkdir(target)
        argv = shlex.split(cmd.replace("{T}", target))
        t0 = time.perf_counter()
        subprocess.run(argv, cwd=target, check=True, stdout=subprocess.DEVNULL)
        dt = time.perf_counter() - t0
        files = [os.path.join(d, f) for d, _, fs in os.walk(target) for f in fs]
        if len(files) != 1:
            sys.exit("%s restored %d files, not 1: %s" % (name, len(files), files))
        got = hashlib.sha1(open(files[0], "rb").read()).hexdigest()
        if got != guid:
            sys.exit("%s restored %s with SHA-1 %s, not %s" % (name, files[0], got, guid))
        if rep:
            times[name].append(dt)
for name, ts in times.items():
    print("%s\t%.4f\t%.4f\t%.4f" % (name, statistics.median(ts), min(ts), max(ts)))
PY
cat "$WORK/restores.tsv" >&2

REPORT=$WORK/report.md
python3 - "$WORK" <<PY >"$REPORT"
import statistics, sys
work = sys.argv[1]
r = {}
for line in open(work + "/restores.tsv"):
    name, med, lo, hi = line.split("\t")
    r[name] = (float(med), float(lo), float(hi))
rows = [l.rstrip("\n").split("\t") for l in open(work + "/backups.tsv")][1:]
b = {k: [float(x[i]) for x in rows] for i, k in ((1, "mailbackup"), (2, "restic"), (3, "borg"))}
size = {"mailbackup": $SIZE_OURS, "restic": $SIZE_RESTIC, "borg": $SIZE_BORG}
ours = r["mailbackup"][0]
print("Ratios (median whole-process time of the peer / ours): **restic %.1fx**, **borg %.1fx**"
      % (r["restic"][0] / ours, r["borg"][0] / ours))
print()
print("| tool | restore one message, median (min-max) of $REPS | repository, du -sb | first backup | later backups, median | all $RUNS backups |")
print("|---|---|---|---|---|---|")
for k in ("mailbackup", "restic", "borg"):
    med, lo, hi = r[k]
    print("| %s | %.1f ms (%.1f-%.1f) | %.1f MB (%.1f %% of the spool) | %.2f s | %.2f s | %.2f s |" % (
        k, med * 1e3, lo * 1e3, hi * 1e3, size[k] / 1e6, 100.0 * size[k] / $SIZE_SPOOL,
        b[k][0], statistics.median(b[k][1:]) if len(b[k]) > 1 else float("nan"), sum(b[k])))
print()
print("Backup times per run (s), run by run:")
print()
print("| run | mailbackup | restic | borg |")
print("|---|---|---|---|")
for x in rows:
    print("| " + " | ".join(x) + " |")
PY

{
    echo
    echo "## Single-message restore vs restic and borg (issue 5)"
    echo
    echo "\`tools/bench/restore-one.sh\` (FOLDERS=$FOLDERS MESSAGES=$MESSAGES SCALE=$SCALE RUNS=$RUNS NEW=$NEW REPS=$REPS),"
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), \`nproc\` $(nproc), \`free -g\` $(free -g | awk '/^Mem:/ { print "total " $2 " GB, available " $7 " GB" }'),"
    echo "$(restic version | head -1); $(borg --version); $("$SERVER" --version 2>/dev/null || echo backup-server) (release build)."
    echo
    echo "One user ($USER_NAME) built by \`${BULK_CMD[*]/#$WORK/W}\`: $NMSG message files"
    echo "after the last run, spool $(python3 -c "print('%.1f' % ($SIZE_SPOOL / 1e6))") MB (du -sb, Cyrus meta files included)."
    echo "$RUNS backup runs with each tool, $NEW new messages delivered over LMTP (to INBOX) before"
    echo "each run after the first, so each tool holds $RUNS distinct snapshots of the same spool. Then the"
    echo "same message (INBOX UID $MSG_UID, in every run, $(stat -c %s "$MSG_FILE") bytes) restored by each tool as a whole process"
    echo "(Python \`perf_counter\` around \`subprocess.run\`, cwd = a fresh empty target dir each time), one"
    echo "untimed warm-up each then $REPS timed rounds interleaved, page cache warm for all; every restored"
    echo "copy's SHA-1 checked against the GUID. Repository sizes by du -sb after the $RUNS runs (ours: store"
    echo "root + state db). W is the work directory."
    echo
    cat "$REPORT"
    echo
    echo "The commands ({T}: the fresh target dir):"
    echo
    echo '```'
    echo "# backups, each run"
    echo "backup-server --config W/backup-server.toml run      # backupd on 127.0.0.1, as scripts/demo configures it"
    echo "RESTIC_PASSWORD=... restic -r W/restic backup W/cyrus/spool      # after: restic init"
    echo "borg create W/borg::runN W/cyrus/spool      # after: borg init -e none W/borg; lz4 (default)"
    echo "# the restore"
    echo "${OURS_CMD//$WORK/W}" | sed "s#$ROOT/target/release/##"
    echo "RESTIC_REPOSITORY=W/restic RESTIC_PASSWORD=... ${RESTIC_CMD//$WORK/W}"
    B=${BORG_CMD//$WORK/W}
    echo "${B//${WORK#/}/W}      # cwd {T}"
    echo '```'
} >"$WORK/section.md"
cat "$WORK/section.md"
if [ "$APPEND" = 1 ]; then
    cat "$WORK/section.md" >>docs/PERFORMANCE.md
    say "Appended to docs/PERFORMANCE.md"
fi
