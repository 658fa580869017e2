//! The gateway's own HTTP/1.1 connections: keep-alive and pipelining, request framing, refusals, HEAD, clients
//! that leave mid-stream, and HTTP/2 with prior knowledge.

use std::time::Duration;

use serde_json::Value;
use test_support::{StackOptions, TestStack};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LIMIT: Duration = Duration::from_secs(10);

async fn connect(stack: &TestStack) -> TcpStream {
    TcpStream::connect(stack.gateways[0].address.expect("address")).await.expect("connect")
}

/// Sends `request` as is and reads until the gateway closes the connection.
async fn exchange(stack: &TestStack, request: &[u8]) -> String {
    let mut connection = connect(stack).await;
    connection.write_all(request).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(LIMIT, connection.read_to_end(&mut answer))
        .await
        .expect("the gateway closes the connection")
        .expect("read");
    String::from_utf8_lossy(&answer).into_owned()
}

/// The JSON body of the last answer in `answers`.
fn last_json_body(answers: &str) -> Value {
    let body = answers.rsplit("\r\n\r\n").next().expect("a body");
    serde_json::from_str(body).expect("a JSON body")
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_on_one_connection_until_it_is_closed() {
    let stack = TestStack::start(StackOptions { workers: 0, ..StackOptions::default() }).await;

    let answers = exchange(
        &stack,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;

    let first = answers.find("HTTP/1.1 200 OK").expect("the first answer");
    let second = answers.find("HTTP/1.1 404 Not Found").expect("the second answer");
    assert!(first < second, "{answers}");
    assert!(answers[second..].contains("connection: close"), "{answers}");
    assert_eq!(last_json_body(&answers)["error"]["code"], "route_not_found");
}

#[tokio::test]
async fn a_chunked_body_sent_after_100_continue_is_read_whole() {
    let stack = TestStack::start(StackOptions { workers: 0, ..StackOptions::default() }).await;
    let mut connection = connect(&stack).await;
    connection
        .write_all(
            b"POST /api/chats HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
              Transfer-Encoding: chunked\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        )
        .await
        .expect("write head");
    let mut interim = [0_u8; 25];
    tokio::time::timeout(LIMIT, connection.read_exact(&mut interim)).await.expect("in time").expect("read");
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");

    let body = br#"{"message": "sent in pieces"}"#;
    let (head, tail) = body.split_at(10);
    let chunked = [
        format!("{:x}\r\n", head.len()).into_bytes(),
        head.to_vec(),
        format!("\r\n{:x};ext=1\r\n", tail.len()).into_bytes(),
        tail.to_vec(),
        b"\r\n0\r\nx-trailer: ignored\r\n\r\n".to_vec(),
    ]
    .concat();
    connection.write_all(&chunked).await.expect("write body");
    let mut answer = Vec::new();
    tokio::time::timeout(LIMIT, connection.read_to_end(&mut answer)).await.expect("in time").expect("read");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 202 Accepted"), "{answer}");
    assert_eq!(last_json_body(&answer)["position"], 1);
}

#[tokio::test]
async fn requests_that_could_be_read_two_ways_or_not_at_all_get_a_json_400() {
    let stack = TestStack::start(StackOptions { workers: 0, ..StackOptions::default() }).await;
    let smuggling = b"POST /api/chats HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\
                      Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    for request in [&smuggling[..], b"HELLO\r\n\r\n"] {
        let answer = exchange(&stack, request).await;
        assert!(answer.starts_with("HTTP/1.1 400 Bad Request"), "{answer}");
        assert!(answer.contains("x-dam-reason: malformed_request"), "{answer}");
        assert_eq!(last_json_body(&answer)["error"]["code"], "malformed_request");
    }
}

#[tokio::test]
async fn head_requests_and_http_1_0_clients_get_what_they_can_read() {
    let stack = TestStack::start(StackOptions { workers: 0, ..StackOptions::default() }).await;

    let head = exchange(&stack, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(head.contains("content-length: "), "{head}");
    assert!(head.ends_with("\r\n\r\n"), "no body after the head: {head:?}");

    // HTTP/1.0 has no keep-alive by default: one answer, then the connection closes.
    let old = exchange(&stack, b"GET /healthz HTTP/1.0\r\n\r\n").await;
    assert!(old.starts_with("HTTP/1.1 200 OK"), "{old}");
    assert_eq!(last_json_body(&old)["status"], "ok");
}

#[tokio::test]
async fn a_client_that_leaves_an_openai_stream_cancels_its_chat_before_anything_is_written_to_it() {
    // Nothing is written to the waiting stream for a minute (no queue updates, no keep-alives), so only watching
    // the connection can notice the client leave.
    let stack = TestStack::start_with(StackOptions { workers: 0, ..StackOptions::default() }, |settings| {
        settings.gateway.queue_update_interval_ms = 60_000;
        settings.gateway.sse_keep_alive_s = 60;
    })
    .await;
    let mut connection = connect(&stack).await;
    let body = r#"{"model":"mock-1","stream":true,"messages":[{"role":"user","content":"leaving soon"}]}"#;
    let request = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    connection.write_all(request.as_bytes()).await.expect("write");
    let mut first = vec![0_u8; 2048];
    let read =
        tokio::time::timeout(LIMIT, connection.read(&mut first)).await.expect("in time").expect("read");
    let first = String::from_utf8_lossy(&first[..read]);
    assert!(first.contains(": queued position=1"), "the stream started: {first}");

    drop(connection);

    let mut redis = stack.redis_connection().await;
    // The chat waits in its lane (no workers): its envelope names it.
    let queued: Vec<String> = redis::cmd("LRANGE")
        .arg(stack.keys().lane_queue(protocol::Lane::Standard))
        .arg(0)
        .arg(-1)
        .query_async(&mut redis)
        .await
        .expect("lrange");
    let envelope = protocol::JobEnvelope::decode(queued.first().expect("the chat waits")).expect("envelope");
    let state_key = stack.keys().job_state(&envelope.id);
    stack
        .wait_until("the chat is cancelled", LIMIT, || {
            let state_key = state_key.clone();
            let mut redis = redis.clone();
            async move {
                let status: Option<String> = redis::cmd("HGET")
                    .arg(&state_key)
                    .arg("status")
                    .query_async(&mut redis)
                    .await
                    .expect("hget");
                status.as_deref() == Some("cancelled")
            }
        })
        .await;
}

#[tokio::test]
async fn http2_clients_with_prior_knowledge_are_served() {
    use http_body_util::{BodyExt, Empty};

    let stack = TestStack::start(StackOptions { workers: 0, ..StackOptions::default() }).await;
    let io = hyper_util::rt::TokioIo::new(connect(&stack).await);
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.expect("h2");
    tokio::spawn(connection);
    let request = hyper::Request::get(format!("{}/healthz", stack.gateway_url(0)))
        .body(Empty::<bytes::Bytes>::new())
        .expect("request");

    let response = sender.send_request(request).await.expect("answer");

    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), hyper::Version::HTTP_2);
    let body = response.into_body().collect().await.expect("body").to_bytes();
    assert_eq!(serde_json::from_slice::<Value>(&body).expect("json")["status"], "ok");
}

/// Reads from `connection` until `received` contains `wanted`, the connection closes, or `LIMIT` passes.
async fn read_until(connection: &mut TcpStream, received: &mut String, wanted: &str) {
    let mut buffer = vec![0_u8; 4096];
    while !received.contains(wanted) {
        let read = tokio::time::timeout(LIMIT, connection.read(&mut buffer))
            .await
            .unwrap_or_else(|_| panic!("{wanted:?} within {LIMIT:?}: {received}"))
            .expect("read");
        if read == 0 {
            return;
        }
        received.push_str(&String::from_utf8_lossy(&buffer[..read]));
    }
}

#[tokio::test]
async fn a_stopping_gateway_ends_browser_event_streams_at_once_asking_the_client_to_resume_elsewhere() {
    // A drain far longer than the test's limits: only streams the gateway ends at once end in time.
    let mut stack =
        TestStack::start_with(StackOptions { workers: 0, ..StackOptions::default() }, |settings| {
            settings.gateway.shutdown_drain_s = 600;
        })
        .await;
    let created: Value =
        stack.post_chat(0, &serde_json::json!({"message": "moved"})).await.json().await.expect("json");
    let events_url = created["events_url"].as_str().expect("url");
    let mut connection = connect(&stack).await;
    connection
        .write_all(format!("GET {events_url} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut received = String::new();
    read_until(&mut connection, &mut received, "event: queued").await;
    assert!(received.contains("retry: 2000\n"), "{received}");

    let gateway = stack.gateways.remove(0);
    let stopped = tokio::spawn(gateway.stop());

    // The chunked body ends, after a short reconnect delay and without any final event: the chat is not over.
    read_until(&mut connection, &mut received, "\r\n0\r\n\r\n").await;
    let (_, tail) = received.split_once("event: queued").expect("queued");
    assert!(tail.contains("retry: 100\n"), "{received}");
    assert!(!tail.contains("event: done") && !tail.contains("event: error"), "{received}");
    assert!(received.ends_with("\r\n0\r\n\r\n"), "{received}");
    tokio::time::timeout(LIMIT, stopped).await.expect("the gateway stops").expect("join");
}

#[tokio::test]
async fn a_stopping_gateway_lets_openai_streams_finish_and_exits() {
    let mut stack = TestStack::start_with(StackOptions::default(), |settings| {
        settings.gateway.shutdown_drain_s = 600;
    })
    .await;
    // About two seconds of answer: the gateway is told to stop while it streams.
    let prompt = "finish me [[mock tokens=20 inter_token_ms=100]]";
    let response = stack
        .http
        .post(format!("{}/v1/chat/completions", stack.gateway_url(0)))
        .json(&serde_json::json!({"messages": [{"role": "user", "content": prompt}], "stream": true}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    let mut events = test_support::SseReader::new(response);
    let first = events.next_event_within(LIMIT).await.expect("a first chunk");
    let gateway = stack.gateways.remove(0);
    let address = gateway.address.expect("address");
    let stopped = tokio::spawn(gateway.stop());

    let mut all = vec![first];
    all.extend(events.collect_all_within(Duration::from_secs(30)).await);
    let (last, chunks) = all.split_last().expect("events");
    assert_eq!(last.data, "[DONE]", "the stream finishes although its gateway stops");
    let text: String = chunks
        .iter()
        .map(|event| serde_json::from_str::<Value>(&event.data).expect("chunk json"))
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, mock_llm::answer_text(prompt, 20));
    tokio::time::timeout(LIMIT, stopped).await.expect("the gateway stops").expect("join");
    assert!(TcpStream::connect(address).await.is_err(), "nothing listens any more");
}

#[tokio::test]
async fn a_stopping_gateway_ends_the_streams_left_when_the_drain_time_is_over_and_exits() {
    let mut stack =
        TestStack::start_with(StackOptions { workers: 0, ..StackOptions::default() }, |settings| {
            settings.gateway.shutdown_drain_s = 1;
        })
        .await;
    // No worker: the chat stays queued, so only the drain's end can end its stream.
    let response = stack
        .http
        .post(format!("{}/v1/chat/completions", stack.gateway_url(0)))
        .json(&serde_json::json!({"messages": [{"role": "user", "content": "never served"}], "stream": true}))
        .send()
        .await
        .expect("post");
    assert_eq!(response.status(), 200);
    let mut events = test_support::SseReader::new(response);
    let gateway = stack.gateways.remove(0);
    let stopped = tokio::spawn(gateway.stop());

    let rest = events.collect_all_within(LIMIT).await;
    assert!(rest.iter().all(|event| event.data != "[DONE]"), "{rest:?}");
    tokio::time::timeout(LIMIT, stopped).await.expect("the gateway stops").expect("join");
}

#[tokio::test]
async fn a_stopping_gateway_answers_a_request_that_comes_on_an_idle_keep_alive_connection_then_closes_it() {
    let mut stack =
        TestStack::start_with(StackOptions { workers: 0, ..StackOptions::default() }, |_| {}).await;
    let mut connection = connect(&stack).await;
    let health = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    connection.write_all(health).await.expect("write");
    let mut received = String::new();
    read_until(&mut connection, &mut received, "\"ok\"").await;
    assert!(!received.to_ascii_lowercase().contains("connection: close"), "{received}");

    let gateway = stack.gateways.remove(0);
    let address = gateway.address.expect("address");
    let stopped = tokio::spawn(gateway.stop());
    stack
        .wait_until("the gateway stops accepting", LIMIT, || async {
            TcpStream::connect(address).await.is_err()
        })
        .await;

    // A proxy that picked this idle connection just now must get an answer, not a closed connection.
    connection.write_all(health).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(LIMIT, connection.read_to_end(&mut answer))
        .await
        .expect("the gateway answers, then closes the connection")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer).to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    tokio::time::timeout(LIMIT, stopped).await.expect("the gateway stops").expect("join");
}

#[tokio::test]
async fn a_quiet_event_stream_gets_keep_alive_comments() {
    let stack = TestStack::start_with(StackOptions { workers: 0, ..StackOptions::default() }, |settings| {
        settings.gateway.queue_update_interval_ms = 60_000;
        settings.gateway.sse_keep_alive_s = 1;
    })
    .await;
    let created: Value =
        stack.post_chat(0, &serde_json::json!({"message": "quiet"})).await.json().await.expect("json");
    let events_url = created["events_url"].as_str().expect("url");
    let mut connection = connect(&stack).await;
    let request = format!("GET {events_url} HTTP/1.1\r\nHost: x\r\n\r\n");
    connection.write_all(request.as_bytes()).await.expect("write");

    let mut received = String::new();
    let mut buffer = vec![0_u8; 4096];
    while !received.contains("\r\n:\n\n") {
        let read = tokio::time::timeout(LIMIT, connection.read(&mut buffer))
            .await
            .expect("a keep-alive comes while nothing else does")
            .expect("read");
        assert!(read > 0, "the stream stays open: {received}");
        received.push_str(&String::from_utf8_lossy(&buffer[..read]));
    }
    assert!(received.contains("event: queued"), "{received}");
}
