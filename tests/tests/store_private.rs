//! Private by construction, end to end: a real Cyrus, a real backupd, and `backup-server
//! run` (then `reindex`, which builds a temporary index and switches it in) under umask 022
//! and under umask 000: every directory under the store root and the state db's directory
//! is 0700, every file (data files, indexes, locks, the state db and its -wal/-shm) 0600.
//! Then a group-writable store root is refused (exit 1, the path, the mode and the chmod
//! named) and a world-readable one warned about (exit 0, the warning on stderr).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use backup_server::state::StateDb;
use tests::rig::{backup_server_bin, counts, text, write_config, Backupd};
use tests::CyrusInstance;

/// `backup-server --config CONFIG ARGS...` under `umask`.
fn under_umask(umask: &str, bin: &Path, config: &Path, args: &[&str]) -> Output {
    Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask} && exec \"$@\""))
        .arg("sh")
        .arg(bin)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

/// Every path under `dir` (itself included) with its mode; symlinks are a failure.
fn modes(dir: &Path, out: &mut Vec<(PathBuf, bool, u32)>) {
    let m = std::fs::symlink_metadata(dir).unwrap();
    assert!(!m.file_type().is_symlink(), "{}", dir.display());
    out.push((
        dir.to_path_buf(),
        m.is_dir(),
        m.permissions().mode() & 0o7777,
    ));
    if m.is_dir() {
        for e in std::fs::read_dir(dir).unwrap() {
            modes(&e.unwrap().path(), out);
        }
    }
}

fn assert_private(dirs: &[PathBuf], umask: &str) {
    let mut all = Vec::new();
    for d in dirs {
        modes(d, &mut all);
    }
    let (mut files, mut names) = (0, Vec::new());
    for (p, is_dir, mode) in &all {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*mode, want, "umask {umask}: {} is {mode:04o}", p.display());
        if !is_dir {
            files += 1;
            names.push(p.file_name().unwrap().to_string_lossy().into_owned());
        }
    }
    // What must have been there to be checked.
    for must in [
        "backupstate.sqlite3",
        "lock",
        "state.sqlite3",
        "state.sqlite3-wal",
        "state.sqlite3-shm",
    ] {
        assert!(
            names.iter().any(|n| n == must),
            "umask {umask}: no {must} in {names:?}"
        );
    }
    assert!(
        names.iter().any(|n| n.starts_with("backupdata-")),
        "{names:?}"
    );
    assert!(files >= 3 * 3, "umask {umask}: only {files} files");
}

#[test]
fn stores_and_state_db_are_private_whatever_the_umask() {
    let cyrus = CyrusInstance::start().expect("starting Cyrus");
    cyrus
        .bulk(&["--users", "3", "--folders", "2", "--messages", "3"])
        .expect("bulk.py");
    let backupd = Backupd::start(&cyrus, "private-run-secret-0123456789");
    let bin = backup_server_bin();

    for umask in ["022", "000"] {
        let dir = tempfile::tempdir().unwrap();
        let config = write_config(dir.path(), backupd.addr(), &backupd.secret_text, 2, 3);
        let o = under_umask(umask, &bin, &config, &["run", "--progress", "log"]);
        assert_eq!(o.status.code(), Some(0), "umask {umask}: {}", text(&o));
        assert_eq!(counts(&o), (3, 0, 0, 0), "{}", text(&o));
        // The second run finds the stores and appends; reindex builds a temporary index
        // beside the old one and switches it in.
        let o = under_umask(umask, &bin, &config, &["run", "--progress", "log"]);
        assert_eq!(o.status.code(), Some(0), "umask {umask}: {}", text(&o));
        let root = dir.path().join("store");
        let user = "b00000";
        let o = under_umask(umask, &bin, &config, &["reindex", "--user", user]);
        assert_eq!(o.status.code(), Some(0), "umask {umask}: {}", text(&o));
        let o = under_umask(umask, &bin, &config, &["ls", "--user", user]);
        assert_eq!(o.status.code(), Some(0), "umask {umask}: {}", text(&o));
        // SQLite removes -wal and -shm when the last connection closes: opened again here
        // (this process's umask is the test runner's), they must come out 0600 too,
        // taking the database file's mode.
        let state = StateDb::open(&dir.path().join("state/state.sqlite3")).unwrap();
        assert!(state.users().unwrap().len() == 3);
        assert_private(&[root.clone(), dir.path().join("state")], umask);
        drop(state);

        if umask == "022" {
            // Group-writable: refused, before anything is touched.
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o770)).unwrap();
            let o = under_umask(umask, &bin, &config, &["run", "--progress", "log"]);
            assert_eq!(o.status.code(), Some(1), "{}", text(&o));
            let err = String::from_utf8_lossy(&o.stderr);
            let want = format!(
                "store root {} is writable by its group (mode 0770)",
                root.display()
            );
            assert!(err.contains(&want), "{}", text(&o));
            assert!(
                err.contains(&format!("chmod go-w {}", root.display())),
                "{}",
                text(&o)
            );
            // World-readable: a warning, and the run goes on.
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
            let o = under_umask(umask, &bin, &config, &["run", "--progress", "log"]);
            assert_eq!(o.status.code(), Some(0), "{}", text(&o));
            let err = String::from_utf8_lossy(&o.stderr);
            let want = format!(
                "store root {} is readable by group and others (mode 0755): run chmod go-rwx {}",
                root.display(),
                root.display()
            );
            assert!(err.contains(&want), "{}", text(&o));
        }
    }
}
