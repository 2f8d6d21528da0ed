//! backupd's spool side against a live Cyrus 3.6 (populate.py's three users): the folder
//! listing equals what IMAP says, it touches no message file (checked with strace), meta
//! copies parse and every message read back has the SHA-1 its record names, user files read
//! back as populate.py wrote them, and bad or unknown names are refused with errors naming
//! them. Needs Cyrus and strace (Debian packages cyrus-imapd, strace) and root.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use backupd::spool::{Spool, SpoolError};
use formats::cyrus::index::Index;
use formats::protocol::UserFileId;
use formats::Guid;
use tests::CyrusInstance;

/// Set in the child process the strace check runs (see `strace_child`).
const CHILD_ENV: &str = "BACKUPD_SPOOL_STRACE_CONF";

#[test]
fn spool_side_against_live_cyrus() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    cyrus.populate().expect("populate.py");
    let truth = cyrus.truth().expect("imap_truth.py");
    let spool = Spool::open(&cyrus.imapd_conf()).expect("Spool::open");

    // users(): every user, with the partition of the INBOX.
    let list = spool.users().unwrap();
    let users = list.entries(0..list.len());
    let names: Vec<&str> = users.iter().map(|u| u.user.as_str()).collect();
    assert_eq!(names, truth.users().into_iter().collect::<Vec<_>>());
    for u in &users {
        let inbox = truth.folder(&u.user, "INBOX").unwrap();
        assert_eq!(Some(&u.partition), inbox.partition.as_ref(), "{}", u.user);
    }

    let mut messages = 0;
    for u in &users {
        let user = u.user.as_str();
        let listing = spool.folders(user).unwrap();

        // Folders: exactly IMAP's (no DELETED.*, no tombstone of the renamed Projects/Old,
        // no #sieve), INBOX first, with IMAP's unique ids, partitions and UIDVALIDITY.
        let ours: BTreeSet<&str> = listing.folders.iter().map(|f| f.name.as_str()).collect();
        let imap: BTreeSet<&str> = truth.folders_of(user).map(|(f, _)| f).collect();
        assert_eq!(ours, imap, "{user}: folder names");
        assert_eq!(ours.len(), listing.folders.len(), "{user}: a folder twice");
        assert_eq!(listing.folders[0].name, "INBOX");
        for f in &listing.folders {
            let t = truth.folder(user, &f.name).unwrap();
            assert_eq!(Some(&f.uniqueid), t.uniqueid.as_ref(), "{user}/{}", f.name);
            assert_eq!(
                Some(&f.partition),
                t.partition.as_ref(),
                "{user}/{}",
                f.name
            );
            assert_eq!(f.uidvalidity, t.uidvalidity, "{user}/{}", f.name);
        }

        // Meta copies: they parse (copy_meta checks), their stat data are the listing's (the
        // server is idle), IMAP's messages are the records not expunged, and every message
        // file read through open_message has the SHA-1 its record names.
        for f in &listing.folders {
            let copy = spool.copy_meta(user, &f.uniqueid).unwrap();
            assert_eq!((copy.header.1, copy.index.1), (f.header, f.index));
            let idx = Index::parse(&copy.index.0).unwrap();
            let t = truth.folder(user, &f.name).unwrap();
            let mut live = Vec::new();
            for rec in idx.records() {
                let rec = rec.unwrap();
                if !rec.is_expunged() {
                    live.push(rec.uid);
                }
                let (mut file, size) = spool
                    .open_message(user, &f.uniqueid, rec.uid)
                    .unwrap()
                    .unwrap_or_else(|| panic!("{user}/{} uid {}: gone", f.name, rec.uid));
                let mut data = Vec::with_capacity(size as usize);
                file.read_to_end(&mut data).unwrap();
                assert_eq!(
                    Some(Guid::of(&data)),
                    rec.guid,
                    "{user}/{} uid {}",
                    f.name,
                    rec.uid
                );
                messages += 1;
            }
            let imap_uids: Vec<u32> = t.messages.iter().map(|m| m.uid).collect();
            assert_eq!(live, imap_uids, "{user}/{}: live UIDs", f.name);
        }

        // User files: subscriptions, the two sieve scripts and the active one; seen.db for
        // the user who read another's folder (populate.py: the second user).
        let ids: BTreeSet<&UserFileId> = listing.user_files.iter().map(|f| &f.id).collect();
        let mut want = BTreeSet::from([
            UserFileId::Subscriptions,
            UserFileId::SieveScript("main".into()),
            UserFileId::SieveScript("vacation".into()),
            UserFileId::SieveActive,
        ]);
        if user == names[1] {
            want.insert(UserFileId::Seen);
        }
        assert_eq!(ids, want.iter().collect(), "{user}: user files");
        for file in &listing.user_files {
            let (bytes, stat) = spool
                .read_user_file(user, &file.id)
                .unwrap()
                .unwrap_or_else(|| panic!("{user}: {:?} listed but absent", file.id));
            assert_eq!(stat, file.stat, "{user}: {:?}", file.id);
            let text = String::from_utf8_lossy(&bytes);
            match &file.id {
                UserFileId::SieveScript(n) if n == "main" => {
                    assert!(
                        text.starts_with("require [\"fileinto\"];")
                            && text.contains("fileinto \"Lists\";"),
                        "{user}: main is {text:?}"
                    );
                }
                UserFileId::SieveScript(_) => {
                    assert!(text.contains("vacation :days 7"), "{user}: {text:?}")
                }
                UserFileId::SieveActive => assert_eq!(text, "main"),
                UserFileId::Subscriptions => {
                    for (folder, t) in truth.folders_of(user) {
                        if t.subscribed == Some(true) {
                            let key = folder.replace('/', "\x1f");
                            assert!(text.contains(&key), "{user}: {folder} not in {text:?}");
                        }
                    }
                }
                UserFileId::Seen => assert!(bytes.starts_with(b"\xa1\x02\x8b\x0dtwoskip file")),
            }
        }
        assert_eq!(
            spool
                .read_user_file(user, &UserFileId::SieveScript("nosuch".into()))
                .unwrap(),
            None
        );
    }
    assert!(messages > 100, "{messages} messages checked");

    // Unknown and bad names.
    let first = &users[0].user;
    let err = spool.folders("nosuchuser").unwrap_err();
    assert!(
        matches!(&err, SpoolError::UnknownUser { user } if user == "nosuchuser"),
        "{err}"
    );
    let err = spool
        .copy_meta(first, "zzzzzzzzzzzzzzzzzzzzzzzz")
        .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, SpoolError::UnknownFolder { .. })
            && text.contains(first.as_str())
            && text.contains("zzzzzzzzzzzzzzzzzzzzzzzz"),
        "{text}"
    );
    for bad in ["..", "../u000", "u000/../u001", "a\0b", "u000\n"] {
        let err = spool.folders(bad).unwrap_err();
        assert!(
            matches!(&err, SpoolError::BadName { what: "user", .. }),
            "{bad:?}: {err}"
        );
    }
    for bad in ["../../../etc", "x/y", "\0"] {
        let err = spool.copy_meta(first, bad).unwrap_err();
        assert!(
            matches!(
                &err,
                SpoolError::BadName {
                    what: "unique id",
                    ..
                }
            ),
            "{bad:?}: {err}"
        );
    }
    // A delayed-deleted folder (populate.py deletes Trash/Temp) is unknown, though its
    // files are still on disk.
    let mboxlist = cyrus.mboxlist().unwrap();
    let deleted = mboxlist
        .as_object()
        .unwrap()
        .iter()
        .find(|(name, _)| name.starts_with(&format!("DELETED.user.{first}.")))
        .map(|(_, e)| e["uniqueid"].as_str().unwrap().to_string())
        .expect("a delayed-deleted folder");
    let err = spool.copy_meta(first, &deleted).unwrap_err();
    assert!(matches!(err, SpoolError::UnknownFolder { .. }), "{err}");

    // The listing touches no message file: list every user's folders under strace.
    strace_listing(
        &cyrus,
        &spool,
        &users.iter().map(|u| u.user.clone()).collect::<Vec<_>>(),
    );
}

/// Runs this test binary's `strace_child` under strace and checks that the only files under
/// a mailbox directory it touched are cyrus.header, cyrus.index and cyrus.annotations, and
/// that it did stat those (so that the check cannot pass by listing nothing).
fn strace_listing(cyrus: &CyrusInstance, spool: &Spool, users: &[String]) {
    let out = cyrus.dir().join("strace.out");
    let exe = std::env::current_exe().unwrap();
    let child = Command::new("strace")
        .args(["-f", "-s", "4096", "-e", "trace=%file,%stat", "-o"])
        .arg(&out)
        .arg(&exe)
        .args(["strace_child", "--exact", "--ignored", "--test-threads=1"])
        .env(CHILD_ENV, cyrus.imapd_conf())
        .env("BACKUPD_SPOOL_STRACE_USERS", users.join(","))
        .output()
        .expect("running strace (Debian package strace)");
    assert!(
        child.status.success(),
        "strace child: {}\n{}{}",
        child.status,
        String::from_utf8_lossy(&child.stdout),
        String::from_utf8_lossy(&child.stderr)
    );
    let trace = std::fs::read_to_string(&out).unwrap();

    let roots: Vec<PathBuf> = cyrus.partitions().into_iter().map(|(_, p)| p).collect();
    let folders: usize = users
        .iter()
        .map(|u| spool.folders(u).unwrap().folders.len())
        .sum();
    let mut meta_seen = 0;
    let mut bad = Vec::new();
    for line in trace.lines() {
        for path in quoted(line) {
            let p = Path::new(&path);
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let is_meta = matches!(name, "cyrus.header" | "cyrus.index" | "cyrus.annotations");
            // `uuid/<c1>/<c2>/<id>/<file>`: four levels below a partition's uuid directory.
            let depth = roots
                .iter()
                .find_map(|r| p.strip_prefix(r.join("uuid")).ok())
                .map(|rel| rel.components().count());
            match depth {
                Some(4) if is_meta => meta_seen += 1,
                Some(d) if d >= 4 => bad.push(line.to_string()),
                // A message file named relative to an open directory.
                None if !path.starts_with('/')
                    && name.len() > 1
                    && name.ends_with('.')
                    && name[..name.len() - 1].bytes().all(|b| b.is_ascii_digit()) =>
                {
                    bad.push(line.to_string())
                }
                _ => {}
            }
        }
    }
    assert!(bad.is_empty(), "the listing touched:\n{}", bad.join("\n"));
    assert!(
        meta_seen >= 2 * folders,
        "strace saw {meta_seen} meta file calls for {folders} folders:\n{trace}"
    );
}

/// The double-quoted strings of an strace line (paths), unescaped enough for ASCII paths.
fn quoted(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c != '"' {
            continue;
        }
        let mut s = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    if let Some(n) = chars.next() {
                        s.push('\\');
                        s.push(n);
                    }
                }
                '"' => break,
                c => s.push(c),
            }
        }
        out.push(s);
    }
    out
}

/// The process strace watches: lists every user's folders and nothing else. Runs only when
/// `strace_listing` starts it (ignored otherwise; on its own, even with --ignored, it
/// refuses to run).
#[test]
#[ignore = "run by spool_side_against_live_cyrus under strace"]
fn strace_child() {
    let conf = std::env::var_os(CHILD_ENV).unwrap_or_else(|| {
        panic!(
            "strace_child is the process spool_side_against_live_cyrus runs under strace \
             ({CHILD_ENV} unset); run that test instead"
        )
    });
    let users = std::env::var("BACKUPD_SPOOL_STRACE_USERS").unwrap();
    let spool = Spool::open(Path::new(&conf)).unwrap();
    for user in users.split(',') {
        let listing = spool.folders(user).unwrap();
        assert!(!listing.folders.is_empty());
    }
}
