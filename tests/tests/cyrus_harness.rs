//! The test harness itself: a real Cyrus starts, populate.py fills it, imap_truth.py reads
//! it back, and the spool on disk matches what IMAP says. These tests need Cyrus installed
//! (tests/cyrus/install.sh; CI does it) and root; they fail rather than skip without them.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::TcpListener;
use std::process::Command;
use std::time::Instant;

use sha1::{Digest, Sha1};
use testkit::wait;
use tests::cyrus::{base_dir, reap_stale};
use tests::{CyrusInstance, Truth};

fn sha1_hex(bytes: &[u8]) -> String {
    hex::encode(Sha1::digest(bytes))
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

#[test]
fn populated_spool_matches_imap_truth() {
    let t = Instant::now();
    let mut cyrus = CyrusInstance::start().expect("starting Cyrus");
    let started = t.elapsed();

    let t = Instant::now();
    let summary = cyrus.populate().expect("populate.py");
    let populated = t.elapsed();
    assert_eq!(summary.get_u64("users"), Some(3), "{}", summary.line);
    assert_eq!(summary.get_u64("sieve_filed"), Some(3), "{}", summary.line);

    let t = Instant::now();
    let truth = cyrus.truth().expect("imap_truth.py");
    let truthed = t.elapsed();

    let users: Vec<&str> = truth.users().into_iter().collect();
    assert_eq!(users, ["u000", "u001", "u002.x"]);

    // Every live message is the file <uid>. in <partition root>/uuid/c1/c2/<uniqueid>/,
    // byte for byte (SHA-1 = what IMAP returned), and each folder sits on the partition it
    // was created on.
    let mut on_partition: BTreeMap<String, usize> = BTreeMap::new();
    for (key, folder) in &truth.folders {
        let part = folder.partition.as_deref().expect("partition in truth");
        let id = folder.uniqueid.as_deref().expect("uniqueid in truth");
        let dir = cyrus.mailbox_dir(part, id).expect("known partition");
        assert!(
            dir.join("cyrus.header").is_file(),
            "{key}: no cyrus.header in {}",
            dir.display()
        );
        for (other, root) in cyrus.partitions() {
            if other != part {
                assert!(!root
                    .join("uuid")
                    .join(&id[..1])
                    .join(&id[1..2])
                    .join(id)
                    .exists());
            }
        }
        *on_partition.entry(part.to_string()).or_default() += 1;
        for m in &folder.messages {
            let bytes = fs::read(dir.join(format!("{}.", m.uid))).unwrap();
            assert_eq!(sha1_hex(&bytes), m.sha1, "{key} uid {}", m.uid);
            assert_eq!(bytes.len() as u64, m.size, "{key} uid {}", m.uid);
        }
    }
    assert!(
        on_partition.get("default").copied().unwrap_or(0) > 5,
        "{on_partition:?}"
    );
    assert!(
        on_partition.get("p2").copied().unwrap_or(0) > 5,
        "{on_partition:?}"
    );
    let inbox = truth.folder("u000", "INBOX").unwrap();
    assert_eq!(inbox.partition.as_deref(), Some("default"));
    assert_eq!(
        truth
            .folder("u000", "Archive/2025")
            .unwrap()
            .partition
            .as_deref(),
        Some("p2")
    );

    // The same message in several folders of one user, and across users.
    let mut places: BTreeMap<&str, BTreeSet<(&str, &str)>> = BTreeMap::new();
    for (user, folder, m) in truth.messages() {
        places.entry(&m.sha1).or_default().insert((user, folder));
    }
    assert!(places.values().any(|p| {
        let users: BTreeSet<_> = p.iter().map(|(u, _)| u).collect();
        users.len() == 1 && p.len() >= 2
    }));
    assert!(places.values().any(|p| {
        let users: BTreeSet<_> = p.iter().map(|(u, _)| u).collect();
        users.len() == 3
    }));
    assert!(
        truth.messages().any(|(_, _, m)| m.size > 2 << 20),
        "a large message"
    );
    assert!(
        truth.messages().any(|(_, _, m)| m.size < 100),
        "a tiny message"
    );

    // Flags and keywords.
    let has = |flag: &str| {
        truth
            .messages()
            .any(|(_, _, m)| m.flags.iter().any(|f| f == flag))
    };
    for flag in [
        "\\Seen",
        "\\Flagged",
        "\\Answered",
        "\\Draft",
        "\\Deleted",
        "$Work",
        "$Label1",
    ] {
        assert!(has(flag), "no message has {flag}");
    }

    // Expunges: a UID below UIDNEXT is gone from IMAP but its file stays (delayed expunge).
    let live: BTreeSet<u32> = inbox.messages.iter().map(|m| m.uid).collect();
    let gone: Vec<u32> = (1..inbox.uidnext).filter(|u| !live.contains(u)).collect();
    assert!(!gone.is_empty(), "no expunged UID in u000/INBOX");
    let inbox_dir = cyrus
        .mailbox_dir("default", inbox.uniqueid.as_deref().unwrap())
        .unwrap();
    assert!(
        gone.iter()
            .any(|u| inbox_dir.join(format!("{u}.")).is_file()),
        "delayed expunge keeps the file of an expunged message"
    );

    // Rename, subscriptions, seen state of another reader, sieve.
    assert!(truth.folder("u000", "Projects/Done").is_some());
    assert!(truth.folder("u000", "Projects/Old").is_none());
    assert!(truth.folder("u000", "Trash/Temp").is_none());
    assert!(truth.folder("u000", "Donn&AOk-es").is_some());
    assert_eq!(truth.folder("u000", "Work").unwrap().subscribed, Some(true));
    assert_eq!(
        truth.folder("u000", "Trash").unwrap().subscribed,
        Some(false)
    );
    let inbox_id = inbox.uniqueid.as_deref().unwrap();
    let sub = fs::read(cyrus.user_files_dir(inbox_id).join("sub.db")).expect("sub.db");
    assert!(sub.windows(4).any(|w| w == b"Work"), "sub.db lists Work");
    let reader_id = truth
        .folder("u001", "INBOX")
        .unwrap()
        .uniqueid
        .clone()
        .unwrap();
    assert!(cyrus.user_files_dir(&reader_id).join("seen.db").is_file());
    assert!(cyrus
        .user_sieve_dir(inbox_id)
        .join("defaultbc")
        .symlink_metadata()
        .is_ok());

    // mailboxes.db agrees on names, partitions and ids.
    let mboxlist = cyrus.mboxlist().expect("ctl_mboxlist");
    let entry = &mboxlist["user.u002^x.Archive.2025"];
    let archive = truth.folder("u002.x", "Archive/2025").unwrap();
    assert_eq!(entry["partition"], "p2");
    assert_eq!(entry["uniqueid"].as_str(), archive.uniqueid.as_deref());

    let ports = cyrus.ports();
    let t = Instant::now();
    cyrus.stop().expect("stop.sh");
    let stopped = t.elapsed();
    for p in ports {
        assert!(port_free(p), "port {p} still in use after stop");
    }
    eprintln!(
        "cyrus harness: start {started:.2?}, populate {populated:.2?}, truth {truthed:.2?}, \
         stop {stopped:.2?}; {}",
        summary.line
    );
}

#[test]
fn stale_instance_of_a_dead_test_is_reaped() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    let dir = cyrus.dir().to_path_buf();
    let ports = cyrus.ports();
    // Pretend the owner died without running Drop: the pid of a finished child is dead.
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    fs::write(dir.join("owner"), format!("{dead} 1\n")).unwrap();
    std::mem::forget(cyrus);

    assert!(!port_free(ports[0]));
    // Reaped by this call, or by another test's start meanwhile (each start reaps): gone
    // either way, once the reaper that took it is done.
    reap_stale(&base_dir());
    wait::until("the stale instance removed", || !dir.exists());
    for p in ports {
        assert!(port_free(p), "port {p} still in use after reaping");
    }
}

#[test]
fn truth_in_the_fixture_shape_parses() {
    // The older, smaller shape of truth.json (an earlier capture's): no uniqueid nor numbers
    // beside STATUS.
    let json = r#"{"u3x0/INBOX": {"status": "INBOX (UIDNEXT 12 UIDVALIDITY 1795415425 HIGHESTMODSEQ 16)",
        "messages": [{"uid": 1, "flags": ["$Work", "\\Flagged"],
        "internaldate": "23-Nov-2026 06:30:24 +0000", "size": 508,
        "sha1": "ceea60118a7b84dcdbde028fff958f73a8d18b5c"}]}}"#;
    let truth = Truth::from_json(json).unwrap();
    let inbox = truth.folder("u3x0", "INBOX").unwrap();
    assert_eq!(inbox.uidnext, 12);
    assert_eq!(inbox.uidvalidity, 1795415425);
    assert_eq!(inbox.highestmodseq, 16);
    assert_eq!(inbox.exists, Some(1));
    assert_eq!(inbox.uniqueid, None);
    assert_eq!(inbox.message(1).unwrap().flags, ["$Work", "\\Flagged"]);
}

#[test]
fn bulk_spool_is_real_cyrus() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    let summary = cyrus
        .bulk(&[
            "--users",
            "4",
            "--folders",
            "5",
            "--messages",
            "30",
            "--size-scale",
            "0.2",
            "--shared-ratio",
            "0.2",
        ])
        .expect("bulk.py");
    assert_eq!(
        summary.get_u64("messages"),
        Some(4 * 5 * 30),
        "{}",
        summary.line
    );
    let truth = cyrus.truth().expect("imap_truth.py");
    assert_eq!(truth.folders.len(), 4 * 5);
    let expunged = summary.get_u64("expunged").unwrap();
    assert_eq!(truth.messages().count() as u64, 4 * 5 * 30 - expunged);
    let mut shas = BTreeSet::new();
    for (key, folder) in &truth.folders {
        // reconstruct kept the UIDs of the files: 1..=30, minus the expunged ones.
        assert_eq!(folder.uidnext, 31, "{key}");
        let dir = cyrus
            .mailbox_dir(
                folder.partition.as_deref().unwrap(),
                folder.uniqueid.as_deref().unwrap(),
            )
            .unwrap();
        for m in &folder.messages {
            let bytes = fs::read(dir.join(format!("{}.", m.uid))).unwrap();
            assert_eq!(sha1_hex(&bytes), m.sha1, "{key} uid {}", m.uid);
            shas.insert(m.sha1.clone());
        }
    }
    assert!(
        shas.len() < truth.messages().count(),
        "some messages are shared"
    );
    assert!(truth
        .messages()
        .any(|(_, _, m)| m.flags.iter().any(|f| f == "\\Seen")));
}
