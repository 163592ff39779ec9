//! Group commit of instance writes.
//!
//! Every change to an instance is a small transaction (the instance, its event and its
//! deliveries), and on this kind of machine the cost of a transaction is in its statements and
//! its commit, not in its rows. So each store hands its instance writes to one writer task,
//! which takes whatever requests are waiting (up to [`MAX_BATCH`]), applies them in arrival
//! order in **one** transaction with as few statements as the backend allows (multi-row
//! statements on PostgreSQL, where each is a round trip), and answers each request only after
//! that transaction committed. A request that finds the writer idle is written at once: batching
//! adds no delay, it only appears under concurrency.
//!
//! **Invariant:** a request is answered with success only after its writes committed. If a
//! batch fails, nothing of it was stored; when the database refused it, its writes are retried
//! one by one, so one bad write fails alone and never takes its neighbours down with it; when
//! the database is down or full, every write gets that answer at once. A request whose client
//! has gone before its batch starts is never written.

use super::{InstanceRecord, InstanceUpdate, Result, StorageError, WorkspaceId, Written};
use crate::domain::{EventType, InstanceData, InstanceId, InstanceStatus, Millis, ProcessName};
use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument as _;

/// The most writes committed in one transaction.
pub const MAX_BATCH: usize = 256;

/// Requests waiting for the writer; beyond this, callers wait (backpressure).
const QUEUE: usize = 4096;

/// A change to an instance, queued for group commit.
#[derive(Debug, Clone)]
pub enum InstanceWrite {
    Create {
        workspace: WorkspaceId,
        process: ProcessName,
        data: InstanceData,
        status: InstanceStatus,
        by: String,
    },
    Update {
        workspace: WorkspaceId,
        id: InstanceId,
        update: InstanceUpdate,
        by: String,
    },
    Delete {
        workspace: WorkspaceId,
        id: InstanceId,
        by: String,
    },
    Restore {
        workspace: WorkspaceId,
        id: InstanceId,
        by: String,
    },
}

/// What a write did.
#[derive(Debug)]
pub enum WriteOutcome {
    /// A create: `None` when the process does not exist.
    Created(Option<InstanceRecord>),
    /// An update, delete or restore.
    Written(Written),
}

/// A backend's way of applying a batch of writes.
#[async_trait]
pub trait BatchWriter: Send + Sync + 'static {
    /// Applies `writes` in order in one transaction, with their events and deliveries: all of
    /// them or, on error, none. Returns one outcome per write, in the same order.
    async fn apply(
        &self,
        writes: &[InstanceWrite],
        traces: &[Option<String>],
    ) -> Result<Vec<WriteOutcome>>;
}

struct Job {
    write: InstanceWrite,
    reply: oneshot::Sender<Result<WriteOutcome>>,
    /// The request's span, which the group commit's span links to (for traces).
    span: tracing::Span,
}

/// The handle a store keeps to its writer task. Dropping it (with the store) ends the task once
/// the queued writes are done.
pub struct GroupCommit {
    queue: mpsc::Sender<Job>,
}

impl GroupCommit {
    /// Starts the writer task on the current Tokio runtime.
    pub fn start(writer: impl BatchWriter) -> Self {
        let (queue, jobs) = mpsc::channel(QUEUE);
        tokio::spawn(run(writer, jobs));
        Self { queue }
    }

    /// `Instances::create_instance` through the group commit: `None` when the process does not
    /// exist.
    pub async fn create(
        &self,
        workspace: WorkspaceId,
        process: &ProcessName,
        data: &InstanceData,
        status: &InstanceStatus,
        by: &str,
    ) -> Result<Option<InstanceRecord>> {
        let write = InstanceWrite::Create {
            workspace,
            process: process.clone(),
            data: data.clone(),
            status: status.clone(),
            by: by.to_owned(),
        };
        match self.submit(write).await? {
            WriteOutcome::Created(record) => Ok(record),
            WriteOutcome::Written(_) => unreachable!("a create answers with Created"),
        }
    }

    /// `Instances::update_instance` through the group commit.
    pub async fn update(
        &self,
        workspace: WorkspaceId,
        id: &InstanceId,
        update: &InstanceUpdate,
        by: &str,
    ) -> Result<Written> {
        self.write(InstanceWrite::Update {
            workspace,
            id: id.clone(),
            update: update.clone(),
            by: by.to_owned(),
        })
        .await
    }

    /// `Instances::delete_instance` through the group commit.
    pub async fn delete(
        &self,
        workspace: WorkspaceId,
        id: &InstanceId,
        by: &str,
    ) -> Result<Written> {
        self.write(InstanceWrite::Delete {
            workspace,
            id: id.clone(),
            by: by.to_owned(),
        })
        .await
    }

    /// `Instances::restore_instance` through the group commit.
    pub async fn restore(
        &self,
        workspace: WorkspaceId,
        id: &InstanceId,
        by: &str,
    ) -> Result<Written> {
        self.write(InstanceWrite::Restore {
            workspace,
            id: id.clone(),
            by: by.to_owned(),
        })
        .await
    }

    async fn write(&self, write: InstanceWrite) -> Result<Written> {
        match self.submit(write).await? {
            WriteOutcome::Written(written) => Ok(written),
            WriteOutcome::Created(_) => unreachable!("only a create answers with Created"),
        }
    }

    /// Queues one write and waits until it committed (or failed).
    pub async fn submit(&self, write: InstanceWrite) -> Result<WriteOutcome> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job {
                write,
                reply,
                span: tracing::Span::current(),
            })
            .await
            .map_err(|_| StorageError::WriterStopped)?;
        answer.await.map_err(|_| StorageError::WriterStopped)?
    }
}

async fn run(writer: impl BatchWriter, mut jobs: mpsc::Receiver<Job>) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = jobs.recv().await {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // A request whose client gave up (its handler was dropped) is not written: its
        // client saw it fail and may retry, which must not make a duplicate.
        batch.retain(|job| !job.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let span = tracing::info_span!("group commit", writes = batch.len());
        crate::telemetry::link_from(&span, batch.iter().map(|job| &job.span));
        // Each write's request, as a `traceparent` its deliveries keep (none when tracing is off).
        let traces: Vec<Option<String>> = batch
            .iter()
            .map(|job| crate::telemetry::trace_parent(&job.span))
            .collect();
        let (writes, replies): (Vec<InstanceWrite>, Vec<_>) =
            batch.drain(..).map(|job| (job.write, job.reply)).unzip();
        match writer.apply(&writes, &traces).instrument(span).await {
            Ok(outcomes) => {
                debug_assert_eq!(outcomes.len(), replies.len());
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) if writes.len() == 1 => {
                let reply = replies.into_iter().next().expect("one reply per write");
                let _ = reply.send(Err(error));
            }
            Err(error) if error.outage().is_some() => {
                // The database is down or full: every write of the batch gets that answer at
                // once. Retrying each would keep requests open past their clients' patience
                // and commit writes whose clients saw them fail.
                let outage = error.outage().expect("checked");
                tracing::warn!(
                    writes = writes.len(),
                    error = %crate::error::error_chain(&error),
                    "a group commit failed: {outage}"
                );
                let mut replies = replies.into_iter();
                if let Some(first) = replies.next() {
                    let _ = first.send(Err(error));
                }
                for reply in replies {
                    let _ = reply.send(Err(StorageError::SharedFailure(outage)));
                }
            }
            Err(error) => {
                tracing::warn!(
                    writes = writes.len(),
                    error = %crate::error::error_chain(&error),
                    "a group commit failed; writing its requests one by one"
                );
                for ((write, trace), reply) in writes.iter().zip(&traces).zip(replies) {
                    if reply.is_closed() {
                        continue;
                    }
                    let outcome = writer
                        .apply(std::slice::from_ref(write), std::slice::from_ref(trace))
                        .await
                        .map(|mut outcomes| outcomes.remove(0));
                    let _ = reply.send(outcome);
                }
            }
        }
    }
}

impl InstanceWrite {
    /// The workspace written to.
    pub fn workspace(&self) -> WorkspaceId {
        match self {
            Self::Create { workspace, .. }
            | Self::Update { workspace, .. }
            | Self::Delete { workspace, .. }
            | Self::Restore { workspace, .. } => *workspace,
        }
    }

    /// The event a successful write fires.
    pub fn event(&self) -> EventType {
        match self {
            Self::Create { .. } | Self::Restore { .. } => EventType::Created,
            Self::Update { .. } => EventType::Updated,
            Self::Delete { .. } => EventType::Deleted,
        }
    }
}

/// The events a batch fires: for each write that changed an instance, its workspace, event, the
/// instance as written and its request's `traceparent`, in the order of the writes.
pub fn fired<'a>(
    writes: &'a [InstanceWrite],
    traces: &'a [Option<String>],
    outcomes: &'a [WriteOutcome],
) -> Vec<Fired<'a>> {
    writes
        .iter()
        .zip(outcomes)
        .enumerate()
        .filter_map(|(i, (write, outcome))| {
            let record = match outcome {
                WriteOutcome::Created(Some(record)) => record,
                WriteOutcome::Written(Written::Done(record)) => record.as_ref(),
                _ => return None,
            };
            let trace = traces.get(i).and_then(Option::as_deref);
            Some((write.workspace(), write.event(), record, trace))
        })
        .collect()
}

/// One event a batch fires: workspace, event, the instance as written, its request's trace.
pub type Fired<'a> = (WorkspaceId, EventType, &'a InstanceRecord, Option<&'a str>);

/// The snapshot an event keeps: the instance as JSON, except for `deleted`.
pub fn snapshot(event: EventType, record: &InstanceRecord) -> Option<String> {
    match event {
        EventType::Deleted => None,
        _ => Some(serde_json::to_string(record).unwrap_or_default()),
    }
}

/// A new instance of `process` numbered `number`.
pub fn new_record(
    process: &ProcessName,
    number: i64,
    data: &InstanceData,
    status: &InstanceStatus,
    by: &str,
    now: Millis,
) -> InstanceRecord {
    InstanceRecord {
        id: InstanceId::new(process, number),
        unique_id: crate::domain::UniqueId::generate().as_str().to_owned(),
        process_name: process.as_str().to_owned(),
        status: status.as_str().to_owned(),
        version: 1,
        data: data.clone(),
        created_at: now,
        created_by: by.to_owned(),
        modified_at: now,
        modified_by: by.to_owned(),
        deleted_at: None,
    }
}

/// Assigns instance numbers to the creates of a batch: for each process (in a fixed order, so
/// concurrent batches on other nodes lock counter rows in the same order), how many creates it
/// has. The backend reserves that many numbers with one counter update per process.
pub fn creates_per_process(writes: &[InstanceWrite]) -> Vec<(WorkspaceId, &ProcessName, i64)> {
    let mut counts: std::collections::BTreeMap<(i64, &str), (WorkspaceId, &ProcessName, i64)> =
        std::collections::BTreeMap::new();
    for write in writes {
        if let InstanceWrite::Create {
            workspace, process, ..
        } = write
        {
            counts
                .entry((workspace.0, process.as_str()))
                .or_insert((*workspace, process, 0))
                .2 += 1;
        }
    }
    counts.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Outage;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Records batch sizes; fails any batch holding a write by "poison".
    #[derive(Default)]
    struct Fake {
        batches: Mutex<Vec<usize>>,
        calls: AtomicUsize,
    }

    #[async_trait]
    impl BatchWriter for std::sync::Arc<Fake> {
        async fn apply(
            &self,
            writes: &[InstanceWrite],
            _traces: &[Option<String>],
        ) -> Result<Vec<WriteOutcome>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.batches.lock().unwrap().push(writes.len());
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            if writes
                .iter()
                .any(|w| matches!(w, InstanceWrite::Delete { by, .. } if by == "poison"))
            {
                // A constraint the database refuses: the batch is retried write by write.
                return Err(StorageError::Sqlite(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(19),
                    None,
                )));
            }
            if writes
                .iter()
                .any(|w| matches!(w, InstanceWrite::Delete { by, .. } if by == "outage"))
            {
                return Err(StorageError::Database(sqlx::Error::PoolTimedOut));
            }
            Ok(writes
                .iter()
                .map(|_| WriteOutcome::Written(Written::NotFound))
                .collect())
        }
    }

    fn delete(by: &str) -> InstanceWrite {
        InstanceWrite::Delete {
            workspace: WorkspaceId(1),
            id: InstanceId::parse("p-1").unwrap(),
            by: by.to_owned(),
        }
    }

    #[tokio::test]
    async fn concurrent_writes_share_a_commit_and_one_bad_write_fails_alone() {
        let fake = std::sync::Arc::new(Fake::default());
        let group = std::sync::Arc::new(GroupCommit::start(std::sync::Arc::clone(&fake)));
        let mut tasks = Vec::new();
        for i in 0..40 {
            let group = std::sync::Arc::clone(&group);
            let by = if i == 20 { "poison" } else { "someone" };
            tasks.push(tokio::spawn(async move { group.submit(delete(by)).await }));
        }
        let mut failed = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(WriteOutcome::Written(Written::NotFound)) => {}
                Ok(other) => panic!("unexpected outcome {other:?}"),
                Err(_) => failed += 1,
            }
        }
        assert_eq!(failed, 1, "only the poisoned write fails");
        let batches = fake.batches.lock().unwrap().clone();
        assert!(
            batches.iter().any(|&n| n > 1),
            "writes waiting together were committed together: {batches:?}"
        );
        assert!(batches.iter().all(|&n| n <= MAX_BATCH));
    }

    #[tokio::test]
    async fn a_database_outage_fails_the_whole_batch_at_once_without_retries() {
        let fake = std::sync::Arc::new(Fake::default());
        let group = std::sync::Arc::new(GroupCommit::start(std::sync::Arc::clone(&fake)));
        // Hold the writer with a first write, so the next ones queue up into one batch.
        let first = tokio::spawn({
            let group = std::sync::Arc::clone(&group);
            async move { group.submit(delete("someone")).await }
        });
        while fake.calls.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let mut tasks = Vec::new();
        for i in 0..10 {
            let group = std::sync::Arc::clone(&group);
            let by = if i == 0 { "outage" } else { "someone" };
            tasks.push(tokio::spawn(async move { group.submit(delete(by)).await }));
        }
        first.await.unwrap().unwrap();
        let mut outages = 0;
        for task in tasks {
            if let Err(e) = task.await.unwrap() {
                assert_eq!(e.outage(), Some(Outage::Unavailable), "{e}");
                outages += 1;
            }
        }
        let batches = fake.batches.lock().unwrap().clone();
        assert!(outages >= 1, "{batches:?}");
        let writes_applied: usize = batches.iter().sum();
        assert_eq!(
            writes_applied, 11,
            "no write was tried twice after the outage: {batches:?}"
        );
    }

    /// Blocks its first batch until released, and records every write it was given.
    #[derive(Default)]
    struct Gated {
        seen: Mutex<Vec<String>>,
        release: tokio::sync::Notify,
    }

    #[async_trait]
    impl BatchWriter for std::sync::Arc<Gated> {
        async fn apply(
            &self,
            writes: &[InstanceWrite],
            _traces: &[Option<String>],
        ) -> Result<Vec<WriteOutcome>> {
            let first = self.seen.lock().unwrap().is_empty();
            for w in writes {
                if let InstanceWrite::Delete { by, .. } = w {
                    self.seen.lock().unwrap().push(by.clone());
                }
            }
            if first {
                self.release.notified().await;
            }
            Ok(writes
                .iter()
                .map(|_| WriteOutcome::Written(Written::NotFound))
                .collect())
        }
    }

    #[tokio::test]
    async fn a_write_whose_client_gave_up_before_its_batch_is_never_applied() {
        let gated = std::sync::Arc::new(Gated::default());
        let group = std::sync::Arc::new(GroupCommit::start(std::sync::Arc::clone(&gated)));
        let first = tokio::spawn({
            let group = std::sync::Arc::clone(&group);
            async move { group.submit(delete("first")).await }
        });
        while gated.seen.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        // Queued behind the first write, then abandoned, as a handler dropped by hyper when
        // its client disconnects.
        let abandoned = tokio::spawn({
            let group = std::sync::Arc::clone(&group);
            async move { group.submit(delete("abandoned")).await }
        });
        let kept = tokio::spawn({
            let group = std::sync::Arc::clone(&group);
            async move { group.submit(delete("kept")).await }
        });
        while group.queue.capacity() > QUEUE - 2 {
            tokio::task::yield_now().await;
        }
        abandoned.abort();
        let _ = abandoned.await;
        gated.release.notify_one();
        first.await.unwrap().unwrap();
        kept.await.unwrap().unwrap();
        assert_eq!(*gated.seen.lock().unwrap(), ["first", "kept"]);
    }

    #[test]
    fn creates_are_counted_per_process_in_a_fixed_order() {
        let create = |ws: i64, p: &str| InstanceWrite::Create {
            workspace: WorkspaceId(ws),
            process: ProcessName::parse(p).unwrap(),
            data: InstanceData::empty(),
            status: InstanceStatus::default_status(),
            by: "a".into(),
        };
        let writes = vec![
            create(1, "zeta"),
            create(1, "alpha"),
            delete("x"),
            create(1, "zeta"),
            create(2, "alpha"),
        ];
        let counted: Vec<(i64, String, i64)> = creates_per_process(&writes)
            .into_iter()
            .map(|(w, p, n)| (w.0, p.as_str().to_owned(), n))
            .collect();
        assert_eq!(
            counted,
            vec![
                (1, "alpha".into(), 1),
                (1, "zeta".into(), 2),
                (2, "alpha".into(), 1)
            ]
        );
    }
}
