#!/usr/bin/env python3
"""Applies one deterministic nightly churn to a spool built by bulk.py, over IMAP and LMTP.

    churn.py HOST IMAP_PORT LMTP_PORT --users N --folders F [--prefix b] [--night K] [--seed S]
             [--new-folder-ratio 0.02] [--new-per-folder 3] [--expunge-ratio 0.005]
             [--flag-ratio 0.01] [--renames-per-users 50] [--connections 4]
             [--size-scale 1.0] [--max-size BYTES] [--json FILE]
    churn.py HOST IMAP_PORT LMTP_PORT --users N --folders F --dirty 0.6 [--json FILE]

The folders are what `admin` LISTs under user/<prefix><nnnnn> for the N users (so folders
renamed on earlier nights are found, not assumed); F is only checked against what LIST shows
(a warning when a user has another count). Every change is made as the folder's owner (LOGIN
with any password) on C connections, pipelined.

Night mode (the default), for night K:
* new mail: a fraction --new-folder-ratio of all folders (at least 1), each gets
  --new-per-folder messages from mailgen.FastGen (bulk.py's sizes, times --size-scale), dated
  on day K after bulk.py's last date. INBOX gets them by LMTP, other folders by APPEND;
* those folders plus as many other ones: \\Deleted + EXPUNGE of --expunge-ratio of the
  messages there before tonight's mail (at least 1), and \\Flagged or \\Seen toggled on
  --flag-ratio of the remaining ones (at least 1);
* one rename per --renames-per-users users: a non-INBOX folder without children gets the
  name <name without an earlier -nJ suffix>-nK (same parent), e.g. Drafts -> Drafts-n3;
* the choices depend only on (seed, night) and on what the spool holds, so night K+1 after
  night K on the same spool gives the same changes every time.

Dirty mode (--dirty D), for a compaction benchmark: in every folder of the N users, the oldest
messages (by INTERNALDATE, then UID) that make up a fraction D of the folder's bytes
(RFC822.SIZE) are \\Deleted and EXPUNGEd (UID EXPUNGE): those that fit under the folder's
share, and the one crossing it when that brings the total so far (folders in a fixed order)
closer to D. Every folder stays within one message of D; the overall fraction is printed.

Prints one summary line starting with "churn:" and writes the same figures as JSON to --json
FILE; in night mode also "renames" ([user, old, new]) and "folders": each touched folder's
changes, keyed "<user>/<folder>" by its name before tonight's rename. Stdlib only; exits 1
on errors.
"""

import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree (cyrlib, mailgen, bulk)

import argparse  # noqa: E402
import datetime
import json
import random
import re
import threading
import time

import bulk
import cyrlib
import mailgen
from cyrlib import Imap, Lmtp, fetch_items, quote


# -- helpers -----------------------------------------------------------------------------------
def uid_set(uids):
    """A compact IMAP UID set ("1:4,7") of a collection of UIDs."""
    out = []
    run = None
    for u in sorted(uids):
        if run and u == run[1] + 1:
            run[1] = u
        else:
            if run:
                out.append(run)
            run = [u, u]
    if run:
        out.append(run)
    return ",".join(str(a) if a == b else "%d:%d" % (a, b) for a, b in out)


def search_uids(untagged):
    for u in untagged:
        if u and u[0] == "SEARCH":
            return [x for x in u[1:] if isinstance(x, int)]
    return []


def discover(a):
    """{user: [folder as the user names it, INBOX first, the rest sorted]} from admin's LIST."""
    want = {"%s%05d" % (a.prefix, i) for i in range(a.users)}
    im = Imap(a.host, a.imap_port)
    im.login("admin")
    found = {}
    for flags, _, name in im.list("", "user/%s*" % a.prefix):
        parts = name.split("/", 2)
        if len(parts) < 2 or parts[0] != "user" or parts[1] not in want:
            continue
        if any(f.lower() == "\\noselect" for f in flags):
            continue
        found.setdefault(parts[1], []).append("INBOX" if len(parts) == 2 else parts[2])
    im.logout()
    missing = sorted(want - set(found))
    if missing:
        raise RuntimeError("LIST shows no folders for %d of the %d users (first: %s): was the "
                           "spool built by bulk.py with --users %d --prefix %s?"
                           % (len(missing), a.users, missing[0], a.users, a.prefix))
    odd = [u for u, fs in found.items() if len(fs) != a.folders]
    if odd:
        print("churn: warning: %d users do not have %d folders (e.g. %s has %d)"
              % (len(odd), a.folders, sorted(odd)[0], len(found[sorted(odd)[0]])), file=sys.stderr)
    for u in found:
        found[u] = sorted(found[u], key=lambda f: (f != "INBOX", f))
    return found


def rename_target(folder, night, existing):
    """The new name of `folder` on night K: an earlier -nJ suffix replaced by -nK."""
    parent, _, leaf = folder.rpartition("/")
    base = re.sub(r"-n\d+(?:\.\d+)?$", "", leaf)
    new = base + "-n%d" % night
    k = 1
    while (parent + "/" + new if parent else new) in existing:
        k += 1  # only when the same night runs twice on one spool
        new = base + "-n%d.%d" % (night, k)
    return parent + "/" + new if parent else new


# -- night mode --------------------------------------------------------------------------------
def plan_night(a, folders_of):
    """Every choice of the night, from (seed, night) and the spool's folder list."""
    rng = random.Random("churn:%d:%d" % (a.seed, a.night))
    users = sorted(folders_of)
    every = [(u, f) for u in users for f in folders_of[u]]
    n = min(len(every), max(1, round(a.new_folder_ratio * len(every))))
    mail = sorted(rng.sample(every, n))
    mail_set = set(mail)
    rest = [x for x in every if x not in mail_set]
    other = sorted(rng.sample(rest, min(len(rest), n)))

    renames = {}
    if a.renames_per_users > 0:
        leaves = {}
        for u in users:
            fs = folders_of[u]
            cand = [f for f in fs if f != "INBOX" and not any(g.startswith(f + "/") for g in fs)]
            if cand:
                leaves[u] = cand
        k = min(len(leaves), max(1, a.users // a.renames_per_users))
        for u in sorted(rng.sample(sorted(leaves), k)):
            old = rng.choice(leaves[u])
            renames[u] = (old, rename_target(old, a.night, set(folders_of[u])))

    # New messages, generated here in one fixed order so that threads do not change them.
    gen = mailgen.FastGen(a.seed, scale=a.size_scale, max_size=a.max_size)
    gen.rng = random.Random("churn-mail:%d:%d" % (a.seed, a.night))
    gen.n = 1_000_000_000 + a.night * 1_000_000  # Message-IDs apart from bulk.py's
    day = bulk.END_DATE + datetime.timedelta(days=a.night - 1)
    new = {}
    for u, f in mail:
        msgs = []
        for _ in range(a.new_per_folder):
            when = day + datetime.timedelta(seconds=gen.rng.randrange(86400))
            msgs.append(gen.message("%s@example.test" % u, when)[0])
        new[(u, f)] = msgs

    per_user = {}
    for u, f in mail + other:
        per_user.setdefault(u, {"touch": [], "rename": None})["touch"].append(f)
    for u, r in renames.items():
        per_user.setdefault(u, {"touch": [], "rename": None})["rename"] = r
    for p in per_user.values():
        p["touch"].sort(key=lambda f: (f != "INBOX", f))
    return per_user, new, len(every)


def run_night(a):
    t0 = time.monotonic()
    folders_of = discover(a)
    t_list = time.monotonic() - t0
    per_user, new, nfolders = plan_night(a, folders_of)
    t_plan = time.monotonic() - t0 - t_list

    lock = threading.Lock()
    details = {}
    totals = {"new": 0, "new_bytes": 0, "expunged": 0, "flags": 0, "renamed": 0}
    renames = []
    local = threading.local()
    lmtps = []  # every thread's LMTP session, closed at the end

    def lmtp():
        if getattr(local, "lmtp", None) is None:
            local.lmtp = Lmtp(a.host, a.lmtp_port)
            with lock:
                lmtps.append(local.lmtp)
        return local.lmtp

    def work(user):
        plan = per_user[user]
        im = Imap(a.host, a.imap_port)
        im.login(user)
        # 1. What each touched folder holds, all folders in one pipeline.
        tags = []
        for f in plan["touch"]:
            im.send("SELECT %s" % quote(f))
            tags.append((im.send("UID SEARCH ALL"), im.send("UID SEARCH SEEN"),
                         im.send("UID SEARCH FLAGGED")))
        state = {}
        for f, (t_all, t_seen, t_flag) in zip(plan["touch"], tags):
            uids = search_uids(im.collect(t_all)[2])
            seen = set(search_uids(im.collect(t_seen)[2]))
            flagged = set(search_uids(im.collect(t_flag)[2]))
            state[f] = (uids, seen, flagged)
        # 2. Expunge and flag toggles, chosen from a generator of this folder and night alone.
        info = {}
        for f in plan["touch"]:
            uids, seen, flagged = state[f]
            rng = random.Random("churn:%d:%d:%s:%s" % (a.seed, a.night, user, f))
            gone = []
            if uids:
                k = min(len(uids), max(1, round(a.expunge_ratio * len(uids))))
                gone = sorted(rng.sample(uids, k))
            left = sorted(set(uids) - set(gone))
            toggled = []
            if left:
                k = min(len(left), max(1, round(a.flag_ratio * len(uids))))
                toggled = sorted(rng.sample(left, k))
            stores = {}
            for u in toggled:
                flag = "\\Flagged" if rng.random() < 0.5 else "\\Seen"
                on = u in (flagged if flag == "\\Flagged" else seen)
                stores.setdefault(("-" if on else "+", flag), []).append(u)
            im.send("SELECT %s" % quote(f))
            for (sign, flag), us in sorted(stores.items()):
                im.send("UID STORE %s %sFLAGS.SILENT (%s)" % (uid_set(us), sign, flag))
            if gone:
                im.send("UID STORE %s +FLAGS.SILENT (\\Deleted)" % uid_set(gone))
                im.send("UID EXPUNGE %s" % uid_set(gone))
            info[f] = {"before": len(uids), "expunged": len(gone), "flags_changed": len(toggled),
                       "new": 0, "new_bytes": 0}
        if plan["touch"]:
            im.send("UNSELECT")
        # 3. New mail for folders other than INBOX: APPEND, as their owner would file it.
        for f in plan["touch"]:
            if f == "INBOX":
                continue
            for msg in new.get((user, f), ()):
                im.send("APPEND %s" % quote(f), literals=[(msg, "")])
                info[f]["new"] += 1
                info[f]["new_bytes"] += len(msg)
        im.collect_all()
        # 4. The rename, last: the folder may have been touched above under its old name.
        if plan["rename"]:
            old, target = plan["rename"]
            im.command("RENAME %s %s" % (quote(old), quote(target)))
        im.logout()
        # 5. INBOX mail by LMTP, after the expunge choices were made from the older mail.
        for msg in new.get((user, "INBOX"), ()):
            lmtp().deliver("churn@example.test", [user], msg)
            info["INBOX"]["new"] += 1
            info["INBOX"]["new_bytes"] += len(msg)
        with lock:
            for f, d in info.items():
                details["%s/%s" % (user, f)] = d
                totals["new"] += d["new"]
                totals["new_bytes"] += d["new_bytes"]
                totals["expunged"] += d["expunged"]
                totals["flags"] += d["flags_changed"]
            if plan["rename"]:
                totals["renamed"] += 1
                renames.append([user, plan["rename"][0], plan["rename"][1]])

    t1 = time.monotonic()
    try:
        bulk.run_threads(a.connections, sorted(per_user), work)
    finally:
        for c in lmtps:
            c.close()
    t_apply = time.monotonic() - t1
    seconds = time.monotonic() - t0
    touched = len(details)
    result = {
        "mode": "night", "night": a.night, "seed": a.seed, "users": a.users,
        "folders_total": nfolders, "folders_touched": touched,
        "folders_new_mail": len(new), "messages_new": totals["new"],
        "bytes_new": totals["new_bytes"], "messages_expunged": totals["expunged"],
        "flags_changed": totals["flags"], "folders_renamed": totals["renamed"],
        "seconds": round(seconds, 3),
        "phases": {"list": round(t_list, 3), "plan": round(t_plan, 3),
                   "apply": round(t_apply, 3)},
        "renames": sorted(renames), "folders": dict(sorted(details.items())),
    }
    print("churn: night=%d seed=%d users=%d folders=%d touched=%d new=%d new_bytes=%d "
          "expunged=%d flags=%d renamed=%d seconds=%.2f (list=%.2f plan=%.2f apply=%.2f)"
          % (a.night, a.seed, a.users, nfolders, touched, totals["new"], totals["new_bytes"],
             totals["expunged"], totals["flags"], totals["renamed"], seconds, t_list, t_plan,
             t_apply))
    return result


# -- dirty mode --------------------------------------------------------------------------------
def internaldate(v):
    s = cyrlib._s(v).strip()
    return datetime.datetime.strptime(s, "%d-%b-%Y %H:%M:%S %z")


def run_dirty(a):
    t0 = time.monotonic()
    folders_of = discover(a)
    users = sorted(folders_of)
    lock = threading.Lock()
    rows = {}  # (user, folder) -> [(internaldate, uid, size)], oldest first

    def read(user):
        im = Imap(a.host, a.imap_port)
        im.login(user)
        fs = folders_of[user]
        tags = []
        for f in fs:
            im.send("EXAMINE %s" % quote(f))
            tags.append(im.send("UID FETCH 1:* (UID RFC822.SIZE INTERNALDATE)"))
        got = {}
        for f, t in zip(fs, tags):
            r = []
            for u in im.collect(t)[2]:
                if len(u) >= 3 and u[1] == "FETCH":
                    _, d = fetch_items(u)
                    r.append((internaldate(d["INTERNALDATE"]), d["UID"], d["RFC822.SIZE"]))
            got[(user, f)] = sorted(r)
        im.logout()
        with lock:
            rows.update(got)

    bulk.run_threads(a.connections, users, read)
    t_read = time.monotonic() - t0

    # Folder by folder in a fixed order: the oldest messages that fit under the folder's share
    # D, then the one that crosses it if that brings the bytes taken so far (all folders)
    # closer to D. Every folder stays within one message of D, and the overall fraction close
    # to D although sizes are heavy-tailed.
    gone_of = {}
    carry = 0.0  # bytes wanted so far and not taken (negative: taken beyond D)
    total = taken = nmsg = ngone = 0
    for key in sorted(rows):
        r = rows[key]
        fbytes = sum(x[2] for x in r)
        share = a.dirty * fbytes
        cum = 0
        gone = []
        for _, uid, size in r:
            if cum + size > share:
                if cum + size / 2 <= share + carry:
                    gone.append(uid)
                    cum += size
                break
            gone.append(uid)
            cum += size
        carry += share - cum
        if gone:
            gone_of.setdefault(key[0], []).append((key[1], gone))
        total += fbytes
        taken += cum
        nmsg += len(r)
        ngone += len(gone)

    def expunge(user):
        im = Imap(a.host, a.imap_port)
        im.login(user)
        for f, gone in gone_of[user]:
            im.send("SELECT %s" % quote(f))
            im.send("UID STORE %s +FLAGS.SILENT (\\Deleted)" % uid_set(gone))
            im.send("UID EXPUNGE %s" % uid_set(gone))
        im.collect_all()
        im.logout()

    t1 = time.monotonic()
    bulk.run_threads(a.connections, sorted(gone_of), expunge)
    t_expunge = time.monotonic() - t1
    seconds = time.monotonic() - t0
    frac = taken / total if total else 0.0
    result = {
        "mode": "dirty", "dirty": a.dirty, "users": a.users, "folders": len(rows),
        "messages": nmsg, "bytes": total, "messages_expunged": ngone, "bytes_expunged": taken,
        "fraction_expunged": round(frac, 6), "seconds": round(seconds, 3),
        "phases": {"read": round(t_read, 3), "expunge": round(t_expunge, 3)},
    }
    print("churn: dirty=%.3f users=%d folders=%d messages=%d bytes=%d expunged=%d "
          "expunged_bytes=%d fraction=%.4f seconds=%.2f (read=%.2f expunge=%.2f)"
          % (a.dirty, a.users, len(rows), nmsg, total, ngone, taken, frac, seconds, t_read,
             t_expunge))
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("host")
    ap.add_argument("imap_port", type=int)
    ap.add_argument("lmtp_port", type=int)
    ap.add_argument("--users", type=int, required=True)
    ap.add_argument("--folders", type=int, required=True, help="folders per user, INBOX included")
    ap.add_argument("--prefix", default="b")
    ap.add_argument("--night", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--new-folder-ratio", type=float, default=0.02)
    ap.add_argument("--new-per-folder", type=int, default=3)
    ap.add_argument("--expunge-ratio", type=float, default=0.005)
    ap.add_argument("--flag-ratio", type=float, default=0.01)
    ap.add_argument("--renames-per-users", type=int, default=50,
                    help="one rename per this many users (0: none)")
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--size-scale", type=float, default=1.0,
                    help="multiplies median sizes, as bulk.py's option")
    ap.add_argument("--max-size", type=int, default=8 << 20)
    ap.add_argument("--dirty", type=float,
                    help="expunge the oldest fraction D (0..1] of each folder's bytes instead")
    ap.add_argument("--json", help="write the summary as JSON to this file")
    a = ap.parse_args()
    if a.users < 1 or a.folders < 1 or a.connections < 1:
        ap.error("--users, --folders and --connections must be at least 1")
    if a.night < 1:
        ap.error("--night must be at least 1")
    if a.dirty is not None and not 0 < a.dirty <= 1:
        ap.error("--dirty must be in (0, 1]")
    result = run_dirty(a) if a.dirty is not None else run_night(a)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
            fh.write("\n")


if __name__ == "__main__":
    try:
        main()
    except (cyrlib.ProtocolError, OSError, RuntimeError, ValueError) as e:
        print("churn: error: %s" % e, file=sys.stderr)
        sys.exit(1)
