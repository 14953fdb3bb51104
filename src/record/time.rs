//! Time order (SPEC §1): RFC 3339 timestamps as instants, and the two orders the SPEC uses,
//! with a missing or unparsable timestamp last in both.

use serde_json::Value;

/// An RFC 3339 timestamp as an instant (seconds, nanoseconds), for ordering; None when missing
/// or unparsable (SPEC §1: such a timestamp sorts last).
pub fn instant(v: Option<&Value>) -> Option<(i64, u32)> {
    instant_str(v?.as_str())
}

/// [`instant`] of a string.
pub fn instant_str(s: Option<&str>) -> Option<(i64, u32)> {
    let t = chrono::DateTime::parse_from_rfc3339(s?).ok()?;
    Some((t.timestamp(), t.timestamp_subsec_nanos()))
}

/// Orders two instants latest first, a missing one last.
pub fn latest_first(a: Option<(i64, u32)>, b: Option<(i64, u32)>) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a, b) {
        (Some(x), Some(y)) => y.cmp(&x),
        (Some(_), None) => Less,
        (None, Some(_)) => Greater,
        (None, None) => Equal,
    }
}

/// Orders two instants earliest first, a missing one last.
pub fn earliest_first(a: Option<(i64, u32)>, b: Option<(i64, u32)>) -> std::cmp::Ordering {
    use std::cmp::Ordering::*;
    match (a, b) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Less,
        (None, Some(_)) => Greater,
        (None, None) => Equal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn instants_compare_across_offsets_and_missing_sorts_last() {
        let a = instant(Some(&json!("2024-01-01T10:00:00+02:00")));
        let b = instant(Some(&json!("2024-01-01T09:00:00Z")));
        assert!(a < b);
        assert_eq!(instant(Some(&json!("yesterday"))), None);
        assert_eq!(latest_first(b, a), std::cmp::Ordering::Less);
        assert_eq!(latest_first(None, a), std::cmp::Ordering::Greater);
        assert_eq!(earliest_first(a, b), std::cmp::Ordering::Less);
        assert_eq!(earliest_first(None, a), std::cmp::Ordering::Greater);
    }
}
