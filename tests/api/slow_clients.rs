//! Slow and idle clients cannot hold the API: each request head has a deadline, and open
//! connections are capped (issue 19, item 5).

use crate::helpers::TestApp;
use reqwest::StatusCode;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens a connection that starts a request's head and never finishes it.
async fn slow_client(base: &str) -> TcpStream {
    let addr = base.trim_start_matches("http://");
    let mut socket = TcpStream::connect(addr).await.unwrap();
    socket
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: herald\r\nX-Slow: ")
        .await
        .unwrap();
    socket
}

/// Waits until the server closes `socket` (a read sees the end, or an error), or gives up.
async fn closed_by_the_server(socket: &mut TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // a 408 answer may come first
            }
        }
    });
    read.await.is_ok()
}

#[tokio::test]
async fn a_request_head_that_never_ends_is_cut_off_and_others_are_served_meanwhile() {
    let app =
        TestApp::spawn_with(|c| c.server.header_read_timeout = Duration::from_millis(300)).await;
    let mut slow = Vec::new();
    for _ in 0..50 {
        slow.push(slow_client(&app.base).await);
    }
    let (status, _) = app.get("/api/v1/processes").await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the API answers while 50 clients dawdle"
    );
    for socket in &mut slow {
        assert!(
            closed_by_the_server(socket).await,
            "a slow client kept its connection"
        );
    }
}

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_one_to_close() {
    let app = TestApp::spawn_with(|c| {
        c.server.max_connections = 5;
        c.server.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    let mut slow = Vec::new();
    for _ in 0..5 {
        slow.push(slow_client(&app.base).await);
    }
    // Answered only once a slow client's connection has been closed and its place freed.
    let (status, _) = app.get("/api/v1/processes").await;
    assert_eq!(status, StatusCode::OK);
    let closed = slow.iter().filter(|socket| is_closed(socket)).count();
    assert!(
        closed >= 1,
        "the sixth connection was served while five others held the cap"
    );
}

/// Whether the server has closed `socket` by now, without waiting.
fn is_closed(socket: &TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match socket.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {} // a 408 answer may come before the end
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}
