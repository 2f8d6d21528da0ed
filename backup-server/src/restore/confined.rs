//! The restore's target directory, opened: every file and directory a restore creates is
//! created relative to a directory descriptor (`openat`, `mkdirat`, `linkat`), one name at a
//! time, never following a symbolic link: not at the target itself, not at a folder, `cur`,
//! `new` or `tmp` directory, not at a file. A name is one path component, never `..`. So no
//! folder name, and nothing planted in the target beforehand (a symlink to `/etc`, a
//! dangling one, a FIFO, a hard link), can make a restore write outside its target, and no
//! check-then-act race is left: a new file is created with `O_CREAT|O_EXCL|O_NOFOLLOW`,
//! and moved into place with `linkat`, which fails rather than replace what is there.
//!
//! Everything created is 0700 (directories) or 0600 (files), the mode set explicitly on the
//! descriptor whatever the umask, and owned by the [`Owner`] when the restore is for a
//! local user (`restore --owner USER`), `fchown` on the open descriptor. Directories that
//! exist already are used as they are (a restore into an existing Maildir), files never:
//! a restore never overwrites.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstat, mkdirat, Mode, SFlag};
use nix::unistd::{fchown, linkat, unlinkat, Gid, Uid, UnlinkatFlags};

use super::RestoreError;

/// Whom restored files belong to (`restore --owner USER`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The user's name, for messages.
    pub name: String,
    /// Its uid.
    pub uid: u32,
    /// Its primary group.
    pub gid: u32,
}

impl Owner {
    /// Looks a local user up by name.
    pub fn lookup(name: &str) -> Result<Owner, RestoreError> {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => Ok(Owner {
                name: name.to_owned(),
                uid: u.uid.as_raw(),
                gid: u.gid.as_raw(),
            }),
            Ok(None) => Err(RestoreError::NoSuchOwner {
                name: name.to_owned(),
                source: None,
            }),
            Err(e) => Err(RestoreError::NoSuchOwner {
                name: name.to_owned(),
                source: Some(e.into()),
            }),
        }
    }
}

/// An opened directory of the target.
#[derive(Debug)]
pub(crate) struct Dir {
    fd: OwnedFd,
    /// Its path, for messages only: never opened again by it.
    path: PathBuf,
    owner: Option<Owner>,
}

const DIR_FLAGS: OFlag = OFlag::O_RDONLY
    .union(OFlag::O_DIRECTORY)
    .union(OFlag::O_NOFOLLOW)
    .union(OFlag::O_CLOEXEC);

fn dir_mode() -> Mode {
    Mode::from_bits_truncate(crate::private::DIR_MODE)
}

fn file_mode() -> Mode {
    Mode::from_bits_truncate(crate::private::FILE_MODE)
}

impl Dir {
    /// Opens the target's root directory, creating it (and missing parents, 0700) when it
    /// does not exist. Where it exists it must be a real directory: a symlink there is
    /// refused.
    pub(crate) fn open_root(path: &Path, owner: Option<Owner>) -> Result<Dir, RestoreError> {
        let existed = std::fs::symlink_metadata(path).is_ok();
        if !existed {
            crate::private::create_dir_all(path).map_err(|source| RestoreError::CreateDir {
                path: path.to_path_buf(),
                source,
            })?;
        }
        let fd = nix::fcntl::open(path, DIR_FLAGS, Mode::empty()).map_err(|e| {
            let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
            refusal(path, e, link)
        })?;
        let d = Dir {
            fd,
            path: path.to_path_buf(),
            owner,
        };
        if !existed {
            d.own(&d.fd, path)?;
        }
        Ok(d)
    }

    /// The directory holding the file `path` (a single-file target such as `mbox:FILE`),
    /// created like [`Dir::open_root`]; and the file's name in it.
    pub(crate) fn open_parent(
        path: &Path,
        owner: Option<Owner>,
    ) -> Result<(Dir, String), RestoreError> {
        let name =
            path.file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| RestoreError::BadName {
                    path: path.to_path_buf(),
                })?;
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        Ok((Dir::open_root(parent, owner)?, name.to_owned()))
    }

    /// A second handle on this directory (INBOX of a Maildir is its root).
    pub(crate) fn dup(&self) -> Result<Dir, RestoreError> {
        let fd = self
            .fd
            .try_clone()
            .map_err(|source| RestoreError::CreateDir {
                path: self.path.clone(),
                source,
            })?;
        Ok(Dir {
            fd,
            path: self.path.clone(),
            owner: self.owner.clone(),
        })
    }

    /// The path of `name` in this directory, for messages.
    pub(crate) fn path_of(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// This directory's path, for messages.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The subdirectory `name`, created 0700 (and owned) when missing; a symlink or
    /// anything but a directory there is refused.
    pub(crate) fn subdir(&self, name: &str) -> Result<Dir, RestoreError> {
        let path = self.checked(name)?;
        let created = match mkdirat(&self.fd, name, dir_mode()) {
            Ok(()) => true,
            Err(Errno::EEXIST) => false,
            Err(e) => {
                return Err(RestoreError::CreateDir {
                    path,
                    source: e.into(),
                })
            }
        };
        let fd = openat(&self.fd, name, DIR_FLAGS, Mode::empty())
            .map_err(|e| refusal(&path, e, self.is_symlink(name)))?;
        if created {
            self.own(&fd, &path)?;
        }
        Ok(Dir {
            fd,
            path,
            owner: self.owner.clone(),
        })
    }

    /// Creates the new file `name` (0600, owned), failing if anything is there: a file, a
    /// symlink (dangling or not), a FIFO.
    pub(crate) fn create_new(&self, name: &str) -> Result<File, RestoreError> {
        let path = self.checked(name)?;
        let flags =
            OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match openat(&self.fd, name, flags, file_mode()) {
            Ok(fd) => fd,
            Err(Errno::EEXIST) if self.is_symlink(name) => {
                return Err(RestoreError::Symlink { path })
            }
            Err(Errno::EEXIST) => return Err(RestoreError::Exists { path }),
            Err(e) => {
                return Err(RestoreError::Create {
                    path,
                    source: e.into(),
                })
            }
        };
        self.own(&fd, &path)?;
        Ok(File::from(fd))
    }

    /// Makes sure the empty marker file `name` (Maildir++'s `maildirfolder`) is there: a
    /// regular file that exists is kept; a symlink or anything else there is refused.
    pub(crate) fn ensure_marker(&self, name: &str) -> Result<(), RestoreError> {
        match self.create_new(name) {
            Ok(_) => Ok(()),
            Err(RestoreError::Exists { path }) => {
                // O_NONBLOCK: a FIFO planted there must not hang the restore.
                let flags =
                    OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
                let fd = openat(&self.fd, name, flags, Mode::empty())
                    .map_err(|e| refusal(&path, e, self.is_symlink(name)))?;
                let st = fstat(&fd).map_err(|e| RestoreError::Create {
                    path: path.clone(),
                    source: e.into(),
                })?;
                if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
                    return Err(RestoreError::NotAFile { path });
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves the file `from` of this directory to `to` in `dir` (`linkat`, then `unlinkat`):
    /// fails, leaving everything as it was, when `to` exists in any form.
    pub(crate) fn move_new(&self, from: &str, dir: &Dir, to: &str) -> Result<(), RestoreError> {
        let path = dir.checked(to)?;
        self.checked(from)?;
        match linkat(&self.fd, from, &dir.fd, to, AtFlags::empty()) {
            Ok(()) => {}
            Err(Errno::EEXIST) if dir.is_symlink(to) => return Err(RestoreError::Symlink { path }),
            Err(Errno::EEXIST) => return Err(RestoreError::Exists { path }),
            Err(e) => {
                return Err(RestoreError::Rename {
                    path,
                    source: e.into(),
                })
            }
        }
        self.remove(from);
        Ok(())
    }

    /// Moves the file `from` of this directory over `to` in `dir`, replacing a regular
    /// file there (`renameat` replaces the name, never writes through it); a symlink
    /// there is refused.
    pub(crate) fn replace(&self, from: &str, dir: &Dir, to: &str) -> Result<(), RestoreError> {
        let path = dir.checked(to)?;
        self.checked(from)?;
        if dir.is_symlink(to) {
            self.remove(from);
            return Err(RestoreError::Symlink { path });
        }
        nix::fcntl::renameat(&self.fd, from, &dir.fd, to).map_err(|e| RestoreError::Rename {
            path,
            source: e.into(),
        })
    }

    /// Removes the file `name` if it is there (cleaning up after a failure).
    pub(crate) fn remove(&self, name: &str) {
        let _ = unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir);
    }

    fn is_symlink(&self, name: &str) -> bool {
        nix::sys::stat::fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK)
    }

    /// `name` as one harmless path component; its path for messages.
    fn checked(&self, name: &str) -> Result<PathBuf, RestoreError> {
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains('/')
            || name.contains('\0')
        {
            return Err(RestoreError::BadName {
                path: self.path.join(name),
            });
        }
        Ok(self.path.join(name))
    }

    /// Sets a new file's or directory's mode (0600 or 0700: the umask may have taken
    /// bits) and owner, on its descriptor.
    fn own(&self, fd: &OwnedFd, path: &Path) -> Result<(), RestoreError> {
        let err = |e: Errno| RestoreError::Own {
            path: path.to_path_buf(),
            source: e.into(),
        };
        let st = fstat(fd.as_fd()).map_err(err)?;
        let is_dir = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
        fchmod(fd.as_fd(), if is_dir { dir_mode() } else { file_mode() }).map_err(err)?;
        if let Some(o) = &self.owner {
            fchown(
                fd.as_fd(),
                Some(Uid::from_raw(o.uid)),
                Some(Gid::from_raw(o.gid)),
            )
            .map_err(err)?;
        }
        Ok(())
    }
}

/// An error opening `path` with `O_NOFOLLOW` (`link`: a symlink is there): a symlink is
/// [`RestoreError::Symlink`] (Linux says `ELOOP`, or `ENOTDIR` with `O_DIRECTORY`).
fn refusal(path: &Path, e: Errno, link: bool) -> RestoreError {
    match e {
        Errno::ELOOP | Errno::ENOTDIR if link => RestoreError::Symlink {
            path: path.to_path_buf(),
        },
        Errno::ENOTDIR => RestoreError::NotADirectory {
            path: path.to_path_buf(),
        },
        e => RestoreError::CreateDir {
            path: path.to_path_buf(),
            source: e.into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn creates_private_and_refuses_symlinks_at_every_level() {
        let d = tempfile::tempdir().unwrap();
        let outside = d.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let root = d.path().join("t/r");
        let r = Dir::open_root(&root, None).unwrap();
        assert_eq!((mode(&root), mode(&d.path().join("t"))), (0o700, 0o700));
        let sub = r.subdir("a").unwrap();
        assert_eq!(mode(&root.join("a")), 0o700);
        let f = sub.create_new("f").unwrap();
        drop(f);
        assert_eq!(mode(&root.join("a/f")), 0o600);
        assert!(matches!(
            sub.create_new("f"),
            Err(RestoreError::Exists { .. })
        ));
        // Symlinks: the target itself, a directory, a file (dangling and not).
        symlink(&outside, d.path().join("link")).unwrap();
        assert!(matches!(
            Dir::open_root(&d.path().join("link"), None),
            Err(RestoreError::Symlink { .. })
        ));
        symlink(&outside, root.join("dirlink")).unwrap();
        match r.subdir("dirlink") {
            Err(RestoreError::Symlink { path }) => assert_eq!(path, root.join("dirlink")),
            other => panic!("{other:?}"),
        }
        symlink(outside.join("x"), root.join("dangling")).unwrap();
        assert!(matches!(
            r.create_new("dangling"),
            Err(RestoreError::Symlink { .. })
        ));
        assert!(matches!(
            r.ensure_marker("dangling"),
            Err(RestoreError::Symlink { .. })
        ));
        symlink(&outside, root.join("filelink")).unwrap();
        r.create_new("tmpfile").unwrap();
        assert!(matches!(
            r.move_new("tmpfile", &r, "filelink"),
            Err(RestoreError::Symlink { .. })
        ));
        assert!(matches!(
            r.replace("tmpfile", &r, "filelink"),
            Err(RestoreError::Symlink { .. })
        ));
        for bad in ["..", ".", "a/b", ""] {
            assert!(
                matches!(r.subdir(bad), Err(RestoreError::BadName { .. })),
                "{bad}"
            );
        }
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        // A marker that exists is kept; a FIFO there is refused without hanging.
        r.ensure_marker("m").unwrap();
        r.ensure_marker("m").unwrap();
        nix::unistd::mkfifo(&root.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(
            r.ensure_marker("fifo"),
            Err(RestoreError::NotAFile { .. })
        ));
    }
}
