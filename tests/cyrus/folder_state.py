#!/usr/bin/env python3
"""Records what a mail client of one user sees, to compare before a deletion and after a restore.

    folder_state.py HOST IMAP_PORT --user U [--folders F1,F2,...] [--sieve-port P] --out FILE

Logs in as U (the test instances accept any password) and reads every folder U LISTs (its own:
not "Other Users/..." nor "Shared Folders/..."), or only --folders (then other users' folders
may be named too, e.g. "Other Users/u000/Lists", to record U's own \\Seen there). Folders are
read with EXAMINE and BODY.PEEK[]: nothing changes, not even \\Seen. Folder names as on the
wire (modified UTF-7, e.g. "Donn&AOk-es").

Output (JSON; '-' writes to stdout):

    {
      "user": "u000",
      "folders": {
        "INBOX": {
          "uidvalidity": 1796313683, "uidnext": 22, "highestmodseq": 33,
          "mailboxid": "mwbaemui9ckqqyd5rqwugk5a", "exists": 17,
          "messages": [
            {"uid": 1, "sha1": "ceea6011...", "flags": ["$Work", "\\\\Flagged"],
             "internaldate": "23-Nov-2026 06:30:24 +0000", "modseq": 12},
            ...
          ]
        },
        ...
      },
      "subscriptions": ["Archive", "INBOX", ...],
      "sieve": {"active": "main", "scripts": {"main": "require ...", "vacation": "..."}}
    }

* "mailboxid": RFC 8474's MAILBOXID (Cyrus's mailbox unique id), from `STATUS f (MAILBOXID)`
  asked alone: Cyrus 3.6.1 answers garbage bytes when MAILBOXID is asked together with other
  STATUS items. Cross-checked with EXAMINE's [MAILBOXID (...)] response code.
* "messages": live messages by UID; "flags" sorted, keywords included, without \\Recent;
  "sha1": of the bytes BODY.PEEK[] returned; "modseq": the message's MODSEQ (CONDSTORE).
* "subscriptions": LSUB "" "*", sorted (names the user is subscribed to, existing or not).
* "sieve" only with --sieve-port: every script of LISTSCRIPTS with its text (GETSCRIPT) and
  which one is ACTIVE (null if none).

Prints one line "folder_state: ..." on stderr; exits 0, or 1 with the error.
"""

import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree (cyrlib)

import argparse  # noqa: E402
import hashlib

import cyrlib
from cyrlib import Imap, ManageSieve, quote, fetch_items, response_codes, write_json


def mailboxid(im, folder):
    """MAILBOXID by STATUS, asked alone (see the header)."""
    _, _, untagged = im.command("STATUS %s (MAILBOXID)" % quote(folder))
    for u in untagged:
        if u and u[0] == "STATUS":
            attrs = u[2]
            for i in range(0, len(attrs) - 1, 2):
                if cyrlib._s(attrs[i]).upper() == "MAILBOXID":
                    value = attrs[i + 1]
                    # MAILBOXID (id): a parenthesised list of one atom.
                    if isinstance(value, list) and len(value) == 1:
                        return cyrlib._s(value[0])
                    raise cyrlib.ProtocolError("STATUS %s MAILBOXID: %r" % (folder, value))
    raise cyrlib.ProtocolError("no STATUS (MAILBOXID) for %s" % folder)


def folder_state(im, folder):
    _, _, untagged = im.command(
        "STATUS %s (UIDNEXT UIDVALIDITY HIGHESTMODSEQ)" % quote(folder))
    st = [u for u in untagged if u and u[0] == "STATUS"]
    if len(st) != 1:
        raise cyrlib.ProtocolError("no STATUS for %s" % folder)
    attrs = st[0][2]
    nums = {cyrlib._s(attrs[i]).upper(): attrs[i + 1] for i in range(0, len(attrs), 2)}
    mbid = mailboxid(im, folder)

    _, _, untagged = im.command("EXAMINE %s" % quote(folder))
    codes = response_codes([u[1] for u in untagged if u and u[0] == "OK"])
    exists = next((u[0] for u in untagged if len(u) == 2 and u[1] == "EXISTS"), 0)
    from_examine = (codes.get("MAILBOXID") or "").strip("()")
    if from_examine != mbid:
        raise cyrlib.ProtocolError("%s: STATUS MAILBOXID %r but EXAMINE says %r"
                                   % (folder, mbid, from_examine))

    messages = []
    if exists:
        _, _, untagged = im.command(
            "UID FETCH 1:* (UID FLAGS INTERNALDATE MODSEQ BODY.PEEK[])")
        for u in untagged:
            if len(u) < 3 or u[1] != "FETCH":
                continue
            _, d = fetch_items(u)
            modseq = d["MODSEQ"]
            messages.append({
                "uid": d["UID"],
                "sha1": hashlib.sha1(d["BODY[]"]).hexdigest(),
                "flags": sorted(cyrlib._s(f) for f in d["FLAGS"] if cyrlib._s(f) != "\\Recent"),
                "internaldate": cyrlib._s(d["INTERNALDATE"]),
                "modseq": modseq[0] if isinstance(modseq, list) else modseq,
            })
        messages.sort(key=lambda m: m["uid"])
    im.command("UNSELECT")
    return {
        "uidvalidity": nums["UIDVALIDITY"],
        "uidnext": nums["UIDNEXT"],
        "highestmodseq": nums["HIGHESTMODSEQ"],
        "mailboxid": mbid,
        "exists": exists,
        "messages": messages,
    }


def own_folders(im):
    out = []
    for flags, _delim, name in im.list("", "*"):
        lf = [f.lower() for f in flags]
        if "\\noselect" in lf or "\\nonexistent" in lf:
            continue
        if name.startswith("Other Users") or name.startswith("Shared Folders"):
            continue
        out.append(name)
    return sorted(out)


def sieve_state(host, port, user):
    ms = ManageSieve(host, port, user)
    try:
        scripts = ms.scripts()
        return {
            "active": next((n for n, active in scripts if active), None),
            "scripts": {n: ms.getscript(n).decode("utf-8", "surrogateescape")
                        for n, _ in scripts},
        }
    finally:
        ms.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("host")
    ap.add_argument("imap_port", type=int)
    ap.add_argument("--user", required=True)
    ap.add_argument("--folders", help="comma-separated folders (default: all of the user's)")
    ap.add_argument("--sieve-port", type=int)
    ap.add_argument("--out", required=True, help="JSON file to write ('-' for stdout)")
    a = ap.parse_args()

    im = Imap(a.host, a.imap_port)
    im.login(a.user)
    folders = a.folders.split(",") if a.folders else own_folders(im)
    out = {
        "user": a.user,
        "folders": {f: folder_state(im, f) for f in folders},
        "subscriptions": sorted(im.lsub("", "*")),
    }
    im.logout()
    if a.sieve_port:
        out["sieve"] = sieve_state(a.host, a.sieve_port, a.user)

    write_json(a.out, out)
    print("folder_state: user=%s folders=%d messages=%d -> %s" % (
        a.user, len(out["folders"]), sum(len(v["messages"]) for v in out["folders"].values()),
        a.out), file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except (cyrlib.ProtocolError, OSError) as e:
        print("folder_state: error: %s" % e, file=sys.stderr)
        sys.exit(1)
