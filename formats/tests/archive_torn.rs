//! Torn tails, corrupt bytes, and how much a single-entry read inflates.

mod archive_common;

use std::io::{Cursor, Read};

use archive_common::*;
use formats::archive::*;

/// Entries of the chunks that end at or before `cut`, with their data.
fn expected_upto(w: &Written, entries: &[(EntryMeta, Vec<u8>)], cut: u64) -> Vec<Ev> {
    let mut out = Vec::new();
    let mut i = 0;
    for c in &w.chunks {
        let n = c.entries as usize;
        if c.end() <= cut {
            out.push(Ev::Start(c.offset));
            for (k, (meta, data)) in entries.iter().enumerate().skip(i).take(n) {
                let h = EntryHeader {
                    meta: meta.clone(),
                    path: meta.path(),
                    size: data.len() as u64,
                    unknown: vec![],
                };
                out.push(Ev::Entry(h, w.locations[k], data.clone()));
            }
            out.push(Ev::End(*c));
        }
        i += n;
    }
    out
}

/// Events up to and including the last ChunkEnd: what a caller may commit.
fn committed(evs: &[Ev]) -> Vec<Ev> {
    let last = evs.iter().rposition(|e| matches!(e, Ev::End(_)));
    match last {
        Some(i) => evs[..=i].to_vec(),
        None => vec![],
    }
}

fn small_file() -> (Vec<(EntryMeta, Vec<u8>)>, Written) {
    let entries = samples();
    let w = write_file(&entries, &[2, 3, 7], 1);
    (entries, w)
}

#[test]
fn cut_at_every_offset_ends_at_the_last_complete_chunk() {
    let (entries, w) = small_file();
    let ends: Vec<u64> = w.chunks.iter().map(|c| c.end()).collect();
    for cut in 0..=w.file.len() as u64 {
        let (evs, end) = scan_all(&w.file[..cut as usize]);
        let end = end.unwrap_or_else(|e| panic!("cut {cut}: {e}"));
        let last_end = ends
            .iter()
            .copied()
            .filter(|&e| e <= cut)
            .max()
            .unwrap_or(0);
        assert_eq!(end.valid_end, last_end, "cut {cut}");
        assert_eq!(end.file_len, cut, "cut {cut}");
        let tail = if cut == last_end {
            Tail::Clean
        } else {
            Tail::Truncated
        };
        assert_eq!(end.tail, tail, "cut {cut}");
        assert_eq!(
            committed(&evs),
            expected_upto(&w, &entries, cut),
            "cut {cut}"
        );
    }
}

#[test]
fn zeros_or_garbage_after_a_cut_are_a_torn_tail() {
    let (entries, w) = small_file();
    let ends: Vec<u64> = w.chunks.iter().map(|c| c.end()).collect();
    for cut in 0..=w.file.len() as u64 {
        for junk in [
            &[0u8; 700][..],
            b"\x1f\x8bgarbage",
            b"not a gzip member at all",
        ] {
            let mut f = w.file[..cut as usize].to_vec();
            f.extend_from_slice(junk);
            // Zeros can complete a cut trailer (ISIZE's high bytes are zero): the chunks
            // whose bytes are all there, whoever put them, are the valid ones.
            let last_end = ends
                .iter()
                .copied()
                .filter(|&e| e as usize <= f.len() && f[..e as usize] == w.file[..e as usize])
                .max()
                .unwrap_or(0);
            let (evs, end) = scan_all(&f);
            match end {
                Ok(end) => {
                    assert_eq!(end.valid_end, last_end, "cut {cut}");
                    assert_eq!(end.file_len, f.len() as u64, "cut {cut}");
                    assert_ne!(end.tail, Tail::Clean, "cut {cut}");
                    if cut == last_end {
                        assert_eq!(end.tail, Tail::Garbage, "cut {cut}");
                    }
                }
                // Junk glued to a partial member can read as a damaged member.
                Err(e) => {
                    assert_ne!(cut, last_end, "cut {cut}: {e}");
                    assert_eq!(e.chunk_offset(), Some(last_end), "cut {cut}: {e}");
                }
            }
            assert_eq!(
                committed(&evs),
                expected_upto(&w, &entries, last_end),
                "cut {cut}"
            );
        }
    }
}

#[test]
fn a_flipped_byte_never_passes_as_a_valid_chunk() {
    let (entries, w) = small_file();
    let full = expected_upto(&w, &entries, u64::MAX);
    for pos in 0..w.file.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut f = w.file.clone();
            f[pos] ^= flip;
            let (evs, end) = scan_all(&f);
            let good = committed(&evs);
            // Whatever is reported valid is exactly what was written.
            assert_eq!(good[..], full[..good.len()], "byte {pos} ^ {flip:#x}");
            if good.len() < full.len() {
                let damaged = w
                    .chunks
                    .iter()
                    .find(|c| c.offset <= pos as u64 && (pos as u64) < c.end())
                    .unwrap();
                match end {
                    Ok(end) => assert!(end.valid_end <= damaged.offset && end.tail != Tail::Clean),
                    Err(e) => assert!(e.chunk_offset().unwrap() <= damaged.offset, "{e}"),
                }
            }
        }
    }
}

#[test]
fn a_corrupt_byte_inside_a_chunk_is_an_error() {
    let (entries, w) = small_file();
    let c = w.chunks[1];
    // The CRC-32 in the member's trailer.
    let mut f = w.file.clone();
    f[(c.end() - 8) as usize] ^= 0x55;
    let (evs, end) = scan_all(&f);
    let err = end.unwrap_err();
    assert!(
        matches!(err, ArchiveError::Gzip { chunk, .. } if chunk == c.offset),
        "{err}"
    );
    assert!(err
        .to_string()
        .contains(&format!("chunk at byte {}", c.offset)));
    assert_eq!(committed(&evs), expected_upto(&w, &entries, c.offset));

    // The single-entry reader hands out the data but the chunk check fails.
    let k = (w.chunks[0].entries) as usize;
    let mut r = open_entry(Cursor::new(&f), c.offset, w.locations[k].header_offset).unwrap();
    let mut data = Vec::new();
    r.read_to_end(&mut data).unwrap();
    assert_eq!(data, entries[k].1);
    assert!(matches!(r.finish_chunk(), Err(ArchiveError::Gzip { .. })));

    // A byte in the middle of the deflate data.
    let mut f = w.file.clone();
    f[(c.offset + c.compressed_len / 2) as usize] ^= 0x10;
    let (evs, end) = scan_all(&f);
    match end {
        Err(e) => assert_eq!(e.chunk_offset(), Some(c.offset), "{e}"),
        Ok(end) => assert!(end.valid_end == c.offset && end.tail != Tail::Clean),
    }
    assert_eq!(committed(&evs), expected_upto(&w, &entries, c.offset));
    // After an error, the scanner only reports the end.
    let mut s = Scanner::new(&f[..]);
    loop {
        match s.next_event() {
            Ok(ScanEvent::End(_)) => break,
            Ok(_) => {}
            Err(_) => {
                match s.next_event() {
                    Ok(ScanEvent::End(e)) => assert_eq!(e.tail, Tail::Failed),
                    _ => panic!("scanner did not end after an error"),
                }
                break;
            }
        }
    }
}

/// A reader that counts the bytes it hands out.
struct Counting<R> {
    inner: R,
    read: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl<R: std::io::Seek> std::io::Seek for Counting<R> {
    fn seek(&mut self, pos: std::io::SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

#[test]
fn reading_one_entry_inflates_only_its_chunk() {
    // Three chunks of a few hundred KiB of poorly compressible data.
    let mut seed = 1u64;
    let mut noise = |n: usize| -> Vec<u8> {
        (0..n)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 56) as u8
            })
            .collect()
    };
    let t = Timestamp::from_secs(1);
    let mut entries = Vec::new();
    for i in 0..9u8 {
        let data = noise(100_000 + i as usize);
        let meta = EntryMeta::Message(Message {
            guid: Guid::of(&data),
            run: 1,
            time: t,
            origin: None,
            internal_date: None,
        });
        entries.push((meta, data));
    }
    let mut w = write_file(&entries, &[2, 5], 1);
    // Whatever follows chunk 1 is never looked at.
    let c1 = w.chunks[1];
    for b in &mut w.file[c1.end() as usize..] {
        *b = 0xee;
    }
    for (k, loc) in w.locations.iter().copied().enumerate().take(6).skip(3) {
        let mut file = Counting {
            inner: Cursor::new(&w.file),
            read: 0,
        };
        let mut r = open_entry(&mut file, loc.chunk_offset, loc.header_offset).unwrap();
        let mut data = Vec::new();
        r.read_to_end(&mut data).unwrap();
        assert_eq!(data, entries[k].1);
        assert_eq!(r.inflated(), loc.data_offset + loc.data_len);
        assert!(r.inflated() <= c1.uncompressed_len);
        assert_eq!(
            r.finish_chunk().unwrap(),
            (c1.compressed_len, c1.uncompressed_len)
        );
        assert!(
            file.read <= c1.compressed_len + SOURCE_BUF as u64,
            "{} bytes read",
            file.read
        );
    }
}
