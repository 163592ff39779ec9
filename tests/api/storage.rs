//! The storage conformance suite: every `Store` operation, written once, run against SQLite and
//! PostgreSQL (each test on a fresh database).

use crate::db::{TestDb, postgres_skipped};
use herald::domain::{
    AttemptOutcome, BreakerPolicy, CallbackUrl, DeliveryStatus, Email, EventType, InstanceData,
    InstanceId, InstanceStatus, Millis, ProcessName, ProcessTitle, Role, Signal, TokenName,
    TokenScope, WebhookSettings,
};
use herald::storage::{
    AttemptRecord, AttemptResult, BREAKER_CHUNK, BreakerStep, ClaimRequest, DeliveryFilter,
    ExactUrls, HELD, HOLD_CHUNK, InstanceUpdate, NewToken, NewUser, NextStep, Pruned, Store,
    Unfinished, UserChange, UserId, WorkspaceId, Written,
};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Runs each named test against both backends.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = crate::db::TestDb::sqlite();
                    super::$name(db.store().await).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    if crate::db::postgres_skipped() {
                        return;
                    }
                    let db = crate::db::TestDb::postgres().await;
                    super::$name(db.store().await).await;
                }
            )*
        }
    };
}

conformance!(
    bootstrap_happens_once_and_tokens_resolve,
    settings_round_trip,
    processes_are_unique_per_workspace,
    concurrent_creates_are_numbered_gap_free,
    updates_are_compare_and_set,
    delete_and_restore_move_through_the_recycle_bin,
    the_outbox_queues_one_delivery_per_enabled_url,
    claims_lease_and_never_hand_out_a_delivery_twice,
    claims_keep_per_instance_order,
    deliveries_given_back_are_claimable_at_once_and_only_under_their_own_lease,
    claims_respect_the_per_host_cap,
    claims_skip_the_hosts_the_worker_says_are_full,
    a_new_password_or_a_deactivation_ends_the_users_sessions,
    claims_take_no_more_of_a_host_than_this_nodes_room_for_it,
    results_are_recorded_and_the_log_filters,
    the_breaker_holds_and_releases_a_url,
    a_large_backlog_is_held_chunk_by_chunk_until_the_breaker_closes,
    pruning_removes_only_old_finished_deliveries,
    redelivery_single_and_bulk,
    test_deliveries_are_leased_and_logged,
    concurrent_claimers_never_overlap,
    concurrent_writes_committed_together_keep_their_own_outcomes,
);

const NODE: &str = "node-a";

pub(crate) async fn setup(store: &Arc<dyn Store>) -> WorkspaceId {
    let admin = NewUser {
        email: Email::parse("admin@example.com").unwrap(),
        display_name: "Admin".into(),
        role: Role::Administrator,
        password_hash: "x".into(),
    };
    let token = herald::domain::ApiToken::parse("conformance-token-123456").unwrap();
    assert!(
        store
            .bootstrap("default", &admin, &NewToken::first(&token))
            .await
            .unwrap()
    );
    store.workspace_id("default").await.unwrap().unwrap()
}

pub(crate) fn settings(created: &[&str], updated: &[&str], deleted: &[&str]) -> WebhookSettings {
    let list = |urls: &[&str]| urls.iter().map(|u| (*u).to_owned()).collect::<Vec<_>>();
    let (c, u, d) = (list(created), list(updated), list(deleted));
    WebhookSettings::parse([
        (!c.is_empty(), &c),
        (!u.is_empty(), &u),
        (!d.is_empty(), &d),
    ])
    .unwrap()
}

pub(crate) async fn process(store: &Arc<dyn Store>, ws: WorkspaceId, name: &str) -> ProcessName {
    let name = ProcessName::parse(name).unwrap();
    store
        .create_process(ws, &name, &ProcessTitle::parse("T").unwrap(), "me")
        .await
        .unwrap();
    name
}

pub(crate) async fn create(store: &Arc<dyn Store>, ws: WorkspaceId, p: &ProcessName) -> InstanceId {
    store
        .create_instance(
            ws,
            p,
            &InstanceData::empty(),
            &InstanceStatus::default_status(),
            "me",
        )
        .await
        .unwrap()
        .unwrap()
        .id
}

fn claim(now: Millis, limit: i64, cap: i64) -> ClaimRequest<'static> {
    ClaimRequest {
        node: NODE,
        now,
        lease_until: now.plus(Duration::from_secs(15)),
        limit,
        per_host_cap: cap,
        full_hosts: &[],
        room_hosts: &[],
        rooms: &[],
        default_room: cap,
    }
}

fn result(
    c: &herald::storage::ClaimedDelivery,
    ws: WorkspaceId,
    ok: bool,
    next: NextStep,
) -> AttemptResult {
    AttemptResult {
        key: c.key,
        workspace_id: ws,
        url: c.url.clone(),
        test: c.test,
        attempt: AttemptRecord {
            started_at: Millis::now(),
            duration_ms: 3,
            outcome: if ok {
                AttemptOutcome::Success
            } else {
                AttemptOutcome::HttpStatus
            },
            status_code: Some(if ok { 200 } else { 500 }),
            error: (!ok).then(|| "HTTP 500".to_owned()),
            response_excerpt: Some("body".into()),
            node: NODE.into(),
        },
        signal: if ok {
            Signal::Success
        } else {
            Signal::Failure { retry_after: None }
        },
        next,
    }
}

async fn bootstrap_happens_once_and_tokens_resolve(store: Arc<dyn Store>) {
    let ws = setup(&store).await;
    let again = NewUser {
        email: Email::parse("other@example.com").unwrap(),
        display_name: "O".into(),
        role: Role::Administrator,
        password_hash: "x".into(),
    };
    let token = herald::domain::ApiToken::generate();
    assert!(
        !store
            .bootstrap("default", &again, &NewToken::first(&token))
            .await
            .unwrap(),
        "only the first bootstrap creates"
    );
    let now = Millis::now();
    let (caller, expires) = store
        .caller_by_token(
            &herald::domain::ApiToken::parse("conformance-token-123456")
                .unwrap()
                .hash(),
            now,
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (caller.workspace_id, caller.role, caller.scope, expires),
        (ws, Role::Administrator, TokenScope::All, None)
    );
    assert!(
        store
            .caller_by_token(&token.hash(), now)
            .await
            .unwrap()
            .is_none()
    );

    let dev = NewUser {
        email: Email::parse("dev@example.com").unwrap(),
        display_name: "D".into(),
        role: Role::Developer,
        password_hash: "x".into(),
    };
    let id = store.create_user(ws, &dev).await.unwrap();
    let first = store.add_token(id, &NewToken::first(&token)).await.unwrap();
    let (caller, _) = store
        .caller_by_token(&token.hash(), now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(caller.role, Role::Developer);
    // A second, scoped token that expires: resolved until then, never after.
    let scoped = herald::domain::ApiToken::generate();
    let until = Millis(now.0 + 60_000);
    let name = TokenName::parse("reports").unwrap();
    let second = store
        .add_token(
            id,
            &NewToken::of(&scoped, name, TokenScope::Read, Some(until)),
        )
        .await
        .unwrap();
    let (caller, expires) = store
        .caller_by_token(&scoped.hash(), now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((caller.scope, expires), (TokenScope::Read, Some(until)));
    assert!(
        store
            .caller_by_token(&scoped.hash(), until)
            .await
            .unwrap()
            .is_none(),
        "expired at `until`"
    );
    store.touch_token(&scoped.hash(), now).await.unwrap();
    let listed = store.tokens(id).await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|t| (t.id, t.name.as_str(), t.scope, t.last_used_at, t.expires_at))
            .collect::<Vec<_>>(),
        [
            (second, "reports", TokenScope::Read, Some(now), Some(until)),
            (first, "first token", TokenScope::All, None, None),
        ]
    );
    assert_eq!(listed[0].prefix, scoped.expose()[..9]);
    assert!(store.revoke_token(id, second).await.unwrap());
    assert!(!store.revoke_token(id, second).await.unwrap(), "once");
    assert!(
        !store
            .revoke_token(UserId(id.0 + 1000), first)
            .await
            .unwrap(),
        "only its holder's"
    );
    assert!(
        store
            .caller_by_token(&scoped.hash(), now)
            .await
            .unwrap()
            .is_none()
    );
    assert!(matches!(
        store.create_user(ws, &dev).await,
        Err(herald::storage::StorageError::Duplicate(_))
    ));
    let users = store.users(ws).await.unwrap();
    assert_eq!(
        users.iter().map(|u| u.email.as_str()).collect::<Vec<_>>(),
        ["admin@example.com", "dev@example.com"]
    );
}

async fn settings_round_trip(store: Arc<dyn Store>) {
    let ws = setup(&store).await;
    assert_eq!(
        store.webhook_settings(ws).await.unwrap(),
        WebhookSettings::default()
    );
    let mut s = settings(
        &["https://b.example/2", "https://a.example/1"],
        &[],
        &["https://d.example/"],
    );
    s.deleted.enabled = false;
    store.save_webhook_settings(ws, &s).await.unwrap();
    let read = store.webhook_settings(ws).await.unwrap();
    assert_eq!(read, s, "order kept, a disabled event keeps its URLs");
    store
        .save_webhook_settings(ws, &WebhookSettings::default())
        .await
        .unwrap();
    assert_eq!(
        store.webhook_settings(ws).await.unwrap(),
        WebhookSettings::default()
    );
}

async fn processes_are_unique_per_workspace(store: Arc<dyn Store>) {
    let ws = setup(&store).await;
    let p = process(&store, ws, "leave-request").await;
    let dup = store
        .create_process(ws, &p, &ProcessTitle::parse("Again").unwrap(), "me")
        .await;
    assert!(matches!(
        dup,
        Err(herald::storage::StorageError::Duplicate(_))
    ));
    process(&store, ws, "audit").await;
    let names: Vec<String> = store
        .processes(ws)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name.as_str().to_owned())
        .collect();
    assert_eq!(names, ["audit", "leave-request"]);
    assert!(
        store
            .process(ws, &ProcessName::parse("nope").unwrap())
            .await
            .unwrap()
            .is_none()
    );
    let missing = store
        .create_instance(
            ws,
            &ProcessName::parse("nope").unwrap(),
            &InstanceData::empty(),
            &InstanceStatus::default_status(),
            "me",
        )
        .await
        .unwrap();
    assert!(missing.is_none());
}

async fn concurrent_creates_are_numbered_gap_free(store: Arc<dyn Store>) {
    let ws = setup(&store).await;
    let p = process(&store, ws, "p").await;
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let (store, p) = (Arc::clone(&store), p.clone());
        tasks.push(tokio::spawn(async move {
            create(&store, ws, &p).await.number()
        }));
    }
    let mut numbers = Vec::new();
    for t in tasks {
        numbers.push(t.await.unwrap());
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=30).collect::<Vec<i64>>());
    let page = store.instances(ws, &p, None, 10).await.unwrap();
    assert_eq!(page.items[0].id.as_str(), "p-30");
    let next = store
        .instances(ws, &p, page.next_cursor, 100)
        .await
        .unwrap();
    assert_eq!(next.items.len(), 20);
    assert!(next.next_cursor.is_none());
}

async fn updates_are_compare_and_set(store: Arc<dyn Store>) {
    let ws = setup(&store).await;
    let p = process(&store, ws, "p").await;
    let id = create(&store, ws, &p).await;
    let data = InstanceData::parse(json!({"a": 1})).unwrap();
    let update = |v| InstanceUpdate {
        data: data.clone(),
        status: InstanceStatus::parse("Review").unwrap(),
        expected_version: v,
    };
    let Written::Done(done) = store
        .update_instance(ws, &id, &update(1), "you")
        .await
        .unwrap()
    else {
        panic!()
    };
    assert_eq!(
        (
            done.version,
            done.status.as_str(),
            done.modified_by.as_str()
        ),
        (2, "Review", "you")
    );
    assert_eq!(done.data, data);
    assert_eq!(
        store
            .update_instance(ws, &id, &update(1), "you")
            .await
            .unwrap(),
        Written::VersionChanged
    );
    let ghost = InstanceId::parse("p-99").unwrap();
    assert_eq!(
        store
            .update_instance(ws, &ghost, &update(1), "you")
            .await
            .unwrap(),
        Written::NotFound
    );
    store.delete_instance(ws, &id, "you").await.unwrap();
    assert_eq!(
        store
            .update_instance(ws, &id, &update(2), "you")
            .await
            .unwrap(),
        Written::WrongState
    );
}

async fn delete_and_restore_move_through_the_recycle_bin(store: Arc<dyn Store>) {
    let ws = setup(&store).await;
    let p = process(&store, ws, "p").await;
    let id = create(&store, ws, &p).await;
    assert!(matches!(
        store.restore_instance(ws, &id, "me").await.unwrap(),
        Written::WrongState
    ));
    assert!(matches!(
        store.delete_instance(ws, &id, "me").await.unwrap(),
        Written::Done(_)
    ));
    assert!(matches!(
        store.delete_instance(ws, &id, "me").await.unwrap(),
        Written::WrongState
    ));
    assert!(
        store
            .instance(ws, &id)
            .await
            .unwrap()
            .unwrap()
            .deleted_at
            .is_some()
    );
    assert!(
        store
            .instances(ws, &p, None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        store.recycle_bin(ws, None, 10).await.unwrap().items[0].id,
        id
    );
    assert_eq!(
        store.process(ws, &p).await.unwrap().unwrap().instance_count,
        0
    );
    let Written::Done(back) = store.restore_instance(ws, &id, "me").await.unwrap() else {
        panic!()
    };
    assert!(back.deleted_at.is_none());
    assert!(
        store
            .recycle_bin(ws, None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert_eq!(
        store
            .delete_instance(ws, &InstanceId::parse("p-7").unwrap(), "me")
            .await
            .unwrap(),
        Written::NotFound
    );
}

async fn the_outbox_queues_one_delivery_per_enabled_url(store: Arc<dyn Store>) {
    let ws = setup(&store).await;
    let mut s = settings(
        &["https://a.example/", "https://b.example/"],
        &["https://u.example/"],
        &["https://d.example/"],
    );
    s.deleted.enabled = false;
    store.save_webhook_settings(ws, &s).await.unwrap();
    let p = process(&store, ws, "p").await;
    let id = create(&store, ws, &p).await;
    let update = InstanceUpdate {
        data: InstanceData::parse(json!({"x": 1})).unwrap(),
        status: InstanceStatus::default_status(),
        expected_version: 1,
    };
    store.update_instance(ws, &id, &update, "me").await.unwrap();
    store.delete_instance(ws, &id, "me").await.unwrap();
    store.restore_instance(ws, &id, "me").await.unwrap();
    let log = store
        .deliveries(ws, &DeliveryFilter::default(), None, 50)
        .await
        .unwrap()
        .items;
    let mut seen: Vec<(EventType, String)> =
        log.iter().map(|d| (d.event_type, d.url.clone())).collect();
    seen.sort_by(|a, b| a.1.cmp(&b.1));
    assert_eq!(
        seen.len(),
        5,
        "2 created + 1 updated + 0 deleted + 2 created on restore: {seen:?}"
    );
    assert!(log.iter().all(|d| d.status == DeliveryStatus::Pending
        && d.instance_id == "p-1"
        && d.process_name == "p"));
    // Webhook IDs: `msg_` + 32 hex, all different, starting with the creation time in ms (so
    // they sort by creation time).
    for d in &log {
        assert_eq!(
            herald::domain::DeliveryId::parse(d.id.as_str()),
            Ok(d.id.clone())
        );
        let millis = i64::from_str_radix(&d.id.as_str()[4..16], 16).unwrap();
        assert_eq!(millis, d.created_at.0, "{}", d.id);
    }
    let ids: std::collections::HashSet<&str> = log.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids.len(), log.len());
}

async fn claims_lease_and_never_hand_out_a_delivery_twice(store: Arc<dyn Store>) {
    let ws = setup(&store).await;
    store
        .save_webhook_settings(
            ws,
            &settings(&["https://a.example/", "https://b.example/"], &[], &[]),
        )
        .await
        .unwrap();
    let p = process(&store, ws, "p").await;
    for _ in 0..3 {
        create(&store, ws, &p).await;
    }
    let now = Millis::now();
    let first = store.claim_due(claim(now, 100, 100)).await.unwrap();
    assert_eq!(first.len(), 6);
    assert!(
        store
            .claim_due(claim(now, 100, 100))
            .await
            .unwrap()
            .is_empty(),
        "leased rows are not claimed again"
    );
    // After the lease ends (a crashed node), another claim takes them over.
    let later = now.plus(Duration::from_secs(16));
    let again = store.claim_due(claim(later, 100, 100)).await.unwrap();
    assert_eq!(again.len(), 6);
    // Not due yet: nothing.
    let none = store
        .claim_due(claim(Millis(now.0 - 60_000), 100, 100))
        .await
        .unwrap();
    assert!(none.is_empty());
}

async fn deliveries_given_back_are_claimable_at_once_and_only_under_their_own_lease(
    store: Arc<dyn Store>,
) {
    let ws = setup(&store).await;
    store
        .save_webhook_settings(ws, &settings(&["https://a.example/"], &[], &[]))
        .await
        .unwrap();
    let p = process(&store, ws, "p").await;
    for _ in 0..3 {
        create(&store, ws, &p).await;
    }
    let now = Millis::now();
    let request = claim(now, 100, 100);
    let lease = request.lease_until;
    let first = store.claim_due(request).await.unwrap();
    assert_eq!(first.len(), 3);
    // Given back under another lease (one that ended and was taken over), or by another node:
    // left alone.
    store
        .give_back(
            NODE,
            &[(first[0].key, lease.plus(Duration::from_millis(1)))],
        )
        .await
        .unwrap();
    store
        .give_back("node-b", &[(first[1].key, lease)])
        .await
        .unwrap();
    assert!(
        store
            .claim_due(claim(now, 100, 100))
            .await
            .unwrap()
            .is_empty()
    );
    // Given back under its own lease: any node may claim it at once, and nothing else moved.
    store
        .give_back(NODE, &[(first[0].key, lease), (first[1].key, lease)])
        .await
        .unwrap();
    let again = store.claim_due(claim(now, 100, 100)).await.unwrap();
    let keys: Vec<i64> = again.iter().map(|d| d.key).collect();
    assert_eq!(keys, vec![first[0].key, first[1].key]);
    assert_eq!(
        again[0].id, first[0].id,
        "the same delivery, under the same webhook-id"
    );
    assert_eq!(again[0].attempts, 0, "no attempt was counted");
}

async fn claims_keep_per_instance_order(store: Arc<dyn Store>) {
    let ws = setup(&store).await;
    store
        .save_webhook_settings(
            ws,
            &settings(&["https://a.example/"], &["https://a.example/"], &[]),
        )
        .await
        .unwrap();
    let p = process(&store, ws, "p").await;
    let one = create(&store, ws, &p).await;
    let two = create(&store, ws, &p).await;
    for v in 1..=2 {
        let update = InstanceUpdate {
            data: InstanceData::parse(json!({"v": v})).unwrap(),
            status: InstanceStatus::default_status(),
            expected_version: v,
        };
        store
            .update_instance(ws, &one, &update, "me")
            .await
            .unwrap();
    }
    let now = Millis::now();
    let claimed = store.claim_due(claim(now, 100, 100)).await.unwrap();
    let got: Vec<(String, EventType)> = claimed
        .iter()
        .map(|c| (c.instance_id.clone(), c.event_type))
        .collect();
    assert_eq!(
        got,
        [
            (one.to_string(), EventType::Created),
            (two.to_string(), EventType::Created)
        ],
        "later events of p-1 wait"
    );
    let first = claimed
        .iter()
        .find(|c| c.instance_id == one.as_str())
        .unwrap();
    store
        .record_attempts(
            &[result(first, ws, true, NextStep::Succeeded)],
            &BreakerPolicy::default(),
        )
        .await
        .unwrap();
    let next = store
        .claim_due(claim(now.plus(Duration::from_millis(1)), 100, 100))
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
    assert_eq!(
        (next[0].instance_id.as_str(), next[0].event_type),
        (one.as_str(), EventType::Updated)
    );
    // A retry scheduled later still holds back the rest of its instance.
    store
        .record_attempts(
            &[result(
                &next[0],
                ws,
                false,
                NextStep::RetryAt(now.plus(Duration::from_secs(60))),
            )],
            &BreakerPolicy::default(),
        )
        .await
        .unwrap();
    assert!(
        store
            .claim_due(claim(now.plus(Duration::from_secs(1)), 100, 100))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn claims_respect_the_per_host_cap(store: Arc<dyn Store>) {
    let ws = setup(&store).await;
    store
        .save_webhook_settings(
            ws,
            &settings(
                &[
                    "https://one.example/a",
                    "https://one.example/b",
                    "https://two.example/",
                ],
                &[],
                &[],
            ),
        )
        .await
        .unwrap();
    let p = process(&store, ws, "p").await;
    for _ in 0..4 {
        create(&store, ws, &p).await;
    }
    let now = Millis::now();
    let first = store.claim_due(claim(now, 100, 3)).await.unwrap();
    let count = |list: &[herald::storage::ClaimedDelivery], host: &str| {
        list.iter().filter(|c| c.url.contains(host)).count()
    };
    assert_eq!(
        (count(&first, "one.example"), count(&first, "two.example")),
        (3, 3)
    );
    let second = store.claim_due(claim(now, 100, 3)).await.unwrap();
    assert!(
        second.is_empty(),
        "both hosts are at their cap while leases run"
    );
    store
        .record_attempts(
            &[result(&first[0], ws, true, NextStep::Succeeded)],
            &BreakerPolicy::default(),
        )
        .await
        .unwrap();
    let third = store.claim_due(claim(now, 100, 3)).await.unwrap();
    assert_eq!(third.len(), 1, "one slot freed on one host");
}

async fn a_new_password_or_a_deactivation_ends_the_users_sessions(store: Arc<dyn Store>) {
    let ws = setup(&store).await;
    let email = Email::parse("someone@example.com").unwrap();
    let user = store
        .create_user(
            ws,
            &NewUser {
                email: email.clone(),
                display_name: "Someone".into(),
                role: Role::Developer,
                password_hash: "x".into(),
            },
        )
        .await
        .unwrap();
    let now = Millis::now();
    let sign_in = || async {
        let token = herald::domain::ApiToken::generate().hash();
        store
            .create_session(
                &token,
                user,
                "csrf",
                now,
                now.plus(Duration::from_secs(3600)),
            )
            .await
            .unwrap();
        token
    };
    let alive = |token| {
        let store = Arc::clone(&store);
        async move { store.session(&token, now).await.unwrap().is_some() }
    };
    let session = sign_in().await;
    store
        .change_user(ws, &email, &UserChange::Role(Role::User))
        .await
        .unwrap();
    assert!(
        alive(session.clone()).await,
        "a role change keeps the session"
    );
    store
        .change_user(ws, &email, &UserChange::PasswordHash("y".into()))
        .await
        .unwrap();
    assert!(!alive(session).await, "a new password ends it");
    let session = sign_in().await;
    for active in [false, true] {
        store
            .change_user(ws, &email, &UserChange::Active(active))
            .await
            .unwrap();
    }
    assert!(
        !alive(session).await,
        "reactivating does not bring back a session the deactivation ended"
    );
}

async fn claims_skip_the_hosts_the_worker_says_are_full(store: Arc<dyn Store>) {
    let ws = setup(&store).await;
    store
        .save_webhook_settings(
            ws,
            &settings(&["https://one.example/", "https://two.example/"], &[], &[]),
        )
        .await
        .unwrap();
    let p = process(&store, ws, "p").await;
    for _ in 0..3 {
        create(&store, ws, &p).await;
    }
    let full = ["one.example:443".to_owned()];
    let now = Millis::now();
    let request = ClaimRequest {
        full_hosts: &full,
        ..claim(now, 100, 100)
    };
    let got = store.claim_due(request).await.unwrap();
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|c| c.host == "two.example:443"), "{got:?}");
    let rest = store.claim_due(claim(now, 100, 100)).await.unwrap();
    assert_eq!(rest.len(), 3);
    assert!(rest.iter().all(|c| c.host == "one.example:443"));
}

async fn claims_take_no_more_of_a_host_than_this_nodes_room_for_it(store: Arc<dyn Store>) {
    let ws = setup(&store).await;
    store
        .save_webhook_settings(
            ws,
            &settings(
                &[
                    "https://one.example/",
                    "https://two.example/",
                    "https://three.example/",
                ],
                &[],
                &[],
            ),
        )
        .await
        .unwrap();
    let p = process(&store, ws, "p").await;
    for _ in 0..5 {
        create(&store, ws, &p).await;
    }
    let now = Millis::now();
    let hosts = ["one.example:443".to_owned(), "two.example:443".to_owned()];
    let request = ClaimRequest {
        room_hosts: &hosts,
        rooms: &[2, 4],
        default_room: 1,
        ..claim(now, 100, 3)
    };
    let got = store.claim_due(request).await.unwrap();
    let count = |host: &str| got.iter().filter(|c| c.host == host).count();
    // Each host's room on this node, and never more than the fleet-wide cap (3).
    assert_eq!(count("one.example:443"), 2, "{got:?}");
    assert_eq!(count("two.example:443"), 3, "{got:?}");
    assert_eq!(count("three.example:443"), 1, "{got:?}");
}

async fn results_are_recorded_and_the_log_filters(store: Arc<dyn Store>) {
    let ws = setup(&store).await;
    store
        .save_webhook_settings(
            ws,
            &settings(&["https://a.example/", "https://b.example/"], &[], &[]),
        )
        .await
        .unwrap();
    let p = process(&store, ws, "p").await;
    create(&store, ws, &p).await;
    create(&store, ws, &p).await;
    let now = Millis::now();
    let claimed = store.claim_due(claim(now, 100, 100)).await.unwrap();
    let results: Vec<AttemptResult> = claimed
        .iter()
        .map(|c| {
            if c.url.contains("a.example") {
                result(c, ws, true, NextStep::Succeeded)
            } else {
                result(c, ws, false, NextStep::Failed)
            }
        })
        .collect();
    store
        .record_attempts(&results, &BreakerPolicy::default())
        .await
        .unwrap();
    let filter = |status| DeliveryFilter {
        status: Some(status),
        ..Default::default()
    };
    assert_eq!(
        store
            .deliveries(ws, &filter(DeliveryStatus::Succeeded), None, 10)
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    let failed = store
        .deliveries(ws, &filter(DeliveryStatus::Failed), None, 10)
        .await
        .unwrap()
        .items;
    assert_eq!(failed.len(), 2);
    assert_eq!(
        (
            failed[0].attempts,
            failed[0].last_status_code,
            failed[0].last_error.as_deref()
        ),
        (1, Some(500), Some("HTTP 500"))
    );
    let mut urls = store.delivery_urls(ws).await.unwrap();
    urls.sort();
    assert_eq!(urls, ["https://a.example/", "https://b.example/"]);
    let by_urls = |urls: &[&str]| DeliveryFilter {
        urls: Some(ExactUrls::new(urls.iter().copied())),
        ..Default::default()
    };
    let b_only = store
        .deliveries(ws, &by_urls(&["https://b.example/"]), None, 10)
        .await
        .unwrap()
        .items;
    assert_eq!(b_only.len(), 2);
    assert!(b_only.iter().all(|d| d.url == "https://b.example/"));
    let partial = store
        .deliveries(ws, &by_urls(&["https://b.example", "b.example/"]), None, 10)
        .await
        .unwrap();
    assert!(partial.items.is_empty(), "URLs match exactly, not in part");
    let by_instance = DeliveryFilter {
        instance_id: Some("p-2".into()),
        ..by_urls(&["https://b.example/"])
    };
    let one = store
        .deliveries(ws, &by_instance, None, 10)
        .await
        .unwrap()
        .items;
    assert_eq!(one.len(), 1);
    let (d, attempts) = store.delivery(ws, &one[0].id).await.unwrap().unwrap();
    assert_eq!(d.id, one[0].id);
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].outcome, AttemptOutcome::HttpStatus);
    assert_eq!(attempts[0].response_excerpt.as_deref(), Some("body"));
    let page = store
        .deliveries(ws, &DeliveryFilter::default(), None, 3)
        .await
        .unwrap();
    assert_eq!(page.items.len(), 3);
    let rest = store
        .deliveries(ws, &DeliveryFilter::default(), page.next_cursor, 3)
        .await
        .unwrap();
    assert_eq!(rest.items.len(), 1);
    assert!(page.items[0].key > page.items[1].key, "newest first");
    let future = DeliveryFilter {
        since: Some(now.plus(Duration::from_secs(60))),
        ..Default::default()
    };
    assert!(
        store
            .deliveries(ws, &future, None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// A workspace whose `created` event goes to https://down.example/ only, a process, and a
/// breaker that opens after three failures and probes after ten seconds.
async fn one_url_that_will_fail(
    store: &Arc<dyn Store>,
) -> (WorkspaceId, ProcessName, BreakerPolicy) {
    let ws = setup(store).await;
    store
        .save_webhook_settings(ws, &settings(&["https://down.example/"], &[], &[]))
        .await
        .unwrap();
    let p = process(store, ws, "p").await;
    let policy = BreakerPolicy {
        threshold: 3,
        first_probe: Duration::from_secs(10),
        max_probe: Duration::from_secs(60),
    };
    (ws, p, policy)
}

async fn the_breaker_holds_and_releases_a_url(store: Arc<dyn Store>) {
    let (ws, p, policy) = one_url_that_will_fail(&store).await;
    for _ in 0..4 {
        create(&store, ws, &p).await;
    }
    let now = Millis::now();
    let claimed = store.claim_due(claim(now, 3, 100)).await.unwrap();
    assert_eq!(claimed.len(), 3);
    let retry = NextStep::RetryAt(now.plus(Duration::from_secs(1)));
    let results: Vec<AttemptResult> = claimed
        .iter()
        .map(|c| result(c, ws, false, retry))
        .collect();
    store.record_attempts(&results, &policy).await.unwrap();
    let health = store.destinations(ws).await.unwrap();
    assert!(health[0].open);
    assert_eq!(health[0].consecutive_failures, 3);
    let log = store
        .deliveries(ws, &DeliveryFilter::default(), None, 10)
        .await
        .unwrap()
        .items;
    assert!(
        log.iter().all(|d| d.next_attempt_at == Some(Millis(HELD))),
        "every delivery of the URL is held"
    );
    // New events while paused are held too.
    create(&store, ws, &p).await;
    assert!(
        store
            .claim_due(claim(now.plus(Duration::from_secs(5)), 100, 100))
            .await
            .unwrap()
            .is_empty()
    );
    // Once the pause is over exactly one probe becomes due.
    let after = now.plus(Duration::from_secs(11));
    store.promote_probes(after).await.unwrap();
    store.promote_probes(after).await.unwrap();
    let probe = store.claim_due(claim(after, 100, 100)).await.unwrap();
    assert_eq!(probe.len(), 1);
    store
        .record_attempts(&[result(&probe[0], ws, true, NextStep::Succeeded)], &policy)
        .await
        .unwrap();
    assert!(!store.destinations(ws).await.unwrap()[0].open);
    let released = store
        .claim_due(claim(Millis::now(), 100, 100))
        .await
        .unwrap();
    assert_eq!(
        released.len(),
        4,
        "the first success releases every held delivery"
    );
}

async fn a_large_backlog_is_held_chunk_by_chunk_until_the_breaker_closes(store: Arc<dyn Store>) {
    let (ws, p, policy) = one_url_that_will_fail(&store).await;
    // Concurrent creates are committed in groups, so a thousand take a few transactions.
    let backlog = BREAKER_CHUNK as usize + 10;
    let mut creates = tokio::task::JoinSet::new();
    for _ in 0..backlog {
        let (store, p) = (Arc::clone(&store), p.clone());
        creates.spawn(async move { create(&store, ws, &p).await });
    }
    while let Some(created) = creates.join_next().await {
        created.unwrap();
    }

    let now = Millis::now();
    let claimed = store.claim_due(claim(now, 3, 100)).await.unwrap();
    let retry = NextStep::RetryAt(now.plus(Duration::from_secs(1)));
    let results: Vec<AttemptResult> = claimed
        .iter()
        .map(|c| result(c, ws, false, retry))
        .collect();
    let unfinished = store.record_attempts(&results, &policy).await.unwrap();
    let hold = Unfinished {
        workspace_id: ws,
        url: "https://down.example/".into(),
        step: BreakerStep::Hold,
    };
    assert_eq!(
        unfinished,
        std::slice::from_ref(&hold),
        "a small chunk held with the pause, more remain"
    );
    // What the results transaction left is still due (and would be claimed) until the rest is
    // held, a large chunk at a time.
    let later = now.plus(Duration::from_secs(5));
    let stats = store.queue_stats(later).await.unwrap();
    assert_eq!(
        (stats.pending, stats.due, stats.paused_urls),
        (backlog as u64, (backlog - HOLD_CHUNK as usize) as u64, 1)
    );
    assert!(stats.oldest_due_lag >= Duration::from_secs(5));
    let mut chunks = 1;
    while store.resume(&hold).await.unwrap() {
        chunks += 1;
    }
    assert_eq!(
        chunks,
        (backlog - HOLD_CHUNK as usize).div_ceil(HOLD_CHUNK as usize),
        "the rest held a chunk at a time"
    );
    let stats = store.queue_stats(later).await.unwrap();
    assert_eq!((stats.pending, stats.due), (backlog as u64, 0));
    assert_eq!(stats.oldest_due_lag, Duration::ZERO);
    assert!(
        store
            .claim_due(claim(later, 100, 100))
            .await
            .unwrap()
            .is_empty(),
        "the whole backlog is held"
    );
    assert!(
        store.stranded_releases().await.unwrap().is_empty(),
        "a paused URL's held deliveries wait for its probe"
    );

    // The probe is the oldest delivery held.
    let after = now.plus(Duration::from_secs(11));
    store.promote_probes(after).await.unwrap();
    let probe = store.claim_due(claim(after, 100, 100)).await.unwrap();
    assert_eq!(probe.len(), 1);
    // Once a success closes the breaker, holding more does nothing, and the held deliveries are
    // released a chunk at a time, oldest first.
    let unfinished = store
        .record_attempts(&[result(&probe[0], ws, true, NextStep::Succeeded)], &policy)
        .await
        .unwrap();
    let release = Unfinished {
        step: BreakerStep::Release,
        ..hold.clone()
    };
    assert_eq!(
        unfinished,
        std::slice::from_ref(&release),
        "one chunk released"
    );
    assert_eq!(
        store.stranded_releases().await.unwrap(),
        std::slice::from_ref(&release),
        "a release left part way is found again"
    );
    assert!(!store.resume(&hold).await.unwrap());
    let first = store
        .claim_due(claim(Millis::now(), 2000, 2000))
        .await
        .unwrap();
    assert_eq!(first.len(), BREAKER_CHUNK as usize);
    assert!(!store.resume(&release).await.unwrap(), "nothing left");
    assert!(store.stranded_releases().await.unwrap().is_empty());
    let rest = store
        .claim_due(claim(Millis::now(), 2000, 2000))
        .await
        .unwrap();
    assert_eq!(
        first.len() + rest.len(),
        backlog - 1,
        "every held delivery is released"
    );
    let oldest_released = first.iter().map(|c| c.key).min().unwrap();
    assert!(
        probe[0].key < oldest_released,
        "the probe was the oldest delivery"
    );
    assert!(
        first.iter().map(|c| c.key).max() < rest.iter().map(|c| c.key).min(),
        "the oldest are released first"
    );
}

async fn pruning_removes_only_old_finished_deliveries(store: Arc<dyn Store>) {
    let ws = setup(&store).await;
    let claimed =
        created_and_claimed(&store, ws, &["https://a.example/", "https://b.example/"], 3).await;
    settle(&store, ws, &claimed, |_, c| c.url.contains("a.example")).await;
    let later = Millis::now().plus(Duration::from_secs(1));
    assert_eq!(
        store.prune(Millis(0), 100).await.unwrap(),
        Pruned::default(),
        "nothing is that old"
    );
    let first = store.prune(later, 2).await.unwrap();
    assert_eq!(first.deliveries, 2, "batches are bounded");
    assert!(first.filled(2));
    assert_eq!(
        store.prune(later, 2).await.unwrap(),
        Pruned {
            deliveries: 1,
            events: 0
        },
        "every event still has a pending delivery"
    );
    let left = store
        .deliveries(ws, &DeliveryFilter::default(), None, 10)
        .await
        .unwrap()
        .items;
    assert_eq!(left.len(), 3);
    assert!(left.iter().all(|d| d.status == DeliveryStatus::Pending));
}

async fn redelivery_single_and_bulk(store: Arc<dyn Store>) {
    let ws = setup(&store).await;
    store
        .save_webhook_settings(
            ws,
            &settings(&["https://a.example/", "https://b.example/"], &[], &[]),
        )
        .await
        .unwrap();
    let p = process(&store, ws, "p").await;
    create(&store, ws, &p).await;
    let claimed = store
        .claim_due(claim(Millis::now(), 100, 100))
        .await
        .unwrap();
    let results: Vec<AttemptResult> = claimed
        .iter()
        .map(|c| result(c, ws, false, NextStep::Failed))
        .collect();
    store
        .record_attempts(&results, &BreakerPolicy::default())
        .await
        .unwrap();
    let now = Millis::now();
    assert!(store.redeliver(ws, &claimed[0].id, now).await.unwrap());
    assert!(
        !store
            .redeliver(ws, &herald::domain::DeliveryId::generate(), now)
            .await
            .unwrap()
    );
    let failed = DeliveryFilter {
        status: Some(DeliveryStatus::Failed),
        ..Default::default()
    };
    assert_eq!(store.redeliver_matching(ws, &failed, now).await.unwrap(), 1);
    let again = store.claim_due(claim(now, 100, 100)).await.unwrap();
    assert_eq!(again.len(), 2);
    assert_eq!(again.iter().map(|c| c.attempts).collect::<Vec<_>>(), [1, 1]);
}

async fn test_deliveries_are_leased_and_logged(store: Arc<dyn Store>) {
    let ws = setup(&store).await;
    let url = CallbackUrl::parse("https://t.example/hook").unwrap();
    let now = Millis::now();
    let c = store
        .create_test_delivery(
            ws,
            EventType::Deleted,
            &url,
            "herald-test-1",
            claim(now, 1, 8),
        )
        .await
        .unwrap();
    assert!(c.test);
    assert_eq!(
        (
            c.event_type,
            c.instance_id.as_str(),
            c.process_name.as_str()
        ),
        (EventType::Deleted, "herald-test-1", "herald-test")
    );
    assert!(
        store.claim_due(claim(now, 10, 8)).await.unwrap().is_empty(),
        "the API holds its lease"
    );
    store
        .record_attempts(
            &[result(&c, ws, false, NextStep::Failed)],
            &BreakerPolicy::default(),
        )
        .await
        .unwrap();
    let log = store
        .deliveries(ws, &DeliveryFilter::default(), None, 10)
        .await
        .unwrap()
        .items;
    assert!(log[0].test);
    assert!(
        store.destinations(ws).await.unwrap().is_empty(),
        "test callbacks do not count towards health"
    );
}

async fn concurrent_claimers_never_overlap(store: Arc<dyn Store>) {
    let ws = setup(&store).await;
    store
        .save_webhook_settings(
            ws,
            &settings(&["https://a.example/", "https://b.example/"], &[], &[]),
        )
        .await
        .unwrap();
    let p = process(&store, ws, "p").await;
    for _ in 0..100 {
        create(&store, ws, &p).await;
    }
    let mut tasks = Vec::new();
    for node in ["n1", "n2", "n3", "n4"] {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let now = Millis::now();
                let request = ClaimRequest {
                    node,
                    now,
                    lease_until: now.plus(Duration::from_secs(30)),
                    limit: 7,
                    per_host_cap: 1000,
                    full_hosts: &[],
                    room_hosts: &[],
                    rooms: &[],
                    default_room: 1000,
                };
                let got = store.claim_due(request).await.unwrap();
                if got.is_empty() {
                    break mine;
                }
                mine.extend(got.into_iter().map(|c| c.key));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let total = all.len();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), total, "a delivery was claimed twice");
    assert_eq!(total, 200);
}

/// Writes that arrive together are committed together (group commit), yet each gets exactly the
/// outcome it would have had alone: numbers stay gap-free per process, a create in a missing
/// process finds nothing, of two updates from the same version one wins, a second delete finds
/// the instance already in the recycle bin, and each event queues its own deliveries, in order.
async fn concurrent_writes_committed_together_keep_their_own_outcomes(store: Arc<dyn Store>) {
    let ws = setup(&store).await;
    store
        .save_webhook_settings(
            ws,
            &settings(
                &["https://c.example/"],
                &["https://u.example/"],
                &["https://d.example/"],
            ),
        )
        .await
        .unwrap();
    let p = process(&store, ws, "p").await;
    let q = process(&store, ws, "q").await;
    let first = create(&store, ws, &p).await;
    let second = create(&store, ws, &p).await;
    let missing = ProcessName::parse("missing").unwrap();
    let update = InstanceUpdate {
        data: InstanceData::parse(json!({"x": 1})).unwrap(),
        status: InstanceStatus::default_status(),
        expected_version: 1,
    };
    let mut creates = Vec::new();
    for i in 0..40 {
        let store = Arc::clone(&store);
        let process = [&p, &q, &missing][i % 3].clone();
        creates.push(tokio::spawn(async move {
            store
                .create_instance(
                    ws,
                    &process,
                    &InstanceData::empty(),
                    &InstanceStatus::default_status(),
                    "me",
                )
                .await
                .unwrap()
        }));
    }
    let mut writes = Vec::new();
    for _ in 0..2 {
        let (s, id, update) = (Arc::clone(&store), first.clone(), update.clone());
        writes.push(tokio::spawn(async move {
            s.update_instance(ws, &id, &update, "me").await.unwrap()
        }));
        let (s, id) = (Arc::clone(&store), second.clone());
        writes.push(tokio::spawn(async move {
            s.delete_instance(ws, &id, "me").await.unwrap()
        }));
    }
    let (mut numbers_p, mut numbers_q, mut none) = (Vec::new(), Vec::new(), 0);
    for task in creates {
        match task.await.unwrap() {
            Some(r) if r.process_name == "p" => numbers_p.push(r.id.number()),
            Some(r) => numbers_q.push(r.id.number()),
            None => none += 1,
        }
    }
    numbers_p.sort_unstable();
    numbers_q.sort_unstable();
    assert_eq!(numbers_p, (3..=16).collect::<Vec<i64>>());
    assert_eq!(numbers_q, (1..=13).collect::<Vec<i64>>());
    assert_eq!(none, 13);
    let mut outcomes: Vec<String> = Vec::new();
    for task in writes {
        outcomes.push(match task.await.unwrap() {
            Written::Done(r) if r.deleted_at.is_some() => "deleted".into(),
            Written::Done(r) => format!("updated to v{}", r.version),
            other => format!("{other:?}"),
        });
    }
    outcomes.sort();
    assert_eq!(
        outcomes,
        ["VersionChanged", "WrongState", "deleted", "updated to v2"]
    );
    let log = store
        .deliveries(ws, &DeliveryFilter::default(), None, 100)
        .await
        .unwrap()
        .items;
    let count = |event: EventType| log.iter().filter(|d| d.event_type == event).count();
    assert_eq!(count(EventType::Created), 2 + 14 + 13);
    assert_eq!(count(EventType::Updated), 1);
    assert_eq!(count(EventType::Deleted), 1);
    let key_of = |id: &InstanceId, event: EventType| {
        log.iter()
            .find(|d| d.instance_id == id.as_str() && d.event_type == event)
            .map(|d| d.key)
            .unwrap()
    };
    assert!(key_of(&first, EventType::Created) < key_of(&first, EventType::Updated));
    assert!(key_of(&second, EventType::Created) < key_of(&second, EventType::Deleted));
}

/// A write the database refuses fails alone: the others committed with it are written again
/// without it, and its number is not lost (numbering stays gap-free).
async fn a_refused_write_fails_alone(db: TestDb, trigger: &'static str) {
    let store = db.store().await;
    let ws = setup(&store).await;
    let p = process(&store, ws, "p").await;
    db.execute(trigger).await;
    let mut tasks = Vec::new();
    for i in 0..30 {
        let (store, p) = (Arc::clone(&store), p.clone());
        let data =
            InstanceData::parse(json!({"kind": if i == 15 { "poison" } else { "fine" }})).unwrap();
        tasks.push(tokio::spawn(async move {
            store
                .create_instance(ws, &p, &data, &InstanceStatus::default_status(), "me")
                .await
        }));
    }
    let (mut numbers, mut refused) = (Vec::new(), 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(Some(r)) => numbers.push(r.id.number()),
            Ok(None) => panic!("the process exists"),
            Err(_) => refused += 1,
        }
    }
    numbers.sort_unstable();
    assert_eq!(refused, 1);
    assert_eq!(numbers, (1..=29).collect::<Vec<i64>>());
    let stored = store.instances(ws, &p, None, 100).await.unwrap().items;
    assert_eq!(stored.len(), 29);
    assert!(stored.iter().all(|i| i.data.to_json().contains("fine")));
}

#[tokio::test]
async fn an_in_memory_sqlite_database_is_refused_with_the_way_out() {
    let error = herald::storage::open("sqlite::memory:")
        .await
        .err()
        .expect("an in-memory database is refused");
    let text = format!("{error:#}");
    assert!(
        text.contains("use a file, such as sqlite://herald.db"),
        "{text}"
    );
}

#[tokio::test]
async fn sqlite_a_refused_write_fails_alone() {
    a_refused_write_fails_alone(
        TestDb::sqlite(),
        "CREATE TRIGGER poison BEFORE INSERT ON instances WHEN NEW.data LIKE '%poison%'
         BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
    )
    .await;
}

#[tokio::test]
async fn postgres_a_refused_write_fails_alone() {
    if postgres_skipped() {
        return;
    }
    a_refused_write_fails_alone(
        TestDb::postgres().await,
        "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.data LIKE '%poison%' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$;
         CREATE TRIGGER poison BEFORE INSERT ON instances FOR EACH ROW EXECUTE FUNCTION poison();",
    )
    .await;
}

/// A node refuses a schema newer than it knows, on both backends, with a message that says what
/// to do; and `--no-migrate` refuses an old one.
async fn schema_versions_are_checked(db: TestDb, bump: &'static str) {
    let store = db.store().await;
    store.check_schema().await.unwrap();
    match &db {
        TestDb::Sqlite { url, .. } => {
            use sqlx::Connection;
            let mut c = sqlx::SqliteConnection::connect(url).await.unwrap();
            sqlx::query(bump).execute(&mut c).await.unwrap();
        }
        TestDb::Postgres { url, .. } => {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            sqlx::query(bump).execute(&mut c).await.unwrap();
        }
    }
    let err = store.migrate().await.unwrap_err().to_string();
    assert!(err.contains("newer than this Herald knows"), "{err}");
    assert!(store.check_schema().await.is_err());
}

#[tokio::test]
async fn sqlite_refuses_a_newer_schema() {
    schema_versions_are_checked(
        TestDb::sqlite(),
        "INSERT INTO herald_schema (version, name, applied_at) VALUES (999, 'future', 0)",
    )
    .await;
}

#[tokio::test]
async fn postgres_refuses_a_newer_schema() {
    if postgres_skipped() {
        return;
    }
    schema_versions_are_checked(
        TestDb::postgres().await,
        "INSERT INTO herald_schema (version, name, applied_at) VALUES (999, 'future', 0)",
    )
    .await;
}

#[tokio::test]
async fn no_migrate_refuses_an_unmigrated_database() {
    let db = TestDb::sqlite();
    let store = herald::storage::open(db.url()).await.unwrap();
    let err = store.check_schema().await.unwrap_err().to_string();
    assert!(err.contains("herald migrate"), "{err}");
}

/// A PostgreSQL store (and the same as `dyn Store`) on a fresh database, with one URL called
/// on `created` and one delivery queued for it.
async fn postgres_with_one_delivery(
    db: &TestDb,
) -> (
    herald::storage::postgres::PostgresStore,
    Arc<dyn Store>,
    WorkspaceId,
    ProcessName,
) {
    let store = herald::storage::postgres::PostgresStore::open(db.url())
        .await
        .unwrap();
    let dyn_store: Arc<dyn Store> = Arc::new(store.clone());
    dyn_store.migrate().await.unwrap();
    let ws = setup(&dyn_store).await;
    dyn_store
        .save_webhook_settings(ws, &settings(&["https://a.example/"], &[], &[]))
        .await
        .unwrap();
    let p = process(&dyn_store, ws, "p").await;
    create(&dyn_store, ws, &p).await;
    (store, dyn_store, ws, p)
}

/// Another session holding the queue table in its open transaction, until it rolls back.
async fn lock_the_queue(db: &TestDb) -> sqlx::PgConnection {
    let mut blocker = <sqlx::PgConnection as sqlx::Connection>::connect(db.url())
        .await
        .unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE deliveries IN ACCESS EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .unwrap();
    blocker
}

/// A claim that is slow on its generic plan, but not too slow, has the queue's statistics
/// refreshed (so PostgreSQL plans it again), and the node keeps its generic plan.
#[tokio::test]
async fn postgres_a_slow_claim_refreshes_the_queue_statistics() {
    if postgres_skipped() {
        return;
    }
    let db = TestDb::postgres().await;
    let (store, dyn_store, ws, p) = postgres_with_one_delivery(&db).await;
    let analyzed = || async {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(db.url())
            .await
            .unwrap();
        sqlx::query_scalar::<_, i64>(
            "SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'deliveries'",
        )
        .fetch_one(&mut conn)
        .await
        .unwrap()
    };
    assert_eq!(analyzed().await, 0);

    // Another session holds the queue table for 300 ms: the claim waits, then runs.
    let mut blocker = lock_the_queue(&db).await;
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        sqlx::raw_sql("ROLLBACK")
            .execute(&mut blocker)
            .await
            .unwrap();
    });
    let claimed = dyn_store
        .claim_due(claim(Millis::now(), 100, 100))
        .await
        .unwrap();
    release.await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(!store.claims_planned_afresh(), "the generic plan is kept");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while analyzed().await == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the queue's statistics were not refreshed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Claims go on as before.
    create(&dyn_store, ws, &p).await;
    let next = dyn_store
        .claim_due(claim(Millis::now(), 100, 100))
        .await
        .unwrap();
    assert_eq!(next.len(), 1);
}

/// A claim that cannot finish within `CLAIM_TIMEOUT` is cancelled before its leases could end,
/// and takes none; the node then plans its claims afresh, and they work as before.
#[tokio::test]
async fn postgres_a_claim_that_runs_too_long_is_cancelled_and_claims_carry_on() {
    if postgres_skipped() {
        return;
    }
    let db = TestDb::postgres().await;
    let (store, dyn_store, _, _) = postgres_with_one_delivery(&db).await;
    assert!(!store.claims_planned_afresh());

    // Another session holds the queue table, so the claim cannot run.
    let mut blocker = lock_the_queue(&db).await;
    let started = std::time::Instant::now();
    let blocked = dyn_store.claim_due(claim(Millis::now(), 100, 100)).await;
    let took = started.elapsed();
    assert!(blocked.is_err(), "the claim is cancelled: {blocked:?}");
    assert!(
        took >= herald::storage::postgres::CLAIM_TIMEOUT && took < Duration::from_secs(15),
        "cancelled after the claim timeout, well inside the lease: {took:?}"
    );
    assert!(store.claims_planned_afresh());
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocker)
        .await
        .unwrap();

    // Nothing was leased: the delivery is claimed at once, by a claim planned afresh.
    let claimed = dyn_store
        .claim_due(claim(Millis::now(), 100, 100))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert!(
        dyn_store
            .claim_due(claim(Millis::now(), 100, 100))
            .await
            .unwrap()
            .is_empty(),
        "and leased once"
    );
}

/// Pruning a delivery removes its attempts too: by the foreign key's cascade on SQLite, by the
/// prune itself on PostgreSQL (which has no foreign keys on the queue since migration 5).
async fn pruned_deliveries_leave_no_attempts(db: TestDb) {
    let store = db.store().await;
    let ws = setup(&store).await;
    let claimed = created_and_claimed(&store, ws, &["https://a.example/"], 1).await;
    settle(&store, ws, &claimed, |_, _| true).await;
    let later = Millis::now().plus(Duration::from_secs(1));
    assert_eq!(store.prune(later, 100).await.unwrap().deliveries, 1);
    assert!(
        store
            .deliveries(ws, &DeliveryFilter::default(), None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // What is left in the attempts table, read behind Herald's back.
    let left = rows_behind_herald(&db, "delivery_attempts").await;
    assert_eq!(left, 0, "the pruned delivery's attempts are gone");
}

on_both_backends!(
    #[tokio::test]
    pruned_deliveries_leave_no_attempts
);

/// Calls `urls` on `created` events, creates `creates` instances of a process `p` and claims
/// every delivery they queued.
async fn created_and_claimed(
    store: &Arc<dyn Store>,
    ws: WorkspaceId,
    urls: &[&str],
    creates: usize,
) -> Vec<herald::storage::ClaimedDelivery> {
    store
        .save_webhook_settings(ws, &settings(urls, &[], &[]))
        .await
        .unwrap();
    let p = process(store, ws, "p").await;
    for _ in 0..creates {
        create(store, ws, &p).await;
    }
    store
        .claim_due(claim(Millis::now(), 100, 100))
        .await
        .unwrap()
}

/// Records one attempt for each claimed delivery: a success where `succeeds` says so (given
/// its position and the delivery), otherwise a failure retried an hour later.
async fn settle(
    store: &Arc<dyn Store>,
    ws: WorkspaceId,
    claimed: &[herald::storage::ClaimedDelivery],
    succeeds: impl Fn(usize, &herald::storage::ClaimedDelivery) -> bool,
) {
    let retry = NextStep::RetryAt(Millis::now().plus(Duration::from_secs(3600)));
    let results: Vec<AttemptResult> = claimed
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if succeeds(i, c) {
                result(c, ws, true, NextStep::Succeeded)
            } else {
                result(c, ws, false, retry)
            }
        })
        .collect();
    store
        .record_attempts(&results, &BreakerPolicy::default())
        .await
        .unwrap();
}

/// Pruning deletes the events no delivery needs any more, a bounded batch at a time, and keeps
/// the event of a delivery still pending.
async fn pruning_keeps_only_the_events_deliveries_need(db: TestDb) {
    let store = db.store().await;
    let ws = setup(&store).await;
    let claimed = created_and_claimed(&store, ws, &["https://a.example/"], 3).await;
    assert_eq!(claimed.len(), 3);
    // Two succeed; the third waits an hour for its retry.
    settle(&store, ws, &claimed, |i, _| i < 2).await;
    // Three events with no delivery at all, as an older Herald stored them (it wrote an event
    // even when no URL was to be called; see `an_event_with_no_url_to_call_is_not_stored`).
    let legacy: Vec<(i64,)> = behind_herald(
        &db,
        "INSERT INTO events (workspace_id, event_type, instance_id, process_name, occurred_at)
         SELECT id, 'created', 'p-' || id, 'p', 0 FROM workspaces
         UNION ALL SELECT id, 'updated', 'p-1', 'p', 0 FROM workspaces
         UNION ALL SELECT id, 'deleted', 'p-1', 'p', 0 FROM workspaces
         RETURNING id",
    )
    .await;
    assert_eq!(legacy.len(), 3);
    let later = Millis::now().plus(Duration::from_secs(1));
    assert_eq!(
        store.prune(Millis(0), 100).await.unwrap(),
        Pruned::default(),
        "nothing is that old"
    );
    // Five events are not needed: three never had a delivery, two lose theirs in this pass.
    let mut passes = Vec::new();
    loop {
        let pruned = store.prune(later, 2).await.unwrap();
        passes.push((pruned.deliveries, pruned.events));
        if !pruned.filled(2) {
            break;
        }
    }
    assert_eq!(passes, [(2, 2), (0, 2), (0, 1)]);
    let pending = store
        .deliveries(ws, &DeliveryFilter::default(), None, 10)
        .await
        .unwrap()
        .items;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].status, DeliveryStatus::Pending);
    let left = rows_behind_herald(&db, "events").await;
    assert_eq!(left, 1, "only the pending delivery's event is left");
}

on_both_backends!(
    #[tokio::test]
    pruning_keeps_only_the_events_deliveries_need
);

/// An event is stored only for its deliveries: a write whose event has no URL enabled at that
/// moment changes the instance and writes no event, alone or in a batch with one that has.
async fn an_event_with_no_url_to_call_is_not_stored(db: TestDb) {
    let store = db.store().await;
    let ws = setup(&store).await;
    store
        .save_webhook_settings(ws, &settings(&["https://a.example/"], &[], &[]))
        .await
        .unwrap();
    let p = process(&store, ws, "p").await;
    let id = create(&store, ws, &p).await;
    // `updated` and `deleted` have no URL: neither writes an event.
    let update = InstanceUpdate {
        data: InstanceData::parse(json!({"x": 1})).unwrap(),
        status: InstanceStatus::default_status(),
        expected_version: 1,
    };
    assert!(matches!(
        store.update_instance(ws, &id, &update, "me").await.unwrap(),
        Written::Done(_)
    ));
    assert!(matches!(
        store.delete_instance(ws, &id, "me").await.unwrap(),
        Written::Done(_)
    ));
    // Callbacks off altogether: creates write none either, also many at once.
    store
        .save_webhook_settings(ws, &settings(&[], &[], &[]))
        .await
        .unwrap();
    let creates: Vec<_> = (0..8)
        .map(|_| {
            let store = Arc::clone(&store);
            let p = p.clone();
            tokio::spawn(async move { create(&store, ws, &p).await })
        })
        .collect();
    for c in creates {
        c.await.unwrap();
    }
    // `created` switched off with its URL kept in the list: still nothing to call.
    let (kept, none) = (vec!["https://a.example/".to_owned()], Vec::new());
    let off = WebhookSettings::parse([(false, &kept), (false, &none), (false, &none)]).unwrap();
    store.save_webhook_settings(ws, &off).await.unwrap();
    create(&store, ws, &p).await;
    let events: Vec<(String, String)> =
        behind_herald(&db, "SELECT instance_id, event_type FROM events").await;
    assert_eq!(events, [(id.as_str().to_owned(), "created".to_owned())]);
    let instances = rows_behind_herald(&db, "instances").await;
    assert_eq!(instances, 10, "every write changed its instance");
    assert_eq!(
        store
            .deliveries(ws, &DeliveryFilter::default(), None, 10)
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    an_event_with_no_url_to_call_is_not_stored
);

/// How many rows `table` holds, counted behind Herald's back.
async fn rows_behind_herald(db: &TestDb, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    let (n,): (i64,) = behind_herald(db, &sql).await.remove(0);
    n
}

/// Rows of `sql`, run straight on the test's database behind Herald's back: to read what it
/// stored, or to leave rows as an older Herald did.
pub(crate) async fn behind_herald<T>(db: &TestDb, sql: &str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
        + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>
        + Send
        + Unpin,
{
    match db {
        TestDb::Sqlite { url, .. } => {
            let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(url)
                .await
                .unwrap();
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(&mut conn)
                .await
                .unwrap()
        }
        TestDb::Postgres { url, .. } => {
            let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(url)
                .await
                .unwrap();
            sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .fetch_all(&mut conn)
                .await
                .unwrap()
        }
    }
}

/// Each `created` event keeps the new instance as the API returned it, byte for byte, also when
/// many creates are committed together (on PostgreSQL in one statement).
async fn created_events_keep_the_instance_as_returned(db: TestDb) {
    let store = db.store().await;
    let ws = setup(&store).await;
    store
        .save_webhook_settings(ws, &settings(&["https://a.example/"], &[], &[]))
        .await
        .unwrap();
    let p = process(&store, ws, "snap").await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = Arc::clone(&store);
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let data =
                InstanceData::parse(json!({"n": i, "text": "a \"quoted\" ünïcode"})).unwrap();
            store
                .create_instance(ws, &p, &data, &InstanceStatus::default_status(), "me")
                .await
                .unwrap()
                .unwrap()
        }));
    }
    let mut want = std::collections::HashMap::new();
    for t in tasks {
        let record = t.await.unwrap();
        want.insert(
            record.id.as_str().to_owned(),
            serde_json::to_string(&record).unwrap(),
        );
    }
    let mut numbers: Vec<i64> = want
        .keys()
        .map(|id| id.strip_prefix("snap-").unwrap().parse().unwrap())
        .collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=40).collect::<Vec<_>>(), "gap-free and unique");
    let stored: Vec<(String, String)> = behind_herald(
        &db,
        "SELECT instance_id, instance FROM events WHERE event_type = 'created'",
    )
    .await;
    assert_eq!(stored.len(), 40);
    for (id, snapshot) in stored {
        assert_eq!(Some(&snapshot), want.get(&id), "snapshot of {id}");
    }
}

on_both_backends!(
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    created_events_keep_the_instance_as_returned
);

/// With autovacuum off for the queue table, a node vacuums it itself once dead rows pile up.
#[tokio::test]
async fn postgres_a_node_vacuums_the_queue_when_autovacuum_does_not() {
    if postgres_skipped() {
        return;
    }
    let db = TestDb::postgres().await;
    let _store = db.store().await;
    let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(db.url())
        .await
        .unwrap();
    let vacuums = "SELECT vacuum_count + autovacuum_count FROM pg_stat_user_tables WHERE relname = 'deliveries'";
    sqlx::raw_sql(
        "ALTER TABLE deliveries SET (autovacuum_enabled = false);
         INSERT INTO deliveries (webhook_id, workspace_id, event_id, event_type, instance_id, process_name,
                                 url, host, status, attempts, next_attempt_at, created_at, updated_at)
         SELECT 'msg_' || g, 1, g, 'created', 'p-' || g, 'p', 'https://a.example/', 'a.example:443',
                'pending', 0, 0, 0, 0
         FROM generate_series(1, 3000) g;
         DELETE FROM deliveries;",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let before: i64 = sqlx::query_scalar(vacuums)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    // Closing the session reports its dead rows to the statistics.
    <sqlx::PgConnection as sqlx::Connection>::close(conn)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    loop {
        let mut conn = <sqlx::PgConnection as sqlx::Connection>::connect(db.url())
            .await
            .unwrap();
        let now: i64 = sqlx::query_scalar(vacuums)
            .fetch_one(&mut conn)
            .await
            .unwrap();
        if now > before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the queue table was not vacuumed within 40 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
