//! `backup-server report`: the backup-age report.

use super::{Out, Status};
use backup_server::config::Config;
use backup_server::report::{Format, DEFAULT_MAX_AGE_HOURS};
use std::io::Write;

/// `backup-server report` arguments.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Output: table, json or prometheus.
    #[arg(long, default_value = "table", value_parser = ["table", "json", "prometheus"])]
    format: String,
    /// Mark users whose last complete backup is this many hours old or more.
    #[arg(long, value_name = "H", default_value_t = DEFAULT_MAX_AGE_HOURS)]
    max_age_hours: u32,
    /// Mail the table to this address with sendmail(8) instead of printing it.
    #[arg(long, value_name = "ADDR")]
    mail_to: Option<String>,
    /// The clock to compute ages against (default: now): RFC 3339 or unix seconds.
    #[arg(long, value_parser = backup_server::point_in_time::parse_time)]
    now: Option<formats::Timestamp>,
}

/// Makes the report and prints or mails it.
pub fn run(config: &Config, a: &ReportArgs, _out: &mut Out<impl Write>) -> anyhow::Result<Status> {
    Ok(Status::from_code(backup_server::report::run(
        config,
        Format::parse(&a.format).unwrap_or(Format::Table),
        a.max_age_hours,
        a.mail_to.as_deref(),
        a.now.map(|t| t.secs),
    )))
}
