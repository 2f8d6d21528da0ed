#!/usr/bin/env python3
"""What users and administrators do that a restore must undo, for the round-trip tests.

    admin_actions.py HOST IMAP_PORT delete-folder --user U --folder F [--as-admin]
    admin_actions.py HOST IMAP_PORT create-user --user U
    admin_actions.py HOST IMAP_PORT delete-user --user U
    admin_actions.py HOST IMAP_PORT rename-user --user U [--to V] [--partition P]
    admin_actions.py HOST IMAP_PORT expunge --user U --folder F [--uids SET]
    admin_actions.py HOST IMAP_PORT share-seen --owner U --folder F --reader R [--uids SET]
    admin_actions.py HOST IMAP_PORT sieve-activate --user U --script NAME --sieve-port P
    admin_actions.py HOST IMAP_PORT append --user U --folder F --file PATH

Folder names as the owner sees them, on the wire (modified UTF-7). The instances accept any
password and have the unixhierarchysep + altnamespace namespace: the admin names a user's
folder "user/U/F" and the user itself "user/U"; a dot in a user name is just a dot.

* delete-folder: DELETE F as its owner (what a mail client does); with --as-admin, as `admin`,
  which first needs the `x` right on "user/U/F" (admins only have `l` and `a` implicitly):
  SETACL "user/U/F" admin x, then DELETE. With delete_mode: delayed the folder becomes
  DELETED.user.U.F.<hex time> with the same unique id until cyr_expire -D removes it.
* create-user: as `admin`, CREATE "user/U": a new user with an empty INBOX (one new entry in
  mailboxes.db).
* delete-user: as `admin`, SETACL "user/U" admin x, then DELETE "user/U": every folder of U
  goes, and U's seen.db, sub.db and compiled sieve scripts are removed at once even with
  delete_mode: delayed (the folders, #sieve included, then wait under DELETED.*).
* rename-user: as `admin`, RENAME "user/U" "user/V" (the whole user renamed: its folders,
  seen state, subscriptions and sieve scripts; needs allowusermoves: yes, which start.sh
  sets), or with --partition RENAME "user/U" "user/V" P: the user moved to partition P
  (V defaults to U).
* expunge: as U, UID STORE SET +FLAGS.SILENT (\\Deleted) then UID EXPUNGE SET, so messages
  already flagged \\Deleted outside SET stay; SET defaults to every message (1:*). Prints the
  UIDs expunged (uids=1,2,3).
* share-seen: as `admin`, SETACL "user/U/F" R lrs; then, as R, SELECT "Other Users/U/F" and
  UID STORE SET +FLAGS.SILENT (\\Seen): R's own seen state for U's folder (R's seen.db).
* sieve-activate: as U over ManageSieve, SETACTIVE NAME (the script must exist).

Prints one line "admin_actions: <action> ..." and exits 0, or exits 1 with the error.
"""

import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree (cyrlib)

import argparse  # noqa: E402
import re

import cyrlib
from cyrlib import Imap, ManageSieve, quote

SEQUENCE_SET = re.compile(r"^(\d+|\*)(:(\d+|\*))?(,(\d+|\*)(:(\d+|\*))?)*$")


def uid_list(untagged):
    for u in untagged:
        if u and u[0] == "SEARCH":
            return sorted(x for x in u[1:] if isinstance(x, int))
    return []


def login(host, port, user):
    im = Imap(host, port)
    im.login(user)
    return im


def delete_folder(a):
    if a.as_admin:
        im = login(a.host, a.imap_port, "admin")
        name = "user/%s/%s" % (a.user, a.folder)
        im.command("SETACL %s admin x" % quote(name))
    else:
        im = login(a.host, a.imap_port, a.user)
        name = a.folder
    im.command("DELETE %s" % quote(name))
    im.logout()
    return "user=%s folder=%s as=%s" % (a.user, a.folder, "admin" if a.as_admin else a.user)


def create_user(a):
    im = login(a.host, a.imap_port, "admin")
    im.command("CREATE %s" % quote("user/%s" % a.user))
    im.logout()
    return "user=%s" % a.user


def delete_user(a):
    im = login(a.host, a.imap_port, "admin")
    inbox = "user/%s" % a.user
    im.command("SETACL %s admin x" % quote(inbox))
    im.command("DELETE %s" % quote(inbox))
    im.logout()
    return "user=%s" % a.user


def rename_user(a):
    # RENAME of a user's INBOX renames the whole user (allowusermoves: yes); with a
    # partition, RENAME user/U user/U PART moves the user's folders to that partition.
    im = login(a.host, a.imap_port, "admin")
    old, new = "user/%s" % a.user, "user/%s" % (a.to or a.user)
    if a.partition:
        # Cyrus 3.6 takes the partition as an atom only ("BAD Invalid partition name" when
        # it is quoted).
        if not re.match(r"^[A-Za-z0-9_.-]+$", a.partition):
            raise SystemExit("admin_actions: a partition name is letters, digits, _ . -")
        im.command("RENAME %s %s %s" % (quote(old), quote(new), a.partition))
    else:
        im.command("RENAME %s %s" % (quote(old), quote(new)))
    im.logout()
    return "user=%s to=%s partition=%s" % (a.user, a.to or a.user, a.partition or "")


def expunge(a):
    im = login(a.host, a.imap_port, a.user)
    im.command("SELECT %s" % quote(a.folder))
    _, _, untagged = im.command("UID SEARCH UID %s" % a.uids)
    uids = uid_list(untagged)
    if uids:
        im.command("UID STORE %s +FLAGS.SILENT (\\Deleted)" % a.uids)
        im.command("UID EXPUNGE %s" % a.uids)
    im.command("UNSELECT")
    im.logout()
    return "user=%s folder=%s uids=%s" % (a.user, a.folder, ",".join(map(str, uids)))


def append(a):
    """As the user: CREATE F (UTF-8, sent in modified UTF-7) unless it exists, then APPEND
    the file's bytes as they are; prints the UID from APPENDUID."""
    im = login(a.host, a.imap_port, a.user)
    name = cyrlib.mutf7_encode(a.folder)
    im.command("CREATE %s" % quote(name), check=False)
    with open(a.file, "rb") as f:
        body = f.read()
    _, text, _ = im.command("APPEND %s" % quote(name), literals=[(body, "")])
    im.logout()
    m = re.search(r"APPENDUID \d+ (\d+)", text)
    if not m:
        raise cyrlib.ProtocolError("APPEND gave no APPENDUID: %r" % text)
    return "user=%s uids=%s" % (a.user, m.group(1))


def share_seen(a):
    im = login(a.host, a.imap_port, "admin")
    im.command("SETACL %s %s lrs" % (quote("user/%s/%s" % (a.owner, a.folder)), quote(a.reader)))
    im.logout()
    im = login(a.host, a.imap_port, a.reader)
    im.command("SELECT %s" % quote("Other Users/%s/%s" % (a.owner, a.folder)))
    _, _, untagged = im.command("UID SEARCH UID %s" % a.uids)
    uids = uid_list(untagged)
    if uids:
        im.command("UID STORE %s +FLAGS.SILENT (\\Seen)" % a.uids)
    im.command("UNSELECT")
    im.logout()
    return "owner=%s folder=%s reader=%s uids=%s" % (
        a.owner, a.folder, a.reader, ",".join(map(str, uids)))


def sieve_activate(a):
    ms = ManageSieve(a.host, a.sieve_port, a.user)
    try:
        ms.setactive(a.script)
    finally:
        ms.close()
    return "user=%s script=%s" % (a.user, a.script)


def uid_set(text):
    if not SEQUENCE_SET.match(text):
        raise argparse.ArgumentTypeError("%r is not a UID set like 1:5,7 or 1:*" % text)
    return text


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("host")
    ap.add_argument("imap_port", type=int)
    sub = ap.add_subparsers(dest="action", required=True)

    p = sub.add_parser("delete-folder")
    p.add_argument("--user", required=True)
    p.add_argument("--folder", required=True)
    p.add_argument("--as-admin", action="store_true")
    p.set_defaults(run=delete_folder)

    p = sub.add_parser("create-user")
    p.add_argument("--user", required=True)
    p.set_defaults(run=create_user)

    p = sub.add_parser("delete-user")
    p.add_argument("--user", required=True)
    p.set_defaults(run=delete_user)

    p = sub.add_parser("rename-user")
    p.add_argument("--user", required=True)
    p.add_argument("--to")
    p.add_argument("--partition")
    p.set_defaults(run=rename_user)

    p = sub.add_parser("expunge")
    p.add_argument("--user", required=True)
    p.add_argument("--folder", required=True)
    p.add_argument("--uids", type=uid_set, default="1:*")
    p.set_defaults(run=expunge)

    p = sub.add_parser("share-seen")
    p.add_argument("--owner", required=True)
    p.add_argument("--folder", required=True)
    p.add_argument("--reader", required=True)
    p.add_argument("--uids", type=uid_set, default="1:*")
    p.set_defaults(run=share_seen)

    p = sub.add_parser("append")
    p.add_argument("--user", required=True)
    p.add_argument("--folder", required=True)
    p.add_argument("--file", required=True)
    p.set_defaults(run=append)

    p = sub.add_parser("sieve-activate")
    p.add_argument("--user", required=True)
    p.add_argument("--script", required=True)
    p.add_argument("--sieve-port", type=int, required=True)
    p.set_defaults(run=sieve_activate)

    a = ap.parse_args()
    print("admin_actions: %s %s" % (a.action, a.run(a)))


if __name__ == "__main__":
    try:
        main()
    except (cyrlib.ProtocolError, OSError) as e:
        print("admin_actions: error: %s" % e, file=sys.stderr)
        sys.exit(1)
