//! Wall-clock time on every target (on wasm32-unknown-unknown `SystemTime` panics; the runtime's
//! `Date.now()` is the clock there) and the one timestamp format the API answers with.

/// Milliseconds since the Unix epoch.
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
pub fn now_ms() -> i64 {
    js_sys::Date::now() as i64
}

/// Milliseconds since the Unix epoch.
#[cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-21T20:31:00.123Z`.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_millis() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::rfc3339(1_795_300_000_123),
            "2026-11-21T22:26:40.123Z"
        );
        assert!(super::now_ms() > 1_700_000_000_000);
    }
}
