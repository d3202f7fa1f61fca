//! End to end: start the real `cohost serve` binary on a free port with the default model, wait
//! until it is ready, and talk to it over a plain TCP socket with a hand-written HTTP/1.1 client.
//! The server's log is printed whenever a test fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The folder the default model is in: the test run's COHOST_MODEL_DIR, else the repository's.
fn model_dir() -> std::path::PathBuf {
    std::env::var_os("COHOST_MODEL_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models/cache"))
}

/// The running binary; killed on drop, its log printed if the test is failing.
struct Server {
    child: Child,
    log: Arc<Mutex<String>>,
    addr: String,
}

impl Server {
    fn start(extra: &[&str]) -> Self {
        let default_model = model_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(
            default_model.is_file(),
            "default model missing at {}: run models/fetch-default.sh",
            default_model.display()
        );
        let mut child = Command::new(env!("CARGO_BIN_EXE_cohost"))
            .args(["serve", "--port", "0", "--max-concurrent", "2"])
            .args(extra)
            .env("RUST_LOG", "info")
            .env("COHOST_MODEL_DIR", model_dir())
            .env_remove("COHOST_MODEL")
            .env_remove("COHOST_API_KEY")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cohost starts");
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(at) = line.find("addr=") {
                    let addr: String = line[at + 5..]
                        .chars()
                        .take_while(|c| !c.is_whitespace())
                        .collect();
                    let _ = addr_tx.send(addr);
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let addr = match addr_rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("no listening address in the log:\n{}", log.lock().unwrap());
            }
        };
        let server = Self { child, log, addr };
        server.wait_ready();
        server
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(180);
        loop {
            if let Ok(reply) = self.try_request("GET", "/ready", None, &[]) {
                if reply.status == 200 {
                    return;
                }
                assert_eq!(
                    reply.status, 503,
                    "readiness is 503 until loaded: {}",
                    reply.body
                );
            }
            assert!(Instant::now() < deadline, "server not ready within 180 s");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        self.try_request(method, path, body, headers)
            .expect("request round trip")
    }

    fn try_request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> std::io::Result<Reply> {
        let mut stream = TcpStream::connect(&self.addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
            self.addr
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !body.is_empty() {
            head.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes())?;
        stream.write_all(body.as_bytes())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        Ok(Reply::parse(&raw))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- cohost log -----\n{}\n----------------------",
                self.log.lock().unwrap()
            );
        }
    }
}

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    /// Parses a whole HTTP/1.1 response, undoing chunked transfer encoding.
    fn parse(raw: &[u8]) -> Self {
        let split = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("response has a head");
        let head = std::str::from_utf8(&raw[..split]).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let mut body = raw[split + 4..].to_vec();
        if headers
            .iter()
            .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"))
        {
            body = dechunk(&body);
        }
        Self {
            status,
            headers,
            body: String::from_utf8(body).expect("utf-8 body"),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size line");
        let size_text = std::str::from_utf8(&data[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).unwrap();
        data = &data[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[test]
fn serves_the_default_model_and_streams_a_reply() {
    let server = Server::start(&[]);

    let health = server.request("GET", "/health", None, &[]);
    assert_eq!(health.status, 200);

    let models = server.request("GET", "/v1/models", None, &[]).json();
    let name = models["models"][0]["name"]
        .as_str()
        .expect("a model name")
        .to_string();
    assert_eq!(name, "SmolLM2-135M-Instruct.Q4_1");

    let request = json!({
        "model": name, "stream": true, "temperature": 0, "max_tokens": 12,
        "messages": [{"role": "user", "content": "What is the capital of France?"}]
    });
    let reply = server.request("POST", "/v2/chat", Some(&request), &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply
        .header("content-type")
        .unwrap()
        .starts_with("text/event-stream"));
    assert!(reply.body.ends_with("data: [DONE]\n\n"), "{}", reply.body);

    let mut types = Vec::new();
    let mut text = String::new();
    for block in reply
        .body
        .split("\n\n")
        .filter(|b| !b.is_empty() && !b.starts_with(':'))
    {
        let data = block
            .lines()
            .filter(|l| l.starts_with("data: "))
            .collect::<Vec<_>>();
        assert_eq!(data.len(), 1, "one data line per event: {block:?}");
        let data = &data[0]["data: ".len()..];
        if data == "[DONE]" {
            continue;
        }
        let event: Value = serde_json::from_str(data).unwrap();
        let kind = event["type"].as_str().unwrap().to_string();
        assert_eq!(block.lines().next().unwrap(), format!("event: {kind}"));
        if kind == "content-delta" {
            text.push_str(
                event["delta"]["message"]["content"]["text"]
                    .as_str()
                    .unwrap(),
            );
        }
        if kind == "message-end" {
            let usage = &event["delta"]["usage"]["tokens"];
            assert!(usage["input_tokens"].as_u64().unwrap() > 5);
            let out = usage["output_tokens"].as_u64().unwrap();
            assert!((1..=12).contains(&out), "{event}");
            let finish = event["delta"]["finish_reason"].as_str().unwrap();
            assert!(["COMPLETE", "MAX_TOKENS"].contains(&finish), "{finish}");
        }
        types.push(kind);
    }
    assert_eq!(types.first().map(String::as_str), Some("message-start"));
    assert_eq!(types.get(1).map(String::as_str), Some("content-start"));
    assert_eq!(&types[types.len() - 2..], ["content-end", "message-end"]);
    assert!(types.iter().filter(|t| *t == "content-delta").count() >= 1);
    assert!(!text.trim().is_empty());

    // The same request without streaming gives the same greedy text.
    let mut plain = request.clone();
    plain["stream"] = json!(false);
    let reply = server.request("POST", "/v2/chat", Some(&plain), &[]);
    assert_eq!(reply.status, 200, "{}", reply.body);
    let body = reply.json();
    assert_eq!(
        body["message"]["content"][0]["text"].as_str().unwrap(),
        text
    );

    // A client mistake is a JSON 400, an unknown model a 404.
    let bad = server.request(
        "POST",
        "/v2/chat",
        Some(&json!({"model": name, "messages": [], "temperature": 3})),
        &[],
    );
    assert_eq!(bad.status, 400);
    assert!(bad.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("invalid request: temperature"));
    let missing = server.request(
        "POST",
        "/v2/chat",
        Some(&json!({"model": "nope", "messages": []})),
        &[],
    );
    assert_eq!(missing.status, 404);
}

#[test]
fn api_keys_guard_the_api_but_not_health() {
    let server = Server::start(&["--api-key", "sekret", "--served-model-name", "smol"]);
    let request =
        json!({"model": "smol", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]});
    let denied = server.request("POST", "/v2/chat", Some(&request), &[]);
    assert_eq!(denied.status, 401);
    assert!(denied.json()["id"].is_string());
    let wrong = server.request(
        "POST",
        "/v2/chat",
        Some(&request),
        &[("Authorization", "Bearer nope")],
    );
    assert_eq!(wrong.status, 401);
    let ok = server.request(
        "POST",
        "/v2/chat",
        Some(&request),
        &[("Authorization", "bearer sekret")],
    );
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(server.request("GET", "/health", None, &[]).status, 200);
}
