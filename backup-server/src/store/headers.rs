//! A message's header fields as the header index records them (the `headers` table,
//! docs/store.md) and `find` searches them: From, To and Cc, Subject (RFC 2047 decoded to
//! UTF-8), Date and Message-ID, parsed by `mail-parser` from the header block alone.
//!
//! Only the first [`HEADER_BLOCK_MAX`] bytes of a message are ever looked at, cut at the
//! empty line that ends the header block; each field kept is bounded ([`FIELD_MAX`]), so a
//! message with a 10 MB To line costs the index no more than any other.

use mail_parser::{Address, MessageParser};

/// The most of a message's beginning read for its header block. A header block longer
/// than this (rare: long Received chains) is parsed as far as it goes.
pub const HEADER_BLOCK_MAX: usize = 64 * 1024;

/// The most bytes of one field kept (From, To and Cc together, Subject, Message-ID): a
/// search needs the names and addresses a person would type, not a mailing list's 5,000
/// recipients.
pub const FIELD_MAX: usize = 2048;

/// The header fields of one message.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct MessageHeaders {
    /// From: each address as `Name <addr>` (or the bare address), joined by `, `.
    pub from: String,
    /// To and Cc, in the same form.
    pub to: String,
    /// Subject, RFC 2047 decoded (8-bit bytes taken as UTF-8, invalid ones replaced).
    pub subject: String,
    /// Date, unix seconds, when the message has a valid one.
    pub date: Option<i64>,
    /// Message-ID, without its angle brackets.
    pub message_id: String,
}

/// The header block at the start of `message`: up to and including the empty line that
/// ends it, or all of `message` (at most [`HEADER_BLOCK_MAX`] bytes) when it has none.
pub fn header_block(message: &[u8]) -> &[u8] {
    let m = &message[..message.len().min(HEADER_BLOCK_MAX)];
    let mut line_start = 0;
    for (i, &c) in m.iter().enumerate() {
        if c == b'\n' {
            let line = &m[line_start..i];
            if line.is_empty() || line == b"\r" {
                return &m[..=i];
            }
            line_start = i + 1;
        }
    }
    m
}

/// Parses the fields out of `message`'s header block (only [`header_block`] is read). A
/// message without headers has empty fields.
pub fn extract(message: &[u8]) -> MessageHeaders {
    let block = header_block(message);
    let Some(m) = MessageParser::new().parse_headers(block) else {
        return MessageHeaders::default();
    };
    let mut to = addresses(m.to());
    let cc = addresses(m.cc());
    if !cc.is_empty() {
        if !to.is_empty() {
            to.push_str(", ");
        }
        to.push_str(&cc);
    }
    MessageHeaders {
        from: bounded(addresses(m.from())),
        to: bounded(to),
        subject: bounded(m.subject().unwrap_or_default().to_owned()),
        date: m.date().filter(|d| d.is_valid()).map(|d| d.to_timestamp()),
        message_id: bounded(m.message_id().unwrap_or_default().to_owned()),
    }
}

/// An address list as text: `Name <addr>` or `addr`, joined by `, `.
fn addresses(a: Option<&Address<'_>>) -> String {
    let Some(a) = a else {
        return String::new();
    };
    let mut out = String::new();
    for addr in a.iter() {
        if out.len() > FIELD_MAX {
            break;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        match (addr.name(), addr.address()) {
            (Some(n), Some(x)) => {
                out.push_str(n);
                out.push_str(" <");
                out.push_str(x);
                out.push('>');
            }
            (Some(n), None) => out.push_str(n),
            (None, Some(x)) => out.push_str(x),
            (None, None) => {}
        }
    }
    out
}

/// `s` cut to at most [`FIELD_MAX`] bytes, on a character boundary.
fn bounded(mut s: String) -> String {
    if s.len() > FIELD_MAX {
        let mut cut = FIELD_MAX;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// Whether `needle` occurs in `haystack`, ignoring case (Unicode lower case of both).
pub fn contains_folded(haystack: &str, needle: &str) -> bool {
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_encoded_words_and_8bit_and_every_from_form() {
        let m = b"From: =?UTF-8?Q?Ren=C3=A9e_Dupont?= <renee@example.org>\r\n\
To: bob@example.com, \"Smith, Carol\" <carol@example.com>\r\n\
Cc: Dave <dave@example.net>\r\n\
Subject: =?ISO-8859-1?Q?Facture_d=E9cembre?=\r\n\
Date: Tue, 24 Nov 2026 09:30:00 +0100\r\n\
Message-ID: <abc.123@example.org>\r\n\
\r\n\
From: not a header\r\n";
        let h = extract(m);
        assert_eq!(h.from, "Renée Dupont <renee@example.org>");
        assert_eq!(
            h.to,
            "bob@example.com, Smith, Carol <carol@example.com>, Dave <dave@example.net>"
        );
        assert_eq!(h.subject, "Facture décembre");
        assert_eq!(h.date, Some(1_795_509_000));
        assert_eq!(h.message_id, "abc.123@example.org");

        let raw = "From: bare@example.com\nSubject: Grüße aus Köln\n\nbody".as_bytes();
        let h = extract(raw);
        assert_eq!(h.from, "bare@example.com");
        assert_eq!(h.subject, "Grüße aus Köln");
        assert_eq!(h.date, None);
        assert!(contains_folded(&h.subject, "GRÜẞE"));
        assert!(contains_folded(&h.subject, "KÖLN"));
    }

    #[test]
    fn only_the_header_block_is_read_and_fields_are_bounded() {
        assert_eq!(header_block(b"A: b\r\n\r\nbody"), b"A: b\r\n\r\n");
        assert_eq!(header_block(b"A: b\n\nbody"), b"A: b\n\n");
        assert_eq!(header_block(b"A: b"), b"A: b");
        let long = vec![b'x'; HEADER_BLOCK_MAX * 2];
        assert_eq!(header_block(&long).len(), HEADER_BLOCK_MAX);
        // A Subject in the body is not the message's.
        let h = extract(b"From: a@b\n\nSubject: no\n");
        assert_eq!(h.subject, "");
        let many: String = (0..2000).map(|i| format!("u{i}@example.com, ")).collect();
        let h = extract(format!("To: {many}\nSubject: {}\n\n", "é".repeat(3000)).as_bytes());
        assert!(h.to.len() <= FIELD_MAX + 64, "{}", h.to.len());
        assert!(h.subject.len() <= FIELD_MAX);
        assert!(h.subject.chars().all(|c| c == 'é'));
        assert_eq!(extract(b""), MessageHeaders::default());
        assert_eq!(
            extract(b"\x00\xff\xfe garbage"),
            extract(b"\x00\xff\xfe garbage")
        );
    }
}
