//! Carrying out the circuit breaker's decisions: the one loop, shared by both backends, that
//! turns each attempt's [`Change`] (decided by [`BreakerPolicy::decide`]) into statements, in
//! the transaction that stores a batch of results. A backend supplies only the statements
//! ([`HealthStatements`]), whose SQL texts are written once, below.

use super::{AttemptResult, BreakerStep, Result, Unfinished, WorkspaceId};
use crate::domain::{BreakerPolicy, Change, Health, Millis, Signal};
use std::collections::HashSet;
use std::time::Duration;

/// Why a URL is disabled, as `GET /api/v1/webhooks/health` shows it.
pub const GONE_REASON: &str = "the receiver answered 410 Gone";

/// The error a delivery failed by its URL's disabling records.
pub const GONE_ERROR: &str =
    "gone: not sent, because the URL was disabled after its receiver answered 410 Gone";

/// The statements the breaker's changes need, each one statement in the caller's transaction.
/// Implemented by each backend over its own connection type, with the SQL texts of this module.
#[allow(async_fn_in_trait)] // Only used generically, within the crate.
pub(crate) trait HealthStatements {
    /// Counts a failed attempt of a URL (creating its row) and returns its health afterwards.
    async fn count_failure(
        &mut self,
        workspace: WorkspaceId,
        url: &str,
        now: Millis,
        error: Option<&str>,
    ) -> Result<Health>;
    /// Closes a URL's breaker after a success; `false` if the URL never failed (no row).
    async fn close(&mut self, workspace: WorkspaceId, url: &str, now: Millis) -> Result<bool>;
    /// Opens (or keeps open) a URL's breaker until `until`.
    async fn open(
        &mut self,
        workspace: WorkspaceId,
        url: &str,
        until: Millis,
        interval: Duration,
    ) -> Result<()>;
    /// Makes an attempted delivery whose schedule ran out wait, held, with its URL's others.
    async fn requeue(&mut self, key: i64) -> Result<()>;
    /// Marks a URL disabled (keeping the first time and reason).
    async fn disable(&mut self, workspace: WorkspaceId, url: &str, now: Millis) -> Result<()>;
    /// Runs one chunk of a breaker step on a URL; whether the chunk was full (more may remain).
    async fn chunk(
        &mut self,
        step: BreakerStep,
        workspace: WorkspaceId,
        url: &str,
        now: Millis,
    ) -> Result<bool>;
    /// Whether the URL is still in the state `step` works for (locking its row where the
    /// backend can, so that a result that changes it again waits for this chunk).
    async fn still(&mut self, step: BreakerStep, workspace: WorkspaceId, url: &str)
    -> Result<bool>;
}

/// Updates the health of the destinations of these results (test callbacks aside) under
/// `breaker`, and returns the URLs whose hold, release or disabling filled its first chunk: the
/// worker finishes those with [`super::Queue::resume`].
pub(crate) async fn record_health<S: HealthStatements>(
    s: &mut S,
    results: &[AttemptResult],
    breaker: &BreakerPolicy,
    now: Millis,
) -> Result<Vec<Unfinished>> {
    let mut closed = HashSet::new();
    let mut steps = Steps::default();
    for r in results.iter().filter(|r| !r.test) {
        let (ws, url) = (r.workspace_id, r.url.as_str());
        if r.signal == Signal::Success {
            // A second success in a row for the same URL would change nothing.
            if !closed.insert((ws, url)) {
                continue;
            }
            steps.done.remove(&(ws, url, BreakerStep::Hold));
            // Release what a pause held, through the index of held rows: nothing to read when
            // nothing is held. Doing it on every success of a URL that has failed before, not
            // only when its breaker was open, also frees a delivery queued as held by a write
            // that raced with the success that closed the breaker.
            if s.close(ws, url, now).await? {
                steps.run(s, BreakerStep::Release, ws, url, now).await?;
            }
            continue;
        }
        closed.remove(&(ws, url));
        let health = s
            .count_failure(ws, url, now, r.attempt.error.as_deref())
            .await?;
        match breaker.decide(r.signal, &health, now) {
            Change::Close | Change::Count => {}
            Change::Disable => {
                s.disable(ws, url, now).await?;
                steps.run(s, BreakerStep::FailGone, ws, url, now).await?;
            }
            Change::Hold => {
                s.requeue(r.key).await?;
                steps.run(s, BreakerStep::Hold, ws, url, now).await?;
            }
            Change::Pause {
                until,
                interval,
                requeue,
            } => {
                if requeue {
                    s.requeue(r.key).await?;
                }
                s.open(ws, url, until, interval).await?;
                // `promote_probes` picks the probe when the pause is over.
                steps.run(s, BreakerStep::Hold, ws, url, now).await?;
            }
        }
    }
    // A URL that failed and then succeeded in the same batch needs no more holding (and one that
    // succeeded and then paused again no more releasing: `resume` finds its breaker open).
    let mut unfinished = steps.unfinished;
    unfinished.retain(|h| {
        h.step != BreakerStep::Hold || !closed.contains(&(h.workspace_id, h.url.as_str()))
    });
    Ok(unfinished)
}

/// The breaker steps a batch ran, each once per URL (this batch's own results were written
/// before), and those whose first chunk was full.
#[derive(Default)]
struct Steps<'a> {
    done: HashSet<(WorkspaceId, &'a str, BreakerStep)>,
    unfinished: Vec<Unfinished>,
}

impl<'a> Steps<'a> {
    async fn run<S: HealthStatements>(
        &mut self,
        s: &mut S,
        step: BreakerStep,
        workspace: WorkspaceId,
        url: &'a str,
        now: Millis,
    ) -> Result<()> {
        if self.done.insert((workspace, url, step)) && s.chunk(step, workspace, url, now).await? {
            self.unfinished.push(Unfinished {
                workspace_id: workspace,
                url: url.to_owned(),
                step,
            });
        }
        Ok(())
    }
}

/// One more chunk of a URL's unfinished step, if the URL is still in the state it was for.
pub(crate) async fn resume<S: HealthStatements>(s: &mut S, work: &Unfinished) -> Result<bool> {
    if !s.still(work.step, work.workspace_id, &work.url).await? {
        return Ok(false);
    }
    s.chunk(work.step, work.workspace_id, &work.url, Millis::now())
        .await
}

/// Counts a failure (`$1` workspace, `$2` URL, `$3` now, `$4` error) and returns the health:
/// state, failures in a row, last pause (ms), paused until, disabled at.
pub const COUNT_FAILURE_SQL: &str = "INSERT INTO destinations (workspace_id, url, state, consecutive_failures, last_failure_at, last_error)
     VALUES ($1, $2, 'closed', 1, $3, $4)
     ON CONFLICT (workspace_id, url) DO UPDATE SET
        consecutive_failures = destinations.consecutive_failures + 1,
        last_failure_at = excluded.last_failure_at,
        last_error = excluded.last_error
     RETURNING state, consecutive_failures, probe_interval_ms, paused_until, disabled_at";

/// The health a [`COUNT_FAILURE_SQL`] row describes.
pub fn health_from_row(
    state: &str,
    consecutive_failures: i64,
    probe_interval_ms: i64,
    paused_until: Option<i64>,
    disabled_at: Option<i64>,
) -> Health {
    Health {
        open: state == "open",
        consecutive_failures,
        probe_interval: Duration::from_millis(u64::try_from(probe_interval_ms).unwrap_or(0)),
        paused_until: paused_until.map(Millis),
        disabled: disabled_at.is_some(),
    }
}

/// Holds every pending delivery of a URL that does not parse (`$1` the held time, `$2`
/// workspace, `$3` URL). Stored URLs were validated when saved: this only guards against
/// hand-edited rows, which have no host for the per-host index to find them by.
pub const HOLD_UNPARSED_SQL: &str = "UPDATE deliveries SET next_attempt_at = $1
     WHERE workspace_id = $2 AND url = $3 AND status = 'pending' AND next_attempt_at < $1";

/// Closes a breaker (`$1` now, `$2` workspace, `$3` URL).
pub const CLOSE_SQL: &str =
    "UPDATE destinations SET state = 'closed', consecutive_failures = 0, paused_until = NULL,
            probe_interval_ms = 0, last_success_at = $1
     WHERE workspace_id = $2 AND url = $3";

/// Opens a breaker (`$1` pause length in ms, `$2` paused until, `$3` workspace, `$4` URL).
pub const OPEN_SQL: &str =
    "UPDATE destinations SET state = 'open', probe_interval_ms = $1, paused_until = $2
     WHERE workspace_id = $3 AND url = $4";

/// Makes a delivery that failed for good wait, held (`$1` the held time, `$2` its key).
pub const REQUEUE_SQL: &str = "UPDATE deliveries SET status = 'pending', next_attempt_at = $1 WHERE id = $2 AND status = 'failed'";

/// Disables a URL (`$1` now, `$2` reason, `$3` workspace, `$4` URL); its breaker closes, since
/// nothing is held for a URL that gets nothing.
pub const DISABLE_SQL: &str = "UPDATE destinations SET disabled_at = COALESCE(disabled_at, $1),
            disabled_reason = COALESCE(disabled_reason, $2), state = 'closed', paused_until = NULL
     WHERE workspace_id = $3 AND url = $4";

/// Fails up to `$5` pending deliveries of a disabled URL (`$1` now, `$2` error, `$3`
/// workspace, `$4` URL), through the index of pending rows by URL. An attempt in flight keeps
/// its lease; its own result is stored when it ends.
pub const FAIL_GONE_SQL: &str = "UPDATE deliveries SET status = 'failed', next_attempt_at = NULL, last_error = $2, updated_at = $1
     WHERE id IN (SELECT id FROM deliveries
                  WHERE workspace_id = $3 AND url = $4 AND status = 'pending'
                  LIMIT $5)";

/// Enables a disabled URL again (`$1` workspace, `$2` URL), with a fresh breaker.
pub const ENABLE_SQL: &str =
    "UPDATE destinations SET disabled_at = NULL, disabled_reason = NULL, state = 'closed',
            consecutive_failures = 0, paused_until = NULL, probe_interval_ms = 0
     WHERE workspace_id = $1 AND url = $2 AND disabled_at IS NOT NULL";

/// Enables every disabled URL of a workspace (`$1`) that its saved settings list.
pub const ENABLE_LISTED_SQL: &str =
    "UPDATE destinations SET disabled_at = NULL, disabled_reason = NULL, state = 'closed',
            consecutive_failures = 0, paused_until = NULL, probe_interval_ms = 0
     WHERE workspace_id = $1 AND disabled_at IS NOT NULL
       AND url IN (SELECT url FROM webhook_urls WHERE workspace_id = $1)";

/// Whether a step's URL is still in the state the step works for (`$1` workspace, `$2` URL,
/// and `$3` the breaker state when the step names one): open for a hold, closed for a release,
/// disabled for failing what is pending.
pub fn still_sql(step: BreakerStep) -> (&'static str, Option<&'static str>) {
    match step {
        BreakerStep::Hold => (STILL_IN_STATE_SQL, Some("open")),
        BreakerStep::Release => (STILL_IN_STATE_SQL, Some("closed")),
        BreakerStep::FailGone => (
            "SELECT 1 FROM destinations WHERE workspace_id = $1 AND url = $2 AND disabled_at IS NOT NULL",
            None,
        ),
    }
}

const STILL_IN_STATE_SQL: &str = "SELECT 1 FROM destinations
     WHERE workspace_id = $1 AND url = $2 AND state = $3 AND disabled_at IS NULL";

/// Every destination of a workspace (`$1`) that has failed at least once, by URL.
pub const DESTINATIONS_SQL: &str =
    "SELECT url, state, consecutive_failures, paused_until, last_success_at, last_failure_at,
            last_error, disabled_at, disabled_reason
     FROM destinations WHERE workspace_id = $1 ORDER BY url";

/// A row of [`DESTINATIONS_SQL`], decoded alike on both backends.
#[derive(sqlx::FromRow)]
pub struct DestinationRow {
    url: String,
    state: String,
    consecutive_failures: i64,
    paused_until: Option<i64>,
    last_success_at: Option<i64>,
    last_failure_at: Option<i64>,
    last_error: Option<String>,
    disabled_at: Option<i64>,
    disabled_reason: Option<String>,
}

impl From<DestinationRow> for super::DestinationRecord {
    fn from(r: DestinationRow) -> Self {
        Self {
            url: r.url,
            open: r.state == "open",
            consecutive_failures: r.consecutive_failures,
            paused_until: r.paused_until.map(Millis),
            last_success_at: r.last_success_at.map(Millis),
            last_failure_at: r.last_failure_at.map(Millis),
            last_error: r.last_error,
            disabled: r
                .disabled_at
                .map(|at| (Millis(at), r.disabled_reason.unwrap_or_default())),
        }
    }
}
