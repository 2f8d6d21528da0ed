//! IMAP's modified UTF-7 (RFC 3501 section 5.1.3): how Cyrus stores and IMAP carries
//! folder names (`Donn&AOk-es` is `Données`). The command line shows and takes names in
//! UTF-8 ([`decode`]); the wire and the store keep modified UTF-7 ([`encode`]).
//!
//! Printable ASCII other than `&` stands for itself; `&-` is `&`; anything else is UTF-16
//! in base64 with `,` for `/`, no padding, between `&` and `-`.

use base64::alphabet::Alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// The base64 of modified UTF-7: `,` for `/`, never padded.
fn engine() -> GeneralPurpose {
    // The alphabet is a constant: 64 distinct printable bytes.
    let alphabet =
        Alphabet::new("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+,")
            .expect("a valid base64 alphabet");
    GeneralPurpose::new(
        &alphabet,
        GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_padding_mode(DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    )
}

/// A name that is not modified UTF-7.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("folder name {name:?} is not modified UTF-7 (at byte {at}: {why})")]
pub struct Mutf7Error {
    /// The name.
    pub name: String,
    /// Byte offset of the fault.
    pub at: usize,
    /// What is wrong there.
    pub why: &'static str,
}

/// Decodes a modified UTF-7 name into UTF-8 (`Donn&AOk-es` to `Données`).
pub fn decode(name: &str) -> Result<String, Mutf7Error> {
    let err = |at, why| Mutf7Error {
        name: name.to_owned(),
        at,
        why,
    };
    let b = name.as_bytes();
    let mut out = String::with_capacity(name.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c != b'&' {
            if !(0x20..0x7f).contains(&c) {
                return Err(err(i, "a byte outside printable ASCII"));
            }
            out.push(c as char);
            i += 1;
            continue;
        }
        let Some(len) = b[i + 1..].iter().position(|&c| c == b'-') else {
            return Err(err(i, "an & without its closing -"));
        };
        let run = &b[i + 1..i + 1 + len];
        if run.is_empty() {
            out.push('&');
        } else {
            let bytes = engine().decode(run).map_err(|_| err(i + 1, "bad base64"))?;
            if bytes.len() % 2 != 0 {
                return Err(err(i + 1, "an odd number of UTF-16 bytes"));
            }
            let units = bytes.chunks(2).map(|p| u16::from_be_bytes([p[0], p[1]]));
            for ch in char::decode_utf16(units) {
                out.push(ch.map_err(|_| err(i + 1, "an unpaired UTF-16 surrogate"))?);
            }
        }
        i += len + 2;
    }
    Ok(out)
}

/// Decodes a name for showing it: its UTF-8 form, or the name as it is when it is not
/// modified UTF-7 (a name Cyrus took as it came, with 8-bit bytes), so nothing is hidden.
pub fn decode_or_keep(name: &str) -> String {
    decode(name).unwrap_or_else(|_| name.to_owned())
}

/// A folder name as a person typed it on the command line, as the store keeps it: a name
/// that is already modified UTF-7 (`INBOX`, `Work/Sub`, `Donn&AOk-es`) as it is, any other
/// (`Données`, `Tom & Jerry`) encoded.
pub fn from_typed(name: &str) -> String {
    if decode(name).is_ok() {
        name.to_owned()
    } else {
        encode(name)
    }
}

/// Encodes a UTF-8 name into modified UTF-7 (`Données` to `Donn&AOk-es`).
pub fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut pending: Vec<u16> = Vec::new();
    let flush = |pending: &mut Vec<u16>, out: &mut String| {
        if pending.is_empty() {
            return;
        }
        let bytes: Vec<u8> = pending.iter().flat_map(|u| u.to_be_bytes()).collect();
        out.push('&');
        out.push_str(&engine().encode(bytes));
        out.push('-');
        pending.clear();
    };
    for ch in name.chars() {
        if (' '..='~').contains(&ch) {
            flush(&mut pending, &mut out);
            if ch == '&' {
                out.push_str("&-");
            } else {
                out.push(ch);
            }
        } else {
            let mut units = [0u16; 2];
            pending.extend_from_slice(ch.encode_utf16(&mut units));
        }
    }
    flush(&mut pending, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_rfc_examples_and_cyrus_names() {
        assert_eq!(decode("Donn&AOk-es").unwrap(), "Données");
        assert_eq!(encode("Données"), "Donn&AOk-es");
        // RFC 3501 5.1.3's example.
        assert_eq!(
            decode("~peter/mail/&U,BTFw-/&ZeVnLIqe-").unwrap(),
            "~peter/mail/台北/日本語"
        );
        assert_eq!(
            encode("~peter/mail/台北/日本語"),
            "~peter/mail/&U,BTFw-/&ZeVnLIqe-"
        );
        assert_eq!(decode("Tom &- Jerry").unwrap(), "Tom & Jerry");
        assert_eq!(encode("Tom & Jerry"), "Tom &- Jerry");
        assert_eq!(encode("INBOX"), "INBOX");
        // Outside the BMP: a surrogate pair.
        assert_eq!(decode(&encode("mail 📬")).unwrap(), "mail 📬");
    }

    #[test]
    fn refuses_what_is_not_modified_utf7() {
        assert_eq!(
            decode("a&AOk").unwrap_err().why,
            "an & without its closing -"
        );
        assert!(decode("a&A-").is_err());
        assert!(decode("caf\u{e9}").is_err());
        // A lone high surrogate.
        assert!(decode("&2D0-").is_err());
        assert_eq!(decode_or_keep("caf\u{e9}"), "caf\u{e9}");
        assert_eq!(from_typed("Données"), "Donn&AOk-es");
        assert_eq!(from_typed("Donn&AOk-es"), "Donn&AOk-es");
        assert_eq!(from_typed("Tom & Jerry"), "Tom &- Jerry");
        assert_eq!(from_typed("Work/Sub"), "Work/Sub");
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_the_identity(s in "\\PC{0,40}") {
            let e = encode(&s);
            prop_assert!(e.bytes().all(|c| (0x20..0x7f).contains(&c)));
            prop_assert_eq!(decode(&e).unwrap(), s);
        }

        #[test]
        fn decoding_any_text_never_panics(s in "[ -~]{0,40}") {
            let _ = decode(&s);
        }
    }
}
