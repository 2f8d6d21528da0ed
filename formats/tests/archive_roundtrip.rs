//! Every entry kind written, then read back by location and by scan.

mod archive_common;

use std::io::{Cursor, Read};

use archive_common::*;
use formats::archive::*;

#[test]
fn each_kind_round_trips_by_location_and_by_scan() {
    let entries = samples();
    let w = write_file(&entries, &[3, 8], 1);
    assert_eq!(w.chunks.len(), 3);
    assert_eq!(w.chunks.last().unwrap().end(), w.file.len() as u64);

    for ((meta, data), loc) in entries.iter().zip(&w.locations) {
        let mut r = open_entry(Cursor::new(&w.file), loc.chunk_offset, loc.header_offset).unwrap();
        assert_eq!(&r.header().meta, meta);
        assert_eq!(r.header().path, meta.path());
        assert_eq!(r.header().size, data.len() as u64);
        assert!(r.header().unknown.is_empty());
        assert_eq!(r.location(), *loc);
        let mut got = Vec::new();
        r.read_to_end(&mut got).unwrap();
        assert_eq!(&got, data, "{}", meta.path());
    }

    let (evs, end) = scan_all(&w.file);
    let end = end.unwrap();
    assert_eq!(end.tail, Tail::Clean);
    assert_eq!(end.valid_end, w.file.len() as u64);
    let scanned: Vec<_> = evs
        .iter()
        .filter_map(|e| match e {
            Ev::Entry(h, l, d) => Some((h.meta.clone(), *l, d.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(scanned.len(), entries.len());
    for (((meta, data), loc), (smeta, sloc, sdata)) in
        entries.iter().zip(&w.locations).zip(&scanned)
    {
        assert_eq!(meta, smeta);
        assert_eq!(loc, sloc);
        assert_eq!(data, sdata);
    }
    let ends: Vec<ChunkInfo> = evs
        .iter()
        .filter_map(|e| match e {
            Ev::End(c) => Some(*c),
            _ => None,
        })
        .collect();
    assert_eq!(ends, w.chunks);
}

#[test]
fn locations_follow_the_tar_layout() {
    let entries = samples();
    let w = write_file(&entries, &[], 6);
    let mut expect = 0;
    for loc in &w.locations {
        assert_eq!(loc.header_offset, expect);
        assert_eq!(loc.header_offset % 512, 0);
        assert_eq!(loc.data_offset % 512, 0);
        expect = loc.data_offset + loc.data_len.div_ceil(512) * 512;
    }
    assert_eq!(w.chunks[0].uncompressed_len, expect);
    assert_eq!(w.chunks[0].entries, entries.len() as u64);
}

#[test]
fn scanner_hashes_data_and_skips_unread_data() {
    let entries = samples();
    let w = write_file(&entries, &[1, 2, 5], 1);
    let mut s = Scanner::new(&w.file[..]);
    let mut i = 0;
    loop {
        match s.next_event().unwrap() {
            ScanEvent::Entry(mut e) => {
                // Hash every other entry; leave the rest unread.
                if i % 2 == 0 {
                    assert_eq!(e.sha1().unwrap(), Guid::of(&entries[i].1));
                }
                // Entry 1 is the sample message stored under its real GUID.
                if let (1, EntryMeta::Message(m)) = (i, &e.header.meta) {
                    assert_eq!(m.guid, Guid::of(&entries[i].1));
                }
                i += 1;
            }
            ScanEvent::End(end) => {
                assert_eq!(end.tail, Tail::Clean);
                break;
            }
            _ => {}
        }
    }
    assert_eq!(i, entries.len());
}

#[test]
fn writer_appends_after_existing_data() {
    let entries = samples();
    let first = write_file(&entries[..4], &[], 1);
    let mut file = first.file.clone();
    let len = file.len() as u64;
    let mut w = ArchiveWriter::new(&mut file, len);
    assert_eq!(w.start_chunk().unwrap(), len);
    let loc = w.append(&entries[5].0, &entries[5].1).unwrap();
    let info = w.finish_chunk().unwrap();
    assert_eq!(info.offset, len);
    assert_eq!(w.file_len(), info.end());
    drop(w);
    assert_eq!(file.len() as u64, info.end());
    let r = open_entry(Cursor::new(&file), loc.chunk_offset, loc.header_offset).unwrap();
    assert_eq!(r.header().meta, entries[5].0);
    let (_, end) = scan_all(&file);
    assert_eq!(end.unwrap().valid_end, file.len() as u64);
}

#[test]
fn streamed_data_must_have_the_announced_length() {
    let entries = samples();
    let mut w = ArchiveWriter::new(Vec::new(), 0);
    w.start_chunk().unwrap();
    let short = &b"only nine"[..];
    let err = w.append_reader(&entries[1].0, 100, short).unwrap_err();
    assert!(
        matches!(
            err,
            ArchiveError::DataLength {
                expected: 100,
                found: 9
            }
        ),
        "{err}"
    );
    // The writer is broken: no further appends, and no trailer was written.
    assert!(w.append(&entries[1].0, b"x").is_err());
    let file = w.into_inner().unwrap();
    let (_, end) = scan_all(&file);
    assert_eq!(end.unwrap().tail, Tail::Truncated);

    // A longer source is read only up to the announced length.
    let mut w = ArchiveWriter::new(Vec::new(), 0);
    w.start_chunk().unwrap();
    let mut src = Cursor::new(b"abcdefgh".to_vec());
    let loc = w.append_reader(&entries[2].0, 3, &mut src).unwrap();
    assert_eq!(src.position(), 3);
    w.finish_chunk().unwrap();
    let file = w.into_inner().unwrap();
    let mut r = open_entry(Cursor::new(&file), 0, loc.header_offset).unwrap();
    let mut got = String::new();
    r.read_to_string(&mut got).unwrap();
    assert_eq!(got, "abc");
}

#[test]
fn dropping_a_writer_mid_chunk_leaves_a_torn_tail() {
    let entries = samples();
    let mut w = ArchiveWriter::new(Vec::new(), 0);
    w.start_chunk().unwrap();
    w.append(&entries[1].0, &entries[1].1).unwrap();
    w.finish_chunk().unwrap();
    let valid = w.file_len();
    w.start_chunk().unwrap();
    w.append(&entries[2].0, &entries[2].1).unwrap();
    let file = w.into_inner().unwrap();
    let (_, end) = scan_all(&file);
    let end = end.unwrap();
    assert_eq!(end.valid_end, valid);
    assert_ne!(end.tail, Tail::Clean);
}

#[test]
fn invalid_metadata_is_refused() {
    let t = Timestamp::from_secs(1);
    let bad = [
        EntryMeta::NameLink(NameLink {
            folder: "x".into(),
            unique_id: "../etc".into(),
            deleted: false,
            run: 1,
            time: t,
        }),
        EntryMeta::FolderMeta(FolderMeta {
            unique_id: "ok".into(),
            folder: String::new(),
            partition: None,
            file: MetaFile::Index,
            run: 1,
            time: t,
            stat: None,
        }),
        EntryMeta::UserFile(UserFile {
            kind: UserFileKind::Sieve {
                name: "a/b".into(),
                active: false,
            },
            run: 1,
            time: t,
            stat: None,
        }),
        EntryMeta::Unknown { kind: None },
        EntryMeta::Run(RunMarker {
            run: 1,
            user: "u".into(),
            event: RunEvent::Start,
            time: Timestamp {
                secs: 1,
                nanos: 1_000_000_000,
            },
        }),
    ];
    let mut w = ArchiveWriter::new(Vec::new(), 0);
    w.start_chunk().unwrap();
    for meta in &bad {
        let err = w.append(meta, b"").unwrap_err();
        assert!(matches!(err, ArchiveError::InvalidMeta { .. }), "{err}");
    }
    // Refusals happen before anything is written: the writer still works.
    w.append(&samples()[0].0, b"").unwrap();
    w.finish_chunk().unwrap();
}

#[test]
fn timestamps_and_guids_parse_strictly() {
    for (s, secs, nanos) in [
        ("0", 0, 0),
        ("-2.5", -2, 500_000_000),
        ("12.000000001", 12, 1),
    ] {
        let t: Timestamp = s.parse().unwrap();
        assert_eq!((t.secs, t.nanos), (secs, nanos));
    }
    for s in ["", ".5", "1.", "1.0000000001", "+1", "1e3", "--1", "1.-5"] {
        assert!(s.parse::<Timestamp>().is_err(), "{s}");
    }
    assert_eq!(
        Timestamp::new(-2, 500_000_000).unwrap().to_string(),
        "-2.500000000"
    );
    let g: Guid = "CEEA60118A7B84DCDBDE028FFF958F73A8D18B5C".parse().unwrap();
    assert_eq!(g.to_string(), "ceea60118a7b84dcdbde028fff958f73a8d18b5c");
    assert!("ceea".parse::<Guid>().is_err());
}

/// Builds a chunk by hand whose PAX header carries extra records, as a later version or
/// another tool might write.
fn chunk_with_pax(records: &[(&str, &[u8])], data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut pax = Vec::new();
    for (k, v) in records {
        let rest = k.len() + v.len() + 3;
        let mut len = rest + 1;
        while len.to_string().len() + rest != len {
            len = len.to_string().len() + rest;
        }
        pax.extend_from_slice(format!("{len} {k}=").as_bytes());
        pax.extend_from_slice(v);
        pax.push(b'\n');
    }
    let mut tarball = Vec::new();
    let mut x = tar::Header::new_ustar();
    x.set_entry_type(tar::EntryType::XHeader);
    x.set_size(pax.len() as u64);
    x.set_cksum();
    tarball.extend_from_slice(x.as_bytes());
    tarball.extend_from_slice(&pax);
    tarball.resize(tarball.len().div_ceil(512) * 512, 0);
    let mut h = tar::Header::new_ustar();
    h.set_path("files/foo").unwrap();
    h.set_size(data.len() as u64);
    h.set_cksum();
    tarball.extend_from_slice(h.as_bytes());
    tarball.extend_from_slice(data);
    tarball.resize(tarball.len().div_ceil(512) * 512, 0);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tarball).unwrap();
    gz.finish().unwrap()
}

#[test]
fn unknown_pax_keys_are_kept_and_unknown_kinds_skipped() {
    let guid = "00".repeat(20);
    let file = chunk_with_pax(
        &[
            ("MAILBACKUP.v", b"1"),
            ("MAILBACKUP.kind", b"message"),
            ("MAILBACKUP.run", b"3"),
            ("MAILBACKUP.time", b"100"),
            ("MAILBACKUP.guid", guid.as_bytes()),
            ("MAILBACKUP.future", b"line1\nline2"),
            ("mtime", b"100.5"),
        ],
        b"hello",
    );
    let mut r = open_entry(Cursor::new(&file), 0, 0).unwrap();
    assert!(matches!(r.header().meta, EntryMeta::Message(ref m) if m.run == 3));
    let keys: Vec<&str> = r.header().unknown.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["MAILBACKUP.future", "mtime"]);
    assert_eq!(r.header().unknown[0].value, b"line1\nline2");
    let mut s = String::new();
    r.read_to_string(&mut s).unwrap();
    assert_eq!(s, "hello");

    let mut file2 = chunk_with_pax(&[("MAILBACKUP.kind", b"hologram")], b"zzz");
    file2.extend_from_slice(&file);
    let (evs, end) = scan_all(&file2);
    assert_eq!(end.unwrap().tail, Tail::Clean);
    let kinds: Vec<String> = evs
        .iter()
        .filter_map(|e| match e {
            Ev::Entry(h, _, _) => Some(h.meta.kind().to_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(kinds, ["hologram", "message"]);
}

#[test]
fn bad_fields_are_errors_with_their_offset() {
    let file = chunk_with_pax(
        &[
            ("MAILBACKUP.v", b"1"),
            ("MAILBACKUP.kind", b"message"),
            ("MAILBACKUP.run", b"3"),
            ("MAILBACKUP.time", b"100"),
            ("MAILBACKUP.guid", b"not hex"),
        ],
        b"",
    );
    let err = open_entry(Cursor::new(&file), 0, 0).err().unwrap();
    assert!(
        matches!(
            err,
            ArchiveError::Field {
                chunk: 0,
                at: 0,
                key: "MAILBACKUP.guid",
                ..
            }
        ),
        "{err}"
    );
    let file = chunk_with_pax(&[("MAILBACKUP.v", b"2"), ("MAILBACKUP.kind", b"run")], b"");
    let err = open_entry(Cursor::new(&file), 0, 0).err().unwrap();
    assert!(
        matches!(
            err,
            ArchiveError::Field {
                key: "MAILBACKUP.v",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn entry_offset_outside_the_chunk_is_an_error() {
    let w = write_file(&samples()[..2], &[], 1);
    let len = w.chunks[0].uncompressed_len;
    let err = open_entry(Cursor::new(&w.file), 0, len).err().unwrap();
    assert!(
        matches!(err, ArchiveError::EntryOutsideChunk { .. }),
        "{err}"
    );
    let err = open_entry(Cursor::new(&w.file), 0, len + 4096)
        .err()
        .unwrap();
    assert!(
        matches!(err, ArchiveError::EntryOutsideChunk { .. }),
        "{err}"
    );
}
