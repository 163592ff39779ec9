//! The delivery loop.
//!
//! One task claims batches of due deliveries under a lease and starts a task per slot, bounded
//! by a semaphore, so a hanging receiver holds one slot and never the loop. For a receiver that
//! answers quickly, the claim also takes a window ahead: deliveries that wait, leased, for the
//! host's next free slot, which its last attempt hands on at once ([`run_slot`]), so a slot is
//! busy only while its request is (decision 0013). Results go through a channel to a writer
//! task that stores them in batches (one transaction per batch) and wakes the loop, since a
//! finished delivery may unblock the next one of its instance. A housekeeping task promotes
//! circuit-breaker probes and prunes the log.

use super::backpressure::WriteGate;
use super::client::{Attempt, Callback, CallbackClient};
use super::limits::{HostLimits, HostSlot, Ready};
use super::results::{resume_to_the_end, write_results};
use crate::domain::backpressure::{Claimed, held_back, worker_lag};
use crate::domain::{
    AttemptOutcome, Backpressure, BreakerPolicy, CallbackUrl, Load, Millis, RetrySchedule, Signal,
    SigningKeys, next_step, storable_text,
};
use crate::error::error_chain;
use crate::metrics::{AttemptEnd, Metrics};
use crate::storage::{
    AttemptRecord, AttemptResult, ClaimRequest, ClaimedDelivery, NextStep, Pruned, Queue, Settings,
    WorkspaceId,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

/// How the worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Names this node in leases.
    pub node_id: String,
    /// Attempts in flight at once on this node, over all URLs.
    pub max_in_flight: usize,
    /// The most attempts in flight at once to one host (`host:port`), over all nodes: the
    /// ceiling of each host's adaptive limit ([`HostLimits`]).
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
    store: Arc<dyn Queue>,
    /// Where the signing keys of claimed deliveries' workspaces are read.
    secrets: Arc<dyn Settings>,
    client: CallbackClient,
    config: WorkerConfig,
    wake: Arc<Notify>,
    metrics: Arc<Metrics>,
    /// Each host's adaptive limit and attempts in flight on this node.
    limits: Arc<HostLimits>,
    /// Told after each claim how far behind this worker is (backpressure on the API).
    gate: Arc<WriteGate>,
}

impl Worker {
    pub fn new(
        store: Arc<dyn Queue>,
        secrets: Arc<dyn Settings>,
        client: CallbackClient,
        config: WorkerConfig,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
        limits: Arc<HostLimits>,
    ) -> Self {
        Self {
            store,
            secrets,
            client,
            config,
            wake,
            metrics,
            limits,
            gate: Arc::new(WriteGate::new(Backpressure::Off)),
        }
    }

    /// How far behind one claim shows this worker to be ([`worker_lag`]), given the host and due
    /// time of each delivery it took, judged once they were started or kept ahead.
    fn lag_of(&self, claimed: &[(String, Millis)], now: Millis) -> Duration {
        let mut held: std::collections::HashMap<&str, bool> = std::collections::HashMap::new();
        for (host, _) in claimed {
            held.entry(host).or_insert_with(|| {
                held_back(
                    self.limits.restrained(host, now),
                    self.limits.at_limit(host),
                )
            });
        }
        worker_lag(
            now,
            claimed.iter().map(|(host, due)| Claimed {
                host,
                due: *due,
                held_back: held.get(host.as_str()).copied().unwrap_or(true),
            }),
        )
    }

    /// Reports how far behind this worker is to `gate`, which instance writes pass through.
    pub fn with_gate(mut self, gate: Arc<WriteGate>) -> Self {
        self.gate = gate;
        self
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
        // Whether the loop was woken for work it may not know of (announced, or the poll).
        let mut new_work = true;

        let slots = Arc::new(Slots {
            client: self.client.clone(),
            urls: UrlCache::default(),
            retry: self.config.retry.clone(),
            node: self.config.node_id.clone(),
            metrics: Arc::clone(&self.metrics),
            limits: Arc::clone(&self.limits),
            results: results_tx.clone(),
            store: Arc::clone(&self.store),
            shutdown: shutdown.clone(),
            freed: Arc::clone(&stored),
        });

        while !shutdown.is_cancelled() {
            while in_flight.try_join_next().is_some() {}
            // Deliveries claimed ahead whose host has a free slot no attempt took (its limit
            // grew, or its last attempt failed), and those whose lease would no longer cover an
            // attempt, which are given back.
            let mut stale = Vec::new();
            while let Ok(permit) = Arc::clone(&permits).try_acquire_owned() {
                let Some(started) =
                    self.limits
                        .next_startable(Millis::now(), self.client.timeout(), &mut stale)
                else {
                    break;
                };
                in_flight.spawn(run_slot(Arc::clone(&slots), started, permit));
            }
            give_back(
                self.store.as_ref(),
                &self.config.node_id,
                &self.metrics,
                stale,
            )
            .await;
            let now = Millis::now();
            // Each host's room on this node: its adaptive limit and its window ahead, less what
            // is in flight and claimed ahead. A host with none is full whatever the other nodes
            // do: the claim skips it without counting its leases.
            let rooms = self.limits.rooms();
            // What free slots take at once, and the windows ahead of quick hosts.
            let free = (permits.available_permits() + rooms.ahead.min(self.config.max_in_flight))
                .saturating_sub(self.limits.ready_len())
                .min(self.config.claim_batch);
            if free == 0 {
                tokio::select! {
                    _ = stored.notified() => {}
                    _ = self.limits.refill_wanted().notified() => {}
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
            // Woken only by stored results or a slot's end while every host this node knows is
            // full: a result frees room, or unblocks a delivery, only on its own host, so a claim
            // could take nothing. Work for other hosts is announced; retries come with the poll.
            if !new_work && rooms.hosts.is_empty() && !rooms.full.is_empty() {
                tokio::select! {
                    _ = stored.notified() => {}
                    _ = self.limits.refill_wanted().notified() => {}
                    _ = self.wake.notified() => new_work = true,
                    _ = tokio::time::sleep(self.config.idle_poll) => new_work = true,
                    _ = shutdown.cancelled() => break,
                }
                continue;
            }
            new_work = false;
            let request_lease_until = now.plus(lease);
            let request = ClaimRequest {
                node: &self.config.node_id,
                now,
                lease_until: request_lease_until,
                limit: free as i64,
                per_host_cap: self.config.per_host_cap as i64,
                full_hosts: &rooms.full,
                room_hosts: &rooms.hosts,
                rooms: &rooms.rooms,
                default_room: rooms.default,
            };
            let started = std::time::Instant::now();
            let span = tracing::info_span!("claim", limit = free, claimed = tracing::field::Empty);
            let claim = self.store.claim_due(request).instrument(span.clone()).await;
            self.metrics.claim_duration.observe(started.elapsed());
            if let Ok(claimed) = &claim {
                span.record("claimed", claimed.len());
            }
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
            let dues: Vec<(String, Millis)> =
                claimed.iter().map(|d| (d.host.clone(), d.due_at)).collect();
            let signing = match keys.for_claims(self.secrets.as_ref(), &claimed).await {
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
            let mut stale = Vec::new();
            for delivery in claimed {
                let keys = signing
                    .get(&delivery.workspace_id)
                    .cloned()
                    .expect("keys were read for every workspace claimed");
                let ready = Ready {
                    delivery,
                    keys,
                    lease_until: request_lease_until,
                };
                // Started now if a slot of its host is free, otherwise kept, claimed ahead, for
                // the first slot that frees (`run_slot` hands it on).
                let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                    self.limits.keep(ready);
                    continue;
                };
                match self
                    .limits
                    .admit(ready, now, self.client.timeout(), &mut stale)
                {
                    Some(started) => {
                        in_flight.spawn(run_slot(Arc::clone(&slots), started, permit));
                    }
                    None => drop(permit),
                }
            }
            give_back(
                self.store.as_ref(),
                &self.config.node_id,
                &self.metrics,
                stale,
            )
            .await;
            // An empty claim while attempts are in flight says only that the rooms are full,
            // not that the worker caught up; with nothing in flight, it has.
            if !dues.is_empty() || in_flight.is_empty() {
                self.gate.report(self.lag_of(&dues, now));
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
                _ = self.limits.refill_wanted().notified() => {}
                _ = announced => new_work = true,
                _ = tokio::time::sleep(self.config.idle_poll) => new_work = true,
                _ = shutdown.cancelled() => break,
            }
        }

        // Nothing claimed ahead will start now: other nodes may take it at once.
        give_back(
            self.store.as_ref(),
            &self.config.node_id,
            &self.metrics,
            self.limits.take_all(),
        )
        .await;
        let waiting = in_flight.len();
        if waiting > 0 {
            tracing::info!(
                in_flight = waiting,
                "shutting down: letting callbacks in flight finish"
            );
        }
        while in_flight.join_next().await.is_some() {}
        // The slots' sender too, so the writer sees the end of the results.
        drop(slots);
        drop(results_tx);
        let _ = writer.await;
        let _ = housekeeping.await;
        tracing::info!("delivery worker stopped");
    }
}

/// What every slot's task needs.
struct Slots {
    client: CallbackClient,
    urls: UrlCache,
    retry: RetrySchedule,
    node: String,
    metrics: Arc<Metrics>,
    limits: Arc<HostLimits>,
    results: mpsc::UnboundedSender<AttemptResult>,
    store: Arc<dyn Queue>,
    shutdown: CancellationToken,
    /// Told when a slot's task ends and the loop may want its permit.
    freed: Arc<Notify>,
}

/// One slot, busy only while its requests are: makes the attempt it was started with, sends the
/// result to the writer, and goes on at once with the next delivery claimed ahead for the same
/// host while the host's limit has room for it, so the slot never waits for a results write or
/// a claim. It stops at the first failure, whose receiver's deliveries claimed ahead are given
/// back (the breaker may pause them; the database decides), and when the node is stopping.
async fn run_slot(
    slots: Arc<Slots>,
    first: (Ready, HostSlot),
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let mut next = Some(first);
    while let Some((ready, slot)) = next.take() {
        let delivery = &ready.delivery;
        slots.metrics.attempt_started();
        let result = attempt(
            &slots.client,
            &slots.urls,
            delivery,
            &ready.keys,
            &slots.retry,
            &slots.node,
        )
        .await;
        let took = Duration::from_millis(u64::try_from(result.attempt.duration_ms).unwrap_or(0));
        let load = Load::of(
            result.attempt.outcome,
            result
                .attempt
                .status_code
                .and_then(|s| u16::try_from(s).ok()),
            took,
        );
        slots.metrics.attempt_finished(
            result.attempt.outcome,
            took,
            match result.next {
                NextStep::Succeeded => AttemptEnd::Succeeded,
                NextStep::Failed => AttemptEnd::Failed,
                NextStep::RetryAt(_) => AttemptEnd::Retrying,
            },
        );
        let succeeded = result.attempt.outcome == AttemptOutcome::Success;
        // The host's limit learns of the attempt before its result can wake the loop, so the
        // next claim sees a receiver that holds back as such.
        let mut stale = Vec::new();
        next = slot.finish_then_next(
            load,
            succeeded && !slots.shutdown.is_cancelled(),
            slots.client.timeout(),
            &mut stale,
        );
        if !succeeded {
            stale.extend(slots.limits.take_url(&delivery.host, &delivery.url));
        }
        let _ = slots.results.send(result);
        give_back(slots.store.as_ref(), &slots.node, &slots.metrics, stale).await;
    }
    // The freed permit matters to the loop only if it is waiting for one, or deliveries wait
    // claimed ahead for a permit; otherwise waking it would cost a claim that finds nothing
    // (measured at 1,000 events/s: twice the claims).
    let wanted = permit.semaphore().available_permits() == 0 || slots.limits.ready_len() > 0;
    drop(permit);
    if wanted {
        slots.freed.notify_one();
    }
}

/// Gives back deliveries claimed ahead that will not be attempted here (see
/// [`Queue::give_back`]). If that fails, their leases end by themselves: nothing is lost, they
/// only start later.
async fn give_back(store: &dyn Queue, node: &str, metrics: &Metrics, ready: Vec<Ready>) {
    if ready.is_empty() {
        return;
    }
    metrics.given_back(ready.len());
    let leases: Vec<(i64, Millis)> = ready
        .iter()
        .map(|r| (r.delivery.key, r.lease_until))
        .collect();
    if let Err(error) = store.give_back(node, &leases).await {
        tracing::warn!(error = %error_chain(&error), deliveries = leases.len(), "giving back deliveries claimed ahead failed; their leases will end by themselves");
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
        store: &dyn Settings,
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

/// Stored URLs as parsed, so the deliveries of one URL parse it once, not once per attempt.
#[derive(Default)]
pub struct UrlCache {
    parsed: std::sync::Mutex<std::collections::HashMap<String, CallbackUrl>>,
}

impl UrlCache {
    /// The most URLs kept; past it the cache starts again (a node calls a few hundred URLs,
    /// rarely more).
    const MOST: usize = 4096;

    fn parse(&self, text: &str) -> Result<CallbackUrl, crate::domain::Invalid> {
        let mut parsed = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(url) = parsed.get(text) {
            return Ok(url.clone());
        }
        let url = CallbackUrl::parse(text)?;
        if parsed.len() >= Self::MOST {
            parsed.clear();
        }
        parsed.insert(text.to_owned(), url.clone());
        Ok(url)
    }
}

/// Makes one attempt of a claimed delivery and decides what follows.
pub async fn attempt(
    client: &CallbackClient,
    urls: &UrlCache,
    delivery: &ClaimedDelivery,
    keys: &SigningKeys,
    retry: &RetrySchedule,
    node: &str,
) -> AttemptResult {
    let span = tracing::info_span!(
        "callback attempt",
        otel.kind = "client",
        webhook.id = %delivery.id,
        url = %crate::domain::webhook::redact(&delivery.url),
        instance.id = %delivery.instance_id,
        event.type = delivery.event_type.as_str(),
        attempt = delivery.attempts + 1,
        outcome = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
    );
    if let Some(parent) = &delivery.trace_parent {
        crate::telemetry::link_to_parent(&span, parent);
    }
    let result = match urls.parse(&delivery.url) {
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
            client.send(&cb).instrument(span.clone()).await
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
    span.record("outcome", result.outcome.as_str());
    if let Some(code) = result.status_code {
        span.record("http.response.status_code", code);
    }
    let signal = Signal::of(result.outcome, result.status_code, result.retry_after);
    let next = next_step(
        signal,
        delivery.attempts,
        delivery.test,
        retry,
        Millis::now(),
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
        signal,
        next,
    }
}

fn to_record(a: Attempt, node: &str) -> AttemptRecord {
    AttemptRecord {
        started_at: a.started_at,
        duration_ms: i64::try_from(a.duration.as_millis()).unwrap_or(i64::MAX),
        outcome: a.outcome,
        status_code: a.status_code.map(i64::from),
        error: a.error.map(storable_text),
        response_excerpt: a.response_excerpt.map(storable_text),
        node: node.to_owned(),
    }
}

/// Releases what recovered URLs still hold when the release that began with their recovery
/// stopped part way (its node stopped between chunks, or the database failed): otherwise those
/// deliveries would wait for the URL's next success, which may never come.
async fn finish_stranded_releases(store: &dyn Queue, wake: &Notify) {
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
    store: Arc<dyn Queue>,
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
