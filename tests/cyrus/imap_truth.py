#!/usr/bin/env python3
"""Dumps what a Cyrus IMAP server itself says about every folder of every user, as JSON.

    imap_truth.py HOST IMAP_PORT --out FILE [--users u1,u2,...]

Without --users, the users are those `admin` sees with LIST "" "user/%". Each user is logged in
as itself (the test instances accept any password) and every selectable folder it LISTs is
read with EXAMINE (read-only: nothing changes, \\Seen is not set, BODY.PEEK[] is used).

Output: one JSON object keyed "<user>/<folder>" (folder as the user sees it, e.g. "u000/INBOX",
"u000/Archive/2025", non-ASCII names in modified UTF-7 as on the wire: "u000/Donn&AOk-es"):

    {
      "u000/INBOX": {
        "status": "INBOX (UIDNEXT 12 UIDVALIDITY 1795415425 HIGHESTMODSEQ 16)",
        "messages": [
          {"uid": 1, "flags": ["$Work", "\\\\Flagged"],
           "internaldate": "23-Nov-2026 06:30:24 +0000", "size": 508,
           "sha1": "ceea6011..."},
          ...
        ],
        "uniqueid": "tr3g9qzoe6kapjm5i3coxngy",
        "uidvalidity": 1795415425,
        "uidnext": 12,
        "highestmodseq": 16,
        "exists": 9,
        "partition": "default",
        "subscribed": true
      },
      ...
    }

* "status": the server's verbatim answer to STATUS (UIDNEXT UIDVALIDITY HIGHESTMODSEQ), after
  "* STATUS " (as in tests/fixtures/cyrus-3.6/truth.json).
* "messages": every live message (expunged records stay in cyrus.index but are not here),
  by UID: FLAGS sorted by byte value, without the session flag \\Recent; INTERNALDATE
  verbatim; RFC822.SIZE; SHA-1 (hex) of the bytes BODY.PEEK[] returned, which equals the GUID
  Cyrus keeps in cyrus.index.
* "uniqueid": the mailbox unique id (MAILBOXID from EXAMINE's response code, cross-checked with
  the /shared/vendor/cmu/cyrus-imapd/uniqueid annotation; Cyrus 3.6.1 answers garbage to
  STATUS (MAILBOXID) on INBOX, so STATUS is not used for it).
* "uidvalidity", "uidnext", "highestmodseq": the numbers of "status"; "exists": EXISTS.
* "partition": the /shared/vendor/cmu/cyrus-imapd/partition annotation.
* "subscribed": whether LSUB lists the folder for its owner.
"""

import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree (cyrlib, mailgen)

import argparse  # noqa: E402
import hashlib

import cyrlib
from cyrlib import Imap, quote, fetch_items, response_codes, write_json


def users_of(host, port):
    admin = Imap(host, port)
    admin.login("admin")
    users = []
    for flags, delim, name in admin.list("", "user/%"):
        users.append(name.split(delim or "/", 1)[1])
    admin.logout()
    return sorted(users)


def annotation(im, mailbox, entry):
    _, _, untagged = im.command("GETMETADATA %s (%s)" % (quote(mailbox), entry))
    for u in untagged:
        if u and u[0] == "METADATA":
            kv = u[2]
            for i in range(0, len(kv), 2):
                if cyrlib._s(kv[i]) == entry:
                    return cyrlib._s(kv[i + 1])
    return None


def folder_truth(im, user, mailbox, subscribed):
    _, _, untagged = im.command("STATUS %s (UIDNEXT UIDVALIDITY HIGHESTMODSEQ)" % quote(mailbox))
    st = [u for u in untagged if u and u[0] == "STATUS"]
    if len(st) != 1:
        raise cyrlib.ProtocolError("no STATUS for %s/%s" % (user, mailbox))
    attrs, raw = st[0][2], st[0][3]
    nums = {cyrlib._s(attrs[i]).upper(): attrs[i + 1] for i in range(0, len(attrs), 2)}

    _, _, untagged = im.command("EXAMINE %s" % quote(mailbox))
    codes = response_codes([u[1] for u in untagged if u and u[0] == "OK"])
    exists = next((u[0] for u in untagged if len(u) == 2 and u[1] == "EXISTS"), 0)
    mailboxid = (codes.get("MAILBOXID") or "").strip("()")
    uniqueid = annotation(im, mailbox, "/shared/vendor/cmu/cyrus-imapd/uniqueid")
    if mailboxid != uniqueid:
        raise cyrlib.ProtocolError("%s/%s: MAILBOXID %r but uniqueid annotation %r"
                                   % (user, mailbox, mailboxid, uniqueid))
    partition = annotation(im, mailbox, "/shared/vendor/cmu/cyrus-imapd/partition")

    messages = []
    if exists:
        _, _, untagged = im.command("UID FETCH 1:* (UID FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[])")
        for u in untagged:
            if len(u) < 3 or u[1] != "FETCH":
                continue
            _, d = fetch_items(u)
            body = d["BODY[]"]
            flags = sorted(cyrlib._s(f) for f in d["FLAGS"] if cyrlib._s(f) != "\\Recent")
            messages.append({
                "uid": d["UID"],
                "flags": flags,
                "internaldate": cyrlib._s(d["INTERNALDATE"]),
                "size": d["RFC822.SIZE"],
                "sha1": hashlib.sha1(body).hexdigest(),
            })
            if len(body) != d["RFC822.SIZE"]:
                raise cyrlib.ProtocolError("%s/%s uid %s: RFC822.SIZE %d but %d bytes"
                                           % (user, mailbox, d["UID"], d["RFC822.SIZE"], len(body)))
        messages.sort(key=lambda m: m["uid"])
    im.command("UNSELECT")
    return {
        "status": raw,
        "messages": messages,
        "uniqueid": uniqueid,
        "uidvalidity": nums["UIDVALIDITY"],
        "uidnext": nums["UIDNEXT"],
        "highestmodseq": nums["HIGHESTMODSEQ"],
        "exists": exists,
        "partition": partition,
        "subscribed": subscribed,
    }


def user_truth(host, port, user, out):
    im = Imap(host, port)
    im.login(user)
    subscribed = set(im.lsub("", "*"))
    for flags, delim, name in im.list("", "*"):
        lf = [f.lower() for f in flags]
        if "\\noselect" in lf or "\\nonexistent" in lf:
            continue
        # Other users' and shared folders are not this user's.
        if name.startswith("Other Users") or name.startswith("Shared Folders"):
            continue
        out["%s/%s" % (user, name)] = folder_truth(im, user, name, name in subscribed)
    im.logout()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("host")
    ap.add_argument("imap_port", type=int)
    ap.add_argument("--out", required=True, help="JSON file to write ('-' for stdout)")
    ap.add_argument("--users", help="comma-separated user names (default: all)")
    a = ap.parse_args()
    users = a.users.split(",") if a.users else users_of(a.host, a.imap_port)
    out = {}
    for u in users:
        user_truth(a.host, a.imap_port, u, out)
    write_json(a.out, out)
    print("imap_truth: users=%d folders=%d messages=%d -> %s" % (
        len(users), len(out), sum(len(v["messages"]) for v in out.values()), a.out),
        file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except (cyrlib.ProtocolError, OSError) as e:
        print("imap_truth: error: %s" % e, file=sys.stderr)
        sys.exit(1)
