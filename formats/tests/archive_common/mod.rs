//! Helpers shared by the archive tests: sample entries of every kind, writing a file of
//! chunks in memory, and collecting a scan into owned values.
#![allow(dead_code)]

use std::io::Read;

use formats::archive::*;

/// One of each kind of entry, with data.
pub fn samples() -> Vec<(EntryMeta, Vec<u8>)> {
    let t = Timestamp::new(1_795_415_424, 123_456_789).unwrap();
    let stat = FileStat {
        size: 2048,
        mtime: Timestamp::new(1_795_415_000, 5).unwrap(),
        inode: 123_456,
    };
    let msg = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n".to_vec();
    let guid = Guid::of(&msg);
    vec![
        (
            EntryMeta::Run(RunMarker {
                run: 7,
                user: "u3x0".into(),
                event: RunEvent::Start,
                time: t,
            }),
            vec![],
        ),
        (
            EntryMeta::Message(Message {
                guid,
                run: 7,
                time: t,
                origin: Some(("tr3g9qzoe6kapjm5i3coxngy".into(), 4)),
                internal_date: Some(Timestamp::from_secs(1_795_415_424)),
            }),
            msg,
        ),
        (
            EntryMeta::Message(Message {
                guid: Guid([0xab; 20]),
                run: 7,
                time: t,
                origin: None,
                internal_date: None,
            }),
            vec![b'x'; 1000],
        ),
        (
            EntryMeta::FolderMeta(FolderMeta {
                unique_id: "tr3g9qzoe6kapjm5i3coxngy".into(),
                folder: "user.u3x0".into(),
                partition: Some("default".into()),
                file: MetaFile::Index,
                run: 7,
                time: t,
                stat: Some(stat),
            }),
            (0..3000u32).map(|i| (i % 251) as u8).collect(),
        ),
        (
            EntryMeta::FolderMeta(FolderMeta {
                unique_id: "m7g18s67qg582r2r9vtju5hp".into(),
                folder: "user.u3x0.Archive \u{e9}t\u{e9}\n=weird".into(),
                partition: None,
                file: MetaFile::Header,
                run: 7,
                time: t,
                stat: None,
            }),
            b"\xa1\x02\x8b\x0dCyrus mailbox header\n".to_vec(),
        ),
        (
            EntryMeta::FolderMeta(FolderMeta {
                unique_id: "m7g18s67qg582r2r9vtju5hp".into(),
                folder: "user.u3x0.Archive".into(),
                partition: Some("p2".into()),
                file: MetaFile::Annotations,
                run: 7,
                time: t,
                stat: Some(stat),
            }),
            vec![],
        ),
        (
            EntryMeta::NameLink(NameLink {
                folder: "user.u3x0.Work".into(),
                unique_id: "c7dgmz0w4jyahhmmepic2ujw".into(),
                deleted: false,
                run: 7,
                time: t,
            }),
            vec![],
        ),
        (
            EntryMeta::NameLink(NameLink {
                folder: "user.u3x0.Old".into(),
                unique_id: "wae1kisisjkq8u6ocidu3osu".into(),
                deleted: true,
                run: 7,
                time: Timestamp::from_secs(-5),
            }),
            vec![],
        ),
        (
            EntryMeta::UserFile(UserFile {
                kind: UserFileKind::Seen,
                run: 7,
                time: t,
                stat: Some(stat),
            }),
            b"seen db".to_vec(),
        ),
        (
            EntryMeta::UserFile(UserFile {
                kind: UserFileKind::Subscriptions,
                run: 7,
                time: t,
                stat: None,
            }),
            b"\x1fVER\x1f\t2\nuser\x1fu3x0\x1fWork\t\n".to_vec(),
        ),
        (
            EntryMeta::UserFile(UserFile {
                kind: UserFileKind::Sieve {
                    name: "vacation.script".into(),
                    active: true,
                },
                run: 7,
                time: t,
                stat: Some(stat),
            }),
            b"require \"vacation\";\n".to_vec(),
        ),
        (
            EntryMeta::UserFile(UserFile {
                kind: UserFileKind::Sieve {
                    // Too long for ustar's name field: needs the PAX path record.
                    name: format!("{}.script", "s".repeat(200)),
                    active: false,
                },
                run: 7,
                time: t,
                stat: None,
            }),
            b"keep;\n".to_vec(),
        ),
        (
            EntryMeta::Run(RunMarker {
                run: 7,
                user: "u3x0".into(),
                event: RunEvent::End,
                time: t,
            }),
            vec![],
        ),
    ]
}

/// What writing produced.
pub struct Written {
    pub file: Vec<u8>,
    pub locations: Vec<EntryLocation>,
    pub chunks: Vec<ChunkInfo>,
}

/// Writes `entries` into a fresh file, cutting chunks after the entries whose index is in
/// `cuts` (and after the last one).
pub fn write_file(entries: &[(EntryMeta, Vec<u8>)], cuts: &[usize], level: u32) -> Written {
    let mut w = ArchiveWriter::new(Vec::new(), 0);
    w.set_level(level);
    let mut locations = Vec::new();
    let mut chunks = Vec::new();
    w.start_chunk().unwrap();
    for (i, (meta, data)) in entries.iter().enumerate() {
        locations.push(w.append(meta, data).unwrap());
        if cuts.contains(&i) && i + 1 < entries.len() {
            chunks.push(w.finish_chunk().unwrap());
            w.start_chunk().unwrap();
        }
    }
    chunks.push(w.finish_chunk().unwrap());
    Written {
        file: w.into_inner().unwrap(),
        locations,
        chunks,
    }
}

/// A scan event, owned.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    Start(u64),
    Entry(EntryHeader, EntryLocation, Vec<u8>),
    End(ChunkInfo),
}

/// Scans `file` to the end, reading every entry's data.
pub fn scan_all(file: &[u8]) -> (Vec<Ev>, Result<ScanEnd, ArchiveError>) {
    let mut s = Scanner::new(file);
    let mut evs = Vec::new();
    loop {
        match s.next_event() {
            Ok(ScanEvent::ChunkStart { offset }) => evs.push(Ev::Start(offset)),
            Ok(ScanEvent::Entry(mut e)) => {
                let mut data = Vec::new();
                if let Err(err) = e.read_to_end(&mut data) {
                    // The next event says what happened.
                    let _ = err;
                }
                evs.push(Ev::Entry(e.header.clone(), e.location, data));
            }
            Ok(ScanEvent::ChunkEnd(c)) => evs.push(Ev::End(c)),
            Ok(ScanEvent::End(end)) => return (evs, Ok(end)),
            Err(e) => return (evs, Err(e)),
        }
    }
}
