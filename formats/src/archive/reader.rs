//! Reading one entry by its location: seek to the chunk, inflate that one gzip member from
//! its start up to the entry, decode the entry's headers, hand out its data.

use std::io::{self, Read, Seek, SeekFrom};

use super::member::{to_io, Member, Source};
use super::pax::padded;
use super::{ArchiveError, EntryHeader, EntryLocation};

/// Opens the entry whose first header block is at `header_offset` in the uncompressed
/// stream of the chunk at `chunk_offset` (both as [`EntryLocation`] gives them).
///
/// Only that chunk's gzip member is inflated: `flate2`'s `bufread::GzDecoder` stops at the
/// member's end. Reads of the file go at most [`SOURCE_BUF`](super::SOURCE_BUF) bytes past it.
pub fn open_entry<R: Read + Seek>(
    mut file: R,
    chunk_offset: u64,
    header_offset: u64,
) -> Result<EntryReader<R>, ArchiveError> {
    file.seek(SeekFrom::Start(chunk_offset))
        .map_err(|source| ArchiveError::Io {
            offset: chunk_offset,
            source,
        })?;
    entry_at(
        Member::new(Source::new(file, chunk_offset)),
        chunk_offset,
        header_offset,
    )
}

/// The entry whose header is at `header_offset` of `member`'s chunk, inflating and skipping
/// from where the member stands (at or before it).
fn entry_at<R: Read>(
    mut member: Member<R>,
    chunk_offset: u64,
    header_offset: u64,
) -> Result<EntryReader<R>, ArchiveError> {
    let outside = |chunk_len| ArchiveError::EntryOutsideChunk {
        chunk: chunk_offset,
        at: header_offset,
        chunk_len,
    };
    let gap = header_offset
        .checked_sub(member.pos)
        .ok_or(outside(member.pos))?;
    if member.skip(gap)? < gap {
        return Err(outside(member.pos));
    }
    let (header, location) = member.read_entry_header()?.ok_or(outside(header_offset))?;
    Ok(EntryReader {
        remaining: header.size,
        header,
        location,
        member,
    })
}

/// One entry being read: its header, and its data through [`Read`] (bounded by its length).
pub struct EntryReader<R: Read> {
    header: EntryHeader,
    location: EntryLocation,
    member: Member<R>,
    remaining: u64,
}

impl<R: Read> EntryReader<R> {
    /// The entry's metadata.
    pub fn header(&self) -> &EntryHeader {
        &self.header
    }

    /// Where the entry is.
    pub fn location(&self) -> EntryLocation {
        self.location
    }

    /// Uncompressed bytes inflated so far, headers and skipped entries included: never
    /// more than the chunk's uncompressed length.
    pub fn inflated(&self) -> u64 {
        self.member.pos
    }

    /// Whether the entry at `header_offset` of the chunk at `chunk_offset` lies further on
    /// in this reader's chunk, so that [`EntryReader::next_in_chunk`] reaches it without
    /// inflating anything twice.
    pub fn can_reach(&self, chunk_offset: u64, header_offset: u64) -> bool {
        chunk_offset == self.location.chunk_offset && header_offset >= self.member.pos
    }

    /// The entry at `header_offset` of the same chunk, read on from where this one stopped:
    /// what lies between is inflated and skipped, nothing before it again. A restore that
    /// reads a chunk's messages in their order inflates the chunk once instead of once per
    /// message. The caller checks [`EntryReader::can_reach`] first.
    pub fn next_in_chunk(self, header_offset: u64) -> Result<EntryReader<R>, ArchiveError> {
        entry_at(self.member, self.location.chunk_offset, header_offset)
    }

    /// Bytes read from the file so far (read-ahead included).
    pub fn file_bytes_read(&self) -> u64 {
        self.member.source().pulled()
    }

    /// Inflates the rest of the chunk, checking its gzip CRC-32 and length; returns the
    /// chunk's (compressed, uncompressed) lengths. Use it to verify the entry's bytes after
    /// reading them.
    pub fn finish_chunk(mut self) -> Result<(u64, u64), ArchiveError> {
        self.member.skip_to_end()?;
        let uncompressed_len = self.member.pos;
        // Tar padding must be there: a chunk ending right after the data is malformed.
        let data_end = self.location.data_offset + padded(self.location.data_len);
        if uncompressed_len < data_end {
            return Err(ArchiveError::Truncated {
                chunk: self.location.chunk_offset,
                at: uncompressed_len,
            });
        }
        let compressed_len = self.member.source().offset() - self.location.chunk_offset;
        Ok((compressed_len, uncompressed_len))
    }
}

impl<R: Read> Read for EntryReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self
            .member
            .read_entry_data(out, self.remaining)
            .map_err(|e| to_io(&e))?;
        self.remaining -= n as u64;
        Ok(n)
    }
}
