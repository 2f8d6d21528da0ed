//! [`SpoolError`]: what could not be read on the spool, and why; every variant names the file
//! or the name asked for. The server turns each variant into a protocol error code.

use formats::cyrus::imapd_conf::ImapdConfError;
use formats::cyrus::mailboxes::MailboxListError;
use nix::errno::Errno;
use std::path::{Path, PathBuf};

/// Something on the spool that could not be read; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// A file could not be opened, stat'ed or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// The lock could not be taken or released.
    #[error("{path}: fcntl lock: {source}")]
    Lock {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: Errno,
    },
    /// Another process (a Cyrus writer) held a conflicting lock for longer than the lock
    /// timeout (`lock_timeout_secs`).
    #[error(
        "{path}: gave up waiting for the lock after {secs:.1} s (lock_timeout_secs): \
         another process, most likely a Cyrus writer, holds it",
        secs = .waited.as_secs_f64()
    )]
    LockTimeout {
        /// The file.
        path: PathBuf,
        /// How long it was waited for.
        waited: std::time::Duration,
    },
    /// imapd.conf is malformed.
    #[error("{path}: {source}")]
    Conf {
        /// The configuration file.
        path: PathBuf,
        /// Where and what.
        source: ImapdConfError,
    },
    /// imapd.conf lacks something this reader needs, or asks for what it cannot read.
    #[error("imapd.conf: {0}")]
    Config(String),
    /// The mailbox list is damaged.
    #[error("{path}: {source}")]
    MailboxList {
        /// The mailboxes.db file.
        path: PathBuf,
        /// Where and what.
        source: MailboxListError,
    },
    /// No live mailbox of this user is in the mailbox list.
    #[error("unknown user {user:?}: the mailbox list holds no live mailbox of that user")]
    UnknownUser {
        /// The user id asked for.
        user: String,
    },
    /// The user has no live mailbox with this unique id (never had, or it was deleted).
    #[error("user {user:?} has no live folder with unique id {uniqueid:?}")]
    UnknownFolder {
        /// The user id asked for.
        user: String,
        /// The unique id asked for.
        uniqueid: String,
    },
    /// A name was refused before any path was built from it.
    #[error("refused {what} {name:?}: {rule}")]
    BadName {
        /// What the name was meant to name (`user`, `unique id`, `sieve script`, ...).
        what: &'static str,
        /// The name as given (cut to 200 characters).
        name: String,
        /// The rule it breaks.
        rule: &'static str,
    },
    /// A copied cyrus.header does not parse, in every copy taken under Cyrus's locks.
    #[error("{path}: {source} (in each of {attempts} copies taken under Cyrus's locks)")]
    BadHeader {
        /// The cyrus.header file.
        path: PathBuf,
        /// How many copies were tried.
        attempts: u32,
        /// Where and what.
        source: formats::cyrus::header::HeaderError,
    },
    /// A copied cyrus.index does not parse, in every copy taken under Cyrus's locks.
    #[error("{path}: {source} (in each of {attempts} copies taken under Cyrus's locks)")]
    BadIndex {
        /// The cyrus.index file.
        path: PathBuf,
        /// How many copies were tried.
        attempts: u32,
        /// Where and what.
        source: formats::cyrus::index::IndexError,
    },
    /// Cyrus compiled a sieve script whose source is not among the live messages of the
    /// user's `#sieve` mailbox.
    #[error(
        "sieve script {name:?} of user {user:?}: {bytecode} exists, but no live message of \
         the #sieve mailbox has that name as its Subject"
    )]
    SieveSource {
        /// The user id.
        user: String,
        /// The script name.
        name: String,
        /// The compiled script.
        bytecode: PathBuf,
    },
    /// The error of a read shared by several requests (the user list's single read: see
    /// `spool::user_list`); each of them reports it.
    #[error(transparent)]
    Shared(std::sync::Arc<SpoolError>),
}

impl SpoolError {
    /// The error itself, looking through [`SpoolError::Shared`] (a read shared by several
    /// requests reports its error to each of them wrapped so).
    pub fn cause(&self) -> &SpoolError {
        match self {
            SpoolError::Shared(e) => e.cause(),
            e => e,
        }
    }
}

/// The [`SpoolError::Io`] for a failed operation on `path`, for `map_err`.
pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_owned(),
        source,
    }
}
