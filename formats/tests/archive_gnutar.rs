//! Stock GNU tar lists and extracts a data file (skipped when `tar` is not GNU tar).

mod archive_common;

use std::path::{Path, PathBuf};
use std::process::Command;

use archive_common::*;

fn gnu_tar() -> bool {
    Command::new("tar")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("GNU tar"))
        .unwrap_or(false)
}

fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("archive_gnutar_{name}_{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn gnu_tar_lists_and_extracts_every_entry() {
    if !gnu_tar() {
        eprintln!("GNU tar not found; skipped");
        return;
    }
    let entries = samples();
    let w = write_file(&entries, &[0, 4, 5, 9], 1);
    let dir = scratch("all");
    let file = dir.join("backupdata-1795415424.tar.gz");
    std::fs::write(&file, &w.file).unwrap();

    let list = Command::new("tar").arg("-tzf").arg(&file).output().unwrap();
    let stderr = String::from_utf8_lossy(&list.stderr);
    assert!(list.status.success(), "tar -tzf failed: {stderr}");
    let names: Vec<String> = String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let expected: Vec<String> = entries.iter().map(|(m, _)| m.path()).collect();
    assert_eq!(names, expected);
    // No end-of-archive blocks: GNU tar 1.34 says nothing about it when the file ends on a
    // block boundary at the end of a gzip member.
    eprintln!("tar -tzf stderr: {stderr:?}");

    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let x = Command::new("tar")
        .arg("-xzf")
        .arg(&file)
        .arg("-C")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        x.status.success(),
        "tar -xzf failed: {}",
        String::from_utf8_lossy(&x.stderr)
    );
    for (meta, data) in &entries {
        let got = std::fs::read(out.join(meta.path())).unwrap();
        assert_eq!(&got, data, "{}", meta.path());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gnu_tar_on_a_torn_tail() {
    if !gnu_tar() {
        return;
    }
    let entries = samples();
    let w = write_file(&entries, &[4], 1);
    let dir = scratch("torn");
    // Cut the second chunk in half, and also try zeros after the first chunk.
    let cut = (w.chunks[0].end() + w.chunks[1].compressed_len / 2) as usize;
    let torn = dir.join("torn.tar.gz");
    std::fs::write(&torn, &w.file[..cut]).unwrap();
    let mut zeros = w.file[..w.chunks[0].end() as usize].to_vec();
    zeros.extend_from_slice(&[0u8; 4096]);
    let zfile = dir.join("zeros.tar.gz");
    std::fs::write(&zfile, &zeros).unwrap();
    for f in [&torn, &zfile] {
        let list = Command::new("tar").arg("-tzf").arg(f).output().unwrap();
        let names = String::from_utf8_lossy(&list.stdout);
        eprintln!(
            "{}: status {:?}, {} names, stderr {:?}",
            f.display(),
            list.status.code(),
            names.lines().count(),
            String::from_utf8_lossy(&list.stderr)
        );
        // Every entry of the complete first chunk is listed whatever follows.
        for (meta, _) in &entries[..5] {
            assert!(names.lines().any(|l| l == meta.path()), "{}", meta.path());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}
