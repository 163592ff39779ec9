//! The results writer: stores attempt results in batches off the attempts' path, and finishes
//! the holds, releases and disablings a batch leaves for its URLs' backlogs.

use crate::domain::{BreakerPolicy, storable_text};
use crate::error::error_chain;
use crate::metrics::Metrics;
use crate::storage::{AttemptResult, BreakerStep, Queue, StorageError, Unfinished};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// Most attempt results stored in one batch.
const RESULTS_BATCH: usize = 256;

/// How long the results writer waits for more results before storing a batch that is not full.
/// Measured at 1,000 events/s on PostgreSQL: results were stored nearly one by one (18,800
/// writes for 30,000 results), each a statement costing the server 0.2–0.4 ms, and each waking
/// a claim that found little or nothing.
const RESULTS_LINGER: Duration = Duration::from_millis(3);

/// The results writer lingers only while fewer attempts than this are in flight (and fewer than
/// the per-host cap). Measured: lingering whatever the load cut the drain of a backlog to one host
/// from 10,818 to 7,454 callbacks/s, its 64 slots each idle for the linger.
const LINGER_BELOW_IN_FLIGHT: usize = 8;

/// How long a stopping node keeps retrying results its database refuses before it gives them
/// up. Callbacks in flight finish within the callback timeout first, so a node asked to stop
/// is gone within about timeout + this grace, which fits the usual 30 s of a process manager.
pub const SHUTDOWN_RESULTS_GRACE: Duration = Duration::from_secs(10);

/// Stores results in batches. A failed write is retried, not dropped, while the node runs: the
/// lease keeps the delivery from being attempted again meanwhile. Once the node is stopping, the
/// retries last [`SHUTDOWN_RESULTS_GRACE`] at most; then the results are given up (logged), as if
/// the node had died: each delivery is attempted again after its lease ends, with the same
/// webhook-id, so nothing is lost and the receiver can tell the repeat.
pub(super) async fn write_results(
    store: Arc<dyn Queue>,
    mut rx: mpsc::UnboundedReceiver<AttemptResult>,
    stored: Arc<Notify>,
    breaker: BreakerPolicy,
    metrics: Arc<Metrics>,
    per_host_cap: usize,
    shutdown: CancellationToken,
) {
    let mut give_up_at: Option<tokio::time::Instant> = None;
    let mut batch = Vec::with_capacity(RESULTS_BATCH);
    // URLs whose pause is still being held, or whose recovery released, chunk by chunk, by a
    // task of their own, so the results of other URLs never wait behind a large backlog.
    let moving: Arc<std::sync::Mutex<std::collections::HashSet<Unfinished>>> = Arc::default();
    let (moves, to_move) = mpsc::unbounded_channel();
    tokio::spawn(finish_backlogs(
        Arc::clone(&store),
        to_move,
        Arc::clone(&moving),
        Arc::clone(&stored),
    ));
    while rx.recv_many(&mut batch, RESULTS_BATCH).await > 0 {
        // A few results at a time cost nearly as much to store as a full batch (the statement,
        // not its rows, is the cost). Under light load nothing waits on them but the next
        // delivery of the same instance: gather for a moment. Not when a host may be at its cap
        // (its next claim waits for these results to free a slot), nor under load, where
        // batches fill by themselves.
        let in_flight = usize::try_from(metrics.in_flight()).unwrap_or(0);
        let linger = in_flight + batch.len() < per_host_cap.min(LINGER_BELOW_IN_FLIGHT);
        let deadline = tokio::time::Instant::now() + RESULTS_LINGER;
        while linger && batch.len() < RESULTS_BATCH {
            let room = RESULTS_BATCH - batch.len();
            match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
        let mut backoff = Duration::from_millis(50);
        let started = std::time::Instant::now();
        let mut unfinished = Vec::new();
        loop {
            match store_results(store.as_ref(), &mut batch, &breaker, &mut unfinished).await {
                Ok(()) => break,
                Err(error) if shutdown.is_cancelled() => {
                    let now = tokio::time::Instant::now();
                    let deadline = *give_up_at.get_or_insert(now + SHUTDOWN_RESULTS_GRACE);
                    if now >= deadline {
                        tracing::error!(error = %error_chain(&error), results = batch.len(), "shutting down: attempt results not stored; their deliveries will be attempted again when their leases end");
                        break;
                    }
                    tracing::error!(error = %error_chain(&error), results = batch.len(), "storing attempt results failed while shutting down; retrying until the grace period ends");
                    tokio::time::sleep(backoff.min(deadline - now)).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(error) => {
                    tracing::error!(error = %error_chain(&error), results = batch.len(), "storing attempt results failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        // A stop request cuts the wait short: retry now, then within the grace.
                        _ = shutdown.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        metrics.results_duration.observe(started.elapsed());
        batch.clear();
        stored.notify_one();
        for work in unfinished {
            if moving.lock().expect("not poisoned").insert(work.clone()) {
                let _ = moves.send(work);
            }
        }
    }
}

/// Holds the remaining deliveries of paused URLs, and releases those of recovered ones, one URL
/// after another and one chunk per transaction, until none is left or the URL's breaker changed
/// again: one database connection at most is busy with backlogs, however many URLs pause or
/// recover at once. Each released chunk wakes the delivery loop. If the database fails meanwhile,
/// unheld rows are claimed, fail, and are held then; unreleased rows wait for the URL's next
/// success.
async fn finish_backlogs(
    store: Arc<dyn Queue>,
    mut to_move: mpsc::UnboundedReceiver<Unfinished>,
    moving: Arc<std::sync::Mutex<std::collections::HashSet<Unfinished>>>,
    released: Arc<Notify>,
) {
    while let Some(work) = to_move.recv().await {
        resume_to_the_end(store.as_ref(), &work, &released).await;
        moving.lock().expect("not poisoned").remove(&work);
    }
}

/// Holds or releases a URL's deliveries chunk by chunk until none is left, the breaker changed
/// again, or the database failed (logged). Each released chunk wakes the delivery loop.
///
/// A hold waits as long between chunks as the last chunk took: nothing is urgent about it (until
/// held, a paused URL's deliveries only wait behind its attempts in flight), and run back to back
/// its chunks took a database core for over a second whenever a busy URL stopped answering,
/// delaying the callbacks of every other URL. A release goes on at once: its URL's receiver is
/// back and its backlog should flow.
pub(super) async fn resume_to_the_end(store: &dyn Queue, work: &Unfinished, released: &Notify) {
    loop {
        let started = tokio::time::Instant::now();
        let more = store.resume(work).await;
        if work.step == BreakerStep::Release {
            released.notify_one();
        }
        match more {
            Ok(true) if work.step == BreakerStep::Hold => {
                tokio::time::sleep(started.elapsed()).await;
            }
            Ok(true) => tokio::task::yield_now().await,
            Ok(false) => break,
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), step = ?work.step, "holding or releasing a URL's deliveries failed");
                break;
            }
        }
    }
}

/// Stores `batch`, removing from it what was stored, and collects the URLs whose backlogs are
/// left to finish. A batch the database refuses (as opposed to one it cannot be reached for) is
/// stored result by result, so that one bad row fails alone; a result refused alone is stored
/// without its response excerpt, its error naming the refusal; one refused even so is given up
/// (logged), as if this node had died: its delivery is attempted again when its lease ends.
/// Nothing is retried forever, and the results of other deliveries are never held up by one.
/// A database that cannot be reached fails the call, with what is left in `batch`.
pub(crate) async fn store_results(
    store: &dyn Queue,
    batch: &mut Vec<AttemptResult>,
    breaker: &BreakerPolicy,
    unfinished: &mut Vec<Unfinished>,
) -> Result<(), StorageError> {
    match store.record_attempts(batch, breaker).await {
        Ok(left) => {
            unfinished.extend(left);
            batch.clear();
            return Ok(());
        }
        Err(error) if error.is_refusal() && batch.len() > 1 => {
            tracing::warn!(error = %error_chain(&error), results = batch.len(), "the database refused a batch of attempt results; storing them one by one");
        }
        Err(error) if error.is_refusal() => {}
        Err(error) => return Err(error),
    }
    while let Some(result) = batch.first() {
        let stored = match store
            .record_attempts(std::slice::from_ref(result), breaker)
            .await
        {
            Err(error) if error.is_refusal() => {
                let degraded = without_response(result, &error);
                match store
                    .record_attempts(std::slice::from_ref(&degraded), breaker)
                    .await
                {
                    Err(again) if again.is_refusal() => {
                        tracing::error!(error = %error_chain(&again), delivery = result.key, "the database refused an attempt result even without its response; given up, its delivery will be attempted again when its lease ends");
                        Ok(Vec::new())
                    }
                    other => other,
                }
            }
            other => other,
        };
        unfinished.extend(stored?);
        batch.remove(0);
    }
    Ok(())
}

/// The result without what a receiver sent, and the database's refusal as its error.
fn without_response(result: &AttemptResult, refusal: &StorageError) -> AttemptResult {
    let mut degraded = result.clone();
    degraded.attempt.response_excerpt = None;
    degraded.attempt.error = Some(storable_text(format!(
        "Herald could not store this attempt's result as received ({}); stored without the response",
        error_chain(refusal)
    )));
    degraded
}
