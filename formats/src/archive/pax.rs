//! PAX extended header records and the ustar header blocks around them.
//!
//! Header blocks are built and decoded with the `tar` crate's [`tar::Header`]. PAX records
//! are encoded and parsed here: `tar` offers an encoder only on its `Builder` (which writes
//! end-of-archive blocks when dropped) and a parser that splits on newlines, which breaks on
//! values that contain one; the record format itself is a few lines.

use std::fmt::Write as _;
use std::str::FromStr;

use super::FieldError;

/// Size of a tar block.
pub const BLOCK: u64 = 512;

/// Largest PAX extended header data accepted, in bytes. Writers never produce more (names
/// are bounded); readers refuse more before allocating.
pub const MAX_PAX_LEN: u64 = 64 * 1024;

/// Largest value the 11-digit octal size field of a ustar header holds.
pub(crate) const USTAR_MAX_SIZE: u64 = 0o77777777777;

/// Rounds `n` up to a whole number of blocks.
pub(crate) fn padded(n: u64) -> u64 {
    n.div_ceil(BLOCK) * BLOCK
}

/// PAX records being built for one entry, in the order they will be written.
#[derive(Debug, Default)]
pub(crate) struct PaxRecords {
    data: Vec<u8>,
}

impl PaxRecords {
    /// Appends `<len> <key>=<value>\n`, where `<len>` counts the whole record including
    /// its own digits.
    pub(crate) fn push(&mut self, key: &str, value: &[u8]) {
        let rest = 1 + key.len() + 1 + value.len() + 1; // ' ' key '=' value '\n'
        let mut digits = 1;
        while rest + digits > 10usize.pow(digits as u32) - 1 {
            digits += 1;
        }
        let mut len = String::new();
        let _ = write!(len, "{}", rest + digits);
        self.data.extend_from_slice(len.as_bytes());
        self.data.push(b' ');
        self.data.extend_from_slice(key.as_bytes());
        self.data.push(b'=');
        self.data.extend_from_slice(value);
        self.data.push(b'\n');
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.data
    }
}

/// One PAX record that the reader did not interpret; kept so that callers can see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaxRecord {
    /// The key.
    pub key: String,
    /// The raw value.
    pub value: Vec<u8>,
}

/// Parsed PAX records of one entry. Later records override earlier ones with the same key,
/// as POSIX says.
#[derive(Debug, Default, Clone)]
pub(crate) struct PaxFields {
    records: Vec<PaxRecord>,
}

/// Why a PAX block did not parse, and where (byte offset inside the PAX data).
#[derive(Debug)]
pub(crate) struct PaxSyntax {
    pub at: usize,
    pub expected: &'static str,
    pub found: String,
}

impl PaxFields {
    /// Parses PAX extended header data. Every record must be
    /// `<decimal len> <key>=<value>\n` with `len` covering the record exactly.
    pub(crate) fn decode(data: &[u8]) -> Result<Self, PaxSyntax> {
        let mut records = Vec::new();
        let mut at = 0usize;
        while at < data.len() {
            let rest = &data[at..];
            let space = rest
                .iter()
                .take(20)
                .position(|&b| b == b' ')
                .ok_or(PaxSyntax {
                    at,
                    expected: "a decimal record length followed by a space",
                    found: show(&rest[..rest.len().min(20)]),
                })?;
            let len: usize = std::str::from_utf8(&rest[..space])
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse().ok())
                .ok_or(PaxSyntax {
                    at,
                    expected: "a decimal record length",
                    found: show(&rest[..space]),
                })?;
            if len < space + 3 || len > rest.len() {
                return Err(PaxSyntax {
                    at,
                    expected: "a record length that fits in the PAX data",
                    found: len.to_string(),
                });
            }
            let record = &rest[space + 1..len];
            if record.last() != Some(&b'\n') {
                return Err(PaxSyntax {
                    at: at + len - 1,
                    expected: "a newline at the end of the record",
                    found: show(&record[record.len() - 1..]),
                });
            }
            let body = &record[..record.len() - 1];
            let eq = body.iter().position(|&b| b == b'=').ok_or(PaxSyntax {
                at: at + space + 1,
                expected: "key=value",
                found: show(&body[..body.len().min(40)]),
            })?;
            let key = std::str::from_utf8(&body[..eq]).map_err(|_| PaxSyntax {
                at: at + space + 1,
                expected: "a UTF-8 key",
                found: show(&body[..eq.min(40)]),
            })?;
            let value = body[eq + 1..].to_vec();
            records.retain(|r: &PaxRecord| r.key != key);
            records.push(PaxRecord {
                key: key.to_owned(),
                value,
            });
            at += len;
        }
        Ok(PaxFields { records })
    }

    /// The raw value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&[u8]> {
        self.records
            .iter()
            .find(|r| r.key == key)
            .map(|r| r.value.as_slice())
    }

    /// The value of `key` as text; the key is required.
    pub(crate) fn text(&self, key: &'static str) -> Result<&str, FieldError> {
        self.text_opt(key)?.ok_or_else(|| FieldError::missing(key))
    }

    /// The value of `key` as text, if present.
    pub(crate) fn text_opt(&self, key: &'static str) -> Result<Option<&str>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => std::str::from_utf8(v)
                .map(Some)
                .map_err(|_| FieldError::new(key, "UTF-8 text", v)),
        }
    }

    /// The value of `key` parsed with [`FromStr`]; the key is required.
    pub(crate) fn parse<T: FromStr>(
        &self,
        key: &'static str,
        expected: &'static str,
    ) -> Result<T, FieldError> {
        self.parse_opt(key, expected)?
            .ok_or_else(|| FieldError::missing(key))
    }

    /// The value of `key` parsed with [`FromStr`], if present.
    pub(crate) fn parse_opt<T: FromStr>(
        &self,
        key: &'static str,
        expected: &'static str,
    ) -> Result<Option<T>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => std::str::from_utf8(v)
                .ok()
                .filter(|s| !s.starts_with('+'))
                .and_then(|s| s.parse().ok())
                .map(Some)
                .ok_or_else(|| FieldError::new(key, expected, v)),
        }
    }

    /// Records that neither this format nor the standard keys it interprets (`path`, `size`)
    /// use.
    pub(crate) fn unknown(&self) -> Vec<PaxRecord> {
        self.records
            .iter()
            .filter(|r| !is_known_key(&r.key))
            .cloned()
            .collect()
    }
}

fn is_known_key(k: &str) -> bool {
    use super::entry::key::*;
    k == "path"
        || k == "size"
        || [
            VERSION,
            KIND,
            RUN,
            TIME,
            GUID,
            INTERNALDATE,
            UNIQUEID,
            UID,
            FOLDER,
            PARTITION,
            FILE,
            STATE,
            SCRIPT,
            ACTIVE,
            USER,
            EVENT,
            STAT_SIZE,
            STAT_MTIME,
            STAT_INO,
        ]
        .contains(&k)
}

/// Shows bytes for an error message: text as text, the rest escaped, at most 64 bytes.
pub(crate) fn show(b: &[u8]) -> String {
    let cut = &b[..b.len().min(64)];
    let mut s = String::new();
    for c in cut.escape_ascii() {
        s.push(c as char);
    }
    if b.len() > cut.len() {
        s.push_str("...");
    }
    s
}

/// A decoded tar header block.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub kind: u8,
    pub size: u64,
    pub path: Vec<u8>,
}

/// Why a header block did not decode.
#[derive(Debug)]
pub(crate) struct BlockError {
    pub expected: &'static str,
    pub found: String,
}

/// Decodes one 512-byte header block: checksum, type, size, path.
pub(crate) fn decode_block(raw: &[u8; BLOCK as usize]) -> Result<Block, BlockError> {
    if raw.iter().all(|&b| b == 0) {
        return Err(BlockError {
            expected: "a tar header (end-of-archive blocks never appear inside a chunk)",
            found: "a zero block".into(),
        });
    }
    let header = tar::Header::from_byte_slice(raw);
    let stored = header.cksum().map_err(|_| BlockError {
        expected: "an octal header checksum",
        found: show(&raw[148..156]),
    })?;
    // The checksum is the sum of all header bytes with the checksum field read as spaces.
    let sum: u32 = raw[..148]
        .iter()
        .chain(&[b' '; 8])
        .chain(&raw[156..])
        .map(|&b| u32::from(b))
        .sum();
    if stored != sum {
        return Err(BlockError {
            expected: "a header whose checksum matches",
            found: format!("stored checksum {stored}, computed {sum}"),
        });
    }
    if &raw[257..263] != b"ustar\0" {
        return Err(BlockError {
            expected: "POSIX ustar magic \"ustar\\0\"",
            found: show(&raw[257..265]),
        });
    }
    let size = header.size().map_err(|_| BlockError {
        expected: "an octal size",
        found: show(&raw[124..136]),
    })?;
    Ok(Block {
        kind: raw[156],
        size,
        path: header.path_bytes().into_owned(),
    })
}
