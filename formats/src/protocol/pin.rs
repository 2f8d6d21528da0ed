//! The pin of backupd's TLS key: the SHA-256 of its certificate's SubjectPublicKeyInfo, as
//! HPKP (RFC 7469) pins keys. `backupd keygen` prints it; the backup host's configuration
//! holds it (`tls_pin = "sha256/..."`) and accepts a server whose certificate carries that
//! key, whatever else the certificate says (names, dates, issuer): the key is the identity.
//! Pinning the key rather than the certificate lets a certificate be renewed over the same
//! key without touching the backup host.
//!
//! Written `sha256/` then the 32 bytes in standard base64 (44 characters, `=` padded), the
//! form HPKP and curl's `--pinnedpubkey` use; 64 hexadecimal digits after `sha256/` are
//! accepted too.

use base64::Engine;
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// Bytes of a pin (a SHA-256).
pub const PIN_LEN: usize = 32;

/// The SHA-256 of a SubjectPublicKeyInfo.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pin(pub [u8; PIN_LEN]);

impl Pin {
    /// The pin of a DER-encoded SubjectPublicKeyInfo.
    pub fn of_spki(spki_der: &[u8]) -> Pin {
        Pin(Sha256::digest(spki_der).into())
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "sha256/{}",
            base64::engine::general_purpose::STANDARD.encode(self.0)
        )
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Pin({self})")
    }
}

/// A pin that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{found:?} is not a key pin: expected sha256/ then 44 characters of base64 or 64 \
     hexadecimal digits (the line `backupd keygen` printed, e.g. \
     sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=)"
)]
pub struct PinError {
    /// What was given (cut to 100 characters).
    pub found: String,
}

impl FromStr for Pin {
    type Err = PinError;

    fn from_str(s: &str) -> Result<Pin, PinError> {
        let err = || PinError {
            found: s.chars().take(100).collect(),
        };
        let rest = s.trim().strip_prefix("sha256/").ok_or_else(err)?;
        let mut out = [0u8; PIN_LEN];
        if rest.len() == 2 * PIN_LEN {
            hex::decode_to_slice(rest, &mut out).map_err(|_| err())?;
            return Ok(Pin(out));
        }
        if rest.len() != 44 {
            return Err(err());
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| err())?;
        out = bytes.try_into().map_err(|_| err())?;
        Ok(Pin(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pin_of_nothing_is_the_sha256_of_nothing() {
        // SHA-256 of the empty string, in base64: a value anyone can check.
        let p = Pin::of_spki(b"");
        assert_eq!(
            p.to_string(),
            "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
        assert_eq!(p.to_string().parse::<Pin>().unwrap(), p);
        let hex = "sha256/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(hex.parse::<Pin>().unwrap(), p);
        assert_eq!(
            hex.to_uppercase()
                .replace("SHA256", "sha256")
                .parse::<Pin>()
                .unwrap(),
            p
        );
        assert_eq!(
            format!(" {p} ").parse::<Pin>().unwrap(),
            p,
            "surrounding blanks"
        );
    }

    #[test]
    fn malformed_pins_are_refused_with_the_form_expected() {
        for bad in [
            "",
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
            "sha1/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=",
            "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU",
            "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSu!U=",
            "sha256/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85g",
            "sha256/AAAA",
        ] {
            let e = bad.parse::<Pin>().unwrap_err().to_string();
            assert!(
                e.contains("is not a key pin: expected sha256/"),
                "{bad}: {e}"
            );
        }
        let long = format!("sha256/{}", "A".repeat(10_000));
        let e = long.parse::<Pin>().unwrap_err();
        assert_eq!(e.found.chars().count(), 100, "the message stays short");
    }
}
