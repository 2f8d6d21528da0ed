//! Restores never leave their target: Maildir, mbox and .eml restores into targets with
//! symlinks planted at every level (the target itself, a folder directory, `cur`/`new`/
//! `tmp`, `maildirfolder`, `dovecot-keywords`, a message's temporary and final names, an
//! mbox file, an .eml folder and file), dangling or pointing at a canary tree outside. Each
//! restore fails naming the symlink, and the canary tree (every path, type, mode, link
//! target and byte, hashed before and after) is unchanged. Then two folders whose safe
//! names collide (`INBOX/Work` and `Work`) are restored distinct, with a note, and what a
//! restore creates is 0700/0600 under umask 000.

mod store_common;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use backup_server::restore::{restore, restore_as, Note, Owner, RestoreError, Selection, Target};
use backup_server::store::Store;
use formats::Guid;
use store_common::*;
use testkit::python::read_maildir;

const USER: &str = "amy";
const T1: i64 = 1_800_000_000;

struct Built {
    /// INBOX's UID 1: its Maildir name without the flags (`<secs>.R1G<guid16>...`).
    inbox1_base: String,
}

/// INBOX (UID 1 plain, UID 2 with a keyword), Sub (UID 1), and two folders whose safe names
/// collide: `INBOX/Work` and `Work` (UID 1 each).
fn build(root: &Path) -> Built {
    let clock = TestClock::at(T1);
    let mut store = Store::open(root, USER, opts(&clock)).unwrap();
    let m: Vec<Vec<u8>> = (1..=5)
        .map(|s| message(s, 2000 + 100 * s as usize))
        .collect();
    let inbox = [Rec::new(1, &m[0]), Rec::new(2, &m[1]).keyword()];
    let sub = [Rec::new(1, &m[2]).seen()];
    let w1 = [Rec::new(1, &m[3])];
    let w2 = [Rec::new(1, &m[4])];
    let snaps = [
        Snap::new("u-inbox", "INBOX", 7, &inbox, T1),
        Snap::new("u-sub", "Sub", 8, &sub, T1),
        Snap::new("u-iw", "INBOX/Work", 9, &w1, T1),
        Snap::new("u-w", "Work", 10, &w2, T1),
    ];
    commit_run(&mut store, &m, &snaps.iter().collect::<Vec<_>>());
    let r = &inbox[0];
    Built {
        inbox1_base: format!(
            "{}.R1G{}.mailbackup,S={}",
            r.internaldate,
            &r.guid.to_hex()[..16],
            r.size
        ),
    }
}

/// Every path under `dir` with its type, mode, link target and bytes, hashed.
fn tree_hash(dir: &Path) -> (Guid, usize) {
    fn walk(base: &Path, p: &Path, out: &mut Vec<u8>, n: &mut usize) {
        let m = std::fs::symlink_metadata(p).unwrap();
        *n += 1;
        out.extend_from_slice(p.strip_prefix(base).unwrap().as_os_str().as_encoded_bytes());
        out.extend_from_slice(format!("\0{:o}\0", m.permissions().mode()).as_bytes());
        if m.file_type().is_symlink() {
            out.extend_from_slice(
                std::fs::read_link(p)
                    .unwrap()
                    .as_os_str()
                    .as_encoded_bytes(),
            );
        } else if m.is_dir() {
            let mut names: Vec<PathBuf> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            names.sort();
            for c in names {
                walk(base, &c, out, n);
            }
        } else {
            out.extend_from_slice(&std::fs::read(p).unwrap());
        }
        out.push(0);
    }
    let (mut out, mut n) = (Vec::new(), 0);
    walk(dir, dir, &mut out, &mut n);
    (Guid::of(&out), n)
}

/// A canary tree: a directory with files and a subdirectory, and a file to aim at.
fn canary(dir: &Path) -> PathBuf {
    let c = dir.join("canary");
    std::fs::create_dir_all(c.join("sub/cur")).unwrap();
    std::fs::write(c.join("victim"), b"do not touch\n").unwrap();
    std::fs::write(c.join("sub/b.txt"), b"b\n").unwrap();
    std::fs::set_permissions(c.join("victim"), std::fs::Permissions::from_mode(0o644)).unwrap();
    c
}

/// One planted symlink: where (relative to the target), and what it points at (relative to
/// the canary; `None`: dangling, into the canary tree).
struct Plant {
    /// Directories to make in the target first.
    dirs: &'static [&'static str],
    at: String,
    to: Option<&'static str>,
}

fn plant(target: &Path, canary: &Path, p: &Plant) -> PathBuf {
    for d in p.dirs {
        std::fs::create_dir_all(target.join(d)).unwrap();
    }
    let link = target.join(&p.at);
    let to = match p.to {
        Some(rel) => canary.join(rel),
        None => canary.join("missing/nothing"),
    };
    symlink(to, &link).unwrap();
    link
}

/// Restores `user` into `to(target)` with the symlink planted: the restore fails naming
/// the symlink, and the canary tree is unchanged.
fn refused(root: &Path, kind: &str, sel: &Selection, p: Plant) {
    let work = tempfile::tempdir().unwrap();
    let canary = canary(work.path());
    let before = tree_hash(&canary);
    let target = work.path().join("target");
    let (link, spec) = if p.at.is_empty() {
        // The target itself.
        let to = p.to.map_or(canary.join("missing"), |r| canary.join(r));
        symlink(&to, &target).unwrap();
        (target.clone(), target.clone())
    } else {
        std::fs::create_dir_all(&target).unwrap();
        let link = plant(&target, &canary, &p);
        (link, target.clone())
    };
    let spec = format!("{kind}:{}", spec.display());
    let to: Target = spec.parse().unwrap();
    match restore(root, USER, sel, &to) {
        Err(RestoreError::Symlink { path }) => {
            assert_eq!(path, link, "{spec} {}", p.at);
            let text = RestoreError::Symlink { path }.to_string();
            assert!(
                text.contains("is a symbolic link: a restore never writes through one"),
                "{text}"
            );
        }
        other => panic!("{spec} with a symlink at {:?}: {other:?}", p.at),
    }
    assert_eq!(
        tree_hash(&canary),
        before,
        "{spec}: the canary tree changed ({})",
        p.at
    );
}

fn at(s: &str) -> String {
    s.to_owned()
}

#[test]
fn maildir_restores_refuse_symlinks_at_every_level() {
    let root = tempfile::tempdir().unwrap();
    let b = build(root.path());
    let all = Selection::default();
    let plants = [
        Plant {
            dirs: &[],
            at: at(""),
            to: Some("sub"),
        },
        Plant {
            dirs: &[],
            at: at(""),
            to: None,
        },
        Plant {
            dirs: &[],
            at: at(".Sub"),
            to: Some("sub"),
        },
        Plant {
            dirs: &[],
            at: at(".Sub"),
            to: None,
        },
        Plant {
            dirs: &[],
            at: at("cur"),
            to: Some("sub/cur"),
        },
        Plant {
            dirs: &[],
            at: at("new"),
            to: None,
        },
        Plant {
            dirs: &[],
            at: at("tmp"),
            to: Some("sub"),
        },
        Plant {
            dirs: &[".Sub/cur", ".Sub/new", ".Sub/tmp"],
            at: at(".Sub/maildirfolder"),
            to: Some("victim"),
        },
        Plant {
            dirs: &[".Sub"],
            at: at(".Sub/maildirfolder"),
            to: None,
        },
        Plant {
            dirs: &[],
            at: at("dovecot-keywords"),
            to: Some("victim"),
        },
        Plant {
            dirs: &["tmp"],
            at: format!("tmp/{}", b.inbox1_base),
            to: Some("victim"),
        },
        Plant {
            dirs: &["cur"],
            at: format!("cur/{}:2,", b.inbox1_base),
            to: Some("victim"),
        },
        Plant {
            dirs: &["cur"],
            at: format!("cur/{}:2,", b.inbox1_base),
            to: None,
        },
    ];
    for p in plants {
        refused(root.path(), "maildir", &all, p);
    }
}

#[test]
fn mbox_and_eml_restores_refuse_symlinks() {
    let root = tempfile::tempdir().unwrap();
    build(root.path());
    let all = Selection::default();
    let inbox = Selection {
        folder: Some("INBOX".into()),
        ..Selection::default()
    };
    // One folder: the mbox file itself.
    refused(
        root.path(),
        "mbox",
        &inbox,
        Plant {
            dirs: &[],
            at: at(""),
            to: Some("victim"),
        },
    );
    refused(
        root.path(),
        "mbox",
        &inbox,
        Plant {
            dirs: &[],
            at: at(""),
            to: None,
        },
    );
    // Several: the directory, and a folder's file in it.
    refused(
        root.path(),
        "mbox",
        &all,
        Plant {
            dirs: &[],
            at: at(""),
            to: Some("sub"),
        },
    );
    refused(
        root.path(),
        "mbox",
        &all,
        Plant {
            dirs: &[],
            at: at("INBOX.mbox"),
            to: Some("victim"),
        },
    );
    refused(
        root.path(),
        "mbox",
        &all,
        Plant {
            dirs: &[],
            at: at("Sub.mbox"),
            to: None,
        },
    );
    // .eml: the directory, a folder, a message's final and temporary names.
    refused(
        root.path(),
        "eml",
        &all,
        Plant {
            dirs: &[],
            at: at(""),
            to: Some("sub"),
        },
    );
    refused(
        root.path(),
        "eml",
        &all,
        Plant {
            dirs: &[],
            at: at("INBOX"),
            to: Some("sub"),
        },
    );
    refused(
        root.path(),
        "eml",
        &all,
        Plant {
            dirs: &["INBOX"],
            at: at("INBOX/1.eml"),
            to: Some("victim"),
        },
    );
    refused(
        root.path(),
        "eml",
        &all,
        Plant {
            dirs: &["INBOX"],
            at: at("INBOX/.2.eml.tmp"),
            to: None,
        },
    );
}

#[test]
fn colliding_folder_names_are_restored_distinct_and_noted() {
    let root = tempfile::tempdir().unwrap();
    build(root.path());
    let out = tempfile::tempdir().unwrap();
    let t = out.path().join("Maildir");
    let rep = restore(
        root.path(),
        USER,
        &Selection::default(),
        &Target::Maildir(t.clone()),
    )
    .unwrap();
    assert_eq!((rep.folders, rep.messages), (4, 5), "{rep:?}");
    let renamed: Vec<&Note> = rep
        .notes
        .iter()
        .filter(|n| matches!(n, Note::Renamed { .. }))
        .collect();
    assert_eq!(renamed.len(), 1, "{:?}", rep.notes);
    let Note::Renamed {
        folder,
        other,
        shared,
        now,
    } = renamed[0]
    else {
        unreachable!()
    };
    assert_eq!(
        (folder.as_str(), other.as_str(), shared.as_str()),
        ("Work", "INBOX/Work", "Work")
    );
    assert!(now.starts_with("Work~"), "{now}");
    // Both restored, one message each, in distinct folders.
    let rows = read_maildir(&t);
    let mut folders: Vec<String> = rows.iter().map(|r| r.folder.clone()).collect();
    folders.sort();
    assert_eq!(folders, ["INBOX", "INBOX", "Sub", "Work", now.as_str()]);
    // Again into mbox and .eml: no name taken twice, nothing refused.
    for kind in ["mbox", "eml"] {
        let to: Target = format!("{kind}:{}", out.path().join(kind).display())
            .parse()
            .unwrap();
        let rep = restore(root.path(), USER, &Selection::default(), &to).unwrap();
        assert_eq!(rep.messages, 5, "{kind}");
    }
    assert!(out.path().join(format!("mbox/{now}.mbox")).is_file());
    assert!(out.path().join(format!("eml/{now}/1.eml")).is_file());
}

#[test]
fn restored_files_are_private_whatever_the_umask() {
    let root = tempfile::tempdir().unwrap();
    build(root.path());
    // This test's own process (nextest runs each test in one).
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    let out = tempfile::tempdir().unwrap();
    for kind in ["maildir", "mbox", "eml"] {
        let to: Target = format!("{kind}:{}", out.path().join(kind).join("x").display())
            .parse()
            .unwrap();
        restore(root.path(), USER, &Selection::default(), &to).unwrap();
    }
    let mut n = 0;
    let mut stack = vec![out.path().to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let mode = m.permissions().mode() & 0o7777;
        if p != out.path() {
            n += 1;
            assert_eq!(
                mode,
                if m.is_dir() { 0o700 } else { 0o600 },
                "{}",
                p.display()
            );
        }
        if m.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(n > 20, "{n}");
}

#[test]
fn restore_owner_owns_what_it_creates() {
    use std::os::unix::fs::MetadataExt;
    let root = tempfile::tempdir().unwrap();
    build(root.path());
    // As root (CI, and the administrator restoring into a home): another user. Otherwise
    // only the caller itself can be given away to.
    let name = if nix::unistd::geteuid().is_root() {
        "nobody".to_owned()
    } else {
        nix::unistd::User::from_uid(nix::unistd::geteuid())
            .unwrap()
            .unwrap()
            .name
    };
    let owner = Owner::lookup(&name).unwrap();
    let out = tempfile::tempdir().unwrap();
    let t = out.path().join("home/Maildir");
    restore_as(
        root.path(),
        USER,
        &Selection::default(),
        &Target::Maildir(t.clone()),
        Some(owner.clone()),
    )
    .unwrap();
    let mut n = 0;
    let mut stack = vec![t.clone()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert_eq!(
            (m.uid(), m.gid()),
            (owner.uid, owner.gid),
            "{}",
            p.display()
        );
        n += 1;
        if m.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(n > 15, "{n}");
    assert!(matches!(
        Owner::lookup("no-such-user-mailbackup"),
        Err(RestoreError::NoSuchOwner { .. })
    ));
    let imap: Target = "imap://a@127.0.0.1:1/".parse().unwrap();
    assert!(matches!(
        restore_as(root.path(), USER, &Selection::default(), &imap, Some(owner)),
        Err(RestoreError::OwnerNotLocal)
    ));
}
