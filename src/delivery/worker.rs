//! The delivery loop.
//!
//! One task claims batches of due deliveries under a lease and spawns one task per attempt,
//! bounded by a semaphore, so a hanging receiver holds one slot and never the loop. Results go
//! through a channel to a writer task that stores them in batches (one transaction per batch)
//! and wakes the loop, since a finished delivery may unblock the next one of its instance.
//! A housekeeping task promotes circuit-breaker probes and prunes the log.

use super::client::{Attempt, Callback, CallbackClient};
use crate::domain::{
    AttemptOutcome, BreakerPolicy, CallbackUrl, Millis, RetrySchedule, SigningKeys,
};
use crate::error::error_chain;
use crate::metrics::{AttemptEnd, Metrics};
use crate::storage::{
    AttemptRecord, AttemptResult, BreakerStep, ClaimRequest, ClaimedDelivery, NextStep, Pruned,
    Store, Unfinished, WorkspaceId,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// The longest a `Retry-After` answer can postpone the next attempt.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// How the worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Names this node in leases.
    pub node_id: String,
    /// Attempts in flight at once on this node, over all URLs.
    pub max_in_flight: usize,
    /// Attempts in flight at once to one host (`host:port`), over all nodes.
    pub per_host_cap: usize,
    /// Most deliveries claimed by one query.
    pub claim_batch: usize,
    /// Added to the attempt timeout to form the lease.
    pub lease_margin: Duration,
    /// Longest sleep when idle: how soon this node notices work other nodes queued or leases
    /// that expired.
    pub idle_poll: Duration,
    pub retry: RetrySchedule,
    pub breaker: BreakerPolicy,
    /// Finished deliveries and their attempts are pruned after this long.
    pub retention: Duration,
    /// How often pruning runs.
    pub prune_interval: Duration,
}

/// The delivery worker of one node.
pub struct Worker {
    store: Arc<dyn Store>,
    client: CallbackClient,
    config: WorkerConfig,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
}

/// Decides what follows an attempt: success ends the delivery; 410 Gone ends it as failed;
/// anything else is retried on the schedule until it runs out. A `Retry-After` (on 429 and
/// 503) can postpone the retry beyond the schedule, by at most [`MAX_RETRY_AFTER`]; it never
/// brings a retry forward. Test callbacks are never retried.
pub fn next_step(
    attempt: &Attempt,
    attempts_before: i64,
    test: bool,
    retry: &RetrySchedule,
    jitter: f64,
) -> NextStep {
    if attempt.outcome == AttemptOutcome::Success {
        return NextStep::Succeeded;
    }
    if test || attempt.status_code == Some(410) {
        return NextStep::Failed;
    }
    let made = u32::try_from(attempts_before.saturating_add(1)).unwrap_or(u32::MAX);
    match retry.delay_after(made, jitter) {
        Some(delay) => {
            let wanted = attempt
                .retry_after
                .map_or(Duration::ZERO, |d| d.min(MAX_RETRY_AFTER));
            NextStep::RetryAt(Millis::now().plus(delay.max(wanted)))
        }
        None => NextStep::Failed,
    }
}

impl Worker {
    pub fn new(
        store: Arc<dyn Store>,
        client: CallbackClient,
        config: WorkerConfig,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            store,
            client,
            config,
            wake,
            metrics,
        }
    }

    /// Runs until `shutdown` is cancelled, then stops claiming, lets attempts in flight finish
    /// (each is bounded by the timeout) and stores their results.
    pub async fn run(self, shutdown: CancellationToken) {
        let permits = Arc::new(Semaphore::new(self.config.max_in_flight));
        let (results_tx, results_rx) = mpsc::unbounded_channel::<AttemptResult>();
        // Results stored mean slots freed (here and in the per-host counts) and maybe the next
        // delivery of an instance unblocked: that wakes the loop at once.
        let stored = Arc::new(Notify::new());
        let writer = tokio::spawn(write_results(
            Arc::clone(&self.store),
            results_rx,
            Arc::clone(&stored),
            self.config.breaker,
            Arc::clone(&self.metrics),
            self.config.per_host_cap,
            shutdown.clone(),
        ));
        let housekeeping = tokio::spawn(housekeeping(
            Arc::clone(&self.store),
            self.config.clone(),
            Arc::clone(&self.wake),
            shutdown.clone(),
        ));
        let mut in_flight = JoinSet::new();
        let lease = self.client.timeout() + self.config.lease_margin;
        // Claims in a row that found nothing: while work is announced but cannot be claimed (its
        // host is at its cap, or it waits for an earlier delivery), announcements are coalesced
        // over a growing quiet period instead of each triggering a claim.
        let mut empty_claims: u32 = 0;
        let mut keys = KeyCache::default();
        // Attempts in flight per host on this node. A host this node alone keeps at its cap is
        // full whatever the other nodes do: the claim skips it without counting its leases.
        let busy: Arc<BusyHosts> = Arc::default();
        let mut full_hosts = Vec::new();

        while !shutdown.is_cancelled() {
            while in_flight.try_join_next().is_some() {}
            let free = permits.available_permits().min(self.config.claim_batch);
            if free == 0 {
                tokio::select! {
                    _ = stored.notified() => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
            let now = Millis::now();
            full_hosts.clear();
            full_hosts.extend(
                busy.lock()
                    .expect("not poisoned")
                    .iter()
                    .filter(|(_, n)| **n >= self.config.per_host_cap)
                    .map(|(host, _)| host.clone()),
            );
            let request = ClaimRequest {
                node: &self.config.node_id,
                now,
                lease_until: now.plus(lease),
                limit: free as i64,
                per_host_cap: self.config.per_host_cap as i64,
                full_hosts: &full_hosts,
            };
            let started = std::time::Instant::now();
            let claim = self.store.claim_due(request).await;
            self.metrics.claim_duration.observe(started.elapsed());
            let claimed = match claim {
                Ok(claimed) => claimed,
                Err(error) => {
                    tracing::error!(error = %error_chain(&error), "claiming deliveries failed; retrying in 1 s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => break,
                    }
                    continue;
                }
            };
            self.metrics.claimed(claimed.len());
            let full_batch = claimed.len() == free;
            let signing = match keys.for_claims(self.store.as_ref(), &claimed).await {
                Ok(signing) => signing,
                Err(error) => {
                    // Without keys nothing can be signed: give the claims back by letting their
                    // leases run out, and try again shortly.
                    tracing::error!(error = %error_chain(&error), "reading signing secrets failed");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            empty_claims = if claimed.is_empty() {
                empty_claims.saturating_add(1)
            } else {
                0
            };
            for delivery in claimed {
                let permit = Arc::clone(&permits)
                    .try_acquire_owned()
                    .expect("claims never exceed free permits");
                let client = self.client.clone();
                let retry = self.config.retry.clone();
                let tx = results_tx.clone();
                let node = self.config.node_id.clone();
                let keys = signing
                    .get(&delivery.workspace_id)
                    .cloned()
                    .expect("keys were read for every workspace claimed");
                let metrics = Arc::clone(&self.metrics);
                metrics.attempt_started();
                let slot = HostSlot::take(&busy, &delivery.host);
                in_flight.spawn(async move {
                    let result = attempt(&client, &delivery, &keys, &retry, &node).await;
                    drop(slot);
                    metrics.attempt_finished(
                        result.attempt.outcome,
                        Duration::from_millis(
                            u64::try_from(result.attempt.duration_ms).unwrap_or(0),
                        ),
                        match result.next {
                            NextStep::Succeeded => AttemptEnd::Succeeded,
                            NextStep::Failed => AttemptEnd::Failed,
                            NextStep::RetryAt(_) => AttemptEnd::Retrying,
                        },
                    );
                    drop(permit);
                    let _ = tx.send(result);
                });
            }
            if full_batch {
                continue;
            }
            // Idle: sleep until a write wakes us (ours, or another node's NOTIFY) or the poll
            // interval passes (retries coming due, leases expiring, other nodes' work on SQLite).
            // One or two empty claims in a row are normal (on PostgreSQL every write wakes the
            // worker twice: in process and through NOTIFY) and must not delay the next event;
            // only a longer streak, while attempts are in flight (whose results will wake the
            // loop anyway), means work is announced that cannot be claimed yet, for example
            // because its host is at its cap. With nothing in flight an announcement is always
            // claimed at once.
            let quiet = match empty_claims {
                _ if in_flight.is_empty() => Duration::ZERO,
                0..=2 => Duration::ZERO,
                n => (Duration::from_millis(2) * 2u32.saturating_pow(n.min(10) - 3))
                    .min(Duration::from_millis(200)),
            };
            let announced = async {
                tokio::time::sleep(quiet).await;
                self.wake.notified().await;
            };
            tokio::select! {
                _ = stored.notified() => {}
                _ = announced => {}
                _ = tokio::time::sleep(self.config.idle_poll) => {}
                _ = shutdown.cancelled() => break,
            }
        }

        let waiting = in_flight.len();
        if waiting > 0 {
            tracing::info!(
                in_flight = waiting,
                "shutting down: letting callbacks in flight finish"
            );
        }
        while in_flight.join_next().await.is_some() {}
        drop(results_tx);
        let _ = writer.await;
        let _ = housekeeping.await;
        tracing::info!("delivery worker stopped");
    }
}

/// Attempts in flight per host on this node.
type BusyHosts = std::sync::Mutex<std::collections::HashMap<String, usize>>;

/// One attempt in flight to a host, counted in [`BusyHosts`] until dropped.
struct HostSlot {
    busy: Arc<BusyHosts>,
    host: String,
}

impl HostSlot {
    fn take(busy: &Arc<BusyHosts>, host: &str) -> Self {
        *busy
            .lock()
            .expect("not poisoned")
            .entry(host.to_owned())
            .or_default() += 1;
        Self {
            busy: Arc::clone(busy),
            host: host.to_owned(),
        }
    }
}

impl Drop for HostSlot {
    fn drop(&mut self) {
        let mut busy = self.busy.lock().expect("not poisoned");
        if let Some(n) = busy.get_mut(&self.host) {
            *n -= 1;
            if *n == 0 {
                busy.remove(&self.host);
            }
        }
    }
}

/// Signing keys per workspace, re-read at most once a second so a rotation takes effect within a
/// second on every node without a query per claim.
#[derive(Default)]
struct KeyCache {
    entries: std::collections::HashMap<WorkspaceId, (tokio::time::Instant, Arc<SigningKeys>)>,
}

impl KeyCache {
    async fn for_claims(
        &mut self,
        store: &dyn Store,
        claimed: &[ClaimedDelivery],
    ) -> Result<
        std::collections::HashMap<WorkspaceId, Arc<SigningKeys>>,
        crate::storage::StorageError,
    > {
        let mut out = std::collections::HashMap::new();
        for delivery in claimed {
            let ws = delivery.workspace_id;
            if out.contains_key(&ws) {
                continue;
            }
            let fresh = self
                .entries
                .get(&ws)
                .filter(|(at, _)| at.elapsed() < Duration::from_secs(1));
            let keys = match fresh {
                Some((_, keys)) => Arc::clone(keys),
                None => {
                    let keys = Arc::new(store.signing_keys(ws, Millis::now()).await?);
                    self.entries
                        .insert(ws, (tokio::time::Instant::now(), Arc::clone(&keys)));
                    keys
                }
            };
            out.insert(ws, keys);
        }
        Ok(out)
    }
}

/// Makes one attempt of a claimed delivery and decides what follows.
pub async fn attempt(
    client: &CallbackClient,
    delivery: &ClaimedDelivery,
    keys: &SigningKeys,
    retry: &RetrySchedule,
    node: &str,
) -> AttemptResult {
    let result = match CallbackUrl::parse(&delivery.url) {
        Ok(url) => {
            let cb = Callback {
                id: &delivery.id,
                url: &url,
                event_type: delivery.event_type,
                instance_id: &delivery.instance_id,
                process_name: &delivery.process_name,
                test: delivery.test,
                format: delivery.format,
                occurred_at: delivery.occurred_at,
                instance: delivery.instance.as_deref(),
                keys,
            };
            client.send(&cb).await
        }
        // Stored URLs were validated when saved; this only guards against hand-edited rows.
        Err(why) => Attempt {
            started_at: Millis::now(),
            duration: Duration::ZERO,
            outcome: AttemptOutcome::ConnectionError,
            status_code: None,
            error: Some(format!("invalid URL: {why}")),
            response_excerpt: None,
            retry_after: None,
        },
    };
    let next = next_step(
        &result,
        delivery.attempts,
        delivery.test,
        retry,
        rand::random::<f64>(),
    );
    tracing::debug!(
        delivery = %delivery.id,
        outcome = result.outcome.as_str(),
        status = ?result.status_code,
        ms = result.duration.as_millis() as u64,
        "callback attempt"
    );
    AttemptResult {
        key: delivery.key,
        workspace_id: delivery.workspace_id,
        url: delivery.url.clone(),
        test: delivery.test,
        attempt: to_record(result, node),
        next,
    }
}

fn to_record(a: Attempt, node: &str) -> AttemptRecord {
    AttemptRecord {
        started_at: a.started_at,
        duration_ms: i64::try_from(a.duration.as_millis()).unwrap_or(i64::MAX),
        outcome: a.outcome,
        status_code: a.status_code.map(i64::from),
        error: a.error,
        response_excerpt: a.response_excerpt,
        node: node.to_owned(),
    }
}

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
async fn write_results(
    store: Arc<dyn Store>,
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
        let unfinished = loop {
            match store.record_attempts(&batch, &breaker).await {
                Ok(unfinished) => break unfinished,
                Err(error) if shutdown.is_cancelled() => {
                    let now = tokio::time::Instant::now();
                    let deadline = *give_up_at.get_or_insert(now + SHUTDOWN_RESULTS_GRACE);
                    if now >= deadline {
                        tracing::error!(error = %error_chain(&error), results = batch.len(), "shutting down: attempt results not stored; their deliveries will be attempted again when their leases end");
                        break Vec::new();
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
        };
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
    store: Arc<dyn Store>,
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
async fn resume_to_the_end(store: &dyn Store, work: &Unfinished, released: &Notify) {
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

/// Releases what recovered URLs still hold when the release that began with their recovery
/// stopped part way (its node stopped between chunks, or the database failed): otherwise those
/// deliveries would wait for the URL's next success, which may never come.
async fn finish_stranded_releases(store: &dyn Store, wake: &Notify) {
    let stranded = match store.stranded_releases().await {
        Ok(stranded) => stranded,
        Err(error) => {
            tracing::warn!(error = %error_chain(&error), "looking for unfinished releases failed");
            return;
        }
    };
    for work in stranded {
        resume_to_the_end(store, &work, wake).await;
    }
}

/// Every five idle polls: give every paused URL whose pause is over its probe. Every `prune_interval`
/// (and continuously while there is a backlog): prune the log in small batches, so pruning never
/// holds the database for long.
async fn housekeeping(
    store: Arc<dyn Store>,
    config: WorkerConfig,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    const PRUNE_BATCH: i64 = 500;
    let mut last_prune = tokio::time::Instant::now();
    while !shutdown.is_cancelled() {
        match store.promote_probes(Millis::now()).await {
            Ok(()) => wake.notify_one(),
            Err(error) => {
                tracing::warn!(error = %error_chain(&error), "promoting circuit-breaker probes failed")
            }
        }
        finish_stranded_releases(store.as_ref(), &wake).await;
        if last_prune.elapsed() >= config.prune_interval {
            let before = Millis(
                Millis::now().0 - i64::try_from(config.retention.as_millis()).unwrap_or(i64::MAX),
            );
            match store.prune(before, PRUNE_BATCH).await {
                // A full batch: more may be left, so the next round prunes again.
                Ok(pruned) if pruned.filled(PRUNE_BATCH) => {}
                Ok(pruned) => {
                    if pruned != Pruned::default() {
                        tracing::info!(
                            deliveries = pruned.deliveries,
                            events = pruned.events,
                            "pruned the delivery log"
                        );
                    }
                    last_prune = tokio::time::Instant::now();
                }
                Err(error) => {
                    tracing::warn!(error = %error_chain(&error), "pruning the delivery log failed");
                    last_prune = tokio::time::Instant::now();
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(config.idle_poll * 5) => {}
            _ = shutdown.cancelled() => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_slots_count_attempts_in_flight_until_dropped() {
        let busy: Arc<BusyHosts> = Arc::default();
        let count = |host: &str| busy.lock().unwrap().get(host).copied();
        let a = HostSlot::take(&busy, "a.example:443");
        let b = HostSlot::take(&busy, "a.example:443");
        let c = HostSlot::take(&busy, "b.example:443");
        assert_eq!(
            (count("a.example:443"), count("b.example:443")),
            (Some(2), Some(1))
        );
        drop(a);
        drop(c);
        assert_eq!(
            (count("a.example:443"), count("b.example:443")),
            (Some(1), None)
        );
        drop(b);
        assert!(busy.lock().unwrap().is_empty());
    }

    fn failed(status: u16, retry_after: Option<u64>) -> Attempt {
        Attempt {
            started_at: Millis::now(),
            duration: Duration::ZERO,
            outcome: AttemptOutcome::HttpStatus,
            status_code: Some(status),
            error: None,
            response_excerpt: None,
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    fn delay(step: NextStep) -> i64 {
        match step {
            NextStep::RetryAt(at) => (at.0 - Millis::now().0 + 500) / 1000,
            other => panic!("expected a retry, got {other:?}"),
        }
    }

    #[test]
    fn retry_after_postpones_but_never_hastens() {
        let schedule = RetrySchedule::parse("60s,60s").unwrap();
        assert_eq!(
            delay(next_step(&failed(503, Some(600)), 0, false, &schedule, 0.5)),
            600
        );
        assert_eq!(
            delay(next_step(&failed(429, Some(5)), 0, false, &schedule, 0.5)),
            60
        );
        assert_eq!(
            delay(next_step(
                &failed(503, Some(7 * 86_400)),
                0,
                false,
                &schedule,
                0.5
            )),
            86_400
        );
        assert_eq!(
            next_step(&failed(503, Some(5)), 2, false, &schedule, 0.5),
            NextStep::Failed
        );
    }

    #[test]
    fn gone_and_test_callbacks_are_not_retried() {
        let schedule = RetrySchedule::default();
        assert_eq!(
            next_step(&failed(410, None), 0, false, &schedule, 0.5),
            NextStep::Failed
        );
        assert_eq!(
            next_step(&failed(500, None), 0, true, &schedule, 0.5),
            NextStep::Failed
        );
        assert!(matches!(
            next_step(&failed(500, None), 0, false, &schedule, 0.5),
            NextStep::RetryAt(_)
        ));
    }
}
