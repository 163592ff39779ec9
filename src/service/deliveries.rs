//! The delivery log, its hourly outcomes, and redelivery.

use super::*;

impl Herald {
    /// Succeeded and failed attempts per hour over the last 24 hours, oldest first, 24 entries.
    pub async fn hourly_outcomes(&self, caller: &Caller) -> Result<Vec<(Millis, i64, i64)>> {
        require_webhook_manager(caller)?;
        let hour = 3_600_000;
        let now = Millis::now();
        let first = (now.0 / hour - 23) * hour;
        let rows = self
            .store
            .hourly_outcomes(caller.workspace_id, Millis(first))
            .await?;
        Ok((0..24)
            .map(|i| {
                let at = first + i * hour;
                let (ok, bad) = rows
                    .iter()
                    .find(|(h, _, _)| h.0 == at)
                    .map_or((0, 0), |(_, ok, bad)| (*ok, *bad));
                (Millis(at), ok, bad)
            })
            .collect())
    }

    pub async fn deliveries(
        &self,
        caller: &Caller,
        filter: &DeliveryFilter,
        cursor: Option<i64>,
        limit: i64,
    ) -> Result<Page<DeliveryRecord>> {
        require_webhook_manager(caller)?;
        Ok(self
            .store
            .deliveries(caller.workspace_id, filter, cursor, limit)
            .await?)
    }

    pub async fn delivery(
        &self,
        caller: &Caller,
        id: &DeliveryId,
    ) -> Result<(DeliveryRecord, Vec<AttemptRecord>)> {
        require_webhook_manager(caller)?;
        self.store
            .delivery(caller.workspace_id, id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("no delivery with ID {id}")))
    }

    /// Queues a new attempt now, with the same `webhook-id`, whatever the delivery's state.
    pub async fn redeliver(&self, caller: &Caller, id: &DeliveryId) -> Result<()> {
        require_webhook_manager(caller)?;
        if !self
            .store
            .redeliver(caller.workspace_id, id, Millis::now())
            .await?
        {
            return Err(Error::NotFound(format!("no delivery with ID {id}")));
        }
        self.announce();
        Ok(())
    }

    /// Redelivers every delivery matching a filter (at least one criterion); returns how many.
    pub async fn redeliver_matching(
        &self,
        caller: &Caller,
        filter: &DeliveryFilter,
    ) -> Result<u64> {
        require_webhook_manager(caller)?;
        let empty = filter.status.is_none()
            && filter.event_type.is_none()
            && filter.instance_id.is_none()
            && filter.url.is_none()
            && filter.since.is_none()
            && filter.until.is_none();
        if empty {
            return Err(Error::Invalid(
                "give at least one of status, eventType, instanceId, url, since, until".into(),
            ));
        }
        let n = self
            .store
            .redeliver_matching(caller.workspace_id, filter, Millis::now())
            .await?;
        tracing::info!(by = %caller.email, deliveries = n, "bulk redelivery");
        self.announce();
        Ok(n)
    }
}
