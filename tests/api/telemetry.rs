//! OpenTelemetry traces: the binary, given the standard `OTEL_*` variables, sends OTLP/HTTP
//! spans to a collector (here one inside the test, taking OTLP's JSON form): the API request,
//! the group commit and the callback attempt both linked to it, the claim, and the webhook ID.

use crate::helpers::{ADMIN_TOKEN, Receiver, Remote, eventually};
use axum::extract::State;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};

/// An OTLP/HTTP collector that keeps every span it is sent.
async fn collector() -> (String, Arc<Mutex<Vec<Value>>>) {
    let spans: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            axum::routing::post(
                |State(spans): State<Arc<Mutex<Vec<Value>>>>, body: axum::body::Bytes| async move {
                    let request: Value = serde_json::from_slice(&body).expect("OTLP JSON");
                    let mut kept = spans.lock().unwrap();
                    for resource in request["resourceSpans"].as_array().unwrap() {
                        for scope in resource["scopeSpans"].as_array().unwrap() {
                            for span in scope["spans"].as_array().unwrap() {
                                let mut span = span.clone();
                                span["resource"] = resource["resource"].clone();
                                kept.push(span);
                            }
                        }
                    }
                    axum::Json(json!({}))
                },
            ),
        )
        .with_state(Arc::clone(&spans));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), spans)
}

/// The value of a span's attribute, whatever its type.
fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a Value> {
    let value = &span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?["value"];
    value.as_object()?.values().next()
}

fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

#[tokio::test]
async fn one_event_is_traced_from_request_to_callback() {
    herald::startup::install_tls_provider();
    let (endpoint, spans) = collector().await;
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("h.db").display());
    let node = herald_testkit::spawn_node(
        std::path::Path::new(env!("CARGO_BIN_EXE_herald")),
        &[
            "serve",
            "--database",
            &db,
            "--listen",
            "127.0.0.1:0",
            "--allow-private-network",
        ],
        &[
            ("HERALD_ADMIN_TOKEN", ADMIN_TOKEN),
            ("RUST_LOG", "warn"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    )
    .await
    .unwrap();
    let herald = Remote::new(&node.base);
    let receiver = Receiver::start().await;
    let url = receiver.url("/hook");
    herald
        .put(
            "/api/v1/webhooks",
            json!({"created": {"enabled": true, "urls": [url]},
                   "updated": {"enabled": false, "urls": []},
                   "deleted": {"enabled": false, "urls": []}}),
        )
        .await;
    herald
        .post(
            "/api/v1/processes",
            json!({"name": "trip", "title": "Trip"}),
        )
        .await;
    herald
        .post("/api/v1/processes/trip/instances", json!({"data": {}}))
        .await;
    let callback = receiver.wait_for(Some("/hook"), 1).await.remove(0);
    let webhook_id = callback.header("webhook-id").unwrap().to_owned();

    let spans = eventually("the callback attempt's span to arrive", || {
        let spans = Arc::clone(&spans);
        async move {
            let spans = spans.lock().unwrap().clone();
            (!named(&spans, "callback attempt").is_empty()).then_some(spans)
        }
    })
    .await;

    let create = named(&spans, "POST /api/v1/processes/{name}/instances");
    assert_eq!(create.len(), 1, "one span per request: {spans:#?}");
    let create = create[0];
    assert_eq!(create["kind"], 2, "a server span");
    let status = attribute(create, "http.response.status_code").unwrap();
    assert!(status == "201" || status == 201, "{create}");
    assert_eq!(
        create["resource"]["attributes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["key"] == "service.name")
            .unwrap()["value"]["stringValue"],
        "herald"
    );

    // The group commit that wrote it links back to the request.
    let linked = named(&spans, "group commit").into_iter().any(|commit| {
        commit["links"].as_array().is_some_and(|links| {
            links
                .iter()
                .any(|l| l["spanId"] == create["spanId"] && l["traceId"] == create["traceId"])
        })
    });
    assert!(linked, "no group commit links to the request: {spans:#?}");

    assert!(!named(&spans, "claim").is_empty(), "{spans:#?}");
    let attempt = named(&spans, "callback attempt")[0];
    assert_eq!(attribute(attempt, "webhook.id"), Some(&json!(webhook_id)));
    assert_eq!(attribute(attempt, "outcome"), Some(&json!("success")));
    assert_eq!(attribute(attempt, "url"), Some(&json!(url)));
    assert_eq!(attribute(attempt, "event.type"), Some(&json!("created")));
    assert_eq!(attempt["kind"], 3, "a client span");
    // The attempt links back to the request that queued it (through the delivery's stored
    // `traceparent`), so a trace viewer leads from the callback to its request.
    let links_to_request = attempt["links"].as_array().is_some_and(|links| {
        links
            .iter()
            .any(|l| l["spanId"] == create["spanId"] && l["traceId"] == create["traceId"])
    });
    assert!(
        links_to_request,
        "the attempt does not link to its request: {attempt:#}"
    );
    // The request and the attempt name the same instance.
    assert_eq!(attribute(create, "instance.id"), Some(&json!("trip-1")));
    assert_eq!(attribute(attempt, "instance.id"), Some(&json!("trip-1")));

    let everything = serde_json::to_string(&spans).unwrap();
    assert!(!everything.contains(ADMIN_TOKEN), "no secret in a span");
    drop(node);
}
