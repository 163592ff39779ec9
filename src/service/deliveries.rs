//! The delivery log, its hourly outcomes, redelivery and cancellation.

use super::*;
use crate::domain::{DeliveryStatus, webhook::redact};
use crate::storage::{Cancel, ExactUrls};

/// The delivery log's filters as a person typed them (query string, form or JSON body); an
/// empty field is no filter.
#[derive(Debug, Default, Clone, Copy)]
pub struct SearchText<'a> {
    pub status: Option<&'a str>,
    pub event_type: Option<&'a str>,
    pub instance_id: Option<&'a str>,
    pub url: Option<&'a str>,
    pub since: Option<&'a str>,
    pub until: Option<&'a str>,
}

impl SearchText<'_> {
    /// Refuses an empty field, for the API, where a filter left out is absent (the UI's forms
    /// send empty fields for "any").
    pub fn strict(self) -> Result<Self> {
        let fields = [
            ("status", self.status),
            ("eventType", self.event_type),
            ("instanceId", self.instance_id),
            ("url", self.url),
            ("since", self.since),
            ("until", self.until),
        ];
        match fields
            .into_iter()
            .find(|(_, v)| v.is_some_and(str::is_empty))
        {
            Some((name, _)) => Err(Error::Invalid(format!(
                "`{name}` is empty; leave it out instead"
            ))),
            None => Ok(self),
        }
    }
}

/// The delivery log's filters, parsed. `url` is a piece of a URL as Herald shows it, without
/// credentials or fragment, so a filter can never probe what the listing hides (issue 19,
/// item 9).
#[derive(Debug, Default, Clone)]
pub struct DeliverySearch {
    pub status: Option<DeliveryStatus>,
    pub event_type: Option<EventType>,
    pub instance_id: Option<InstanceId>,
    pub url: Option<String>,
    pub since: Option<Millis>,
    pub until: Option<Millis>,
}

impl DeliverySearch {
    pub fn parse(text: SearchText<'_>) -> Result<Self> {
        if let Some(url) = given(text.url) {
            crate::domain::text::single_line("the URL filter", url)?;
        }
        Ok(Self {
            status: given(text.status).map(DeliveryStatus::parse).transpose()?,
            event_type: given(text.event_type).map(EventType::parse).transpose()?,
            instance_id: given(text.instance_id).map(InstanceId::parse).transpose()?,
            url: given(text.url).map(str::to_owned),
            since: given(text.since).map(Millis::parse_rfc3339).transpose()?,
            until: given(text.until).map(Millis::parse_rfc3339).transpose()?,
        })
    }

    fn is_empty(&self) -> bool {
        self.status.is_none()
            && self.event_type.is_none()
            && self.instance_id.is_none()
            && self.url.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }
}

/// A filter field that was given, not left empty.
fn given(text: Option<&str>) -> Option<&str> {
    text.filter(|t| !t.is_empty())
}

impl Herald {
    /// The store's filter for a search, or `None` when no delivery can match it. The URL piece
    /// is matched here, against each URL as shown, and handed to the store as exact URLs.
    async fn log_filter(
        &self,
        caller: &Caller,
        search: &DeliverySearch,
    ) -> Result<Option<DeliveryFilter>> {
        let urls = match &search.url {
            None => None,
            Some(piece) => {
                let known = self.store.delivery_urls(caller.workspace_id).await?;
                let urls = ExactUrls::new(
                    known
                        .iter()
                        .filter(|url| redact(url).contains(piece.as_str()))
                        .map(String::as_str),
                );
                if urls.is_empty() {
                    return Ok(None);
                }
                Some(urls)
            }
        };
        Ok(Some(DeliveryFilter {
            status: search.status,
            event_type: search.event_type,
            instance_id: search.instance_id.as_ref().map(|i| i.as_str().to_owned()),
            urls,
            since: search.since,
            until: search.until,
        }))
    }
}

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
        search: &DeliverySearch,
        cursor: Option<i64>,
        limit: i64,
    ) -> Result<Page<DeliveryRecord>> {
        require_webhook_manager(caller)?;
        let Some(filter) = self.log_filter(caller, search).await? else {
            return Ok(Page {
                items: Vec::new(),
                next_cursor: None,
            });
        };
        Ok(self
            .store
            .deliveries(caller.workspace_id, &filter, cursor, limit)
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

    /// The filter of a bulk action, which needs at least one criterion; `None` when it can
    /// match nothing.
    async fn bulk_filter(
        &self,
        caller: &Caller,
        search: &DeliverySearch,
    ) -> Result<Option<DeliveryFilter>> {
        require_webhook_manager(caller)?;
        if search.is_empty() {
            return Err(Error::Invalid(
                "give at least one of status, eventType, instanceId, url, since, until".into(),
            ));
        }
        self.log_filter(caller, search).await
    }

    /// Redelivers every delivery matching a filter (at least one criterion); returns how many.
    pub async fn redeliver_matching(
        &self,
        caller: &Caller,
        search: &DeliverySearch,
    ) -> Result<u64> {
        let Some(filter) = self.bulk_filter(caller, search).await? else {
            return Ok(0);
        };
        let n = self
            .store
            .redeliver_matching(caller.workspace_id, &filter, Millis::now())
            .await?;
        tracing::info!(by = %caller.email, deliveries = n, "bulk redelivery");
        self.announce();
        Ok(n)
    }

    /// Cancels one delivery: it will not be sent (unless redelivered). Only a pending delivery
    /// whose attempt is not under way can be cancelled.
    pub async fn cancel_delivery(&self, caller: &Caller, id: &DeliveryId) -> Result<()> {
        require_webhook_manager(caller)?;
        match self
            .store
            .cancel(caller.workspace_id, id, Millis::now())
            .await?
        {
            Cancel::Cancelled => {
                tracing::info!(by = %caller.email, delivery = %id, "delivery cancelled");
                Ok(())
            }
            Cancel::NotFound => Err(Error::NotFound(format!("no delivery with ID {id}"))),
            Cancel::InFlight => Err(Error::Conflict {
                code: "delivery_in_flight",
                message: format!(
                    "delivery {id} is being attempted right now and cannot be called back; cancel it after this attempt if it is to be retried"
                ),
            }),
            Cancel::Finished(status) => Err(Error::Conflict {
                code: "delivery_not_pending",
                message: format!(
                    "delivery {id} is {}, not pending: there is nothing to cancel",
                    status.as_str()
                ),
            }),
        }
    }

    /// Cancels every pending delivery matching a filter (at least one criterion) whose attempt
    /// is not under way; returns how many.
    pub async fn cancel_matching(&self, caller: &Caller, search: &DeliverySearch) -> Result<u64> {
        let Some(filter) = self.bulk_filter(caller, search).await? else {
            return Ok(0);
        };
        let n = self
            .store
            .cancel_matching(caller.workspace_id, &filter, Millis::now())
            .await?;
        tracing::info!(by = %caller.email, deliveries = n, "bulk cancellation");
        Ok(n)
    }
}
