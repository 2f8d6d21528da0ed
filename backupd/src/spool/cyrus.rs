//! One Cyrus server as the spool's helpers read it (`Cyrus`): its imapd.conf, where its files
//! are, how long to wait for its locks, and each user's live mailboxes. The helpers take a
//! `Cyrus` rather than the [`Spool`](super::Spool) that holds it, so that nothing below
//! `mod.rs` depends on `mod.rs`.

use super::error::{io_err, SpoolError};
use super::layout::SpoolPaths;
use super::locks::DEFAULT_LOCK_TIMEOUT;
use super::mailbox::{is_live, Mailbox};
use super::mailboxes::user_mailboxes_within;
use super::names::{check_name, check_uniqueid};
use formats::cyrus::imapd_conf::ImapdConf;
use std::path::Path;
use std::time::Duration;

/// Reads imapd.conf at `path`, and the files it `@include`s (one level deep, as written).
pub fn load_imapd_conf(path: &Path) -> Result<ImapdConf, SpoolError> {
    let conf_err = |path: &Path| {
        let path = path.to_owned();
        move |source| SpoolError::Conf { path, source }
    };
    let text = std::fs::read(path).map_err(io_err(path))?;
    let mut conf = ImapdConf::parse(&text).map_err(conf_err(path))?;
    for include in conf.includes().to_vec() {
        let inc = Path::new(&include);
        let text = std::fs::read(inc).map_err(io_err(inc))?;
        let other = ImapdConf::parse(&text).map_err(conf_err(inc))?;
        conf.merge(other).map_err(conf_err(inc))?;
    }
    Ok(conf)
}

/// One Cyrus server: its configuration, where its files are, and how long its locks are
/// waited for.
#[derive(Debug)]
pub(crate) struct Cyrus {
    /// The parsed imapd.conf.
    pub(crate) conf: ImapdConf,
    /// Where its files are.
    pub(crate) layout: SpoolPaths,
    /// The longest wait for one of Cyrus's locks.
    pub(crate) lock_timeout: Duration,
}

impl Cyrus {
    /// Reads imapd.conf (and its `@include`s) and checks that the mailbox list is there.
    pub(crate) fn open(imapd_conf: &Path) -> Result<Cyrus, SpoolError> {
        let conf = load_imapd_conf(imapd_conf)?;
        let layout = SpoolPaths::new(&conf)?;
        std::fs::metadata(&layout.mailboxes_db).map_err(io_err(&layout.mailboxes_db))?;
        Ok(Cyrus {
            conf,
            layout,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        })
    }

    /// The user's live mailboxes (with files on this server), read from mailboxes.db; an
    /// unknown user (none found) is an error. The name is checked first.
    pub(crate) fn live_mailboxes(&self, user: &str) -> Result<Vec<Mailbox>, SpoolError> {
        check_name("user", user)?;
        let live: Vec<Mailbox> = user_mailboxes_within(&self.conf, user, self.lock_timeout)?
            .into_iter()
            .filter(is_live)
            .collect();
        if live.is_empty() {
            return Err(SpoolError::UnknownUser { user: user.into() });
        }
        for m in &live {
            // mailboxes.db is Cyrus's, but a path is built from this: check it all the same.
            check_uniqueid(&m.uniqueid)?;
        }
        Ok(live)
    }
}
