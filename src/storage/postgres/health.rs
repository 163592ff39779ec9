//! The circuit breaker's statements on PostgreSQL ([`HealthStatements`]), with the SQL texts
//! `storage::health` writes once for both backends.

use super::super::health::{self, GONE_ERROR, GONE_REASON, HealthStatements};
use super::super::{
    BREAKER_CHUNK, BreakerStep, HELD, HOLD_CHUNK, Result, WorkspaceId, hold_sql, release_held_sql,
};
use crate::domain::{Health, Millis};
use std::time::Duration;

/// The breaker's statements in a transaction on the queue pool.
pub(super) struct PgHealth<'c>(pub &'c mut sqlx::PgConnection);

impl HealthStatements for PgHealth<'_> {
    async fn count_failure(
        &mut self,
        workspace: WorkspaceId,
        url: &str,
        now: Millis,
        error: Option<&str>,
    ) -> Result<Health> {
        let (state, failures, interval, until, disabled): (
            String,
            i64,
            i64,
            Option<i64>,
            Option<i64>,
        ) = sqlx::query_as(health::COUNT_FAILURE_SQL)
            .bind(workspace.0)
            .bind(url)
            .bind(now.0)
            .bind(error)
            .fetch_one(&mut *self.0)
            .await?;
        Ok(health::health_from_row(
            &state, failures, interval, until, disabled,
        ))
    }

    async fn close(&mut self, workspace: WorkspaceId, url: &str, now: Millis) -> Result<bool> {
        let n = sqlx::query(health::CLOSE_SQL)
            .bind(now.0)
            .bind(workspace.0)
            .bind(url)
            .execute(&mut *self.0)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    async fn open(
        &mut self,
        workspace: WorkspaceId,
        url: &str,
        until: Millis,
        interval: Duration,
    ) -> Result<()> {
        sqlx::query(health::OPEN_SQL)
            .bind(i64::try_from(interval.as_millis()).unwrap_or(i64::MAX))
            .bind(until.0)
            .bind(workspace.0)
            .bind(url)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn requeue(&mut self, key: i64) -> Result<()> {
        sqlx::query(health::REQUEUE_SQL)
            .bind(HELD)
            .bind(key)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn disable(&mut self, workspace: WorkspaceId, url: &str, now: Millis) -> Result<()> {
        sqlx::query(health::DISABLE_SQL)
            .bind(now.0)
            .bind(GONE_REASON)
            .bind(workspace.0)
            .bind(url)
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn chunk(
        &mut self,
        step: BreakerStep,
        workspace: WorkspaceId,
        url: &str,
        now: Millis,
    ) -> Result<bool> {
        let (moved, size) = match step {
            BreakerStep::Hold => match crate::domain::CallbackUrl::parse(url) {
                Ok(parsed) => (
                    sqlx::query(sqlx::AssertSqlSafe(hold_sql('$')))
                        .bind(parsed.host_key())
                        .bind(workspace.0)
                        .bind(url)
                        .bind(HOLD_CHUNK)
                        .execute(&mut *self.0)
                        .await?
                        .rows_affected(),
                    HOLD_CHUNK,
                ),
                Err(_) => {
                    sqlx::query(health::HOLD_UNPARSED_SQL)
                        .bind(HELD)
                        .bind(workspace.0)
                        .bind(url)
                        .execute(&mut *self.0)
                        .await?;
                    return Ok(false);
                }
            },
            BreakerStep::Release => (
                sqlx::query(sqlx::AssertSqlSafe(release_held_sql('$')))
                    .bind(now.0)
                    .bind(workspace.0)
                    .bind(url)
                    .bind(BREAKER_CHUNK)
                    .execute(&mut *self.0)
                    .await?
                    .rows_affected(),
                BREAKER_CHUNK,
            ),
            BreakerStep::FailGone => (
                sqlx::query(health::FAIL_GONE_SQL)
                    .bind(now.0)
                    .bind(GONE_ERROR)
                    .bind(workspace.0)
                    .bind(url)
                    .bind(BREAKER_CHUNK)
                    .execute(&mut *self.0)
                    .await?
                    .rows_affected(),
                BREAKER_CHUNK,
            ),
        };
        Ok(moved as i64 == size)
    }

    async fn still(
        &mut self,
        step: BreakerStep,
        workspace: WorkspaceId,
        url: &str,
    ) -> Result<bool> {
        // Locking the breaker's row orders this chunk with the result that would change the
        // breaker again: that result's hold or release then runs after this chunk and sees what
        // it did.
        let (sql, state) = health::still_sql(step);
        let sql = format!("{sql} FOR UPDATE");
        let mut query = sqlx::query_scalar::<_, i32>(sqlx::AssertSqlSafe(sql))
            .bind(workspace.0)
            .bind(url);
        if let Some(state) = state {
            query = query.bind(state);
        }
        Ok(query.fetch_optional(&mut *self.0).await?.is_some())
    }
}
