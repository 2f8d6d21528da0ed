//! Points in time as the command line takes them and as output shows them.
//!
//! `--at` and `--now` take RFC 3339 with an offset or `Z` (`2026-11-23T04:00:00Z`,
//! `2026-11-23T05:00:00+01:00`) or whole unix seconds (`1795406400`): [`parse_time`].
//! Backup times are shown in RFC 3339, UTC ([`rfc3339`]); where no time was asked for,
//! the newest state is meant, shown as `now` ([`when`]).

use formats::Timestamp;

/// A `--at` or `--now` that is not a time.
#[derive(Debug, thiserror::Error)]
pub enum ParseTimeError {
    /// Neither unix seconds nor RFC 3339.
    #[error("expected RFC 3339 (2026-11-23T04:00:00Z) or unix seconds, found {found:?}: {source}")]
    Format {
        /// The text given.
        found: String,
        /// Why it is not RFC 3339.
        source: jiff::Error,
    },
    /// RFC 3339, but outside what a [`Timestamp`] holds.
    #[error("time out of range: {found:?}")]
    OutOfRange {
        /// The text given.
        found: String,
    },
}

/// Parses RFC 3339 (an offset or `Z` is required) or whole unix seconds.
pub fn parse_time(s: &str) -> Result<Timestamp, ParseTimeError> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(Timestamp::from_secs(secs));
    }
    let ts: jiff::Timestamp = s.parse().map_err(|source| ParseTimeError::Format {
        found: s.to_owned(),
        source,
    })?;
    Timestamp::new(ts.as_second(), ts.subsec_nanosecond().max(0) as u32).ok_or_else(|| {
        ParseTimeError::OutOfRange {
            found: s.to_owned(),
        }
    })
}

/// A backup time as RFC 3339 UTC (nanoseconds shown when not zero).
pub fn rfc3339(t: Timestamp) -> String {
    match jiff::Timestamp::new(t.secs, t.nanos as i32) {
        Ok(j) => j.to_string(),
        Err(_) => t.to_string(),
    }
}

/// The point in time a query was about: `now` for the newest state, else [`rfc3339`].
pub fn when(at: Option<Timestamp>) -> String {
    at.map_or_else(|| "now".to_owned(), rfc3339)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_times_and_now() {
        assert_eq!(when(None), "now");
        assert_eq!(
            when(Some(Timestamp::from_secs(1_795_406_400))),
            "2026-11-23T04:00:00Z"
        );
        let t = Timestamp::new(1_795_406_400, 250_000_000).unwrap();
        assert_eq!(rfc3339(t), "2026-11-23T04:00:00.25Z");
        assert_eq!(parse_time(&rfc3339(t)).unwrap(), t);
    }
}
