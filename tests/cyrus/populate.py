#!/usr/bin/env python3
"""Fills a fresh private Cyrus instance (tests/cyrus/start.sh) with varied, deterministic mail.

    populate.py HOST IMAP_PORT LMTP_PORT [--sieve-port P] [--users N] [--messages M]
                [--large K] [--large-size BYTES] [--seed S] [--prefix P] [--dotted-users D]

Stdlib only. Content depends only on the options (seeded); UIDVALIDITY, internal dates of LMTP
deliveries and modseqs depend on the clock and are not deterministic.

Users are PREFIX000, PREFIX001, ...; the last D of them (default 1, if N >= 3) have a dot in
their name (e.g. u002.x: internal name user.u002^x). Per user, created by `admin` with an
explicit partition:

    partition default: INBOX, Work, Lists, Lists/rust-users, Drafts, Trash, Donn&AOk-es (UTF-8
                       "Données", sent as modified UTF-7)
    partition p2:      Archive, Archive/2024, Archive/2025, Sent, Projects, Projects/Old
                       (renamed to Projects/Done at the end)

Then:
* LMTP (one transaction per message unless stated): M messages per user, of every kind
  (plain ASCII, raw 8-bit UTF-8 body and headers, RFC 2047 words, multipart/alternative,
  multipart/mixed with base64 attachments, tiny), ~15% to user+Work and ~10% to user+Lists
  (both folders have `anyone p`); per user one message to INBOX and +Work in ONE transaction
  (stored once, hard-linked) and one message sent twice in two transactions (INBOX and +Lists:
  identical bytes, two files); one message to every user in one transaction; K messages of
  LARGE_SIZE bytes (multipart with a base64 attachment) spread over the users.
* As each user over IMAP: UID COPY INBOX -> Archive/2025 (across partitions) and -> Work (same
  partition), UID MOVE INBOX -> Archive/2024, flags and keywords (\\Flagged $Work,
  \\Seen \\Answered, $Label1 NonJunk, $Forwarded, \\Seen on about half), APPEND to Drafts
  (\\Draft), Sent, Projects/Old, Trash (a tiny one, \\Deleted but not expunged) and
  Donn&AOk-es with fixed internal dates, \\Deleted + EXPUNGE in
  INBOX, Work and Lists (delayed expunge keeps the records and files), RENAME Projects/Old
  Projects/Done, CREATE + APPEND + DELETE Trash/Temp (delayed delete), subscriptions.
* If there are two users or more: the second one gets `lrs` on the first one's Lists and reads
  a message there (this creates the reader's seen.db).
* With --sieve-port: per user PUTSCRIPT "main" (files List-Id mail into Lists) and "vacation"
  over ManageSieve, SETACTIVE "main", then one newsletter per user is delivered to INBOX and
  must land in Lists (checked).

Prints one summary line (starts with "populate:") and exits 0, or exits 1 with the error.
"""

import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree (cyrlib, mailgen)

import argparse  # noqa: E402
import time

import cyrlib
import mailgen
from cyrlib import Imap, Lmtp, ManageSieve, quote, mutf7_encode

DEFAULT_FOLDERS = ["Work", "Lists", "Lists/rust-users", "Drafts", "Trash", "Données"]
P2_FOLDERS = ["Archive", "Archive/2024", "Archive/2025", "Sent", "Projects", "Projects/Old"]

SIEVE_MAIN = b"""require ["fileinto"];
# Mailing lists go to their folder.
if exists "List-Id" {
    fileinto "Lists";
    stop;
}
"""
SIEVE_VACATION = b"""require ["vacation"];
vacation :days 7 :subject "Away" "I am away until Monday.";
"""


def user_names(n, prefix, dotted):
    names = ["%s%03d" % (prefix, i) for i in range(n)]
    if n >= 3:
        for i in range(max(0, n - dotted), n):
            names[i] += ".x"
    return names


class Stats:
    def __init__(self):
        self.c = {}

    def add(self, key, n=1):
        self.c[key] = self.c.get(key, 0) + n

    def __getitem__(self, key):
        return self.c.get(key, 0)


def deliver(lmtp, stats, recipients, msg):
    lmtp.deliver("sender@example.test", recipients, msg)
    stats.add("lmtp_transactions")
    stats.add("deliveries", len(recipients) if isinstance(recipients, list) else 1)
    stats.add("bytes", len(msg))


def uids_of(imap, mailbox):
    imap.command("SELECT %s" % quote(mailbox))
    _, _, untagged = imap.command("UID SEARCH ALL")
    for u in untagged:
        if u and u[0] == "SEARCH":
            return [x for x in u[1:] if isinstance(x, int)]
    return []


def store(imap, stats, uids, flags):
    if not uids:
        return
    imap.command("UID STORE %s +FLAGS.SILENT (%s)" % (",".join(map(str, uids)), flags))
    stats.add("flag_stores", len(uids))


def expunge_some(imap, stats, mailbox, uids):
    imap.command("SELECT %s" % quote(mailbox))
    store(imap, stats, uids, "\\Deleted")
    imap.command("EXPUNGE")
    stats.add("expunged", len(uids))


def append(imap, stats, mailbox, flags, date, msg):
    imap.command("APPEND %s (%s) %s" % (quote(mailbox), flags, quote(date)), literals=[(msg, "")])
    stats.add("appended")
    stats.add("bytes", len(msg))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("host")
    ap.add_argument("imap_port", type=int)
    ap.add_argument("lmtp_port", type=int)
    ap.add_argument("--sieve-port", type=int)
    ap.add_argument("--users", type=int, default=3)
    ap.add_argument("--messages", type=int, default=20, help="LMTP messages per user")
    ap.add_argument("--large", type=int, default=2, help="large messages in all")
    ap.add_argument("--large-size", type=int, default=3 << 20)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--prefix", default="u")
    ap.add_argument("--dotted-users", type=int, default=1)
    a = ap.parse_args()
    if a.users < 1 or a.messages < 8:
        ap.error("need --users >= 1 and --messages >= 8")

    t0 = time.monotonic()
    gen = mailgen.MailGen(a.seed)
    stats = Stats()
    users = user_names(a.users, a.prefix, a.dotted_users)

    # 1. Users and folders, as admin, each on an explicit partition.
    admin = Imap(a.host, a.imap_port)
    admin.login("admin")
    for u in users:
        admin.command("CREATE %s default" % quote("user/" + u))
        stats.add("folders_default")
        for f in DEFAULT_FOLDERS:
            admin.command("CREATE %s default" % quote(mutf7_encode("user/%s/%s" % (u, f))))
            stats.add("folders_default")
        for f in P2_FOLDERS:
            admin.command("CREATE %s p2" % quote("user/%s/%s" % (u, f)))
            stats.add("folders_p2")
        for f in ("Work", "Lists"):
            # Lets LMTP deliver user+Folder straight into the folder.
            admin.command("SETACL %s anyone p" % quote("user/%s/%s" % (u, f)))

    # 2. LMTP deliveries.
    lmtp = Lmtp(a.host, a.lmtp_port)
    for u in users:
        # Kinds in a fixed rotation first so even small M covers every kind.
        kinds = [gen.plain, gen.utf8_8bit, gen.encoded_words, gen.alternative, gen.tiny,
                 lambda to: gen.attachment(to, gen.rng.randrange(20_000, 400_000))]
        for i in range(a.messages):
            to = "%s@example.test" % u
            msg = kinds[i](to) if i < len(kinds) else gen.any(to)
            r = gen.rng.random()
            rcpt = u + "+Work" if r < 0.15 else u + "+Lists" if r < 0.25 else u
            if i < 8:
                rcpt = u  # the IMAP steps below work on the first INBOX messages
            deliver(lmtp, stats, [rcpt], msg)
        # Same bytes into INBOX and Work in one transaction: one file, hard-linked.
        deliver(lmtp, stats, [u, u + "+Work"], gen.plain("%s@example.test" % u))
        stats.add("multi_rcpt_same_user")
        # Same bytes in two transactions: two files with the same GUID.
        twice = gen.utf8_8bit("%s@example.test" % u)
        deliver(lmtp, stats, [u], twice)
        deliver(lmtp, stats, [u + "+Lists"], twice)
    # One message to everybody in one transaction (single-instance across users).
    deliver(lmtp, stats, list(users), gen.alternative("all@example.test"))
    for k in range(a.large):
        u = users[k % len(users)]
        deliver(lmtp, stats, [u if k % 2 == 0 else u + "+Work"],
                gen.attachment("%s@example.test" % u, a.large_size))
        stats.add("large")

    # 3. Per-user IMAP activity.
    fixed_date = "15-Jan-2024 10:%02d:00 +0100"
    for ui, u in enumerate(users):
        im = Imap(a.host, a.imap_port)
        im.login(u)
        inbox = uids_of(im, "INBOX")
        im.command("UID COPY %d,%d %s" % (inbox[0], inbox[1], quote("Archive/2025")))
        im.command("UID COPY %d %s" % (inbox[3], quote("Work")))
        stats.add("copied", 3)
        store(im, stats, [inbox[0]], "\\Flagged $Work")
        store(im, stats, [inbox[1]], "\\Seen \\Answered")
        store(im, stats, [inbox[5]], "$Label1 NonJunk")
        store(im, stats, [inbox[-1]], "$Forwarded \\Seen")
        store(im, stats, inbox[6:len(inbox) // 2], "\\Seen")
        im.command("UID MOVE %d %s" % (inbox[4], quote("Archive/2024")))
        stats.add("moved")
        expunge_some(im, stats, "INBOX", [inbox[2]])
        work = uids_of(im, "Work")
        if len(work) >= 2:
            store(im, stats, [work[0]], "\\Seen $Work")
            expunge_some(im, stats, "Work", [work[-1]])
        lists = uids_of(im, "Lists")
        if lists:
            store(im, stats, lists, "\\Seen")
            if len(lists) >= 3:
                expunge_some(im, stats, "Lists", [lists[1]])
        im.command("UNSELECT")

        append(im, stats, "Drafts", "\\Draft", fixed_date % 1, gen.plain("someone@example.test"))
        # APPEND stores the bytes as given: the only way to get a message of a few bytes
        # (LMTP adds Return-Path, Received and X-Cyrus-Session-Id headers).
        append(im, stats, "Trash", "\\Seen \\Deleted", fixed_date % 2, gen.tiny(u))
        for j in range(3):
            append(im, stats, "Sent", "\\Seen", fixed_date % (10 + j), gen.plain("x%d@example.test" % j))
        append(im, stats, "Projects/Old", "\\Seen \\Flagged", fixed_date % 20, gen.alternative(u))
        append(im, stats, "Projects/Old", "", fixed_date % 21, gen.encoded_words(u))
        append(im, stats, mutf7_encode("Données"), "\\Seen", fixed_date % 30, gen.utf8_8bit(u))
        im.command("RENAME %s %s" % (quote("Projects/Old"), quote("Projects/Done")))
        stats.add("renamed")
        im.command("CREATE %s" % quote("Trash/Temp"))
        append(im, stats, "Trash/Temp", "", fixed_date % 40, gen.tiny(u))
        im.command("DELETE %s" % quote("Trash/Temp"))
        stats.add("deleted_folders")
        for f in ["INBOX", "Work", "Lists", "Archive", "Archive/2025", "Drafts", "Sent",
                  "Projects/Done", mutf7_encode("Données")]:
            im.command("SUBSCRIBE %s" % quote(f))
            stats.add("subscriptions")
        im.logout()

    # 4. Another user reads the first user's Lists: the reader gets a seen.db.
    if len(users) >= 2:
        owner, reader = users[0], users[1]
        admin.command("SETACL %s %s lrs" % (quote("user/%s/Lists" % owner), quote(reader)))
        im = Imap(a.host, a.imap_port)
        im.login(reader)
        shared = "Other Users/%s/Lists" % owner
        im.command("SELECT %s" % quote(shared))
        im.command("FETCH 1 (BODY[])")
        im.logout()
        stats.add("shared_reads")

    # 5. Sieve scripts, then one delivery that the active script must file into Lists.
    if a.sieve_port:
        for u in users:
            ms = ManageSieve(a.host, a.sieve_port, u)
            ms.putscript("main", SIEVE_MAIN)
            ms.putscript("vacation", SIEVE_VACATION)
            ms.setactive("main")
            ms.close()
            stats.add("sieve_scripts", 2)
        for u in users:
            before = lists_messages(u, a)
            deliver(lmtp, stats, [u], gen.alternative("%s@example.test" % u))
            after = lists_messages(u, a)
            if after != before + 1:
                raise cyrlib.ProtocolError(
                    "sieve did not file the newsletter for %s into Lists (%d -> %d)" % (u, before, after))
            stats.add("sieve_filed")
    lmtp.close()
    admin.logout()

    print("populate: users=%d folders=%d (default=%d p2=%d) lmtp_transactions=%d deliveries=%d "
          "large=%d appended=%d copied=%d moved=%d flag_stores=%d expunged=%d renamed=%d "
          "deleted_folders=%d subscriptions=%d shared_reads=%d sieve_scripts=%d sieve_filed=%d "
          "bytes=%d seconds=%.2f" % (
              len(users), stats["folders_default"] + stats["folders_p2"], stats["folders_default"],
              stats["folders_p2"], stats["lmtp_transactions"], stats["deliveries"], stats["large"],
              stats["appended"], stats["copied"], stats["moved"], stats["flag_stores"],
              stats["expunged"], stats["renamed"], stats["deleted_folders"], stats["subscriptions"],
              stats["shared_reads"], stats["sieve_scripts"], stats["sieve_filed"], stats["bytes"],
              time.monotonic() - t0))


def lists_messages(user, a):
    """MESSAGES of user's Lists, asked as the user (STATUS needs read rights)."""
    im = Imap(a.host, a.imap_port)
    im.login(user)
    _, _, untagged = im.command("STATUS %s (MESSAGES)" % quote("Lists"))
    im.logout()
    for u in untagged:
        if u and u[0] == "STATUS":
            attrs = u[2]
            return attrs[attrs.index(b"MESSAGES") + 1]
    raise cyrlib.ProtocolError("no STATUS for Lists of %s" % user)


if __name__ == "__main__":
    try:
        main()
    except (cyrlib.ProtocolError, OSError) as e:
        print("populate: error: %s" % e, file=sys.stderr)
        sys.exit(1)
