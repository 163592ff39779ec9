//! What a group commit writes for its events: one delivery per URL as the settings stand when the
//! write commits, every ID made once, and instance numbers without gaps, also when the settings
//! change between writes and when two nodes create in the same process.

use crate::db::TestDb;
use crate::storage::{behind_herald, create, process, settings, setup};
use herald::domain::{DeliveryId, ProcessName};
use herald::storage::{Store, WorkspaceId};
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

/// The URLs each instance's `created` deliveries went to, in the queue's order, after checking
/// every webhook ID and that each event's snapshot names its instance.
async fn deliveries_by_instance(db: &TestDb) -> BTreeMap<String, Vec<String>> {
    let rows: Vec<(String, String, String, i64)> = behind_herald(
        db,
        "SELECT instance_id, url, webhook_id, created_at FROM deliveries ORDER BY id",
    )
    .await;
    let ids: HashSet<&str> = rows.iter().map(|(_, _, id, _)| id.as_str()).collect();
    assert_eq!(ids.len(), rows.len(), "every webhook ID is different");
    let mut by_instance: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (instance, url, webhook_id, created_at) in rows {
        let id = DeliveryId::parse(&webhook_id).unwrap();
        let millis = i64::from_str_radix(&id.as_str()[4..16], 16).unwrap();
        assert_eq!(millis, created_at, "{id} starts with its creation time");
        by_instance.entry(instance).or_default().push(url);
    }
    let snapshots: Vec<(String, String)> =
        behind_herald(db, "SELECT instance_id, instance FROM events").await;
    for (instance, snapshot) in snapshots {
        let json: serde_json::Value = serde_json::from_str(&snapshot).unwrap();
        assert_eq!(json["id"], instance.as_str(), "{snapshot}");
    }
    by_instance
}

async fn creates(store: &Arc<dyn Store>, ws: WorkspaceId, p: &ProcessName, n: usize) {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (store, p) = (Arc::clone(store), p.clone());
            tokio::spawn(async move { create(&store, ws, &p).await })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
}

/// Creates one after another and in bursts, with the `created` URLs changed between them: each
/// instance gets the URLs saved before it, in their order.
async fn each_create_gets_the_urls_saved_before_it(db: TestDb) {
    let store = db.store().await;
    let ws = setup(&store).await;
    let p = process(&store, ws, "p").await;
    let one = ["https://a.example/"];
    let three = [
        "https://b.example/",
        "https://a.example/",
        "https://c.example/",
    ];
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut number = 0;
    let mut expect = |count: usize, urls: &[&str]| {
        for _ in 0..count {
            number += 1;
            if !urls.is_empty() {
                expected.insert(
                    format!("p-{number}"),
                    urls.iter().map(|u| (*u).to_owned()).collect(),
                );
            }
        }
    };
    for (urls, one_by_one, burst) in [
        (&one[..], 3, 10),
        (&three[..], 2, 12),
        (&[][..], 2, 5),
        (&one[..], 1, 0),
        (&three[..], 0, 20),
    ] {
        store
            .save_webhook_settings(ws, &settings(urls, &[], &[]))
            .await
            .unwrap();
        for _ in 0..one_by_one {
            create(&store, ws, &p).await;
        }
        creates(&store, ws, &p, burst).await;
        expect(one_by_one + burst, urls);
    }
    let numbers: Vec<(i64,)> =
        behind_herald(&db, "SELECT number FROM instances ORDER BY number").await;
    assert_eq!(
        numbers.into_iter().map(|(n,)| n).collect::<Vec<_>>(),
        (1..=number).collect::<Vec<i64>>(),
        "numbered without gaps"
    );
    assert_eq!(deliveries_by_instance(&db).await, expected);
}

on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    each_create_gets_the_urls_saved_before_it
);

/// Two nodes on one database create in the same process, in turns and at once, with the URLs
/// changed on one of them: numbers stay gap-free and unique, and every instance gets the URLs
/// of the moment.
async fn two_nodes_creating_in_one_process_number_without_gaps(db: TestDb) {
    let a = db.store().await;
    let ws = setup(&a).await;
    let b = db.store().await;
    let p = process(&a, ws, "p").await;
    a.save_webhook_settings(ws, &settings(&["https://a.example/"], &[], &[]))
        .await
        .unwrap();
    for round in 0..6 {
        let (first, second) = if round % 2 == 0 { (&a, &b) } else { (&b, &a) };
        create(first, ws, &p).await;
        create(second, ws, &p).await;
        tokio::join!(creates(first, ws, &p, 5), creates(second, ws, &p, 5));
        if round == 3 {
            // Saved on node a: node b's next writes must see both URLs all the same.
            a.save_webhook_settings(
                ws,
                &settings(&["https://a.example/", "https://b.example/"], &[], &[]),
            )
            .await
            .unwrap();
        }
    }
    let numbers: Vec<(i64,)> =
        behind_herald(&db, "SELECT number FROM instances ORDER BY number").await;
    assert_eq!(
        numbers.into_iter().map(|(n,)| n).collect::<Vec<_>>(),
        (1..=72).collect::<Vec<i64>>()
    );
    let by_instance = deliveries_by_instance(&db).await;
    assert_eq!(by_instance.len(), 72);
    let two: Vec<String> = vec!["https://a.example/".into(), "https://b.example/".into()];
    for n in 1..=72 {
        let urls = &by_instance[&format!("p-{n}")];
        if n > 48 {
            assert_eq!(urls, &two, "p-{n}, created after the save");
        } else {
            assert_eq!(urls, &two[..1], "p-{n}, created before the save");
        }
    }
}

on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    two_nodes_creating_in_one_process_number_without_gaps
);
