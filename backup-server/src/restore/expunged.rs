//! Expunged mail restored on purpose comes back without `\Deleted` (docs/restore.md,
//! "Expunged mail restored on purpose").
//!
//! A message is expunged because it carried `\Deleted` when a client said EXPUNGE. Restored
//! with the mark still on, the next EXPUNGE by any client (many send one on every folder
//! close) deletes it again. So the mark goes from every message a restore brings back that
//! had been expunged: one expunged (or gone) at the restore's time (`--include-expunged`),
//! and one visible then but expunged since (an older `--at`). `--keep-deleted-flag`
//! ([`super::Selection::keep_deleted_flag`]) keeps it.
//!
//! A message never expunged keeps its `\Deleted`: visible at the `--at` time with the mark
//! on, and still so at the newest state (or until its folder was deleted as a whole), it
//! is restored as it was: the user marked it and has not expunged it, and a restore "as it
//! was" (a deleted folder put back) must not change the user's pending decision. Only a
//! message that the expunge actually took is known to be wanted back.
//!
//! Every target gets the flags from here (the [`super::Item`]'s flags): Maildir's `T`
//! letter and mbox's `X-Status: D` follow from them, as does what IMAP APPENDs.

use crate::store::{Catalog, MessageAt, MessageState, Result};

/// The flags a restored message gets: `m`'s, without `\Deleted` when it had been expunged
/// ([`Catalog::was_expunged`], or not visible at the restore's time) and `keep_deleted_flag`
/// is not set. The store is asked only about messages that carry `\Deleted`.
pub(crate) fn restored_flags(
    cat: &Catalog,
    unique_id: &str,
    m: &MessageAt,
    keep_deleted_flag: bool,
) -> Result<Vec<String>> {
    if keep_deleted_flag || !m.flags.iter().any(|f| is_deleted(f)) {
        return Ok(m.flags.clone());
    }
    let expunged = m.state != MessageState::Visible || cat.was_expunged(unique_id, m.uid)?;
    Ok(if expunged {
        without_deleted(&m.flags)
    } else {
        m.flags.clone()
    })
}

/// `flags` without `\Deleted` (IMAP flag names are case-insensitive).
pub(crate) fn without_deleted(flags: &[String]) -> Vec<String> {
    flags.iter().filter(|f| !is_deleted(f)).cloned().collect()
}

fn is_deleted(flag: &str) -> bool {
    flag.eq_ignore_ascii_case("\\Deleted")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_deleted_flag_goes_in_any_case() {
        let f = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            without_deleted(&f(&["\\Seen", "\\Deleted", "$Label1"])),
            f(&["\\Seen", "$Label1"])
        );
        assert_eq!(without_deleted(&f(&["\\DELETED", "\\deleted"])), f(&[]));
        // A keyword that merely looks like it stays.
        assert_eq!(
            without_deleted(&f(&["Deleted", "$Deleted"])),
            f(&["Deleted", "$Deleted"])
        );
    }
}
