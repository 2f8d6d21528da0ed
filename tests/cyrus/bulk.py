#!/usr/bin/env python3
"""Builds a large, real Cyrus spool fast, for benchmarks.

    bulk.py HOST IMAP_PORT --dir DIR [--users N] [--folders F] [--messages M]
            [--shared-ratio R] [--seed S] [--prefix P] [--connections C] [--workers W]
            [--size-scale X] [--max-size BYTES] [--seen-ratio A] [--expunge-ratio E]

DIR is the instance directory given to start.sh (its imapd.conf names the partitions).

1. Over IMAP as admin, pipelined on C connections: CREATE user/<P><nnnnn> and F-1 folders
   under it (INBOX + Archive, Sent, Drafts, Trash, Work, Lists, Archive/2023, ...). Users
   alternate between partitions `default` (even) and `p2` (odd). Each CREATE answers the
   mailbox unique id ([MAILBOXID (...)]), which gives the directory:
   <partition root>/uuid/<c1>/<c2>/<unique id>/.
2. In W worker processes running as the cyrus user: M message files `<uid>.` per folder
   (uid 1..M), realistic RFC 5322 messages (mailgen.FastGen: log-normal sizes, 35% with base64
   attachments), file mtime = the Date header (reconstruct takes it as the internal date).
   A fraction R of the slots holds one of a set of shared messages (identical bytes in several
   folders and users): hard-linked when the same user already has it on the same partition
   (as COPY does), written again otherwise.
3. Cyrus's own `reconstruct -u` (W processes, users in chunks; no process per message) turns
   the files into real cyrus.index / cyrus.cache records (UIDs kept, last_uid raised).
4. Over IMAP as each user (C connections): \\Seen on the oldest A of every folder, \\Flagged on
   1%, and a fraction E of messages \\Deleted + EXPUNGEd (records kept: delayed expunge);
   then STATUS MESSAGES of every folder is checked against what was written.

Content depends only on the options (seeded; the number of workers does not matter).
Prints timings per phase and one summary line starting with "bulk:".
"""

import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree (cyrlib, mailgen)

import argparse  # noqa: E402
import concurrent.futures
import datetime
import os
import pwd
import grp
import multiprocessing
import random
import re
import subprocess
import threading
import time

import cyrlib
import mailgen
from cyrlib import Imap, quote

FOLDER_NAMES = ["Archive", "Sent", "Drafts", "Trash", "Work", "Lists", "Archive/2023",
                "Archive/2024", "Projects", "Projects/Alpha", "Projects/Beta", "Receipts",
                "Travel", "Family", "Newsletters", "Spam"]

RECONSTRUCT = "/usr/lib/cyrus/bin/reconstruct"
END_DATE = datetime.datetime(2025, 6, 1, tzinfo=datetime.timezone.utc)
SPAN_DAYS = 730


def read_partitions(conf):
    parts = {}
    with open(conf, encoding="utf-8") as f:
        for line in f:
            m = re.match(r"\s*partition-([^:\s]+)\s*:\s*(\S+)", line)
            if m:
                parts[m.group(1)] = m.group(2)
    return parts


def user_plan(a, i):
    """(user, partition, [folder names]) of user number i."""
    user = "%s%05d" % (a.prefix, i)
    part = "default" if i % 2 == 0 else "p2"
    folders = ["INBOX"] + FOLDER_NAMES[:a.folders - 1]
    return user, part, folders


def run_threads(n, items, fn):
    """Runs fn(item) for every item on n threads; re-raises the first error."""
    lock = threading.Lock()
    it = iter(items)
    errors = []

    def loop():
        while True:
            with lock:
                if errors:
                    return
                try:
                    item = next(it)
                except StopIteration:
                    return
            try:
                fn(item)
            except Exception as e:  # noqa: BLE001 - reported below
                with lock:
                    errors.append(e)
                return

    threads = [threading.Thread(target=loop) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


# -- phase 1 -----------------------------------------------------------------------------------
def create_all(a, plans):
    """Creates every mailbox; returns {user: [(folder, partition, uniqueid)]}."""
    result = {}
    lock = threading.Lock()
    chunks = [plans[k::a.connections] for k in range(a.connections)]

    def work(chunk):
        im = Imap(a.host, a.imap_port)
        im.login("admin")
        window = []
        for user, part, folders in chunk:
            for f in folders:
                name = "user/" + user if f == "INBOX" else "user/%s/%s" % (user, f)
                im.send("CREATE %s %s" % (quote(name), part))
                window.append((user, f, part))
            if len(window) >= 400:
                drain(im, window)
        drain(im, window)
        im.logout()

    def drain(im, window):
        for (user, f, part), (status, text) in zip(window, im.collect_all()):
            m = re.search(r"\[MAILBOXID \(([^)]+)\)\]", text)
            if not m:
                raise cyrlib.ProtocolError("CREATE %s/%s: no MAILBOXID in %r" % (user, f, text))
            with lock:
                result.setdefault(user, []).append((f, part, m.group(1)))
        window.clear()

    run_threads(a.connections, chunks, work)
    return result


# -- phase 2 -----------------------------------------------------------------------------------
_GEN = None


def _init_worker(seed, scale, max_size, uid, gid):
    global _GEN
    if os.geteuid() == 0:
        os.setgid(gid)
        os.setuid(uid)
    os.umask(0o077)
    _GEN = mailgen.FastGen(seed, scale=scale, max_size=max_size)


def _shared_message(gen, seed, k):
    """Shared message number k: the same bytes whoever asks for it."""
    saved = gen.rng, gen.n
    gen.rng = random.Random((seed << 20) ^ (0x5A5A0000 + k))
    gen.n = 10_000_000 + k
    when = END_DATE - datetime.timedelta(seconds=gen.rng.randrange(SPAN_DAYS * 86400))
    msg, ts = gen.message("team@example.test", when)
    gen.rng, gen.n = saved
    return msg, ts


def write_user(job):
    """Writes every message file of one user; returns (files, links, bytes)."""
    (i, user, folders, roots, seed, per_folder, shared_ratio, nshared) = job
    gen = _GEN
    gen.rng = random.Random(seed * 1_000_003 + i)
    gen.n = i * 1_000_000
    files = links = nbytes = 0
    written = {}  # (shared k, partition) -> path, for hard links within this user
    for f, part, uniqueid in folders:
        d = os.path.join(roots[part], "uuid", uniqueid[0], uniqueid[1], uniqueid)
        if not os.path.isdir(d):
            raise RuntimeError("no directory %s for %s/%s" % (d, user, f))
        # Older mail has lower UIDs: dates rise with the UID, from a random start.
        start = gen.rng.randrange(SPAN_DAYS * 86400)
        step = max(1, start // max(1, per_folder))
        for uid in range(1, per_folder + 1):
            path = os.path.join(d, "%d." % uid)
            if nshared and gen.rng.random() < shared_ratio:
                k = gen.rng.randrange(nshared)
                prev = written.get((k, part))
                if prev:
                    os.link(prev, path)
                    links += 1
                    files += 1
                    continue
                msg, ts = _shared_message(gen, seed, k)
                written[(k, part)] = path
            else:
                when = END_DATE - datetime.timedelta(seconds=start - (uid - 1) * step
                                                     + gen.rng.randrange(step))
                msg, ts = gen.message("%s@example.test" % user, when)
            with open(path, "wb") as fh:
                fh.write(msg)
            os.utime(path, (ts, ts))
            files += 1
            nbytes += len(msg)
    return files, links, nbytes


# -- phase 3 -----------------------------------------------------------------------------------
def reconstruct(a, users):
    conf = os.path.join(a.dir, "imapd.conf")
    size = max(1, (len(users) + a.workers - 1) // a.workers)
    chunks = [users[k:k + size] for k in range(0, len(users), size)]
    procs = []
    logs = []
    for n, chunk in enumerate(chunks):
        log = open(os.path.join(a.dir, "log", "bulk-reconstruct-%d.log" % n), "wb")
        logs.append(log)
        # -u: arguments are user names; reconstruct switches to the cyrus user itself.
        procs.append(subprocess.Popen([RECONSTRUCT, "-C", conf, "-q", "-u"] + chunk,
                                      stdout=log, stderr=subprocess.STDOUT))
    failed = [p.args[:4] for p in procs if p.wait() != 0]
    for log in logs:
        log.close()
    if failed:
        raise RuntimeError("reconstruct failed (see %s/log/bulk-reconstruct-*.log): %s"
                           % (a.dir, failed))


# -- phase 4 -----------------------------------------------------------------------------------
def flags_and_check(a, plans, per_folder):
    expunged_total = [0]
    lock = threading.Lock()

    def work(plan):
        user, part, folders = plan
        rng = random.Random(a.seed * 7919 + int(user[len(a.prefix):]))
        im = Imap(a.host, a.imap_port)
        im.login(user)
        expected = {}
        for f in folders:
            im.send("SELECT %s" % quote(f))
            seen = int(per_folder * a.seen_ratio)
            if seen:
                im.send("UID STORE 1:%d +FLAGS.SILENT (\\Seen)" % seen)
            flagged = [u for u in range(1, per_folder + 1) if rng.random() < 0.01]
            if flagged:
                im.send("UID STORE %s +FLAGS.SILENT (\\Flagged)" % ",".join(map(str, flagged)))
            gone = [u for u in range(1, per_folder + 1) if rng.random() < a.expunge_ratio]
            if gone:
                im.send("UID STORE %s +FLAGS.SILENT (\\Deleted)" % ",".join(map(str, gone)))
                im.send("EXPUNGE")
            expected[f] = per_folder - len(gone)
            with lock:
                expunged_total[0] += len(gone)
        im.send("UNSELECT")
        im.collect_all()
        for f in folders:
            _, _, untagged = im.command("STATUS %s (MESSAGES)" % quote(f))
            attrs = [u for u in untagged if u and u[0] == "STATUS"][0][2]
            got = attrs[attrs.index(b"MESSAGES") + 1]
            if got != expected[f]:
                raise cyrlib.ProtocolError("%s/%s: %d messages, expected %d" % (user, f, got, expected[f]))
        im.logout()

    run_threads(a.connections, plans, work)
    return expunged_total[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("host")
    ap.add_argument("imap_port", type=int)
    ap.add_argument("--dir", required=True, help="the instance directory given to start.sh")
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--folders", type=int, default=8, help="folders per user, INBOX included")
    ap.add_argument("--messages", type=int, default=100, help="messages per folder")
    ap.add_argument("--shared-ratio", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--prefix", default="b")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--size-scale", type=float, default=1.0, help="multiplies median sizes")
    ap.add_argument("--max-size", type=int, default=8 << 20)
    ap.add_argument("--seen-ratio", type=float, default=0.7)
    ap.add_argument("--expunge-ratio", type=float, default=0.005)
    a = ap.parse_args()
    if not 1 <= a.folders <= len(FOLDER_NAMES) + 1:
        ap.error("--folders must be 1..%d" % (len(FOLDER_NAMES) + 1))
    a.dir = os.path.abspath(a.dir)
    roots = read_partitions(os.path.join(a.dir, "imapd.conf"))
    for p in ("default", "p2"):
        if p not in roots:
            ap.error("%s/imapd.conf has no partition-%s" % (a.dir, p))

    times = {}
    t0 = time.monotonic()
    plans = [user_plan(a, i) for i in range(a.users)]
    created = create_all(a, plans)
    times["create"] = time.monotonic() - t0

    t = time.monotonic()
    total = a.users * a.folders * a.messages
    nshared = max(1, int(total * a.shared_ratio / 4)) if a.shared_ratio > 0 else 0
    cy = pwd.getpwnam("cyrus")
    jobs = [(i, user, created[user], roots, a.seed, a.messages, a.shared_ratio, nshared)
            for i, (user, _, _) in enumerate(plans)]
    files = links = nbytes = 0
    with concurrent.futures.ProcessPoolExecutor(
            max_workers=a.workers, mp_context=multiprocessing.get_context("fork"),
            initializer=_init_worker,
            initargs=(a.seed, a.size_scale, a.max_size, cy.pw_uid, grp.getgrnam("mail").gr_gid)) as ex:
        for fcount, lcount, b in ex.map(write_user, jobs, chunksize=4):
            files += fcount
            links += lcount
            nbytes += b
    times["write"] = time.monotonic() - t

    t = time.monotonic()
    reconstruct(a, [u for u, _, _ in plans])
    times["reconstruct"] = time.monotonic() - t

    t = time.monotonic()
    expunged = flags_and_check(a, plans, a.messages)
    times["flags"] = time.monotonic() - t
    elapsed = time.monotonic() - t0

    for k, v in times.items():
        print("bulk: %-12s %8.2fs" % (k, v), file=sys.stderr)
    print("bulk: users=%d folders=%d messages=%d files=%d hardlinks=%d bytes=%d "
          "expunged=%d seconds=%.2f msgs_per_s=%.0f (create=%.2f write=%.2f reconstruct=%.2f "
          "flags=%.2f)" % (a.users, a.users * a.folders, total, files, links, nbytes, expunged,
                           elapsed, total / elapsed, times["create"], times["write"],
                           times["reconstruct"], times["flags"]))


if __name__ == "__main__":
    try:
        main()
    except (cyrlib.ProtocolError, OSError, RuntimeError) as e:
        print("bulk: error: %s" % e, file=sys.stderr)
        sys.exit(1)
