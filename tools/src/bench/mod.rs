//! `mailbackup-tools bench`: every workload of a backup host's life, for us and for the tools
//! administrators use instead, on the same spool in the same run (docs/PERFORMANCE.md).
//!
//! A real Cyrus is started on 127.0.0.1 and filled by tests/cyrus/bulk.py; backupd serves it;
//! each workload then runs for every tool in turn, repetitions interleaved (so a noisy minute
//! on this shared machine hits all tools alike), and the medians are compared as ratios.

mod measure;
mod peers;
mod report;
mod restore_cyrus;
mod rig;
mod scale;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use measure::{
    count_file_calls, daemon_cpu, daemon_peak_kib, describe, measure, reset_daemon_peak, FileCalls,
    Sample,
};
use peers::{remove, Paths, Tool};
use rig::{run_logged, Backupd, Cyrus, OneMessage};

/// The options of `mailbackup-tools bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Users in the spool (bulk.py).
    #[arg(long, default_value_t = 1000)]
    pub users: u32,
    /// Folders per user, INBOX included.
    #[arg(long, default_value_t = 8)]
    pub folders: u32,
    /// Messages per folder (with the defaults: about 176,000 messages, 1.5 GB).
    #[arg(long, default_value_t = 22)]
    pub messages: u32,
    /// bulk.py's --size-scale: 0.15 gives about 8.5 KB a message, near the aims' spool.
    #[arg(long, default_value_t = 0.15)]
    pub size_scale: f64,
    /// Repetitions of each measured command (the median is reported); W3 runs this many
    /// nights.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Append the results (markdown) to this file as well as printing them.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Work directory (default: a new one under /tmp); kept afterwards with --keep.
    #[arg(long)]
    pub work: Option<PathBuf>,
    /// Keep the work directory (spool, stores, repositories, logs).
    #[arg(long)]
    pub keep: bool,
    /// Tools to compare (default: all): mailbackup, tar, rsync, restic, borg, cyrus-backups.
    #[arg(long, value_delimiter = ',')]
    pub tools: Vec<String>,
    /// Workloads to run (default: all): w1 .. w6; or `restore-cyrus` alone (issue 15: one
    /// folder of --folder-messages deleted from Cyrus and restored by us through sync_server,
    /// by us over IMAP, and by Cyrus's own `restore`; --users, --folders, --messages and
    /// --tools do not apply).
    #[arg(long, value_delimiter = ',')]
    pub workloads: Vec<String>,
    /// restore-cyrus: messages in the restored folder.
    #[arg(long, default_value_t = 50_000)]
    pub folder_messages: u32,
    /// Also back up only the first N users (fresh store, full and no-change) to compare peak
    /// RSS and per-user speed across spool sizes; 0 skips it.
    #[arg(long, default_value_t = 250)]
    pub small_users: u32,
    /// Use the release binaries already in target/release instead of building them.
    #[arg(long)]
    pub no_build: bool,
    /// Users in W6's synthetic state db.
    #[arg(long, default_value_t = 500_000)]
    pub report_users: u64,
    /// The scale workload alone (issue 16): a spool of this many small users for each size
    /// given (`--scale-users 2000,20000`), ours measured at each, the peers (of --tools:
    /// tar, rsync, restic) at the largest; --users, --folders, --messages and --workloads
    /// do not apply.
    #[arg(long, value_delimiter = ',')]
    pub scale_users: Vec<u32>,
    /// Another build of backup-server to measure beside ours on the same spool in the same
    /// run, as the tool `mailbackup-alt` (configured as `mailbackup`): e.g. a branch's
    /// release binary, built from its own checkout.
    #[arg(long)]
    pub compare_server_bin: Option<PathBuf>,
    /// Scale workload: folders per user, INBOX included.
    #[arg(long, default_value_t = 4)]
    pub scale_folders: u32,
    /// Scale workload: messages per folder.
    #[arg(long, default_value_t = 5)]
    pub scale_messages: u32,
    /// Scale workload: users of the synthetic state db the planner alone runs over; 0
    /// skips it.
    #[arg(long, default_value_t = 200_000)]
    pub scale_planner_users: u64,
}

/// One line of a result table: a tool (or a machine limit) on one workload.
#[derive(Debug, Clone)]
pub struct Row {
    /// "W1" .. "W6", or "W1-small" etc.
    pub workload: &'static str,
    /// The tool or limit.
    pub tool: String,
    /// The exact command measured.
    pub command: String,
    /// One sample per repetition.
    pub samples: Vec<Sample>,
    /// Bytes the tool keeps after the workload.
    pub stored: Option<u64>,
    /// For W2: what strace saw (one extra, untimed run).
    pub calls: Option<FileCalls>,
    /// Free-form facts (dirty ratio, bytes before/after ...).
    pub note: String,
}

impl Row {
    /// The median sample.
    pub fn median(&self) -> Sample {
        measure::median(&self.samples)
    }
}

/// What the report needs to know about the run besides the rows.
#[derive(Debug, Clone, Default)]
pub struct RunFacts {
    /// Spool: users, folders per user, messages per folder.
    pub users: u32,
    /// Folders per user.
    pub folders: u32,
    /// Messages per folder.
    pub messages: u32,
    /// bulk.py's size scale.
    pub size_scale: f64,
    /// Bytes and files in the mail trees after bulk.py.
    pub spool_bytes: u64,
    /// Files in the mail trees.
    pub spool_files: u64,
    /// bulk.py's summary line and its time.
    pub bulk: String,
    /// Repetitions.
    pub reps: usize,
    /// The churn nights' summary lines.
    pub churn: Vec<String>,
    /// Versions of the peers, one line each.
    pub versions: Vec<String>,
    /// The machine.
    pub machine: String,
    /// The start time (UTC, RFC 3339).
    pub started: String,
    /// Wall time of the whole benchmark.
    pub total: Duration,
    /// The message W4 restored.
    pub restored: String,
    /// The error that ended the benchmark early (empty when it ran through).
    pub error: String,
}

/// Runs the benchmark.
pub fn run(args: BenchArgs) -> Result<()> {
    let started = SystemTime::now();
    if !is_root()? {
        bail!("bench must run as root: Cyrus's master serves as the cyrus user and the peers' installs need apt-get");
    }
    let repo = repo_root()?;
    let mut tools: Vec<Tool> = if args.tools.is_empty() {
        Tool::ALL.to_vec()
    } else {
        args.tools
            .iter()
            .map(|s| Tool::parse(s))
            .collect::<Result<_>>()?
    };
    if let Some(alt) = &args.compare_server_bin {
        if !alt.is_file() {
            bail!("--compare-server-bin {}: no such file", alt.display());
        }
        tools.insert(1, Tool::OursAlt);
    }
    if !tools.contains(&Tool::Ours) {
        bail!("--tools must include mailbackup: every figure is a ratio to ours");
    }
    let all = ["w1", "w2", "w3", "w4", "w5", "w6"];
    let workloads: Vec<String> = if args.workloads.is_empty() {
        all.iter().map(|s| s.to_string()).collect()
    } else {
        args.workloads.iter().map(|s| s.to_lowercase()).collect()
    };
    let restore_cyrus = workloads.iter().any(|w| w == "restore-cyrus");
    if restore_cyrus && workloads.len() > 1 {
        bail!("--workloads restore-cyrus runs alone (it builds a spool of its own)");
    }
    if let Some(w) = workloads
        .iter()
        .find(|w| !all.contains(&w.as_str()) && !restore_cyrus)
    {
        bail!(
            "unknown workload {w:?}; known: {}, restore-cyrus",
            all.join(", ")
        );
    }
    if args.reps == 0 {
        bail!("--reps must be at least 1");
    }
    let wants = |w: &str| workloads.iter().any(|x| x == w);

    let work = match &args.work {
        Some(w) => w.clone(),
        None => PathBuf::from(format!("/tmp/mailbackup-bench.{}", std::process::id())),
    };
    fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let work = fs::canonicalize(&work)?;
    // The cyrus user must reach the instance directory inside.
    fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let log = work.join("bench.log");
    say(&format!(
        "work directory {} (log: {})",
        work.display(),
        log.display()
    ));

    say("installing what is missing (peers from Debian's packages, Cyrus)");
    install_peers(&repo, &log)?;
    if !args.no_build {
        say("building the release binaries");
        run_logged(
            Command::new("cargo").current_dir(&repo).args([
                "build",
                "--release",
                "-p",
                "backupd",
                "-p",
                "backup-server",
            ]),
            &log,
        )?;
    }
    let release = release_dir(&repo);
    let backupd_bin = release.join("backupd");
    if !args.scale_users.is_empty() {
        let peers = if args.tools.is_empty() {
            vec![Tool::Tar, Tool::Rsync, Tool::Restic]
        } else {
            tools
                .iter()
                .copied()
                .filter(|t| matches!(t, Tool::Tar | Tool::Rsync | Tool::Restic))
                .collect()
        };
        let setup = scale::Setup {
            repo: repo.clone(),
            work: work.clone(),
            log: log.clone(),
            backupd_bin,
            server_bin: release.join("backup-server"),
            sizes: scale::sizes(&args.scale_users),
            folders: args.scale_folders,
            messages: args.scale_messages,
            size_scale: args.size_scale,
            reps: args.reps,
            peers,
            planner_users: args.scale_planner_users,
            keep: args.keep,
            machine: machine(),
            started: jiff::Timestamp::try_from(started)?
                .strftime("%Y-%m-%d %H:%M UTC")
                .to_string(),
        };
        let text = scale::run(&setup).inspect_err(|e| {
            say(&format!(
                "stopped by an error: {e:#}; work directory kept: {}",
                work.display()
            ))
        })?;
        println!("{text}");
        if let Some(out) = &args.out {
            append(out, &text)?;
        }
        if !args.keep {
            remove(&work)?;
        }
        return Ok(());
    }
    if restore_cyrus {
        let setup = restore_cyrus::Setup {
            repo: repo.clone(),
            work: work.clone(),
            log: log.clone(),
            backupd_bin,
            server_bin: release.join("backup-server"),
            messages: args.folder_messages,
            size_scale: args.size_scale,
            reps: args.reps,
            machine: machine(),
            cyrus_version: versions()[5].clone(),
            started: jiff::Timestamp::try_from(started)?
                .strftime("%Y-%m-%d %H:%M UTC")
                .to_string(),
        };
        let outcome = restore_cyrus::run(&setup);
        let text = match &outcome {
            Ok(t) => t,
            Err(e) => {
                say(&format!(
                    "stopped by an error: {e:#}; work directory kept: {}",
                    work.display()
                ));
                return outcome.map(drop);
            }
        };
        println!("{text}");
        if let Some(out) = &args.out {
            append(out, text)?;
        }
        if !args.keep {
            remove(&work)?;
        }
        return Ok(());
    }

    let mut facts = RunFacts {
        users: args.users,
        folders: args.folders,
        messages: args.messages,
        size_scale: args.size_scale,
        reps: args.reps,
        versions: versions(),
        machine: machine(),
        started: jiff::Timestamp::try_from(started)?
            .strftime("%Y-%m-%d %H:%M UTC")
            .to_string(),
        ..RunFacts::default()
    };

    say("starting a private Cyrus");
    let cyrus = Cyrus::start(&repo, &work.join("cyrus"), &log)?;
    say(&format!(
        "filling it: {} users x {} folders x {} messages (bulk.py)",
        args.users, args.folders, args.messages
    ));
    let bulk_log = work.join("bulk.log");
    let took = run_logged(
        cyrus
            .script("bulk.py", false)
            .arg("--dir")
            .arg(&cyrus.dir)
            .args(["--users", &args.users.to_string()])
            .args(["--folders", &args.folders.to_string()])
            .args(["--messages", &args.messages.to_string()])
            .args(["--size-scale", &args.size_scale.to_string()]),
        &bulk_log,
    )?;
    facts.bulk = format!(
        "{} ({:.0} s)",
        last_line_starting(&bulk_log, "bulk:")?,
        took.as_secs_f64()
    );
    for t in cyrus.mail_trees() {
        let (b, f) = measure::tree_bytes(&t)?;
        facts.spool_bytes += b;
        facts.spool_files += f;
    }
    say(&format!(
        "spool: {} files, {:.1} MB",
        facts.spool_files,
        facts.spool_bytes as f64 / 1e6
    ));

    let backupd = Backupd::start(&backupd_bin, &cyrus, &work, false)?;
    // The same spool over TLS, for `mailbackup-tls` beside `mailbackup`.
    let backupd_tls = Backupd::start(&backupd_bin, &cyrus, &work.join("backupd-tls"), true)?;
    let paths = Paths {
        repo: repo.clone(),
        work: work.clone(),
        server_bin: release.join("backup-server"),
        server_config: work.join("backup-server.toml"),
        store_root: work.join("store"),
        state_db: work.join("state/state.sqlite3"),
        cyrus_backups: work.join("cyrus-backups"),
        cyrus_backups_port: rig::free_port()?,
        users: (0..args.users).map(|k| format!("b{k:05}")).collect(),
        alt_server_bin: args.compare_server_bin.clone(),
    };
    // Ours as configured for this machine (two partitions on one virtual disk: 4 batches of
    // each at once fill the 8 workers), and with the default of one batch per RAID set.
    rig::write_server_config(
        &paths.server_config,
        &paths.store_root,
        &paths.state_db,
        &backupd,
        4,
    )?;
    rig::write_server_config(
        &paths.config(Tool::OursSerial),
        &paths.dest(Tool::OursSerial),
        &paths.state_db(Tool::OursSerial),
        &backupd,
        1,
    )?;
    rig::write_server_config(
        &paths.config(Tool::OursAlt),
        &paths.dest(Tool::OursAlt),
        &paths.state_db(Tool::OursAlt),
        &backupd,
        4,
    )?;
    rig::write_server_config(
        &paths.config(Tool::OursTls),
        &paths.dest(Tool::OursTls),
        &paths.state_db(Tool::OursTls),
        &backupd_tls,
        4,
    )?;
    let mut b = Bench {
        paths,
        cyrus,
        backupd,
        backupd_tls,
        log,
        reps: args.reps,
        rows: Vec::new(),
    };

    // A workload that fails ends the benchmark, but what was measured until then is still
    // reported (with the error), never lost.
    let outcome = (|| -> Result<()> {
        if wants("w1") {
            b.w1_full(&tools)?;
        } else {
            // The later workloads need every tool's first backup.
            for &t in &tools {
                b.paths.reset(t, &b.cyrus, &b.log)?;
                b.paths.prepare_night(t, false)?;
                run_logged(&mut b.paths.backup(t, &b.cyrus, 0), &b.log)?;
            }
        }
        if wants("w2") {
            b.w2_no_change(&tools)?;
        }
        if wants("w4") {
            facts.restored = b.w4_restore_one(&tools)?;
        }
        if wants("w3") {
            facts.churn = b.w3_churn(&tools, args.users, args.folders)?;
        }
        if args.small_users > 0 {
            b.small_pair(args.small_users)?;
        }
        if wants("w5") {
            b.w5_compaction(args.users, args.folders)?;
        }
        if wants("w6") {
            b.w6_report(args.report_users)?;
        }
        Ok(())
    })();
    if let Err(e) = &outcome {
        facts.error = format!("{e:#}");
        say(&format!("stopped by an error: {e:#}"));
    }
    let _ = Command::new("bash")
        .arg(repo.join("tools/bench/cyrus-backups-peer.sh"))
        .arg("stop")
        .arg(&b.paths.cyrus_backups)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();

    facts.total = started.elapsed().unwrap_or_default();
    let text = report::render(&facts, &b.rows);
    println!("{text}");
    if let Some(out) = &args.out {
        append(out, &text)?;
    }
    drop(b);
    if outcome.is_err() {
        say(&format!(
            "work directory kept for a look: {}",
            work.display()
        ));
    } else if !args.keep {
        remove(&work)?;
    }
    outcome
}

/// The running benchmark.
struct Bench {
    paths: Paths,
    cyrus: Cyrus,
    backupd: Backupd,
    /// The same spool over TLS (`mailbackup-tls`).
    backupd_tls: Backupd,
    log: PathBuf,
    reps: usize,
    rows: Vec<Row>,
}

impl Bench {
    /// The backupd one of our configurations talks to.
    fn daemon(&self, tool: Tool) -> &Backupd {
        match tool {
            Tool::OursTls => &self.backupd_tls,
            _ => &self.backupd,
        }
    }

    /// Measures one backup run; for us, backupd's CPU and peak RSS during it are added.
    fn measure_tool(&self, tool: Tool, cmd: &Command) -> Result<Sample> {
        if !tool.is_ours() {
            return measure(cmd, &self.log, tool.ok_codes());
        }
        let pid = self.daemon(tool).pid();
        let cpu0 = daemon_cpu(pid)?;
        reset_daemon_peak(pid)?;
        let mut s = measure(cmd, &self.log, tool.ok_codes())?;
        s.cpu += daemon_cpu(pid)? - cpu0;
        s.daemon_rss_kib = daemon_peak_kib(pid)?;
        Ok(s)
    }

    fn row(&mut self, workload: &'static str, tool: &str, cmd: &Command) -> usize {
        self.rows.push(Row {
            workload,
            tool: tool.to_owned(),
            command: describe(cmd),
            samples: Vec::new(),
            stored: None,
            calls: None,
            note: String::new(),
        });
        self.rows.len() - 1
    }

    /// A machine limit: a shell pipeline measured `reps` times.
    fn limit(&mut self, workload: &'static str, name: &str, script: &str) -> Result<usize> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script);
        let i = self.row(workload, name, &cmd);
        self.rows[i].command = script.to_owned();
        for _ in 0..self.reps {
            let s = measure(&cmd, &self.log, &[0])?;
            self.rows[i].samples.push(s);
        }
        say(&format!(
            "{workload} {name}: {:.2} s",
            self.rows[i].median().wall
        ));
        Ok(i)
    }

    fn trees_arg(&self) -> String {
        self.cyrus
            .mail_trees()
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" ")
    }

    fn w1_full(&mut self, tools: &[Tool]) -> Result<()> {
        say("W1: first full backup");
        let mut idx = Vec::new();
        for &t in tools {
            let cmd = self.paths.backup(t, &self.cyrus, 0);
            idx.push((t, self.row("W1", t.name(), &cmd)));
        }
        for rep in 0..self.reps {
            for &(t, i) in &idx {
                self.paths.reset(t, &self.cyrus, &self.log)?;
                self.paths.prepare_night(t, false)?;
                let cmd = self.paths.backup(t, &self.cyrus, 0);
                let s = self.measure_tool(t, &cmd)?;
                say(&format!("W1 {} rep {}: {:.2} s", t.name(), rep + 1, s.wall));
                self.rows[i].samples.push(s);
            }
        }
        for &(t, i) in &idx {
            self.rows[i].stored = Some(self.paths.stored_bytes(t)?);
        }
        // The machine's limits on the same bytes.
        let tarball = self.paths.work.join("spool.tar");
        run_logged(
            Command::new("tar")
                .arg("-C")
                .arg(&self.cyrus.dir)
                .arg("-cf")
                .arg(&tarball)
                .args(self.cyrus.mail_trees_relative()),
            &self.log,
        )?;
        let gz = self.paths.work.join("spool.tar.gz");
        let i = self.limit(
            "W1",
            "limit: pigz -p2 -1 over the bytes (one tar file)",
            &format!("pigz -p2 -1 -c {} > {}", tarball.display(), gz.display()),
        )?;
        self.rows[i].stored = Some(fs::metadata(&gz)?.len());
        self.limit(
            "W1",
            "limit: sha1sum of every file, 2 processes",
            &format!(
                "find {} -type f -print0 | xargs -0 -P2 -n 2000 sha1sum > /dev/null",
                self.trees_arg()
            ),
        )?;
        remove(&tarball)?;
        remove(&gz)?;
        Ok(())
    }

    fn w2_no_change(&mut self, tools: &[Tool]) -> Result<()> {
        say("W2: a night with nothing changed");
        let mut idx = Vec::new();
        for &t in tools {
            let cmd = self.paths.backup(t, &self.cyrus, 100);
            idx.push((t, self.row("W2", t.name(), &cmd)));
        }
        for rep in 0..self.reps {
            for &(t, i) in &idx {
                self.paths.prepare_night(t, false)?;
                let cmd = self.paths.backup(t, &self.cyrus, 100 + rep as u32);
                let s = self.measure_tool(t, &cmd)?;
                say(&format!("W2 {} rep {}: {:.3} s", t.name(), rep + 1, s.wall));
                self.rows[i].samples.push(s);
            }
        }
        let find = format!(
            "find {} {} -name 'cyrus.*' -printf '%s %T@\\n' > /dev/null",
            self.cyrus.dir.join("spool/p1").display(),
            self.cyrus.dir.join("spool/p2").display()
        );
        let li = self.limit("W2", "limit: stat of the meta files only (find)", &find)?;
        // One more run of each under strace, to count what touches the spool.
        say("W2: counting file syscalls under strace");
        let trees = self.cyrus.mail_trees();
        for &(t, i) in &idx {
            self.paths.prepare_night(t, false)?;
            let slog = self.paths.work.join(format!("strace-{}.log", t.name()));
            let cmd = self.paths.backup(t, &self.cyrus, 190);
            if t.is_ours() {
                // Our spool reads happen in backupd: attach to it for the run.
                let mut st = Command::new("strace")
                    .args(["-f", "-qq", "-e", "trace=%file", "-o"])
                    .arg(&slog)
                    .args(["-p", &self.daemon(t).pid().to_string()])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting strace")?;
                std::thread::sleep(Duration::from_millis(700));
                let r = run_logged(&mut self.paths.backup(t, &self.cyrus, 190), &self.log);
                let _ = Command::new("kill")
                    .args(["-INT", &st.id().to_string()])
                    .status();
                let _ = st.wait();
                r?;
            } else {
                let mut traced = Command::new("strace");
                traced
                    .args(["-f", "-qq", "-e", "trace=%file", "-o"])
                    .arg(&slog)
                    .arg(cmd.get_program())
                    .args(cmd.get_args());
                self.paths.env(&mut traced);
                if let Some(d) = cmd.get_current_dir() {
                    traced.current_dir(d);
                }
                measure(&traced, &self.log, t.ok_codes())?;
            }
            self.rows[i].calls = Some(count_file_calls(&slog, &trees)?);
            remove(&slog)?;
        }
        let slog = self.paths.work.join("strace-find.log");
        run_logged(
            Command::new("strace")
                .args(["-f", "-qq", "-e", "trace=%file", "-o"])
                .arg(&slog)
                .args(["sh", "-c", &find]),
            &self.log,
        )?;
        self.rows[li].calls = Some(count_file_calls(&slog, &trees)?);
        remove(&slog)?;
        Ok(())
    }

    /// Returns a description of the restored message.
    fn w4_restore_one(&mut self, tools: &[Tool]) -> Result<String> {
        say("W4: restore one message");
        let msg = rig::pick_message(&self.cyrus, "b00000")?;
        if tools.contains(&Tool::Borg) {
            let out = Command::new("borg")
                .envs(env_of(&self.paths))
                .args(["list", "--last", "1", "--short"])
                .arg(self.paths.dest(Tool::Borg))
                .output()
                .context("borg list")?;
            fs::write(self.paths.work.join("borg-last-archive"), &out.stdout)?;
        }
        let reps = self.reps.max(5);
        for &t in tools {
            let target0 = self.paths.work.join(format!("restore-{}-0", t.name()));
            let Some(cmd) = self.paths.restore_one(t, &self.cyrus, &msg, &target0) else {
                continue;
            };
            let i = self.row("W4", t.name(), &cmd);
            // One untimed warm-up, so every tool starts from a warm page cache.
            for k in 0..=reps {
                let target = self.paths.work.join(format!("restore-{}-{k}", t.name()));
                remove(&target)?;
                fs::create_dir_all(&target)?;
                let cmd = self
                    .paths
                    .restore_one(t, &self.cyrus, &msg, &target)
                    .expect("checked above");
                // Restores read the store only: backupd plays no part.
                let s = measure(&cmd, &self.log, t.ok_codes())?;
                check_restored(&target, &msg, t)?;
                remove(&target)?;
                if k > 0 {
                    self.rows[i].samples.push(s);
                }
            }
            say(&format!(
                "W4 {}: {:.3} s",
                t.name(),
                self.rows[i].median().wall
            ));
        }
        Ok(format!(
            "{} {} UID {} ({} bytes)",
            msg.user,
            msg.folder,
            msg.uid,
            msg.bytes.len()
        ))
    }

    fn w3_churn(&mut self, tools: &[Tool], users: u32, folders: u32) -> Result<Vec<String>> {
        say("W3: nightly churn");
        let mut idx = Vec::new();
        for &t in tools {
            let cmd = self.paths.backup(t, &self.cyrus, 201);
            idx.push((t, self.row("W3", t.name(), &cmd)));
        }
        let mut lines = Vec::new();
        for night in 1..=self.reps {
            let clog = self.paths.work.join(format!("churn-{night}.log"));
            run_logged(
                self.cyrus
                    .script("churn.py", true)
                    .args(["--users", &users.to_string()])
                    .args(["--folders", &folders.to_string()])
                    .args(["--night", &night.to_string()]),
                &clog,
            )?;
            lines.push(last_line_starting(&clog, "churn:")?);
            for &(t, i) in &idx {
                self.paths.prepare_night(t, true)?;
                let cmd = self.paths.backup(t, &self.cyrus, 200 + night as u32);
                let s = self.measure_tool(t, &cmd)?;
                say(&format!("W3 {} night {night}: {:.3} s", t.name(), s.wall));
                self.rows[i].samples.push(s);
            }
        }
        for &(t, i) in &idx {
            self.rows[i].stored = Some(self.paths.stored_bytes(t)?);
        }
        Ok(lines)
    }

    /// Our full and no-change runs over the first `n` users only, into a store of their own.
    fn small_pair(&mut self, n: u32) -> Result<()> {
        say(&format!("scaling: our runs over the first {n} users"));
        let small = Paths {
            repo: self.paths.repo.clone(),
            work: self.paths.work.clone(),
            server_bin: self.paths.server_bin.clone(),
            server_config: self.paths.work.join("backup-server-small.toml"),
            store_root: self.paths.work.join("store-small"),
            state_db: self.paths.work.join("state-small/state.sqlite3"),
            cyrus_backups: self.paths.cyrus_backups.clone(),
            cyrus_backups_port: 0,
            users: Vec::new(),
            alt_server_bin: None,
        };
        rig::write_server_config(
            &small.server_config,
            &small.store_root,
            &small.state_db,
            &self.backupd,
            4,
        )?;
        let with_users = |mut c: Command| {
            for k in 0..n {
                c.arg("--user").arg(format!("b{k:05}"));
            }
            c
        };
        let full = with_users(small.backup(Tool::Ours, &self.cyrus, 0));
        let i = self.row("W1-small", "mailbackup", &full);
        self.rows[i].command = format!(
            "{} --user b00000 ... (first {n} users)",
            describe(&small.backup(Tool::Ours, &self.cyrus, 0))
        );
        let j = self.row("W2-small", "mailbackup", &full);
        self.rows[j].command = self.rows[i].command.clone();
        for _ in 0..self.reps {
            small.reset(Tool::Ours, &self.cyrus, &self.log)?;
            let s = self.measure_tool(Tool::Ours, &full)?;
            self.rows[i].samples.push(s);
            let s = self.measure_tool(Tool::Ours, &full)?;
            self.rows[j].samples.push(s);
        }
        self.rows[i].stored = Some(small.stored_bytes(Tool::Ours)?);
        let mut bytes = 0;
        let conf = backupd::spool::load_imapd_conf(&self.cyrus.imapd_conf())?;
        for k in 0..n {
            for m in backupd::spool::user_mailboxes(&conf, &format!("b{k:05}"))? {
                let Some(d) = m.spool_dir() else { continue };
                let root = conf.partition(&m.partition).with_context(|| {
                    format!(
                        "partition {:?} of {} is not in imapd.conf",
                        m.partition, m.folder
                    )
                })?;
                bytes += measure::tree_bytes(&Path::new(root).join(d))?.0;
            }
        }
        self.rows[i].note = format!("{n} users, {:.1} MB of their folders", bytes as f64 / 1e6);
        remove(&small.store_root)?;
        Ok(())
    }

    fn w5_compaction(&mut self, users: u32, folders: u32) -> Result<()> {
        // A tenth of the users (their stores are small: --min-bytes 0 lets compaction take
        // them; the default minimum of 16 MiB is for real mailboxes).
        let k = (users / 10).max(10).min(users);
        say(&format!("W5: compaction of {k} stores made 60% dirty"));
        let dlog = self.paths.work.join("dirty.log");
        run_logged(
            self.cyrus
                .script("churn.py", true)
                .args(["--users", &k.to_string()])
                .args(["--folders", &folders.to_string()])
                .args(["--dirty", "0.6"]),
            &dlog,
        )?;
        let dirty_line = last_line_starting(&dlog, "churn:")?;
        let mut run = self.paths.backup(Tool::Ours, &self.cyrus, 300);
        for u in 0..k {
            run.arg("--user").arg(format!("b{u:05}"));
        }
        run_logged(&mut run, &self.log)?;
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs() + 15 * 86_400;
        let snap = self.paths.work.join("store-before-compaction");
        remove(&snap)?;
        run_logged(
            Command::new("cp")
                .arg("-a")
                .arg(&self.paths.store_root)
                .arg(&snap),
            &self.log,
        )?;
        let before = measure::tree_bytes(&snap)?.0;
        let dry = Command::new(&self.paths.server_bin)
            .arg("--config")
            .arg(&self.paths.server_config)
            .args([
                "compact",
                "--dry-run",
                "--min-bytes",
                "0",
                "--now",
                &now.to_string(),
            ])
            .output()
            .context("compact --dry-run")?;
        let dry_text = String::from_utf8_lossy(&dry.stdout).into_owned();
        fs::write(self.paths.work.join("compact-dry-run.txt"), &dry_text)?;
        let mut cmd = Command::new(&self.paths.server_bin);
        cmd.arg("--config").arg(&self.paths.server_config).args([
            "compact",
            "--min-bytes",
            "0",
            "--now",
            &now.to_string(),
        ]);
        let i = self.row("W5", "mailbackup", &cmd);
        for _ in 0..self.reps {
            remove(&self.paths.store_root)?;
            run_logged(
                Command::new("cp")
                    .arg("-a")
                    .arg(&snap)
                    .arg(&self.paths.store_root),
                &self.log,
            )?;
            let s = measure(&cmd, &self.log, &[0])?;
            self.rows[i].samples.push(s);
        }
        let after = measure::tree_bytes(&self.paths.store_root)?.0;
        self.rows[i].stored = Some(after);
        let compacted = dry_text
            .lines()
            .filter(|l| l.ends_with("would compact"))
            .count();
        self.rows[i].note = format!(
            "{k} users made dirty ({dirty_line}); store root {:.1} MB before, {:.1} MB after; \
             dry run named {compacted} stores to compact (compact-dry-run.txt)",
            before as f64 / 1e6,
            after as f64 / 1e6
        );
        say(&format!("W5: {:.2} s", self.rows[i].median().wall));
        remove(&snap)?;
        Ok(())
    }

    fn w6_report(&mut self, users: u64) -> Result<()> {
        say(&format!("W6: the report over {users} users"));
        let dir = self.paths.work.join("w6");
        remove(&dir)?;
        let db_path = dir.join("state.sqlite3");
        let now = 1_795_406_400;
        {
            let db = backup_server::state::StateDb::open(&db_path)?;
            testkit::population::fill(db.connection(), users, now)?;
        }
        let config = dir.join("backup-server.toml");
        rig::write_server_config(&config, &dir.join("store"), &db_path, &self.backupd, 1)?;
        let mut cmd = Command::new(&self.paths.server_bin);
        cmd.arg("--config")
            .arg(&config)
            .args(["report", "--now", &now.to_string()]);
        let i = self.row("W6", "mailbackup report", &cmd);
        for _ in 0..self.reps.max(5) {
            let s = measure(&cmd, &self.log, &[0, 2])?;
            self.rows[i].samples.push(s);
        }
        let sql = self.paths.repo.join("docs/report.sql");
        let script = format!(
            "sqlite3 -cmd '.parameter set :now {now}' -cmd '.parameter set :max_age_hours 24' {} < {} > /dev/null",
            db_path.display(),
            sql.display()
        );
        self.limit("W6", "docs/report.sql in the sqlite3 shell", &script)?;
        say(&format!("W6: {:.3} s", self.rows[i].median().wall));
        remove(&dir)?;
        Ok(())
    }
}

fn check_restored(target: &Path, msg: &OneMessage, tool: Tool) -> Result<()> {
    let file = rig::only_file(target)?;
    let got = fs::read(&file)?;
    if got != msg.bytes {
        bail!(
            "{}: the restored {} ({} bytes) differs from the spool's {} ({} bytes)",
            tool.name(),
            file.display(),
            got.len(),
            msg.path.display(),
            msg.bytes.len()
        );
    }
    Ok(())
}

/// Appends a result section to `out` (docs/PERFORMANCE.md).
fn append(out: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    let mut f = fs::File::options()
        .append(true)
        .create(true)
        .open(out)
        .with_context(|| format!("opening {}", out.display()))?;
    writeln!(f, "\n{text}")?;
    say(&format!("appended to {}", out.display()));
    Ok(())
}

/// Where cargo puts the release binaries: $CARGO_TARGET_DIR/release, else target/release.
fn release_dir(repo: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) if !d.is_empty() => repo.join(d).join("release"),
        _ => repo.join("target/release"),
    }
}

fn env_of(paths: &Paths) -> Vec<(std::ffi::OsString, std::ffi::OsString)> {
    let mut c = Command::new("true");
    paths.env(&mut c);
    c.get_envs()
        .filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned())))
        .collect()
}

fn say(s: &str) {
    eprintln!("bench: {s}");
}

fn is_root() -> Result<bool> {
    let status = fs::read_to_string("/proc/self/status")?;
    Ok(status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0"))
}

/// The repository: the current directory or one above it holding tests/cyrus/bulk.py.
fn repo_root() -> Result<PathBuf> {
    let mut d = std::env::current_dir()?;
    loop {
        if d.join("tests/cyrus/bulk.py").is_file() {
            return Ok(d);
        }
        if !d.pop() {
            bail!("run bench from inside the mailbackup repository (tests/cyrus/bulk.py not found above the current directory)");
        }
    }
}

fn install_peers(repo: &Path, log: &Path) -> Result<()> {
    let wanted = [
        ("restic", "restic"),
        ("borg", "borgbackup"),
        ("pigz", "pigz"),
        ("rsync", "rsync"),
        ("strace", "strace"),
        ("/usr/bin/time", "time"),
        ("/usr/lib/cyrus/bin/sync_client", "cyrus-replication"),
        ("sqlite3", "sqlite3"),
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(bin, _)| {
            !Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {bin}"))
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })
        .map(|(_, pkg)| *pkg)
        .collect();
    if !missing.is_empty() {
        run_logged(
            Command::new("apt-get")
                .args(["install", "-y"])
                .args(&missing)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            log,
        )?;
    }
    run_logged(
        Command::new("bash").arg(repo.join("tests/cyrus/install.sh")),
        log,
    )?;
    Ok(())
}

fn versions() -> Vec<String> {
    let first = |cmd: &str| -> String {
        Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .output()
            .ok()
            .and_then(|o| {
                let t = String::from_utf8_lossy(&o.stdout).into_owned()
                    + &String::from_utf8_lossy(&o.stderr);
                t.lines().next().map(str::to_owned)
            })
            .unwrap_or_else(|| "?".into())
    };
    vec![
        first("tar --version"),
        first("rsync --version"),
        first("restic version"),
        first("borg --version"),
        first("pigz --version"),
        first("dpkg-query -W -f='cyrus-imapd ${Version}' cyrus-imapd"),
        first("rustc --version"),
    ]
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "{cpus} cores ({model}), {:.0} GB RAM, Linux {}",
        mem as f64 / 1024.0 / 1024.0,
        kernel.trim()
    )
}

fn last_line_starting(log: &Path, prefix: &str) -> Result<String> {
    let text = fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    text.lines()
        .rev()
        .find(|l| l.starts_with(prefix))
        .map(str::to_owned)
        .with_context(|| format!("no line starting with {prefix:?} in {}", log.display()))
}
