//! Cyrus's locks, taken the way Cyrus 3.6 takes them (docs/cyrus-locks.md has the whole
//! story with the source references).
//!
//! Cyrus (Debian's build: lib/lock_fcntl.c) locks with classic fcntl record locks on whole
//! files. backupd takes open-file-description locks (`F_OFD_SETLK`) instead: on Linux they
//! conflict with classic locks both ways, so Cyrus waits for backupd's shared locks exactly as
//! for those of its own readers, and they belong to one open file, not to the process, so two
//! threads of the daemon that open and close the same file cannot drop each other's locks.
//!
//! Unlike Cyrus's readers, backupd does not wait without end (`F_OFD_SETLKW`): a Cyrus
//! process hung while holding a lock exclusive would keep a spool thread for good, and enough
//! of them would stop the daemon. It tries (`F_OFD_SETLK`), sleeps a little longer each time
//! (1 ms doubling up to [`MAX_BACKOFF`]) and gives up after the lock timeout
//! (`lock_timeout_secs`, [`DEFAULT_LOCK_TIMEOUT`]) with [`SpoolError::LockTimeout`].
//!
//! Per mailbox, in this order (imap/mailbox.c `mailbox_open_advanced`):
//! 1. the user's namespace lock, `<lockroot>/*U*<user>.lock` (`user_lock_path`);
//! 2. the mailbox's name lock, `<lockroot>/<unique id>.lock` (`mailbox_lock_path`);
//! 3. the lock on the mailbox's cyrus.index itself.
//!
//! Readers take all three shared. Locks are let go in the reverse order when the guards drop.
//!
//! Cyrus's database files (mailboxes.db, seen.db, sub.db, cyrus.annotations) are read under
//! the shared lock on the whole file that their readers take ([`open_locked`]).

use super::error::{io_err, SpoolError};
use super::mailbox::Mailbox;
use formats::cyrus::mailboxes::{MailboxName, SpoolHashing};
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a lock is waited for when the configuration does not say (`lock_timeout_secs`).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest sleep between two tries for a lock: what a lock let go may stay unused.
pub const MAX_BACKOFF: Duration = Duration::from_millis(32);

/// Tries once to take (`F_RDLCK`, `F_WRLCK`) or release (`F_UNLCK`) a classic, per-process
/// fcntl lock on the whole file: the lock Cyrus itself takes (lib/lock_fcntl.c). backupd
/// never takes it (it takes OFD locks: see the module documentation); tests use it to play
/// a Cyrus reader or writer. A conflicting lock is `Err(EAGAIN)` or `Err(EACCES)`.
pub fn cyrus_style_lock(file: &File, kind: nix::libc::c_int) -> Result<(), Errno> {
    let flock = nix::libc::flock {
        l_type: kind as nix::libc::c_short,
        l_whence: nix::libc::SEEK_SET as nix::libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    fcntl(file, FcntlArg::F_SETLK(&flock)).map(drop)
}

/// Tries once to take (or release) an OFD lock of `kind` (`F_RDLCK`, `F_WRLCK`, `F_UNLCK`)
/// on the whole file; `Ok(false)` when a conflicting lock is held.
fn try_lock(file: &File, kind: nix::libc::c_int) -> Result<bool, Errno> {
    let flock = nix::libc::flock {
        l_type: kind as nix::libc::c_short,
        l_whence: nix::libc::SEEK_SET as nix::libc::c_short,
        l_start: 0,
        l_len: 0, // to the end of the file, however it grows
        l_pid: 0, // required for OFD locks
    };
    loop {
        match fcntl(file, FcntlArg::F_OFD_SETLK(&flock)) {
            Ok(_) => return Ok(true),
            // fcntl(2): a conflicting lock is EAGAIN or EACCES, depending on the system.
            Err(Errno::EAGAIN | Errno::EACCES) => return Ok(false),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Releases the OFD lock on the whole file (never waits).
pub(crate) fn unlock(file: &File, path: &Path) -> Result<(), SpoolError> {
    try_lock(file, nix::libc::F_UNLCK)
        .map(drop)
        .map_err(|source| SpoolError::Lock {
            path: path.to_owned(),
            source,
        })
}

/// Takes an OFD lock of `kind` on the whole file, trying again with a growing pause until
/// `timeout` has passed; then [`SpoolError::LockTimeout`] names the file and the wait.
pub(crate) fn wait_lock(
    file: &File,
    path: &Path,
    kind: nix::libc::c_int,
    timeout: Duration,
) -> Result<(), SpoolError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        match try_lock(file, kind) {
            Ok(true) => return Ok(()),
            Ok(false) => {}
            Err(source) => {
                return Err(SpoolError::Lock {
                    path: path.to_owned(),
                    source,
                })
            }
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(SpoolError::LockTimeout {
                path: path.to_owned(),
                waited,
            });
        }
        std::thread::sleep(pause.min(timeout - waited));
        pause = (pause * 2).min(MAX_BACKOFF);
    }
}

/// Takes the shared lock on an open file, waiting at most `timeout`, naming the file in
/// the error.
pub(crate) fn lock_shared(file: &File, path: &Path, timeout: Duration) -> Result<(), SpoolError> {
    wait_lock(file, path, nix::libc::F_RDLCK, timeout)
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
    /// creates them on first use), empty, mode 0600, owned like the lock directory when
    /// backupd runs as root, so that Cyrus can still open it read-write. Waits at most
    /// `timeout` for the lock.
    pub(crate) fn shared(
        path: &Path,
        root: &Path,
        timeout: Duration,
    ) -> Result<NameLock, SpoolError> {
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
        lock_shared(&file, path, timeout)?;
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
    if needs_chown(running_as_root(), owner_of(&meta), owner_of(&owner)) {
        std::os::unix::fs::fchown(&file, Some(owner.uid()), Some(owner.gid())).map_err(io(path))?;
    }
    Ok(file)
}

fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Whether a file backupd created (`created`) must be given to the lock directory's owner
/// (`dir`). Only as root: a file root creates would be root's, and Cyrus could not open it.
/// Any other user is the one Cyrus runs as (or shares a group with it, for the locks to
/// work at all), may not give files away (EPERM), and need not.
fn needs_chown(as_root: bool, created: (u32, u32), dir: (u32, u32)) -> bool {
    as_root && created != dir
}

/// A file's (owner, group).
fn owner_of(meta: &std::fs::Metadata) -> (u32, u32) {
    (meta.uid(), meta.gid())
}

fn chown_like(path: &Path, owner: &std::fs::Metadata) -> Result<(), SpoolError> {
    let meta = std::fs::metadata(path).map_err(|source| SpoolError::Io {
        path: path.to_owned(),
        source,
    })?;
    if needs_chown(running_as_root(), owner_of(&meta), owner_of(owner)) {
        std::os::unix::fs::chown(path, Some(owner.uid()), Some(owner.gid())).map_err(|source| {
            SpoolError::Io {
                path: path.to_owned(),
                source,
            }
        })?;
    }
    Ok(())
}

/// The whole of the Cyrus database file at `path`, read under the shared lock Cyrus's own
/// readers take; the lock is released before returning. For small files (and the
/// measurements in docs/mailbox-list.md);
/// [`read_mailbox_list`](super::mailboxes::read_mailbox_list) does not need the whole file.
pub fn read_locked(path: &Path) -> Result<Vec<u8>, SpoolError> {
    let mut file = open_locked(path)?;
    let mut data = Vec::with_capacity(file.metadata().map_err(io_err(path))?.len() as usize);
    file.read_to_end(&mut data).map_err(io_err(path))?;
    unlock(&file, path)?;
    Ok(data)
}

/// Opens a Cyrus database file (mailboxes.db, seen.db, sub.db, cyrus.annotations) and takes
/// the shared lock Cyrus's readers take, following a repack that renamed a new file over it
/// as they do: when the open file is no longer the one at the path, the one there now is
/// opened and locked. The lock lasts as long as the returned file is open.
/// Waits at most [`DEFAULT_LOCK_TIMEOUT`] for the lock; [`open_locked_within`] takes the wait.
pub fn open_locked(path: &Path) -> Result<File, SpoolError> {
    open_locked_within(path, DEFAULT_LOCK_TIMEOUT)
}

/// [`open_locked`], waiting at most `timeout` for each lock taken.
pub fn open_locked_within(path: &Path, timeout: Duration) -> Result<File, SpoolError> {
    let mut file = File::open(path).map_err(io_err(path))?;
    loop {
        lock_shared(&file, path, timeout)?;
        let open = file.metadata().map_err(io_err(path))?;
        let named = std::fs::metadata(path).map_err(io_err(path))?;
        if (open.dev(), open.ino()) == (named.dev(), named.ino()) {
            return Ok(file);
        }
        // Repacked and renamed while we waited: lock the file that is there now.
        file = File::open(path).map_err(io_err(path))?;
    }
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
        let unit = include_str!("../../../contrib/backupd.service");
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

    /// A classic whole-file fcntl lock, as a Cyrus process takes it.
    fn cyrus_lock(path: &Path, kind: nix::libc::c_int) -> File {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        cyrus_style_lock(&file, kind).unwrap();
        file
    }

    #[test]
    fn a_lock_let_go_is_taken_soon_and_one_held_is_given_up_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        std::fs::write(&path, b"").unwrap();
        let ours = File::open(&path).unwrap();

        let writer = cyrus_lock(&path, nix::libc::F_WRLCK);
        let t = Instant::now();
        let e = lock_shared(&ours, &path, Duration::from_millis(150)).unwrap_err();
        let took = t.elapsed();
        assert!(
            matches!(&e, SpoolError::LockTimeout { path: p, waited } if *p == path && *waited >= Duration::from_millis(150)),
            "{e}"
        );
        // Given up on at its timeout, not stuck on the held lock (how soon after the timeout
        // is up to the machine's scheduler).
        assert!(took < Duration::from_secs(60), "{took:?}");

        // Let go while we wait (after 200 ms, most likely while we retry; taken either way):
        // taken after it was let go, and long before the deadline (an hour), which only a
        // wait that missed the release would reach.
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let at = Instant::now();
            drop(writer);
            at
        });
        lock_shared(&ours, &path, Duration::from_secs(3600)).unwrap();
        let taken = Instant::now();
        let released = release.join().unwrap();
        assert!(taken >= released, "taken while still held");
        assert!(
            taken - released < Duration::from_secs(60),
            "{:?}",
            taken - released
        );
        // Shared with another reader: no wait at all.
        unlock(&ours, &path).unwrap();
        let reader = cyrus_lock(&path, nix::libc::F_RDLCK);
        lock_shared(&ours, &path, Duration::ZERO).unwrap();
        drop(reader);
    }

    #[test]
    fn only_root_gives_lock_files_to_the_directory_owner() {
        let (cyrus, root) = ((97, 104), (0, 0));
        assert!(needs_chown(true, root, cyrus));
        assert!(!needs_chown(true, cyrus, cyrus));
        // Not root: never. It could not (EPERM), and Cyrus does not need it: backupd then
        // runs as Cyrus's user.
        assert!(!needs_chown(false, (1000, 1000), cyrus));
        assert!(!needs_chown(false, (97, 1000), cyrus));
        assert!(!needs_chown(false, cyrus, cyrus));

        if !running_as_root() {
            return;
        }
        // As root, for real: the lock directory belongs to someone else (Cyrus's user).
        let dir = tempfile::tempdir().unwrap();
        let lock_root = dir.path().join("lock");
        std::fs::create_dir(&lock_root).unwrap();
        std::os::unix::fs::chown(&lock_root, Some(4242), Some(4243)).unwrap();
        let hashed = SpoolHashing {
            hashimapspool: true,
            fulldirhash: false,
        };
        let path = user_lock_path(&lock_root, "alice", hashed);
        drop(NameLock::shared(&path, &lock_root, DEFAULT_LOCK_TIMEOUT).unwrap());
        for p in [&path, path.parent().unwrap()] {
            let meta = std::fs::metadata(p).unwrap();
            assert_eq!(owner_of(&meta), (4242, 4243), "{}", p.display());
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
        let _held = NameLock::shared(&path, root, DEFAULT_LOCK_TIMEOUT).unwrap();
        assert!(path.exists());
        // A classic exclusive lock (what a Cyrus writer takes) is refused while it is held.
        let writer = OpenOptions::new().write(true).open(&path).unwrap();
        assert_eq!(
            cyrus_style_lock(&writer, nix::libc::F_WRLCK),
            Err(Errno::EAGAIN)
        );
    }
}
