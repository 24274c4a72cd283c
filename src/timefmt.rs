//! How times and spans are written wherever people read them (pages, notes, reports, events, the CLI): UTC
//! RFC 3339 to the second, and spans in whole minutes.

use std::time::{Duration, SystemTime};

/// "2026-11-20T08:58:20Z".
pub fn rfc3339(at: SystemTime) -> String {
    humantime::format_rfc3339_seconds(at).to_string()
}

/// "3h 12m" (whole minutes; seconds under a minute).
pub fn span(from: SystemTime, to: SystemTime) -> String {
    let d = to.duration_since(from).unwrap_or_default();
    let rounded = if d >= Duration::from_secs(60) { Duration::from_secs(d.as_secs() / 60 * 60) } else { d };
    humantime::format_duration(Duration::from_secs(rounded.as_secs())).to_string()
}
