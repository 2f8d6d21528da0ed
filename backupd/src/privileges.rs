//! Dropping root: backupd binds its port and reads the secret as root (the secret file
//! can stay root's), then becomes the cyrus user, whose files it reads.

use nix::unistd::{self, User};
use std::ffi::CString;

/// Who the process runs as after [`drop_to`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunningAs {
    /// It was not root: nothing changed.
    Unchanged {
        /// The effective uid.
        uid: u32,
    },
    /// It was root and is now this user.
    Dropped {
        /// The user name.
        user: String,
        /// Its uid.
        uid: u32,
        /// Its primary gid.
        gid: u32,
    },
}

/// If running as root, becomes `user` (its uid, primary group and supplementary groups);
/// otherwise does nothing. Fails if the user does not exist or root cannot be given up
/// for good.
pub fn drop_to(user: &str) -> Result<RunningAs, String> {
    if !unistd::geteuid().is_root() {
        return Ok(RunningAs::Unchanged {
            uid: unistd::geteuid().as_raw(),
        });
    }
    let u = User::from_name(user)
        .map_err(|e| format!("looking up user {user:?}: {e}"))?
        .ok_or_else(|| format!("user {user:?} (run_as) does not exist"))?;
    if u.uid.is_root() {
        return Err(format!(
            "run_as user {user:?} is root; name an unprivileged user"
        ));
    }
    let name = CString::new(user).map_err(|_| format!("user name {user:?} holds NUL"))?;
    // Groups first: once the uid is given up, they can no longer be changed.
    unistd::initgroups(&name, u.gid).map_err(|e| format!("initgroups({user}): {e}"))?;
    unistd::setgid(u.gid).map_err(|e| format!("setgid({}): {e}", u.gid))?;
    unistd::setuid(u.uid).map_err(|e| format!("setuid({}): {e}", u.uid))?;
    // setuid as root sets real, effective and saved ids: there must be no way back.
    if unistd::setuid(unistd::Uid::from_raw(0)).is_ok() || unistd::geteuid() != u.uid {
        return Err(format!(
            "could not give up root for good (now uid {})",
            unistd::geteuid()
        ));
    }
    Ok(RunningAs::Dropped {
        user: user.to_string(),
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
    })
}
