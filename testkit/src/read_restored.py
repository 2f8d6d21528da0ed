# Reads a restored Maildir or mbox back with Python's mailbox module (testkit::python).
#
#   python3 read_restored.py maildir|mbox PATH
#
# Prints one line per message: folder, flags, keywords, SHA-1, tab-separated.
# * maildir: the folder is INBOX for the top level, else the Maildir++ folder name; flags
#   are the upper-case Maildir letters, sorted; keywords are the names dovecot-keywords
#   gives the lower-case letters, sorted, comma-separated; the SHA-1 is of the file's bytes.
# * mbox: the folder is empty; flags are the Status/X-Status letters but O, sorted; keywords
#   are X-Keywords' names, sorted, comma-separated; the SHA-1 is of the message as stored,
#   without the Status/X-Status/X-Keywords lines the export added and with >From unquoted
#   once (mboxrd), in the file's LF line ends.
import hashlib
import mailbox
import re
import sys


def maildir(path):
    root = mailbox.Maildir(path, factory=None, create=False)

    def dump(md, name):
        kw = {}
        try:
            for line in open(md._path + "/dovecot-keywords"):
                i, k = line.rstrip("\n").split(" ", 1)
                kw[chr(ord("a") + int(i))] = k.strip()
        except FileNotFoundError:
            pass
        for key in md.keys():
            m = md.get_message(key)
            flags = "".join(sorted(c for c in m.get_flags() if c.isupper()))
            kws = ",".join(sorted(kw[c] for c in m.get_flags() if c.islower()))
            sha = hashlib.sha1(md.get_bytes(key)).hexdigest()
            print("%s\t%s\t%s\t%s" % (name, flags, kws, sha))

    dump(root, "INBOX")
    for f in root.list_folders():
        dump(root.get_folder(f), f)


def mbox(path):
    mb = mailbox.mbox(path, create=False)
    for key in mb.keys():
        m = mb.get_message(key)
        raw = mb.get_bytes(key).split(b"\n")
        while raw and re.match(rb"^(Status|X-Status|X-Keywords): ", raw[0]):
            raw.pop(0)
        raw = [line[1:] if re.match(rb"^>+From ", line) else line for line in raw]
        sha = hashlib.sha1(b"\n".join(raw)).hexdigest()
        flags = "".join(sorted(c for c in m.get_flags() if c != "O"))
        kws = ",".join(sorted(k.strip() for k in m.get("X-Keywords", "").split(",") if k.strip()))
        print("%s\t%s\t%s\t%s" % ("", flags, kws, sha))


{"maildir": maildir, "mbox": mbox}[sys.argv[1]](sys.argv[2])
