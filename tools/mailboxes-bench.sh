#!/usr/bin/env bash
# Measures reading Cyrus's mailbox list (mailboxes.db) for a large installation, side by side:
#   (a) mailbackup's reader, backupd::spool (via the mailboxes-bench binary), three ways:
#       ours_window  the file walked through a 256 KiB window, lock held (what backupd does)
#       ours_whole   the file read whole under the lock, then parsed
#       ours_mmap    the file mapped, lock held (a throwaway build outside the workspace)
#   (b) ctl_mboxlist -d      (Cyrus's own dump, JSON)
#   (c) cyr_dbtool ... show  (Cyrus's raw key/value dump)
# Each is run 3 times, interleaved; the medians of wall time and peak RSS are printed, then
# a few single-user lookups (backupd's per-user request).
#
# The mailboxes.db is written by Cyrus itself: a private instance in WORKDIR (never in the
# repo) is filled with `ctl_mboxlist -u` (undump), USERS users with INBOX and 3 sub folders
# each, over two partitions, fed in chunks so that ctl_mboxlist's JSON stays small. Building
# 500,000 users takes a while (one Cyrus transaction, three fdatasyncs, per mailbox); it is
# done once and kept. eatmydata (Debian package), when installed, turns those fsyncs into
# no-ops for the build only: the bytes Cyrus writes are the same.
#
# Usage (as root, Debian's cyrus-imapd installed): tools/mailboxes-bench.sh [USERS] [WORKDIR]
# Defaults: 500000 users, /tmp/mailboxes-bench-<USERS>.
set -euo pipefail

USERS=${1:-500000}
WORK=${2:-/tmp/mailboxes-bench-$USERS}
CYRUS=/usr/lib/cyrus/bin
CHUNK=50000
NOSYNC=$(command -v eatmydata || true)
HERE=$(cd "$(dirname "$0")/.." && pwd)

mkdir -p "$WORK/conf" "$WORK/spool/p1" "$WORK/spool/p2" "$WORK/chunks"
cat >"$WORK/imapd.conf" <<EOF
configdirectory: $WORK/conf
defaultpartition: default
partition-default: $WORK/spool/p1
partition-p2: $WORK/spool/p2
unixhierarchysep: yes
EOF
chown -R cyrus:mail "$WORK"

if [ ! -e "$WORK/conf/mailboxes.db.done" ]; then
    echo "building mailboxes.db for $USERS users in $WORK (ctl_mboxlist -u, $CHUNK users a chunk)"
    rm -f "$WORK/conf/mailboxes.db"
    for ((start = 0; start < USERS; start += CHUNK)); do
        end=$((start + CHUNK < USERS ? start + CHUNK : USERS))
        python3 - "$start" "$end" >"$WORK/chunks/chunk.json" <<'EOF'
import json, random, sys
start, end = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(start)
alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
out = {}
for i in range(start, end):
    user = "u%07d" % i
    partition = "default" if i % 2 == 0 else "p2"
    for folder in ("", ".Drafts", ".Sent", ".Work"):
        name = "user." + user + folder
        out[name] = {
            "name": name, "mtime": "1795415424", "uidvalidity": str(1795415425 + i),
            "createdmodseq": "1", "foldermodseq": "1", "mbtype": "e",
            "partition": partition, "acl": {user: "lrswipkxtecdan"},
            "uniqueid": rng.choice(alphabet[:26]) + "".join(rng.choice(alphabet) for _ in range(23)),
            "name_history": [],
        }
json.dump(out, sys.stdout)
EOF
        $NOSYNC "$CYRUS/ctl_mboxlist" -C "$WORK/imapd.conf" -u <"$WORK/chunks/chunk.json"
        rm -rf "$WORK/conf/lock" # one empty lock file per user, not needed afterwards
        echo "  $end users, $(stat -c %s "$WORK/conf/mailboxes.db") bytes, $(date +%T)"
    done
    rm -rf "$WORK/chunks"
    touch "$WORK/conf/mailboxes.db.done"
fi

cargo build --release -q --manifest-path "$HERE/Cargo.toml" -p tools --bin mailboxes-bench
OURS="$HERE/target/release/mailboxes-bench"

# The mmap variant is built outside the workspace, which forbids unsafe code: it maps the
# file and runs backupd's own list code over the mapping, the lock held throughout.
mkdir -p "$WORK/mmapbench/src"
cat >"$WORK/mmapbench/Cargo.toml" <<EOF
[package]
name = "mmapbench"
version = "0.0.0"
edition = "2021"
[dependencies]
backupd = { path = "$HERE/backupd" }
nix = { version = "0.31", features = ["fs", "mman"] }
[profile.release]
lto = true
codegen-units = 1
[workspace]
EOF
cat >"$WORK/mmapbench/src/main.rs" <<'EOF'
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use std::num::NonZeroUsize;
fn main() {
    let path = std::path::PathBuf::from(std::env::args().nth(1).unwrap());
    let file = backupd::spool::open_locked(&path).unwrap();
    let len = NonZeroUsize::new(file.metadata().unwrap().len() as usize).unwrap();
    // SAFETY (throwaway benchmark): read-only shared mapping under Cyrus's shared lock.
    let ptr = unsafe { mmap(None, len, ProtFlags::PROT_READ, MapFlags::MAP_SHARED, &file, 0) }.unwrap();
    let data = unsafe { std::slice::from_raw_parts(ptr.as_ptr() as *const u8, len.get()) };
    let list = backupd::spool::list_mailboxes(data, "DELETED", Default::default()).unwrap();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let rss: Vec<&str> = status.lines().filter(|l| l.starts_with("Rss")).collect();
    unsafe { munmap(ptr, len.get()) }.unwrap();
    println!("mmap users {} mailboxes {} {:?}", list.users.len(), list.mailbox_count(), rss);
}
EOF
cargo build --release -q --manifest-path "$WORK/mmapbench/Cargo.toml"
MMAP="$WORK/mmapbench/target/release/mmapbench"

DB="$WORK/conf/mailboxes.db"
echo "mailboxes.db: $(stat -c %s "$DB") bytes; $(nproc) cores; $(uname -srm); $(date -u +%FT%TZ)"
sync

run() { # label, command...: appends "label seconds maxrss_kb" to the results
    local label=$1 out=/dev/null
    shift
    case $label in ours_*) out="$WORK/out.$label" ;; esac # Cyrus's dumps are large: dropped
    # Page cache warm for every contender alike (this machine's kernel reclaims it eagerly).
    cat "$DB" >/dev/null
    /usr/bin/time -f "$label %e %M" -a -o "$WORK/results" "$@" >>"$out"
}
rm -f "$WORK/results" "$WORK"/out.*
for i in 1 2 3; do
    run ours_window "$OURS" "$WORK/imapd.conf" window
    run ours_whole "$OURS" "$WORK/imapd.conf" whole
    run ours_mmap "$MMAP" "$DB"
    run ctl_mboxlist_d "$CYRUS/ctl_mboxlist" -C "$WORK/imapd.conf" -d
    run cyr_dbtool_show "$CYRUS/cyr_dbtool" -C "$WORK/imapd.conf" "$DB" twoskip show
done
tail -n 1 "$WORK"/out.ours_* # what each of ours found, lock time and memory
"$OURS" "$WORK/imapd.conf" lookup u0000000 u0123456 u0250000 u0499999 nobody
python3 - "$WORK/results" <<'EOF'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, secs, kb = line.split()
    rows.setdefault(label, []).append((float(secs), int(kb)))
print("%-16s %10s %14s   (runs)" % ("reader", "median s", "median RSS MB"))
for label, runs in rows.items():
    print("%-16s %10.2f %14.1f   %s" % (label, statistics.median(r[0] for r in runs),
          statistics.median(r[1] for r in runs) / 1024, runs))
EOF
