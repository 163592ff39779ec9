//! The benchmark program, run as a user runs it, in its smoke mode. It measures the `herald`
//! binary beside it, which `cargo test --workspace` builds for Herald's own tests.

#[test]
fn the_benchmark_runs_in_quick_mode_and_reports_every_scenario() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald-bench"))
        .args(["--quick", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("bare-client ceiling"), "{table}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let scenarios = doc["scenarios"].as_array().unwrap();
    assert_eq!(scenarios.len(), 13, "{doc}");
    for (i, s) in scenarios.iter().enumerate() {
        let name = s["scenario"].as_str().unwrap();
        assert!(
            name.starts_with(&format!("{} ", i + 1)),
            "{name} in place {}",
            i + 1
        );
    }
    for s in &scenarios[..8] {
        assert!(s["callbacks"].as_u64().unwrap() > 0, "{s}");
        assert!(s["callbacks_per_sec"].as_f64().unwrap() > 0.0, "{s}");
        assert!(s["peak_rss_mib"].as_f64().unwrap() > 0.0, "{s}");
        // The split by thread covers the threads alive at the end, never more than the whole.
        let threads = s["herald_threads_cpu_us_per_event"].as_object().unwrap();
        assert!(!threads.is_empty(), "{s}");
        let split: f64 = threads.values().map(|v| v.as_f64().unwrap()).sum();
        assert!(
            split <= s["herald_cpu_us_per_event"].as_f64().unwrap() + 1.0,
            "{s}"
        );
    }
    assert!(doc["ceiling_get_per_sec"].as_f64().unwrap() > 0.0);
    // The burst reports what a receiving team would check: it was accepted, it drained, and a
    // bare client with as many connections as Herald used was measured beside it.
    let burst = &scenarios[7]["burst"];
    assert!(burst["accepted_per_sec"].as_f64().unwrap() > 0.0, "{burst}");
    assert!(burst["drain_lag_s"].as_f64().unwrap() >= 0.0, "{burst}");
    assert!(burst["peak_in_flight"].as_u64().unwrap() >= 1, "{burst}");
    assert!(
        burst["bare_same_connections_per_sec"].as_f64().unwrap() > 0.0,
        "{burst}"
    );
    // The capacity scenarios reach their receiver and, in scenario 10, measure after the drop.
    for s in &scenarios[8..10] {
        assert!(s["callbacks"].as_u64().unwrap() > 0, "{s}");
        assert_eq!(s["capacity"]["capacity"], 200, "{s}");
    }
    assert!(
        scenarios[9]["capacity"]["after_drop_requests"]
            .as_u64()
            .unwrap()
            > 0,
        "{}",
        scenarios[9]
    );
    // The slow-worker bursts deliver everything, paced (11) and not (12); the drain (13)
    // reads the limit Herald's receiver ended at, for its bare client.
    for s in &scenarios[10..12] {
        assert!(s["callbacks"].as_u64().unwrap() > 0, "{s}");
        assert!(
            s["burst"]["accepted_per_sec"].as_f64().unwrap() > 0.0,
            "{s}"
        );
    }
    assert_eq!(
        scenarios[11]["burst"]["writes_paced"], 0.0,
        "{}",
        scenarios[11]
    );
    assert!(scenarios[12]["callbacks"].as_u64().unwrap() > 0);
    assert!(
        scenarios[12]["final_host_limit"].as_u64().unwrap() >= 1,
        "{}",
        scenarios[12]
    );
}
