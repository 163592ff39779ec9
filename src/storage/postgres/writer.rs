//! The group commit's writer on PostgreSQL: a batch of instance writes, their events and their
//! deliveries in as few statements as the batch allows (decision 0002). Every ID and snapshot is
//! made in Rust (`storage::fanout`); the statements only insert them.

use super::super::batch::{self, BatchStatements, Bind, NewInstance};
use super::super::fanout::{self, Fanout, Target};
use super::*;
use std::collections::HashMap;
use std::sync::Mutex;

/// Applies batches of instance writes for [`GroupCommit`]: one transaction (one commit, one
/// fsync) per batch, one counter update per process (locked in a fixed order), one read of the
/// batch's targets, one statement for all new instances, events and deliveries, one per update,
/// delete or restore, and one `NOTIFY`; or, for the usual batch, one statement in all
/// ([`PgWriter::create_in_one_statement`]).
pub(super) struct PgWriter {
    pool: PgPool,
    /// Each process's last instance number as this node last wrote or read it.
    numbers: Mutex<HashMap<(i64, String), i64>>,
    /// How many URLs each workspace's event type had when this node last wrote one.
    fanouts: Mutex<HashMap<(i64, EventType), i64>>,
}

/// New instances of a batch, column by column, for `unnest`.
#[derive(Default)]
struct NewInstances {
    workspace: Vec<i64>,
    process: Vec<i64>,
    number: Vec<i64>,
    instance_id: Vec<String>,
    unique_id: Vec<String>,
    data: Vec<String>,
    status: Vec<String>,
    by: Vec<String>,
}

#[async_trait]
impl BatchWriter for PgWriter {
    async fn apply(
        &self,
        writes: &[InstanceWrite],
        traces: &[Option<String>],
    ) -> Result<Vec<WriteOutcome>> {
        let now = Millis::now();
        if let Some((workspace, process)) = creates_of_one_process(writes)
            && let Some(outcomes) = self
                .create_in_one_statement(workspace, process, writes, traces, now)
                .await?
        {
            return Ok(outcomes);
        }
        let mut tx = self.pool.begin().await?;
        let outcomes = {
            let mut statements = PgBatch {
                writer: self,
                tx: &mut tx,
                new: NewInstances::default(),
            };
            batch::apply(&mut statements, writes, traces, now).await?
        };
        tx.commit().await?;
        Ok(outcomes)
    }
}

/// The general path's statements, in the batch's transaction: the new instances are kept and
/// inserted with the events and deliveries, in one statement ([`FIRE_SQL`]).
struct PgBatch<'w, 'c> {
    writer: &'w PgWriter,
    tx: &'c mut sqlx::PgConnection,
    new: NewInstances,
}

impl BatchStatements for PgBatch<'_, '_> {
    async fn reserve(
        &mut self,
        workspace: WorkspaceId,
        process: &ProcessName,
        count: i64,
    ) -> Result<Option<(i64, i64)>> {
        let reserved: Option<(i64, i64)> = sqlx::query_as(batch::RESERVE_SQL)
            .bind(workspace.0)
            .bind(process.as_str())
            .bind(count)
            .fetch_optional(&mut *self.tx)
            .await?;
        if let Some((_, last)) = reserved {
            self.writer
                .numbers_known()
                .insert((workspace.0, process.as_str().to_owned()), last);
        }
        Ok(reserved)
    }

    async fn create(&mut self, new: NewInstance<'_>) -> Result<()> {
        let (record, rows) = (new.record, &mut self.new);
        rows.workspace.push(new.workspace.0);
        rows.process.push(new.process_key);
        rows.number.push(new.number);
        rows.instance_id.push(record.id.as_str().to_owned());
        rows.unique_id.push(record.unique_id.clone());
        rows.data.push(record.data.to_json());
        rows.status.push(record.status.clone());
        rows.by.push(record.created_by.clone());
        Ok(())
    }

    async fn compare_and_set(
        &mut self,
        sql: &str,
        binds: &[Bind<'_>],
    ) -> Result<Option<InstanceRecord>> {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for bind in binds {
            query = match *bind {
                Bind::Int(value) => query.bind(value),
                Bind::Text(text) => query.bind(text),
            };
        }
        let row = query.fetch_optional(&mut *self.tx).await?;
        row.as_ref().map(instance_from_row).transpose()
    }

    async fn deleted_at(
        &mut self,
        workspace: WorkspaceId,
        id: &InstanceId,
    ) -> Result<Option<Option<i64>>> {
        let row: Option<(Option<i64>,)> = sqlx::query_as(batch::STATE_SQL)
            .bind(workspace.0)
            .bind(id.as_str())
            .fetch_optional(&mut *self.tx)
            .await?;
        Ok(row.map(|(deleted,)| deleted))
    }

    /// One statement for all pairs; each one's count is remembered as its fan-out.
    async fn targets(
        &mut self,
        pairs: &[(WorkspaceId, EventType)],
        now: Millis,
    ) -> Result<Vec<Vec<Target>>> {
        let workspaces: Vec<i64> = pairs.iter().map(|(w, _)| w.0).collect();
        let events: Vec<&str> = pairs.iter().map(|(_, e)| e.as_str()).collect();
        let rows: Vec<(i64, String, String, String, i64)> =
            sqlx::query_as(sqlx::AssertSqlSafe(&**TARGETS_SQL))
                .bind(&workspaces)
                .bind(&events)
                .bind(now.0)
                .bind(HELD)
                .fetch_all(&mut *self.tx)
                .await?;
        let mut targets: Vec<Vec<Target>> = pairs.iter().map(|_| Vec::new()).collect();
        for (ord, url, host, format, next_attempt_at) in rows {
            let urls = usize::try_from(ord - 1)
                .ok()
                .and_then(|i| targets.get_mut(i))
                .ok_or_else(|| sqlx::Error::Decode(format!("a target of pair {ord}").into()))?;
            urls.push(Target {
                url,
                host,
                format,
                next_attempt_at,
            });
        }
        let mut known = self.writer.fanouts_known();
        for ((workspace, event), urls) in pairs.iter().zip(&targets) {
            known.insert(
                (workspace.0, *event),
                i64::try_from(urls.len()).unwrap_or(i64::MAX),
            );
        }
        Ok(targets)
    }

    async fn fire(&mut self, plan: &Fanout<'_>, now: Millis) -> Result<()> {
        fire(self.tx, &self.new, plan, now).await
    }
}

/// The workspace and process of a batch made only of creates of one process (the usual batch:
/// a burst of new instances), which one statement can write.
fn creates_of_one_process(writes: &[InstanceWrite]) -> Option<(WorkspaceId, &ProcessName)> {
    let mut one = None;
    for write in writes {
        let InstanceWrite::Create {
            workspace, process, ..
        } = write
        else {
            return None;
        };
        match one {
            None => one = Some((*workspace, process)),
            Some((w, p)) if w == *workspace && p == process => {}
            Some(_) => return None,
        }
    }
    one
}

impl PgWriter {
    pub(super) fn new(pool: PgPool) -> Self {
        Self {
            pool,
            numbers: Mutex::default(),
            fanouts: Mutex::default(),
        }
    }

    fn numbers_known(&self) -> std::sync::MutexGuard<'_, HashMap<(i64, String), i64>> {
        self.numbers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fanouts_known(&self) -> std::sync::MutexGuard<'_, HashMap<(i64, EventType), i64>> {
        self.fanouts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes a batch of creates of one process in one statement, committed on its own: the
    /// number reservation, the instances, their events and deliveries, and the announcement;
    /// `None` when the general path must write it. The general path takes five round trips
    /// (`BEGIN`, the reservation, the targets, the rest, `COMMIT`), each a wake-up of both
    /// processes; measured at 1,000 events/s, where most batches hold one create, four of them
    /// took 4–5 ms of every event's latency.
    ///
    /// Rust makes the IDs, so it must know the numbers and how many deliveries each event makes
    /// before the statement runs: it takes them from what this node last wrote (the process's
    /// last number, the event type's URL count), and the statement writes only if both still
    /// hold (the number checked under the counter's row lock). Otherwise nothing is written and
    /// the general path, which reads both, writes the batch: on a node's first write to a
    /// process, after a settings change, or when another node created in the same process.
    async fn create_in_one_statement(
        &self,
        workspace: WorkspaceId,
        process: &ProcessName,
        writes: &[InstanceWrite],
        traces: &[Option<String>],
        now: Millis,
    ) -> Result<Option<Vec<WriteOutcome>>> {
        let key = (workspace.0, process.as_str().to_owned());
        let Some(last) = self.numbers_known().get(&key).copied() else {
            return Ok(None);
        };
        let Some(fanout) = self
            .fanouts_known()
            .get(&(workspace.0, EventType::Created))
            .copied()
        else {
            return Ok(None);
        };
        let count = i64::try_from(writes.len()).unwrap_or(i64::MAX);
        let mut records = Vec::with_capacity(writes.len());
        for (write, number) in writes.iter().zip(last + 1..) {
            let InstanceWrite::Create {
                data, status, by, ..
            } = write
            else {
                unreachable!("creates_of_one_process checked the batch");
            };
            records.push(group::new_record(process, number, data, status, by, now));
        }
        let numbers: Vec<i64> = (last + 1..=last + count).collect();
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        let unique_ids: Vec<&str> = records.iter().map(|r| r.unique_id.as_str()).collect();
        let data: Vec<String> = records.iter().map(|r| r.data.to_json()).collect();
        let statuses: Vec<&str> = records.iter().map(|r| r.status.as_str()).collect();
        let by: Vec<&str> = records.iter().map(|r| r.created_by.as_str()).collect();
        let snapshots: Vec<Option<String>> = records
            .iter()
            .map(|r| group::snapshot(EventType::Created, r))
            .collect();
        // `fanout` IDs per event; the statement takes the first as many as it has URLs.
        let webhook_ids: Vec<String> = (0..count * fanout)
            .map(|_| DeliveryId::created_at(now).as_str().to_owned())
            .collect();
        let answer: Option<(bool, i64)> =
            sqlx::query_as(sqlx::AssertSqlSafe(&**CREATE_ONE_PROCESS_SQL))
                .bind(workspace.0)
                .bind(process.as_str())
                .bind(count)
                .bind(last)
                .bind(fanout)
                .bind(&numbers)
                .bind(&ids)
                .bind(&unique_ids)
                .bind(&data)
                .bind(now.0)
                .bind(HELD)
                .bind(&statuses)
                .bind(&by)
                .bind(&snapshots)
                .bind(&webhook_ids)
                .bind(CHANNEL)
                .bind(traces)
                .fetch_optional(&self.pool)
                .await?;
        match answer {
            // No such process: nothing was written.
            None => Ok(Some(
                writes.iter().map(|_| WriteOutcome::Created(None)).collect(),
            )),
            Some((true, _)) => {
                self.numbers_known().insert(key, last + count);
                Ok(Some(
                    records
                        .into_iter()
                        .map(|r| WriteOutcome::Created(Some(r)))
                        .collect(),
                ))
            }
            Some((false, urls)) => {
                // What this node knew no longer holds; the general path reads both afresh.
                self.fanouts_known()
                    .insert((workspace.0, EventType::Created), urls);
                Ok(None)
            }
        }
    }
}

/// The targets of each (workspace, event type) pair in `$1`, `$2` (see `PgBatch::targets`),
/// due at `$3` or held at `$4`, with the pair's ordinal.
static TARGETS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "SELECT p.ord, t.url, t.host, t.format, t.next_attempt_at
         FROM unnest($1::bigint[], $2::text[]) WITH ORDINALITY AS p(w, e, ord),
              LATERAL ({}) t
         ORDER BY p.ord, t.position",
        fanout::targets_sql("p.w", "p.e", "$3", "$4")
    )
});

/// The one-statement write of a batch of creates of one process (see
/// `PgWriter::create_in_one_statement`). $1 workspace, $2 process name, $3 count, $4 the last
/// number as known, $5 the URLs per event as known; per create: $6 number, $7 instance ID, $8
/// unique ID, $9 data, $12 status, $13 author, $14 snapshot; $10 now, $11 `HELD`, $15 the
/// webhook IDs ($5 per create), $16 channel, $17 each create's `traceparent`. Answers whether
/// it wrote, and the URL count; no
/// row when the process does not exist.
static CREATE_ONE_PROCESS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH targets AS ({targets}),
             fan AS (SELECT COUNT(*) AS n FROM targets),
             reserved AS (
                UPDATE processes SET next_number = next_number + $3
                WHERE workspace_id = $1 AND name = $2 AND next_number = $4
                  AND (SELECT n FROM fan) = $5
                RETURNING id),
             inst AS (
                INSERT INTO instances (workspace_id, process_id, number, instance_id, unique_id, data, status, version,
                                       created_at, created_by, modified_at, modified_by)
                SELECT $1, r.id, t.n, t.i, t.u, t.d, t.s, 1, $10, t.b, $10, t.b
                FROM reserved r,
                     unnest($6::bigint[], $7::text[], $8::text[], $9::text[], $12::text[], $13::text[])
                         AS t(n, i, u, d, s, b)),
             ev AS (
                INSERT INTO events (workspace_id, event_type, instance_id, process_name, occurred_at, instance)
                SELECT $1, 'created', t.i, $2, $10, t.snapshot
                FROM reserved r, unnest($7::text[], $14::text[]) WITH ORDINALITY AS t(i, snapshot, ord)
                WHERE EXISTS (SELECT 1 FROM targets)
                ORDER BY t.ord
                RETURNING id, instance_id),
             numbered AS (SELECT id, instance_id, row_number() OVER (ORDER BY id) AS ord FROM ev),
             ranked AS (SELECT targets.*, row_number() OVER (ORDER BY position) AS rank FROM targets),
             queued AS (
                INSERT INTO deliveries (webhook_id, workspace_id, event_id, event_type, instance_id, process_name, url, host,
                                        status, attempts, next_attempt_at, created_at, updated_at, format, trace_parent)
                SELECT ($15::text[])[(n.ord - 1) * $5 + g.rank], $1, n.id, 'created', n.instance_id, $2, g.url, g.host,
                       'pending', 0, g.next_attempt_at, $10, $10, g.format, ($17::text[])[n.ord]
                FROM numbered n, ranked g
                ORDER BY n.ord, g.rank
                RETURNING 1),
             announced AS (
                SELECT pg_notify($16, '') WHERE EXISTS (SELECT 1 FROM queued))
         SELECT EXISTS (SELECT 1 FROM reserved), (SELECT n FROM fan)
         FROM processes WHERE workspace_id = $1 AND name = $2
           AND (SELECT COUNT(*) FROM announced) >= 0",
        targets = fanout::targets_sql("$1", "'created'", "$10", "$11")
    )
});

/// The general write's last statement (see `fire`).
static FIRE_SQL: &str = "WITH inst AS (
        INSERT INTO instances (workspace_id, process_id, number, instance_id, unique_id, data, status, version,
                               created_at, created_by, modified_at, modified_by)
        SELECT w, p, n, i, u, d, s, 1, $6, b, $6, b
        FROM unnest($8::bigint[], $9::bigint[], $10::bigint[], $11::text[], $12::text[], $13::text[],
                    $14::text[], $15::text[]) AS t(w, p, n, i, u, d, s, b)),
     ev AS (
        INSERT INTO events (workspace_id, event_type, instance_id, process_name, occurred_at, instance)
        SELECT w, e, i, p, $6, s
        FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])
             WITH ORDINALITY AS t(w, e, i, p, s, ord)
        ORDER BY ord
        RETURNING id, workspace_id, event_type, instance_id, process_name),
     numbered AS (SELECT ev.*, row_number() OVER (ORDER BY id) AS ord FROM ev),
     queued AS (
        INSERT INTO deliveries (webhook_id, workspace_id, event_id, event_type, instance_id, process_name, url, host,
                                status, attempts, next_attempt_at, created_at, updated_at, format, trace_parent)
        SELECT q.webhook_id, n.workspace_id, n.id, n.event_type, n.instance_id, n.process_name, q.url, q.host,
               'pending', 0, q.next_at, $6, $6, q.format, q.trace_parent
        FROM unnest($16::bigint[], $17::text[], $18::text[], $19::text[], $20::bigint[], $21::text[], $22::text[])
             WITH ORDINALITY AS q(event, webhook_id, url, host, next_at, format, trace_parent, ord)
        JOIN numbered n ON n.ord = q.event
        ORDER BY q.ord
        RETURNING 1)
     SELECT pg_notify($7, '') WHERE EXISTS (SELECT 1 FROM queued)";

/// Writes the new instances of a batch and the rows [`Fanout::plan`] made, and announces them:
/// one statement, one round trip.
async fn fire(
    tx: &mut sqlx::PgConnection,
    new: &NewInstances,
    plan: &Fanout<'_>,
    now: Millis,
) -> Result<()> {
    if plan.events.is_empty() && new.number.is_empty() {
        return Ok(());
    }
    let events = &plan.events;
    let workspaces: Vec<i64> = events.iter().map(|e| e.workspace.0).collect();
    let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
    let ids: Vec<&str> = events.iter().map(|e| e.record.id.as_str()).collect();
    let processes: Vec<&str> = events
        .iter()
        .map(|e| e.record.process_name.as_str())
        .collect();
    let snapshots: Vec<Option<&str>> = events.iter().map(|e| e.snapshot.as_deref()).collect();
    let deliveries = &plan.deliveries;
    // 1-based, as the statement numbers the events it inserted.
    let of_event: Vec<i64> = deliveries
        .iter()
        .map(|d| i64::try_from(d.event).unwrap_or(i64::MAX) + 1)
        .collect();
    let webhook_ids: Vec<&str> = deliveries.iter().map(|d| d.webhook_id.as_str()).collect();
    let urls: Vec<&str> = deliveries.iter().map(|d| d.target.url.as_str()).collect();
    let hosts: Vec<&str> = deliveries.iter().map(|d| d.target.host.as_str()).collect();
    let due: Vec<i64> = deliveries
        .iter()
        .map(|d| d.target.next_attempt_at)
        .collect();
    let formats: Vec<&str> = deliveries
        .iter()
        .map(|d| d.target.format.as_str())
        .collect();
    let traces: Vec<Option<&str>> = deliveries
        .iter()
        .map(|d| events[d.event].trace_parent)
        .collect();
    sqlx::query(FIRE_SQL)
        .bind(&workspaces)
        .bind(&types)
        .bind(&ids)
        .bind(&processes)
        .bind(&snapshots)
        .bind(now.0)
        .bind(CHANNEL)
        .bind(&new.workspace)
        .bind(&new.process)
        .bind(&new.number)
        .bind(&new.instance_id)
        .bind(&new.unique_id)
        .bind(&new.data)
        .bind(&new.status)
        .bind(&new.by)
        .bind(&of_event)
        .bind(&webhook_ids)
        .bind(&urls)
        .bind(&hosts)
        .bind(&due)
        .bind(&formats)
        .bind(&traces)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
