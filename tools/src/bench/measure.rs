//! Measuring one process: wall and CPU time and peak RSS (through GNU time, which reads them
//! from wait4's rusage), a long-running daemon's share (from /proc), the syscalls a process
//! makes on files (through strace), and the bytes a directory holds.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// What one run of a command cost.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Wall-clock seconds (measured around GNU time: includes its own start, ~1 ms).
    pub wall: f64,
    /// User + system CPU seconds, children included (and, for us, backupd's share).
    pub cpu: f64,
    /// Peak resident set of the largest process of the run, KiB.
    pub rss_kib: u64,
    /// For us: backupd's peak RSS during the run, KiB (0 for the peers: they are one process).
    pub daemon_rss_kib: u64,
}

/// Runs `cmd` under `/usr/bin/time`, its output appended to `log`; fails (naming the log)
/// unless it exits with one of `ok_codes`.
pub fn measure(cmd: &Command, log: &Path, ok_codes: &[i32]) -> Result<Sample> {
    let tfile = log.with_extension("time");
    let mut timed = Command::new("/usr/bin/time");
    timed
        .arg("-f")
        .arg("%e %U %S %M")
        .arg("-o")
        .arg(&tfile)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timed.env(k, v),
            None => timed.env_remove(k),
        };
    }
    let started = std::time::Instant::now();
    let status = to_log(&mut timed, log)?
        .status()
        .with_context(|| format!("starting {}", describe(cmd)))?;
    let wall = started.elapsed().as_secs_f64();
    let code = status.code().unwrap_or(-1);
    if !ok_codes.contains(&code) {
        bail!(
            "{} exited with {code} (expected {ok_codes:?}); its output is in {}",
            describe(cmd),
            log.display()
        );
    }
    let text = std::fs::read_to_string(&tfile)
        .with_context(|| format!("reading GNU time's output {}", tfile.display()))?;
    let mut s =
        parse_time(&text).with_context(|| format!("GNU time's output {}", tfile.display()))?;
    // GNU time's %e has 10 ms steps; ours has time's own start (about a millisecond) on top.
    s.wall = wall;
    Ok(s)
}

/// Points `cmd`'s stdout and stderr at the end of `log` (created if missing), stdin at
/// /dev/null.
pub fn to_log<'c>(cmd: &'c mut Command, log: &Path) -> Result<&'c mut Command> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening the log {}", log.display()))?;
    Ok(cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out))
}

/// Parses `%e %U %S %M` (the last line: time writes "Command exited with non-zero status"
/// above it when the command fails).
fn parse_time(text: &str) -> Result<Sample> {
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .context("empty")?;
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() != 4 {
        bail!("expected `wall user sys maxrss`, found {line:?}");
    }
    let num =
        |s: &str| -> Result<f64> { s.parse().with_context(|| format!("not a number: {s:?}")) };
    Ok(Sample {
        wall: num(f[0])?,
        cpu: num(f[1])? + num(f[2])?,
        rss_kib: f[3]
            .parse()
            .with_context(|| format!("not a number: {:?}", f[3]))?,
        daemon_rss_kib: 0,
    })
}

/// A command line as one string, for logs and the report.
pub fn describe(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| {
            let s = a.to_string_lossy();
            if s.contains(' ') || s.is_empty() {
                format!("'{s}'")
            } else {
                s.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A running daemon's CPU seconds so far (utime + stime of every thread, from
/// /proc/PID/stat; Linux counts them in USER_HZ = 100 ticks a second on every architecture
/// it exports to user space).
pub fn daemon_cpu(pid: u32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count after ')'.
    let rest = &text[text.rfind(')').context("no ')' in /proc/PID/stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the whole line are utime and stime: 11 and 12 after the name.
    let ticks = |i: usize| -> Result<f64> {
        Ok(f.get(i)
            .with_context(|| format!("{path}: too few fields"))?
            .parse::<u64>()? as f64)
    };
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// Resets a daemon's peak RSS (VmHWM) so the next reading covers one run only.
pub fn reset_daemon_peak(pid: u32) -> Result<()> {
    let path = format!("/proc/{pid}/clear_refs");
    std::fs::write(&path, "5").with_context(|| format!("writing 5 to {path}"))
}

/// A daemon's peak RSS in KiB (VmHWM) since start or the last [`reset_daemon_peak`].
pub fn daemon_peak_kib(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .with_context(|| format!("{path}: no VmHWM line"))?;
    line.split_whitespace()
        .nth(1)
        .context("VmHWM without a number")?
        .parse()
        .with_context(|| format!("{path}: {line}"))
}

/// The median of the samples by wall time (the upper one of an even count), with the median
/// of each other figure taken on its own.
pub fn median(samples: &[Sample]) -> Sample {
    fn mid<T: Copy + PartialOrd>(mut v: Vec<T>) -> T {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    }
    assert!(!samples.is_empty(), "median of no samples");
    Sample {
        wall: mid(samples.iter().map(|s| s.wall).collect()),
        cpu: mid(samples.iter().map(|s| s.cpu).collect()),
        rss_kib: mid(samples.iter().map(|s| s.rss_kib).collect()),
        daemon_rss_kib: mid(samples.iter().map(|s| s.daemon_rss_kib).collect()),
    }
}

/// What strace saw a run do with files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileCalls {
    /// Syscalls that name a path under the traced trees (open, stat, access, xattr ...),
    /// or a relative path (tar, rsync and borg walk with directory fds and relative names).
    pub under_tree: u64,
    /// Of those, the ones naming a message file (`<digits>.`).
    pub on_messages: u64,
}

/// Counts the file syscalls in an strace log (`strace -f -e trace=%file -o LOG`) that name
/// a path starting with one of `trees` or a relative path (other than `.` and the empty
/// path), and those that name a message file.
pub fn count_file_calls(log: &Path, trees: &[PathBuf]) -> Result<FileCalls> {
    let f = File::open(log).with_context(|| format!("opening {}", log.display()))?;
    let prefixes: Vec<String> = trees
        .iter()
        .map(|t| t.to_string_lossy().into_owned())
        .collect();
    let mut calls = FileCalls::default();
    for line in BufReader::new(f).lines() {
        let line = line?;
        let Some(path) = first_quoted(&line) else {
            continue;
        };
        let relative = !path.starts_with('/') && !path.is_empty() && path != ".";
        if !relative && !prefixes.iter().any(|p| path.starts_with(p.as_str())) {
            continue;
        }
        calls.under_tree += 1;
        if is_message_file(path) {
            calls.on_messages += 1;
        }
    }
    Ok(calls)
}

/// The first double-quoted argument of an strace line (the path of a %file syscall).
fn first_quoted(line: &str) -> Option<&str> {
    let start = line.find('"')? + 1;
    let len = line[start..].find('"')?;
    Some(&line[start..start + len])
}

/// Cyrus names a message file `<uid>.`.
pub fn is_message_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.len() >= 2
        && name.ends_with('.')
        && name[..name.len() - 1].bytes().all(|b| b.is_ascii_digit())
}

/// Bytes of the regular files under `dir` (hard links counted once), and their count.
pub fn tree_bytes(dir: &Path) -> Result<(u64, u64)> {
    let mut seen = HashSet::new();
    let (mut bytes, mut files) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("listing {}", d.display())),
        };
        for e in entries {
            let e = e.with_context(|| format!("listing {}", d.display()))?;
            let md = e.metadata()?;
            if md.is_dir() {
                stack.push(e.path());
            } else if md.is_file() && seen.insert((md.dev(), md.ino())) {
                bytes += md.len();
                files += 1;
            }
        }
    }
    Ok((bytes, files))
}

/// Sleeps until `check` is true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut check: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < end {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    check()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_gnu_time_and_its_failure_line() {
        let s = parse_time("1.50 0.75 0.25 12345\n").unwrap();
        assert_eq!((s.wall, s.cpu, s.rss_kib), (1.5, 1.0, 12345));
        let s = parse_time("Command exited with non-zero status 2\n0.01 0.00 0.00 900\n").unwrap();
        assert_eq!(s.rss_kib, 900);
        assert!(parse_time("garbage").is_err());
    }

    #[test]
    fn message_files_are_digits_and_a_dot() {
        assert!(is_message_file("/s/p1/uuid/a/b/abc/123."));
        assert!(!is_message_file("/s/p1/uuid/a/b/abc/cyrus.index"));
        assert!(!is_message_file("/s/p1/uuid/a/b/abc/."));
        assert!(!is_message_file("/s/p1/uuid/a/b/abc/12a."));
    }

    #[test]
    fn counts_file_calls_under_the_tree() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("strace.log");
        std::fs::write(
            &log,
            "12 openat(AT_FDCWD, \"/spool/p1/x/cyrus.index\", O_RDONLY) = 3\n\
             12 newfstatat(AT_FDCWD, \"/spool/p1/x/7.\", {st_mode=S_IFREG}, 0) = 0\n\
             13 openat(AT_FDCWD, \"/etc/ld.so.cache\", O_RDONLY) = 3\n\
             14 newfstatat(5, \"12.\", {st_mode=S_IFREG}, AT_SYMLINK_NOFOLLOW) = 0\n\
             14 openat(AT_FDCWD, \".\", O_RDONLY) = 3\n\
             13 +++ exited with 0 +++\n",
        )
        .unwrap();
        let c = count_file_calls(&log, &[PathBuf::from("/spool")]).unwrap();
        assert_eq!(
            c,
            FileCalls {
                under_tree: 3,
                on_messages: 2
            }
        );
    }

    #[test]
    fn median_takes_each_figure_on_its_own() {
        let s = |wall, cpu, rss| Sample {
            wall,
            cpu,
            rss_kib: rss,
            daemon_rss_kib: 0,
        };
        let m = median(&[s(3.0, 1.0, 10), s(1.0, 3.0, 30), s(2.0, 2.0, 20)]);
        assert_eq!((m.wall, m.cpu, m.rss_kib), (2.0, 2.0, 20));
    }
}
