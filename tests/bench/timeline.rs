//! Where the time of one failover went, read back from the daemons' debug logs.
//!
//! fechterd logs through `tracing`'s default format, each line starting with an RFC 3339 UTC
//! timestamp (possibly wrapped in ANSI colour codes). Putting the survivors' lines between the
//! fault and the first reply on one clock, relative to the fault, shows detection, decision,
//! install and announcement as they happened.

use std::fs;
use std::path::Path;

/// Removes ANSI escape sequences (`ESC [ ... letter`).
pub(crate) fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for next in chars.by_ref() {
                if next.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Reads a leading `YYYY-MM-DDTHH:MM:SS[.fraction]Z` as microseconds since the epoch.
pub(crate) fn parse_timestamp(text: &str) -> Option<u64> {
    let stamp = text.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut date_parts = date.split('-').map(|part| part.parse::<i64>().ok());
    let (year, month, day) = (date_parts.next()??, date_parts.next()??, date_parts.next()??);
    let (clock, fraction) = time.split_once('.').unwrap_or((time, "0"));
    let mut clock_parts = clock.split(':').map(|part| part.parse::<i64>().ok());
    let (hour, minute, second) = (clock_parts.next()??, clock_parts.next()??, clock_parts.next()??);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || fraction.len() > 9 {
        return None;
    }
    let micros: i64 = format!("{fraction:0<6}").get(..6)?.parse().ok()?;
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    u64::try_from(seconds * 1_000_000 + micros).ok()
}

/// The lines of the logs (`(node name, path)`) stamped within `[from_us, to_us]`, except
/// per-key gossip events and gateway ping noise, cut to 180 characters, as
/// `+<ms since origin_us> <node> <line>` sorted by time, at most `limit` of them.
pub(crate) fn timeline(
    logs: &[(String, &Path)],
    origin_us: u64,
    from_us: u64,
    to_us: u64,
    limit: usize,
) -> Vec<String> {
    let mut events: Vec<(u64, String)> = Vec::new();
    for (node, path) in logs {
        let text = fs::read_to_string(path).unwrap_or_default();
        for line in text.lines() {
            let clean = strip_ansi(line);
            // Key-by-key gossip traffic and the gateway pinger's noise would bury the decisions.
            if clean.contains("KeyChanged") || clean.contains("surge_ping") {
                continue;
            }
            let Some(at) = parse_timestamp(&clean) else { continue };
            if at < from_us || at > to_us {
                continue;
            }
            let rest: String =
                clean.split_once(' ').map_or("", |(_, rest)| rest.trim_start()).chars().take(180).collect();
            let offset_ms = (at as f64 - origin_us as f64) / 1000.0;
            events.push((at, format!("{offset_ms:+8.1} ms {node} {rest}")));
        }
    }
    events.sort();
    let total = events.len();
    let mut lines: Vec<String> = events.into_iter().take(limit).map(|(_, line)| line).collect();
    if total > limit {
        lines.push(format!("... {} more lines", total - limit));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_as_epoch_microseconds() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_timestamp("1970-01-02T00:00:01.5Z rest"), Some(86_401_500_000));
        // 2000-03-01 is day 11 017 (a leap year across the century rule).
        assert_eq!(parse_timestamp("2000-03-01T00:00:00.000001Z"), Some(11_017 * 86_400_000_000 + 1));
        assert_eq!(parse_timestamp("2026-11-22T02:48:13.123456789Z"), Some(1_795_315_693_123_456));
        assert_eq!(parse_timestamp("not a stamp"), None);
        assert_eq!(parse_timestamp("2026-13-22T02:48:13Z"), None);
    }

    #[test]
    fn ansi_codes_are_removed() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026-11-22T02:48:13Z\u{1b}[0m \u{1b}[34mDEBUG\u{1b}[0m x"),
            "2026-11-22T02:48:13Z DEBUG x"
        );
    }
}
