//! Restore end to end: a real Cyrus (populate.py), a real backupd, a backup of one user,
//! then the whole user restored into a Maildir and INBOX into an mbox, read back with
//! Python's `mailbox` module and compared with what IMAP said (folders, message SHA-1s,
//! flags and keywords). Then an expunge (backup_changes.py), a second backup, and the
//! expunged message restored with `--at` the first backup's time and with
//! `--include-expunged`, and not without them.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use backup_server::restore::{folder_levels, restore, Selection, Target};
use backup_server::store::StoreOptions;
use formats::{Guid, Timestamp};
use tests::rig::{backup, backup_changes, now, Backupd};
use tests::CyrusInstance;

const READ_MAILDIR: &str = r#"
import mailbox, sys, hashlib
root = mailbox.Maildir(sys.argv[1], factory=None, create=False)
def dump(md, name):
    kw = {}
    try:
        for line in open(md._path + '/dovecot-keywords'):
            i, k = line.rstrip('\n').split(' ', 1)
            kw[chr(ord('a') + int(i))] = k
    except FileNotFoundError:
        pass
    for key in md.keys():
        m = md.get_message(key)
        flags = ''.join(sorted(c for c in m.get_flags() if c.isupper()))
        kws = ','.join(sorted(kw[c] for c in m.get_flags() if c.islower()))
        print('%s\t%s+%s\t%s' % (name, flags, kws, hashlib.sha1(md.get_bytes(key)).hexdigest()))
dump(root, 'INBOX')
for f in root.list_folders():
    dump(root.get_folder(f), f)
"#;

const READ_MBOX: &str = r#"
import mailbox, sys, hashlib, re
mb = mailbox.mbox(sys.argv[1], create=False)
for key in mb.keys():
    m = mb.get_message(key)
    raw = mb.get_bytes(key).split(b'\n')
    while raw and re.match(rb'^(Status|X-Status|X-Keywords): ', raw[0]):
        raw.pop(0)
    raw = [l[1:] if re.match(rb'^>+From ', l) else l for l in raw]
    seen = 'R' in m.get_flags()
    print('%s\t%s' % ('S' if seen else '-', hashlib.sha1(b'\n'.join(raw)).hexdigest()))
"#;

fn python(script: &str, path: &Path) -> Vec<String> {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "python: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    v.sort();
    v
}

/// IMAP flags as READ_MAILDIR prints them: Maildir letters, `+`, sorted keywords.
fn maildir_flags(flags: &[String]) -> String {
    let mut up: Vec<char> = Vec::new();
    let mut kw: Vec<&str> = Vec::new();
    for f in flags {
        match f.as_str() {
            "\\Draft" => up.push('D'),
            "\\Flagged" => up.push('F'),
            "\\Answered" => up.push('R'),
            "\\Seen" => up.push('S'),
            "\\Deleted" => up.push('T'),
            f if f.starts_with('\\') => {}
            f => kw.push(f),
        }
    }
    up.sort();
    kw.sort();
    format!("{}+{}", up.into_iter().collect::<String>(), kw.join(","))
}

#[test]
fn restore_from_a_real_backup_to_files_and_as_of_before_an_expunge() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    cyrus.populate().expect("populate.py");
    let truth1 = cyrus.truth().expect("imap_truth.py");
    let user = truth1.users().into_iter().next().unwrap().to_owned();

    let backupd = Backupd::start(&cyrus, "restore-e2e-secret-0123");
    let mut c = backupd.connect();
    let root = tempfile::tempdir().unwrap();
    let opts = StoreOptions::default();
    let o = backup(&mut c, root.path(), &opts, &user).unwrap();
    assert!(o.incomplete.is_empty(), "{o:?}");
    let t1 = now();

    // ---- whole user into a Maildir.
    let md = root.path().join("restored-maildir");
    let rep = restore(
        root.path(),
        &user,
        &Selection::default(),
        &Target::Maildir(md.clone()),
    )
    .unwrap();
    assert_eq!(rep.not_stored, 0, "{rep:?}");
    let mut want = Vec::new();
    let mut folders = BTreeSet::new();
    for (f, ft) in truth1.folders_of(&user) {
        folders.insert(f.to_owned());
        let flat = folder_levels(&user, f).flat();
        for m in &ft.messages {
            want.push(format!("{flat}\t{}\t{}", maildir_flags(&m.flags), m.sha1));
        }
    }
    want.sort();
    assert!(want.len() > 10, "{want:?}");
    assert_eq!(python(READ_MAILDIR, &md), want);
    assert_eq!(rep.folders as usize, folders.len());

    // ---- INBOX into an mbox.
    let mbox = root.path().join("inbox.mbox");
    let s = Selection {
        folder: Some("INBOX".into()),
        ..Selection::default()
    };
    let rep = restore(root.path(), &user, &s, &Target::Mbox(mbox.clone())).unwrap();
    let inbox = truth1.folder(&user, "INBOX").unwrap();
    assert_eq!(rep.messages as usize, inbox.messages.len());
    let mut want: Vec<String> = inbox
        .messages
        .iter()
        .map(|m| {
            // The Maildir copy holds the exact bytes: its LF form is the mbox's.
            let file = std::fs::read_dir(md.join("cur"))
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| {
                    std::fs::read(p)
                        .map(|b| Guid::of(&b).to_hex())
                        .ok()
                        .as_deref()
                        == Some(m.sha1.as_str())
                })
                .unwrap();
            let lf = String::from_utf8_lossy(&std::fs::read(file).unwrap())
                .replace("\r\n", "\n")
                .into_bytes();
            let seen = m.flags.iter().any(|f| f == "\\Seen");
            format!(
                "{}\t{}",
                if seen { "S" } else { "-" },
                Guid::of(&lf).to_hex()
            )
        })
        .collect();
    want.sort();
    assert_eq!(python(READ_MBOX, &mbox), want);

    // ---- an expunge, a second backup.
    backup_changes(&cyrus, &user);
    let truth2 = cyrus.truth().expect("imap_truth.py");
    let o = backup(&mut c, root.path(), &opts, &user).unwrap();
    assert!(o.incomplete.is_empty(), "{o:?}");
    let folder = "Archive/2024";
    let before = truth1.folder(&user, folder).unwrap();
    let after = truth2.folder(&user, folder).unwrap();
    let gone = before
        .messages
        .iter()
        .find(|m| after.message(m.uid).is_none())
        .expect("backup_changes.py expunges the lowest UID of Archive/2024");

    let one = |name: &str, at: Option<Timestamp>, include_expunged: bool| {
        let out = root.path().join(name);
        let s = Selection {
            folder: Some(folder.into()),
            uid: Some(gone.uid),
            at,
            include_expunged,
            ..Selection::default()
        };
        restore(root.path(), &user, &s, &Target::Eml(out.clone())).map(|r| {
            assert_eq!(r.chunks_inflated, 1);
            let flat = folder_levels(&user, folder).flat();
            Guid::of(&std::fs::read(out.join(flat).join(format!("{}.eml", gone.uid))).unwrap())
                .to_hex()
        })
    };
    assert!(one("plain", None, false).is_err());
    assert_eq!(one("at-t1", Some(t1), false).unwrap(), gone.sha1);
    assert_eq!(one("expunged", None, true).unwrap(), gone.sha1);
    backupd.shutdown();
}
