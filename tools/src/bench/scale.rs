//! The scale workload (`bench --scale-users 2000,20000`, issue 16): how our cost grows with
//! the number of users. For each size, a fresh private Cyrus is filled by bulk.py with that
//! many small users (4 folders x 5 messages by default) and backed up: `users refresh` on an
//! empty state db, the first full night (W1), a night with nothing changed (W2) and churn
//! nights (W3, churn.py), each as seconds, seconds per user, CPU and peak RSS. At the largest
//! size the peers (tar -g, rsync, restic) run W1 and W2 beside us. Then the planner's state
//! db work alone over a synthetic population (`--scale-planner-users`, 200,000): reading
//! every RAID set's queue and recording every user's result in batches as a run does.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};

use super::measure::{
    self, daemon_cpu, daemon_peak_kib, describe, measure, reset_daemon_peak, Sample,
};
use super::peers::{remove, Paths, Tool};
use super::rig::{self, run_logged, Backupd, Cyrus};
use super::{last_line_starting, say};

/// What the workload needs from the command line and the harness.
pub struct Setup {
    /// The repository (tests/cyrus scripts).
    pub repo: PathBuf,
    /// The work directory.
    pub work: PathBuf,
    /// The harness's log.
    pub log: PathBuf,
    /// backupd (release).
    pub backupd_bin: PathBuf,
    /// backup-server (release).
    pub server_bin: PathBuf,
    /// The spool sizes, in users, smallest first.
    pub sizes: Vec<u32>,
    /// Folders per user.
    pub folders: u32,
    /// Messages per folder.
    pub messages: u32,
    /// bulk.py's size scale.
    pub size_scale: f64,
    /// Timed runs of each workload (W3: nights).
    pub reps: usize,
    /// Peers run at the largest size (tar, rsync, restic).
    pub peers: Vec<Tool>,
    /// Users of the synthetic state db for the planner alone; 0 skips it.
    pub planner_users: u64,
    /// Keep each size's Cyrus and stores.
    pub keep: bool,
    /// The machine, for the report.
    pub machine: String,
    /// When the benchmark started (UTC), for the report.
    pub started: String,
}

/// One measured line of the scale table.
struct Line {
    users: u32,
    what: String,
    samples: Vec<Sample>,
    note: String,
}

impl Line {
    fn median(&self) -> Sample {
        measure::median(&self.samples)
    }
}

/// Runs the workload and renders its markdown section. What was measured before an error
/// is still rendered, the error named in it.
pub fn run(s: &Setup) -> Result<String> {
    let mut lines = Vec::new();
    let mut spools = Vec::new();
    let mut planner = String::new();
    let t0 = Instant::now();
    let outcome = (|| -> Result<()> {
        let largest = s.sizes.iter().copied().max().unwrap_or(0);
        for &n in &s.sizes {
            let peers: &[Tool] = if n == largest { &s.peers } else { &[] };
            spools.push(one_size(s, n, peers, &mut lines)?);
        }
        if s.planner_users > 0 {
            planner = planner_alone(s)?;
        }
        Ok(())
    })();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Scale: `mailbackup-tools bench --scale-users {}`, {}\n",
        s.sizes
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(","),
        s.started
    );
    let _ = writeln!(
        out,
        "Small users: {} folders x {} messages each (bulk.py --size-scale {}), a fresh Cyrus \
         per size. Ours: `backup-server run` with 8 workers, 4 batches per RAID set (two \
         partitions); each W1 repetition starts from an empty store root and state db (so it \
         includes the run's own user-list refresh). Medians of {} runs (W3: {} churn nights, \
         churn.py). Peak RSS: backup-server's (and backupd's during the run). Machine: {}. \
         Whole workload: {:.0} min.\n",
        s.folders,
        s.messages,
        s.size_scale,
        s.reps,
        s.reps,
        s.machine,
        t0.elapsed().as_secs_f64() / 60.0
    );
    for sp in &spools {
        let _ = writeln!(out, "* {sp}");
    }
    out.push('\n');
    if let Err(e) = &outcome {
        let _ = writeln!(
            out,
            "**The workload stopped early** (what follows is what was measured before): {e:#}\n"
        );
    }
    let _ = writeln!(
        out,
        "| users | what | wall s | s per user | ms per user | CPU s | peak RSS MiB (backupd) | more |\n|---|---|---|---|---|---|---|---|"
    );
    for l in &lines {
        let m = l.median();
        if m.wall == 0.0 {
            let _ = writeln!(
                out,
                "| {} | {} | – | – | – | – | – | {} |",
                l.users, l.what, l.note
            );
            continue;
        }
        let per = m.wall / l.users as f64;
        let daemon = if m.daemon_rss_kib > 0 {
            format!(" ({:.0})", m.daemon_rss_kib as f64 / 1024.0)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} | {:.6} | {:.3} | {:.2} | {:.0}{daemon} | {} |",
            l.users,
            l.what,
            m.wall,
            per,
            per * 1e3,
            m.cpu,
            m.rss_kib as f64 / 1024.0,
            l.note
        );
    }
    // Ratios at the largest size: peers' wall time over ours.
    let largest = s.sizes.iter().copied().max().unwrap_or(0);
    let ours = |w: &str| {
        lines
            .iter()
            .find(|l| l.users == largest && l.what == format!("{w} mailbackup"))
            .map(|l| l.median().wall)
    };
    let mut ratios = String::new();
    for l in lines
        .iter()
        .filter(|l| l.users == largest && l.median().wall > 0.0)
    {
        for w in ["W1", "W2"] {
            let Some(peer) = l.what.strip_prefix(&format!("{w} ")) else {
                continue;
            };
            if peer == "mailbackup" {
                continue;
            }
            if let Some(o) = ours(w) {
                let _ = write!(
                    ratios,
                    "{w} {peer} / mailbackup = {:.2}x; ",
                    l.median().wall / o
                );
            }
        }
    }
    if !ratios.is_empty() {
        let _ = writeln!(
            out,
            "\nAt {largest} users (peer's time over ours, higher is better for us): {}",
            ratios.trim_end_matches("; ")
        );
    }
    if !planner.is_empty() {
        let _ = writeln!(out, "\n{planner}");
    }
    outcome.map(|()| out.clone()).or_else(|e| {
        println!("{out}");
        Err(e)
    })
}

/// One spool size: build it, then measure refresh, W1, W2, W3. Returns the spool's line.
fn one_size(s: &Setup, n: u32, peers: &[Tool], lines: &mut Vec<Line>) -> Result<String> {
    let work = s.work.join(format!("scale-{n}"));
    remove(&work)?;
    std::fs::create_dir_all(&work)?;
    say(&format!("scale {n}: starting a private Cyrus"));
    let cyrus = Cyrus::start(&s.repo, &work.join("cyrus"), &s.log)?;
    say(&format!(
        "scale {n}: filling it: {n} users x {} folders x {} messages (bulk.py)",
        s.folders, s.messages
    ));
    let bulk_log = work.join("bulk.log");
    let took = run_logged(
        cyrus
            .script("bulk.py", false)
            .arg("--dir")
            .arg(&cyrus.dir)
            .args(["--users", &n.to_string()])
            .args(["--folders", &s.folders.to_string()])
            .args(["--messages", &s.messages.to_string()])
            .args(["--size-scale", &s.size_scale.to_string()]),
        &bulk_log,
    )?;
    let (mut bytes, mut files) = (0, 0);
    for t in cyrus.mail_trees() {
        let (b, f) = measure::tree_bytes(&t)?;
        bytes += b;
        files += f;
    }
    let spool = format!(
        "{n} users: {files} files, {:.1} MB; {} ({:.0} s)",
        bytes as f64 / 1e6,
        last_line_starting(&bulk_log, "bulk:")?,
        took.as_secs_f64()
    );
    say(&format!("scale {n}: {spool}"));
    let backupd = Backupd::start(&s.backupd_bin, &cyrus, &work.join("backupd"), false)?;
    let paths = Paths {
        repo: s.repo.clone(),
        work: work.clone(),
        server_bin: s.server_bin.clone(),
        server_config: work.join("backup-server.toml"),
        store_root: work.join("store"),
        state_db: work.join("state/state.sqlite3"),
        cyrus_backups: work.join("cyrus-backups"),
        cyrus_backups_port: 0,
        users: Vec::new(),
        alt_server_bin: None,
    };
    rig::write_server_config(
        &paths.server_config,
        &paths.store_root,
        &paths.state_db,
        &backupd,
        4,
    )?;
    let ours = |cmd: &Command| -> Result<Sample> {
        let pid = backupd.pid();
        let cpu0 = daemon_cpu(pid)?;
        reset_daemon_peak(pid)?;
        let mut smp = measure(cmd, &s.log, &[0])?;
        smp.cpu += daemon_cpu(pid)? - cpu0;
        smp.daemon_rss_kib = daemon_peak_kib(pid)?;
        Ok(smp)
    };

    // users refresh into an empty state db.
    let mut refresh = Command::new(&s.server_bin);
    refresh
        .arg("--config")
        .arg(&paths.server_config)
        .args(["users", "refresh"]);
    let mut l = Line {
        users: n,
        what: "users refresh (empty state db)".into(),
        samples: Vec::new(),
        note: String::new(),
    };
    for _ in 0..s.reps {
        paths.reset(Tool::Ours, &cyrus, &s.log)?;
        l.samples.push(ours(&refresh)?);
    }
    say(&format!(
        "scale {n}: users refresh {:.2} s",
        l.median().wall
    ));
    lines.push(l);

    // W1, ours and the peers interleaved.
    let mut tools = vec![Tool::Ours];
    tools.extend_from_slice(peers);
    let mut w1: Vec<Line> = tools
        .iter()
        .map(|t| Line {
            users: n,
            what: format!("W1 {}", t.name()),
            samples: Vec::new(),
            note: describe(&paths.backup(*t, &cyrus, 0)),
        })
        .collect();
    for rep in 0..s.reps {
        for (t, l) in tools.iter().zip(w1.iter_mut()) {
            paths.reset(*t, &cyrus, &s.log)?;
            paths.prepare_night(*t, false)?;
            let cmd = paths.backup(*t, &cyrus, 0);
            let smp = if t.is_ours() {
                ours(&cmd)?
            } else {
                measure(&cmd, &s.log, t.ok_codes())?
            };
            say(&format!(
                "scale {n}: W1 {} rep {}: {:.2} s",
                t.name(),
                rep + 1,
                smp.wall
            ));
            l.samples.push(smp);
        }
    }
    for (t, l) in tools.iter().zip(w1.iter_mut()) {
        l.note = format!("stored {:.1} MB", paths.stored_bytes(*t)? as f64 / 1e6);
    }
    lines.extend(w1);
    // Where a new user's time goes: one more first night, untimed, under strace -c.
    let first_size = s.sizes.first() == Some(&n);
    if first_size {
        paths.reset(Tool::Ours, &cyrus, &s.log)?;
        let calls = syscalls(
            &paths.backup(Tool::Ours, &cyrus, 0),
            &work.join("w1.strace"),
            &s.log,
        )?;
        lines.push(Line {
            users: n,
            what: "W1 mailbackup under strace -f -c (untimed)".into(),
            samples: vec![Sample::default()],
            note: calls.per_user(n),
        });
    }

    // W2: nothing changed.
    let mut w2: Vec<Line> = tools
        .iter()
        .map(|t| Line {
            users: n,
            what: format!("W2 {}", t.name()),
            samples: Vec::new(),
            note: String::new(),
        })
        .collect();
    for rep in 0..s.reps {
        for (t, l) in tools.iter().zip(w2.iter_mut()) {
            paths.prepare_night(*t, false)?;
            let cmd = paths.backup(*t, &cyrus, 100 + rep as u32);
            let smp = if t.is_ours() {
                ours(&cmd)?
            } else {
                measure(&cmd, &s.log, t.ok_codes())?
            };
            say(&format!(
                "scale {n}: W2 {} rep {}: {:.3} s",
                t.name(),
                rep + 1,
                smp.wall
            ));
            l.samples.push(smp);
        }
    }
    lines.extend(w2);
    if first_size {
        let calls = syscalls(
            &paths.backup(Tool::Ours, &cyrus, 150),
            &work.join("w2.strace"),
            &s.log,
        )?;
        lines.push(Line {
            users: n,
            what: "W2 mailbackup under strace -f -c (untimed)".into(),
            samples: vec![Sample::default()],
            note: calls.per_user(n),
        });
    }

    // W3: churn nights, ours only.
    let mut w3 = Line {
        users: n,
        what: "W3 mailbackup".into(),
        samples: Vec::new(),
        note: String::new(),
    };
    let mut churn = Vec::new();
    for night in 1..=s.reps {
        let clog = work.join(format!("churn-{night}.log"));
        run_logged(
            cyrus
                .script("churn.py", true)
                .args(["--users", &n.to_string()])
                .args(["--folders", &s.folders.to_string()])
                .args(["--night", &night.to_string()])
                .args(["--size-scale", &s.size_scale.to_string()]),
            &clog,
        )?;
        churn.push(last_line_starting(&clog, "churn:")?);
        let smp = ours(&paths.backup(Tool::Ours, &cyrus, 200 + night as u32))?;
        say(&format!("scale {n}: W3 night {night}: {:.3} s", smp.wall));
        w3.samples.push(smp);
    }
    w3.note = format!(
        "stored after: {:.1} MB; {}",
        paths.stored_bytes(Tool::Ours)? as f64 / 1e6,
        churn.last().map(String::as_str).unwrap_or("")
    );
    lines.push(w3);

    drop(backupd);
    drop(cyrus);
    if !s.keep {
        remove(&work)?;
    }
    Ok(spool)
}

/// The planner's state db work alone over `planner_users` made-up users (testkit's
/// population, 16 RAID sets): every RAID set's queue read as `run` reads it, then every
/// user's result recorded with a quiet key, 500 rows a transaction, as `run` records them.
fn planner_alone(s: &Setup) -> Result<String> {
    use backup_server::state::{Attempt, StateDb};
    let n = s.planner_users;
    say(&format!("scale: the planner alone over {n} users"));
    let dir = s.work.join("planner");
    remove(&dir)?;
    let db_path = dir.join("state.sqlite3");
    let now = 1_795_406_400;
    let t = Instant::now();
    {
        let db = StateDb::open(&db_path)?;
        testkit::population::fill(db.connection(), n, now)?;
    }
    let fill = t.elapsed().as_secs_f64();
    let rss0 = peak_kib()?;
    let mut db = StateDb::open(&db_path)?;
    let t = Instant::now();
    let mut queued = Vec::new();
    for r in 0..16 {
        queued.extend(db.users_to_back_up(&format!("r{r}"))?);
    }
    let read = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let run = db.begin_run(now, queued.len() as u64)?;
    for chunk in queued.chunks(500) {
        db.begin_batch()?;
        for u in chunk {
            db.record_attempt(
                run,
                &u.name,
                now,
                &Attempt::Done {
                    messages_stored: 0,
                    bytes_stored: 0,
                },
            )?;
            let key = format!(
                "k1 {:040x} backupdata-1795406400.tar.gz 1 2 3.0 4.0",
                u.name.len()
            );
            db.set_quiet_key(&u.name, Some(&key))?;
        }
        db.end_batch()?;
    }
    let write = t.elapsed().as_secs_f64();
    let rss = peak_kib()?;
    let q = queued.len() as f64;
    let size = std::fs::metadata(&db_path).map(|m| m.len()).unwrap_or(0);
    remove(&dir)?;
    Ok(format!(
        "The planner alone, {n} made-up users (testkit population, 16 RAID sets; built in \
         {fill:.1} s, not counted): reading every queue {read:.3} s for {} users \
         ({:.2} us per user); recording every result with a quiet key, 500 a transaction, \
         {write:.2} s ({:.1} us per user); state db {:.1} MB; this process's peak RSS {:.0} \
         MiB ({:.0} MiB before opening it).",
        queued.len(),
        read / q * 1e6,
        write / q * 1e6,
        size as f64 / 1e6,
        rss as f64 / 1024.0,
        rss0 as f64 / 1024.0
    ))
}

/// What `strace -f -c -w` counted for one run of backup-server (its own threads; backupd
/// is another process).
struct Syscalls {
    /// (name, calls, seconds of wall time inside), the busiest first.
    rows: Vec<(String, u64, f64)>,
}

impl Syscalls {
    /// The syncs and the busiest calls, per user.
    fn per_user(&self, users: u32) -> String {
        let u = users as f64;
        let mut parts = Vec::new();
        for (name, calls, secs) in self
            .rows
            .iter()
            .filter(|r| matches!(r.0.as_str(), "fsync" | "fdatasync" | "sync_file_range"))
            .chain(self.rows.iter().take(6))
        {
            let p = format!(
                "{name} {:.1}/user {:.0} us/user",
                *calls as f64 / u,
                secs / u * 1e6
            );
            if !parts.contains(&p) {
                parts.push(p);
            }
        }
        parts.join("; ")
    }
}

/// Runs `cmd` under `strace -f -c -w` (wall time per syscall) and reads its summary.
fn syscalls(cmd: &Command, out: &std::path::Path, log: &std::path::Path) -> Result<Syscalls> {
    let mut c = Command::new("strace");
    c.args(["-f", "-c", "-w", "-o"])
        .arg(out)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    run_logged(&mut c, log)?;
    let text =
        std::fs::read_to_string(out).with_context(|| format!("reading {}", out.display()))?;
    // "% time     seconds  usecs/call     calls    errors syscall"
    let mut rows = Vec::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || f[0].parse::<f64>().is_err() {
            continue;
        }
        let name = f[f.len() - 1].to_owned();
        if name == "total" {
            continue;
        }
        let secs = f[1].parse().unwrap_or(0.0);
        let calls = f[3].parse().unwrap_or(0);
        rows.push((name, calls, secs));
    }
    Ok(Syscalls { rows })
}

/// This process's peak RSS (VmHWM), KiB.
fn peak_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .context("no VmHWM in /proc/self/status")
}

/// Parses `--scale-users` values, smallest first.
pub fn sizes(v: &[u32]) -> Vec<u32> {
    let mut s = v.to_vec();
    s.sort_unstable();
    s.dedup();
    s
}
