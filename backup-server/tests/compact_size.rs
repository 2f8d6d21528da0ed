//! A store over the threshold shrinks to about its live size; one under it is untouched.

mod compact_common;
mod store_common;

use backup_server::compact::{compact_store, compact_user, Decision};
use backup_server::store::{MessageInfo, RunEnd, Store};
use compact_common::*;
use store_common::*;

const T0: i64 = 1_700_000_000;

/// Day 0: 40 messages of about 20 kB in INBOX; day 1: only the first `keep` remain.
fn build(root: &std::path::Path, user: &str, keep: usize) -> Store {
    let clock = TestClock::at(T0);
    let m: Vec<Vec<u8>> = (0..40)
        .map(|i| message(i + 100, 20_000 + i as usize))
        .collect();
    let mut store = Store::open(root, user, opts(&clock)).unwrap();
    let mut run = store.begin_run().unwrap();
    for x in &m {
        run.add_message(guid(x), x.len() as u64, &x[..], MessageInfo::default())
            .unwrap();
    }
    let recs: Vec<Rec> = m
        .iter()
        .enumerate()
        .map(|(i, x)| Rec::new(i as u32 + 1, x))
        .collect();
    run.add_folder_snapshot(Snap::new("u-inbox", "user.x", 1, &recs, T0 - 1).as_snapshot())
        .unwrap();
    run.commit(RunEnd::Complete).unwrap();
    clock.set(T0 + DAY);
    let mut run = store.begin_run().unwrap();
    run.add_folder_snapshot(
        Snap::new("u-inbox", "user.x", 1, &recs[..keep], T0 + DAY - 1).as_snapshot(),
    )
    .unwrap();
    run.commit(RunEnd::Complete).unwrap();
    store
}

#[test]
fn over_the_threshold_shrinks_to_the_live_size() {
    let root = tempfile::tempdir().unwrap();
    let store = build(root.path(), "big", 10);
    let now = T0 + DAY + RETENTION + 1;
    let before_view = restorable(store.catalog(), &[now]);
    let mut o = copts(now, 0.3, 0);
    o.dry_run = true;
    let (store, dry) = compact_store(store, &o).unwrap();
    assert_eq!(dry.decision, Decision::Compact);
    assert!(dry.after.is_none());
    let name = store.catalog().data_file_name().to_owned();
    let (store, r) = compact_store(store, &copts(now, 0.3, 0)).unwrap();
    assert_eq!(r.decision, Decision::Compact);
    assert_ne!(store.catalog().data_file_name(), name);
    let b = &r.before;
    let a = r.after.as_ref().unwrap();
    let live = b.total_bytes - b.dirty_bytes;
    eprintln!(
        "before: total {} B uncompressed, dirty {} B (ratio {:.3}), file {} B; \
         after: total {} B (live was {live} B), dirty {} B, file {} B",
        b.total_bytes,
        b.dirty_bytes,
        b.dirty_ratio(),
        b.file_len,
        a.total_bytes,
        a.dirty_bytes,
        a.file_len
    );
    assert!(b.dirty_ratio() > 0.6, "{b:?}");
    assert_eq!(a.dirty_bytes, 0);
    // Only the end-of-chunk padding differs from the live entries' spans.
    assert!(
        a.total_bytes >= live && a.total_bytes <= live + live / 20,
        "{a:?}"
    );
    assert!(a.file_len * 2 < b.file_len);
    assert_eq!(restorable(store.catalog(), &[now]), before_view);
    assert_eq!(
        store.check(true).unwrap(),
        Vec::<backup_server::store::IndexFault>::new()
    );
    assert_eq!(store.dir().data_files().unwrap().len(), 1);
}

#[test]
fn under_the_threshold_is_untouched() {
    let root = tempfile::tempdir().unwrap();
    let store = build(root.path(), "small", 38);
    let now = T0 + DAY + RETENTION + 1;
    let index = store.dir().index_path();
    let data = store.catalog().data_path().to_path_buf();
    let bytes = std::fs::read(&data).unwrap();
    let tables = dump_tables(&index);
    let (store, r) = compact_store(store, &copts(now, 0.3, 0)).unwrap();
    assert!(r.before.dirty_bytes > 0);
    assert_eq!(r.decision, Decision::UnderThreshold, "{:?}", r.before);
    // Over the ratio but under the byte minimum: untouched too.
    let (store, r2) = compact_store(store, &copts(now, 0.01, 1 << 30)).unwrap();
    assert_eq!(r2.decision, Decision::UnderMinimum);
    assert_eq!(store.catalog().data_path(), data);
    drop(store);
    assert_eq!(std::fs::read(&data).unwrap(), bytes);
    assert_eq!(dump_tables(&index), tables);
}

#[test]
fn the_command_line_reports_and_compacts() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("store");
    drop(build(&root, "big", 10).close().unwrap());
    drop(build(&root, "small", 38).close().unwrap());
    let config = dir.path().join("b.toml");
    // compact needs only the store root and the retention; the rest is the minimum a
    // config holds.
    testkit::config::ServerConfig::minimal("127.0.0.1:1")
        .retention_days(14)
        .write_with_secrets(&config, "compact-test-secret-0123456789")
        .unwrap();
    let now = (T0 + DAY + RETENTION + 1).to_string();
    let cli = |extra: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_backup-server"))
            .arg("--config")
            .arg(&config)
            .args(["compact", "--min-bytes", "0", "--now", &now])
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let dry = cli(&["--dry-run"]);
    eprintln!("{dry}");
    let line = |out: &str, user: &str| {
        out.lines()
            .find(|l| l.starts_with(&format!("{user}\t")))
            .unwrap_or_else(|| panic!("no line for {user} in {out}"))
            .to_owned()
    };
    assert!(
        line(&dry, "big").contains("ratio 0.742\twould compact"),
        "{dry}"
    );
    assert!(line(&dry, "small").ends_with("under threshold"), "{dry}");
    let real = cli(&[]);
    eprintln!("{real}");
    assert!(
        line(&real, "big").contains("\tcompacted\tnow total 232960"),
        "{real}"
    );
    assert!(line(&real, "small").ends_with("under threshold"), "{real}");
    let again = cli(&["--user", "big"]);
    assert!(line(&again, "big").contains("dirty 0\t"), "{again}");
    assert!(line(&again, "big").ends_with("under minimum"), "{again}");
}

#[test]
fn a_running_backup_is_never_compacted() {
    let root = tempfile::tempdir().unwrap();
    let store = build(root.path(), "busy", 10);
    let name = store.catalog().data_file_name().to_owned();
    // The open store holds the user's writer lock, as a backup run does.
    let now = T0 + DAY + RETENTION + 1;
    let r = compact_user(root.path(), "busy", &copts(now, 0.3, 0)).unwrap();
    assert_eq!(r.decision, Decision::Locked);
    assert_eq!(store.dir().data_files().unwrap(), vec![name]);
    drop(store);
    let r = compact_user(root.path(), "busy", &copts(now, 0.3, 0)).unwrap();
    assert_eq!(r.decision, Decision::Compact);
}
