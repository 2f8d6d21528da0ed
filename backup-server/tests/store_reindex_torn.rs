//! Reindex of a data file torn inside a folder snapshot's cyrus.header or cyrus.index (the
//! entries reindex reads the data of). Found by the store model
//! (fuzz/fuzz_targets/store_model.rs): a run killed after writing a snapshot's chunk, the
//! file torn inside it, then `reindex` failed with "reading an entry: ... expected more
//! data ..., found the end of the file" instead of ending at the torn tail, so a store
//! whose index was lost could not be rebuilt at all. Its end must be a torn tail like any
//! other: the partial chunk left out, the whole ones kept.

mod store_common;

use std::io::Write;

use backup_server::store::{MessageInfo, Store, UserDir};
use formats::archive::Tail;
use store_common::*;

#[test]
fn reindex_ends_at_a_tail_torn_inside_a_snapshot() {
    let root = tempfile::tempdir().unwrap();
    let clock = TestClock::at(1_800_000_000);
    let mut o = opts(&clock);
    // Every entry closes the chunk before it: the snapshot's chunk is flushed when the
    // message after it is added.
    o.chunk_cap = 1024;
    let msgs: Vec<Vec<u8>> = (0..4).map(|i| message(i, 900)).collect();
    let inbox = Snap::new(
        "u-inbox",
        "INBOX",
        7,
        &[Rec::new(1, &msgs[0]), Rec::new(2, &msgs[1]).seen()],
        10,
    );
    let mut store = Store::open(root.path(), "kim", o.clone()).unwrap();
    commit_run(&mut store, &msgs[..2], &[&inbox]);
    let data = store.catalog().data_path().to_path_buf();
    let base = std::fs::read(&data).unwrap();

    // A second run, killed after its snapshot of a new folder reached the file: its
    // message, the snapshot, and one more message (which closes the snapshot's chunk).
    clock.advance(60);
    let recs: Vec<Rec> = (1..=40).map(|u| Rec::new(u, &msgs[2]).seen()).collect();
    let work = Snap::new("u-work", "Work", 8, &recs, 20);
    let tail = {
        let mut run = store.begin_run().unwrap();
        let add = |run: &mut backup_server::store::RunWriter<'_>, m: &Vec<u8>| {
            run.add_message(guid(m), m.len() as u64, &m[..], MessageInfo::default())
                .unwrap();
        };
        add(&mut run, &msgs[2]);
        run.add_folder_snapshot(work.as_snapshot()).unwrap();
        add(&mut run, &msgs[3]);
        let now = std::fs::read(&data).unwrap();
        now[base.len()..].to_vec()
    };
    drop(store);
    assert!(tail.len() > 500, "the snapshot's chunk reached the file");

    let dir = UserDir::new(root.path(), "kim").unwrap();
    let mut snapshot_seen = false;
    // Every 11th byte (each reindex syncs files: every byte would take minutes), and the
    // whole tail.
    let cuts = (0..tail.len()).step_by(11).chain([tail.len()]);
    for k in cuts {
        let mut f = std::fs::File::create(&data).unwrap();
        f.write_all(&base).unwrap();
        f.write_all(&tail[..k]).unwrap();
        drop(f);
        let (store, rep) = dir
            .clone()
            .lock()
            .unwrap()
            .reindex(o.clone())
            .unwrap_or_else(|e| panic!("torn at byte {k} of {}: {e}", tail.len()));
        assert!(
            matches!(rep.tail, Tail::Clean | Tail::Truncated),
            "torn at {k}: {rep:?}"
        );
        assert_eq!(
            store.check(true).unwrap(),
            Vec::<backup_server::store::IndexFault>::new(),
            "torn at {k}"
        );
        let cat = store.catalog();
        // The committed run is whole; the killed one is there as far as its whole chunks.
        assert_eq!(cat.last_complete_run().unwrap().unwrap().run, 1);
        let inbox_now = cat.folder_at("INBOX", None).unwrap().unwrap();
        assert_eq!(inbox_now.snapshot.unwrap().run, 1, "torn at {k}");
        if let Some(w) = cat.folder_at("Work", None).unwrap() {
            if let Some(s) = w.snapshot {
                assert_eq!((s.run, s.records), (2, 40));
                snapshot_seen = true;
            }
        }
    }
    assert!(snapshot_seen, "the whole tail holds the snapshot");
}
