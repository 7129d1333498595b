//! Scheduled automations: an agent session started on a recurrence rule (RFC 5545 RRULE, read
//! in an IANA time zone), with a versioned prompt and a log of runs.
//!
//! The Org object keeps each automation with its `next_run_at`. The Worker's cron asks the
//! objects of orgs with something due to claim it ([`crate::org::OrgOp::ClaimDueAutomations`]):
//! in one transaction the object records a run and moves `next_run_at` to the first occurrence
//! after the tick, so a retried tick finds nothing to run twice. The Worker then dispatches
//! the session and reports how that went ([`RunOutcome`]).
//!
//! Occurrences are computed by the `rrule` crate in the automation's zone, so 09:00 stays
//! 09:00 local across daylight-saving changes. After each claim the rule is re-anchored at the
//! occurrence just claimed (its first occurrence from then on is the same), which keeps the
//! work per tick proportional to the occurrences missed, not to the automation's age.

use crate::error::StoreError;
use chrono::{NaiveDateTime, TimeZone};
use rrule::{Frequency, RRule, Unvalidated};
use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// Automations per org.
pub const MAX_AUTOMATIONS: i64 = 200;
/// Prompt versions kept per automation (the oldest inactive ones go first).
pub const MAX_PROMPT_VERSIONS: i64 = 100;
/// Runs kept per automation (the oldest go first).
pub const MAX_RUNS: i64 = 500;
/// A rule's most characters.
pub const RULE_MAX: usize = 1_000;
/// Occurrences looked through for the next one after a point in time.
pub const MAX_SCAN: usize = 100_000;
/// A claimed run the Worker never reported on is failed after this long.
pub const DISPATCH_TIMEOUT_MS: i64 = 10 * 60_000;
/// The local date-time format of `starts_at`.
const LOCAL_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

/// What an automation runs: a session like `POST /v1/sessions` starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Target {
    pub project_id: String,
    /// A host id, or `any`: the first online host with the project linked.
    pub host: String,
    /// The agent preset, e.g. `claude`.
    pub agent: String,
    pub base_branch: Option<String>,
}

/// One automation, as the API answers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Automation {
    pub id: String,
    pub name: String,
    /// The recurrence rule, e.g. `FREQ=WEEKLY;BYDAY=MO,TH;BYHOUR=9;BYMINUTE=0`.
    pub rrule: String,
    /// The IANA time zone the rule is read in.
    pub timezone: String,
    /// The first occurrence's local date and time, in `timezone`.
    pub starts_at: String,
    #[serde(flatten)]
    pub target: Target,
    /// The active prompt.
    pub prompt: String,
    pub prompt_version: i64,
    pub paused: bool,
    /// When it runs next; `null` while paused or once the rule has no more occurrences.
    pub next_run_at: Option<String>,
    pub last_run_at: Option<String>,
    pub created_by: String,
    pub created_at: String,
    pub updated_at: String,
}

/// A new automation, its project already resolved to an id by the Worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewAutomation {
    pub name: String,
    pub rrule: String,
    pub timezone: String,
    /// Local `YYYY-MM-DDTHH:MM[:SS]`; `None`: now, to the minute.
    pub starts_at: Option<String>,
    pub target: Target,
    pub prompt: String,
    pub paused: bool,
}

/// Changes to an automation (the prompt changes through its versions).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AutomationPatch {
    pub name: Option<String>,
    pub rrule: Option<String>,
    pub timezone: Option<String>,
    pub starts_at: Option<String>,
    pub project_id: Option<String>,
    pub host: Option<String>,
    pub agent: Option<String>,
    pub base_branch: Option<Option<String>>,
}

/// One version of an automation's prompt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PromptVersion {
    pub version: i64,
    pub prompt: String,
    /// Whether runs use this version now.
    pub active: bool,
    pub created_by: String,
    pub created_at: String,
}

/// How a run came about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// Its time came (the cron).
    Schedule,
    /// Someone asked (`POST /v1/automations/{id}/run`).
    Manual,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Claimed; the session is being started.
    Dispatching,
    /// The session was started (`session_id`).
    Dispatched,
    /// It could not be started (`error` says why).
    Failed,
}

/// One run of an automation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Run {
    pub id: String,
    pub automation_id: String,
    pub trigger: Trigger,
    /// The occurrence it ran for (scheduled runs).
    pub scheduled_for: Option<String>,
    pub status: RunStatus,
    pub session_id: Option<String>,
    /// The error code and message when it failed.
    pub error: Option<String>,
    pub prompt_version: i64,
    pub created_at: String,
    pub finished_at: Option<String>,
}

/// A run the Worker is to dispatch: everything a session start needs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub run: Run,
    pub name: String,
    pub target: Target,
    pub prompt: String,
}

/// How a dispatch went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    Dispatched { session_id: String },
    Failed { error: String },
}

/// Where an org's schedule stands, for the directory's index of orgs with something due: the
/// earliest `next_run_at` (Unix ms) of its unpaused automations, and a version that grows with
/// every change, so a late writer never overwrites a newer answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleState {
    pub next_due_ms: Option<i64>,
    pub version: i64,
}

/// An answer together with the org's schedule as it stands after the call, read in the same
/// transaction ([`crate::org::OrgOp::WithSchedule`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scheduled<T> {
    pub answer: T,
    pub schedule: ScheduleState,
}

/// A parsed schedule: the rule, its zone and where its occurrences are counted from.
pub struct Schedule {
    rule: RRule<Unvalidated>,
    tz: rrule::Tz,
}

fn invalid(field: &str, message: impl Into<String>) -> StoreError {
    StoreError::invalid(field, message)
}

impl Schedule {
    /// Checks a rule and a zone name. The rule is RRULE's value (`FREQ=...;...`, an `RRULE:`
    /// prefix is allowed). SECONDLY rules and COUNT are refused: the cron ticks each minute,
    /// and a count would not survive re-anchoring (bound a rule with UNTIL instead).
    pub fn parse(rule: &str, timezone: &str) -> Result<Self, StoreError> {
        if rule.chars().count() > RULE_MAX {
            return Err(invalid(
                "rrule",
                format!("must be at most {RULE_MAX} characters"),
            ));
        }
        let text = rule.trim();
        let text = text
            .strip_prefix("RRULE:")
            .or_else(|| text.strip_prefix("rrule:"))
            .unwrap_or(text);
        if text.contains(['\n', '\r']) {
            return Err(invalid(
                "rrule",
                "one RRULE value (FREQ=...), without DTSTART: use starts_at and timezone",
            ));
        }
        let rule: RRule<Unvalidated> = text
            .parse()
            .map_err(|e: rrule::RRuleError| invalid("rrule", e.to_string()))?;
        if rule.get_freq() == Frequency::Secondly {
            return Err(invalid(
                "rrule",
                "FREQ=SECONDLY is not supported: automations run at most once a minute",
            ));
        }
        if rule.get_count().is_some() {
            return Err(invalid(
                "rrule",
                "COUNT is not supported: bound the rule with UNTIL",
            ));
        }
        let tz: chrono_tz::Tz = timezone.parse().map_err(|_| {
            invalid(
                "timezone",
                "not an IANA time zone name such as Europe/Berlin or UTC",
            )
        })?;
        Ok(Self {
            rule,
            tz: rrule::Tz::Tz(tz),
        })
    }

    /// The rule as stored and shown (`FREQ=...`).
    pub fn rule_text(&self) -> String {
        self.rule.to_string()
    }

    /// A local date-time, `YYYY-MM-DDTHH:MM[:SS]`.
    pub fn parse_local(field: &str, text: &str) -> Result<NaiveDateTime, StoreError> {
        NaiveDateTime::parse_from_str(text, LOCAL_FORMAT)
            .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M"))
            .map_err(|_| {
                invalid(
                    field,
                    "a local date and time such as 2026-11-23T09:00 (no offset: the time zone says it)",
                )
            })
    }

    pub fn format_local(t: NaiveDateTime) -> String {
        t.format(LOCAL_FORMAT).to_string()
    }

    /// The local time of a Unix ms instant in this zone.
    pub fn local_of(&self, ms: i64) -> Option<NaiveDateTime> {
        let utc = chrono::DateTime::from_timestamp_millis(ms)?;
        Some(utc.with_timezone(&self.tz).naive_local())
    }

    /// The first occurrence counted from `anchor` (local) strictly after `after_ms`: `Ok(None)`
    /// when the rule has no more. 422 when the rule does not hold with this anchor, or when the
    /// next occurrence is more than [`MAX_SCAN`] occurrences away.
    pub fn next_after(
        &self,
        anchor: NaiveDateTime,
        after_ms: i64,
    ) -> Result<Option<i64>, StoreError> {
        // A local time that a DST change skips is taken at the offset before the gap, as
        // RFC 5545 says for DTSTART.
        let start = match self.tz.from_local_datetime(&anchor) {
            chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => t,
            chrono::LocalResult::None => self
                .tz
                .from_local_datetime(&(anchor + chrono::Duration::hours(1)))
                .earliest()
                .ok_or_else(|| invalid("starts_at", "not a time in this time zone"))?,
        };
        let set = self
            .rule
            .clone()
            .build(start)
            .map_err(|e| invalid("rrule", e.to_string()))?
            .limit();
        for (seen, t) in set.into_iter().enumerate() {
            if seen >= MAX_SCAN {
                return Err(invalid(
                    "starts_at",
                    format!(
                        "the next occurrence is more than {MAX_SCAN} occurrences after starts_at: choose a later starts_at"
                    ),
                ));
            }
            let ms = t.timestamp_millis();
            if ms > after_ms {
                return Ok(Some(ms));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .unwrap()
            .timestamp_millis()
    }

    fn local(s: &str) -> NaiveDateTime {
        Schedule::parse_local("t", s).unwrap()
    }

    /// The occurrences after `from`, `n` of them, each found as the cron would: re-anchored at
    /// the one before.
    fn walk(s: &Schedule, anchor: &str, from: &str, n: usize) -> Vec<String> {
        let mut anchor = local(anchor);
        let mut after = ms(from);
        let mut out = Vec::new();
        for _ in 0..n {
            let Some(next) = s.next_after(anchor, after).unwrap() else {
                break;
            };
            out.push(crate::time::rfc3339(next));
            anchor = s.local_of(next).unwrap();
            after = next;
        }
        out
    }

    #[test]
    fn nine_local_stays_nine_local_across_the_autumn_change() {
        // Europe/Berlin leaves summer time on 2026-10-25 (UTC+2 -> UTC+1).
        let s =
            Schedule::parse("FREQ=DAILY;BYHOUR=9;BYMINUTE=0;BYSECOND=0", "Europe/Berlin").unwrap();
        assert_eq!(
            walk(&s, "2026-10-20T09:00", "2026-10-23T12:00:00Z", 3),
            [
                "2026-10-24T07:00:00.000Z",
                "2026-10-25T08:00:00.000Z",
                "2026-10-26T08:00:00.000Z"
            ]
        );
    }

    #[test]
    fn weekly_rules_follow_the_spring_change_in_new_york() {
        // America/New_York enters summer time on 2027-03-14 (UTC-5 -> UTC-4).
        let s = Schedule::parse(
            "RRULE:FREQ=WEEKLY;BYDAY=SA,SU;BYHOUR=8;BYMINUTE=30",
            "America/New_York",
        )
        .unwrap();
        assert_eq!(
            walk(&s, "2027-03-06T08:30", "2027-03-06T14:00:00Z", 3),
            [
                "2027-03-07T13:30:00.000Z",
                "2027-03-13T13:30:00.000Z",
                "2027-03-14T12:30:00.000Z"
            ]
        );
    }

    #[test]
    fn a_local_time_the_spring_change_skips_still_runs_once_that_day() {
        // 02:30 does not exist in Europe/Berlin on 2027-03-28: that day it runs at 03:30 local
        // (01:30Z, the gap's length later), neither skipped nor run twice.
        let s = Schedule::parse("FREQ=DAILY;BYHOUR=2;BYMINUTE=30", "Europe/Berlin").unwrap();
        assert_eq!(
            walk(&s, "2027-03-26T02:30", "2027-03-26T12:00:00Z", 3),
            [
                "2027-03-27T01:30:00.000Z",
                "2027-03-28T01:30:00.000Z",
                "2027-03-29T00:30:00.000Z"
            ]
        );
    }

    #[test]
    fn missed_occurrences_are_skipped_not_run_late() {
        let s = Schedule::parse("FREQ=HOURLY", "UTC").unwrap();
        // Anchored at 00:00, looked at 05:30: the next is 06:00, not 01:00.
        assert_eq!(
            walk(&s, "2026-01-01T00:00", "2026-01-01T05:30:00Z", 1),
            ["2026-01-01T06:00:00.000Z"]
        );
    }

    #[test]
    fn an_until_ends_the_rule() {
        let s = Schedule::parse("FREQ=DAILY;UNTIL=20260103T000000Z", "UTC").unwrap();
        assert_eq!(
            walk(&s, "2026-01-01T12:00", "2026-01-01T00:00:00Z", 5),
            ["2026-01-01T12:00:00.000Z", "2026-01-02T12:00:00.000Z"]
        );
    }

    #[test]
    fn bad_rules_and_zones_are_refused_with_the_field() {
        for (rule, tz, field) in [
            ("FREQ=SECONDLY", "UTC", "rrule"),
            ("FREQ=DAILY;COUNT=3", "UTC", "rrule"),
            ("FREQ=FORTNIGHTLY", "UTC", "rrule"),
            ("", "UTC", "rrule"),
            ("FREQ=DAILY\nRRULE:FREQ=WEEKLY", "UTC", "rrule"),
            ("FREQ=DAILY", "Mars/Olympus", "timezone"),
        ] {
            let e = Schedule::parse(rule, tz).err().unwrap();
            assert!(
                matches!(&e, StoreError::Invalid { field: f, .. } if f == field),
                "{rule} {tz}: {e:?}"
            );
        }
        assert!(Schedule::parse(&"FREQ=DAILY;".repeat(200), "UTC").is_err());
        assert!(Schedule::parse_local("t", "2026-11-23T09:00:00+01:00").is_err());
        assert_eq!(
            Schedule::format_local(local("2026-11-23T09:00")),
            "2026-11-23T09:00:00"
        );
    }
}
