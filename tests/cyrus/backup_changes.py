#!/usr/bin/env python3
"""Changes one user's mail between two backups (tests/tests/backup_run_planner.rs), after
populate.py:

    backup_changes.py HOST IMAP_PORT LMTP_PORT --user U [--sieve-port P]

* LMTP: two new messages to U (INBOX) and one to U+Work;
* IMAP as U: \\Deleted + EXPUNGE of the lowest UID of Archive/2024; +FLAGS \\Flagged $Changed
  on the lowest UID of Archive/2025; RENAME Sent "Sent Items"; DELETE Lists/rust-users;
  CREATE Fresh and APPEND one message to it; UID COPY of the lowest UID of Archive/2025 into
  Drafts (a message the first backup already holds);
* with --sieve-port, over ManageSieve: SETACTIVE "vacation" (populate.py made "main" active;
  no script file changes, only which one is active).

Every new message carries a fresh random token, so its GUID is new to the store. Stdlib
only. Prints one line starting with "changes:" (new=N, the number of new distinct messages)
and exits 0, or exits 1 with the error.
"""

import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

import argparse  # noqa: E402
import os  # noqa: E402

from cyrlib import Imap, Lmtp, ManageSieve, quote  # noqa: E402


def new_message(user, n):
    token = os.urandom(12).hex()
    return (
        "From: changes@example.test\r\nTo: %s@example.test\r\n"
        "Subject: change %d %s\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
        "Message-ID: <%s@example.test>\r\n\r\nNew mail number %d (%s).\r\n"
        % (user, n, token, token, n, token)
    ).encode()


def lowest_uid(imap, mailbox):
    imap.command("SELECT %s" % quote(mailbox))
    _, _, untagged = imap.command("UID SEARCH ALL")
    for u in untagged:
        if u and u[0] == "SEARCH":
            uids = [x for x in u[1:] if isinstance(x, int)]
            if uids:
                return min(uids)
    raise RuntimeError("%s is empty" % mailbox)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("host")
    p.add_argument("imap_port", type=int)
    p.add_argument("lmtp_port", type=int)
    p.add_argument("--user", required=True)
    p.add_argument("--sieve-port", type=int)
    a = p.parse_args()
    u = a.user
    new = 0

    lmtp = Lmtp(a.host, a.lmtp_port)
    for rcpt in [u, u, u + "+Work"]:
        new += 1
        lmtp.deliver("sender@example.test", [rcpt], new_message(u, new))
    lmtp.close()

    imap = Imap(a.host, a.imap_port)
    imap.login(u)
    uid = lowest_uid(imap, "Archive/2024")
    imap.command("UID STORE %d +FLAGS.SILENT (\\Deleted)" % uid)
    imap.command("EXPUNGE")
    uid = lowest_uid(imap, "Archive/2025")
    imap.command("UID STORE %d +FLAGS.SILENT (\\Flagged $Changed)" % uid)
    imap.command("UID COPY %d Drafts" % uid)
    imap.command("CLOSE")
    imap.command("RENAME Sent %s" % quote("Sent Items"))
    imap.command("DELETE %s" % quote("Lists/rust-users"))
    imap.command("CREATE Fresh")
    new += 1
    msg = new_message(u, new)
    imap.command("APPEND Fresh (\\Seen)", literals=[(msg, "")])
    imap.logout()
    if a.sieve_port:
        sieve = ManageSieve(a.host, a.sieve_port, u)
        sieve.setactive("vacation")
        sieve.close()
    print("changes: user=%s new=%d" % (u, new))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001
        print("backup_changes.py: %s" % e, file=sys.stderr)
        sys.exit(1)
