//! The sync loop: every mirrored table at once, each catching up from where the mirror stands
//! (non-live requests until an answer ends up to date), then long-polling the tail for ever.
//! Answers are applied as they come (one transaction each, with their position); a 409 starts
//! the table over; failures back off and ask again from the same, stored position.

use super::client::{Answer, Recovery, ShapeClient, SyncError};
use super::store::{Mirror, Position, TABLES};
use crate::host_auth::HostAuth;
use crate::host_auth::TokenError;
use crate::tunnel::{backoff, random};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, info, warn};

/// The longest wait between retries while the edge answers with errors.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// ... and while it does not answer at all: trying costs nothing, and the mirror is live again
/// within about 2 s of the edge returning.
const BACKOFF_UNREACHABLE: Duration = Duration::from_secs(2);
/// The least wait after the edge refused a request as such (a 4xx other than 401/408/429).
const REFUSED_WAIT: Duration = Duration::from_secs(60);
/// A server's Retry-After is honoured up to this.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(300);
/// Failures in a row before they are logged as warnings (a blip stays at debug).
const WARN_AFTER: u32 = 3;

/// Where shape answers come from: the edge ([`ShapeClient`]), or a script in tests.
pub trait ShapeSource: Sync {
    /// One request for `table` from `position` (`live`: a long-poll at the tail).
    fn fetch(
        &self,
        table: &str,
        position: &Position,
        live: bool,
    ) -> impl Future<Output = Result<Answer, SyncError>> + Send;

    /// The credential was refused: the next request gets a new one.
    fn refresh_token(&self);
}

impl ShapeSource for ShapeClient {
    fn fetch(
        &self,
        table: &str,
        position: &Position,
        live: bool,
    ) -> impl Future<Output = Result<Answer, SyncError>> + Send {
        ShapeClient::fetch(self, table, position, live)
    }

    fn refresh_token(&self) {
        self.auth().invalidate();
    }
}

/// Keeps a [`Mirror`] in sync with the org's tables.
pub struct Syncer<S = ShapeClient> {
    mirror: Arc<Mirror>,
    source: S,
    tables: Vec<String>,
    /// Whose tables these are ([`super::store::owner`]); None: not checked (tests).
    owner: Option<String>,
}

impl<S> std::fmt::Debug for Syncer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("mirror", &self.mirror)
            .field("tables", &self.tables)
            .finish_non_exhaustive()
    }
}

impl Syncer<ShapeClient> {
    /// Syncs org `org_id`'s tables from `auth`'s server with `auth`'s host tokens.
    pub fn connect(
        mirror: Arc<Mirror>,
        http: reqwest::Client,
        auth: Arc<HostAuth>,
        org_id: &str,
    ) -> Result<Self, SyncError> {
        let owner = super::store::owner(&auth.server, org_id);
        let mut syncer = Self::new(mirror, ShapeClient::new(http, auth, org_id)?);
        syncer.owner = Some(owner);
        Ok(syncer)
    }
}

impl<S: ShapeSource> Syncer<S> {
    /// Syncs every table of [`TABLES`] from `source`.
    pub fn new(mirror: Arc<Mirror>, source: S) -> Self {
        Self {
            mirror,
            source,
            tables: TABLES.iter().map(|t| (*t).to_owned()).collect(),
            owner: None,
        }
    }

    /// Syncs only these tables.
    pub fn with_tables(mut self, tables: &[&str]) -> Self {
        self.tables = tables.iter().map(|t| (*t).to_owned()).collect();
        self
    }

    pub fn mirror(&self) -> &Arc<Mirror> {
        &self.mirror
    }

    /// Syncs every table at once, for as long as the edge lets this host: it returns only
    /// when every table has stopped for good (the host was revoked).
    pub async fn run(&self) {
        if let Some(owner) = &self.owner {
            // Another org's rows must not pass for this one's (a machine paired again).
            let mut failures = 0u32;
            while let Err(e) = self.mirror.claim(owner).await {
                warn!(error = %e, "claiming the mirror failed; retrying");
                tokio::time::sleep(backoff(failures, BACKOFF_MAX, random())).await;
                failures = failures.saturating_add(1);
            }
        }
        futures_util::future::join_all(self.tables.iter().map(|t| self.run_table(t))).await;
    }

    /// Syncs one table until the edge refuses this host for good; answers why.
    pub async fn run_table(&self, table: &str) -> SyncError {
        let mut position = self.start_position(table).await;
        // Long-polls only after an up-to-date seen by this run: a daemon that was away catches
        // up first, in as many chunks as it takes.
        let mut live = false;
        let mut failures = 0u32;
        let mut refreshed = false;
        loop {
            let error = match self.source.fetch(table, &position, live).await {
                Ok(Answer::Batch(batch)) => match self.mirror.apply(table, &batch).await {
                    Ok(applied) => {
                        debug!(
                            table,
                            messages = batch.messages.len(),
                            upserted = applied.upserted,
                            deleted = applied.deleted,
                            skipped = applied.skipped,
                            offset = %batch.offset,
                            up_to_date = applied.up_to_date,
                            live,
                            "mirror: shape response applied"
                        );
                        if applied.up_to_date && !live {
                            info!(table, offset = %batch.offset, "mirror up to date");
                        }
                        live = applied.up_to_date;
                        position = Position {
                            handle: Some(batch.handle),
                            offset: batch.offset,
                            cursor: batch.cursor.or(position.cursor.take()),
                        };
                        failures = 0;
                        refreshed = false;
                        continue;
                    }
                    Err(e) => SyncError::Store(e),
                },
                Ok(Answer::MustRefetch { handle }) => {
                    match self.mirror.reset(table, handle.as_deref()).await {
                        Ok(()) => {
                            info!(
                                table,
                                handle = handle.as_deref().unwrap_or(""),
                                "mirror must refetch: the edge no longer serves its position (409); resyncing the table from the start"
                            );
                            position = Position::start(handle);
                            live = false;
                            failures = 0;
                            continue;
                        }
                        Err(e) => SyncError::Store(e),
                    }
                }
                Err(e) => e,
            };
            let wait = match error.recovery() {
                Recovery::Stop => {
                    warn!(table, error = %error, "mirror sync stopped: the edge refuses this host");
                    let _ = self.mirror.stop_live(Some(table)).await;
                    return error;
                }
                Recovery::RefreshToken if !refreshed => {
                    debug!(
                        table,
                        "mirror: the host token was refused; getting a new one"
                    );
                    self.source.refresh_token();
                    refreshed = true;
                    continue;
                }
                Recovery::RefreshToken => backoff(failures, BACKOFF_MAX, random()),
                Recovery::Retry(Some(after)) => after.min(RETRY_AFTER_MAX),
                Recovery::Retry(None) => {
                    let unreachable = matches!(
                        error,
                        SyncError::Transport { .. } | SyncError::Token(TokenError::Unreachable(_))
                    );
                    let cap = if unreachable {
                        BACKOFF_UNREACHABLE
                    } else {
                        BACKOFF_MAX
                    };
                    backoff(failures, cap, random())
                }
                Recovery::BackOff => backoff(failures, BACKOFF_MAX, random()).max(REFUSED_WAIT),
            };
            if failures == 0 {
                // Readers must not see "live" while the table may be falling behind.
                let _ = self.mirror.stop_live(Some(table)).await;
            }
            failures = failures.saturating_add(1);
            let retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
            if failures >= WARN_AFTER || error.recovery() == Recovery::BackOff {
                warn!(table, error = %error, failures, retry_in_ms, "mirror sync failing; retrying");
            } else {
                debug!(table, error = %error, retry_in_ms, "mirror request failed; retrying");
            }
            // From the same position, catching up first: nothing is lost or skipped.
            live = false;
            tokio::time::sleep(wait).await;
        }
    }

    /// Where the mirror stands for `table` (logged: a resume or a full sync). A database that
    /// cannot be read is retried: starting over on top of the stored rows could keep rows the
    /// edge deleted.
    async fn start_position(&self, table: &str) -> Position {
        let mut failures = 0u32;
        loop {
            match self.mirror.shape(table).await {
                Ok(Some(s)) if !s.position.is_start() => {
                    info!(
                        table,
                        offset = %s.position.offset,
                        handle = s.position.handle.as_deref().unwrap_or(""),
                        "mirror resuming from its stored position"
                    );
                    return s.position;
                }
                Ok(shape) => {
                    info!(table, "mirror starting a full sync");
                    return shape.map_or_else(|| Position::start(None), |s| s.position);
                }
                Err(e) => {
                    warn!(table, error = %e, "reading the mirror's position failed; retrying");
                    tokio::time::sleep(backoff(failures, BACKOFF_MAX, random())).await;
                    failures = failures.saturating_add(1);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::mirror::protocol::parse_body;
    use crate::mirror::read::Filter;
    use crate::mirror::store::Batch;
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A scripted edge: each request must be the next one expected, and gets its answer.
    /// When the script runs out the host is "revoked", which ends the loop.
    #[derive(Default)]
    struct Script {
        steps: Mutex<VecDeque<(String, Result<Answer, SyncError>)>>,
        refreshed: AtomicUsize,
    }

    impl Script {
        fn expect(self, request: &str, answer: Result<Answer, SyncError>) -> Self {
            self.steps
                .lock()
                .unwrap()
                .push_back((request.to_owned(), answer));
            self
        }
    }

    impl ShapeSource for Script {
        fn fetch(
            &self,
            table: &str,
            position: &Position,
            live: bool,
        ) -> impl Future<Output = Result<Answer, SyncError>> + Send {
            let asked = format!(
                "{table} offset={} handle={} {}",
                position.offset,
                position.handle.as_deref().unwrap_or("-"),
                if live {
                    format!("live cursor={}", position.cursor.as_deref().unwrap_or(""))
                } else {
                    "catch-up".to_owned()
                }
            );
            let next = self.steps.lock().unwrap().pop_front();
            async move {
                match next {
                    Some((wanted, answer)) => {
                        assert_eq!(asked, wanted);
                        answer
                    }
                    None => Err(SyncError::Token(TokenError::Revoked)),
                }
            }
        }

        fn refresh_token(&self) {
            self.refreshed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn answer(
        handle: &str,
        offset: &str,
        cursor: Option<&str>,
        body: &str,
    ) -> Result<Answer, SyncError> {
        Ok(Answer::Batch(Batch {
            handle: handle.into(),
            offset: offset.into(),
            cursor: cursor.map(str::to_owned),
            schema: Some(r#"{"id":{"type":"text"}}"#.into()),
            messages: parse_body(body.as_bytes()).unwrap(),
        }))
    }

    fn status(status: u16, code: Option<&str>) -> Result<Answer, SyncError> {
        Err(SyncError::Status {
            status,
            code: code.map(str::to_owned),
            body: String::new(),
            retry_after: Some(Duration::ZERO),
        })
    }

    const UP_TO_DATE: &str = r#"{"headers":{"control":"up-to-date"}}"#;
    const UP: &str = r#"[{"headers":{"control":"up-to-date"}}]"#;

    fn insert(id: &str) -> String {
        format!(r#"{{"headers":{{"operation":"insert"}},"key":"k-{id}","value":{{"id":"{id}"}}}}"#)
    }

    async fn ids(m: &Mirror) -> Vec<String> {
        let (rows, _) = m.rows("tasks", &Filter::default()).await.unwrap();
        rows.iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    }

    #[tokio::test]
    async fn catches_up_goes_live_survives_errors_and_resyncs_after_a_409() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Arc::new(Mirror::open(&dir.path().join("state.db")).await.unwrap());
        let script = Script::default()
            // Two snapshot pages, then live.
            .expect(
                "tasks offset=-1 handle=- catch-up",
                answer("h1", "1_0", None, &format!("[{}]", insert("a"))),
            )
            .expect(
                "tasks offset=1_0 handle=h1 catch-up",
                answer(
                    "h1",
                    "2_0",
                    None,
                    &format!("[{}, {}]", insert("b"), UP_TO_DATE),
                ),
            )
            .expect(
                "tasks offset=2_0 handle=h1 live cursor=",
                answer(
                    "h1",
                    "3_0",
                    Some("c1"),
                    &format!("[{}, {}]", insert("c"), UP_TO_DATE),
                ),
            )
            // A 503 and a refused token: the same position again, catching up first.
            .expect(
                "tasks offset=3_0 handle=h1 live cursor=c1",
                status(503, None),
            )
            .expect(
                "tasks offset=3_0 handle=h1 catch-up",
                status(401, Some("unauthorized")),
            )
            .expect(
                "tasks offset=3_0 handle=h1 catch-up",
                answer("h1", "3_0", None, UP),
            )
            .expect(
                "tasks offset=3_0 handle=h1 live cursor=c1",
                answer("h1", "3_0", Some("c2"), UP),
            )
            // The log was compacted: start over with the new handle.
            .expect(
                "tasks offset=3_0 handle=h1 live cursor=c2",
                Ok(Answer::MustRefetch {
                    handle: Some("h2".into()),
                }),
            )
            .expect(
                "tasks offset=-1 handle=h2 catch-up",
                answer(
                    "h2",
                    "9_0",
                    None,
                    &format!("[{}, {}]", insert("z"), UP_TO_DATE),
                ),
            );
        let syncer = Syncer::new(mirror.clone(), script).with_tables(&["tasks"]);
        let stopped = syncer.run_table("tasks").await;
        assert!(
            matches!(stopped, SyncError::Token(TokenError::Revoked)),
            "{stopped}"
        );
        assert_eq!(syncer.source.refreshed.load(Ordering::Relaxed), 1);
        assert!(syncer.source.steps.lock().unwrap().is_empty());
        assert_eq!(ids(&mirror).await, ["z"]);
        let shape = mirror.shape("tasks").await.unwrap().unwrap();
        assert_eq!(shape.position.offset, "9_0");
        assert_eq!(shape.position.handle.as_deref(), Some("h2"));
        assert_eq!(shape.resyncs, 1);
        // Stopped for good: not live.
        assert!(!shape.live);
    }

    #[tokio::test]
    async fn a_restart_resumes_from_the_stored_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        {
            let mirror = Arc::new(Mirror::open(&path).await.unwrap());
            let script = Script::default()
                .expect(
                    "tasks offset=-1 handle=- catch-up",
                    answer(
                        "h1",
                        "4_0",
                        None,
                        &format!("[{}, {}]", insert("a"), UP_TO_DATE),
                    ),
                )
                .expect(
                    "tasks offset=4_0 handle=h1 live cursor=",
                    answer(
                        "h1",
                        "5_0",
                        Some("c9"),
                        &format!("[{}, {}]", insert("b"), UP_TO_DATE),
                    ),
                );
            Syncer::new(mirror, script).run_table("tasks").await;
        }
        let mirror = Arc::new(Mirror::open(&path).await.unwrap());
        let script = Script::default()
            .expect(
                "tasks offset=5_0 handle=h1 catch-up",
                answer(
                    "h1",
                    "6_0",
                    None,
                    &format!("[{}, {}]", insert("c"), UP_TO_DATE),
                ),
            )
            .expect(
                "tasks offset=6_0 handle=h1 live cursor=c9",
                answer("h1", "6_0", Some("c10"), UP),
            );
        let syncer = Syncer::new(mirror.clone(), script);
        syncer.run_table("tasks").await;
        assert!(syncer.source.steps.lock().unwrap().is_empty());
        assert_eq!(ids(&mirror).await, ["a", "b", "c"]);
        assert_eq!(mirror.shape("tasks").await.unwrap().unwrap().resyncs, 0);
    }

    #[tokio::test]
    async fn a_revoked_host_stops_every_table() {
        let dir = tempfile::tempdir().unwrap();
        let mirror = Arc::new(Mirror::open(&dir.path().join("state.db")).await.unwrap());
        let script = Script::default().expect(
            "task_statuses offset=-1 handle=- catch-up",
            status(401, Some("host_revoked")),
        );
        let syncer =
            Syncer::new(mirror.clone(), script).with_tables(&["task_statuses", "projects"]);
        // Both tables end (the second with the script's own "revoked").
        tokio::time::timeout(Duration::from_secs(5), syncer.run())
            .await
            .unwrap();
        assert!(mirror.shapes().await.unwrap().is_empty());
    }
}
