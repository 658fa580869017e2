//! The harness itself: a crashed service, a stop that never ends and a broken event stream fail the test that
//! meets them, instead of passing unnoticed.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::sync::oneshot;

use test_support::{HarnessFailure, SseReader, spawn_service_thread};

#[tokio::test]
#[should_panic(expected = "crashing-task-service crashed")]
async fn a_service_whose_task_panics_fails_the_test_when_it_is_stopped() {
    let handle = spawn_service_thread("crashing-task-service", None, |shutdown| async move {
        let _ = tokio::spawn(async { panic!("a task of the service crashed") }).await;
        shutdown.await;
    });
    handle.stop().await;
}

#[tokio::test]
#[should_panic(expected = "crashing-service crashed")]
async fn a_service_that_panics_fails_the_test_when_it_is_killed() {
    let (crashed, crash_seen) = oneshot::channel::<()>();
    let handle = spawn_service_thread("crashing-service", None, |_shutdown| async move {
        // The sender is dropped by the unwinding panic, which tells the test the crash happened.
        let _crashed = crashed;
        panic!("the service crashed at startup");
    });
    let _ = crash_seen.await;
    handle.kill().await;
}

#[tokio::test]
#[should_panic(expected = "dropped-service crashed")]
async fn a_crashed_service_fails_the_test_when_its_handle_is_dropped() {
    let (crashed, crash_seen) = oneshot::channel::<()>();
    let handle = spawn_service_thread("dropped-service", None, |shutdown| async move {
        let _ = tokio::spawn(async { panic!("a task of the service crashed") }).await;
        let _ = crashed.send(());
        shutdown.await;
    });
    crash_seen.await.expect("the service reports its task ended");
    drop(handle);
}

/// Serves one HTTP response whose chunked body carries one whole event and then breaks off mid-chunk.
async fn serve_a_stream_that_breaks_after_one_event() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut request = vec![0_u8; 4096];
        let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut request).await;
        let event = "id: 1\ndata: one\n\n";
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n\
             {:x}\r\n{event}\r\n40\r\ndata: cut sh",
            event.len()
        );
        socket.write_all(response.as_bytes()).await.expect("write");
        socket.flush().await.expect("flush");
        // Dropping the socket ends the body in the middle of a chunk, as a crashed server would.
    });
    format!("http://{address}/events")
}

#[tokio::test]
#[should_panic(expected = "the event stream broke")]
async fn a_broken_event_stream_fails_the_test_instead_of_ending_cleanly() {
    let url = serve_a_stream_that_breaks_after_one_event().await;
    let response = reqwest::get(&url).await.expect("the response starts");
    let mut events = SseReader::new(response);
    let first = events.next_event_within(Duration::from_secs(10)).await.expect("the whole first event");
    assert_eq!(first.data, "one");
    let _ = events.next_event_within(Duration::from_secs(10)).await;
}

#[tokio::test]
async fn a_service_that_ignores_its_shutdown_fails_the_stop_and_is_killed() {
    let (ended, service_ended) = oneshot::channel::<()>();
    let handle = spawn_service_thread("stubborn-service", None, |_shutdown| async move {
        // Dropped when the kill drops this future: the test sees the service really ended.
        let _ended = ended;
        std::future::pending::<()>().await;
    });
    let failure = handle.try_stop_within(Duration::from_millis(300)).await.expect_err("the stop fails");
    assert!(matches!(failure, HarnessFailure::ServiceDidNotStop { .. }), "{failure}");
    assert!(failure.to_string().contains("stubborn-service did not stop"), "{failure}");
    tokio::time::timeout(Duration::from_secs(10), service_ended)
        .await
        .expect("the stubborn service was killed")
        .expect_err("by dropping its future");
}

#[tokio::test]
async fn a_crash_is_reported_with_its_message_and_a_clean_service_stops_cleanly() {
    let crashing = spawn_service_thread("reporting-service", None, |shutdown| async move {
        let _ = tokio::spawn(async { panic!("the upstream answer had no body") }).await;
        shutdown.await;
    });
    let failure = crashing.try_stop_within(Duration::from_secs(10)).await.expect_err("a crash");
    match failure {
        HarnessFailure::ServiceCrashed { service, panics } => {
            assert_eq!(service, "reporting-service");
            assert_eq!(panics.len(), 1, "{panics:?}");
            assert!(panics[0].starts_with("the upstream answer had no body"), "{panics:?}");
        }
        other => panic!("expected a crash, got {other}"),
    }

    let clean = spawn_service_thread("clean-service", None, |shutdown| shutdown);
    clean.try_stop_within(Duration::from_secs(10)).await.expect("a clean stop");
}

#[tokio::test]
async fn a_broken_stream_is_an_error_for_try_next_event() {
    let url = serve_a_stream_that_breaks_after_one_event().await;
    let mut events = SseReader::new(reqwest::get(&url).await.expect("the response starts"));
    assert_eq!(events.try_next_event().await.expect("one whole event").expect("an event").data, "one");
    let failure = events.try_next_event().await.expect_err("the break is an error");
    assert!(matches!(failure, HarnessFailure::EventStreamBroke(_)), "{failure}");
}

/// Serves one response with an exact length, so the body ends cleanly as HTTP goes, after `body`.
async fn serve_a_whole_body(body: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.expect("accept");
        let mut request = vec![0_u8; 4096];
        let _ = tokio::io::AsyncReadExt::read(&mut socket, &mut request).await;
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        socket.write_all(response.as_bytes()).await.expect("write");
        socket.flush().await.expect("flush");
    });
    format!("http://{address}/events")
}

#[tokio::test]
async fn a_stream_that_ends_in_the_middle_of_an_event_is_broken_and_one_that_ends_between_events_is_not() {
    let cut = serve_a_whole_body("data: one\n\ndata: half of an ev").await;
    let mut events = SseReader::new(reqwest::get(&cut).await.expect("the response starts"));
    assert_eq!(events.try_next_event().await.expect("one whole event").expect("an event").data, "one");
    let failure = events.try_next_event().await.expect_err("the half event is an error");
    assert!(matches!(failure, HarnessFailure::EventStreamEndedMidEvent(_)), "{failure}");

    let whole = serve_a_whole_body("data: one\n\n: a keep-alive\n\n").await;
    let mut events = SseReader::new(reqwest::get(&whole).await.expect("the response starts"));
    let all = events.collect_all_within(Duration::from_secs(10)).await;
    assert_eq!(all.iter().map(|event| event.data.as_str()).collect::<Vec<_>>(), ["one"]);
}
