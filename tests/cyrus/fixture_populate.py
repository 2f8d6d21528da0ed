#!/usr/bin/env python3
"""Fills a fresh private Cyrus instance (tests/cyrus/start.sh) with the small, fixed mail of the
repository's fixture, tests/fixtures/cyrus-3.6 (tests/cyrus/make_fixture.sh runs it).

    fixture_populate.py HOST IMAP_PORT LMTP_PORT [--user fx0] [--seed 36]

Stdlib only; uses populate.py's helpers and mailgen.py's messages. Message content depends only
on --seed; what the server adds (Received and X-Cyrus-Session-Id headers, hence the GUIDs of
LMTP deliveries), unique ids, UIDVALIDITY, internal dates and modseqs depend on the clock.

One user, five folders, created by `admin` with an explicit partition:

    partition default: INBOX, Work, Lists (Work and Lists with `anyone p`, for user+Folder)
    partition p2:      Archive (stays empty), Archive/2025

Then, over LMTP (one transaction per message unless stated):
* INBOX UIDs 1-10: plain ASCII (1-4, 10), raw 8-bit UTF-8 body and headers (5), RFC 2047
  words with a quoted-printable body (6), multipart/alternative (7), tiny (8), multipart/mixed
  with a small base64 attachment (9);
* Work UIDs 1-3 to user+Work, Lists UIDs 1-5 to user+Lists;
* one message to user and user+Lists in ONE transaction: INBOX UID 11 and Lists UID 6, one
  file hard-linked into both folders (same GUID).

Then as the user over IMAP:
* UID COPY INBOX 1,2 to Archive/2025 (across partitions: a copy of the file) and INBOX 4 to
  Work (same partition: a hard link), before any flag is set, so the Archive folders never
  see a keyword;
* in INBOX, Work and Lists: UID 1 `\\Flagged $Work`, UID 2 `\\Seen \\Answered`; UID 3
  `\\Deleted` and EXPUNGE (delayed expunge keeps the record, flagged expunged, and the file);
* SUBSCRIBE INBOX, Work, Archive/2025.

Result: 5 folders, 20 live messages and 3 expunged records; checked against STATUS before it
exits. Prints one summary line (starts with "fixture_populate:") and exits 0, or exits 1 with
the error.
"""

import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree (cyrlib, mailgen, populate)

import argparse  # noqa: E402

import cyrlib
import mailgen
from cyrlib import Imap, Lmtp, quote
from populate import Stats, deliver, expunge_some, store, uids_of

FOLDERS = [("Work", "default"), ("Lists", "default"), ("Archive", "p2"), ("Archive/2025", "p2")]
SUBSCRIBED = ["INBOX", "Work", "Archive/2025"]
# STATUS (MESSAGES UIDNEXT) each folder must answer at the end.
EXPECTED = {
    "INBOX": (10, 12),
    "Work": (3, 5),
    "Lists": (5, 7),
    "Archive": (0, 1),
    "Archive/2025": (2, 3),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("host")
    ap.add_argument("imap_port", type=int)
    ap.add_argument("lmtp_port", type=int)
    ap.add_argument("--user", default="fx0")
    ap.add_argument("--seed", type=int, default=36)
    a = ap.parse_args()
    u = a.user
    to = "%s@example.test" % u
    gen = mailgen.MailGen(a.seed)
    stats = Stats()

    # 1. The user and its folders, as admin, each on an explicit partition.
    admin = Imap(a.host, a.imap_port)
    admin.login("admin")
    admin.command("CREATE %s default" % quote("user/" + u))
    for folder, partition in FOLDERS:
        admin.command("CREATE %s %s" % (quote("user/%s/%s" % (u, folder)), partition))
    for folder in ("Work", "Lists"):
        # Lets LMTP deliver user+Folder straight into the folder.
        admin.command("SETACL %s anyone p" % quote("user/%s/%s" % (u, folder)))
    admin.logout()

    # 2. LMTP deliveries. Small messages: the fixture lives in the repository.
    lmtp = Lmtp(a.host, a.lmtp_port)
    inbox = [gen.plain(to, 300), gen.plain(to, 400), gen.plain(to, 350), gen.plain(to, 300),
             gen.utf8_8bit(to), gen.encoded_words(to), gen.alternative(to), gen.tiny(to),
             gen.attachment(to, 3000), gen.plain(to, 2000)]
    for msg in inbox:
        deliver(lmtp, stats, [u], msg)
    for _ in range(3):
        deliver(lmtp, stats, [u + "+Work"], gen.plain(to, 600))
    for msg in [gen.alternative(to), gen.plain(to, 500), gen.plain(to, 300), gen.utf8_8bit(to),
                gen.encoded_words(to)]:
        deliver(lmtp, stats, [u + "+Lists"], msg)
    # Same bytes into INBOX and Lists in one transaction: one file, hard-linked.
    deliver(lmtp, stats, [u, u + "+Lists"], gen.plain(to, 800))
    lmtp.close()

    # 3. As the user: copies, flags, expunges, subscriptions.
    im = Imap(a.host, a.imap_port)
    im.login(u)
    inbox_uids = uids_of(im, "INBOX")
    if inbox_uids != list(range(1, 12)):
        raise cyrlib.ProtocolError("INBOX holds UIDs %s, not 1-11" % inbox_uids)
    im.command("UID COPY 1,2 %s" % quote("Archive/2025"))
    im.command("UID COPY 4 %s" % quote("Work"))
    stats.add("copied", 3)
    for folder in ("INBOX", "Work", "Lists"):
        uids = uids_of(im, folder)  # selects it
        store(im, stats, [uids[0]], "\\Flagged $Work")
        store(im, stats, [uids[1]], "\\Seen \\Answered")
        expunge_some(im, stats, folder, [uids[2]])
    im.command("UNSELECT")
    for folder in SUBSCRIBED:
        im.command("SUBSCRIBE %s" % quote(folder))
        stats.add("subscriptions")

    # 4. The shape the fixture's README and tests describe.
    for folder, (messages, uidnext) in EXPECTED.items():
        _, _, untagged = im.command("STATUS %s (MESSAGES UIDNEXT)" % quote(folder))
        attrs = next(x[2] for x in untagged if x and x[0] == "STATUS")
        got = {cyrlib._s(attrs[i]).upper(): attrs[i + 1] for i in range(0, len(attrs), 2)}
        if (got["MESSAGES"], got["UIDNEXT"]) != (messages, uidnext):
            raise cyrlib.ProtocolError("%s: MESSAGES %s UIDNEXT %s, want %d %d" % (
                folder, got["MESSAGES"], got["UIDNEXT"], messages, uidnext))
    subscribed = sorted(im.lsub("", "*"))
    if subscribed != sorted(SUBSCRIBED):
        raise cyrlib.ProtocolError("subscribed to %s, want %s" % (subscribed, SUBSCRIBED))
    im.logout()

    print("fixture_populate: user=%s folders=%d lmtp_transactions=%d deliveries=%d copied=%d "
          "flag_stores=%d expunged=%d subscriptions=%d bytes=%d" % (
              u, 1 + len(FOLDERS), stats["lmtp_transactions"], stats["deliveries"],
              stats["copied"], stats["flag_stores"], stats["expunged"], stats["subscriptions"],
              stats["bytes"]))


if __name__ == "__main__":
    try:
        main()
    except (cyrlib.ProtocolError, OSError) as e:
        print("fixture_populate: error: %s" % e, file=sys.stderr)
        sys.exit(1)
