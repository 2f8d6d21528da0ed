//! `backup-server repair --user U`: a new store made from the good part of a damaged or
//! truncated data file, what was lost named, the next run told to fetch it again.
//!
//! Reindex refuses a data file damaged before its end; repair keeps every intact chunk:
//!
//! 1. Take the user's writer lock (a running backup makes this fail at once). Read what the
//!    old index can still say (each current live record: folder, UID, GUID), if it can be
//!    read at all: that is how lost messages get their names.
//! 2. *Survey* the data file (the one the index names, else the newest in the directory):
//!    scan it chunk by chunk; a chunk counts when its gzip member checks out (CRC-32,
//!    length, whole tar entries), and a message entry in it is *damaged* when its SHA-1 is
//!    not its GUID. Past a chunk that does not check out (bad deflate data, a torn tail,
//!    garbage between chunks), resynchronise: the next chunk is found by looking for the
//!    next gzip header (`1f 8b 08`) and trying it; a false start fails its own checks and
//!    the search goes on. Every byte range skipped is reported with the reason.
//! 3. Write `backupdata-<now>.tar.gz.repair`: each intact chunk copied byte for byte; a
//!    chunk holding a damaged message re-encoded without it (its other entries kept).
//!    fsync it, rename it to `backupdata-<now>.tar.gz`, fsync the directory.
//! 4. `LockedDir::install_data_file`: the index is built aside from the new file (the
//!    same ingest as a run and reindex), switched in atomically, the store opened (which
//!    removes the old data file). A kill -9 before the switch leaves the old index (the
//!    next open removes the new file; a `.repair` file is removed by the next repair);
//!    after it, the new one. Never a broken index.
//! 5. Every GUID a current live record names that the new store lacks is marked lost
//!    (`damaged`, no entry) by the rebuild itself, before the switch: the planner copies
//!    those folders again and the next run fetches what Cyrus still has. Report them by folder and UID: from the old index when
//!    it could be read (so messages whose snapshot was lost too are named), else from the
//!    new one.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom};
use std::path::Path;

use formats::archive::{ArchiveError, ArchiveWriter, EntryMeta, ScanEvent, Scanner, Tail};
use formats::Guid;
use rusqlite::OpenFlags;

use crate::store::{data_file_name, Result, Store, StoreError, StoreOptions, UserDir};

/// Bytes of the old data file the repair could not keep, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostRange {
    /// Where they start in the old data file.
    pub offset: u64,
    /// How many.
    pub len: u64,
    /// Why (the first thing found wrong there).
    pub why: String,
}

/// A message entry of an intact chunk whose bytes do not hash to its GUID: left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedEntry {
    /// Its chunk's offset in the old data file.
    pub chunk: u64,
    /// Its header's offset in the chunk's uncompressed data.
    pub header_offset: u64,
    /// The GUID it claims.
    pub guid: Guid,
    /// The SHA-1 of its bytes.
    pub sha1: Guid,
}

/// A message the repaired store does not hold although a folder had it (current, not
/// expunged): lost, marked for the next run to fetch again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostMessage {
    /// The folder, by its name in the store.
    pub folder: String,
    /// The record's UID.
    pub uid: u32,
    /// The message.
    pub guid: Guid,
}

/// What a repair did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// The user.
    pub user: String,
    /// The data file repaired (`None`: there was none; the new store is empty).
    pub old_data_file: Option<String>,
    /// Its length.
    pub old_len: u64,
    /// The new data file.
    pub new_data_file: String,
    /// Its length.
    pub new_len: u64,
    /// Chunks kept byte for byte.
    pub chunks_copied: u64,
    /// Chunks rewritten without their damaged messages.
    pub chunks_rewritten: u64,
    /// Entries in the new index.
    pub entries: u64,
    /// Whether the old index could be read (lost messages are named from it).
    pub old_index_read: bool,
    /// Byte ranges of the old file not kept.
    pub lost_ranges: Vec<LostRange>,
    /// Message entries left out because their bytes do not hash to their GUID.
    pub damaged_entries: Vec<DamagedEntry>,
    /// Messages lost (each a current, live record of a folder).
    pub lost_messages: Vec<LostMessage>,
}

impl RepairReport {
    /// Whether nothing was lost: the data file was whole.
    pub fn is_clean(&self) -> bool {
        self.lost_ranges.is_empty()
            && self.damaged_entries.is_empty()
            && self.lost_messages.is_empty()
    }
}

/// Repairs `user`'s store under `root` (see the module documentation). `opts` gives the
/// gzip level of rewritten chunks and the clock the new file is named after.
pub fn repair_user(root: &Path, user: &str, opts: StoreOptions) -> Result<RepairReport> {
    let dir = UserDir::new(root, user)?;
    if !dir.exists() {
        return Err(StoreError::NoStore {
            user: user.to_owned(),
            dir: dir.path().to_path_buf(),
        });
    }
    let locked = dir.lock()?;
    let dir = locked.dir().clone();
    // A repair killed before its rename left its output under this suffix.
    for name in leftovers(&dir)? {
        let p = dir.file(&name);
        std::fs::remove_file(&p).map_err(|source| StoreError::Io {
            path: p,
            op: "removing an unfinished repair's data file",
            source,
        })?;
    }
    let old_records = old_live_records(&dir.index_path());
    let old_name = locked.data_file_to_repair()?;
    let mut survey = Survey::default();
    if let Some(name) = &old_name {
        survey = survey_file(&dir.file(name))?;
    }
    let mut secs = opts.clock.now().secs;
    let new_name = loop {
        let n = data_file_name(secs);
        if Some(&n) != old_name.as_ref()
            && !dir.file(&n).exists()
            && !dir.file(&format!("{n}{REPAIR_SUFFIX}")).exists()
        {
            break n;
        }
        secs += 1;
    };
    let tmp = dir.file(&format!("{new_name}{REPAIR_SUFFIX}"));
    let (new_len, rewritten) = match &old_name {
        Some(name) => write_good(&dir.file(name), &tmp, &survey, opts.gzip_level)?,
        None => {
            crate::private::create_new(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io(&tmp, "creating the repaired data file"))?;
            (0, 0)
        }
    };
    let new_path = dir.file(&new_name);
    std::fs::rename(&tmp, &new_path).map_err(io(&new_path, "renaming the repaired data file"))?;
    File::open(dir.path())
        .and_then(|d| d.sync_all())
        .map_err(io(dir.path(), "syncing the directory"))?;
    // The rebuilt index marks what is lost (reindex.rs), in the transaction that builds it.
    let (store, reindexed) = locked.install_data_file(&new_name, opts)?;
    let lost_messages = lost_messages(&store, old_records.as_ref())?;
    Ok(RepairReport {
        user: user.to_owned(),
        old_data_file: old_name,
        old_len: survey.file_len,
        new_data_file: new_name,
        new_len,
        chunks_copied: survey.chunks.len() as u64 - rewritten,
        chunks_rewritten: rewritten,
        entries: reindexed.entries,
        old_index_read: old_records.is_some(),
        lost_ranges: survey.lost,
        damaged_entries: survey.chunks.into_iter().flat_map(|c| c.bad).collect(),
        lost_messages,
    })
}

const REPAIR_SUFFIX: &str = ".repair";

fn leftovers(dir: &UserDir) -> Result<Vec<String>> {
    let rd =
        std::fs::read_dir(dir.path()).map_err(io(dir.path(), "listing the store directory"))?;
    let mut out = Vec::new();
    for e in rd {
        let e = e.map_err(io(dir.path(), "listing the store directory"))?;
        if let Some(n) = e.file_name().to_str() {
            if n.strip_suffix(REPAIR_SUFFIX)
                .is_some_and(crate::store::is_data_file_name)
            {
                out.push(n.to_owned());
            }
        }
    }
    Ok(out)
}

fn io(path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io { path, op, source }
}

/// An intact chunk of the old file.
#[derive(Debug, Clone)]
struct GoodChunk {
    offset: u64,
    len: u64,
    bad: Vec<DamagedEntry>,
}

/// What the survey of a data file found.
#[derive(Debug, Default)]
struct Survey {
    chunks: Vec<GoodChunk>,
    lost: Vec<LostRange>,
    file_len: u64,
}

/// Finds every intact chunk of the file, resynchronising past damage.
fn survey_file(path: &Path) -> Result<Survey> {
    let file_len = std::fs::metadata(path)
        .map_err(io(path, "reading the data file's length"))?
        .len();
    let mut s = Survey {
        file_len,
        ..Survey::default()
    };
    let mut pos = 0u64;
    while pos < file_len {
        let (failed_at, why) = scan_from(path, pos, &mut s.chunks)?;
        let Some(failed_at) = failed_at else { break };
        let next = next_gzip_header(path, failed_at + 1)?.unwrap_or(file_len);
        match s.lost.last_mut() {
            // A false start inside a range already lost: the range grows.
            Some(l) if l.offset + l.len == failed_at => l.len = next - l.offset,
            _ => s.lost.push(LostRange {
                offset: failed_at,
                len: next - failed_at,
                why,
            }),
        }
        pos = next;
    }
    Ok(s)
}

/// Scans from `pos` (a chunk boundary, or a candidate one) until the end or the first
/// chunk that does not check out; intact chunks go to `chunks`. Returns where the scan
/// failed (`None`: it reached the end cleanly) and why.
fn scan_from(path: &Path, pos: u64, chunks: &mut Vec<GoodChunk>) -> Result<(Option<u64>, String)> {
    let mut f = File::open(path).map_err(io(path, "opening the data file"))?;
    f.seek(SeekFrom::Start(pos))
        .map_err(io(path, "seeking in the data file"))?;
    let mut sc = Scanner::starting_at(f, pos);
    let mut cur = pos;
    let mut bad = Vec::new();
    loop {
        match sc.next_event() {
            Ok(ScanEvent::ChunkStart { offset }) => {
                cur = offset;
                bad.clear();
            }
            Ok(ScanEvent::Entry(mut e)) => {
                if let EntryMeta::Message(m) = &e.header.meta {
                    let guid = m.guid;
                    // An error here is reported again by the scanner's next step.
                    if let Ok(sha1) = e.sha1() {
                        if sha1 != guid {
                            bad.push(DamagedEntry {
                                chunk: e.location.chunk_offset,
                                header_offset: e.location.header_offset,
                                guid,
                                sha1,
                            });
                        }
                    }
                }
            }
            Ok(ScanEvent::ChunkEnd(info)) => {
                chunks.push(GoodChunk {
                    offset: info.offset,
                    len: info.compressed_len,
                    bad: std::mem::take(&mut bad),
                });
                cur = info.end();
            }
            Ok(ScanEvent::End(end)) => {
                return Ok(match end.tail {
                    Tail::Clean => (None, String::new()),
                    Tail::Truncated => (
                        Some(end.valid_end),
                        "the file ends inside a chunk".to_owned(),
                    ),
                    Tail::Garbage => (
                        Some(end.valid_end),
                        "bytes that do not start a chunk".to_owned(),
                    ),
                    Tail::Failed => (Some(end.valid_end), "the scan failed".to_owned()),
                });
            }
            Err(e) => {
                let at = match &e {
                    ArchiveError::Io { .. } => {
                        return Err(StoreError::Damaged {
                            path: path.to_path_buf(),
                            source: e,
                        })
                    }
                    e => e.chunk_offset().unwrap_or(cur),
                };
                return Ok((Some(at), e.to_string()));
            }
        }
    }
}

/// The offset of the next `1f 8b 08` at or after `from`, if any.
fn next_gzip_header(path: &Path, from: u64) -> Result<Option<u64>> {
    const MAGIC: [u8; 3] = [0x1f, 0x8b, 0x08];
    let mut f = File::open(path).map_err(io(path, "opening the data file"))?;
    f.seek(SeekFrom::Start(from))
        .map_err(io(path, "seeking in the data file"))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut base = from;
    // The last two bytes of the previous block, so a header across two blocks is found.
    let mut keep = 0usize;
    loop {
        let n = f
            .read(&mut buf[keep..])
            .map_err(io(path, "reading the data file"))?;
        if n == 0 {
            return Ok(None);
        }
        let have = keep + n;
        if let Some(i) = buf[..have].windows(3).position(|w| w == MAGIC) {
            return Ok(Some(base + i as u64));
        }
        keep = have.min(2);
        buf.copy_within(have - keep..have, 0);
        base += (have - keep) as u64;
    }
}

/// Writes the intact chunks to `out`: byte for byte, or re-encoded without their damaged
/// messages. Returns the new length and the number of chunks re-encoded.
fn write_good(old: &Path, out_path: &Path, s: &Survey, level: u32) -> Result<(u64, u64)> {
    let out = crate::private::create_new(out_path)
        .map_err(io(out_path, "creating the repaired data file"))?;
    let mut out = BufWriter::with_capacity(256 * 1024, out);
    let mut src = File::open(old).map_err(io(old, "opening the data file"))?;
    let mut len = 0u64;
    let mut rewritten = 0u64;
    for c in &s.chunks {
        src.seek(SeekFrom::Start(c.offset))
            .map_err(io(old, "seeking in the data file"))?;
        if c.bad.is_empty() || !rewrite_chunk(old, c, &mut out, &mut len, level)? {
            let n = std::io::copy(&mut (&mut src).take(c.len), &mut out)
                .map_err(io(out_path, "writing the repaired data file"))?;
            if n != c.len {
                return Err(StoreError::Io {
                    path: old.to_path_buf(),
                    op: "copying a chunk",
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                });
            }
            len += n;
        } else {
            rewritten += 1;
        }
    }
    let f = out
        .into_inner()
        .map_err(|e| io(out_path, "writing the repaired data file")(e.into_error()))?;
    f.sync_all()
        .map_err(io(out_path, "syncing the repaired data file"))?;
    Ok((len, rewritten))
}

/// Re-encodes chunk `c` without its damaged entries, appended to `out` at `len`. Returns
/// false (nothing written) when the chunk holds an entry of a kind this version cannot
/// write: the caller then copies it whole, damaged message included (verify keeps naming
/// it; the message stays marked damaged through the lost-message marks).
fn rewrite_chunk(
    old: &Path,
    c: &GoodChunk,
    out: &mut BufWriter<File>,
    len: &mut u64,
    level: u32,
) -> Result<bool> {
    let damaged = |source| StoreError::Damaged {
        path: old.to_path_buf(),
        source,
    };
    let open = || -> Result<Scanner<std::io::Take<File>>> {
        let mut f = File::open(old).map_err(io(old, "opening the data file"))?;
        f.seek(SeekFrom::Start(c.offset))
            .map_err(io(old, "seeking in the data file"))?;
        Ok(Scanner::starting_at(f.take(c.len), c.offset))
    };
    // First look: any kind this version cannot write?
    let mut sc = open()?;
    loop {
        match sc.next_event().map_err(damaged)? {
            ScanEvent::Entry(e) if matches!(e.header.meta, EntryMeta::Unknown { .. }) => {
                return Ok(false)
            }
            ScanEvent::End(_) => break,
            _ => {}
        }
    }
    let bad: Vec<u64> = c.bad.iter().map(|b| b.header_offset).collect();
    let mut sc = open()?;
    let mut w = ArchiveWriter::new(&mut *out, *len);
    w.set_level(level);
    let arch = |source| StoreError::Archive {
        path: old.to_path_buf(),
        source,
    };
    loop {
        match sc.next_event().map_err(damaged)? {
            ScanEvent::Entry(mut e) => {
                if bad.contains(&e.location.header_offset) {
                    continue;
                }
                if w.chunk_len().is_none() {
                    w.start_chunk().map_err(arch)?;
                }
                let meta = e.header.meta.clone();
                let size = e.header.size;
                w.append_reader(&meta, size, &mut e).map_err(arch)?;
            }
            ScanEvent::End(_) => break,
            _ => {}
        }
    }
    if w.chunk_len().is_some() {
        w.finish_chunk().map_err(arch)?;
    }
    *len = w.file_len();
    Ok(true)
}

/// Every current live record of the old index, by GUID: (folder name, UID). `None` when
/// the old index cannot be read.
type OldRecords = HashMap<Guid, Vec<(String, u32)>>;

fn old_live_records(index: &Path) -> Option<OldRecords> {
    if !index.exists() {
        return None;
    }
    // Read-only, and never creating anything: the old index may be damaged.
    let conn = rusqlite::Connection::open_with_flags(
        index,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .ok()?;
    // The current layout, else version 2's (a store no run has upgraded).
    let mut st = conn
        .prepare(
            "SELECT r.guid, r.uid,
               (SELECT n.folder FROM names n WHERE n.folder_key = r.folder_key
                ORDER BY n.time DESC LIMIT 1)
             FROM records r
             WHERE r.valid_to IS NULL AND r.expunged = 0 AND r.guid != zeroblob(20)",
        )
        .or_else(|_| {
            conn.prepare(
                "SELECT r.guid, r.uid,
                   (SELECT n.folder FROM names n WHERE n.uniqueid = r.uniqueid
                    ORDER BY n.time DESC LIMIT 1)
                 FROM records r
                 WHERE r.valid_to IS NULL AND r.expunged = 0 AND r.guid != zeroblob(20)",
            )
        })
        .ok()?;
    let rows = st
        .query_map([], |r| {
            let g: Vec<u8> = r.get(0)?;
            let uid: u32 = r.get(1)?;
            let folder: Option<String> = r.get(2)?;
            Ok((g, uid, folder))
        })
        .ok()?;
    let mut out: OldRecords = HashMap::new();
    for row in rows {
        let (g, uid, folder) = row.ok()?;
        if g.len() != 20 {
            continue;
        }
        let mut guid = Guid::NULL;
        guid.0.copy_from_slice(&g);
        out.entry(guid)
            .or_default()
            .push((folder.unwrap_or_default(), uid));
    }
    Some(out)
}

/// The messages the repaired store lacks that a folder had, named by folder and UID.
fn lost_messages(store: &Store, old: Option<&OldRecords>) -> Result<Vec<LostMessage>> {
    let cat = store.catalog();
    let mut out = Vec::new();
    match old {
        Some(old) => {
            for (guid, places) in old {
                if !cat.holds_message(guid)? {
                    for (folder, uid) in places {
                        out.push(LostMessage {
                            folder: folder.clone(),
                            uid: *uid,
                            guid: *guid,
                        });
                    }
                }
            }
        }
        None => {
            for d in cat.damaged()? {
                for (folder, uid) in cat.live_places(&d.guid)? {
                    out.push(LostMessage {
                        folder,
                        uid,
                        guid: d.guid,
                    });
                }
            }
        }
    }
    out.sort_by(|a, b| (&a.folder, a.uid).cmp(&(&b.folder, b.uid)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_headers_are_found_across_block_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        // 64 KiB blocks: one header split over the first boundary, one well inside the
        // second block, and a lone 1f 8b (no 08) before them.
        let mut b = vec![0u8; 200 * 1024];
        b[1000] = 0x1f;
        b[1001] = 0x8b;
        let split = 64 * 1024 - 1;
        b[split..split + 3].copy_from_slice(&[0x1f, 0x8b, 0x08]);
        b[100_000..100_003].copy_from_slice(&[0x1f, 0x8b, 0x08]);
        std::fs::write(&p, &b).unwrap();
        assert_eq!(next_gzip_header(&p, 0).unwrap(), Some(split as u64));
        assert_eq!(
            next_gzip_header(&p, split as u64).unwrap(),
            Some(split as u64)
        );
        assert_eq!(
            next_gzip_header(&p, split as u64 + 1).unwrap(),
            Some(100_000)
        );
        assert_eq!(next_gzip_header(&p, 100_001).unwrap(), None);
        assert_eq!(next_gzip_header(&p, 10 * 1024 * 1024).unwrap(), None);
    }

    #[test]
    fn a_file_of_garbage_is_one_lost_range() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let mut b = vec![0xA5u8; 5000];
        // False starts: each fails its own checks, and the range just grows.
        b[10..13].copy_from_slice(&[0x1f, 0x8b, 0x08]);
        b[4000..4003].copy_from_slice(&[0x1f, 0x8b, 0x08]);
        std::fs::write(&p, &b).unwrap();
        let s = survey_file(&p).unwrap();
        assert!(s.chunks.is_empty());
        assert_eq!(s.lost.len(), 1, "{:?}", s.lost);
        assert_eq!((s.lost[0].offset, s.lost[0].len), (0, 5000));
        assert_eq!(s.lost[0].why, "bytes that do not start a chunk");
    }
}
