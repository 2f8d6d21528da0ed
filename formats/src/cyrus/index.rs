//! A mailbox's `cyrus.index`: one header, then one fixed-size record per message.
//!
//! The byte layout is described in docs/cyrus-index.md. In short: all integers are big-endian;
//! the header starts with generation, format, minor version, start offset (= where the first
//! record begins), record size and record count; from minor version 12 on, the header and
//! every record end with a CRC-32 (the zlib/IEEE one) of the bytes before it.
//!
//! Every minor version Cyrus has read since 2.4 is known here (6-10, 12-20; 11 was never
//! released). Cyrus 2.5-3.0 write 13, 3.2 writes 16, 3.4-3.8 write 17, 3.10-3.12 write 19
//! and the development branch writes 20. All versions share one table of field offsets,
//! `HEADER_FIELDS` and `RECORD_FIELDS`: each row says in which versions a field sits where,
//! so parsing and writing are one loop each, not one function per version.
//!
//! Records are read lazily ([`Index::records`]): an index can hold millions of them.

use serde::{Serialize, Serializer};
use std::io::Write;

// The shared types, also under this module's path. Cyrus stores times unsigned (32-bit
// seconds before version 20, 64-bit nanoseconds from it): every stored value converts to a
// `Timestamp`, and the writer refuses times before 1970 (`EncodeError::BeforeEpoch`).
pub use crate::{Guid, Timestamp};

/// The minor versions this module reads and writes.
pub const SUPPORTED_VERSIONS: [u32; 14] = [6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17, 18, 19, 20];

/// Header size and record size of each minor version (Cyrus writes these into the header as
/// start offset and record size; a reader must not trust them blindly).
const SIZES: [(u32, usize, usize); 14] = [
    (6, 76, 60),
    (7, 76, 72),
    (8, 92, 80),
    (9, 96, 80),
    (10, 96, 88),
    (12, 128, 96),
    (13, 128, 104),
    (14, 160, 104),
    (15, 160, 104),
    (16, 160, 112),
    (17, 160, 112),
    (18, 160, 112),
    (19, 160, 112),
    (20, 192, 144),
];

/// First version whose header and records end with a CRC-32.
const FIRST_CRC_VERSION: u32 = 12;

/// The sizes Cyrus uses for one minor version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexLayout {
    /// The minor version.
    pub version: u32,
    /// Bytes of the header, CRC included: the start offset Cyrus writes.
    pub header_size: usize,
    /// Bytes of one record, CRC included: the record size Cyrus writes.
    pub record_size: usize,
}

impl IndexLayout {
    /// The layout of `version`, if it is one of [`SUPPORTED_VERSIONS`].
    pub fn of(version: u32) -> Option<IndexLayout> {
        SIZES
            .iter()
            .find(|s| s.0 == version)
            .map(|&(version, header_size, record_size)| IndexLayout {
                version,
                header_size,
                record_size,
            })
    }

    /// Whether header and records carry a CRC-32 in their last 4 bytes.
    pub fn has_crc(&self) -> bool {
        self.version >= FIRST_CRC_VERSION
    }
}

/// The IMAP system flags of a record: the low 16 bits of the stored flags word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SystemFlags(pub u16);

impl SystemFlags {
    /// `\Answered`
    pub const ANSWERED: u16 = 1 << 0;
    /// `\Flagged`
    pub const FLAGGED: u16 = 1 << 1;
    /// `\Deleted`
    pub const DELETED: u16 = 1 << 2;
    /// `\Draft`
    pub const DRAFT: u16 = 1 << 3;
    /// `\Seen` (for the mailbox owner; other users' seen state lives in their seen.db)
    pub const SEEN: u16 = 1 << 4;

    const NAMES: [(u16, &'static str); 5] = [
        (Self::ANSWERED, "\\Answered"),
        (Self::FLAGGED, "\\Flagged"),
        (Self::DELETED, "\\Deleted"),
        (Self::DRAFT, "\\Draft"),
        (Self::SEEN, "\\Seen"),
    ];

    /// Whether every bit of `bits` is set.
    pub fn contains(&self, bits: u16) -> bool {
        self.0 & bits == bits
    }

    /// The IMAP names of the set flags. Bits Cyrus does not define (none are written today)
    /// are shown as `0x....` so that nothing is silently dropped.
    pub fn names(&self) -> Vec<String> {
        let names = Self::NAMES.map(|(bit, name)| (u32::from(bit), name));
        bit_names(u32::from(self.0), &names, 4)
    }
}

impl Serialize for SystemFlags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.names().serialize(s)
    }
}

/// The names of the bits of `word` that `table` names, in table order, then the unnamed set
/// bits as one hex number of `digits` digits.
fn bit_names(word: u32, table: &[(u32, &str)], digits: usize) -> Vec<String> {
    let mut out: Vec<String> = table
        .iter()
        .filter(|(bit, _)| word & bit == *bit)
        .map(|(_, name)| (*name).to_string())
        .collect();
    let unknown = word & !table.iter().fold(0, |acc, (bit, _)| acc | bit);
    if unknown != 0 {
        out.push(format!("{unknown:#0w$x}", w = digits + 2));
    }
    out
}

/// Cyrus's own bookkeeping bits of a record: the high 16 bits of the stored flags word,
/// kept here in place (bit 31 is [`InternalFlags::EXPUNGED`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct InternalFlags(pub u32);

impl InternalFlags {
    /// The message was snoozed (JMAP); Cyrus 3.2+.
    pub const SNOOZED: u32 = 1 << 26;
    /// The message was split off its conversation; Cyrus 3.2+.
    pub const SPLIT_CONVERSATION: u32 = 1 << 27;
    /// Cleanup (unlink of the file) is pending.
    pub const NEEDS_CLEANUP: u32 = 1 << 28;
    /// The message file lives on the archive partition.
    pub const ARCHIVED: u32 = 1 << 29;
    /// The message file has been removed; only the record remains.
    pub const UNLINKED: u32 = 1 << 30;
    /// The message is expunged: invisible to IMAP, kept until `cyr_expire` removes it.
    pub const EXPUNGED: u32 = 1 << 31;

    const NAMES: [(u32, &'static str); 6] = [
        (Self::SNOOZED, "snoozed"),
        (Self::SPLIT_CONVERSATION, "split_conversation"),
        (Self::NEEDS_CLEANUP, "needs_cleanup"),
        (Self::ARCHIVED, "archived"),
        (Self::UNLINKED, "unlinked"),
        (Self::EXPUNGED, "expunged"),
    ];

    /// Whether every bit of `bits` is set.
    pub fn contains(&self, bits: u32) -> bool {
        self.0 & bits == bits
    }

    /// Lowercase names of the set bits; unknown bits as `0x........`.
    pub fn names(&self) -> Vec<String> {
        bit_names(self.0, &Self::NAMES, 8)
    }
}

impl Serialize for InternalFlags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.names().serialize(s)
    }
}

/// The 128 user-flag (keyword) bits of a record. Bit `i` is word `i / 32`, bit `i % 32`; it
/// means the keyword named by entry `i` of the user flags in cyrus.header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct UserFlags(pub [u32; 4]);

impl UserFlags {
    /// Whether bit `i` (0..128) is set.
    pub fn get(&self, i: usize) -> bool {
        i < 128 && self.0[i / 32] & (1 << (i % 32)) != 0
    }

    /// Sets bit `i` (0..128; larger values are ignored).
    pub fn set(&mut self, i: usize) {
        if i < 128 {
            self.0[i / 32] |= 1 << (i % 32);
        }
    }

    /// The numbers of the set bits, ascending.
    pub fn bits(&self) -> impl Iterator<Item = usize> + '_ {
        (0..128).filter(|&i| self.get(i))
    }
}

impl Serialize for UserFlags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.bits())
    }
}

/// The header of a cyrus.index file. Fields a version lacks are `None` (Cyrus fills some of
/// them in memory: `exists` = `num_records` and `deletedmodseq` = `highestmodseq` before 12,
/// `changes_epoch` = `last_repack_time` before 17).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct IndexHeader {
    /// Bumped by Cyrus when the file is rewritten in place (0 in 3.x files).
    pub generation_no: u32,
    /// 0 = normal mailbox, 1 = netnews.
    pub format: u32,
    /// The minor version, which fixes the layout.
    pub minor_version: u32,
    /// Byte offset of the first record.
    pub start_offset: u32,
    /// Bytes per record.
    pub record_size: u32,
    /// Number of records, expunged ones included.
    pub num_records: u32,
    /// Time of the last append.
    pub last_appenddate: Timestamp,
    /// Highest UID ever given out (UIDNEXT - 1).
    pub last_uid: u32,
    /// Bytes of messages counted against the quota.
    pub quota_mailbox_used: u64,
    /// Time of the last POP3 login.
    pub pop3_last_login: Timestamp,
    /// IMAP UIDVALIDITY.
    pub uidvalidity: u32,
    /// Number of \Deleted messages.
    pub deleted: u32,
    /// Number of \Answered messages.
    pub answered: u32,
    /// Number of \Flagged messages.
    pub flagged: u32,
    /// Mailbox option bits (OPT_POP3_NEW_UIDL 1<<0, OPT_IMAP_SHAREDSEEN 1<<2,
    /// OPT_IMAP_DUPDELIVER 1<<3, OPT_IMAP_HAS_ALARMS 1<<4, OPT_MAILBOX_NEEDS_UNLINK 1<<29,
    /// OPT_MAILBOX_NEEDS_REPACK 1<<30, OPT_MAILBOX_DELETED 1<<31).
    pub options: u32,
    /// Records in cyrus.cache no longer referenced.
    pub leaked_cache_records: u32,
    /// IMAP HIGHESTMODSEQ (8+).
    pub highestmodseq: Option<u64>,
    /// Modseq below which expunges are forgotten (12+).
    pub deletedmodseq: Option<u64>,
    /// Number of records not expunged: IMAP EXISTS (12+).
    pub exists: Option<u32>,
    /// `last_updated` of the oldest expunged record (12+).
    pub first_expunged: Option<Timestamp>,
    /// Time of the last repack (12+).
    pub last_repack_time: Option<Timestamp>,
    /// CRC-32 of the whole cyrus.header file when this index was written (12+).
    pub header_file_crc: Option<u32>,
    /// XOR of the replication CRCs of the records not expunged (12+).
    pub sync_crc_basic: Option<u32>,
    /// Last UID the owner was told about (\Recent) (12+).
    pub recentuid: Option<u32>,
    /// When `recentuid` was last set (12+).
    pub recenttime: Option<Timestamp>,
    /// Messages older than this are hidden from POP3 (13+).
    pub pop3_show_after: Option<Timestamp>,
    /// Bytes of annotations counted against the quota (13+).
    pub quota_annot_used: Option<u64>,
    /// Replication CRC of the annotations (13+).
    pub sync_crc_annot: Option<u32>,
    /// Number of messages the owner has not \Seen (14+).
    pub unseen: Option<u32>,
    /// Modseq at which the mailbox was created (16+).
    pub createdmodseq: Option<u64>,
    /// Time from which changes can be computed (17+).
    pub changes_epoch: Option<Timestamp>,
    /// Bytes of \Deleted messages (18+).
    pub quota_deleted_used: Option<u64>,
    /// Bytes of expunged messages (18+).
    pub quota_expunged_used: Option<u64>,
}

/// One message record of a cyrus.index file. Fields a version lacks are `None`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct IndexRecord {
    /// The message UID; the message file is `<uid>.`.
    pub uid: u32,
    /// IMAP INTERNALDATE.
    pub internaldate: Timestamp,
    /// The Date: header, as a time.
    pub sentdate: Timestamp,
    /// IMAP RFC822.SIZE: bytes of the message file.
    pub size: u64,
    /// Bytes of the message header.
    pub header_size: u32,
    /// The Date: header converted to GMT.
    pub gmtime: Timestamp,
    /// Byte offset of the message's entry in cyrus.cache (48 bits: the high 16 are stored in
    /// the high half of the cache version word).
    pub cache_offset: u64,
    /// When this record last changed.
    pub last_updated: Timestamp,
    /// IMAP system flags.
    pub system_flags: SystemFlags,
    /// Cyrus's internal flags (expunged, unlinked, archived, ...).
    pub internal_flags: InternalFlags,
    /// Keyword bits; see [`IndexRecord::flag_names`].
    pub user_flags: UserFlags,
    /// Version of the cyrus.cache entry format (low 16 bits of its word).
    pub cache_version: u16,
    /// When the message was saved into this mailbox (15+).
    pub savedate: Option<Timestamp>,
    /// SHA-1 of the message file (10+).
    pub guid: Option<Guid>,
    /// CONDSTORE modseq of the last change (8+).
    pub modseq: Option<u64>,
    /// Conversation id (13+).
    pub cid: Option<u64>,
    /// Modseq at which the record was created (16+).
    pub createdmodseq: Option<u64>,
    /// Conversation id before a split (20+).
    pub basecid: Option<u64>,
    /// CRC-32 of the message's cyrus.cache entry (12+).
    pub cache_crc: Option<u32>,
}

impl IndexRecord {
    /// Whether the record is expunged: no longer visible to IMAP (Cyrus's delayed expunge keeps
    /// record and file until `cyr_expire`).
    pub fn is_expunged(&self) -> bool {
        self.internal_flags.contains(InternalFlags::EXPUNGED)
    }

    /// Whether the message file has been removed (the record stays until a repack).
    pub fn is_unlinked(&self) -> bool {
        self.internal_flags.contains(InternalFlags::UNLINKED)
    }

    /// Whether the message file lives on the archive partition.
    pub fn is_archived(&self) -> bool {
        self.internal_flags.contains(InternalFlags::ARCHIVED)
    }

    /// Whether Cyrus still has to unlink the message file.
    pub fn needs_cleanup(&self) -> bool {
        self.internal_flags.contains(InternalFlags::NEEDS_CLEANUP)
    }

    /// The IMAP flags of the message: system flags, then the keywords whose bits are set, named
    /// through `user_flag_names` (entry `i` names bit `i`; the user flags of cyrus.header).
    /// A set bit without a name is skipped, as Cyrus does.
    pub fn flag_names<S: AsRef<str>>(&self, user_flag_names: &[Option<S>]) -> Vec<String> {
        let mut out = self.system_flags.names();
        for i in self.user_flags.bits() {
            if let Some(Some(name)) = user_flag_names.get(i) {
                out.push(name.as_ref().to_string());
            }
        }
        out
    }
}

/// What went wrong reading a cyrus.index. Offsets are bytes from the start of the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IndexError {
    /// The file ends before something it must hold.
    #[error("at byte {offset}: expected {expected} bytes of {what}, found {found}")]
    Short {
        /// Where the missing part starts.
        offset: u64,
        /// What was being read.
        what: &'static str,
        /// Bytes needed from `offset`.
        expected: u64,
        /// Bytes the file has from `offset`.
        found: u64,
    },
    /// The file ends inside (or before) a record the header counts.
    #[error("at byte {offset}: expected {expected} bytes of record {recno}, found {found}")]
    TruncatedRecord {
        /// 1-based record number, as Cyrus counts.
        recno: u32,
        /// Where the record starts.
        offset: u64,
        /// The record size.
        expected: u64,
        /// Bytes the file has from `offset`.
        found: u64,
    },
    /// A minor version this reader does not know.
    #[error("at byte 8: expected a known minor version (6-10, 12-20), found {found}")]
    UnknownVersion {
        /// The version in the file.
        found: u32,
    },
    /// The start offset is smaller than the version's header.
    #[error(
        "at byte 12: expected a start offset of at least {expected} (minor version {version}), found {found}"
    )]
    StartOffsetTooSmall {
        /// The version in the file.
        version: u32,
        /// The version's header size.
        expected: u32,
        /// The start offset in the file.
        found: u32,
    },
    /// The record size is smaller than the version's record.
    #[error(
        "at byte 16: expected a record size of at least {expected} (minor version {version}), found {found}"
    )]
    RecordSizeTooSmall {
        /// The version in the file.
        version: u32,
        /// The version's record size.
        expected: u32,
        /// The record size in the file.
        found: u32,
    },
    /// A minor version without a CRC whose header checks as one with a CRC would, with the
    /// minor version of that one: a damaged minor version (a bit flip from a version with a
    /// CRC to an older one), which would otherwise read the file with the wrong layout.
    #[error("at byte 8: minor version {found} has no CRC, but the header checks as version {crc_version}'s: the minor version is damaged")]
    DamagedVersion {
        /// The minor version in the file.
        found: u32,
        /// The version whose header CRC the bytes match.
        crc_version: u32,
    },
    /// The header's CRC does not match its bytes.
    #[error("at byte {offset}: expected header CRC {computed:#010x}, found {stored:#010x}")]
    BadHeaderCrc {
        /// Where the stored CRC is.
        offset: u64,
        /// The CRC in the file.
        stored: u32,
        /// The CRC of the header's bytes.
        computed: u32,
    },
    /// A record's CRC does not match its bytes.
    #[error(
        "at byte {offset} (record {recno}): expected record CRC {computed:#010x}, found {stored:#010x}"
    )]
    BadRecordCrc {
        /// 1-based record number, as Cyrus counts.
        recno: u32,
        /// Where the stored CRC is.
        offset: u64,
        /// The CRC in the file.
        stored: u32,
        /// The CRC of the record's bytes.
        computed: u32,
    },
}

/// What went wrong writing a cyrus.index.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The header names a version this module cannot write.
    #[error("cannot write minor version {0} (expected one of 6-10, 12-20)")]
    UnknownVersion(u32),
    /// Start offset or record size in the header is smaller than the version needs.
    #[error("minor version {version} needs start offset >= {header_size} and record size >= {record_size}, header says {start_offset} and {found_record_size}")]
    BadSizes {
        /// The version.
        version: u32,
        /// Its header size.
        header_size: usize,
        /// Its record size.
        record_size: usize,
        /// The header's start offset.
        start_offset: u32,
        /// The header's record size.
        found_record_size: u32,
    },
    /// A value does not fit the field of this version (e.g. a 5 GB size before version 20).
    #[error("{field} = {value} does not fit minor version {version}")]
    DoesNotFit {
        /// The field.
        field: String,
        /// The value.
        value: String,
        /// The version.
        version: u32,
    },
    /// A time before 1970: Cyrus stores times as unsigned numbers.
    #[error("{field} = {value} is before 1970, which cyrus.index cannot store")]
    BeforeEpoch {
        /// The field.
        field: String,
        /// The time, as [`Timestamp`] displays it.
        value: String,
    },
    /// The number of records written differs from the header's `num_records`.
    #[error("header says {expected} records, {found} were given")]
    CountMismatch {
        /// `num_records`
        expected: u32,
        /// Records written.
        found: u64,
    },
    /// The writer failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

// ---------------------------------------------------------------------------------------------
// The table of field offsets.

/// How a field is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    /// 32-bit unsigned.
    U32,
    /// 64-bit unsigned.
    U64,
    /// 32-bit seconds since the epoch.
    Secs,
    /// 64-bit nanoseconds since the epoch.
    Nanos,
    /// 20 bytes of SHA-1.
    Guid,
    /// 4 x 32-bit words of user flags.
    Bits,
}

impl Ty {
    fn len(self) -> usize {
        match self {
            Ty::U32 | Ty::Secs => 4,
            Ty::U64 | Ty::Nanos => 8,
            Ty::Guid => 20,
            Ty::Bits => 16,
        }
    }
}

/// Header fields, named as in Cyrus's `struct index_header`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum H {
    GenerationNo,
    Format,
    MinorVersion,
    StartOffset,
    RecordSize,
    NumRecords,
    LastAppenddate,
    LastUid,
    QuotaMailboxUsed,
    Pop3LastLogin,
    Uidvalidity,
    Deleted,
    Answered,
    Flagged,
    Options,
    LeakedCacheRecords,
    Highestmodseq,
    Deletedmodseq,
    Exists,
    FirstExpunged,
    LastRepackTime,
    HeaderFileCrc,
    SyncCrcBasic,
    Recentuid,
    Recenttime,
    Pop3ShowAfter,
    QuotaAnnotUsed,
    SyncCrcAnnot,
    Unseen,
    Createdmodseq,
    ChangesEpoch,
    QuotaDeletedUsed,
    QuotaExpungedUsed,
}

/// Record fields, named as in Cyrus's `struct index_record`. `SystemFlags` is the whole stored
/// word (system + internal flags); `CacheVersion` the whole word (version + high cache offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum R {
    Uid,
    Internaldate,
    Sentdate,
    Size,
    HeaderSize,
    Gmtime,
    CacheOffset,
    LastUpdated,
    SystemFlags,
    UserFlags,
    Savedate,
    CacheVersion,
    Guid,
    Modseq,
    Cid,
    Createdmodseq,
    Basecid,
    CacheCrc,
}

/// One row of the layout table: `field` is stored as `ty` at byte `at` in versions `from..=to`.
#[derive(Debug)]
struct Row<F> {
    field: F,
    from: u32,
    to: u32,
    at: usize,
    ty: Ty,
}

const fn row<F>(field: F, from: u32, to: u32, at: usize, ty: Ty) -> Row<F> {
    Row {
        field,
        from,
        to,
        at,
        ty,
    }
}

use Ty::{Bits, Nanos, Secs, U32, U64};

/// Where each header field sits, by version. The CRC (12+) is the last 4 bytes of the header.
const HEADER_FIELDS: &[Row<H>] = &[
    row(H::GenerationNo, 6, 20, 0, U32),
    row(H::Format, 6, 20, 4, U32),
    row(H::MinorVersion, 6, 20, 8, U32),
    row(H::StartOffset, 6, 20, 12, U32),
    row(H::RecordSize, 6, 20, 16, U32),
    row(H::NumRecords, 6, 20, 20, U32),
    row(H::LastAppenddate, 6, 19, 24, Secs),
    row(H::LastAppenddate, 20, 20, 24, Nanos),
    row(H::LastUid, 6, 19, 28, U32),
    row(H::LastUid, 20, 20, 88, U32),
    row(H::QuotaMailboxUsed, 6, 20, 32, U64),
    row(H::Pop3LastLogin, 6, 19, 40, Secs),
    row(H::Pop3LastLogin, 20, 20, 40, Nanos),
    row(H::Uidvalidity, 6, 19, 44, U32),
    row(H::Uidvalidity, 20, 20, 92, U32),
    row(H::Deleted, 6, 20, 48, U32),
    row(H::Answered, 6, 20, 52, U32),
    row(H::Flagged, 6, 20, 56, U32),
    row(H::Options, 6, 18, 60, U32),
    row(H::Options, 19, 20, 64, U32),
    row(H::LeakedCacheRecords, 6, 18, 64, U32),
    row(H::LeakedCacheRecords, 19, 20, 68, U32),
    row(H::Highestmodseq, 8, 18, 68, U64),
    row(H::Highestmodseq, 19, 20, 72, U64),
    row(H::Deletedmodseq, 12, 18, 76, U64),
    row(H::Deletedmodseq, 19, 20, 80, U64),
    row(H::Exists, 12, 18, 84, U32),
    row(H::Exists, 19, 20, 60, U32),
    row(H::FirstExpunged, 12, 19, 88, Secs),
    row(H::FirstExpunged, 20, 20, 168, Nanos),
    row(H::LastRepackTime, 12, 19, 92, Secs),
    row(H::LastRepackTime, 20, 20, 176, Nanos),
    row(H::HeaderFileCrc, 12, 20, 96, U32),
    row(H::SyncCrcBasic, 12, 20, 100, U32),
    row(H::Recentuid, 12, 19, 104, U32),
    row(H::Recentuid, 20, 20, 184, U32),
    row(H::Recenttime, 12, 19, 108, Secs),
    row(H::Recenttime, 20, 20, 104, Nanos),
    row(H::Pop3ShowAfter, 13, 19, 112, Secs),
    row(H::Pop3ShowAfter, 20, 20, 112, Nanos),
    row(H::QuotaAnnotUsed, 13, 19, 116, U32),
    row(H::QuotaAnnotUsed, 20, 20, 152, U64),
    row(H::SyncCrcAnnot, 13, 20, 120, U32),
    row(H::Unseen, 14, 20, 124, U32),
    row(H::Createdmodseq, 16, 20, 128, U64),
    row(H::ChangesEpoch, 17, 18, 136, Secs),
    row(H::ChangesEpoch, 19, 19, 152, Secs),
    row(H::ChangesEpoch, 20, 20, 160, Nanos),
    row(H::QuotaDeletedUsed, 18, 18, 140, U64),
    row(H::QuotaDeletedUsed, 19, 20, 136, U64),
    row(H::QuotaExpungedUsed, 18, 18, 148, U64),
    row(H::QuotaExpungedUsed, 19, 20, 144, U64),
];

/// Where each record field sits, by version. The CRC (12+) is the last 4 bytes of the record.
/// Bytes 52..56 held the unused `content_lines` before version 15; version 7 has 12 spare
/// bytes at 60..72.
const RECORD_FIELDS: &[Row<R>] = &[
    row(R::Uid, 6, 20, 0, U32),
    row(R::Internaldate, 6, 19, 4, Secs),
    row(R::Internaldate, 20, 20, 8, Nanos),
    row(R::Sentdate, 6, 19, 8, Secs),
    row(R::Sentdate, 20, 20, 16, Nanos),
    row(R::Size, 6, 19, 12, U32),
    row(R::Size, 20, 20, 24, U64),
    row(R::HeaderSize, 6, 19, 16, U32),
    row(R::HeaderSize, 20, 20, 32, U32),
    row(R::Gmtime, 6, 19, 20, Secs),
    row(R::Gmtime, 20, 20, 104, Nanos),
    row(R::CacheOffset, 6, 19, 24, U32),
    row(R::CacheOffset, 20, 20, 4, U32),
    row(R::LastUpdated, 6, 19, 28, Secs),
    row(R::LastUpdated, 20, 20, 112, Nanos),
    row(R::SystemFlags, 6, 19, 32, U32),
    row(R::SystemFlags, 20, 20, 36, U32),
    row(R::UserFlags, 6, 19, 36, Bits),
    row(R::UserFlags, 20, 20, 40, Bits),
    row(R::Savedate, 15, 19, 52, Secs),
    row(R::Savedate, 20, 20, 120, Nanos),
    row(R::CacheVersion, 6, 20, 56, U32),
    row(R::Guid, 10, 20, 60, Ty::Guid),
    row(R::Modseq, 8, 9, 72, U64),
    row(R::Modseq, 10, 20, 80, U64),
    row(R::Cid, 13, 20, 88, U64),
    row(R::Createdmodseq, 16, 20, 96, U64),
    row(R::Basecid, 20, 20, 128, U64),
    row(R::CacheCrc, 12, 12, 88, U32),
    row(R::CacheCrc, 13, 15, 96, U32),
    row(R::CacheCrc, 16, 19, 104, U32),
    row(R::CacheCrc, 20, 20, 136, U32),
];

fn rows<F: Copy>(table: &'static [Row<F>], version: u32) -> impl Iterator<Item = &'static Row<F>> {
    table
        .iter()
        .filter(move |r| (r.from..=r.to).contains(&version))
}

/// A decoded field value.
#[derive(Clone, Copy)]
enum Val {
    N(u64),
    T(Timestamp),
    G(Guid),
    B([u32; 4]),
}

impl Val {
    fn n(self) -> u64 {
        match self {
            Val::N(n) => n,
            _ => 0,
        }
    }
    fn t(self) -> Timestamp {
        match self {
            Val::T(t) => t,
            _ => Timestamp::default(),
        }
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut w = [0; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(w)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut w = [0; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(w)
}

/// Header and records (12+) end with the CRC-32 of the bytes before it: fills it in.
fn put_crc(block: &mut [u8]) {
    let end = block.len() - 4;
    let crc = crc32fast::hash(&block[..end]);
    block[end..].copy_from_slice(&crc.to_be_bytes());
}

/// Checks the CRC-32 at the end of `block`; `Err((stored, computed))` if it does not match.
fn check_crc(block: &[u8]) -> Result<(), (u32, u32)> {
    let end = block.len() - 4;
    let stored = be32(block, end);
    let computed = crc32fast::hash(&block[..end]);
    if stored == computed {
        Ok(())
    } else {
        Err((stored, computed))
    }
}

/// Reads one field; `b` must hold at least `at + ty.len()` bytes (the layout guarantees it).
fn read(b: &[u8], at: usize, ty: Ty) -> Val {
    match ty {
        U32 => Val::N(u64::from(be32(b, at))),
        U64 => Val::N(be64(b, at)),
        Secs => Val::T(Timestamp::from_secs(i64::from(be32(b, at)))),
        Nanos => Val::T(Timestamp::from_unsigned_nanos(be64(b, at))),
        Ty::Guid => {
            let mut g = [0; 20];
            g.copy_from_slice(&b[at..at + 20]);
            Val::G(Guid(g))
        }
        Bits => Val::B([
            be32(b, at),
            be32(b, at + 4),
            be32(b, at + 8),
            be32(b, at + 12),
        ]),
    }
}

/// Writes one field; `Err(())` if the value does not fit the field.
fn write(b: &mut [u8], at: usize, ty: Ty, v: Val) -> Result<(), ()> {
    let dst = &mut b[at..at + ty.len()];
    match (ty, v) {
        (U32, Val::N(n)) => dst.copy_from_slice(&u32::try_from(n).map_err(drop)?.to_be_bytes()),
        (U64, Val::N(n)) => dst.copy_from_slice(&n.to_be_bytes()),
        (Secs, Val::T(t)) if t.nanos == 0 => {
            dst.copy_from_slice(&u32::try_from(t.secs).map_err(drop)?.to_be_bytes())
        }
        (Nanos, Val::T(t)) => dst.copy_from_slice(&t.to_unsigned_nanos().ok_or(())?.to_be_bytes()),
        (Ty::Guid, Val::G(g)) => dst.copy_from_slice(&g.0),
        (Bits, Val::B(words)) => {
            for (i, w) in words.iter().enumerate() {
                dst[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
            }
        }
        _ => return Err(()),
    }
    Ok(())
}

fn show(v: Val) -> String {
    match v {
        Val::N(n) => n.to_string(),
        Val::T(t) => t.to_string(),
        Val::G(g) => g.to_hex(),
        Val::B(w) => format!("{w:?}"),
    }
}

/// The error for a value `write` refused: a time before 1970 says so, the rest do not fit.
fn misfit(field: String, v: Val, value: String, version: u32) -> EncodeError {
    match v {
        Val::T(t) if t.secs < 0 => EncodeError::BeforeEpoch {
            field,
            value: t.to_string(),
        },
        _ => EncodeError::DoesNotFit {
            field,
            value,
            version,
        },
    }
}

impl IndexHeader {
    fn set(&mut self, f: H, v: Val) {
        let n32 = v.n() as u32; // U32 rows hold 32-bit values by construction
        match f {
            H::GenerationNo => self.generation_no = n32,
            H::Format => self.format = n32,
            H::MinorVersion => self.minor_version = n32,
            H::StartOffset => self.start_offset = n32,
            H::RecordSize => self.record_size = n32,
            H::NumRecords => self.num_records = n32,
            H::LastAppenddate => self.last_appenddate = v.t(),
            H::LastUid => self.last_uid = n32,
            H::QuotaMailboxUsed => self.quota_mailbox_used = v.n(),
            H::Pop3LastLogin => self.pop3_last_login = v.t(),
            H::Uidvalidity => self.uidvalidity = n32,
            H::Deleted => self.deleted = n32,
            H::Answered => self.answered = n32,
            H::Flagged => self.flagged = n32,
            H::Options => self.options = n32,
            H::LeakedCacheRecords => self.leaked_cache_records = n32,
            H::Highestmodseq => self.highestmodseq = Some(v.n()),
            H::Deletedmodseq => self.deletedmodseq = Some(v.n()),
            H::Exists => self.exists = Some(n32),
            H::FirstExpunged => self.first_expunged = Some(v.t()),
            H::LastRepackTime => self.last_repack_time = Some(v.t()),
            H::HeaderFileCrc => self.header_file_crc = Some(n32),
            H::SyncCrcBasic => self.sync_crc_basic = Some(n32),
            H::Recentuid => self.recentuid = Some(n32),
            H::Recenttime => self.recenttime = Some(v.t()),
            H::Pop3ShowAfter => self.pop3_show_after = Some(v.t()),
            H::QuotaAnnotUsed => self.quota_annot_used = Some(v.n()),
            H::SyncCrcAnnot => self.sync_crc_annot = Some(n32),
            H::Unseen => self.unseen = Some(n32),
            H::Createdmodseq => self.createdmodseq = Some(v.n()),
            H::ChangesEpoch => self.changes_epoch = Some(v.t()),
            H::QuotaDeletedUsed => self.quota_deleted_used = Some(v.n()),
            H::QuotaExpungedUsed => self.quota_expunged_used = Some(v.n()),
        }
    }

    /// The value to write; absent optional fields are written as zero.
    fn get(&self, f: H) -> Val {
        let n = |x: u32| Val::N(u64::from(x));
        let on = |x: Option<u32>| n(x.unwrap_or(0));
        let o64 = |x: Option<u64>| Val::N(x.unwrap_or(0));
        let ot = |x: Option<Timestamp>| Val::T(x.unwrap_or_default());
        match f {
            H::GenerationNo => n(self.generation_no),
            H::Format => n(self.format),
            H::MinorVersion => n(self.minor_version),
            H::StartOffset => n(self.start_offset),
            H::RecordSize => n(self.record_size),
            H::NumRecords => n(self.num_records),
            H::LastAppenddate => Val::T(self.last_appenddate),
            H::LastUid => n(self.last_uid),
            H::QuotaMailboxUsed => Val::N(self.quota_mailbox_used),
            H::Pop3LastLogin => Val::T(self.pop3_last_login),
            H::Uidvalidity => n(self.uidvalidity),
            H::Deleted => n(self.deleted),
            H::Answered => n(self.answered),
            H::Flagged => n(self.flagged),
            H::Options => n(self.options),
            H::LeakedCacheRecords => n(self.leaked_cache_records),
            H::Highestmodseq => o64(self.highestmodseq),
            H::Deletedmodseq => o64(self.deletedmodseq),
            H::Exists => on(self.exists),
            H::FirstExpunged => ot(self.first_expunged),
            H::LastRepackTime => ot(self.last_repack_time),
            H::HeaderFileCrc => on(self.header_file_crc),
            H::SyncCrcBasic => on(self.sync_crc_basic),
            H::Recentuid => on(self.recentuid),
            H::Recenttime => ot(self.recenttime),
            H::Pop3ShowAfter => ot(self.pop3_show_after),
            H::QuotaAnnotUsed => o64(self.quota_annot_used),
            H::SyncCrcAnnot => on(self.sync_crc_annot),
            H::Unseen => on(self.unseen),
            H::Createdmodseq => o64(self.createdmodseq),
            H::ChangesEpoch => ot(self.changes_epoch),
            H::QuotaDeletedUsed => o64(self.quota_deleted_used),
            H::QuotaExpungedUsed => o64(self.quota_expunged_used),
        }
    }

    /// The layout of this header's version, or an error if it is not supported.
    pub fn layout(&self) -> Result<IndexLayout, EncodeError> {
        IndexLayout::of(self.minor_version).ok_or(EncodeError::UnknownVersion(self.minor_version))
    }

    /// The header as Cyrus writes it: `start_offset` bytes, with the CRC filled in (12+).
    /// Fields the version lacks are not written; `None` fields the version has are written as 0.
    pub fn encode(&self) -> Result<Vec<u8>, EncodeError> {
        let layout = self.checked_layout()?;
        let mut out = vec![0; self.start_offset as usize];
        for r in rows(HEADER_FIELDS, layout.version) {
            let v = self.get(r.field);
            write(&mut out, r.at, r.ty, v)
                .map_err(|()| misfit(format!("{:?}", r.field), v, show(v), layout.version))?;
        }
        if layout.has_crc() {
            put_crc(&mut out[..layout.header_size]);
        }
        Ok(out)
    }

    /// One record in this header's version and record size, with its CRC filled in (12+).
    pub fn encode_record(&self, rec: &IndexRecord) -> Result<Vec<u8>, EncodeError> {
        let layout = self.checked_layout()?;
        let mut out = vec![0; self.record_size as usize];
        for r in rows(RECORD_FIELDS, layout.version) {
            let v = rec.get(r.field);
            let fits = match r.field {
                R::CacheVersion => rec.cache_offset >> 48 == 0,
                _ => true,
            };
            let written = if fits {
                write(&mut out, r.at, r.ty, v)
            } else {
                Err(())
            };
            written.map_err(|()| {
                let value = if r.field == R::CacheVersion {
                    format!("cache_offset {}", rec.cache_offset)
                } else {
                    show(v)
                };
                misfit(format!("{:?}", r.field), v, value, layout.version)
            })?;
        }
        if layout.has_crc() {
            put_crc(&mut out[..layout.record_size]);
        }
        Ok(out)
    }

    fn checked_layout(&self) -> Result<IndexLayout, EncodeError> {
        let layout = self.layout()?;
        if (self.start_offset as usize) < layout.header_size
            || (self.record_size as usize) < layout.record_size
        {
            return Err(EncodeError::BadSizes {
                version: layout.version,
                header_size: layout.header_size,
                record_size: layout.record_size,
                start_offset: self.start_offset,
                found_record_size: self.record_size,
            });
        }
        Ok(layout)
    }
}

impl IndexRecord {
    fn set(&mut self, f: R, v: Val) {
        let n32 = v.n() as u32; // U32 rows hold 32-bit values by construction
        match f {
            R::Uid => self.uid = n32,
            R::Internaldate => self.internaldate = v.t(),
            R::Sentdate => self.sentdate = v.t(),
            R::Size => self.size = v.n(),
            R::HeaderSize => self.header_size = n32,
            R::Gmtime => self.gmtime = v.t(),
            R::CacheOffset => self.cache_offset = (self.cache_offset & !0xffff_ffff) | v.n(),
            R::LastUpdated => self.last_updated = v.t(),
            R::SystemFlags => {
                // Cyrus keeps IMAP flags in the low half, its own bookkeeping in the high half.
                self.system_flags = SystemFlags(n32 as u16);
                self.internal_flags = InternalFlags(n32 & 0xffff_0000);
            }
            R::UserFlags => {
                if let Val::B(words) = v {
                    self.user_flags = UserFlags(words);
                }
            }
            R::Savedate => self.savedate = Some(v.t()),
            R::CacheVersion => {
                // The high half of the word extends the cache offset to 48 bits (3.2+).
                self.cache_version = n32 as u16;
                self.cache_offset =
                    (self.cache_offset & 0xffff_ffff) | (u64::from(n32 >> 16) << 32);
            }
            R::Guid => {
                if let Val::G(g) = v {
                    self.guid = Some(g);
                }
            }
            R::Modseq => self.modseq = Some(v.n()),
            R::Cid => self.cid = Some(v.n()),
            R::Createdmodseq => self.createdmodseq = Some(v.n()),
            R::Basecid => self.basecid = Some(v.n()),
            R::CacheCrc => self.cache_crc = Some(n32),
        }
    }

    fn get(&self, f: R) -> Val {
        let n = |x: u32| Val::N(u64::from(x));
        let o64 = |x: Option<u64>| Val::N(x.unwrap_or(0));
        match f {
            R::Uid => n(self.uid),
            R::Internaldate => Val::T(self.internaldate),
            R::Sentdate => Val::T(self.sentdate),
            R::Size => Val::N(self.size),
            R::HeaderSize => n(self.header_size),
            R::Gmtime => Val::T(self.gmtime),
            R::CacheOffset => Val::N(self.cache_offset & 0xffff_ffff),
            R::LastUpdated => Val::T(self.last_updated),
            R::SystemFlags => {
                n(u32::from(self.system_flags.0) | (self.internal_flags.0 & 0xffff_0000))
            }
            R::UserFlags => Val::B(self.user_flags.0),
            R::Savedate => Val::T(self.savedate.unwrap_or_default()),
            R::CacheVersion => {
                n((((self.cache_offset >> 32) as u32) << 16) | u32::from(self.cache_version))
            }
            R::Guid => Val::G(self.guid.unwrap_or_default()),
            R::Modseq => o64(self.modseq),
            R::Cid => o64(self.cid),
            R::Createdmodseq => o64(self.createdmodseq),
            R::Basecid => o64(self.basecid),
            R::CacheCrc => n(self.cache_crc.unwrap_or(0)),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading.

fn short(offset: usize, what: &'static str, expected: usize, have: usize) -> IndexError {
    IndexError::Short {
        offset: offset as u64,
        what,
        expected: expected as u64,
        found: have.saturating_sub(offset) as u64,
    }
}

/// Parses and checks the header at the start of `data` (which may hold the whole file or just
/// its first `start_offset` bytes).
pub fn parse_header(data: &[u8]) -> Result<IndexHeader, IndexError> {
    parse_header_layout(data).map(|(h, _)| h)
}

fn parse_header_layout(data: &[u8]) -> Result<(IndexHeader, IndexLayout), IndexError> {
    if data.len() < 12 {
        return Err(short(
            0,
            "index header (up to the minor version)",
            12,
            data.len(),
        ));
    }
    let version = be32(data, 8);
    let layout = IndexLayout::of(version).ok_or(IndexError::UnknownVersion { found: version })?;
    if data.len() < layout.header_size {
        return Err(short(0, "index header", layout.header_size, data.len()));
    }
    if !layout.has_crc() {
        // The minor version itself decides whether the header has a CRC: a flipped bit can
        // turn a version with one (12 to 15) into one without (6 to 10), which no CRC would
        // catch. Such a header still checks with its own CRC under its true version.
        for l in SIZES.iter().filter_map(|s| IndexLayout::of(s.0)) {
            if !l.has_crc() || data.len() < l.header_size {
                continue;
            }
            let mut head = data[..l.header_size].to_vec();
            head[8..12].copy_from_slice(&l.version.to_be_bytes());
            if check_crc(&head).is_ok() {
                return Err(IndexError::DamagedVersion {
                    found: version,
                    crc_version: l.version,
                });
            }
        }
    }
    if layout.has_crc() {
        let end = layout.header_size - 4;
        check_crc(&data[..layout.header_size]).map_err(|(stored, computed)| {
            IndexError::BadHeaderCrc {
                offset: end as u64,
                stored,
                computed,
            }
        })?;
    }
    let mut h = IndexHeader::default();
    for r in rows(HEADER_FIELDS, version) {
        h.set(r.field, read(data, r.at, r.ty));
    }
    // Cyrus 3.6 tolerates larger values (and ignores the extra bytes); smaller ones would make
    // fields overlap.
    if (h.start_offset as usize) < layout.header_size {
        return Err(IndexError::StartOffsetTooSmall {
            version,
            expected: layout.header_size as u32,
            found: h.start_offset,
        });
    }
    if (h.record_size as usize) < layout.record_size {
        return Err(IndexError::RecordSizeTooSmall {
            version,
            expected: layout.record_size as u32,
            found: h.record_size,
        });
    }
    Ok((h, layout))
}

/// Decodes and checks one record; `buf` holds at least the layout's record size and `fields`
/// are the record rows of the layout's version.
fn parse_record(
    buf: &[u8],
    layout: IndexLayout,
    fields: &[&Row<R>],
    recno: u32,
    offset: usize,
) -> Result<IndexRecord, IndexError> {
    if layout.has_crc() {
        let end = layout.record_size - 4;
        check_crc(&buf[..layout.record_size]).map_err(|(stored, computed)| {
            IndexError::BadRecordCrc {
                recno,
                offset: (offset + end) as u64,
                stored,
                computed,
            }
        })?;
    }
    let mut rec = IndexRecord::default();
    for r in fields {
        rec.set(r.field, read(buf, r.at, r.ty));
    }
    Ok(rec)
}

/// A parsed cyrus.index over borrowed bytes: the header, and the records on demand.
#[derive(Debug, Clone)]
pub struct Index<'a> {
    header: IndexHeader,
    layout: IndexLayout,
    /// The record rows of this version, picked once rather than per record.
    fields: Vec<&'static Row<R>>,
    data: &'a [u8],
}

impl<'a> Index<'a> {
    /// Checks the header and that the file holds all `num_records` records. Records are
    /// decoded (and their CRCs checked) only when iterated.
    pub fn parse(data: &'a [u8]) -> Result<Self, IndexError> {
        let (header, layout) = parse_header_layout(data)?;
        let index = Index {
            header,
            layout,
            fields: rows(RECORD_FIELDS, layout.version).collect(),
            data,
        };
        // Name the first record that does not fit, so that a cut file is refused up front.
        if data.len() < index.header.start_offset as usize {
            return Err(short(
                index.layout.header_size,
                "padding up to the start offset",
                index.header.start_offset as usize - index.layout.header_size,
                data.len(),
            ));
        }
        let size = u64::from(index.header.record_size);
        let start = u64::from(index.header.start_offset);
        let have = data.len() as u64;
        let complete = have.saturating_sub(start) / size;
        if complete < u64::from(index.header.num_records) {
            let offset = start + complete * size;
            return Err(IndexError::TruncatedRecord {
                recno: complete as u32 + 1,
                offset,
                expected: size,
                found: have.saturating_sub(offset),
            });
        }
        Ok(index)
    }

    /// The header.
    pub fn header(&self) -> &IndexHeader {
        &self.header
    }

    /// The sizes of the file's version.
    pub fn layout(&self) -> IndexLayout {
        self.layout
    }

    /// Number of records (expunged ones included).
    pub fn len(&self) -> u32 {
        self.header.num_records
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.header.num_records == 0
    }

    /// Record `i` (0-based; Cyrus's "recno" is `i + 1`).
    pub fn get(&self, i: u32) -> Option<Result<IndexRecord, IndexError>> {
        if i >= self.header.num_records {
            return None;
        }
        let size = self.header.record_size as usize;
        let offset = self.header.start_offset as usize + i as usize * size;
        let buf = self.data.get(offset..offset + size)?;
        Some(parse_record(buf, self.layout, &self.fields, i + 1, offset))
    }

    /// The records in file order, decoded one at a time. A record with a bad CRC yields an
    /// error and iteration goes on with the next one.
    pub fn records(&self) -> Records<'a> {
        Records {
            index: self.clone(),
            next: 0,
        }
    }

    /// All records, or the first error.
    pub fn collect_records(&self) -> Result<Vec<IndexRecord>, IndexError> {
        self.records().collect()
    }
}

/// Iterator over the records of an [`Index`].
#[derive(Debug, Clone)]
pub struct Records<'a> {
    index: Index<'a>,
    next: u32,
}

impl Iterator for Records<'_> {
    type Item = Result<IndexRecord, IndexError>;

    fn next(&mut self) -> Option<Self::Item> {
        let item = self.index.get(self.next)?;
        self.next += 1;
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.index.header.num_records - self.next) as usize;
        (left, Some(left))
    }
}

/// Header and all records of a cyrus.index in memory: the convenience for small mailboxes.
pub fn parse_all(data: &[u8]) -> Result<(IndexHeader, Vec<IndexRecord>), IndexError> {
    let index = Index::parse(data)?;
    let records = index.collect_records()?;
    Ok((index.header, records))
}

/// Writes a whole cyrus.index: the header (as given: version, start offset, record size and
/// record count) and the records. Fails if their number differs from `header.num_records`.
pub fn write_index<'r, W: Write>(
    mut w: W,
    header: &IndexHeader,
    records: impl IntoIterator<Item = &'r IndexRecord>,
) -> Result<(), EncodeError> {
    w.write_all(&header.encode()?)?;
    let mut count = 0u64;
    for rec in records {
        w.write_all(&header.encode_record(rec)?)?;
        count += 1;
    }
    if count != u64::from(header.num_records) {
        return Err(EncodeError::CountMismatch {
            expected: header.num_records,
            found: count,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
