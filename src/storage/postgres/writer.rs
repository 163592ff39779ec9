//! The group commit's writer on PostgreSQL: a batch of instance writes, their events and their
//! deliveries in as few statements as the batch allows (decision 0002).

use super::*;

/// Applies batches of instance writes for [`GroupCommit`]: one transaction (one commit, one
/// fsync) per batch, one counter update per process (locked in a fixed order), one statement for
/// all new instances, one for all events with their deliveries, one per update, delete or
/// restore, and one `NOTIFY`.
pub(super) struct PgWriter {
    pub(super) pool: PgPool,
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
    async fn apply(&self, writes: &[InstanceWrite]) -> Result<Vec<WriteOutcome>> {
        let now = Millis::now();
        if let Some((workspace, process)) = creates_of_one_process(writes)
            && let Some(outcomes) = self
                .create_in_one_statement(workspace, process, writes, now)
                .await?
        {
            return Ok(outcomes);
        }
        let mut tx = self.pool.begin().await?;
        // Reserve the numbers of the creates: (process key, next number) per process.
        let mut numbers = std::collections::HashMap::new();
        for (workspace, process, count) in group::creates_per_process(writes) {
            let reserved: Option<(i64, i64)> = sqlx::query_as(
                "UPDATE processes SET next_number = next_number + $3 WHERE workspace_id = $1 AND name = $2
                 RETURNING id, next_number",
            )
            .bind(workspace.0)
            .bind(process.as_str())
            .bind(count)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((key, last)) = reserved {
                numbers.insert((workspace.0, process.as_str()), (key, last - count + 1));
            }
        }
        let mut outcomes = Vec::with_capacity(writes.len());
        let mut new = NewInstances::default();
        for write in writes {
            let outcome = match write {
                InstanceWrite::Create {
                    workspace,
                    process,
                    data,
                    status,
                    by,
                } => match numbers.get_mut(&(workspace.0, process.as_str())) {
                    None => WriteOutcome::Created(None),
                    Some((key, next)) => {
                        let record = group::new_record(process, *next, data, status, by, now);
                        new.workspace.push(workspace.0);
                        new.process.push(*key);
                        new.number.push(*next);
                        new.instance_id.push(record.id.as_str().to_owned());
                        new.unique_id.push(record.unique_id.clone());
                        new.data.push(data.to_json());
                        new.status.push(status.as_str().to_owned());
                        new.by.push(by.clone());
                        *next += 1;
                        WriteOutcome::Created(Some(record))
                    }
                },
                InstanceWrite::Update {
                    workspace,
                    id,
                    update,
                    by,
                } => {
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE instances SET data = $1, status = $2, version = version + 1, modified_at = $3, modified_by = $4
                         WHERE workspace_id = $5 AND instance_id = $6 AND version = $7 AND deleted_at IS NULL
                         RETURNING {INSTANCE_COLUMNS}"
                    )))
                    .bind(update.data.to_json())
                    .bind(update.status.as_str())
                    .bind(now.0)
                    .bind(by)
                    .bind(workspace.0)
                    .bind(id.as_str())
                    .bind(update.expected_version)
                    .fetch_optional(&mut *tx)
                    .await?;
                    written(&mut tx, row, *workspace, id, false).await?
                }
                InstanceWrite::Delete { workspace, id, by } => {
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE instances SET deleted_at = $1, deleted_by = $2
                         WHERE workspace_id = $3 AND instance_id = $4 AND deleted_at IS NULL
                         RETURNING {INSTANCE_COLUMNS}"
                    )))
                    .bind(now.0)
                    .bind(by)
                    .bind(workspace.0)
                    .bind(id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                    written(&mut tx, row, *workspace, id, false).await?
                }
                InstanceWrite::Restore { workspace, id, .. } => {
                    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "UPDATE instances SET deleted_at = NULL, deleted_by = NULL
                         WHERE workspace_id = $1 AND instance_id = $2 AND deleted_at IS NOT NULL
                         RETURNING {INSTANCE_COLUMNS}"
                    )))
                    .bind(workspace.0)
                    .bind(id.as_str())
                    .fetch_optional(&mut *tx)
                    .await?;
                    written(&mut tx, row, *workspace, id, true).await?
                }
            };
            outcomes.push(outcome);
        }
        fire(&mut tx, &new, &group::fired(writes, &outcomes), now).await?;
        tx.commit().await?;
        Ok(outcomes)
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
    /// Writes a batch of creates of one process in one statement, committed on its own: the
    /// number reservation, the instances, their events and deliveries, and the announcement.
    /// The general path takes four round trips (`BEGIN`, the reservation, the rest, `COMMIT`),
    /// each a wake-up of both processes; measured at 1,000 events/s, where most batches hold
    /// one create, the write took 4–5 ms of every event's latency.
    ///
    /// The instance IDs depend on the numbers reserved in the same statement, so PostgreSQL
    /// builds them (`<process>-<n>`, as `InstanceId::new`) and splices each into its event's
    /// snapshot, which Rust serialised with the ID left out: the ID is the snapshot's first
    /// field, and a process name needs no JSON escaping (lowercase letters, digits, dashes).
    async fn create_in_one_statement(
        &self,
        workspace: WorkspaceId,
        process: &ProcessName,
        writes: &[InstanceWrite],
        now: Millis,
    ) -> Result<Option<Vec<WriteOutcome>>> {
        let mut records = Vec::with_capacity(writes.len());
        let mut snapshot_tails = Vec::with_capacity(writes.len());
        let placeholder = InstanceId::new(process, 0);
        let id_prefix = format!(
            "{{\"id\":{}",
            serde_json::to_string(placeholder.as_str()).unwrap_or_default()
        );
        for write in writes {
            let InstanceWrite::Create {
                data, status, by, ..
            } = write
            else {
                unreachable!("creates_of_one_process checked the batch");
            };
            let record = group::new_record(process, 0, data, status, by, now);
            let snapshot = group::snapshot(EventType::Created, &record).unwrap_or_default();
            // Not expected: then the general path writes the batch.
            let Some(tail) = snapshot.strip_prefix(&id_prefix) else {
                return Ok(None);
            };
            snapshot_tails.push(tail.to_owned());
            records.push(record);
        }
        let unique_ids: Vec<&str> = records.iter().map(|r| r.unique_id.as_str()).collect();
        let data: Vec<String> = records.iter().map(|r| r.data.to_json()).collect();
        let statuses: Vec<&str> = records.iter().map(|r| r.status.as_str()).collect();
        let by: Vec<&str> = records.iter().map(|r| r.created_by.as_str()).collect();
        let count = i64::try_from(writes.len()).unwrap_or(i64::MAX);
        let first: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(&**CREATE_ONE_PROCESS_SQL))
            .bind(workspace.0)
            .bind(process.as_str())
            .bind(count)
            .bind(&unique_ids)
            .bind(&data)
            .bind(&statuses)
            .bind(&by)
            .bind(&snapshot_tails)
            .bind(now.0)
            .bind(HELD)
            .bind(CHANNEL)
            .fetch_optional(&self.pool)
            .await?;
        let Some(first) = first else {
            // No such process: nothing was written.
            return Ok(Some(
                writes.iter().map(|_| WriteOutcome::Created(None)).collect(),
            ));
        };
        Ok(Some(
            records
                .into_iter()
                .zip(first..)
                .map(|(mut record, number)| {
                    record.id = InstanceId::new(process, number);
                    WriteOutcome::Created(Some(record))
                })
                .collect(),
        ))
    }
}

/// The outcome of a compare-and-set write on an instance: the updated row, or why nothing
/// matched.
async fn written(
    tx: &mut sqlx::PgConnection,
    row: Option<PgRow>,
    workspace: WorkspaceId,
    id: &InstanceId,
    want_deleted: bool,
) -> Result<WriteOutcome> {
    let written = match row {
        Some(row) => Written::Done(Box::new(instance_from_row(&row)?)),
        None => PostgresStore::why_not_written(tx, workspace, id, want_deleted).await?,
    };
    Ok(WriteOutcome::Written(written))
}

/// The one-statement write of a batch of creates of one process (see
/// `PgWriter::create_in_one_statement`). `next_number` holds the last number given, as in the
/// general path. $1 workspace, $2 process name, $3 count, $4–$8 per create: unique ID, data,
/// status, author, snapshot without its ID; $9 now, $10 `HELD`, $11 channel.
static CREATE_ONE_PROCESS_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH reserved AS (
                UPDATE processes SET next_number = next_number + $3
                WHERE workspace_id = $1 AND name = $2
                RETURNING id, next_number - $3 + 1 AS first),
             req AS (
                SELECT r.id AS process_id, r.first + t.ord - 1 AS n, $2 || '-' || (r.first + t.ord - 1) AS i,
                       t.u, t.d, t.s, t.b, t.tail, t.ord
                FROM reserved r,
                     unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::text[])
                         WITH ORDINALITY AS t(u, d, s, b, tail, ord)),
             inst AS (
                INSERT INTO instances (workspace_id, process_id, number, instance_id, unique_id, data, status, version,
                                       created_at, created_by, modified_at, modified_by)
                SELECT $1, process_id, n, i, u, d, s, 1, $9, b, $9, b FROM req),
             ev AS (
                INSERT INTO events (workspace_id, event_type, instance_id, process_name, occurred_at, instance)
                SELECT $1, 'created', i, $2, $9, '{{\"id\":' || to_json(i)::text || tail FROM req
                WHERE {has_urls}
                ORDER BY ord
                RETURNING id, workspace_id, event_type, instance_id, process_name),
             {queued},
             announced AS (
                SELECT pg_notify($11, '') WHERE EXISTS (SELECT 1 FROM queued))
             SELECT r.first FROM reserved r WHERE (SELECT COUNT(*) FROM announced) >= 0",
        queued = queued_deliveries_cte("$9", "$10"),
        has_urls = has_urls_sql("$1", "'created'")
    )
});

/// The CTE `queued` that inserts, for each row of the CTE `ev` (inserted events), one pending
/// delivery per URL its event has enabled, held at once (`next_attempt_at` = `held`) if the URL
/// is paused, in the order of the events and the URLs. `now` and `held` are placeholders.
fn queued_deliveries_cte(now: &str, held: &str) -> String {
    format!(
        "queued AS (
            INSERT INTO deliveries (webhook_id, workspace_id, event_id, event_type, instance_id, process_name, url, host,
                                    status, attempts, next_attempt_at, created_at, updated_at, format)
            SELECT 'msg_' || lpad(to_hex({now}::bigint), 12, '0') || '7' || substr(replace(gen_random_uuid()::text, '-', ''), 14, 19),
                   u.workspace_id, ev.id, u.event_type,
                   ev.instance_id, ev.process_name, u.url, u.host,
                   'pending', 0, CASE WHEN x.state = 'open' THEN {held} ELSE {now} END, {now}, {now}, w.webhook_format
            FROM ev
            JOIN webhook_urls u ON u.workspace_id = ev.workspace_id AND u.event_type = ev.event_type
            JOIN webhook_events e ON e.workspace_id = u.workspace_id AND e.event_type = u.event_type
            JOIN workspaces w ON w.id = u.workspace_id
            LEFT JOIN destinations x ON x.workspace_id = u.workspace_id AND x.url = u.url
            WHERE e.enabled AND x.disabled_at IS NULL
            ORDER BY ev.id, u.position
            RETURNING 1)"
    )
}

/// The general write's last statement (see `fire`).
static FIRE_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "WITH inst AS (
            INSERT INTO instances (workspace_id, process_id, number, instance_id, unique_id, data, status, version,
                                   created_at, created_by, modified_at, modified_by)
            SELECT w, p, n, i, u, d, s, 1, $6, b, $6, b
            FROM unnest($9::bigint[], $10::bigint[], $11::bigint[], $12::text[], $13::text[], $14::text[],
                        $15::text[], $16::text[]) AS t(w, p, n, i, u, d, s, b)),
         ev AS (
            INSERT INTO events (workspace_id, event_type, instance_id, process_name, occurred_at, instance)
            SELECT w, e, i, p, $6, s
            FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])
                 WITH ORDINALITY AS t(w, e, i, p, s, ord)
            WHERE {has_urls}
            ORDER BY ord
            RETURNING id, workspace_id, event_type, instance_id, process_name),
         {queued}
         SELECT pg_notify($8, '') WHERE EXISTS (SELECT 1 FROM queued)",
        queued = queued_deliveries_cte("$6", "$7"),
        has_urls = has_urls_sql("t.w", "t.e")
    )
});

/// Writes the new instances of a batch, its events and, for each event, one pending delivery
/// per URL its event has enabled at this moment (held at once if the URL is paused), in the
/// order of the events and of the URLs, and announces them: one statement, one round trip.
async fn fire(
    tx: &mut sqlx::PgConnection,
    new: &NewInstances,
    fired: &[(WorkspaceId, EventType, &InstanceRecord)],
    now: Millis,
) -> Result<()> {
    if fired.is_empty() && new.number.is_empty() {
        return Ok(());
    }
    let workspaces: Vec<i64> = fired.iter().map(|(w, _, _)| w.0).collect();
    let events: Vec<&str> = fired.iter().map(|(_, e, _)| e.as_str()).collect();
    let ids: Vec<&str> = fired.iter().map(|(_, _, r)| r.id.as_str()).collect();
    let processes: Vec<&str> = fired
        .iter()
        .map(|(_, _, r)| r.process_name.as_str())
        .collect();
    let snapshots: Vec<Option<String>> = fired
        .iter()
        .map(|(_, e, r)| group::snapshot(*e, r))
        .collect();
    sqlx::query(sqlx::AssertSqlSafe(&**FIRE_SQL))
        .bind(&workspaces)
        .bind(&events)
        .bind(&ids)
        .bind(&processes)
        .bind(&snapshots)
        .bind(now.0)
        .bind(HELD)
        .bind(CHANNEL)
        .bind(&new.workspace)
        .bind(&new.process)
        .bind(&new.number)
        .bind(&new.instance_id)
        .bind(&new.unique_id)
        .bind(&new.data)
        .bind(&new.status)
        .bind(&new.by)
        .execute(&mut *tx)
        .await?;
    Ok(())
}
