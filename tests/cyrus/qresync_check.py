#!/usr/bin/env python3
"""What a QRESYNC client (RFC 7162) that had a folder cached sees when it comes back.

    qresync_check.py HOST IMAP_PORT --user U --folder F --uidvalidity V --modseq M
                     [--known-uids 1:5,7] --out FILE

Logs in as U, ENABLE QRESYNC, then `EXAMINE F (QRESYNC (V M [KNOWN-UIDS]))`: EXAMINE, not
SELECT, so that nothing changes; the server answers both alike (RFC 7162 3.2.5). When V is
the folder's UIDVALIDITY, the server reports what changed since modseq M: the UIDs expunged
since (VANISHED (EARLIER), limited to KNOWN-UIDS when given) and the messages changed since
(FETCH with UID, FLAGS, MODSEQ). When V is not, the server ignores the QRESYNC parameters and
the client must throw its cache away: reported as "uidvalidity_changed": true.

Output (JSON; '-' writes to stdout):

    {"folder": "Work", "uidvalidity_sent": 1796313683, "modseq_sent": 7,
     "uidvalidity": 1796313683, "uidvalidity_changed": false,
     "highestmodseq": 11, "exists": 3,
     "vanished": [4],
     "fetched": [{"uid": 1, "modseq": 9, "flags": ["$Work", "\\\\Seen"]}]}

"vanished" and "fetched" are sorted by UID; "flags" sorted, without \\Recent.
Prints one line "qresync_check: ..." on stderr; exits 0, or 1 with the error.
"""

import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree (cyrlib)

import argparse  # noqa: E402
import re

import cyrlib
from cyrlib import Imap, quote, fetch_items, response_codes, write_json

SEQUENCE_SET = re.compile(r"^\d+(:\d+)?(,\d+(:\d+)?)*$")


def uid_set(text):
    """The UIDs of a sequence set like "1:3,7" (no "*": VANISHED never sends one)."""
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        lo, hi = int(lo), int(hi or lo)
        out.extend(range(min(lo, hi), max(lo, hi) + 1))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("host")
    ap.add_argument("imap_port", type=int)
    ap.add_argument("--user", required=True)
    ap.add_argument("--folder", required=True, help="as on the wire (modified UTF-7)")
    ap.add_argument("--uidvalidity", type=int, required=True)
    ap.add_argument("--modseq", type=int, required=True)
    ap.add_argument("--known-uids", help="sequence set of the UIDs the client holds")
    ap.add_argument("--out", required=True, help="JSON file to write ('-' for stdout)")
    a = ap.parse_args()
    if a.known_uids and not SEQUENCE_SET.match(a.known_uids):
        ap.error("--known-uids %r is not a UID set like 1:5,7" % a.known_uids)
    if a.modseq < 1:
        ap.error("--modseq must be at least 1 (RFC 7162: mod-sequence-value is non-zero)")

    im = Imap(a.host, a.imap_port)
    im.login(a.user)
    im.command("ENABLE QRESYNC")
    params = "%d %d" % (a.uidvalidity, a.modseq)
    if a.known_uids:
        params += " " + a.known_uids
    _, _, untagged = im.command("EXAMINE %s (QRESYNC (%s))" % (quote(a.folder), params))
    # UNSELECT closes the folder before it answers: once we return, no session of ours holds
    # it open (Cyrus defers removing expunged files while a folder is open).
    im.command("UNSELECT")
    im.logout()

    codes = response_codes([u[1] for u in untagged if u and u[0] == "OK"])
    uidvalidity = int(codes["UIDVALIDITY"])
    vanished, fetched, exists = set(), [], 0
    for u in untagged:
        if len(u) == 2 and u[1] == "EXISTS":
            exists = u[0]
        elif u and u[0] == "VANISHED":
            # * VANISHED (EARLIER) 41,43:116 -- a lone UID is parsed as a number.
            if len(u) != 3 or [cyrlib._s(x).upper() for x in u[1]] != ["EARLIER"]:
                raise cyrlib.ProtocolError("unexpected VANISHED response: %r" % (u,))
            vanished.update(uid_set(cyrlib._s(u[2])))
        elif len(u) >= 3 and u[1] == "FETCH":
            _, d = fetch_items(u)
            modseq = d["MODSEQ"]
            fetched.append({
                "uid": d["UID"],
                "modseq": modseq[0] if isinstance(modseq, list) else modseq,
                "flags": sorted(cyrlib._s(f) for f in d["FLAGS"] if cyrlib._s(f) != "\\Recent"),
            })
    out = {
        "folder": a.folder,
        "uidvalidity_sent": a.uidvalidity,
        "modseq_sent": a.modseq,
        "uidvalidity": uidvalidity,
        "uidvalidity_changed": uidvalidity != a.uidvalidity,
        "highestmodseq": int(codes.get("HIGHESTMODSEQ") or 0),
        "exists": exists,
        "vanished": sorted(vanished),
        "fetched": sorted(fetched, key=lambda m: m["uid"]),
    }
    write_json(a.out, out)
    print("qresync_check: %s/%s uidvalidity_changed=%s vanished=%d fetched=%d -> %s" % (
        a.user, a.folder, out["uidvalidity_changed"], len(out["vanished"]), len(fetched), a.out),
        file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except (cyrlib.ProtocolError, OSError) as e:
        print("qresync_check: error: %s" % e, file=sys.stderr)
        sys.exit(1)
