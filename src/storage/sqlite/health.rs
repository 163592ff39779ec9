//! The circuit breaker's statements on SQLite's writer thread ([`HealthStatements`]), with the
//! SQL texts `storage::health` writes once for both backends.

use super::super::health::{self, GONE_ERROR, GONE_REASON, HealthStatements};
use super::super::{BREAKER_CHUNK, BreakerStep, HELD, HOLD_CHUNK, Result, WorkspaceId};
use crate::domain::{Health, Millis};
use rusqlite::{CachedStatement, Connection, ToSql, params};
use std::future::Future;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// The breaker's statements in a transaction of the writer thread.
pub(super) struct SqliteHealth<'c>(pub &'c Connection);

/// Runs a future that never waits. Every statement of [`SqliteHealth`] is a synchronous call, so
/// the shared (async) breaker loop finishes in its first poll, on the writer thread.
pub(super) fn run_ready<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => unreachable!("SQLite's breaker statements never wait"),
    }
}

/// A cached statement with `$N` parameters bound by their numbers. SQLite numbers `$N`
/// parameters in the order they first appear, not by N, so they are bound by name here, as sqlx
/// does; this lets the writer thread run the SQL texts written for both backends.
pub(super) fn numbered<'c>(
    conn: &'c Connection,
    sql: &str,
    values: &[&dyn ToSql],
) -> rusqlite::Result<CachedStatement<'c>> {
    let mut statement = conn.prepare_cached(sql)?;
    for index in 1..=statement.parameter_count() {
        let name = statement.parameter_name(index).unwrap_or("?");
        let number = name
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| (1..=values.len()).contains(n))
            .ok_or_else(|| rusqlite::Error::InvalidParameterName(name.to_owned()))?;
        statement.raw_bind_parameter(index, values[number - 1])?;
    }
    Ok(statement)
}

fn execute(conn: &Connection, sql: &str, values: &[&dyn ToSql]) -> rusqlite::Result<usize> {
    numbered(conn, sql, values)?.raw_execute()
}

impl HealthStatements for SqliteHealth<'_> {
    async fn count_failure(
        &mut self,
        workspace: WorkspaceId,
        url: &str,
        now: Millis,
        error: Option<&str>,
    ) -> Result<Health> {
        let mut statement = numbered(
            self.0,
            health::COUNT_FAILURE_SQL,
            &[&workspace.0, &url, &now.0, &error],
        )?;
        let mut rows = statement.raw_query();
        let row = rows.next()?.ok_or(rusqlite::Error::QueryReturnedNoRows)?;
        let state: String = row.get(0)?;
        Ok(health::health_from_row(
            &state,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
        ))
    }

    async fn close(&mut self, workspace: WorkspaceId, url: &str, now: Millis) -> Result<bool> {
        Ok(execute(self.0, health::CLOSE_SQL, &[&now.0, &workspace.0, &url])? > 0)
    }

    async fn open(
        &mut self,
        workspace: WorkspaceId,
        url: &str,
        until: Millis,
        interval: Duration,
    ) -> Result<()> {
        let interval = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        execute(
            self.0,
            health::OPEN_SQL,
            &[&interval, &until.0, &workspace.0, &url],
        )?;
        Ok(())
    }

    async fn requeue(&mut self, key: i64) -> Result<()> {
        execute(self.0, health::REQUEUE_SQL, &[&HELD, &key])?;
        Ok(())
    }

    async fn disable(&mut self, workspace: WorkspaceId, url: &str, now: Millis) -> Result<()> {
        execute(
            self.0,
            health::DISABLE_SQL,
            &[&now.0, &GONE_REASON, &workspace.0, &url],
        )?;
        Ok(())
    }

    async fn chunk(
        &mut self,
        step: BreakerStep,
        workspace: WorkspaceId,
        url: &str,
        now: Millis,
    ) -> Result<bool> {
        Ok(match step {
            BreakerStep::Hold => hold_chunk(self.0, workspace, url)?,
            BreakerStep::Release => {
                let n = self
                    .0
                    .prepare_cached(&super::super::release_held_sql('?'))?
                    .execute(params![now.0, workspace.0, url, BREAKER_CHUNK])?;
                n as i64 == BREAKER_CHUNK
            }
            BreakerStep::FailGone => {
                let n = execute(
                    self.0,
                    health::FAIL_GONE_SQL,
                    &[&now.0, &GONE_ERROR, &workspace.0, &url, &BREAKER_CHUNK],
                )?;
                n as i64 == BREAKER_CHUNK
            }
        })
    }

    async fn still(
        &mut self,
        step: BreakerStep,
        workspace: WorkspaceId,
        url: &str,
    ) -> Result<bool> {
        let (sql, state) = health::still_sql(step);
        let mut statement = match state {
            Some(state) => numbered(self.0, sql, &[&workspace.0, &url, &state])?,
            None => numbered(self.0, sql, &[&workspace.0, &url])?,
        };
        Ok(statement.raw_query().next()?.is_some())
    }
}

/// Holds up to [`HOLD_CHUNK`] pending deliveries of a URL; whether more may remain.
fn hold_chunk(tx: &Connection, workspace: WorkspaceId, url: &str) -> rusqlite::Result<bool> {
    match crate::domain::CallbackUrl::parse(url) {
        Ok(parsed) => {
            let n = tx
                .prepare_cached(&super::super::hold_sql('?'))?
                .execute(params![parsed.host_key(), workspace.0, url, HOLD_CHUNK])?;
            Ok(n as i64 == HOLD_CHUNK)
        }
        Err(_) => {
            execute(tx, health::HOLD_UNPARSED_SQL, &[&HELD, &workspace.0, &url])?;
            Ok(false)
        }
    }
}
