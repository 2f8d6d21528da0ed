//! backupd: the daemon that runs beside Cyrus on each mail server.
//!
//! Not built yet: the protocol and the daemon are the subject of the backupd issue. This
//! binary exists so that the workspace has its final shape; it refuses to run.

fn main() {
    eprintln!("backupd: not built yet (see the backupd issue); nothing was done");
    std::process::exit(1);
}
