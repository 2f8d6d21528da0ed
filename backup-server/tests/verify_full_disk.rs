//! Read-only operations on a full disk: a store on a small tmpfs (mounted by the test: CI
//! runs as root), filled to the last byte after a writer closed the store (so SQLite has
//! no `-shm` to use): `ls`, `restore` (to a target on another file system) and `verify`
//! (both levels) answer exactly as before the disk filled. Then the two cases where the
//! index cannot be read without writing are refused, each saying why: a writer holding the
//! store, and a WAL holding commits not yet in the index file.

mod store_common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use backup_server::store::{MessageInfo, RunEnd, Store, StoreOptions, UserDir};
use store_common::*;

const USER: &str = "fay";

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mounting a tmpfs at {} failed: this test needs root (CI runs the suite as root)",
            at.display()
        );
        Tmpfs(at.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes until the file system refuses a single byte; returns the bytes written.
fn fill(dir: &Path) -> u64 {
    let mut f = std::fs::File::create(dir.join("filler")).unwrap();
    let mut total = 0u64;
    let mut block = 1usize << 16;
    let buf = vec![0xa5u8; block];
    while block >= 1 {
        match f.write(&buf[..block]) {
            Ok(0) => block /= 2,
            Ok(n) => total += n as u64,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => block /= 2,
            Err(e) => panic!("filling {}: {e}", dir.display()),
        }
    }
    let e = std::fs::File::create(dir.join("one-more"))
        .and_then(|mut g| g.write_all(b"x").and_then(|()| g.sync_all()))
        .expect_err("the file system still takes a byte");
    assert_eq!(e.raw_os_error(), Some(nix::libc::ENOSPC), "{e}");
    total
}

/// Three runs into INBOX and Work, a rename, expunges, small chunks.
fn build(root: &Path) {
    let clock = TestClock::at(1_800_000_000);
    let mut o = opts(&clock);
    o.chunk_cap = 16 * 1024;
    let mut store = Store::open(root, USER, o).unwrap();
    let mut all = Vec::new();
    for day in 0..3u64 {
        let mut run = store.begin_run().unwrap();
        for i in 0..8u64 {
            let m = message(day * 100 + i, 1500 + 200 * i as usize);
            run.add_message(guid(&m), m.len() as u64, &m[..], MessageInfo::default())
                .unwrap();
            all.push(m);
        }
        let recs: Vec<Rec> = all
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let r = Rec::new(i as u32 + 1, m);
                if i < 3 && day == 2 {
                    r.expunged()
                } else if i % 2 == 0 {
                    r.seen()
                } else {
                    r
                }
            })
            .collect();
        run.add_folder_snapshot(Snap::new("u-in", "INBOX", 3, &recs, clock.secs()).as_snapshot())
            .unwrap();
        let work: Vec<Rec> = all
            .iter()
            .take(4)
            .enumerate()
            .map(|(i, m)| Rec::new(i as u32 + 1, m).flagged())
            .collect();
        let name = if day < 2 { "INBOX/Work" } else { "INBOX/Done" };
        run.add_folder_snapshot(Snap::new("u-work", name, 4, &work, clock.secs()).as_snapshot())
            .unwrap();
        run.commit(RunEnd::Complete).unwrap();
        clock.advance(86_400);
    }
}

struct Bin {
    cfg: PathBuf,
}

impl Bin {
    fn run(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let o = Command::new(env!("CARGO_BIN_EXE_backup-server"))
            .arg("--config")
            .arg(&self.cfg)
            .args(args)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    }

    /// What ls, restore and verify answer, each with its exit status. The restore goes to
    /// `target` (another file system), read back as (path, SHA-1) pairs.
    fn answers(&self, target: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for args in [
            &["ls", "--user", USER][..],
            &["ls", "--user", USER, "--folder", "INBOX"],
            &[
                "ls",
                "--user",
                USER,
                "--folder",
                "INBOX/Done",
                "--at",
                "1800090000",
            ],
            &["verify", "--user", USER],
            &["verify", "--quick", "--user", USER],
        ] {
            let (code, stdout, stderr) = self.run(args);
            // The one line saying how the index was read is not an answer.
            let stdout: String = stdout
                .lines()
                .filter(|l| !l.contains("read without SQLite's shared memory"))
                .map(|l| format!("{l}\n"))
                .collect();
            out.push(format!("{args:?}: {code:?}\n{stdout}{stderr}"));
        }
        let _ = std::fs::remove_dir_all(target);
        let to = format!("eml:{}", target.display());
        let (code, stdout, stderr) = self.run(&["restore", "--user", USER, "--to", &to]);
        out.push(format!("restore: {code:?}\n{stdout}{stderr}"));
        let mut files = Vec::new();
        walk(target, target, &mut files);
        files.sort();
        out.push(files.join("\n"));
        out
    }
}

fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            walk(base, &p, out);
        } else {
            let bytes = std::fs::read(&p).unwrap();
            out.push(format!(
                "{} {}",
                p.strip_prefix(base).unwrap().display(),
                formats::Guid::of(&bytes).to_hex()
            ));
        }
    }
}

fn with_suffix(p: &Path, s: &str) -> PathBuf {
    let mut o = p.as_os_str().to_owned();
    o.push(s);
    PathBuf::from(o)
}

#[test]
fn ls_restore_and_verify_answer_the_same_on_a_full_disk() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    let _fs = Tmpfs::mount(&root, "2m");
    build(&root);
    let cfg = dir.path().join("backup-server.toml");
    let mut config = testkit::config::ServerConfig::minimal("127.0.0.1:9");
    config.store_root = root.clone();
    config
        .write_with_secrets(&cfg, "full-disk-test-secret-0123456789")
        .unwrap();
    let bin = Bin { cfg };
    let target = dir.path().join("restored");
    let before = bin.answers(&target);
    assert!(
        before[0].starts_with("[\"ls\", \"--user\", \"fay\"]: Some(0)"),
        "{}",
        before[0]
    );
    assert!(before[3].contains("; 0 faults"), "{}", before[3]);
    assert!(before[5].starts_with("restore: Some(0)"), "{}", before[5]);
    assert!(before[6].lines().count() > 20, "{}", before[6]);

    // A writer's open and close, as after a nightly run: the WAL checkpointed, -wal and
    // -shm removed. Then the disk fills.
    drop(Store::open_existing(&root, USER, StoreOptions::default()).unwrap());
    let index = UserDir::new(&root, USER).unwrap().index_path();
    assert!(!with_suffix(&index, "-shm").exists());
    assert!(!with_suffix(&index, "-wal").exists());
    let filled = fill(&root);
    assert!(filled > 0);

    let after = bin.answers(&target);
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(b, a, "an answer changed when the disk filled");
    }
    let (code, stdout, _) = bin.run(&["verify", "--user", USER]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains("user fay: read without SQLite's shared memory"),
        "{stdout}"
    );
    // Nothing was written: any -shm or -wal SQLite made (it tries before the immutable
    // read) takes no space (at most a length set, sparse).
    for s in ["-shm", "-wal"] {
        let p = with_suffix(&index, s);
        let blocks = std::fs::metadata(&p).map_or(0, |m| {
            use std::os::unix::fs::MetadataExt;
            m.blocks()
        });
        assert_eq!(blocks, 0, "{} takes space", p.display());
    }

    // A writer holding the store: the index may change, so it is not read as it stands.
    {
        let _held = UserDir::new(&root, USER).unwrap().lock().unwrap();
        let (code, stdout, stderr) = bin.run(&["ls", "--user", USER]);
        assert_ne!(code, Some(0), "{stdout}");
        assert!(
            stderr.contains("a writer holds the store")
                && stderr.contains("is its file system full?"),
            "{stderr}"
        );
    }

    // A WAL holding commits not yet in the index file (a writer killed before its last
    // checkpoint): refused, naming the -wal and its length.
    std::fs::remove_file(root.join("filler")).unwrap();
    let wal = with_suffix(&index, "-wal");
    let saved = {
        let c = rusqlite::Connection::open(&index).unwrap();
        c.execute_batch("PRAGMA wal_autocheckpoint = 0; UPDATE store SET user = user || 'x'; UPDATE store SET user = substr(user, 1, length(user) - 1);")
            .unwrap();
        let saved = std::fs::read(&wal).unwrap();
        drop(c);
        saved
    };
    assert!(!saved.is_empty());
    std::fs::write(&wal, &saved).unwrap();
    let _ = std::fs::remove_file(with_suffix(&index, "-shm"));
    fill(&root);
    let (code, _, stderr) = bin.run(&[
        "restore",
        "--user",
        USER,
        "--to",
        &format!("eml:{}", dir.path().join("r2").display()),
    ]);
    assert_ne!(code, Some(0));
    assert!(
        stderr.contains(&format!("{} holds {} bytes", wal.display(), saved.len())),
        "{stderr}"
    );
    let (code, stdout, _) = bin.run(&["verify", "--user", USER]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("free space on the store's file system"),
        "{stdout}"
    );
}
