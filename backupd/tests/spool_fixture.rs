//! `backupd::spool::Spool` over the captured Cyrus 3.6 spool (tests/fixtures/cyrus-3.6):
//! the API's answers, its refusals, and that it waits for the locks a Cyrus writer holds (and
//! for nothing else). The tests against a running Cyrus are in the `tests` crate
//! (tests/tests/backupd_spool_*.rs).

use backupd::locks::DEFAULT_LOCK_TIMEOUT;
use backupd::spool::{Spool, SpoolError};
use formats::cyrus::index::Index;
use formats::protocol::UserFileId;
use formats::Guid;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/cyrus-3.6");
/// The fixture's only user.
const USER: &str = "fx0";

/// A mailbox of the fixture as Cyrus's `ctl_mboxlist -d` printed it (mboxlist.json), by
/// folder (`""` for the INBOX, `"Archive/2025"`): (unique id, partition, UIDVALIDITY).
fn dumped(folder: &str) -> (String, String, u32) {
    let text = std::fs::read_to_string(Path::new(FIXTURE).join("mboxlist.json")).unwrap();
    let list: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut name = format!("user.{USER}");
    if !folder.is_empty() {
        name = format!("{name}.{}", folder.replace('/', "."));
    }
    let e = &list[&name];
    let s = |k: &str| e[k].as_str().unwrap_or_else(|| panic!("{name}: {k}"));
    (
        s("uniqueid").to_string(),
        s("partition").to_string(),
        s("uidvalidity").parse().unwrap(),
    )
}

/// The INBOX's unique id.
fn inbox() -> String {
    dumped("").0
}

/// The Work folder's unique id.
fn work() -> String {
    dumped("Work").0
}

/// `uuid/<c1>/<c2>/<id>`: where Cyrus 3.6 keeps a mailbox by unique id, below its partition
/// (or below sievedir, for the user's sieve directory).
fn by_id(id: &str) -> String {
    format!("uuid/{}/{}/{id}", &id[..1], &id[1..2])
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
            // The fixture is read-only; the tests lock copies as a Cyrus writer would.
            std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

/// A writable copy of the fixture with an imapd.conf pointing at it, and its Spool.
fn fixture() -> (tempfile::TempDir, Spool) {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&Path::new(FIXTURE).join("conf"), &dir.path().join("conf"));
    copy_dir(&Path::new(FIXTURE).join("spool"), &dir.path().join("spool"));
    std::fs::create_dir(dir.path().join("conf/lock")).unwrap();
    let text = std::fs::read_to_string(Path::new(FIXTURE).join("imapd.conf"))
        .unwrap()
        .replace("@ROOT@", dir.path().to_str().unwrap());
    std::fs::write(dir.path().join("imapd.conf"), text).unwrap();
    let spool = Spool::open(&dir.path().join("imapd.conf")).unwrap();
    (dir, spool)
}

#[test]
fn users_folders_and_user_files() {
    let (_dir, spool) = fixture();
    let users = spool.users().unwrap();
    assert_eq!(users.len(), 1);
    assert_eq!(users.get(0), Some((USER, "default")));

    let listing = spool.folders(USER).unwrap();
    let got: Vec<(String, (String, String, u32))> = listing
        .folders
        .iter()
        .map(|f| {
            let listed = (
                f.uniqueid.to_string(),
                f.partition.to_string(),
                f.uidvalidity,
            );
            (f.name.to_string(), listed)
        })
        .collect();
    let folders = ["INBOX", "Archive", "Archive/2025", "Lists", "Work"];
    let want: Vec<(String, (String, String, u32))> = folders
        .into_iter()
        .map(|f| (f.into(), dumped(if f == "INBOX" { "" } else { f })))
        .collect();
    assert_eq!(got, want);
    let partitions: Vec<&str> = want.iter().map(|(_, (_, p, _))| p.as_str()).collect();
    assert_eq!(partitions, ["default", "p2", "p2", "default", "default"]);
    let inbox = &listing.folders[0];
    let index_path = _dir
        .path()
        .join("spool/p1")
        .join(by_id(&inbox.uniqueid))
        .join("cyrus.index");
    let meta = std::fs::metadata(&index_path).unwrap();
    assert_eq!(inbox.index.size, meta.len());
    assert_eq!(
        inbox.index.inode,
        std::os::unix::fs::MetadataExt::ino(&meta)
    );
    assert!(inbox.annotations.is_some());
    // Archive has no message, hence no cyrus.annotations.
    assert_eq!(listing.folders[1].annotations, None);

    // The fixture holds sub.db only (no seen.db, no sieve directory).
    let ids: Vec<&UserFileId> = listing.user_files.iter().map(|f| &f.id).collect();
    assert_eq!(ids, [&UserFileId::Subscriptions]);
    let (subs, stat) = spool
        .read_user_file(USER, &UserFileId::Subscriptions)
        .unwrap()
        .unwrap();
    assert!(subs.starts_with(b"\x1fVER\x1f"), "{subs:?}");
    assert_eq!(stat, listing.user_files[0].stat);
    assert_eq!(spool.read_user_file(USER, &UserFileId::Seen).unwrap(), None);
    assert_eq!(
        spool
            .read_user_file(USER, &UserFileId::SieveScript("main".into()))
            .unwrap(),
        None
    );
    assert_eq!(
        spool
            .read_user_file(USER, &UserFileId::SieveActive)
            .unwrap(),
        None
    );
}

#[test]
fn meta_copies_parse_and_messages_match_their_guids() {
    let (_dir, spool) = fixture();
    let mut checked = 0;
    for folder in spool.folders(USER).unwrap().folders {
        let copy = spool.copy_meta(USER, &folder.uniqueid).unwrap();
        assert_eq!(copy.uniqueid, folder.uniqueid);
        // Nothing changed in between: the copy's stat data are the listing's.
        assert_eq!(copy.header.1, folder.header);
        assert_eq!(copy.index.1, folder.index);
        assert_eq!(copy.annotations.as_ref().map(|a| a.1), folder.annotations);
        assert_eq!(copy.index.0.len() as u64, folder.index.size);
        let idx = Index::parse(&copy.index.0).unwrap();
        for rec in idx.records() {
            let rec = rec.unwrap();
            let (mut file, size) = spool
                .open_message(USER, &folder.uniqueid, rec.uid)
                .unwrap()
                .unwrap_or_else(|| panic!("{} uid {} is gone", folder.name, rec.uid));
            let mut data = Vec::new();
            file.read_to_end(&mut data).unwrap();
            assert_eq!(data.len() as u64, size);
            assert_eq!(
                Some(Guid::of(&data)),
                rec.guid,
                "{} uid {}",
                folder.name,
                rec.uid
            );
            checked += 1;
        }
        // A UID past the last one: no file, not an error.
        let next = idx.header().last_uid + 1;
        assert!(spool
            .open_message(USER, &folder.uniqueid, next)
            .unwrap()
            .is_none());
    }
    assert!(checked >= 20, "{checked} messages checked");
}

#[test]
fn names_are_refused_before_use_and_errors_say_what_was_asked() {
    let (dir, spool) = fixture();
    let inbox = inbox();
    let up = format!("../{USER}");
    let down = format!("{USER}/..");
    let bad_users = ["", "..", &up, &down, "a/b", "a\0b", "a\nb", "a\x7fb"];
    for user in bad_users {
        for err in [
            spool.folders(user).unwrap_err(),
            spool.copy_meta(user, &inbox).unwrap_err(),
            spool.open_message(user, &inbox, 1).unwrap_err(),
            spool
                .read_user_file(user, &UserFileId::Subscriptions)
                .unwrap_err(),
        ] {
            assert!(
                matches!(&err, SpoolError::BadName { what: "user", .. }),
                "{user:?}: {err}"
            );
        }
    }
    let escape = format!("{inbox}/../x");
    for id in ["", "../../etc", "a/b", "x\0", &escape, "é"] {
        for err in [
            spool.copy_meta(USER, id).unwrap_err(),
            spool.open_message(USER, id, 1).unwrap_err(),
        ] {
            assert!(
                matches!(
                    &err,
                    SpoolError::BadName {
                        what: "unique id",
                        ..
                    }
                ),
                "{id:?}: {err}"
            );
        }
    }
    for name in ["../main", "a/b", "", "x\0y"] {
        let err = spool
            .read_user_file(USER, &UserFileId::SieveScript(name.into()))
            .unwrap_err();
        assert!(
            matches!(
                &err,
                SpoolError::BadName {
                    what: "sieve script",
                    ..
                }
            ),
            "{name:?}: {err}"
        );
    }
    assert!(matches!(
        spool.open_message(USER, &inbox, 0).unwrap_err(),
        SpoolError::BadName { what: "UID", .. }
    ));

    let err = spool.folders("nobody").unwrap_err();
    assert!(matches!(&err, SpoolError::UnknownUser { user } if user == "nobody"));
    assert!(err.to_string().contains("\"nobody\""), "{err}");
    let err = spool.copy_meta("nobody", &inbox).unwrap_err();
    assert!(matches!(err, SpoolError::UnknownUser { .. }), "{err}");
    // No lock file is made for a user that does not exist.
    assert!(!dir.path().join("conf/lock/*U*nobody.lock").exists());
    for err in [
        spool
            .copy_meta(USER, "aaaabbbbccccddddeeeeffff")
            .unwrap_err(),
        spool
            .open_message(USER, "aaaabbbbccccddddeeeeffff", 1)
            .unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(
            matches!(&err, SpoolError::UnknownFolder { .. })
                && text.contains(&format!("\"{USER}\""))
                && text.contains("aaaabbbbccccddddeeeeffff"),
            "{text}"
        );
    }
}

/// A classic whole-file fcntl lock, as Cyrus (lib/lock_fcntl.c) takes it.
fn cyrus_lock(path: &Path, kind: i32) -> File {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .unwrap();
    backupd::locks::cyrus_style_lock(&file, kind).unwrap();
    file
}

/// Runs a copy in a thread; returns whether it finished within `wait`, and its handle.
fn copy_in_thread(
    spool: &std::sync::Arc<Spool>,
    wait: Duration,
) -> (bool, std::thread::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let spool = spool.clone();
    let work = work();
    let handle = std::thread::spawn(move || {
        spool.copy_meta(USER, &work).unwrap();
        let _ = tx.send(()); // the receiver may have stopped waiting
    });
    (rx.recv_timeout(wait).is_ok(), handle)
}

#[test]
fn copies_wait_for_cyrus_writers_and_nothing_else() {
    let (dir, spool) = fixture();
    let spool = std::sync::Arc::new(spool);
    let work = work();
    // The first copy creates the lock files Cyrus would have created.
    spool.copy_meta(USER, &work).unwrap();
    let lock_dir = dir.path().join("conf/lock");
    let namespace = lock_dir.join(format!("*U*{USER}.lock"));
    let mailbox = lock_dir.join(format!("{work}.lock"));
    assert!(namespace.exists() && mailbox.exists());
    let index: PathBuf = dir
        .path()
        .join("spool/p1")
        .join(by_id(&work))
        .join("cyrus.index");

    for (what, path) in [
        ("namespace lock", &namespace),
        ("mailbox lock", &mailbox),
        ("cyrus.index", &index),
    ] {
        // Another reader (shared): no wait. A copy that waited for it would wait as long as
        // the reader holds it, which is until after this check: stuck.
        let reader = cyrus_lock(path, nix::libc::F_RDLCK);
        let (done, handle) = copy_in_thread(&spool, testkit::wait::STUCK);
        assert!(done, "a copy waited for a shared lock on the {what}");
        handle.join().unwrap();
        drop(reader);

        // A writer (exclusive): the copy waits until it lets go; listings do not wait. (A
        // slow machine only makes the copy's 300 ms look more like a wait.)
        let writer = cyrus_lock(path, nix::libc::F_WRLCK);
        let (done, handle) = copy_in_thread(&spool, Duration::from_millis(300));
        assert!(
            !done,
            "a copy did not wait for an exclusive lock on the {what}"
        );
        spool.folders(USER).unwrap();
        drop(writer);
        handle.join().unwrap();
    }
}

#[test]
fn a_hung_cyrus_writer_fails_the_request_after_the_lock_timeout() {
    let (dir, spool) = fixture();
    let work = work();
    spool.copy_meta(USER, &work).unwrap(); // creates the lock files
    let timeout = Duration::from_millis(300);
    let spool = spool.with_lock_timeout(timeout);
    assert_eq!(spool.lock_timeout(), timeout);
    let lock_dir = dir.path().join("conf/lock");
    let mailboxes_db = dir.path().join("conf/mailboxes.db");
    let index = dir
        .path()
        .join("spool/p1")
        .join(by_id(&work))
        .join("cyrus.index");
    for path in [
        lock_dir.join(format!("*U*{USER}.lock")),
        lock_dir.join(format!("{work}.lock")),
        index,
        mailboxes_db.clone(),
    ] {
        // A writer that never lets go.
        let writer = cyrus_lock(&path, nix::libc::F_WRLCK);
        let t = std::time::Instant::now();
        let err = spool.copy_meta(USER, &work).unwrap_err();
        let took = t.elapsed();
        match &err {
            SpoolError::LockTimeout { path: p, waited } => {
                assert_eq!(p, &path, "{err}");
                assert!(*waited >= timeout, "{err}");
            }
            other => panic!("{}: expected a lock timeout, got {other}", path.display()),
        }
        // After this spool's timeout, not the default one (60 s): half of that is more than
        // any loaded machine adds.
        assert!(
            took >= timeout && took < DEFAULT_LOCK_TIMEOUT / 2,
            "{}: gave up after {took:?}",
            path.display()
        );
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "{}: gave up waiting for the lock after 0.3 s",
                path.display()
            )) && text.contains("lock_timeout_secs"),
            "{text}"
        );
        drop(writer);
        spool.copy_meta(USER, &work).unwrap();
    }
    // The mailbox list too: a listing of every user.
    let writer = cyrus_lock(&mailboxes_db, nix::libc::F_WRLCK);
    let err = spool.users().unwrap_err();
    assert!(
        matches!(err.cause(), SpoolError::LockTimeout { path, .. } if *path == mailboxes_db),
        "{err}"
    );
    drop(writer);
    assert!(!spool.users().unwrap().is_empty());
}

#[test]
fn archived_messages_are_found_on_the_archive_partition() {
    let (dir, _) = fixture();
    // Cyrus moves archived records' files to `archivepartition-<name>`, same relative path.
    let conf = dir.path().join("imapd.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(&format!(
        "archivepartition-default: {}/archive\n",
        dir.path().display()
    ));
    std::fs::write(&conf, text).unwrap();
    let work = work();
    let rel = by_id(&work);
    let archived = dir.path().join("archive").join(&rel);
    std::fs::create_dir_all(&archived).unwrap();
    std::fs::rename(
        dir.path().join("spool/p1").join(&rel).join("1."),
        archived.join("1."),
    )
    .unwrap();
    let spool = Spool::open(&conf).unwrap();
    let copy = spool.copy_meta(USER, &work).unwrap();
    let idx = Index::parse(&copy.index.0).unwrap();
    let rec = idx.records().next().unwrap().unwrap();
    assert_eq!(rec.uid, 1);
    let (mut file, _) = spool.open_message(USER, &work, 1).unwrap().unwrap();
    let mut data = Vec::new();
    file.read_to_end(&mut data).unwrap();
    assert_eq!(Some(Guid::of(&data)), rec.guid);
}

#[test]
fn sieve_scripts_kept_as_files_are_listed_and_read() {
    // Before Cyrus 3.6 moved sources into the #sieve mailbox: `<name>.script` files.
    let (dir, spool) = fixture();
    let sieve = dir.path().join("sieve").join(by_id(&inbox()));
    std::fs::create_dir_all(&sieve).unwrap();
    std::fs::write(sieve.join("main.script"), b"keep;\r\n").unwrap();
    std::fs::write(sieve.join("main.bc"), b"compiled").unwrap();
    std::fs::write(sieve.join("bad name.bc.NEW"), b"half-written").unwrap();
    std::os::unix::fs::symlink("main.bc", sieve.join("defaultbc")).unwrap();
    let listing = spool.folders(USER).unwrap();
    let ids: Vec<&UserFileId> = listing.user_files.iter().map(|f| &f.id).collect();
    assert_eq!(
        ids,
        [
            &UserFileId::Subscriptions,
            &UserFileId::SieveScript("main".into()),
            &UserFileId::SieveActive
        ]
    );
    let (script, stat) = spool
        .read_user_file(USER, &UserFileId::SieveScript("main".into()))
        .unwrap()
        .unwrap();
    assert_eq!(script, b"keep;\r\n");
    assert_eq!(stat, listing.user_files[1].stat);
    assert_eq!(
        stat.size, 7,
        "the source's stat data, not the compiled file's"
    );
    let (active, _) = spool
        .read_user_file(USER, &UserFileId::SieveActive)
        .unwrap()
        .unwrap();
    assert_eq!(active, b"main");
}

#[test]
fn sieve_script_names_cyrus_accepts_are_backed_up() {
    // Cyrus accepts any script name without `/` or NUL (sievedir_valid_name): `v1..v2` and
    // a tab must be listed and read, not skipped in silence. The name only ever becomes
    // `<name>.script` / `<name>.bc` inside the sieve directory.
    let (dir, spool) = fixture();
    let sieve = dir.path().join("sieve").join(by_id(&inbox()));
    std::fs::create_dir_all(&sieve).unwrap();
    for name in ["v1..v2", "a\tb", ".."] {
        std::fs::write(sieve.join(format!("{name}.script")), name.as_bytes()).unwrap();
    }
    let listing = spool.folders(USER).unwrap();
    let names: Vec<&str> = listing
        .user_files
        .iter()
        .filter_map(|f| match &f.id {
            UserFileId::SieveScript(n) => Some(n.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["..", "a\tb", "v1..v2"]);
    for name in names {
        let (bytes, _) = spool
            .read_user_file(USER, &UserFileId::SieveScript(name.into()))
            .unwrap()
            .unwrap();
        assert_eq!(bytes, name.as_bytes());
    }
    // Still refused: what could leave the directory.
    for name in ["../v1..v2", "a/b", "x\0"] {
        let err = spool
            .read_user_file(USER, &UserFileId::SieveScript(name.into()))
            .unwrap_err();
        assert!(
            matches!(
                &err,
                SpoolError::BadName {
                    what: "sieve script",
                    ..
                }
            ),
            "{name:?}: {err}"
        );
    }
}
