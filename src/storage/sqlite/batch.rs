//! The group commit's statements on SQLite's writer thread ([`BatchStatements`]), with the SQL
//! texts `storage::batch` writes once for both backends. One statement per row: on this thread a
//! statement costs the SQLite engine only, a few microseconds, less than packing the rows into
//! JSON for one multi-row statement and unpacking them again (which took a quarter of this
//! thread's time, `perf`).

use super::super::HELD;
use super::super::batch::{self, BatchStatements, Bind, NewInstance};
use super::super::fanout::{self, Fanout, Target};
use super::super::{InstanceRecord, Result, WorkspaceId};
use super::health::numbered;
use crate::domain::{EventType, InstanceData, InstanceId, Millis, ProcessName};
use rusqlite::types::{ToSql, ToSqlOutput};
use rusqlite::{Connection, params};
use std::sync::LazyLock;

/// The batch's statements in a transaction of the writer thread.
pub(super) struct SqliteBatch<'c>(pub &'c Connection);

impl ToSql for Bind<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Bind::Int(value) => ToSqlOutput::from(value),
            Bind::Text(text) => ToSqlOutput::from(text),
        })
    }
}

/// The targets of a workspace's (`$1`) event type (`$2`), due at `$3` or held at `$4`.
static TARGETS_SQL: LazyLock<String> =
    LazyLock::new(|| fanout::targets_sql("$1", "$2", "$3", "$4"));

impl BatchStatements for SqliteBatch<'_> {
    async fn reserve(
        &mut self,
        workspace: WorkspaceId,
        process: &ProcessName,
        count: i64,
    ) -> Result<Option<(i64, i64)>> {
        let mut statement = numbered(
            self.0,
            batch::RESERVE_SQL,
            &[&workspace.0, &process.as_str(), &count],
        )?;
        let mut rows = statement.raw_query();
        Ok(match rows.next()? {
            Some(row) => Some((row.get(0)?, row.get(1)?)),
            None => None,
        })
    }

    async fn create(&mut self, new: NewInstance<'_>) -> Result<()> {
        let record = new.record;
        self.0
            .prepare_cached(
                "INSERT INTO instances (workspace_id, process_id, number, instance_id, unique_id, data, status, version,
                                        created_at, created_by, modified_at, modified_by)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9, ?8, ?9)",
            )?
            .execute(params![
                new.workspace.0,
                new.process_key,
                new.number,
                record.id.as_str(),
                record.unique_id,
                record.data.to_json(),
                record.status,
                record.created_at.0,
                record.created_by
            ])?;
        Ok(())
    }

    async fn compare_and_set(
        &mut self,
        sql: &str,
        binds: &[Bind<'_>],
    ) -> Result<Option<InstanceRecord>> {
        let values: Vec<&dyn ToSql> = binds.iter().map(|b| b as &dyn ToSql).collect();
        let mut statement = numbered(self.0, sql, &values)?;
        let mut rows = statement.raw_query();
        Ok(match rows.next()? {
            Some(row) => Some(instance_from(row)?),
            None => None,
        })
    }

    async fn deleted_at(
        &mut self,
        workspace: WorkspaceId,
        id: &InstanceId,
    ) -> Result<Option<Option<i64>>> {
        let mut statement = numbered(self.0, batch::STATE_SQL, &[&workspace.0, &id.as_str()])?;
        let mut rows = statement.raw_query();
        Ok(rows.next()?.map(|row| row.get(0)).transpose()?)
    }

    async fn targets(
        &mut self,
        pairs: &[(WorkspaceId, EventType)],
        now: Millis,
    ) -> Result<Vec<Vec<Target>>> {
        let mut all = Vec::with_capacity(pairs.len());
        for (workspace, event) in pairs {
            let mut statement = numbered(
                self.0,
                &TARGETS_SQL,
                &[&workspace.0, &event.as_str(), &now.0, &HELD],
            )?;
            let mut rows = statement.raw_query();
            let mut urls = Vec::new();
            while let Some(r) = rows.next()? {
                urls.push(Target {
                    url: r.get(0)?,
                    host: r.get(1)?,
                    format: r.get(2)?,
                    next_attempt_at: r.get(3)?,
                });
            }
            all.push(urls);
        }
        Ok(all)
    }

    async fn fire(&mut self, plan: &Fanout<'_>, now: Millis) -> Result<()> {
        if plan.events.is_empty() {
            return Ok(());
        }
        let mut insert_event = self.0.prepare_cached(
            "INSERT INTO events (workspace_id, event_type, instance_id, process_name, occurred_at, instance)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        let mut event_ids = Vec::with_capacity(plan.events.len());
        for event in &plan.events {
            insert_event.execute(params![
                event.workspace.0,
                event.event_type.as_str(),
                event.record.id.as_str(),
                event.record.process_name,
                now.0,
                event.snapshot
            ])?;
            event_ids.push(self.0.last_insert_rowid());
        }
        let mut insert_delivery = self.0.prepare_cached(
            "INSERT INTO deliveries (webhook_id, workspace_id, event_id, event_type, instance_id, process_name, url, host,
                                     status, attempts, next_attempt_at, created_at, updated_at, format, trace_parent)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'pending', 0, ?9, ?10, ?10, ?11, ?12)",
        )?;
        for delivery in &plan.deliveries {
            let event = &plan.events[delivery.event];
            insert_delivery.execute(params![
                delivery.webhook_id.as_str(),
                event.workspace.0,
                event_ids[delivery.event],
                event.event_type.as_str(),
                event.record.id.as_str(),
                event.record.process_name,
                delivery.target.url,
                delivery.target.host,
                delivery.target.next_attempt_at,
                now.0,
                delivery.target.format,
                event.trace_parent
            ])?;
        }
        Ok(())
    }
}

fn decode_error(e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}

/// An instance from a row holding its `INSTANCE_COLUMNS`.
fn instance_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<InstanceRecord> {
    let id_text: String = r.get("instance_id")?;
    let id = InstanceId::parse(&id_text).map_err(decode_error)?;
    let data: String = r.get("data")?;
    Ok(InstanceRecord {
        process_name: id.process_name().to_owned(),
        id,
        unique_id: r.get("unique_id")?,
        status: r.get("status")?,
        version: r.get("version")?,
        data: InstanceData::from_stored(&data).map_err(decode_error)?,
        created_at: Millis(r.get("created_at")?),
        created_by: r.get("created_by")?,
        modified_at: Millis(r.get("modified_at")?),
        modified_by: r.get("modified_by")?,
        deleted_at: r.get::<_, Option<i64>>("deleted_at")?.map(Millis),
    })
}
