//! Users deleted, renamed, created again and moved in a real Cyrus 3.6, followed by
//! `backup-server` (the binary: `users refresh`, `run`, `compact`, `restore`) against a
//! real backupd: a deleted user's store stays restorable (into a new account too) until
//! `vanished_retention_days` is over, then compaction removes it and says so; a renamed
//! user's store follows it and the next backup fetches no message; a user deleted and
//! created again gets a new store, the old one kept under its own name; a user moved to
//! another partition (another RAID set), or to another mail server, is backed up from the
//! new place, incrementally; a
//! deleted user restored into Cyrus as it was comes back to its store; a refresh killed
//! around a store's move leaves one store under one name.
//! What was fetched is counted at backupd (messages opened) and in the run's row.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use backup_server::state::StateDb;
use backup_server::store::{StoreReader, UserDir};
use tests::rig::{backup_server_bin, counts, run_command, text, write_config, Backupd};
use tests::{CyrusInstance, CyrusOptions, DeleteMode};

/// One Cyrus with bulk.py users, its backupd and a backup host's config.
struct Setup {
    cyrus: CyrusInstance,
    backupd: Backupd,
    dir: tempfile::TempDir,
    config: PathBuf,
    bin: PathBuf,
}

impl Setup {
    fn new(users: &str, secret: &str) -> Setup {
        Self::with(users, secret, CyrusOptions::default())
    }

    fn with(users: &str, secret: &str, options: CyrusOptions) -> Setup {
        let cyrus = CyrusInstance::start_with(options).expect("starting Cyrus");
        cyrus
            .bulk(&["--users", users, "--folders", "3", "--messages", "12"])
            .expect("bulk.py");
        let backupd = Backupd::start(&cyrus, secret);
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), backupd.addr(), &backupd.secret_text, 2, 5);
        Setup {
            cyrus,
            backupd,
            dir,
            config,
            bin: backup_server_bin(),
        }
    }

    /// `backup-server --config CONFIG ARGS...`, finished.
    fn cmd(&self, args: &[&str]) -> Output {
        std::process::Command::new(&self.bin)
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    /// A 0600 file holding the admin's password (any: the test Cyrus takes any).
    fn password_file(&self) -> PathBuf {
        let pw = self.dir.path().join("imap-password");
        std::fs::File::create(&pw)
            .unwrap()
            .write_all(b"x\n")
            .unwrap();
        std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o600)).unwrap();
        pw
    }

    /// `restore --user USER --to cyrus://` into `cyrus` (its sync_server), which must exit 0.
    fn restore_into_cyrus(&self, user: &str, cyrus: &CyrusInstance) {
        let pw = self.password_file();
        let to = format!("cyrus://admin@127.0.0.1:{}", cyrus.sync_port());
        let o = self.cmd(&[
            "restore",
            "--user",
            user,
            "--to",
            &to,
            "--password-file",
            pw.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    fn db(&self) -> StateDb {
        StateDb::open(&self.dir.path().join("state/state.sqlite3")).unwrap()
    }

    /// `run`, which must exit 0 with `done` users; returns the run's (messages, bytes)
    /// fetched from its state-db row.
    fn run(&self, done: u64) -> (i64, i64) {
        let o = run_command(&self.bin, &self.config).output().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert_eq!(counts(&o), (done, 0, 0, 0), "{}", text(&o));
        self.db()
            .connection()
            .query_row(
                "SELECT messages_fetched, bytes_fetched FROM runs ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    }

    /// `users refresh`, which must exit 0; returns its output.
    fn refresh(&self) -> String {
        let o = self.cmd(&["users", "refresh"]);
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    /// Folder name to unique id, as backupd lists the user now.
    fn folder_ids(&self, user: &str) -> BTreeMap<String, String> {
        let mut c = self.backupd.connect();
        c.list_folders(user)
            .unwrap()
            .folders
            .into_iter()
            .map(|f| (f.name, f.uniqueid))
            .collect()
    }

    /// Messages opened by backupd so far.
    fn opened(&self) -> u64 {
        self.backupd.served.counts().2
    }
}

/// Folder name to the SHA-1s of its messages, as the store holds them now.
fn store_messages(root: &Path, user: &str) -> BTreeMap<String, Vec<String>> {
    let r = StoreReader::open(root, user).unwrap();
    let cat = r.catalog();
    let mut out = BTreeMap::new();
    for f in cat.folders_at(None).unwrap() {
        let mut g: Vec<String> = Vec::new();
        cat.messages_at(&f.unique_id, None, false, |m| {
            g.push(m.guid.to_hex());
            Ok(())
        })
        .unwrap();
        g.sort();
        out.insert(f.name.clone(), g);
    }
    out
}

/// Folder name (below the user) to the SHA-1s of its messages, as IMAP shows them.
fn imap_messages(cyrus: &CyrusInstance, user: &str) -> BTreeMap<String, Vec<String>> {
    let truth = cyrus.truth_for(&[user]).unwrap();
    truth
        .folders
        .iter()
        .map(|(name, f)| {
            let folder = name
                .split_once('/')
                .map_or(name.as_str(), |(_, f)| f)
                .to_owned();
            let mut g: Vec<String> = f.messages.iter().map(|m| m.sha1.clone()).collect();
            g.sort();
            (folder, g)
        })
        .collect()
}

#[test]
fn a_deleted_user_stays_restorable_until_its_retention_ends_then_compaction_removes_it() {
    let s = Setup::new("3", "lifecycle-deleted-secret-0123");
    s.run(3);
    let root = s.root();
    let held = store_messages(&root, "b00001");
    assert!(held.values().map(Vec::len).sum::<usize>() > 0, "{held:?}");

    // Deleted in Cyrus: the next refresh marks it vanished; runs leave it alone.
    s.cyrus.delete_user("b00001").unwrap();
    let out = s.refresh();
    assert!(out.contains("1 vanished"), "{out}");
    let row = s.db().user("b00001").unwrap().unwrap();
    let vanished_at = row.vanished_at.expect("marked vanished");
    s.run(2);
    assert!(UserDir::new(&root, "b00001").unwrap().exists());

    // Restorable, into a new account.
    s.cyrus.create_user("newcomer").unwrap();
    let pw = s.password_file();
    let url = format!("imap://admin@127.0.0.1:{}/", s.cyrus.imap_port());
    let o = s.cmd(&[
        "restore",
        "--user",
        "b00001",
        "--to",
        &url,
        "--as-user",
        "newcomer",
        "--into",
        "/",
        "--password-file",
        pw.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(imap_messages(&s.cyrus, "newcomer"), held);

    // Compaction inside the retention (30 days by default): kept, not a word.
    let at = |days: i64| (vanished_at + days * 86_400).to_string();
    let o = s.cmd(&["compact", "--now", &at(29)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("vanished"),
        "{}",
        text(&o)
    );
    assert!(UserDir::new(&root, "b00001").unwrap().exists());
    // A dry run after it says what it would do, and does nothing.
    let o = s.cmd(&["compact", "--dry-run", "--now", &at(30)]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("b00001\tvanished "),
        "{}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("would remove the store"),
        "{}",
        text(&o)
    );
    assert!(UserDir::new(&root, "b00001").unwrap().exists());
    // After it: removed, said so, the row kept and marked.
    let o = s.cmd(&["compact", "--now", &at(30)]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("b00001\tvanished ")
            && stdout.contains("store removed (vanished_retention_days 30 over)"),
        "{}",
        text(&o)
    );
    assert!(!UserDir::new(&root, "b00001").unwrap().exists());
    assert!(!root.join("removing").read_dir().unwrap().any(|_| true));
    let removed_at: Option<i64> = s
        .db()
        .connection()
        .query_row(
            "SELECT removed_at FROM users WHERE name = 'b00001'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(removed_at, Some(vanished_at + 30 * 86_400));
    // The others are untouched, and the next compaction has nothing to say about b00001.
    for u in ["b00000", "b00002"] {
        assert!(StoreReader::open(&root, u).is_ok(), "{u}");
    }
    let o = s.cmd(&["compact", "--now", &at(40)]);
    assert!(
        !String::from_utf8_lossy(&o.stdout).contains("b00001"),
        "{}",
        text(&o)
    );

    // Deleted and created again under the same name (a new INBOX unique id): a new store,
    // the old one kept, vanished, under a name of its own, restorable.
    let before = store_messages(&root, "b00002");
    let old_inbox = s.folder_ids("b00002")["INBOX"].clone();
    s.cyrus.delete_user("b00002").unwrap();
    let out = s.refresh();
    assert!(out.contains("1 vanished"), "{out}");
    let gone_at = s.db().user("b00002").unwrap().unwrap().vanished_at.unwrap();
    s.cyrus.create_user("b00002").unwrap();
    assert_ne!(
        s.folder_ids("b00002")["INBOX"],
        old_inbox,
        "a new INBOX unique id"
    );
    let out = s.refresh();
    let kept = format!("b00002~vanished-{gone_at}");
    assert!(
        out.contains(&format!(
            "b00002: deleted and created again in Cyrus: a new store; the old one kept as {kept}"
        )),
        "{out}"
    );
    assert!(!UserDir::new(&root, "b00002").unwrap().exists());
    assert_eq!(store_messages(&root, &kept), before);
    let db = s.db();
    let k = db.user(&kept).unwrap().unwrap();
    assert_eq!(
        (k.vanished_at, k.raidset.as_deref()),
        (Some(gone_at), None),
        "{k:?}"
    );
    let n = db.user("b00002").unwrap().unwrap();
    assert_eq!(
        (n.vanished_at, n.last_success, n.backups_ok),
        (None, None, 0),
        "{n:?}"
    );
    drop(db);
    s.run(3); // b00000, b00002 anew, newcomer
    let fresh = store_messages(&root, "b00002");
    assert_eq!(fresh.keys().collect::<Vec<_>>(), vec!["INBOX"], "{fresh:?}");
    assert!(fresh["INBOX"].is_empty());
    // The kept store goes when its retention ends, counted from when the user vanished.
    let o = s.cmd(&["compact", "--now", &(gone_at + 30 * 86_400).to_string()]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("{kept}\tvanished ")),
        "{}",
        text(&o)
    );
    assert!(!UserDir::new(&root, &kept).unwrap().exists());
    assert!(StoreReader::open(&root, "b00002").is_ok());

    // Deleted and created again between two refreshes (never seen vanished): the backup
    // itself finds another INBOX, writes nothing to the old store, and the run keeps it
    // aside; the next run starts the new user's store.
    let before = store_messages(&root, "b00000");
    s.cyrus.delete_user("b00000").unwrap();
    s.cyrus.create_user("b00000").unwrap();
    let o = run_command(&s.bin, &s.config).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_eq!(counts(&o), (2, 0, 0, 1), "{}", text(&o));
    assert!(
        text(&o).contains("user b00000: deleted and created again in Cyrus"),
        "{}",
        text(&o)
    );
    let kept: String = s
        .db()
        .connection()
        .query_row(
            "SELECT name FROM users WHERE name LIKE 'b00000~vanished-%' AND store_from IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(store_messages(&root, &kept), before);
    assert!(!UserDir::new(&root, "b00000").unwrap().index_path().exists());
    s.run(3);
    let fresh = store_messages(&root, "b00000");
    assert_eq!(fresh.keys().collect::<Vec<_>>(), vec!["INBOX"], "{fresh:?}");
    assert!(fresh["INBOX"].is_empty());
}

#[test]
fn a_renamed_user_keeps_its_store_and_its_next_backup_fetches_no_message() {
    let s = Setup::new("2", "lifecycle-renamed-secret-0123");
    let (first_messages, first_bytes) = s.run(2);
    assert!(first_messages > 0 && first_bytes > 0);
    let root = s.root();
    let held = store_messages(&root, "b00000");
    let ids = s.folder_ids("b00000");
    let before = s.db().user("b00000").unwrap().unwrap();

    s.cyrus.rename_user("b00000", "renamed0").unwrap();
    // What Cyrus 3.6 does on a user rename: every folder keeps its unique id.
    assert_eq!(s.folder_ids("renamed0"), ids);

    let out = s.refresh();
    assert!(
        out.contains("b00000: renamed renamed0 in Cyrus: the store follows"),
        "{out}"
    );
    assert!(out.contains("renamed0: store moved from b00000"), "{out}");
    assert!(!UserDir::new(&root, "b00000").unwrap().exists());
    assert_eq!(store_messages(&root, "renamed0"), held);
    let db = s.db();
    let old = db.user("b00000").unwrap().unwrap();
    assert!(old.vanished_at.is_some(), "{old:?}");
    let new = db.user("renamed0").unwrap().unwrap();
    assert_eq!(
        (new.last_success, new.backups_ok),
        (before.last_success, before.backups_ok),
        "the new name carries the backup history"
    );
    drop(db);

    // The next run: no message fetched for anyone, the renamed user backed up complete.
    let opened = s.opened();
    let (messages, bytes) = s.run(2);
    eprintln!(
        "after the rename: {messages} messages, {bytes} bytes fetched \
         (first run: {first_messages} messages, {first_bytes} bytes)"
    );
    assert_eq!(messages, 0, "bytes {bytes} of {first_bytes} the first time");
    assert_eq!(s.opened(), opened, "backupd opened no message file");
    let new = s.db().user("renamed0").unwrap().unwrap();
    assert_eq!(new.backups_ok, before.backups_ok + 1, "{new:?}");
    assert_eq!(store_messages(&root, "renamed0"), held);
    assert_eq!(imap_messages(&s.cyrus, "renamed0"), held);

    // The store, rebuilt from its data file (run markers of both names), equals its index.
    let locked = UserDir::new(&root, "renamed0").unwrap().lock().unwrap();
    let (store, _) = locked
        .reindex(backup_server::store::StoreOptions::default())
        .unwrap();
    assert!(store.check(true).unwrap().is_empty());
    drop(store);
    let o = s.cmd(&["verify", "--user", "renamed0"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // A new user taking the old name starts afresh.
    s.cyrus.create_user("b00000").unwrap();
    let out = s.refresh();
    assert!(
        out.contains(
            "b00000: listed again after its store was removed or handed on: starts afresh"
        ),
        "{out}"
    );
    let row = s.db().user("b00000").unwrap().unwrap();
    assert_eq!(
        (row.vanished_at, row.last_success, row.backups_ok),
        (None, None, 0)
    );
    s.run(3);
    let again = store_messages(&root, "b00000");
    assert!(again.values().all(Vec::is_empty), "{again:?}");
}

#[test]
fn a_user_moved_to_another_partition_is_backed_up_from_its_new_raid_set_incrementally() {
    let s = Setup::new("2", "lifecycle-moved-secret-01234");
    s.run(2);
    let root = s.root();
    let held = store_messages(&root, "b00000");
    let ids = s.folder_ids("b00000");
    assert_eq!(
        s.db().user("b00000").unwrap().unwrap().raidset.as_deref(),
        Some("drives-a")
    );

    s.cyrus.move_user("b00000", "p2").unwrap();
    assert_eq!(
        s.folder_ids("b00000"),
        ids,
        "a partition move keeps the unique ids"
    );
    let out = s.refresh();
    assert!(out.contains("1 moved"), "{out}");
    let row = s.db().user("b00000").unwrap().unwrap();
    assert_eq!(
        (row.partition.as_str(), row.raidset.as_deref()),
        ("p2", Some("drives-b"))
    );

    let opened = s.opened();
    let (messages, bytes) = s.run(2);
    eprintln!("after the partition move: {messages} messages, {bytes} bytes fetched");
    assert_eq!(messages, 0);
    assert_eq!(s.opened(), opened, "backupd opened no message file");
    let r = StoreReader::open(&root, "b00000").unwrap();
    for f in r.catalog().held_folders().unwrap() {
        let snap = f.snapshot.expect("a snapshot");
        assert_eq!(snap.partition.as_deref(), Some("p2"), "{}", f.name);
    }
    drop(r);
    assert_eq!(store_messages(&root, "b00000"), held);
    assert_eq!(imap_messages(&s.cyrus, "b00000"), held);
}

/// Which of `a` and `b` hold a store (an index) under `root`.
fn holders(root: &Path, a: &str, b: &str) -> (bool, bool) {
    let has = |u: &str| UserDir::new(root, u).unwrap().index_path().exists();
    (has(a), has(b))
}

#[test]
fn a_refresh_killed_while_a_renamed_users_store_moves_leaves_one_store_under_one_name() {
    let s = Setup::new("2", "lifecycle-killed-secret-01234");
    s.run(2);
    let held = store_messages(&s.root(), "b00000");
    s.cyrus.rename_user("b00000", "renamed0").unwrap();
    // The state before the refresh that follows the rename, copied for each trial.
    let base = s.dir.path();
    let copy = |to: &Path| {
        let st = std::process::Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", base.display()))
            .arg(to)
            .status()
            .unwrap();
        assert!(st.success());
    };
    let refresh = |dir: &Path| {
        std::process::Command::new(&s.bin)
            .arg("--config")
            .arg(dir.join("backup-server.toml"))
            .args(["users", "refresh"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // How long a whole refresh takes here: the kills fall inside it.
    let whole = tempfile::tempdir().unwrap();
    copy(whole.path());
    let t = std::time::Instant::now();
    assert!(refresh(whole.path()).wait().unwrap().success());
    let span = t.elapsed().as_micros() as u64;
    let seed = std::env::var("LIFECYCLE_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20261203);
    let mut rng = testkit::Rng::new(seed);
    // Kills from half-way through to a little after the end (the move is the refresh's
    // last step): (store still under the old name, moved and killed, ended before the kill).
    let (mut before, mut killed_after, mut ended) = (0, 0, 0);
    for trial in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        copy(dir.path());
        let root = dir.path().join("store");
        let mut child = refresh(dir.path());
        let delay = span / 2 + rng.below(span * 7 / 10 + 1);
        std::thread::sleep(std::time::Duration::from_micros(delay));
        let exited = child.try_wait().unwrap().is_some();
        let _ = child.kill();
        let _ = child.wait();
        let (a, b) = holders(&root, "b00000", "renamed0");
        assert!(
            a ^ b,
            "trial {trial} (seed {seed}): stores under b00000 {a}, renamed0 {b}"
        );
        match (a, exited) {
            (true, _) => before += 1,
            (false, false) => killed_after += 1,
            (false, true) => ended += 1,
        }
        // The next refresh finishes whatever was begun.
        let o = std::process::Command::new(&s.bin)
            .arg("--config")
            .arg(dir.path().join("backup-server.toml"))
            .args(["users", "refresh"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "trial {trial}: {}", text(&o));
        assert_eq!(
            holders(&root, "b00000", "renamed0"),
            (false, true),
            "trial {trial}"
        );
        assert_eq!(store_messages(&root, "renamed0"), held, "trial {trial}");
        let db = StateDb::open(&dir.path().join("state/state.sqlite3")).unwrap();
        assert!(db.pending_moves().unwrap().is_empty(), "trial {trial}");
        let from: Option<String> = db
            .connection()
            .query_row(
                "SELECT renamed_to FROM users WHERE name = 'b00000'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(from.as_deref(), Some("renamed0"), "trial {trial}");
    }
    eprintln!(
        "20 kills in a {span} us refresh: {before} before the store moved, \
         {killed_after} after it, {ended} after the refresh ended"
    );
}

#[test]
fn a_deleted_user_restored_into_cyrus_comes_back_to_its_store_and_fetches_no_message() {
    // delete_mode immediate: the user restored as it was keeps its mailbox unique ids.
    let s = Setup::with(
        "2",
        "lifecycle-back-secret-0123456",
        CyrusOptions {
            delete_mode: DeleteMode::Immediate,
            ..CyrusOptions::default()
        },
    );
    s.run(2);
    let root = s.root();
    let held = store_messages(&root, "b00000");
    let ids = s.folder_ids("b00000");
    s.cyrus.delete_user("b00000").unwrap();
    let out = s.refresh();
    assert!(out.contains("1 vanished"), "{out}");

    s.restore_into_cyrus("b00000", &s.cyrus);
    assert_eq!(s.folder_ids("b00000"), ids, "the same unique ids");

    // Listed again with the same INBOX: back, into the same store; nothing kept aside.
    let out = s.refresh();
    assert!(out.contains("1 back"), "{out}");
    assert!(!out.contains("created again"), "{out}");
    let row = s.db().user("b00000").unwrap().unwrap();
    assert_eq!((row.vanished_at, row.backups_ok), (None, 1), "{row:?}");
    assert_eq!(s.db().users().unwrap().len(), 2);
    let opened = s.opened();
    let (messages, bytes) = s.run(2);
    eprintln!("after coming back: {messages} messages, {bytes} bytes fetched");
    assert_eq!(messages, 0);
    assert_eq!(s.opened(), opened, "backupd opened no message file");
    assert_eq!(store_messages(&root, "b00000"), held);
    assert_eq!(imap_messages(&s.cyrus, "b00000"), held);
}

#[test]
fn a_user_moved_to_another_mail_server_is_followed_and_backed_up_from_there_incrementally() {
    // Two mail servers, each with its backupd (one secret for both) and its RAID set.
    let s = Setup::new("2", "lifecycle-servers-secret-0123");
    let cyrus2 = CyrusInstance::start().expect("starting the second Cyrus");
    let backupd2 = Backupd::start(&cyrus2, &s.backupd.secret_text);
    let pin = tests::rig::test_tls().pair.pin;
    testkit::config::ServerConfig::new("store")
        .state_db("state/state.sqlite3")
        .workers(2)
        .batch_size(5)
        .server("mail1", &s.backupd.addr().to_string(), "mail1.secret")
        .tls_pin(pin)
        .server("mail2", &backupd2.addr().to_string(), "mail2.secret")
        .tls_pin(pin)
        .raidset("mail1-drives", "mail1", &["default", "p2"])
        .raidset("mail2-drives", "mail2", &["default", "p2"])
        .write_with_secrets(&s.config, &s.backupd.secret_text)
        .unwrap();
    s.run(2);
    let root = s.root();
    let held = store_messages(&root, "b00000");

    // Moved as an administrator may: restored into the new server as it was (Cyrus's own
    // replication protocol), then deleted from the old one.
    s.restore_into_cyrus("b00000", &cyrus2);
    s.cyrus.delete_user("b00000").unwrap();

    let out = s.refresh();
    assert!(
        out.contains("mail2: 1 users listed, 0 new, 1 moved"),
        "{out}"
    );
    let row = s.db().user("b00000").unwrap().unwrap();
    assert_eq!(
        (row.server.as_str(), row.raidset.as_deref(), row.vanished_at),
        ("mail2", Some("mail2-drives"), None),
        "{row:?}"
    );
    let opened = (s.opened(), backupd2.served.counts().2);
    let (messages, bytes) = s.run(2);
    eprintln!("after the move to another server: {messages} messages, {bytes} bytes fetched");
    assert_eq!(messages, 0);
    assert_eq!(
        (s.opened(), backupd2.served.counts().2),
        opened,
        "no message file opened on either server"
    );
    assert!(
        backupd2.served.counts().0 > 0,
        "the user was listed on the new server"
    );
    assert_eq!(store_messages(&root, "b00000"), held);
    assert_eq!(imap_messages(&cyrus2, "b00000"), held);
}
