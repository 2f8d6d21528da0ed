#!/usr/bin/env python3
"""Keeps a private Cyrus instance busy changing one user's folders, for backupd's consistency
test (tests/tests/backupd_spool_load.rs): LMTP deliveries, IMAP flag changes and expunges,
and `cyr_expire -X 0` (which unlinks expunged messages and rewrites cyrus.index), all at
once, in the same folders.

    backupd_load.py HOST IMAP_PORT LMTP_PORT --user U --conf IMAPD_CONF
                    [--setup] [--seconds S] [--max-deliveries N] [--stop-file F]

--setup creates user U with folder Work (`anyone p`, so LMTP delivers U+Work into it) and
delivers 10 messages to each, then exits. Without it: three threads run until S seconds
pass, N deliveries are made, or F exists, whichever comes first:

* deliver: one LMTP transaction at a time, alternately to U (INBOX) and U+Work;
* imap: as U, alternately in INBOX and Work: +FLAGS / -FLAGS on a few messages, every
  fifth round a keyword the folder never had (Cyrus then rewrites cyrus.header too; up to
  60 per folder), and every third round \\Deleted + EXPUNGE of the two oldest;
* expire: every 0.5 s, `cyr_expire -X 0 -u U` as the cyrus user.

Stdlib only. While it runs, prints the counts so far every 0.2 s on a line starting with
"progress:" (so that a test can wait for the load it needs rather than for a time); at the
end one summary line starting with "load:" (counts and errors=N). Exits 0 if no thread met
an error, 1 otherwise (each error is printed on stderr).
"""

import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import argparse  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from cyrlib import Imap, Lmtp, quote  # noqa: E402

CYRUS_BIN = os.environ.get("CYRUS_BIN", "/usr/lib/cyrus/bin")
# Cyrus keeps at most 128 keywords per mailbox; leave room for $Load and the system's own.
MAX_KEYWORDS = 60


def message(user, n):
    body = ("Message %d of the backupd load test.\r\n" % n) * (1 + n % 20)
    return (
        "From: <load@example.test>\r\n"
        "To: <%s@example.test>\r\n"
        "Subject: load %d\r\n"
        "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
        "Message-ID: <load-%d-%f@example.test>\r\n"
        "\r\n%s" % (user, n, n, time.time(), body)
    ).encode()


class Run:
    def __init__(self, a):
        self.a = a
        self.deadline = time.monotonic() + a.seconds
        self.lock = threading.Lock()
        self.counts = {"deliveries": 0, "stores": 0, "keywords": 0, "expunges": 0, "expires": 0}
        self.errors = []

    def add(self, key, n=1):
        with self.lock:
            self.counts[key] += n

    def error(self, what, e):
        with self.lock:
            self.errors.append("%s: %r" % (what, e))
        print("backupd_load.py: %s: %r" % (what, e), file=sys.stderr, flush=True)

    def done(self):
        if self.errors or time.monotonic() >= self.deadline:
            return True
        if self.a.stop_file and os.path.exists(self.a.stop_file):
            return True
        with self.lock:
            return self.counts["deliveries"] >= self.a.max_deliveries

    def deliver(self):
        try:
            lmtp = Lmtp(self.a.host, self.a.lmtp_port)
            n = 0
            while not self.done():
                rcpt = self.a.user if n % 2 == 0 else self.a.user + "+Work"
                lmtp.deliver("load@example.test", [rcpt], message(self.a.user, n))
                self.add("deliveries")
                n += 1
            lmtp.close()
        except Exception as e:  # noqa: BLE001 - every failure is the test's business
            self.error("deliver", e)

    def imap(self):
        try:
            im = Imap(self.a.host, self.a.imap_port)
            im.login(self.a.user)
            rnd = 0
            keywords = {"INBOX": 0, "Work": 0}
            while not self.done():
                folder = "INBOX" if rnd % 2 == 0 else "Work"
                im.command("SELECT %s" % quote(folder))
                _, _, untagged = im.command("UID SEARCH NOT DELETED")
                uids = []
                for u in untagged:
                    if u and u[0] == "SEARCH":
                        uids = [x for x in u[1:] if isinstance(x, int)]
                if uids:
                    some = ",".join(str(u) for u in uids[rnd % 3::5][:10]) or str(uids[-1])
                    sign = "+" if rnd % 4 < 2 else "-"
                    im.command("UID STORE %s %sFLAGS.SILENT (\\Seen $Load)" % (some, sign))
                    self.add("stores")
                if rnd % 10 in (4, 5) and uids and keywords[folder] < MAX_KEYWORDS:
                    # A keyword the folder never had: Cyrus rewrites cyrus.header (renamed
                    # over) together with cyrus.index.
                    keywords[folder] += 1
                    im.command("UID STORE %d +FLAGS.SILENT ($K%d)" % (uids[-1], keywords[folder]))
                    self.add("keywords")
                if rnd % 3 == 2 and len(uids) > 4:
                    old = ",".join(str(u) for u in uids[:2])
                    im.command("UID STORE %s +FLAGS.SILENT (\\Deleted)" % old)
                    im.command("EXPUNGE")
                    self.add("expunges", 2)
                rnd += 1
            im.logout()
        except Exception as e:  # noqa: BLE001
            self.error("imap", e)

    def expire(self):
        cmd = [os.path.join(CYRUS_BIN, "cyr_expire"), "-C", self.a.conf, "-X", "0",
               "-u", self.a.user]
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "cyrus", "--"] + cmd
        try:
            while not self.done():
                out = subprocess.run(cmd, capture_output=True, timeout=60)
                if out.returncode != 0:
                    raise RuntimeError("cyr_expire exit %d: %s" % (
                        out.returncode, out.stderr.decode("utf-8", "replace")))
                self.add("expires")
                time.sleep(0.5)
        except Exception as e:  # noqa: BLE001
            self.error("expire", e)


    def progress(self):
        while not self.done():
            with self.lock:
                c = dict(self.counts)
            print("progress: " + " ".join("%s=%d" % kv for kv in sorted(c.items())), flush=True)
            time.sleep(0.2)


def setup(a):
    admin = Imap(a.host, a.imap_port)
    admin.login("admin")
    admin.command("CREATE %s" % quote("user/" + a.user))
    admin.command("CREATE %s" % quote("user/%s/Work" % a.user))
    admin.command("SETACL %s anyone p" % quote("user/%s/Work" % a.user))
    admin.logout()
    lmtp = Lmtp(a.host, a.lmtp_port)
    for n in range(20):
        rcpt = a.user if n % 2 == 0 else a.user + "+Work"
        lmtp.deliver("load@example.test", [rcpt], message(a.user, 100000 + n))
    lmtp.close()
    print("load: setup user=%s deliveries=20" % a.user)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("host")
    ap.add_argument("imap_port", type=int)
    ap.add_argument("lmtp_port", type=int)
    ap.add_argument("--user", required=True)
    ap.add_argument("--conf", required=True, help="the instance's imapd.conf")
    ap.add_argument("--setup", action="store_true")
    ap.add_argument("--seconds", type=float, default=30)
    ap.add_argument("--max-deliveries", type=int, default=5000)
    ap.add_argument("--stop-file")
    a = ap.parse_args()
    if a.setup:
        setup(a)
        return 0
    run = Run(a)
    t0 = time.monotonic()
    threads = [threading.Thread(target=f)
               for f in (run.deliver, run.imap, run.expire, run.progress)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    c = run.counts
    print("load: deliveries=%d stores=%d keywords=%d expunges=%d expires=%d errors=%d "
          "seconds=%.1f" % (
              c["deliveries"], c["stores"], c["keywords"], c["expunges"], c["expires"],
              len(run.errors),
        time.monotonic() - t0), flush=True)
    return 1 if run.errors else 0


if __name__ == "__main__":
    sys.exit(main())
