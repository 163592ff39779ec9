//! A value in the database that this build does not know (written by a newer Herald, or by
//! hand) is a decode error that names it, never read as some default; in a claim it holds back
//! only its own delivery.

use crate::db::TestDb;
use crate::storage::{create, process, settings, setup};
use herald::domain::Millis;
use herald::storage::{ClaimRequest, DeliveryFilter};
use std::time::Duration;

async fn an_unknown_event_type_or_format_is_a_decode_error(db: TestDb) {
    let store = db.store().await;
    let ws = setup(&store).await;
    store
        .save_webhook_settings(ws, &settings(&["https://a.example/"], &[], &[]))
        .await
        .unwrap();
    let p = process(&store, ws, "p").await;
    create(&store, ws, &p).await;
    create(&store, ws, &p).await;
    db.execute("UPDATE deliveries SET event_type = 'archived' WHERE instance_id = 'p-1'")
        .await;
    let now = Millis::now();
    let claim = || ClaimRequest {
        node: "node-a",
        now,
        lease_until: now.plus(Duration::from_secs(15)),
        limit: 10,
        per_host_cap: 8,
        full_hosts: &[],
        room_hosts: &[],
        rooms: &[],
        default_room: 8,
    };
    let claimed = store.claim_due(claim()).await.unwrap();
    let ids: Vec<&str> = claimed.iter().map(|c| c.instance_id.as_str()).collect();
    assert_eq!(ids, ["p-2"], "the unknown one is left out, the other sent");
    let err = format!(
        "{:?}",
        store
            .deliveries(ws, &DeliveryFilter::default(), None, 10)
            .await
            .unwrap_err()
    );
    assert!(err.contains("stored event type"), "{err}");
    db.execute(
        "UPDATE deliveries SET event_type = 'created', format = 'soap', lease_until = NULL
         WHERE instance_id = 'p-1'",
    )
    .await;
    // p-2 is leased already; p-1's format is unknown.
    assert!(store.claim_due(claim()).await.unwrap().is_empty());
}

on_both_backends!(
    #[tokio::test]
    an_unknown_event_type_or_format_is_a_decode_error
);
