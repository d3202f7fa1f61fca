//! The server under hostile or careless clients, over raw sockets against the real binary:
//! stalled headers and bodies, oversized bodies, too many connections, requests hyper cannot
//! parse, and streams open when a shutdown's grace runs out.

use super::support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{Reply, Server};

/// Reads a whole response (the server closes the connection after it, or `Connection: close`).
fn read_reply(stream: &mut TcpStream) -> Reply {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    assert!(!raw.is_empty(), "no answer before the connection closed");
    Reply::parse(&raw)
}

/// The `{id, message}` shape of every error, and its message.
fn error_message(reply: &Reply) -> String {
    assert_eq!(
        reply.header("content-type"),
        Some("application/json"),
        "{}",
        reply.body
    );
    let body = reply.json();
    let object = body.as_object().expect("an object");
    assert_eq!(object.len(), 2, "exactly id and message: {body}");
    assert!(uuid_like(body["id"].as_str().unwrap()), "{body}");
    body["message"].as_str().unwrap().to_string()
}

fn uuid_like(id: &str) -> bool {
    id.len() == 36 && id.chars().filter(|c| *c == '-').count() == 4
}

/// True when the server closed the connection within `within`.
fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

#[test]
fn stalled_headers_are_closed_and_connections_are_capped() {
    let server = Server::start(&["--header-read-timeout", "1", "--max-connections", "6"]);
    // Six clients that send half a header and stall hold every connection.
    let mut stalled: Vec<TcpStream> = (0..6)
        .map(|_| {
            let mut s = TcpStream::connect(&server.addr).unwrap();
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // A seventh is told so at once, in the API's error shape.
    let mut extra = TcpStream::connect(&server.addr).unwrap();
    let reply = read_reply(&mut extra);
    assert_eq!(reply.status, 503);
    assert!(error_message(&reply).contains("limit of 6 open connections"));
    // The stalled ones are closed by the header timeout...
    for s in &mut stalled {
        assert!(
            closed_by_server(s, Duration::from_secs(15)),
            "a connection that stalled mid-header stayed open"
        );
    }
    // ...and real clients get in again.
    assert_eq!(server.request("GET", "/health", None, &[]).status, 200);
}

#[test]
fn slow_and_oversized_bodies_are_refused_in_the_error_shape() {
    let server = Server::start(&["--body-read-timeout", "1", "--max-body-bytes", "4096"]);
    // A declared length over the limit: 413 before a byte of the body is sent.
    let mut big = TcpStream::connect(&server.addr).unwrap();
    big.write_all(
        b"POST /v2/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n",
    )
    .unwrap();
    let reply = read_reply(&mut big);
    assert_eq!(reply.status, 413);
    assert!(error_message(&reply).contains("4096 bytes"));

    // A body that stops arriving: 408 after the body timeout.
    let mut slow = TcpStream::connect(&server.addr).unwrap();
    slow.write_all(
        b"POST /v2/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"model\":",
    )
    .unwrap();
    let reply = read_reply(&mut slow);
    assert_eq!(reply.status, 408);
    assert!(error_message(&reply).contains("did not arrive"));
}

#[test]
fn requests_hyper_cannot_parse_and_bad_paths_get_json_errors() {
    let server = Server::start(&[]);
    let mut garbage = TcpStream::connect(&server.addr).unwrap();
    garbage.write_all(b"GARBAGE\r\n\r\n").unwrap();
    let reply = read_reply(&mut garbage);
    assert_eq!(reply.status, 400);
    assert!(error_message(&reply).starts_with("invalid request: "));

    let mut huge = TcpStream::connect(&server.addr).unwrap();
    let header = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(600 * 1024)
    );
    let _ = huge.write_all(header.as_bytes());
    let reply = read_reply(&mut huge);
    assert_eq!(reply.status, 431);
    assert!(error_message(&reply).contains("headers are too large"));

    let reply = server.request("GET", "/v1/models/%FF", None, &[]);
    assert_eq!(reply.status, 400);
    assert!(error_message(&reply).starts_with("invalid request: "));
}

/// The SSE events of a raw HTTP response read so far, as JSON (`[DONE]` as a string).
fn sse_events(raw: &str) -> Vec<Value> {
    raw.split("\n\n")
        .filter_map(|block| {
            block
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .map(|d| serde_json::from_str(d).unwrap_or(Value::String(d.to_string())))
        })
        .collect()
}

/// Sends a streamed chat and returns the socket, with the response head read.
fn open_stream(server: &Server, body: &Value) -> BufReader<TcpStream> {
    let mut stream = TcpStream::connect(&server.addr).unwrap();
    let body = body.to_string();
    write!(
        stream,
        "POST /v2/chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).unwrap();
    assert!(line.starts_with("HTTP/1.1 200"), "{line}");
    loop {
        line.clear();
        reader.read_line(&mut line).unwrap();
        if line == "\r\n" {
            return reader;
        }
    }
}

/// A stream that cannot end early: its grammar wants a string of at least 6,000 characters,
/// several seconds of decoding.
fn long_stream_request() -> Value {
    json!({
        "model": "SmolLM2-135M-Instruct.Q4_1", "stream": true, "temperature": 0,
        "max_tokens": 6000,
        "messages": [{"role": "user", "content": "Write a long story as JSON."}],
        "response_format": {"type": "json_object", "json_schema": {
            "type": "object",
            "properties": {"story": {"type": "string", "minLength": 6000, "maxLength": 8000}},
            "required": ["story"]
        }}
    })
}

/// Reads a chunked SSE body until it ends; returns the text of the events.
fn read_chunked_to_end(reader: &mut BufReader<TcpStream>) -> String {
    let mut raw = Vec::new();
    let _ = reader.read_to_end(&mut raw);
    String::from_utf8_lossy(&raw).to_string()
}

#[test]
fn a_shutdown_drains_then_ends_open_streams_with_error_and_done() {
    let server = Server::start(&["--shutdown-grace", "2"]);
    let mut reader = open_stream(&server, &long_stream_request());
    // Wait for the first delta, so the stream is really generating.
    let mut seen = String::new();
    while !seen.contains("content-delta") {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        seen.push_str(&line);
    }
    let pid = server.child.id().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    // Draining: not ready at once, new chats refused, the open stream goes on.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let ready = server.request("GET", "/ready", None, &[]);
        if ready.status == 503 {
            error_message(&ready);
            break;
        }
        assert!(Instant::now() < deadline, "/ready stayed 200 after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }
    let refused = server.request(
        "POST",
        "/v2/chat",
        Some(
            &json!({"model": "SmolLM2-135M-Instruct.Q4_1", "max_tokens": 2,
                     "messages": [{"role": "user", "content": "hi"}]}),
        ),
        &[],
    );
    assert_eq!(refused.status, 503);
    // When the grace runs out the stream is ended properly, not cut.
    seen.push_str(&read_chunked_to_end(&mut reader));
    let events = sse_events(&seen);
    let end = events
        .iter()
        .find(|e| e["type"] == "message-end")
        .unwrap_or_else(|| panic!("no message-end in {seen}"));
    assert_eq!(end["delta"]["finish_reason"], "ERROR");
    assert!(end["delta"]["error"]
        .as_str()
        .unwrap()
        .contains("shutting down"));
    assert!(
        end["delta"]["usage"]["tokens"]["output_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    assert_eq!(events.last().unwrap(), &Value::String("[DONE]".into()));
}

#[test]
fn a_cancelled_stream_logs_the_tokens_it_used() {
    let server = Server::start(&[]);
    let mut reader = open_stream(&server, &long_stream_request());
    let mut deltas = 0;
    while deltas < 5 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        deltas += line.contains("\"content-delta\"") as usize;
    }
    drop(reader);
    let deadline = Instant::now() + Duration::from_secs(30);
    let line = loop {
        let log = server.log.lock().unwrap().clone();
        if let Some(line) = log
            .lines()
            .find(|l| l.contains(" chat") && l.contains("finish=CANCELLED"))
        {
            break line.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no cancelled chat in the log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let field = |name: &str| -> u64 {
        let at = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
        line[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .unwrap()
    };
    assert!(field("tokens_in") > 10, "{line}");
    assert!(field("tokens_out") >= 5, "{line}");
}
