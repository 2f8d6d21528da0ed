//! Damage healed, end to end: a real Cyrus (populate.py), a real backupd, the
//! `backup-server` binary with 4 KiB chunks (a message or two per chunk).
//!
//! * Bytes flipped inside one stored message's chunk: `verify` names the damaged chunk and
//!   marks its messages (exit 1); a whole-user `restore` restores everything else, names
//!   each damaged message (folder, UID) and exits 2; the next `run` fetches them again;
//!   `repair` drops the damaged bytes (nothing lost: good copies exist); `verify` is clean
//!   and `ls` equals IMAP.
//! * The data file cut short inside a chunk: `run` fails for that user and its error says
//!   `backup-server repair --user U`; a whole-user `restore` restores what the file still
//!   holds and names the rest (exit 2); `repair` keeps every chunk before the cut, names the
//!   lost messages and exits 2; the next `run` fetches them again; `verify` is clean and
//!   `ls` equals IMAP.
//! * The index alone damaged (a current record deleted, another's flags changed): `ls` no
//!   longer equals IMAP; `verify` names both by folder and UID (exit 1); `repair` rebuilds
//!   the index from the data file; the next `run` is clean, `verify` is clean and `ls`
//!   equals IMAP.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command, Output};

use backup_server::ls::{ls, Listing};
use backup_server::store::StoreReader;
use formats::Guid;
use tests::readers::imap_date;
use tests::rig::{backup_server_bin, run_command, text, write_config, Backupd};
use tests::{CyrusInstance, Truth};

fn cmd(bin: &Path, config: &Path, args: &[&str]) -> Output {
    Command::new(bin)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn run_user(bin: &Path, config: &Path, user: &str) -> Output {
    run_command(bin, config)
        .args(["--user", user])
        .output()
        .unwrap()
}

/// One message line: UID, sorted flags, internal date, size, GUID hex.
type Line = (u32, Vec<String>, i64, u64, String);

/// Every mismatch between `ls` of `user` and what IMAP said.
fn ls_vs_imap(root: &Path, truth: &Truth, user: &str) -> Vec<String> {
    let mut bad = Vec::new();
    let folders = match ls(root, user, None, None).unwrap() {
        Listing::Folders { folders, .. } => folders,
        other => panic!("{other:?}"),
    };
    let have: BTreeSet<String> = folders.iter().map(|f| f.unique_id.clone()).collect();
    let want: BTreeSet<String> = truth
        .folders_of(user)
        .map(|(_, f)| f.uniqueid.clone().unwrap())
        .collect();
    if have != want {
        bad.push(format!("{user}: folders {have:?}, IMAP {want:?}"));
    }
    for (imap_name, ft) in truth.folders_of(user) {
        let id = ft.uniqueid.as_deref().unwrap();
        let Some(f) = folders.iter().find(|f| f.unique_id == id) else {
            continue;
        };
        let got: Vec<Line> = match ls(root, user, Some(&f.name), None).unwrap() {
            Listing::Messages { messages, .. } => messages
                .into_iter()
                .map(|m| {
                    let mut flags = m.flags;
                    flags.sort();
                    (m.uid, flags, m.internal_date.secs, m.size, m.guid.to_hex())
                })
                .collect(),
            other => panic!("{other:?}"),
        };
        let want: Vec<Line> = ft
            .messages
            .iter()
            .map(|m| {
                let mut flags = m.flags.clone();
                flags.sort();
                (
                    m.uid,
                    flags,
                    imap_date(&m.internaldate).unwrap(),
                    m.size,
                    m.sha1.clone(),
                )
            })
            .collect();
        if got != want {
            bad.push(format!("{user}/{imap_name}: ls\n{got:?}\nIMAP\n{want:?}"));
        }
    }
    bad
}

/// The data file, the chunk (offset, compressed length) holding the INBOX message of UID
/// `uid`, and every (UID, GUID) of INBOX whose message is in that chunk.
fn chunk_of_uid(
    root: &Path,
    user: &str,
    uid: u32,
) -> (std::path::PathBuf, u64, u64, BTreeSet<(u32, Guid)>) {
    let r = StoreReader::open(root, user).unwrap();
    let c = r.catalog();
    let inbox = c.folder_at("INBOX", None).unwrap().unwrap();
    let mut all = Vec::new();
    c.messages_at(&inbox.unique_id, None, false, |m| {
        all.push((m.uid, m.guid));
        Ok(())
    })
    .unwrap();
    let chunk_of = |g: &Guid| c.message(g).unwrap().unwrap().entry.chunk_offset;
    let target = all.iter().find(|(u, _)| *u == uid).unwrap().1;
    let off = chunk_of(&target);
    let conn = rusqlite::Connection::open_with_flags(
        c.index_path(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let len: i64 = conn
        .query_row(
            "SELECT compressed_len FROM chunks WHERE offset = ?1",
            [off as i64],
            |r| r.get(0),
        )
        .unwrap();
    let in_chunk = all
        .iter()
        .filter(|(_, g)| chunk_of(g) == off)
        .copied()
        .collect();
    (c.data_path().to_path_buf(), off, len as u64, in_chunk)
}

/// The user's INBOX UIDs, as IMAP lists them.
fn inbox_uids(truth: &Truth, user: &str) -> Vec<u32> {
    truth
        .folder(user, "INBOX")
        .unwrap()
        .messages
        .iter()
        .map(|m| m.uid)
        .collect()
}

#[test]
fn damaged_and_truncated_stores_heal() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    cyrus.populate().expect("populate.py");
    let truth = cyrus.truth().expect("imap_truth.py");
    let users: Vec<String> = truth
        .users()
        .into_iter()
        .filter(|u| inbox_uids(&truth, u).len() >= 3)
        .map(str::to_owned)
        .collect();
    assert!(users.len() >= 2, "{users:?}");
    let (flipped, cut) = (&users[0], &users[1]);

    let backupd = Backupd::start(&cyrus, "heal-e2e-secret-0123456789");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), backupd.addr(), &backupd.secret_text, 2, 4);
    // 4 KiB chunks: damage to one chunk takes a message or two, not the whole store.
    let toml = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("chunk_size_cap = 4096\n{toml}")).unwrap();
    let root = dir.path().join("store");
    let bin = backup_server_bin();

    let o = run_command(&bin, &config).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    // ---- bytes flipped inside one message's chunk.
    let uids = inbox_uids(&truth, flipped);
    let (data, off, len, hit) = chunk_of_uid(&root, flipped, uids[uids.len() / 2]);
    let mut b = std::fs::read(&data).unwrap();
    for i in 0..8 {
        b[(off + len / 2) as usize + i] ^= 0x5a;
    }
    std::fs::write(&data, b).unwrap();

    let o = cmd(&bin, &config, &["verify", "--user", flipped]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains(&format!("chunk at {off} is damaged")), "{out}");
    assert!(
        out.contains(&format!("{} damaged messages marked", hit.len())),
        "{out}"
    );

    // A whole-user restore between damage and heal: the rest restored, each damaged one
    // named by folder and UID, exit 2.
    let md = dir.path().join("restored");
    let o = cmd(
        &bin,
        &config,
        &[
            "restore",
            "--user",
            flipped,
            "--to",
            &format!("maildir:{}", md.display()),
        ],
    );
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    for (uid, g) in &hit {
        assert!(
            out.contains(&format!(
                "folder \"INBOX\" UID {uid}: message {} is damaged",
                g.to_hex()
            )),
            "{out}"
        );
    }
    let total: usize = truth
        .folders_of(flipped)
        .map(|(_, f)| f.messages.len())
        .sum();
    assert!(
        out.contains(&format!("restored {} messages", total - hit.len())),
        "{out}"
    );
    let restored_inbox = std::fs::read_dir(md.join("cur")).unwrap().count();
    assert_eq!(restored_inbox, uids.len() - hit.len());

    // The next run fetches them again.
    let o = run_user(&bin, &config, flipped);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    {
        let r = StoreReader::open(&root, flipped).unwrap();
        assert!(r.catalog().damaged().unwrap().is_empty());
        for (_, g) in &hit {
            assert!(r.catalog().holds_message(g).unwrap());
        }
    }
    // The damaged bytes stay until a repair (or a compaction): verify still sees them.
    let o = cmd(&bin, &config, &["verify", "--user", flipped]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = cmd(&bin, &config, &["repair", "--user", flipped]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("0 messages lost"), "{out}");
    let o = cmd(&bin, &config, &["verify", "--user", flipped]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(ls_vs_imap(&root, &truth, flipped), Vec::<String>::new());

    // ---- the data file cut short inside a chunk.
    let uids = inbox_uids(&truth, cut);
    let (data, off, len, _) = chunk_of_uid(&root, cut, uids[uids.len() / 2]);
    let f = std::fs::OpenOptions::new().write(true).open(&data).unwrap();
    f.set_len(off + len / 2).unwrap();
    drop(f);
    // The only user asked for failed: the run failed (exit 1), and says the way out.
    let o = run_user(&bin, &config, cut);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!("backup-server repair --user {cut}")),
        "{out}"
    );
    // A whole-user restore before the repair: what the file still holds, the rest named.
    let md = dir.path().join("restored-cut");
    let o = cmd(
        &bin,
        &config,
        &[
            "restore",
            "--user",
            cut,
            "--to",
            &format!("maildir:{}", md.display()),
        ],
    );
    let restore_out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{restore_out}");
    let damaged_in_restore = restore_out
        .lines()
        .filter(|l| l.starts_with("note: folder ") && l.contains(" is damaged ("))
        .count();
    assert!(damaged_in_restore >= 1, "{restore_out}");
    let o = cmd(&bin, &config, &["repair", "--user", cut]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(out.contains("lost: folder "), "{out}");
    let lost = out
        .lines()
        .filter(|l| l.contains(": lost: folder "))
        .count();
    // The restore could not read exactly what the repair found lost.
    assert_eq!(lost, damaged_in_restore, "{restore_out}\n{out}");
    let o = run_user(&bin, &config, cut);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = cmd(&bin, &config, &["verify", "--user", cut]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(ls_vs_imap(&root, &truth, cut), Vec::<String>::new());
    eprintln!("{lost} messages lost by the cut, fetched again");

    // ---- the index alone damaged: a current record deleted, another's flags changed.
    let user = flipped;
    let uids = inbox_uids(&truth, user);
    let (gone, reflagged) = (uids[0], uids[uids.len() - 1]);
    let index = StoreReader::open(&root, user)
        .unwrap()
        .catalog()
        .index_path()
        .to_path_buf();
    {
        let c = rusqlite::Connection::open(&index).unwrap();
        // The folder's key in the index (schema version 3: `folders`).
        let inbox: i64 = c
            .query_row(
                "SELECT folder_key FROM names WHERE folder = 'INBOX' ORDER BY time DESC LIMIT 1",
                [],
                |r| r.get(0),
            )
            .unwrap();
        let n = c
            .execute(
                "DELETE FROM records WHERE folder_key = ?1 AND uid = ?2 AND valid_to IS NULL",
                rusqlite::params![inbox, gone],
            )
            .unwrap();
        assert_eq!(n, 1);
        let n = c
            .execute(
                "UPDATE records SET flags = flags || ' \\Flagged-by-damage'
                 WHERE folder_key = ?1 AND uid = ?2 AND valid_to IS NULL",
                rusqlite::params![inbox, reflagged],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    assert_ne!(ls_vs_imap(&root, &truth, user), Vec::<String>::new());
    let o = cmd(&bin, &config, &["verify", "--user", user]);
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("\"INBOX\""), "{out}");
    for uid in [gone, reflagged] {
        assert!(out.contains(&format!("UID {uid}")), "UID {uid}: {out}");
    }
    assert!(
        out.contains(&format!("backup-server repair --user {user}")),
        "{out}"
    );
    let o = cmd(&bin, &config, &["repair", "--user", user]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = run_user(&bin, &config, user);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let o = cmd(&bin, &config, &["verify", "--user", user]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(ls_vs_imap(&root, &truth, user), Vec::<String>::new());
}
