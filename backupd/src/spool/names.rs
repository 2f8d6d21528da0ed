//! Checks of the names a client sends (users, unique ids, sieve scripts), made before anything
//! is looked up or a path is built from them.

use super::error::SpoolError;

pub(crate) fn bad_name(what: &'static str, name: &str, rule: &'static str) -> SpoolError {
    SpoolError::BadName {
        what,
        name: name.chars().take(200).collect(),
        rule,
    }
}

/// Refuses a user or folder name that is empty or holds `..`, `/`, NUL or another control
/// character, before anything is looked up or built from it.
pub fn check_name(what: &'static str, name: &str) -> Result<(), SpoolError> {
    let bad = name.is_empty()
        || name.len() > 1024
        || name.contains("..")
        || name.chars().any(|c| c == '/' || c.is_control());
    if bad {
        return Err(bad_name(
            what,
            name,
            "names must be non-empty, at most 1024 bytes, without `..`, `/`, NUL or control \
             characters",
        ));
    }
    Ok(())
}

/// Refuses a sieve script name Cyrus would refuse (imap/sievedir.c `sievedir_valid_name`:
/// empty, or holding `/` or NUL), or one over 1024 bytes. Anything else is a valid Cyrus
/// script name (`v1..v2`, a tab) and must be backed up: the name only ever becomes
/// `<name>.script` or `<name>.bc` inside the user's sieve directory, which with the suffix
/// can be neither `.` nor `..`.
pub fn check_script_name(name: &str) -> Result<(), SpoolError> {
    if name.is_empty() || name.len() > 1024 || name.contains(['/', '\0']) {
        return Err(bad_name(
            "sieve script",
            name,
            "sieve script names must be non-empty, at most 1024 bytes, without `/` or NUL",
        ));
    }
    Ok(())
}

/// Refuses a unique id that is not 2 to 64 letters, digits, `-` or `_` (Cyrus 3.x makes
/// 24 lower-case letters and digits; older servers made hex or UUID-like ones).
pub fn check_uniqueid(id: &str) -> Result<(), SpoolError> {
    let ok = (2..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok {
        return Err(bad_name(
            "unique id",
            id,
            "unique ids are 2 to 64 ASCII letters, digits, `-` and `_`",
        ));
    }
    Ok(())
}
