//! Random entries across random chunk boundaries, read back by location and by scan.

mod archive_common;

use std::io::{Cursor, Read};

use archive_common::*;
use formats::archive::*;
use proptest::prelude::*;

fn timestamp() -> impl Strategy<Value = Timestamp> {
    (-10_000_000_000i64..10_000_000_000, 0u32..1_000_000_000)
        .prop_map(|(s, n)| Timestamp::new(s, n).unwrap())
}

fn unique_id() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._-]{0,63}"
}

fn name() -> impl Strategy<Value = String> {
    // Any text without NUL, newlines and '=' included.
    "[^\u{0}]{1,300}"
}

fn stat() -> impl Strategy<Value = Option<FileStat>> {
    proptest::option::of(
        (any::<u64>(), timestamp(), any::<u64>()).prop_map(|(size, mtime, inode)| FileStat {
            size,
            mtime,
            inode,
        }),
    )
}

fn meta() -> impl Strategy<Value = EntryMeta> {
    let run = any::<u64>();
    prop_oneof![
        (
            any::<[u8; 20]>(),
            run,
            timestamp(),
            proptest::option::of((unique_id(), any::<u32>())),
            proptest::option::of(timestamp())
        )
            .prop_map(|(g, run, time, origin, internal_date)| {
                EntryMeta::Message(Message {
                    guid: Guid(g),
                    run,
                    time,
                    origin,
                    internal_date,
                })
            }),
        (
            unique_id(),
            name(),
            proptest::option::of("[a-z0-9]{1,20}"),
            prop_oneof![
                Just(MetaFile::Header),
                Just(MetaFile::Index),
                Just(MetaFile::Annotations)
            ],
            run,
            timestamp(),
            stat()
        )
            .prop_map(|(unique_id, folder, partition, file, run, time, stat)| {
                EntryMeta::FolderMeta(FolderMeta {
                    unique_id,
                    folder,
                    partition,
                    file,
                    run,
                    time,
                    stat,
                })
            }),
        (name(), unique_id(), any::<bool>(), run, timestamp()).prop_map(
            |(folder, unique_id, deleted, run, time)| {
                EntryMeta::NameLink(NameLink {
                    folder,
                    unique_id,
                    deleted,
                    run,
                    time,
                })
            }
        ),
        (
            prop_oneof![
                Just(UserFileKind::Seen),
                Just(UserFileKind::Subscriptions),
                ("[a-zA-Z0-9 ._-]{3,255}", any::<bool>())
                    .prop_map(|(name, active)| UserFileKind::Sieve { name, active }),
            ],
            run,
            timestamp(),
            stat()
        )
            .prop_map(|(kind, run, time, stat)| {
                EntryMeta::UserFile(UserFile {
                    kind,
                    run,
                    time,
                    stat,
                })
            }),
        (run, name(), any::<bool>(), timestamp()).prop_map(|(run, user, end, time)| {
            EntryMeta::Run(RunMarker {
                run,
                user,
                event: if end { RunEvent::End } else { RunEvent::Start },
                time,
            })
        }),
    ]
}

fn data() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => proptest::collection::vec(any::<u8>(), 0..2000),
        1 => (0usize..70_000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn random_entries_read_back(
        entries in proptest::collection::vec((meta(), data()), 1..24),
        cuts in proptest::collection::vec(0usize..24, 0..6),
        level in prop_oneof![Just(0u32), Just(1), Just(6), Just(9)],
    ) {
        let w = write_file(&entries, &cuts, level);
        prop_assert_eq!(w.chunks.last().unwrap().end(), w.file.len() as u64);

        for ((meta, data), loc) in entries.iter().zip(&w.locations) {
            let mut r = open_entry(Cursor::new(&w.file), loc.chunk_offset, loc.header_offset).unwrap();
            prop_assert_eq!(&r.header().meta, meta);
            prop_assert_eq!(&r.header().path, &meta.path());
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            prop_assert_eq!(&got, data);
        }

        // In file order through one reader per chunk (next_in_chunk), some entries read
        // only in part: the same bytes, and no chunk inflated twice.
        let mut cur: Option<EntryReader<Cursor<&Vec<u8>>>> = None;
        let (mut inflated, mut opened) = (0u64, 0usize);
        for (i, ((_, data), loc)) in entries.iter().zip(&w.locations).enumerate() {
            let mut r = match cur.take() {
                Some(c) if c.can_reach(loc.chunk_offset, loc.header_offset) => {
                    c.next_in_chunk(loc.header_offset).unwrap()
                }
                other => {
                    // A chain ends: its reader's position is what it inflated of its chunk.
                    inflated += other.map_or(0, |c| c.inflated());
                    opened += 1;
                    open_entry(Cursor::new(&w.file), loc.chunk_offset, loc.header_offset).unwrap()
                }
            };
            let take = if i % 3 == 2 { data.len() / 2 } else { data.len() };
            let mut got = vec![0u8; take];
            r.read_exact(&mut got).unwrap();
            prop_assert_eq!(&got[..], &data[..take]);
            cur = Some(r);
        }
        inflated += cur.map_or(0, |c| c.inflated());
        prop_assert_eq!(opened, w.chunks.len());
        let total: u64 = w.chunks.iter().map(|c| c.uncompressed_len).sum();
        prop_assert!(inflated <= total, "{} > {}", inflated, total);

        let (evs, end) = scan_all(&w.file);
        let end = end.unwrap();
        prop_assert_eq!(end.tail, Tail::Clean);
        prop_assert_eq!(end.valid_end, w.file.len() as u64);
        let mut i = 0;
        let mut chunk_ends = Vec::new();
        for ev in evs {
            match ev {
                Ev::Entry(h, loc, d) => {
                    prop_assert_eq!(&h.meta, &entries[i].0);
                    prop_assert_eq!(&d, &entries[i].1);
                    prop_assert_eq!(loc, w.locations[i]);
                    i += 1;
                }
                Ev::End(c) => chunk_ends.push(c),
                Ev::Start(_) => {}
            }
        }
        prop_assert_eq!(i, entries.len());
        prop_assert_eq!(chunk_ends, w.chunks);
    }

    #[test]
    fn scanner_never_panics_on_mutated_files(
        entries in proptest::collection::vec((meta(), data()), 1..6),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        cut in any::<prop::sample::Index>(),
    ) {
        let w = write_file(&entries, &[1, 3], 1);
        let mut f = w.file.clone();
        for (at, b) in edits {
            let i = at.index(f.len());
            f[i] = b;
        }
        let f = &f[..cut.index(f.len() + 1)];
        let (_evs, end) = scan_all(f);
        if let Ok(end) = end {
            prop_assert!(end.valid_end <= f.len() as u64);
        }
    }
}
