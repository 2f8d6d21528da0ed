//! The install steps' man pages: `backup-server manpages --out DIR` writes one page per
//! subcommand, and `man -l` (man-db, from tests/cyrus/install.sh) renders each with its
//! name and options, as `man backup-server-find` will after the README's install steps.

use std::process::Command;

use tests::rig::{backup_server_bin, text};

#[test]
fn every_generated_page_renders_with_man() {
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(backup_server_bin())
        .args(["manpages", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let listed = String::from_utf8(o.stdout).unwrap();
    let pages: Vec<&str> = listed.lines().collect();
    for want in [
        "backup-server.1",
        "backup-server-find.1",
        "backup-server-restore.1",
    ] {
        assert!(pages.iter().any(|p| p.ends_with(want)), "{listed}");
    }
    for page in pages {
        let o = Command::new("man")
            .arg("-l")
            .arg(page)
            .env("MANPAGER", "cat")
            .env("MANWIDTH", "100")
            .output()
            .expect("man (man-db: bash tests/cyrus/install.sh)");
        assert!(o.status.success(), "man -l {page}: {}", text(&o));
        let shown = String::from_utf8_lossy(&o.stdout);
        let name = std::path::Path::new(page)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        assert!(
            shown.contains("NAME") && shown.contains(&name),
            "{page}: {shown}"
        );
        assert!(shown.contains("OPTIONS"), "{page}: {shown}");
    }
}
