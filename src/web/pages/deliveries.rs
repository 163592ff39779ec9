//! The delivery log, one delivery with its attempts, redelivery and cancellation.

use super::*;

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeliveryQuery {
    status: Option<String>,
    event_type: Option<String>,
    url: Option<String>,
    cursor: Option<i64>,
}

impl DeliveryQuery {
    /// The list's filters, parsed.
    fn search(&self) -> Result<DeliverySearch, Error> {
        DeliverySearch::parse(SearchText {
            status: self.status.as_deref(),
            event_type: self.event_type.as_deref(),
            url: self.url.as_deref(),
            ..SearchText::default()
        })
    }
}

pub(super) async fn deliveries(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Query(q): Query<DeliveryQuery>,
) -> Response {
    deliveries_page(&herald, &s, &q, "").await
}

/// Cancels what the list's filters match (the form sends them back).
pub(super) async fn cancel_matching(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Form(form): Form<Fields>,
) -> Response {
    if let Some(r) = check_csrf(&s, &form) {
        return r;
    }
    let given = |name: &str| Some(field(&form, name).to_owned()).filter(|v| !v.is_empty());
    let q = DeliveryQuery {
        status: given("status"),
        event_type: given("eventType"),
        url: given("url"),
        cursor: None,
    };
    let result = async {
        let search = q.search()?;
        herald.cancel_matching(&s.caller, &search).await
    }
    .await;
    match result {
        Ok(n) => {
            let flash = match n {
                1 => "Cancelled 1 pending delivery.".to_owned(),
                n => format!("Cancelled {n} pending deliveries."),
            };
            deliveries_page(&herald, &s, &q, &flash).await
        }
        Err(e) => error_page(Some(&s), e),
    }
}

async fn deliveries_page(
    herald: &Herald,
    s: &SessionRecord,
    q: &DeliveryQuery,
    flash: &str,
) -> Response {
    if let Some(r) = require_manager(s) {
        return r;
    }
    let result = async {
        let search = q.search()?;
        let page = herald.deliveries(&s.caller, &search, q.cursor, 50).await?;
        let chart = herald.hourly_outcomes(&s.caller).await?;
        Ok::<_, Error>((page, chart))
    }
    .await;
    let (list, chart) = match result {
        Ok(v) => v,
        Err(e) => return error_page(Some(s), e),
    };
    let items: Vec<Value> = list
        .items
        .into_iter()
        .map(|d| to_json(&crate::api::deliveries_view(d)))
        .collect();
    let most = chart
        .iter()
        .map(|(_, ok, bad)| (*ok).max(*bad))
        .max()
        .unwrap_or(0)
        .max(1);
    let bars: Vec<Value> = chart
        .iter()
        .enumerate()
        .map(|(i, (at, ok, bad))| {
            let h = |n: i64| (n * 90 / most).max(i64::from(n > 0));
            let label = at.to_rfc3339().get(11..16).unwrap_or_default().to_owned();
            json!({"x": i * 20, "ok": ok, "bad": bad, "ok_h": h(*ok), "ok_y": 100 - h(*ok), "bad_h": h(*bad), "bad_y": 100 - h(*bad), "label": label})
        })
        .collect();
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("status", q.status.as_deref().unwrap_or_default())
        .append_pair("eventType", q.event_type.as_deref().unwrap_or_default())
        .append_pair("url", q.url.as_deref().unwrap_or_default())
        .finish();
    page(
        "deliveries.html",
        s,
        "developer",
        context! {
            deliveries => items,
            chart => bars,
            flash => flash,
            next_cursor => list.next_cursor,
            query => query,
            filter => json!({
                "status": q.status.clone().unwrap_or_default(),
                "eventType": q.event_type.clone().unwrap_or_default(),
                "url": q.url.clone().unwrap_or_default(),
            }),
        },
    )
}

pub(super) async fn delivery(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Path(id): Path<String>,
) -> Response {
    delivery_page(&herald, &s, &id, "").await
}

pub(super) async fn delivery_page(
    herald: &Herald,
    s: &SessionRecord,
    id: &str,
    flash: &str,
) -> Response {
    let result = async {
        let id = DeliveryId::parse(id)?;
        herald.delivery(&s.caller, &id).await
    }
    .await;
    match result {
        Ok((d, attempts)) => {
            let mut view = to_json(&crate::api::deliveries_view(d));
            view["attempts"] = to_json(
                &attempts
                    .into_iter()
                    .map(crate::api::attempt_view)
                    .collect::<Vec<_>>(),
            );
            page(
                "delivery.html",
                s,
                "developer",
                context! { d => view, flash => flash },
            )
        }
        Err(e) => error_page(Some(s), e),
    }
}

pub(super) async fn redeliver(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Path(id): Path<String>,
    Form(form): Form<Fields>,
) -> Response {
    delivery_action(&herald, &s, &id, &form, Action::Redeliver).await
}

pub(super) async fn cancel(
    State(herald): State<Herald>,
    UiSession(s): UiSession,
    Path(id): Path<String>,
    Form(form): Form<Fields>,
) -> Response {
    delivery_action(&herald, &s, &id, &form, Action::Cancel).await
}

/// The buttons of a delivery's page.
#[derive(Clone, Copy)]
enum Action {
    Redeliver,
    Cancel,
}

/// Checks the form, does `action` and shows the delivery again with what it did.
async fn delivery_action(
    herald: &Herald,
    s: &SessionRecord,
    id: &str,
    form: &Fields,
    action: Action,
) -> Response {
    if let Some(r) = check_csrf(s, form) {
        return r;
    }
    let result = async {
        let id = DeliveryId::parse(id)?;
        match action {
            Action::Redeliver => herald.redeliver(&s.caller, &id).await,
            Action::Cancel => herald.cancel_delivery(&s.caller, &id).await,
        }
    }
    .await;
    let done = match action {
        Action::Redeliver => {
            "Redelivery queued: a new attempt with the same webhook-id is on its way."
        }
        Action::Cancel => "Cancelled: this delivery will not be sent unless you redeliver it.",
    };
    match result {
        Ok(()) => delivery_page(herald, s, id, done).await,
        Err(e) => error_page(Some(s), e),
    }
}
