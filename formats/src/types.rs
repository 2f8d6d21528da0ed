//! The two values every part of the crate speaks about: a message's [`Guid`] and a point in
//! time ([`Timestamp`]). cyrus.index stores them in binary, the archive as PAX text, the
//! inspect tool as JSON; all of them use these types.

use serde::{Serialize, Serializer};
use sha1::{Digest, Sha1};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const NANOS_PER_SEC: u32 = 1_000_000_000;

/// A message GUID: the SHA-1 of the message file, as Cyrus keeps it in cyrus.index and the
/// archive names message entries. All zeros means "not computed" to Cyrus.
///
/// Shown (Display, serde) as 40 lowercase hex digits, the form Cyrus and `sha1sum` print.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Guid(pub [u8; 20]);

impl Guid {
    /// The all-zero GUID Cyrus writes when it has not computed one.
    pub const NULL: Guid = Guid([0; 20]);

    /// The GUID of a message: the SHA-1 of its bytes.
    pub fn of(data: &[u8]) -> Guid {
        Guid(Sha1::digest(data).into())
    }

    /// Whether this is the all-zero GUID Cyrus uses for "not computed".
    pub fn is_null(&self) -> bool {
        *self == Self::NULL
    }

    /// Lowercase hex, 40 characters.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl From<[u8; 20]> for Guid {
    fn from(bytes: [u8; 20]) -> Self {
        Guid(bytes)
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 40];
        // Cannot fail: the buffer is exactly twice the input.
        hex::encode_to_slice(self.0, &mut buf).map_err(|_| fmt::Error)?;
        // Hex digits are ASCII; `pad` honours width and alignment (`{:<40}`).
        f.pad(std::str::from_utf8(&buf).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Guid({self})")
    }
}

/// A string that is not a GUID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected a GUID of 40 hex digits, found {found:?}")]
pub struct ParseGuidError {
    /// The text given (cut to 64 characters).
    pub found: String,
}

impl FromStr for Guid {
    type Err = ParseGuidError;

    /// 40 hex digits, upper or lower case, nothing else.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut out = [0u8; 20];
        if s.len() != 40 || hex::decode_to_slice(s, &mut out).is_err() {
            return Err(ParseGuidError {
                found: s.chars().take(64).collect(),
            });
        }
        Ok(Guid(out))
    }
}

impl Serialize for Guid {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A point in time: seconds since 1970-01-01T00:00:00Z (negative before it: Date: headers
/// from before 1970 exist) plus nanoseconds, which are always added (`secs: -2, nanos:
/// 500_000_000` is 1.5 s before the epoch), so the derived order is the order in time.
///
/// Valid values have `nanos` below 1 000 000 000; the fields are public, so writers check
/// ([`Timestamp::is_valid`]). Display and [`FromStr`] use `<secs>` or `<secs>.<9 digits>`
/// (the archive's PAX form); serde writes `{"secs": .., "nanos": ..}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z.
    pub secs: i64,
    /// Nanoseconds to add to `secs`, `0..1_000_000_000`.
    pub nanos: u32,
}

// Every u64 count of nanoseconds has its seconds in an i64: the unsigned times Cyrus stores
// always convert.
const _: () = assert!(u64::MAX / NANOS_PER_SEC as u64 <= i64::MAX as u64);

impl Timestamp {
    /// 1970-01-01T00:00:00Z.
    pub const EPOCH: Timestamp = Timestamp { secs: 0, nanos: 0 };

    /// A whole number of seconds.
    pub const fn from_secs(secs: i64) -> Self {
        Timestamp { secs, nanos: 0 }
    }

    /// Seconds and nanoseconds; `None` when `nanos` is a second or more.
    pub const fn new(secs: i64, nanos: u32) -> Option<Self> {
        if nanos < NANOS_PER_SEC {
            Some(Timestamp { secs, nanos })
        } else {
            None
        }
    }

    /// Whether `nanos` is below a second (always so for values this crate builds).
    pub const fn is_valid(&self) -> bool {
        self.nanos < NANOS_PER_SEC
    }

    /// Nanoseconds since the epoch as an unsigned 64-bit number (how cyrus.index version 20
    /// stores times). Every such number is a valid time up to the year 2554.
    pub const fn from_unsigned_nanos(n: u64) -> Self {
        Timestamp {
            // Fits: see the assertion above.
            secs: (n / NANOS_PER_SEC as u64) as i64,
            nanos: (n % NANOS_PER_SEC as u64) as u32,
        }
    }

    /// The inverse of [`Timestamp::from_unsigned_nanos`]: `None` before 1970, after 2554,
    /// or when the value is not valid.
    pub fn to_unsigned_nanos(&self) -> Option<u64> {
        if !self.is_valid() {
            return None;
        }
        u64::try_from(self.secs)
            .ok()?
            .checked_mul(u64::from(NANOS_PER_SEC))?
            .checked_add(u64::from(self.nanos))
    }

    /// The same time as a [`SystemTime`]; `None` when the value is not valid or the platform
    /// cannot represent it.
    pub fn to_system_time(&self) -> Option<SystemTime> {
        if !self.is_valid() {
            return None;
        }
        let secs = Duration::from_secs(self.secs.unsigned_abs());
        let base = if self.secs >= 0 {
            UNIX_EPOCH.checked_add(secs)?
        } else {
            UNIX_EPOCH.checked_sub(secs)?
        };
        base.checked_add(Duration::from_nanos(u64::from(self.nanos)))
    }

    /// A [`SystemTime`] (e.g. a file's mtime, or now) as a timestamp; `None` if it is more
    /// than 2^63 seconds away from the epoch.
    pub fn from_system_time(t: SystemTime) -> Option<Self> {
        match t.duration_since(UNIX_EPOCH) {
            Ok(d) => Some(Timestamp {
                secs: i64::try_from(d.as_secs()).ok()?,
                nanos: d.subsec_nanos(),
            }),
            Err(before) => {
                // `d` before the epoch: whole seconds down, then nanoseconds back up.
                let d = before.duration();
                let secs = i64::try_from(d.as_secs()).ok()?;
                Some(match d.subsec_nanos() {
                    0 => Timestamp {
                        secs: -secs,
                        nanos: 0,
                    },
                    n => Timestamp {
                        secs: (-secs).checked_sub(1)?,
                        nanos: NANOS_PER_SEC - n,
                    },
                })
            }
        }
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.nanos == 0 {
            write!(f, "{}", self.secs)
        } else {
            write!(f, "{}.{:09}", self.secs, self.nanos)
        }
    }
}

/// A string that is not a timestamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected unix seconds, optionally with '.' and 1 to 9 digits, found {found:?}")]
pub struct ParseTimestampError {
    /// The text given (cut to 64 characters).
    pub found: String,
}

impl FromStr for Timestamp {
    type Err = ParseTimestampError;

    /// `<secs>` or `<secs>.<1 to 9 digits>`; `<secs>` may start with `-`, never with `+`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseTimestampError {
            found: s.chars().take(64).collect(),
        };
        let (whole, frac) = match s.split_once('.') {
            Some((w, f)) => (w, Some(f)),
            None => (s, None),
        };
        let digits = whole.strip_prefix('-').unwrap_or(whole);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let secs: i64 = whole.parse().map_err(|_| bad())?;
        let nanos = match frac {
            None => 0,
            Some(f) => {
                if f.is_empty() || f.len() > 9 || !f.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(bad());
                }
                let n: u32 = f.parse().map_err(|_| bad())?;
                n * 10u32.pow(9 - f.len() as u32)
            }
        };
        Ok(Timestamp { secs, nanos })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_forms() {
        let hex = "ceea60118a7b84dcdbde028fff958f73a8d18b5c";
        let g: Guid = hex.to_uppercase().parse().unwrap();
        assert_eq!(g.to_string(), hex);
        assert_eq!(g.to_hex(), hex);
        assert_eq!(format!("{g:?}"), format!("Guid({hex})"));
        assert_eq!(serde_json::to_value(g).unwrap(), serde_json::json!(hex));
        assert!(!g.is_null() && Guid::NULL.is_null() && Guid::default().is_null());
        for bad in ["", "ceea", &format!("{hex}0"), &format!("{}g", &hex[..39])] {
            let e = bad.parse::<Guid>().unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("expected a GUID of 40 hex digits, found {bad:?}")
            );
        }
        // Multi-byte text of 40 bytes must not panic the hex decoder.
        assert!("é".repeat(20).parse::<Guid>().is_err());
    }

    #[test]
    fn guid_of_is_sha1() {
        // sha1sum of the empty input.
        assert_eq!(
            Guid::of(b"").to_string(),
            "da39a3ee5e6b4b0d3255bfef95601890afd80709"
        );
    }

    #[test]
    fn timestamp_text_forms() {
        for (s, secs, nanos) in [
            ("0", 0, 0),
            ("-2.5", -2, 500_000_000),
            ("12.000000001", 12, 1),
            ("-9223372036854775808", i64::MIN, 0),
        ] {
            let t: Timestamp = s.parse().unwrap();
            assert_eq!((t.secs, t.nanos), (secs, nanos), "{s}");
        }
        for s in [
            "",
            ".5",
            "1.",
            "1.0000000001",
            "+1",
            "1e3",
            "--1",
            "1.-5",
            "-",
        ] {
            let e = s.parse::<Timestamp>().unwrap_err();
            assert!(e.to_string().ends_with(&format!("found {s:?}")), "{e}");
        }
        assert_eq!(
            Timestamp::new(-2, 500_000_000).unwrap().to_string(),
            "-2.500000000"
        );
        assert_eq!(Timestamp::from_secs(-7).to_string(), "-7");
        assert_eq!(
            serde_json::to_value(Timestamp::new(5, 6).unwrap()).unwrap(),
            serde_json::json!({"secs": 5, "nanos": 6})
        );
        assert!(Timestamp::new(0, 1_000_000_000).is_none());
        assert!(Timestamp::new(-2, 999_999_999).unwrap() < Timestamp::from_secs(-1));
    }

    #[test]
    fn unsigned_nanos() {
        for n in [0, 1, 999_999_999, 1_000_000_000, u64::MAX] {
            let t = Timestamp::from_unsigned_nanos(n);
            assert!(t.is_valid());
            assert_eq!(t.to_unsigned_nanos(), Some(n));
        }
        let max = Timestamp::from_unsigned_nanos(u64::MAX);
        assert_eq!((max.secs, max.nanos), (18_446_744_073, 709_551_615));
        assert_eq!(Timestamp::new(-1, 5).unwrap().to_unsigned_nanos(), None);
        assert_eq!(
            Timestamp::new(max.secs, 709_551_616)
                .unwrap()
                .to_unsigned_nanos(),
            None
        );
        let invalid = Timestamp {
            secs: 1,
            nanos: 1_000_000_000,
        };
        assert_eq!(invalid.to_unsigned_nanos(), None);
    }

    #[test]
    fn system_time() {
        for t in [
            Timestamp::EPOCH,
            Timestamp::new(1_795_415_424, 123_456_789).unwrap(),
            Timestamp::from_secs(-86_400),
            Timestamp::new(-2, 500_000_000).unwrap(),
        ] {
            let st = t.to_system_time().unwrap();
            assert_eq!(Timestamp::from_system_time(st), Some(t), "{t}");
        }
        let before = UNIX_EPOCH - Duration::from_millis(1_500);
        assert_eq!(
            Timestamp::from_system_time(before),
            Timestamp::new(-2, 500_000_000)
        );
        let invalid = Timestamp {
            secs: 1,
            nanos: 1_000_000_000,
        };
        assert_eq!(invalid.to_system_time(), None);
    }
}

/// What the mail server's stat() said about a file when it was copied: the data the planner
/// compares to decide whether a folder changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct FileStat {
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub mtime: Timestamp,
    /// Inode number.
    pub inode: u64,
}
