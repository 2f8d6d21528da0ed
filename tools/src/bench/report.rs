//! The benchmark's markdown: the targets with the measured ratios first, then one table per
//! workload, then the exact commands.

use std::fmt::Write as _;

use super::{Row, RunFacts};

/// Renders the whole section.
pub fn render(f: &RunFacts, rows: &[Row]) -> String {
    let mut s = String::new();
    let mb = f.spool_bytes as f64 / 1e6;
    let _ = writeln!(
        s,
        "## Side by side: `mailbackup-tools bench`, {}\n",
        f.started
    );
    let _ = writeln!(
        s,
        "Spool: {} users x {} folders x {} messages (bulk.py --size-scale {}): {} files, \
         {:.1} MB in the trees every tool backs up (spool/p1, spool/p2, conf/user, sieve); \
         {}. Medians of {} runs, repetitions interleaved across tools, warm page cache. \
         Machine: {}. Whole benchmark: {:.0} min.\n",
        f.users,
        f.folders,
        f.messages,
        f.size_scale,
        f.spool_files,
        mb,
        f.bulk,
        f.reps,
        f.machine,
        f.total.as_secs_f64() / 60.0
    );
    let _ = writeln!(s, "Versions: {}.\n", f.versions.join("; "));
    if !f.error.is_empty() {
        let _ = writeln!(
            s,
            "**The benchmark stopped early** (what follows is what was measured before): {}\n",
            f.error
        );
    }

    let _ = writeln!(s, "### Against the targets (issue 7)\n");
    let _ = writeln!(s, "| target | measured | met |\n|---|---|---|");
    for (target, measured, met) in targets(rows) {
        let _ = writeln!(
            s,
            "| {target} | {measured} | {} |",
            match met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            }
        );
    }
    s.push('\n');

    let titles = [
        ("W1", "W1: first full backup"),
        ("W2", "W2: a night with nothing changed"),
        ("W3", "W3: nightly churn (one night each repetition)"),
        ("W4", "W4: restore one message, whole process"),
        ("W5", "W5: compaction"),
        ("W6", "W6: the backup-age report"),
        ("W1-small", "Scaling: our first full backup of fewer users"),
        ("W2-small", "Scaling: our no-change night of fewer users"),
    ];
    for (w, title) in titles {
        let rs: Vec<&Row> = rows.iter().filter(|r| r.workload == w).collect();
        if rs.is_empty() {
            continue;
        }
        let ours = rs
            .iter()
            .find(|r| r.tool == "mailbackup")
            .map(|r| r.median().wall);
        let _ = writeln!(s, "### {title}\n");
        let _ = writeln!(
            s,
            "| tool | wall s | min-max s | x ours | CPU s | peak RSS MiB | stored MB | more |\n|---|---|---|---|---|---|---|---|"
        );
        for r in &rs {
            let m = r.median();
            let (lo, hi) = r.samples.iter().fold((f64::MAX, 0f64), |(lo, hi), x| {
                (lo.min(x.wall), hi.max(x.wall))
            });
            let ratio = match ours {
                Some(o) if r.tool != "mailbackup" && o > 0.0 => format!("{:.1}", m.wall / o),
                _ => "–".into(),
            };
            let rss = if m.daemon_rss_kib > 0 {
                format!(
                    "{:.0} (+ backupd {:.0})",
                    m.rss_kib as f64 / 1024.0,
                    m.daemon_rss_kib as f64 / 1024.0
                )
            } else {
                format!("{:.0}", m.rss_kib as f64 / 1024.0)
            };
            let stored = r
                .stored
                .map(|b| format!("{:.1}", b as f64 / 1e6))
                .unwrap_or_else(|| "–".into());
            let mut more = Vec::new();
            if w == "W1" && r.tool == "mailbackup" && m.wall > 0.0 {
                more.push(format!(
                    "{:.0} MB/s, {:.0} users/h",
                    f.spool_bytes as f64 / 1e6 / m.wall,
                    f.users as f64 * 3600.0 / m.wall
                ));
            }
            if let Some(c) = r.calls {
                more.push(format!(
                    "{} file syscalls under the trees, {} on message files",
                    c.under_tree, c.on_messages
                ));
            }
            if !r.note.is_empty() {
                more.push(r.note.clone());
            }
            let _ = writeln!(
                s,
                "| {} | {:.3} | {:.3}-{:.3} | {ratio} | {:.2} | {rss} | {stored} | {} |",
                r.tool,
                m.wall,
                lo,
                hi,
                m.cpu,
                more.join("; ")
            );
        }
        s.push('\n');
    }
    if !f.restored.is_empty() {
        let _ = writeln!(
            s,
            "W4 restored {}; every copy was compared byte for byte with the spool's file.\n",
            f.restored
        );
    }
    if !f.churn.is_empty() {
        let _ = writeln!(s, "W3's nights (tests/cyrus/churn.py):\n");
        for c in &f.churn {
            let _ = writeln!(s, "* `{c}`");
        }
        s.push('\n');
    }
    let _ = writeln!(
        s,
        "`mailbackup` runs with `batches_per_raidset = 4` (the spool's two partitions share one \
         virtual disk: 4 users of each at once fill the 8 workers); `mailbackup-1-per-set` is the \
         same with the default of 1, which RAID sets of spinning drives want. The peers run \
         with their defaults.\n"
    );
    let _ = writeln!(
        s,
        "CPU is user + system of the measured process and its children; for mailbackup it \
         adds backupd's CPU during the run (from /proc), and peak RSS shows backup-server's \
         and backupd's. File syscalls: one more run under `strace -f -e trace=%file` \
         (for us attached to backupd, where the spool is read), paths under the trees counted.\n"
    );
    let _ = writeln!(s, "Commands (as run; paths are the work directory's):\n");
    for r in rows {
        let _ = writeln!(s, "* {} {}: `{}`", r.workload, r.tool, r.command);
    }
    s
}

fn wall(rows: &[Row], w: &str, tool: &str) -> Option<f64> {
    row(rows, w, tool).map(|r| r.median().wall)
}

/// The row of `tool` (a tool's exact name, or the start of a limit's name) on workload `w`.
fn row<'a>(rows: &'a [Row], w: &str, tool: &str) -> Option<&'a Row> {
    rows.iter().find(|r| {
        r.workload == w
            && !r.samples.is_empty()
            && (r.tool == tool || (tool.starts_with("limit:") && r.tool.starts_with(tool)))
    })
}

/// (target, measured, met) for each target of issue 7 whose figures were taken.
fn targets(rows: &[Row]) -> Vec<(String, String, Option<bool>)> {
    let mut t = Vec::new();
    let faster = |w: &str, peer: &str, need: f64, t: &mut Vec<(String, String, Option<bool>)>| {
        if let (Some(o), Some(p)) = (wall(rows, w, "mailbackup"), wall(rows, w, peer)) {
            let r = p / o;
            t.push((
                if need > 1.0 {
                    format!("{w}: at least {need}x faster than {peer}")
                } else {
                    format!("{w}: faster than {peer}")
                },
                format!("{r:.1}x ({p:.3} s vs {o:.3} s)"),
                Some(r >= need),
            ));
        }
    };
    for peer in ["restic", "borg", "rsync"] {
        faster("W2", peer, 20.0, &mut t);
    }
    if let (Some(o), Some(l)) = (
        wall(rows, "W2", "mailbackup"),
        wall(rows, "W2", "limit: stat"),
    ) {
        t.push((
            "W2: within 3x of stat-only (find the meta files)".into(),
            format!("{:.1}x ({o:.3} s vs {l:.3} s)", o / l),
            Some(o <= 3.0 * l),
        ));
    }
    if let Some(c) = row(rows, "W2", "mailbackup").and_then(|r| r.calls) {
        t.push((
            "W2: no syscall on a message file".into(),
            format!("{} ({} under the trees)", c.on_messages, c.under_tree),
            Some(c.on_messages == 0),
        ));
    }
    for peer in ["restic", "borg"] {
        faster("W3", peer, 10.0, &mut t);
    }
    faster("W1", "tar", 2.0, &mut t);
    if let (Some(o), Some(p)) = (
        wall(rows, "W1", "mailbackup"),
        wall(rows, "W1", "limit: pigz"),
    ) {
        t.push((
            "W1: at least 70% of pigz -p2 -1's speed".into(),
            format!("{:.0}% ({o:.2} s vs {p:.2} s)", 100.0 * p / o),
            Some(p / o >= 0.7),
        ));
    }
    if let (Some(o), Some(r)) = (
        row(rows, "W1", "mailbackup").and_then(|r| r.stored),
        row(rows, "W1", "restic").and_then(|r| r.stored),
    ) {
        t.push((
            "W1: stored no larger than restic's repository".into(),
            format!("{:.1} MB vs {:.1} MB", o as f64 / 1e6, r as f64 / 1e6),
            Some(o <= r),
        ));
    }
    faster("W4", "restic", 10.0, &mut t);
    for w in ["W1", "W2", "W3"] {
        faster(w, "cyrus-backups", 1.0, &mut t);
    }
    if let (Some(big), Some(small)) = (
        row(rows, "W1", "mailbackup"),
        row(rows, "W1-small", "mailbackup"),
    ) {
        let peak = |r: &Row| {
            let m = r.median();
            m.rss_kib.max(m.daemon_rss_kib) as f64 / 1024.0
        };
        let (b, s) = (peak(big), peak(small));
        t.push((
            "Peak RSS independent of spool size (W1, all users vs fewer)".into(),
            format!("{b:.0} MiB vs {s:.0} MiB (largest process)"),
            Some(b <= s * 1.25 + 4.0),
        ));
    }
    t
}
