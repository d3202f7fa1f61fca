//! Model resolution against real files: local GGUF files and Hugging Face directories, and Hub ids
//! served from a Hugging Face cache laid out on disk the way the Python library writes it
//! (`models--org--name/{refs,snapshots,blobs}` with snapshot files symlinked into `blobs/`).
//! Offline mode comes from `ResolveOptions`, not the process environment, so tests stay
//! independent while they run in parallel.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use runner::loader::{
    read_generation_config, resolve, safetensors_files, GenerationConfig, LoadError, ModelFiles,
    ResolveOptions,
};

/// A directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("cohost-loader-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const GGUF: &[u8] = b"GGUF\x03\x00\x00\x00 not a real model past the magic";

fn local() -> ResolveOptions {
    // Local paths never consult these; offline makes sure a mistake cannot reach the network.
    ResolveOptions {
        offline: true,
        cache_dir: Some("/nonexistent-cache".into()),
        ..Default::default()
    }
}

fn hf_dir(dir: &TempDir) {
    dir.write("config.json", br#"{"model_type": "llama"}"#);
    dir.write("tokenizer.json", br#"{"version": "1.0"}"#);
    dir.write(
        "tokenizer_config.json",
        br#"{"chat_template": "{{ messages }}"}"#,
    );
    dir.write("model.safetensors", b"weights");
}

#[test]
fn gguf_file_resolves_with_its_stem_as_name() {
    let dir = TempDir::new("gguf");
    let path = dir.write("SmolLM2-135M-Instruct.Q4_1.gguf", GGUF);
    let model = resolve(path.to_str().unwrap(), &local()).unwrap();
    assert_eq!(model.files, ModelFiles::Gguf { path });
    assert_eq!(model.name, "SmolLM2-135M-Instruct.Q4_1");
}

#[test]
fn file_without_gguf_magic_is_rejected_with_its_path() {
    let dir = TempDir::new("notgguf");
    let path = dir.write("model.gguf", b"PK\x03\x04zip");
    let err = resolve(path.to_str().unwrap(), &local()).unwrap_err();
    assert!(matches!(err, LoadError::NotGguf { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("model.gguf") && msg.contains("GGUF"), "{msg}");
}

#[test]
fn missing_path_is_not_found_not_a_hub_lookup() {
    let dir = TempDir::new("missing");
    let path = dir.path().join("absent.gguf");
    let err = resolve(path.to_str().unwrap(), &local()).unwrap_err();
    assert!(matches!(err, LoadError::NotFound { .. }), "{err:?}");
    assert!(err.to_string().contains("absent.gguf"));
}

#[test]
fn hugging_face_directory_resolves() {
    let dir = TempDir::new("hfdir");
    hf_dir(&dir);
    let model = resolve(dir.path().to_str().unwrap(), &local()).unwrap();
    assert_eq!(
        model.files,
        ModelFiles::HfDir {
            dir: dir.path().to_path_buf()
        }
    );
    assert_eq!(
        model.name,
        dir.path().file_name().unwrap().to_str().unwrap()
    );
    assert_eq!(
        safetensors_files(dir.path()).unwrap(),
        vec![dir.path().join("model.safetensors")]
    );
}

#[test]
fn hugging_face_directory_without_tokenizer_names_the_missing_file() {
    let dir = TempDir::new("notok");
    hf_dir(&dir);
    std::fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    let err = resolve(dir.path().to_str().unwrap(), &local()).unwrap_err();
    match &err {
        LoadError::MissingFile { file, dir: d } => {
            assert_eq!(file, "tokenizer.json");
            assert_eq!(d, dir.path());
        }
        other => panic!("expected MissingFile, got {other:?}"),
    }
    assert!(err.to_string().contains("no tokenizer.json"), "{err}");
}

#[test]
fn broken_config_json_is_reported() {
    let dir = TempDir::new("badcfg");
    hf_dir(&dir);
    dir.write("config.json", b"{not json");
    let err = resolve(dir.path().to_str().unwrap(), &local()).unwrap_err();
    assert!(
        matches!(err, LoadError::Json { ref path, .. } if path.ends_with("config.json")),
        "{err:?}"
    );
}

#[test]
fn sharded_safetensors_need_every_shard() {
    let dir = TempDir::new("shards");
    hf_dir(&dir);
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    dir.write(
        "model.safetensors.index.json",
        br#"{"metadata": {"total_size": 10}, "weight_map": {
            "a": "model-00002-of-00002.safetensors",
            "b": "model-00001-of-00002.safetensors",
            "c": "model-00001-of-00002.safetensors"}}"#,
    );
    dir.write("model-00001-of-00002.safetensors", b"1");
    let err = resolve(dir.path().to_str().unwrap(), &local()).unwrap_err();
    match &err {
        LoadError::MissingShards { missing, .. } => {
            assert_eq!(
                missing,
                &vec!["model-00002-of-00002.safetensors".to_string()]
            )
        }
        other => panic!("expected MissingShards, got {other:?}"),
    }
    dir.write("model-00002-of-00002.safetensors", b"2");
    let model = resolve(dir.path().to_str().unwrap(), &local()).unwrap();
    assert!(matches!(model.files, ModelFiles::HfDir { .. }));
    assert_eq!(
        safetensors_files(dir.path()).unwrap(),
        vec![
            dir.path().join("model-00001-of-00002.safetensors"),
            dir.path().join("model-00002-of-00002.safetensors")
        ]
    );
}

#[test]
fn pytorch_only_directory_says_weights_are_missing() {
    let dir = TempDir::new("bin");
    dir.write("config.json", b"{}");
    dir.write("tokenizer.json", b"{}");
    dir.write("pytorch_model.bin", b"pickle");
    let err = resolve(dir.path().to_str().unwrap(), &local()).unwrap_err();
    assert!(matches!(err, LoadError::NoWeights { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("pytorch_model.bin") && msg.contains("model.safetensors"),
        "{msg}"
    );
}

#[test]
fn directory_with_ggufs_picks_by_preference_or_lists_them() {
    let one = TempDir::new("onegguf");
    let only = one.write("whatever.gguf", GGUF);
    one.write("README.md", b"hi");
    let model = resolve(one.path().to_str().unwrap(), &local()).unwrap();
    assert_eq!(model.files, ModelFiles::Gguf { path: only });

    let many = TempDir::new("manygguf");
    many.write("m-Q8_0.gguf", GGUF);
    let preferred = many.write("m-Q4_0.gguf", GGUF);
    many.write("m-F16.gguf", GGUF);
    let model = resolve(many.path().to_str().unwrap(), &local()).unwrap();
    assert_eq!(model.files, ModelFiles::Gguf { path: preferred });

    let none = TempDir::new("nopref");
    none.write("m-F16.gguf", GGUF);
    none.write("m-Q6_K.gguf", GGUF);
    let err = resolve(none.path().to_str().unwrap(), &local()).unwrap_err();
    assert!(matches!(err, LoadError::AmbiguousGguf { .. }), "{err:?}");
    assert!(err.to_string().contains("m-F16.gguf, m-Q6_K.gguf"), "{err}");
}

#[test]
fn empty_directory_says_what_a_model_is() {
    let dir = TempDir::new("empty");
    dir.write("notes.txt", b"");
    let err = resolve(dir.path().to_str().unwrap(), &local()).unwrap_err();
    assert!(matches!(err, LoadError::NotAModel { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("no .gguf file and no config.json") && msg.contains("notes.txt"),
        "{msg}"
    );
}

#[test]
fn generation_config_eos_as_int_or_list() {
    let dir = TempDir::new("gencfg");
    assert_eq!(read_generation_config(dir.path()).unwrap(), None);

    dir.write(
        "generation_config.json",
        br#"{"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": null, "temperature": 0.7,
            "top_p": 0.9, "top_k": 64, "do_sample": true, "transformers_version": "4.50"}"#,
    );
    let cfg = read_generation_config(dir.path()).unwrap().unwrap();
    assert_eq!(
        cfg,
        GenerationConfig {
            eos_token_ids: vec![2],
            bos_token_id: Some(1),
            pad_token_id: None,
            temperature: Some(0.7),
            top_p: Some(0.9),
            top_k: Some(64),
            do_sample: Some(true),
            repetition_penalty: None,
            max_new_tokens: None,
        }
    );

    dir.write("generation_config.json", br#"{"eos_token_id": [1, 106]}"#);
    let cfg = read_generation_config(dir.path()).unwrap().unwrap();
    assert_eq!(cfg.eos_token_ids, vec![1, 106]);
    assert_eq!(cfg.bos_token_id, None);

    dir.write("generation_config.json", br#"{"eos_token_id": null}"#);
    assert!(read_generation_config(dir.path())
        .unwrap()
        .unwrap()
        .eos_token_ids
        .is_empty());
}

#[test]
fn generation_config_with_wrong_types_is_an_error() {
    let dir = TempDir::new("badgen");
    for (body, key) in [
        (r#"{"eos_token_id": "</s>"}"#, "eos_token_id"),
        (r#"{"eos_token_id": [2, -1]}"#, "eos_token_id"),
        (r#"{"bos_token_id": 1.5}"#, "bos_token_id"),
        (r#"{"temperature": "hot"}"#, "temperature"),
        (r#"[1, 2]"#, "object"),
    ] {
        dir.write("generation_config.json", body.as_bytes());
        let err = read_generation_config(dir.path()).unwrap_err();
        assert!(
            matches!(err, LoadError::Malformed { .. }),
            "{body}: {err:?}"
        );
        assert!(err.to_string().contains(key), "{body}: {err}");
    }
    dir.write("generation_config.json", b"{");
    assert!(matches!(
        read_generation_config(dir.path()),
        Err(LoadError::Json { .. })
    ));
}

// ---- Hub ids against a Hugging Face cache on disk ----

const COMMIT_MAIN: &str = "0123456789abcdef0123456789abcdef01234567";
const COMMIT_V2: &str = "fedcba9876543210fedcba9876543210fedcba98";

/// Writes `files` into `snapshots/<commit>/` as relative symlinks into `blobs/`, as real caches
/// have them, and points each of `refs` at the commit.
fn cache_snapshot(
    cache: &Path,
    repo_id: &str,
    commit: &str,
    refs: &[&str],
    files: &[(&str, &[u8])],
) {
    let repo = cache.join(format!("models--{}", repo_id.replace('/', "--")));
    for name in refs {
        let path = repo.join("refs").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, commit).unwrap();
    }
    let snapshot = repo.join("snapshots").join(commit);
    for (name, contents) in files {
        // Blob names are content hashes in real caches; any unique name does here.
        let blob_name = format!("{commit}-{}", name.replace('/', "_"));
        let blob = repo.join("blobs").join(&blob_name);
        std::fs::create_dir_all(blob.parent().unwrap()).unwrap();
        std::fs::write(&blob, contents).unwrap();
        let link = snapshot.join(name);
        std::fs::create_dir_all(link.parent().unwrap()).unwrap();
        let depth = name.matches('/').count() + 2;
        let target = PathBuf::from("../".repeat(depth))
            .join("blobs")
            .join(&blob_name);
        std::os::unix::fs::symlink(target, &link).unwrap();
    }
}

fn offline(cache: &TempDir) -> ResolveOptions {
    ResolveOptions {
        offline: true,
        cache_dir: Some(cache.path().to_path_buf()),
        ..Default::default()
    }
}

/// org/name: main holds two GGUFs, tag v2 a Hugging Face layout.
fn two_revision_cache() -> TempDir {
    let cache = TempDir::new("hfcache");
    cache_snapshot(
        cache.path(),
        "org/name",
        COMMIT_MAIN,
        &["main"],
        &[
            ("model-Q8_0.gguf", GGUF),
            ("model-Q4_K_M.gguf", GGUF),
            ("README.md", b"card"),
        ],
    );
    cache_snapshot(
        cache.path(),
        "org/name",
        COMMIT_V2,
        &["v2"],
        &[
            ("config.json", b"{}"),
            ("tokenizer.json", b"{}"),
            ("model.safetensors", b"w"),
            ("generation_config.json", br#"{"eos_token_id": [2, 7]}"#),
        ],
    );
    cache
}

fn snapshot_dir(cache: &TempDir, commit: &str) -> PathBuf {
    cache
        .path()
        .join("models--org--name")
        .join("snapshots")
        .join(commit)
}

#[test]
fn hub_id_finds_the_preferred_gguf_in_the_cache() {
    let cache = two_revision_cache();
    let model = resolve("org/name", &offline(&cache)).unwrap();
    let expected = snapshot_dir(&cache, COMMIT_MAIN).join("model-Q4_K_M.gguf");
    assert_eq!(
        model.files,
        ModelFiles::Gguf {
            path: expected.clone()
        }
    );
    assert_eq!(model.name, "org/name");
    // The path is the snapshot symlink; reading it reaches the blob.
    assert!(std::fs::symlink_metadata(&expected)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(&expected).unwrap(), GGUF);
}

#[test]
fn hub_id_with_a_named_gguf_file() {
    let cache = two_revision_cache();
    let model = resolve("org/name:model-Q8_0.gguf", &offline(&cache)).unwrap();
    let expected = snapshot_dir(&cache, COMMIT_MAIN).join("model-Q8_0.gguf");
    assert_eq!(model.files, ModelFiles::Gguf { path: expected });
}

#[test]
fn hub_id_at_a_named_revision_or_commit() {
    let cache = two_revision_cache();
    let v2 = snapshot_dir(&cache, COMMIT_V2);
    let model = resolve("org/name@v2", &offline(&cache)).unwrap();
    assert_eq!(model.files, ModelFiles::HfDir { dir: v2.clone() });
    assert_eq!(
        read_generation_config(&v2).unwrap().unwrap().eos_token_ids,
        vec![2, 7]
    );

    let by_commit = resolve(&format!("org/name@{COMMIT_V2}"), &offline(&cache)).unwrap();
    assert_eq!(by_commit.files, ModelFiles::HfDir { dir: v2 });
}

#[test]
fn missing_file_offline_names_repo_revision_file_and_offline_mode() {
    let cache = two_revision_cache();
    let err = resolve("org/name@v2:model-F16.gguf", &offline(&cache)).unwrap_err();
    assert!(matches!(err, LoadError::NotInCache { .. }), "{err:?}");
    let msg = err.to_string();
    for needle in ["org/name", "v2", "model-F16.gguf", "offline mode is on"] {
        assert!(msg.contains(needle), "{needle:?} not in: {msg}");
    }
}

#[test]
fn uncached_repo_and_unknown_revision_offline() {
    let cache = two_revision_cache();
    let err = resolve("other/model", &offline(&cache)).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LoadError::NotInCache { .. }), "{err:?}");
    assert!(
        msg.contains("other/model") && msg.contains("offline mode is on"),
        "{msg}"
    );

    let err = resolve("org/name@nope", &offline(&cache)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("refs/nope") && msg.contains("revision nope"),
        "{msg}"
    );

    // A named file is named even when the whole repo is missing.
    let msg = resolve("other/model@v1:x-Q4_0.gguf", &offline(&cache))
        .unwrap_err()
        .to_string();
    for needle in ["x-Q4_0.gguf", "other/model", "v1", "offline mode is on"] {
        assert!(msg.contains(needle), "{needle:?} not in: {msg}");
    }
}

#[test]
fn snapshot_with_a_dangling_blob_link_reports_the_missing_file() {
    let cache = two_revision_cache();
    // An interrupted download leaves the link but not the blob.
    let blob = cache
        .path()
        .join("models--org--name/blobs")
        .join(format!("{COMMIT_V2}-tokenizer.json"));
    std::fs::remove_file(blob).unwrap();
    let err = resolve("org/name@v2", &offline(&cache)).unwrap_err();
    match &err {
        LoadError::InSnapshot { problem, .. } => {
            assert!(
                matches!(**problem, LoadError::MissingFile { ref file, .. } if file == "tokenizer.json")
            )
        }
        other => panic!("expected InSnapshot, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("org/name") && msg.contains("v2") && msg.contains("offline"),
        "{msg}"
    );
}

#[test]
fn unreachable_hub_falls_back_to_the_cache() {
    let cache = two_revision_cache();
    // Nothing listens on port 1: the connection is refused at once.
    let opts = ResolveOptions {
        offline: false,
        cache_dir: Some(cache.path().to_path_buf()),
        endpoint: Some("http://127.0.0.1:1".into()),
        token: None,
    };
    // hf-hub retries a refused connection with backoff for a few seconds: run both at once.
    let (cached, absent) = std::thread::scope(|s| {
        let cached = s.spawn(|| resolve("org/name@v2", &opts));
        let absent = s.spawn(|| resolve("org/absent", &opts));
        (cached.join().unwrap(), absent.join().unwrap())
    });
    assert_eq!(
        cached.unwrap().files,
        ModelFiles::HfDir {
            dir: snapshot_dir(&cache, COMMIT_V2)
        }
    );

    let err = absent.unwrap_err();
    assert!(matches!(err, LoadError::Unreachable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("org/absent") && !msg.contains("offline mode is on"),
        "{msg}"
    );
}

// ---- Downloads, against a stand-in for the Hub's HTTP API on a local port ----

/// Serves `GET /api/models/<repo>/revision/<rev>` (repo info: commit and file list) and
/// `HEAD`/`GET /<repo>/resolve/<commit>/<file>` for one repo, and records each request line.
struct FakeHub {
    endpoint: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FakeHub {
    fn start(
        repo_id: &'static str,
        commit: &'static str,
        files: Vec<(&'static str, Vec<u8>)>,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&requests);
        let files = Arc::new(files);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, files) = (Arc::clone(&log), Arc::clone(&files));
                std::thread::spawn(move || serve_connection(stream, repo_id, commit, &files, &log));
            }
        });
        FakeHub { endpoint, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }

    fn options(&self, cache: &TempDir) -> ResolveOptions {
        ResolveOptions {
            offline: false,
            cache_dir: Some(cache.path().to_path_buf()),
            endpoint: Some(self.endpoint.clone()),
            token: None,
        }
    }
}

fn serve_connection(
    stream: TcpStream,
    repo_id: &str,
    commit: &str,
    files: &[(&str, Vec<u8>)],
    log: &Mutex<Vec<String>>,
) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        // `Range: bytes=<from>-[<to>]`: hf-hub asks for byte 0 to learn a file's size, then
        // for the rest from where it stands.
        let mut range: Option<(usize, Option<usize>)> = None;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            if header == "\r\n" {
                break;
            }
            let lower = header.to_ascii_lowercase();
            if let Some(spec) = lower.trim().strip_prefix("range: bytes=") {
                let (from, to) = spec.split_once('-').unwrap_or((spec, ""));
                range = Some((from.parse().unwrap_or(0), to.parse().ok()));
            }
        }
        let mut parts = request_line.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        log.lock().unwrap().push(format!("{method} {path}"));

        let info_prefix = format!("/api/models/{repo_id}/revision/");
        let file_prefix = format!("/{repo_id}/resolve/{commit}/");
        let (status, headers, body): (&str, String, Vec<u8>) = if let Some(rev) =
            path.strip_prefix(&info_prefix)
        {
            if rev == "main" || rev == commit {
                let siblings: Vec<String> = files
                    .iter()
                    .map(|(n, _)| format!(r#"{{"rfilename":"{n}"}}"#))
                    .collect();
                let json = format!(
                    r#"{{"id":"{repo_id}","sha":"{commit}","siblings":[{}]}}"#,
                    siblings.join(",")
                );
                (
                    "200 OK",
                    "Content-Type: application/json\r\n".into(),
                    json.into_bytes(),
                )
            } else {
                (
                    "404 Not Found",
                    String::new(),
                    b"Revision not found".to_vec(),
                )
            }
        } else if let Some(name) = path.strip_prefix(&file_prefix) {
            match files.iter().find(|(n, _)| *n == name) {
                Some((_, contents)) => {
                    let etag = format!("etag-{}", name.replace('/', "-"));
                    let mut headers = format!("ETag: \"{etag}\"\r\nX-Repo-Commit: {commit}\r\n");
                    match range {
                        Some((from, to)) => {
                            let len = contents.len();
                            let to = to
                                .unwrap_or(len.saturating_sub(1))
                                .min(len.saturating_sub(1));
                            let part = contents.get(from..=to).unwrap_or_default().to_vec();
                            headers
                                .push_str(&format!("Content-Range: bytes {from}-{to}/{len}\r\n"));
                            ("206 Partial Content", headers, part)
                        }
                        None => ("200 OK", headers, contents.clone()),
                    }
                }
                None => (
                    "404 Not Found",
                    format!("X-Repo-Commit: {commit}\r\nX-Error-Code: EntryNotFound\r\n"),
                    b"Entry not found".to_vec(),
                ),
            }
        } else {
            (
                "404 Not Found",
                String::new(),
                b"Repository not found".to_vec(),
            )
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Length: {}\r\n{headers}\r\n",
            body.len()
        );
        let mut out = head.into_bytes();
        if method != "HEAD" {
            out.extend_from_slice(&body);
        }
        if writer.write_all(&out).and_then(|_| writer.flush()).is_err() {
            return;
        }
    }
}

#[test]
fn download_fetches_only_the_preferred_gguf_and_works_offline_afterwards() {
    let hub = FakeHub::start(
        "org/name",
        COMMIT_MAIN,
        vec![
            ("README.md", b"card".to_vec()),
            ("model-Q8_0.gguf", GGUF.to_vec()),
            ("model-Q4_K_M.gguf", GGUF.to_vec()),
        ],
    );
    let cache = TempDir::new("download-gguf");
    let model = resolve("org/name", &hub.options(&cache)).unwrap();
    let expected = snapshot_dir(&cache, COMMIT_MAIN).join("model-Q4_K_M.gguf");
    assert_eq!(
        model.files,
        ModelFiles::Gguf {
            path: expected.clone()
        }
    );
    assert_eq!(std::fs::read(&expected).unwrap(), GGUF);
    let mut gets: Vec<String> = hub
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("GET /org"))
        .collect();
    // hf-hub reads a file's size from its first byte, then fetches it: one file, twice.
    gets.dedup();
    assert_eq!(
        gets,
        vec![format!(
            "GET /org/name/resolve/{COMMIT_MAIN}/model-Q4_K_M.gguf"
        )]
    );

    // The branch was pinned to its commit, so the cache now answers for "main" on its own.
    let main_ref = cache.path().join("models--org--name/refs/main");
    assert_eq!(std::fs::read_to_string(main_ref).unwrap(), COMMIT_MAIN);
    let again = resolve("org/name", &offline(&cache)).unwrap();
    assert_eq!(again.files, ModelFiles::Gguf { path: expected });
}

#[test]
fn download_of_a_sharded_hugging_face_repo() {
    let index = br#"{"weight_map": {"a": "model-00001-of-00002.safetensors",
                                    "b": "model-00002-of-00002.safetensors"}}"#;
    let hub = FakeHub::start(
        "org/name",
        COMMIT_V2,
        vec![
            ("config.json", b"{}".to_vec()),
            ("tokenizer.json", b"{}".to_vec()),
            (
                "tokenizer_config.json",
                br#"{"chat_template": "x"}"#.to_vec(),
            ),
            ("model.safetensors.index.json", index.to_vec()),
            ("model-00001-of-00002.safetensors", b"one".to_vec()),
            ("model-00002-of-00002.safetensors", b"two".to_vec()),
            ("README.md", b"card".to_vec()),
            ("onnx/model.onnx", b"other format".to_vec()),
        ],
    );
    let cache = TempDir::new("download-hf");
    let model = resolve(&format!("org/name@{COMMIT_V2}"), &hub.options(&cache)).unwrap();
    let dir = snapshot_dir(&cache, COMMIT_V2);
    assert_eq!(model.files, ModelFiles::HfDir { dir: dir.clone() });
    assert!(dir.join("tokenizer_config.json").is_file());
    assert!(!dir.join("README.md").exists() && !dir.join("onnx").exists());
    let shards: Vec<Vec<u8>> = safetensors_files(&dir)
        .unwrap()
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert_eq!(shards, vec![b"one".to_vec(), b"two".to_vec()]);
}

#[test]
fn download_of_a_missing_named_file_names_repo_and_file() {
    let hub = FakeHub::start(
        "org/name",
        COMMIT_MAIN,
        vec![("model-Q4_0.gguf", GGUF.to_vec())],
    );
    let cache = TempDir::new("download-missing");
    let err = resolve("org/name:model-F16.gguf", &hub.options(&cache)).unwrap_err();
    assert!(matches!(err, LoadError::Hub { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("org/name") && msg.contains("model-F16.gguf"),
        "{msg}"
    );
    assert!(!msg.contains("offline"), "{msg}");
}
