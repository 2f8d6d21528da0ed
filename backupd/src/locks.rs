//! Cyrus's locks, taken the way Cyrus 3.6 takes them (docs/cyrus-locks.md has the whole
//! story with the source references).
//!
//! Cyrus (Debian's build: lib/lock_fcntl.c) locks with classic fcntl record locks on whole
//! files. backupd takes open-file-description locks (`F_OFD_SETLKW`) instead: on Linux they
//! conflict with classic locks both ways, so Cyrus waits for backupd's shared locks exactly as
//! for those of its own readers, and they belong to one open file, not to the process, so two
//! threads of the daemon that open and close the same file cannot drop each other's locks.
//!
//! Per mailbox, in this order (imap/mailbox.c `mailbox_open_advanced`):
//! 1. the user's namespace lock, `<lockroot>/*U*<user>.lock` (`user_lock_path`);
//! 2. the mailbox's name lock, `<lockroot>/<unique id>.lock` (`mailbox_lock_path`);
//! 3. the lock on the mailbox's cyrus.index itself.
//!
//! Readers take all three shared. Locks are let go in the reverse order when the guards drop.

use crate::spool::{Mailbox, SpoolError};
use formats::cyrus::mailboxes::{MailboxName, SpoolHashing};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Takes (waiting as long as it takes, as Cyrus's readers do) or releases an OFD lock on
/// the whole file. `kind` is `F_RDLCK`, `F_WRLCK` or `F_UNLCK`.
pub(crate) fn set_lock(file: &File, kind: nix::libc::c_int) -> Result<(), Errno> {
    let flock = nix::libc::flock {
        l_type: kind as nix::libc::c_short,
        l_whence: nix::libc::SEEK_SET as nix::libc::c_short,
        l_start: 0,
        l_len: 0, // to the end of the file, however it grows
        l_pid: 0, // required for OFD locks
    };
    loop {
        match fcntl(file, FcntlArg::F_OFD_SETLKW(&flock)) {
            Err(Errno::EINTR) => continue,
            other => return other.map(drop),
        }
    }
}

/// Takes the shared lock on an open file, naming the file in the error.
pub(crate) fn lock_shared(file: &File, path: &Path) -> Result<(), SpoolError> {
    set_lock(file, nix::libc::F_RDLCK).map_err(|source| SpoolError::Lock {
        path: path.to_owned(),
        source,
    })
}

/// Where Cyrus keeps its name lock files: `mboxname_lockpath`, else `<configdirectory>/lock`
/// (imap/mboxname.c `mboxname_lockpath_suffix`).
pub(crate) fn lock_root(conf: &formats::cyrus::imapd_conf::ImapdConf) -> Option<PathBuf> {
    match conf.get("mboxname_lockpath") {
        Some(p) => Some(PathBuf::from(p)),
        None => Some(Path::new(conf.configdirectory()?).join("lock")),
    }
}

/// The lock file of a Cyrus "name": `mboxname_hash` of the name under the lock root, plus
/// `.lock`. A name without dots is a single level, so this is `<root>/<name>.lock`, or
/// `<root>/<h>/<name>.lock` with `hashimapspool`.
fn name_lock_path(root: &Path, level: &str, hashing: SpoolHashing) -> PathBuf {
    let name = MailboxName {
        boxes: vec![level.to_owned()],
        ..MailboxName::default()
    };
    let mut path = root.join(name.legacy_dir(hashing));
    path.as_mut_os_string().push(".lock");
    path
}

/// The user's namespace lock (imap/user.c `user_namespacelock_full`): the name is `*U*` and
/// the user id, whose dots Cyrus's internal names write as `^` (`*U*u002^x` for `u002.x`).
pub(crate) fn user_lock_path(root: &Path, userid: &str, hashing: SpoolHashing) -> PathBuf {
    name_lock_path(root, &format!("*U*{userid}"), hashing)
}

/// A mailbox's name lock (imap/mailbox.c `mailbox_open_advanced`): by unique id, or by name
/// for a mailbox stored by name (type flag `l`).
pub(crate) fn mailbox_lock_path(root: &Path, mailbox: &Mailbox, hashing: SpoolHashing) -> PathBuf {
    match &mailbox.legacy_dir {
        Some(dir) => {
            let mut path = root.join(&**dir);
            path.as_mut_os_string().push(".lock");
            path
        }
        None => name_lock_path(root, &mailbox.uniqueid, hashing),
    }
}

/// A Cyrus name lock held shared; released when dropped (closing the file ends the OFD lock).
#[derive(Debug)]
pub(crate) struct NameLock {
    _file: File,
}

impl NameLock {
    /// Opens the lock file and waits for the shared lock. A missing file is created as Cyrus
    /// would create it (imap/mboxname.c `mboxname_lock`: it never deletes lock files, and
    /// creates them on first use), empty, mode 0600, owned like the lock directory, so that
    /// Cyrus can still open it read-write when backupd runs as root.
    pub(crate) fn shared(path: &Path, root: &Path) -> Result<NameLock, SpoolError> {
        let io = |source| SpoolError::Io {
            path: path.to_owned(),
            source,
        };
        let flags = nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC;
        let file = match OpenOptions::new().read(true).custom_flags(flags).open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == ErrorKind::NotFound => create_lock_file(path, root)?,
            Err(e) => return Err(io(e)),
        };
        lock_shared(&file, path)?;
        Ok(NameLock { _file: file })
    }
}

fn create_lock_file(path: &Path, root: &Path) -> Result<File, SpoolError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| SpoolError::Io { path, source }
    };
    // The root itself missing is a configuration problem: say so rather than invent it.
    let owner = std::fs::metadata(root).map_err(io(root))?;
    let parent = path.parent().unwrap_or(root);
    if parent != root && !parent.exists() {
        // `hashimapspool`'s one-letter directory.
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        chown_like(parent, &owner)?;
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true) // needed by O_CREAT; nothing is ever written
        .create(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(io(path))?;
    let meta = file.metadata().map_err(io(path))?;
    if (meta.uid(), meta.gid()) != (owner.uid(), owner.gid()) {
        std::os::unix::fs::fchown(&file, Some(owner.uid()), Some(owner.gid())).map_err(io(path))?;
    }
    Ok(file)
}

fn chown_like(path: &Path, owner: &std::fs::Metadata) -> Result<(), SpoolError> {
    let meta = std::fs::metadata(path).map_err(|source| SpoolError::Io {
        path: path.to_owned(),
        source,
    })?;
    if (meta.uid(), meta.gid()) != (owner.uid(), owner.gid()) {
        std::os::unix::fs::chown(path, Some(owner.uid()), Some(owner.gid())).map_err(|source| {
            SpoolError::Io {
                path: path.to_owned(),
                source,
            }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_paths_as_cyrus_names_them() {
        let root = Path::new("/l");
        let plain = SpoolHashing::default();
        let hashed = SpoolHashing {
            hashimapspool: true,
            fulldirhash: false,
        };
        assert_eq!(
            user_lock_path(root, "u002.x", plain),
            Path::new("/l/*U*u002^x.lock")
        );
        assert_eq!(
            user_lock_path(root, "alice@example.com", plain),
            Path::new("/l/*U*alice@example^com.lock")
        );
        // dir_hash_c of `*`: not a letter, so `q`.
        assert_eq!(
            user_lock_path(root, "alice", hashed),
            Path::new("/l/q/*U*alice.lock")
        );
        let mailbox = Mailbox {
            folder: "INBOX".into(),
            uniqueid: "9larhequg4n2vyip2tvslkaa".into(),
            partition: "default".into(),
            mbtype: Default::default(),
            deleted_at: None,
            legacy_dir: None,
            uidvalidity: 1,
            foldermodseq: 1,
        };
        assert_eq!(
            mailbox_lock_path(root, &mailbox, plain),
            Path::new("/l/9larhequg4n2vyip2tvslkaa.lock")
        );
        assert_eq!(
            mailbox_lock_path(root, &mailbox, hashed),
            Path::new("/l/q/9larhequg4n2vyip2tvslkaa.lock") // a digit hashes to `q`
        );
        let legacy = Mailbox {
            legacy_dir: Some("user/alice/Work".into()),
            ..mailbox
        };
        assert_eq!(
            mailbox_lock_path(root, &legacy, plain),
            Path::new("/l/user/alice/Work.lock")
        );
    }

    #[test]
    fn the_systemd_unit_leaves_the_lock_directory_writable() {
        // Under ProtectSystem=strict only ReadWritePaths can be written, and backupd must
        // create a lock file Cyrus has not created yet. Debian's stock imapd.conf puts the
        // locks in /run/cyrus/lock (a tmpfs, empty after every reboot).
        let unit = include_str!("../../contrib/backupd.service");
        let writable: Vec<&str> = unit
            .lines()
            .filter_map(|l| l.strip_prefix("ReadWritePaths="))
            .flat_map(str::split_whitespace)
            .map(|p| p.trim_start_matches(['-', '+']))
            .collect();
        for conf in [
            &b"configdirectory: /var/lib/cyrus\nmboxname_lockpath: /run/cyrus/lock\n"[..],
            b"configdirectory: /var/lib/cyrus\n",
        ] {
            let conf = formats::cyrus::imapd_conf::ImapdConf::parse(conf).unwrap();
            let root = lock_root(&conf).unwrap();
            assert!(
                writable.iter().any(|w| root.starts_with(w)),
                "{} is not among ReadWritePaths {writable:?}",
                root.display()
            );
        }
    }

    #[test]
    fn a_missing_lock_file_is_created_and_locked() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let path = user_lock_path(
            root,
            "alice",
            SpoolHashing {
                hashimapspool: true,
                fulldirhash: false,
            },
        );
        let _held = NameLock::shared(&path, root).unwrap();
        assert!(path.exists());
        // A classic exclusive lock (what a Cyrus writer takes) is refused while it is held.
        let writer = OpenOptions::new().write(true).open(&path).unwrap();
        let flock = nix::libc::flock {
            l_type: nix::libc::F_WRLCK as nix::libc::c_short,
            l_whence: nix::libc::SEEK_SET as nix::libc::c_short,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        assert_eq!(
            fcntl(&writer, FcntlArg::F_SETLK(&flock)),
            Err(Errno::EAGAIN)
        );
    }
}
