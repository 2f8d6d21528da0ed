//! `backup-server run`: the nightly job ([`backup_server::backup::run`]), its progress (a bar
//! on a terminal, log lines otherwise), its summary on stdout and the exit status its
//! [verdict](backup_server::backup::Verdict) maps to.

use super::{error_text, Out, Status};
use backup_server::backup::{
    self, summary::human_bytes, RunProgress, RunRequest, RunSummary, Verdict,
};
use backup_server::config::Config;
use std::io::{IsTerminal, Write};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// `backup-server run` arguments.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Only this user (repeatable).
    #[arg(long = "user", value_name = "USER")]
    users: Vec<String>,
    /// Only the users of this RAID set.
    #[arg(long, value_name = "NAME")]
    raidset: Option<String>,
    /// Read every server's user list first, however recent the last refresh.
    #[arg(long)]
    refresh: bool,
    /// Progress: auto (a bar on a terminal, log lines otherwise), log, quiet.
    #[arg(long, default_value = "auto", value_parser = ["auto", "log", "quiet"])]
    progress: String,
}

/// The exit status of a run that went through.
pub fn status(verdict: Verdict) -> Status {
    match verdict {
        Verdict::Done => Status::Ok,
        Verdict::Incomplete => Status::Incomplete,
        Verdict::Failed => Status::Failed,
    }
}

/// Runs the nightly job and prints its summary.
pub fn run(
    config: &Config,
    a: &RunArgs,
    stop: &AtomicBool,
    out: &mut Out<impl Write>,
) -> anyhow::Result<Status> {
    let req = RunRequest {
        users: a.users.clone(),
        raidset: a.raidset.clone(),
        force_refresh: a.refresh,
    };
    let mode = match a.progress.as_str() {
        "log" => Mode::Log,
        "quiet" => Mode::Quiet,
        _ => Mode::Auto,
    };
    let mut progress = Progress::new(mode, config.log_interval);
    let summary = match backup::run(config, &req, stop, &mut progress) {
        Ok(s) => s,
        Err(e) => {
            let e = anyhow::Error::from(e);
            tracing::error!("run failed: {}", error_text(&e));
            return Err(e.context("run failed"));
        }
    };
    out.line(format_args!("{summary}"))?;
    tracing::info!(
        status = summary.status_word(),
        done = summary.users_done,
        incomplete = summary.users_incomplete,
        skipped = summary.users_skipped,
        failed = summary.users_failed,
        not_reached = summary.users_not_reached,
        "run ended"
    );
    Ok(status(summary.verdict()))
}

/// How `run` shows progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A progress bar when stderr is a terminal, log lines otherwise.
    Auto,
    /// Log lines every `log_interval`.
    Log,
    /// Nothing but the summary.
    Quiet,
}

/// The run's progress: a bar on a terminal, a log line now and then otherwise.
struct Progress {
    mode: Mode,
    log_interval: Duration,
    bar: Option<indicatif::ProgressBar>,
    log_every: Option<Duration>,
    last_log: Instant,
}

impl Progress {
    fn new(mode: Mode, log_interval: Duration) -> Progress {
        Progress {
            mode,
            log_interval,
            bar: None,
            log_every: None,
            last_log: Instant::now(),
        }
    }
}

impl RunProgress for Progress {
    fn start(&mut self, total: u64) {
        let on_terminal = std::io::stderr().is_terminal();
        (self.bar, self.log_every) = match self.mode {
            Mode::Auto if on_terminal => {
                let bar = indicatif::ProgressBar::new(total);
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{elapsed_precise} [{wide_bar}] {pos}/{len} users ({per_sec}, eta {eta}) {msg}",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                );
                (Some(bar), None)
            }
            Mode::Auto | Mode::Log => (None, Some(self.log_interval)),
            Mode::Quiet => (None, None),
        };
        self.last_log = Instant::now();
    }

    fn user_ended(&mut self, s: &RunSummary) {
        if let Some(bar) = &self.bar {
            bar.set_position(s.users_finished());
            bar.set_message(format!(
                "{} skipped, {} failed, {}",
                s.users_skipped,
                s.users_failed,
                human_bytes(s.outcome.bytes_fetched)
            ));
        } else if let Some(every) = self.log_every {
            if self.last_log.elapsed() >= every {
                self.last_log = Instant::now();
                tracing::info!(
                    finished = s.users_finished(),
                    planned = s.users_planned,
                    done = s.users_done,
                    incomplete = s.users_incomplete,
                    skipped = s.users_skipped,
                    failed = s.users_failed,
                    messages_fetched = s.outcome.messages_fetched,
                    bytes_fetched = s.outcome.bytes_fetched,
                    "progress"
                );
            }
        }
    }

    fn log(&mut self, log: &mut dyn FnMut()) {
        match &self.bar {
            Some(bar) => bar.suspend(log),
            None => log(),
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_map_to_exit_statuses() {
        assert_eq!(status(Verdict::Done).code(), 0);
        assert_eq!(status(Verdict::Incomplete).code(), 2);
        assert_eq!(status(Verdict::Failed).code(), 1);
    }
}
