//! `mailbackup-tools inspect FILE [--json]`: prints what `formats` reads from a Cyrus file or a
//! mailbackup data file, so an operator can see exactly what the backup sees.
//!
//! The kind of file comes from its magic bytes, or for cyrus.index (which has none) from its
//! name. Large files are streamed: records and entries are printed as they are read. The JSON
//! shape is documented in docs/inspect.md; keep the two in step.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use formats::archive::{ScanEvent, Scanner};
use formats::cyrus::{header, index, mailboxes, twoskip};
use formats::InFileExt;
use serde_json::{json, Value};

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A mailbox's cyrus.header.
    CyrusHeader,
    /// A mailbox's cyrus.index.
    CyrusIndex,
    /// A twoskip database; mailboxes.db is shown as the mailbox list.
    Twoskip,
    /// A mailbackup data file (gzip chunks of tar entries).
    Archive,
}

impl Kind {
    /// The name used in output and in `--kind`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::CyrusHeader => "cyrus.header",
            Kind::CyrusIndex => "cyrus.index",
            Kind::Twoskip => "twoskip",
            Kind::Archive => "archive",
        }
    }
}

/// Recognises a file from its first bytes and its name.
pub fn detect(path: &Path, head: &[u8]) -> Option<Kind> {
    // cyrus.header's magic (with its quote) is longer than the bytes sniffed: compare what fits.
    let header_magic = &header::MAGIC[..head.len().min(header::MAGIC.len())];
    if head.len() >= 20 && head.starts_with(header_magic) {
        Some(Kind::CyrusHeader)
    } else if head.starts_with(twoskip::MAGIC) {
        Some(Kind::Twoskip)
    } else if head.starts_with(&[0x1f, 0x8b]) {
        Some(Kind::Archive)
    } else if path.file_name().is_some_and(|n| n == "cyrus.index") {
        Some(Kind::CyrusIndex)
    } else {
        None
    }
}

/// Prints `path` to `out`, as text or as one JSON document.
pub fn inspect(path: &Path, json: bool, out: &mut dyn Write) -> Result<()> {
    let mut head = [0u8; 64];
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let n =
        read_up_to(&mut file, &mut head).with_context(|| format!("reading {}", path.display()))?;
    let Some(kind) = detect(path, &head[..n]) else {
        bail!(
            "{}: cannot tell what this file holds: it starts with none of the magic bytes of \
             cyrus.header, twoskip or gzip, and is not named cyrus.index",
            path.display()
        );
    };
    let shown = path.display().to_string();
    match kind {
        Kind::CyrusHeader => cyrus_header(&shown, &std::fs::read(path)?, json, out),
        Kind::CyrusIndex => cyrus_index(path, &std::fs::read(path)?, json, out),
        Kind::Twoskip => twoskip_db(path, json, out),
        Kind::Archive => {
            // The sniffing above moved the file's position: scan from the start.
            file.seek(SeekFrom::Start(0))
                .with_context(|| format!("reading {}", path.display()))?;
            archive(&shown, BufReader::with_capacity(1 << 16, file), json, out)
        }
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Seconds since the epoch as an RFC 3339 time, or the bare number if out of range.
fn when(secs: i64) -> String {
    jiff::Timestamp::from_second(secs)
        .map(|t| t.to_string())
        .unwrap_or_else(|_| secs.to_string())
}

fn cyrus_header(shown: &str, bytes: &[u8], json: bool, out: &mut dyn Write) -> Result<()> {
    let h = header::parse(bytes).in_file(shown)?;
    if json {
        let doc = json!({"file": shown, "kind": Kind::CyrusHeader.name(), "header": h});
        writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
        return Ok(());
    }
    writeln!(out, "{shown}: cyrus.header")?;
    print_fields(out, &serde_json::to_value(&h)?)
}

/// Prints the fields of a JSON object as `name: value` lines.
fn print_fields(out: &mut dyn Write, v: &Value) -> Result<()> {
    if let Value::Object(map) = v {
        for (k, v) in map {
            let shown = match v {
                Value::String(s) => s.clone(),
                Value::Object(t)
                    if t.len() == 2 && t.contains_key("secs") && t.contains_key("nanos") =>
                {
                    match (t["secs"].as_i64(), t["nanos"].as_u64()) {
                        (Some(0), Some(0)) => "-".into(),
                        (Some(secs), Some(0)) => when(secs),
                        _ => v.to_string(),
                    }
                }
                Value::Null => "-".into(),
                other => other.to_string(),
            };
            writeln!(out, "  {k}: {shown}")?;
        }
    }
    Ok(())
}

fn cyrus_index(path: &Path, bytes: &[u8], json: bool, out: &mut dyn Write) -> Result<()> {
    let shown = path.display().to_string();
    let idx = index::Index::parse(bytes).in_file(&shown)?;
    // Keyword names live in the cyrus.header beside the index; without it, bits stay numbers.
    let header_path = path.with_file_name("cyrus.header");
    let user_flags: Vec<Option<String>> = match std::fs::read(&header_path) {
        Ok(b) => header::parse(&b).in_file(header_path.display())?.user_flags,
        Err(_) => Vec::new(),
    };
    let h = idx.header();
    if json {
        let head = json!({"file": shown, "kind": Kind::CyrusIndex.name(), "header": h});
        let head = serde_json::to_string_pretty(&head)?;
        // Stream the records into the document: an index can hold millions.
        write!(
            out,
            "{},\n  \"records\": [",
            head.trim_end().trim_end_matches('}').trim_end()
        )?;
        for (i, r) in idx.records().enumerate() {
            let r = r.in_file(&shown)?;
            let mut v = serde_json::to_value(&r)?;
            v["flags"] = json!(r.flag_names(&user_flags));
            v["expunged"] = json!(r.is_expunged());
            write!(out, "{}\n    {}", if i == 0 { "" } else { "," }, v)?;
        }
        writeln!(out, "\n  ]\n}}")?;
        return Ok(());
    }
    writeln!(out, "{shown}: cyrus.index")?;
    print_fields(out, &serde_json::to_value(h)?)?;
    writeln!(
        out,
        "{:>8}  {:<20}  {:>10}  {:>8}  {:<40}  flags",
        "uid", "internaldate", "size", "modseq", "guid"
    )?;
    for r in idx.records() {
        let r = r.in_file(&shown)?;
        let mut flags = r.flag_names(&user_flags).join(" ");
        if r.is_expunged() {
            flags.push_str(" [expunged]");
        }
        writeln!(
            out,
            "{:>8}  {:<20}  {:>10}  {:>8}  {:<40}  {}",
            r.uid,
            when(r.internaldate.secs),
            r.size,
            r.modseq
                .map(|m| m.to_string())
                .unwrap_or_else(|| "-".into()),
            r.guid.map(|g| g.to_hex()).unwrap_or_else(|| "-".into()),
            flags.trim()
        )?;
    }
    Ok(())
}

fn twoskip_db(path: &Path, json: bool, out: &mut dyn Write) -> Result<()> {
    let shown = path.display().to_string();
    // Take the lock Cyrus's readers take, so a live mailboxes.db is read consistently.
    let bytes = backupd::spool::read_locked(path)?;
    let db = twoskip::Twoskip::open(&bytes).in_file(&shown)?;
    let is_mailbox_list = path.file_name().is_some_and(|n| n == "mailboxes.db");
    if is_mailbox_list {
        return mailbox_list(&shown, &bytes, json, out);
    }
    let h = db.header();
    if !json {
        writeln!(
            out,
            "{shown}: twoskip, version {}, generation {}, {} records{}",
            h.version,
            h.generation,
            h.num_records,
            if h.dirty {
                ", dirty (a writer has not committed)"
            } else {
                ""
            }
        )?;
    } else {
        write!(
            out,
            "{{\n  \"file\": {},\n  \"kind\": \"twoskip\",\n  \"header\": {},\n  \"entries\": [",
            json!(shown),
            json!({"version": h.version, "generation": h.generation,
                   "num_records": h.num_records, "current_size": h.current_size, "dirty": h.dirty})
        )?;
    }
    for (i, e) in db.iter().enumerate() {
        let e = e.in_file(&shown)?;
        let key = String::from_utf8_lossy(e.key);
        let value = String::from_utf8_lossy(e.value);
        if json {
            let v = json!({"key": key, "value": value, "offset": e.offset});
            write!(out, "{}\n    {}", if i == 0 { "" } else { "," }, v)?;
        } else {
            writeln!(out, "  {key:?} = {value:?}")?;
        }
    }
    if json {
        writeln!(out, "\n  ]\n}}")?;
    }
    Ok(())
}

fn mailbox_list(shown: &str, bytes: &[u8], json: bool, out: &mut dyn Write) -> Result<()> {
    let list = mailboxes::mailboxes(bytes, mailboxes::DEFAULT_DELETED_PREFIX).in_file(shown)?;
    if json {
        write!(
            out,
            "{{\n  \"file\": {},\n  \"kind\": \"mailboxes.db\",\n  \"mailboxes\": [",
            json!(shown)
        )?;
    } else {
        writeln!(out, "{shown}: mailboxes.db")?;
        writeln!(
            out,
            "{:<24}  {:<10}  {:<6}  {:<20}  folder",
            "uniqueid", "partition", "type", "user"
        )?;
    }
    for (i, m) in list.enumerate() {
        let m = m.in_file(shown)?;
        if json {
            let v = serde_json::to_value(&m)?;
            write!(out, "{}\n    {}", if i == 0 { "" } else { "," }, v)?;
        } else {
            writeln!(
                out,
                "{:<24}  {:<10}  {:<6}  {:<20}  {}",
                m.uniqueid,
                m.partition,
                m.mbtype.to_string(),
                m.name.userid().unwrap_or_else(|| "(shared)".into()),
                m.name.folder()
            )?;
        }
    }
    if json {
        writeln!(out, "\n  ]\n}}")?;
    }
    Ok(())
}

fn archive(shown: &str, file: impl Read, json: bool, out: &mut dyn Write) -> Result<()> {
    let mut scanner = Scanner::new(file);
    let mut first_chunk = true;
    let mut first_entry = true;
    // A torn tail can end the scan inside a chunk that never closed.
    let mut in_chunk = false;
    if json {
        write!(
            out,
            "{{\n  \"file\": {},\n  \"kind\": \"archive\",\n  \"chunks\": [",
            json!(shown)
        )?;
    } else {
        writeln!(out, "{shown}: mailbackup data file")?;
    }
    loop {
        match scanner.next_event().in_file(shown)? {
            ScanEvent::ChunkStart { offset } => {
                in_chunk = true;
                if json {
                    write!(
                        out,
                        "{}\n    {{\"offset\": {offset}, \"entries\": [",
                        if first_chunk { "" } else { "," }
                    )?;
                    first_chunk = false;
                    first_entry = true;
                } else {
                    writeln!(out, "chunk at byte {offset}")?;
                }
            }
            ScanEvent::Entry(e) => {
                let h = &e.header;
                let l = &e.location;
                if json {
                    let v = json!({
                        "path": h.path, "size": h.size, "meta": h.meta,
                        "header_offset": l.header_offset, "data_offset": l.data_offset,
                    });
                    write!(out, "{}\n      {}", if first_entry { "" } else { "," }, v)?;
                    first_entry = false;
                } else {
                    writeln!(
                        out,
                        "  +{:<10} {:>10}  {:<8} {}",
                        l.header_offset,
                        h.size,
                        h.meta.kind(),
                        h.path
                    )?;
                }
            }
            ScanEvent::ChunkEnd(c) => {
                in_chunk = false;
                if json {
                    write!(
                        out,
                        "\n    ], \"compressed_len\": {}, \"uncompressed_len\": {}, \"entry_count\": {}}}",
                        c.compressed_len, c.uncompressed_len, c.entries
                    )?;
                } else {
                    writeln!(
                        out,
                        "  end of chunk: {} entries, {} bytes compressed, {} uncompressed",
                        c.entries, c.compressed_len, c.uncompressed_len
                    )?;
                }
            }
            ScanEvent::End(end) => {
                let tail = format!("{:?}", end.tail);
                if json && in_chunk {
                    write!(out, "\n    ], \"complete\": false}}")?;
                } else if in_chunk {
                    writeln!(
                        out,
                        "  chunk incomplete: the file ends inside it (torn tail)"
                    )?;
                }
                if json {
                    writeln!(
                        out,
                        "\n  ],\n  \"valid_end\": {},\n  \"file_len\": {},\n  \"tail\": {}\n}}",
                        end.valid_end,
                        end.file_len,
                        json!(tail)
                    )?;
                } else {
                    writeln!(
                        out,
                        "valid data ends at byte {} of {} ({tail})",
                        end.valid_end, end.file_len
                    )?;
                }
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use formats::archive::{ArchiveWriter, EntryMeta, Message};
    use formats::{Guid, Timestamp};

    const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/cyrus-3.6");

    fn fixture_json(name: &str) -> Value {
        serde_json::from_str(&std::fs::read_to_string(Path::new(FIXTURE).join(name)).unwrap())
            .unwrap()
    }

    /// The unique id of a mailbox of the fixture, from mboxlist.json (`ctl_mboxlist -d`).
    fn uniqueid(name: &str) -> String {
        fixture_json("mboxlist.json")[name]["uniqueid"]
            .as_str()
            .unwrap()
            .to_string()
    }

    /// The INBOX's directory, relative to the fixture.
    fn inbox() -> String {
        let id = uniqueid("user.fx0");
        format!("spool/p1/uuid/{}/{}/{id}", &id[..1], &id[1..2])
    }

    fn run(path: &Path, json: bool) -> String {
        let mut out = Vec::new();
        inspect(path, json, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn index_text_names_keywords_and_expunged_records() {
        let text = run(&Path::new(FIXTURE).join(inbox()).join("cyrus.index"), false);
        assert!(text.contains("minor_version: 17"), "{text}");
        let uid1 = text
            .lines()
            .find(|l| l.trim_start().starts_with("1  "))
            .unwrap();
        let truth = fixture_json("truth.json");
        let guid = truth["fx0/INBOX"]["messages"][0]["sha1"].as_str().unwrap();
        assert!(uid1.contains(guid), "{uid1}");
        assert!(uid1.ends_with("\\Flagged $Work"), "{uid1}");
        let uid3 = text
            .lines()
            .find(|l| l.trim_start().starts_with("3  "))
            .unwrap();
        assert!(uid3.ends_with("[expunged]"), "{uid3}");
    }

    #[test]
    fn index_json_is_one_document_with_every_record() {
        let doc: Value = serde_json::from_str(&run(
            &Path::new(FIXTURE).join(inbox()).join("cyrus.index"),
            true,
        ))
        .unwrap();
        assert_eq!(doc["kind"], "cyrus.index");
        let truth = fixture_json("truth.json");
        assert_eq!(
            doc["header"]["uidvalidity"],
            truth["fx0/INBOX"]["uidvalidity"]
        );
        let records = doc["records"].as_array().unwrap();
        assert_eq!(records.len(), 11);
        assert_eq!(records[0]["flags"], json!(["\\Flagged", "$Work"]));
        assert_eq!(records[2]["expunged"], true);
    }

    #[test]
    fn header_and_mailbox_list_are_recognised() {
        let doc: Value = serde_json::from_str(&run(
            &Path::new(FIXTURE).join(inbox()).join("cyrus.header"),
            true,
        ))
        .unwrap();
        assert_eq!(doc["header"]["unique_id"], uniqueid("user.fx0"));
        let text = run(&Path::new(FIXTURE).join("conf/mailboxes.db"), false);
        let archive = uniqueid("user.fx0.Archive.2025");
        assert!(text.contains(&format!("{archive}  p2")), "{text}");
        assert!(text.contains("Archive/2025"), "{text}");
        let doc: Value =
            serde_json::from_str(&run(&Path::new(FIXTURE).join("conf/mailboxes.db"), true))
                .unwrap();
        assert_eq!(doc["mailboxes"].as_array().unwrap().len(), 5);
    }

    #[test]
    fn archive_lists_chunks_entries_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("backupdata-1.tar.gz");
        let mut w = ArchiveWriter::new(Vec::new(), 0);
        w.start_chunk().unwrap();
        for body in [
            &b"Subject: one\r\n\r\nhello\r\n"[..],
            b"Subject: two\r\n\r\nworld\r\n",
        ] {
            let meta = EntryMeta::Message(Message {
                guid: Guid::of(body),
                run: 1,
                time: Timestamp::from_secs(1_795_415_424),
                origin: None,
                internal_date: None,
            });
            w.append(&meta, body).unwrap();
        }
        w.finish_chunk().unwrap();
        let mut bytes = w.into_inner().unwrap();
        let valid = bytes.len();
        bytes.extend_from_slice(&[0x1f, 0x8b, 8, 0, 0]); // a chunk cut short by a crash
        std::fs::write(&path, &bytes).unwrap();

        let text = run(&path, false);
        assert!(
            text.contains(&format!(
                "files/{}",
                Guid::of(b"Subject: one\r\n\r\nhello\r\n")
            )),
            "{text}"
        );
        assert!(text.contains("2 entries"), "{text}");
        assert!(
            text.contains(&format!(
                "valid data ends at byte {valid} of {}",
                bytes.len()
            )),
            "{text}"
        );
        let doc: Value = serde_json::from_str(&run(&path, true)).unwrap();
        assert_eq!(doc["valid_end"], valid);
        let entries = doc["chunks"][0]["entries"].as_array().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0]["meta"]["kind"], "message");
    }

    #[test]
    fn unknown_files_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.txt");
        std::fs::write(&path, "hello").unwrap();
        let err = inspect(&path, false, &mut Vec::new())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("notes.txt") && err.contains("cannot tell"),
            "{err}"
        );
    }
}
