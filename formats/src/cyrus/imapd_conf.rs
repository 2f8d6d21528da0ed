//! Cyrus's imapd.conf: `key: value` lines, read the way Cyrus 3.x reads them (lib/libconfig.c).
//!
//! * Leading blanks are skipped; a line that is then empty or starts with `#` is ignored
//!   (a `#` after a value is part of the value).
//! * A line ending in `\` continues on the next one.
//! * The key is letters, digits, `-` and `_` (case-insensitive: kept in lower case), an `@`
//!   may lead it (directives: `@include: <file>`), and `:` must follow it.
//! * The value is the rest of the line without surrounding blanks; it must not be empty.
//! * A key given twice is an error (Cyrus refuses to start).
//!
//! Service-specific keys (`imap_foo`, which Cyrus's imapd reads as `foo`) are kept as given:
//! mailbackup is no Cyrus service. `@include` files are listed by [`ImapdConf::includes`]
//! and left to the caller, which owns the I/O.

use super::mailboxes::SpoolHashing;
use thiserror::Error;

/// A line of imapd.conf that Cyrus would refuse.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("imapd.conf line {line} (byte {offset}): expected {expected}, found {found}")]
pub struct ImapdConfError {
    /// 1-based line number (of the first line, for continued lines).
    pub line: usize,
    /// Byte offset of the problem in the file.
    pub offset: usize,
    /// What Cyrus requires there.
    pub expected: &'static str,
    /// What was there.
    pub found: String,
}

/// `virtdomains`: how user names map to virtual domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VirtDomains {
    /// `off` (the default): no virtual domains.
    Off,
    /// `userid`: the domain comes from the user id (`alice@example.com`).
    Userid,
    /// `on`: from the user id, or else the server's address.
    On,
}

/// A parsed imapd.conf.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImapdConf {
    /// (key in lower case, value, line), in file order.
    options: Vec<(String, String, usize)>,
    includes: Vec<String>,
}

impl ImapdConf {
    /// Parses the text of an imapd.conf.
    pub fn parse(text: &[u8]) -> Result<Self, ImapdConfError> {
        let mut conf = ImapdConf::default();
        let mut logical = Vec::new(); // a line with its continuations joined
        let (mut start_line, mut start_offset) = (1, 0);
        let mut offset = 0;
        for (i, raw) in text.split_inclusive(|&b| b == b'\n').enumerate() {
            let line = raw.strip_suffix(b"\n").unwrap_or(raw);
            if logical.is_empty() {
                (start_line, start_offset) = (i + 1, offset);
            }
            offset += raw.len();
            if let Some(head) = line.strip_suffix(b"\\") {
                logical.extend_from_slice(head);
                continue;
            }
            logical.extend_from_slice(line);
            conf.line(&logical, start_line, start_offset)?;
            logical.clear();
        }
        if !logical.is_empty() {
            conf.line(&logical, start_line, start_offset)?;
        }
        Ok(conf)
    }

    fn line(&mut self, line: &[u8], lineno: usize, offset: usize) -> Result<(), ImapdConfError> {
        let err = |at: usize, expected, found: &[u8]| ImapdConfError {
            line: lineno,
            offset: offset + at,
            expected,
            found: format!("{:?}", String::from_utf8_lossy(found)),
        };
        let start = line.iter().take_while(|b| b.is_ascii_whitespace()).count();
        let rest = &line[start..];
        if rest.is_empty() || rest[0] == b'#' {
            return Ok(());
        }
        let directive = rest[0] == b'@';
        let key_len = usize::from(directive)
            + rest[usize::from(directive)..]
                .iter()
                .take_while(|&&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                .count();
        if rest.get(key_len) != Some(&b':') || key_len == usize::from(directive) {
            return Err(err(
                start + key_len,
                "an option name and ':'",
                &rest[key_len..],
            ));
        }
        // Only ASCII went into the key.
        let key = String::from_utf8_lossy(&rest[..key_len]).to_ascii_lowercase();
        let value = rest[key_len + 1..].trim_ascii();
        if value.is_empty() {
            return Err(err(start + key_len + 1, "a value after ':'", value));
        }
        let value = std::str::from_utf8(value)
            .map_err(|_| err(start + key_len + 1, "a UTF-8 value", value))?
            .to_owned();
        if directive {
            if key != "@include" {
                return Err(err(start, "the directive @include", key.as_bytes()));
            }
            self.includes.push(value);
            return Ok(());
        }
        if let Some((_, _, first)) = self.options.iter().find(|(k, _, _)| *k == key) {
            return Err(err(
                start,
                "each option once",
                format!("{key} again (first on line {first})").as_bytes(),
            ));
        }
        self.options.push((key, value, lineno));
        Ok(())
    }

    /// Adds the options of an `@include`d file; an option set in both is an error, as in
    /// Cyrus.
    pub fn merge(&mut self, other: ImapdConf) -> Result<(), ImapdConfError> {
        for (key, value, line) in other.options {
            if self.get(&key).is_some() {
                return Err(ImapdConfError {
                    line,
                    offset: 0,
                    expected: "each option once",
                    found: format!("{key} again (also in the including file)"),
                });
            }
            self.options.push((key, value, line));
        }
        self.includes.extend(other.includes);
        Ok(())
    }

    /// The value of an option (key in any case), as written.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(k, _, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v, _)| v.as_str())
    }

    /// Every option as (key in lower case, value), in file order.
    pub fn options(&self) -> impl Iterator<Item = (&str, &str)> {
        self.options
            .iter()
            .map(|(k, v, _)| (k.as_str(), v.as_str()))
    }

    /// The files named by `@include` lines, in order.
    pub fn includes(&self) -> &[String] {
        &self.includes
    }

    /// A switch option as Cyrus reads it (`1`/`yes`/`on`/`true` or `0`/`no`/`off`/`false`,
    /// by their first letters), or `default` when absent.
    pub fn switch(&self, key: &str, default: bool) -> Result<bool, ImapdConfError> {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        let b = v.as_bytes();
        match (b[0], b.get(1)) {
            (b'0' | b'n' | b'f', _) | (b'o', Some(b'f')) => Ok(false),
            (b'1' | b'y' | b't', _) | (b'o', Some(b'n')) => Ok(true),
            _ => Err(self.value_error(key, "a switch (yes/no, on/off, true/false, 1/0)")),
        }
    }

    fn value_error(&self, key: &str, expected: &'static str) -> ImapdConfError {
        let (_, value, line) = self
            .options
            .iter()
            .find(|(k, _, _)| k.eq_ignore_ascii_case(key))
            .expect("value_error is called for present keys");
        ImapdConfError {
            line: *line,
            offset: 0,
            expected,
            found: format!("{key}: {value}"),
        }
    }

    /// `configdirectory`: where mailboxes.db, the per-user files and the lock files live.
    pub fn configdirectory(&self) -> Option<&str> {
        self.get("configdirectory")
    }

    /// Path of the mailbox list: `mboxlist_db_path`, else `<configdirectory>/mailboxes.db`.
    pub fn mailboxes_db(&self) -> Option<String> {
        match self.get("mboxlist_db_path") {
            Some(p) => Some(p.to_owned()),
            None => Some(format!("{}/mailboxes.db", self.configdirectory()?)),
        }
    }

    /// `mboxlist_db`: the database type of the mailbox list (`twoskip` by default).
    pub fn mboxlist_db(&self) -> &str {
        self.get("mboxlist_db").unwrap_or("twoskip")
    }

    /// The root directory of partition `name` (`partition-<name>`).
    pub fn partition(&self, name: &str) -> Option<&str> {
        self.partitions()
            .find(|(n, _)| *n == name)
            .map(|(_, root)| root)
    }

    /// Every partition as (name, root directory), in file order.
    pub fn partitions(&self) -> impl Iterator<Item = (&str, &str)> {
        self.options()
            .filter_map(|(k, v)| Some((k.strip_prefix("partition-")?, v)))
    }

    /// `defaultpartition` (Cyrus lower-cases it), if set.
    pub fn defaultpartition(&self) -> Option<String> {
        self.get("defaultpartition").map(str::to_ascii_lowercase)
    }

    /// `sievedir` (`/usr/sieve` by default).
    pub fn sievedir(&self) -> &str {
        self.get("sievedir").unwrap_or("/usr/sieve")
    }

    /// `virtdomains` (`off` by default; `yes`/`no` style values mean `on`/`off`).
    pub fn virtdomains(&self) -> Result<VirtDomains, ImapdConfError> {
        match self
            .get("virtdomains")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("off" | "0" | "no" | "f" | "false") => Ok(VirtDomains::Off),
            Some("on" | "1" | "yes" | "t" | "true") => Ok(VirtDomains::On),
            Some("userid") => Ok(VirtDomains::Userid),
            Some(_) => Err(self.value_error("virtdomains", "off, userid or on")),
        }
    }

    /// `unixhierarchysep` (on by default since Cyrus 3.0): `/` separates folder levels.
    pub fn unixhierarchysep(&self) -> Result<bool, ImapdConfError> {
        self.switch("unixhierarchysep", true)
    }

    /// `deletedprefix` (`DELETED` by default): the delayed-delete namespace.
    pub fn deletedprefix(&self) -> &str {
        self.get("deletedprefix").unwrap_or("DELETED")
    }

    /// `hashimapspool` and `fulldirhash`, which shape name-based mailbox directories.
    pub fn spool_hashing(&self) -> Result<SpoolHashing, ImapdConfError> {
        Ok(SpoolHashing {
            hashimapspool: self.switch("hashimapspool", false)?,
            fulldirhash: self.switch("fulldirhash", false)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_blanks_continuations_and_case() {
        let text = b"# a comment\n\n   \n  ConfigDirectory:   /var/lib/cyrus  \n\
            partition-Default: /srv/a # not a comment\nsievedir: /var/\\\nsieve\n\
            virtdomains: userid\nhashimapspool: on\nfulldirhash: 0\nunixhierarchysep: no\n\
            @include: /etc/cyrus-extra.conf\nlast: no newline";
        let c = ImapdConf::parse(text).unwrap();
        assert_eq!(c.configdirectory(), Some("/var/lib/cyrus"));
        assert_eq!(c.partition("default"), Some("/srv/a # not a comment"));
        assert_eq!(c.sievedir(), "/var/sieve");
        assert_eq!(c.virtdomains(), Ok(VirtDomains::Userid));
        assert_eq!(c.unixhierarchysep(), Ok(false));
        assert_eq!(
            c.spool_hashing(),
            Ok(SpoolHashing {
                hashimapspool: true,
                fulldirhash: false
            })
        );
        assert_eq!(c.includes(), ["/etc/cyrus-extra.conf"]);
        assert_eq!(c.get("last"), Some("no newline"));
    }

    #[test]
    fn errors_name_line_and_offset() {
        let e = ImapdConf::parse(b"a: 1\nbad line\n").unwrap_err();
        assert_eq!((e.line, e.offset), (2, 8));
        let e = ImapdConf::parse(b"a: 1\nb:   \n").unwrap_err();
        assert_eq!((e.line, e.expected), (2, "a value after ':'"));
        let e = ImapdConf::parse(b"a: 1\nA: 2\n").unwrap_err();
        assert!(e.to_string().contains("first on line 1"), "{e}");
        let c = ImapdConf::parse(b"virtdomains: maybe\nhashimapspool: perhaps\n").unwrap();
        assert!(c.virtdomains().is_err());
        assert_eq!(c.spool_hashing().unwrap_err().line, 2);
    }
}
