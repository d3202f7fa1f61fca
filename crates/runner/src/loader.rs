//! Model resolution: turns what the user passes to `cohost serve --model <X>` into files on disk.
//!
//! A reference is read in this order:
//! 1. A path that exists: a `.gguf` file, a Hugging Face model directory (`config.json`,
//!    `tokenizer.json`, `model.safetensors` or `model.safetensors.index.json` with its shards), or a
//!    directory holding `.gguf` files.
//! 2. Something written as a path (starts with `/`, `./`, `../` or `~`, or ends in `.gguf` with no
//!    `:`) that does not exist: an error, never a Hub lookup.
//! 3. A Hugging Face id `org/name[@revision][:file.gguf]`. The revision (branch, tag or 40-hex
//!    commit) defaults to `main`; `:file.gguf` picks one file of a repo holding several.
//!
//! Hub ids are looked up in the Hugging Face cache (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`), in the layout the Python `huggingface_hub` library writes. When
//! online, missing files are downloaded into that cache with `hf-hub`, with progress in the log.
//! `HF_HUB_OFFLINE=1` forbids the network. hf-hub neither reads `HF_HUB_OFFLINE` nor lists a
//! cached snapshot, so the offline lookup is done here, by reading the cache layout directly.
//!
//! When a repo or directory holds several `.gguf` files and none is named, the first quantisation
//! in [`GGUF_PREFERENCE`] that exactly one file carries wins (the tag must stand alone in the file
//! name, e.g. `model-Q4_K_M.gguf`); vision projectors (`mmproj`) are never picked. Otherwise the
//! error lists the candidates.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Quantisations picked, in this order, when a repo or directory holds several `.gguf` files:
/// Q4_K_M is the usual quality/size sweet spot, Q4_0 and Q8_0 the formats every loader supports.
pub const GGUF_PREFERENCE: [&str; 3] = ["Q4_K_M", "Q4_0", "Q8_0"];

const DEFAULT_REVISION: &str = "main";
const WHAT_A_MODEL_IS: &str = "a model is a .gguf file, a Hugging Face directory \
    (config.json + *.safetensors + tokenizer.json) or a Hugging Face id \
    org/name[@revision][:file.gguf]";

/// The files a model is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelFiles {
    /// One GGUF file (weights, tokenizer and chat template inside); its magic was checked.
    Gguf { path: PathBuf },
    /// A Hugging Face layout; `config.json`, `tokenizer.json` and every weight file are present.
    HfDir { dir: PathBuf },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedModel {
    pub files: ModelFiles,
    /// The name the server reports: the Hugging Face id, or the file (or directory) stem.
    pub name: String,
}

/// How a reference string was read, before touching the cache or the network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelRef {
    Path(PathBuf),
    Hub(HubRef),
}

/// `org/name[@revision][:file]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubRef {
    pub repo_id: String,
    pub revision: Option<String>,
    pub file: Option<String>,
}

impl HubRef {
    pub fn revision(&self) -> &str {
        self.revision.as_deref().unwrap_or(DEFAULT_REVISION)
    }
}

/// Where Hub ids are looked up. Tests build one directly so that nothing depends on the process
/// environment; the server uses [`ResolveOptions::from_env`].
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// Never use the network, only the cache (`HF_HUB_OFFLINE`).
    pub offline: bool,
    /// The Hub cache directory; `None` means [`default_cache_dir`].
    pub cache_dir: Option<PathBuf>,
    /// Token for gated or private repos; `None` lets hf-hub read the token file under `HF_HOME`.
    pub token: Option<String>,
    /// Hub address; `None` lets hf-hub read `HF_ENDPOINT` or use the public Hub.
    pub endpoint: Option<String>,
}

impl ResolveOptions {
    /// `HF_HUB_OFFLINE`, `HF_HUB_CACHE` / `HF_HOME`, and `HF_TOKEN` (else the file at
    /// `HF_TOKEN_PATH`) as the Python library reads them.
    pub fn from_env() -> Self {
        Self {
            offline: std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| env_flag_is_true(&v)),
            cache_dir: Some(default_cache_dir()),
            token: std::env::var("HF_TOKEN")
                .ok()
                .or_else(|| {
                    let path = std::env::var("HF_TOKEN_PATH").ok()?;
                    std::fs::read_to_string(path).ok()
                })
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty()),
            endpoint: None,
        }
    }
}

/// Python's `huggingface_hub` treats these as true; anything else (including "0") is false.
fn env_flag_is_true(value: &str) -> bool {
    matches!(
        value.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// `HF_HUB_CACHE`, else `HUGGINGFACE_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`: the order hf-hub and the
/// Python library use, so that all of them share one cache.
pub fn default_cache_dir() -> PathBuf {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
        return PathBuf::from(dir);
    }
    if let Some(home) = var("HF_HOME") {
        return PathBuf::from(home).join("hub");
    }
    if let Some(xdg) = var("XDG_CACHE_HOME") {
        return PathBuf::from(xdg).join("huggingface").join("hub");
    }
    let home = var("HOME").unwrap_or_else(|| "/tmp".into());
    PathBuf::from(home)
        .join(".cache")
        .join("huggingface")
        .join("hub")
}

/// What a `generation_config.json` says about stopping and default sampling. Only the fields
/// the server uses are read; the rest of the file is ignored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationConfig {
    /// `eos_token_id`, which the file writes as one integer or a list.
    pub eos_token_ids: Vec<u32>,
    pub bos_token_id: Option<u32>,
    pub pad_token_id: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<u32>,
    pub do_sample: Option<bool>,
    pub repetition_penalty: Option<f32>,
    pub max_new_tokens: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the model reference is empty: {WHAT_A_MODEL_IS}")]
    EmptyReference,
    #[error("`{reference}` is neither an existing path nor a Hugging Face id ({reason}): {WHAT_A_MODEL_IS}")]
    BadReference { reference: String, reason: String },
    #[error("no file or directory at {path}: {WHAT_A_MODEL_IS}")]
    NotFound { path: PathBuf },
    #[error(
        "{path} is not a GGUF file: it starts with {found:?}, expected the magic bytes \"GGUF\""
    )]
    NotGguf { path: PathBuf, found: String },
    #[error("no .gguf file and no config.json in {dir} (found: {}): {WHAT_A_MODEL_IS}", list_or_nothing(.found))]
    NotAModel { dir: PathBuf, found: Vec<String> },
    #[error("{dir} has config.json but no {file}: a Hugging Face model directory needs config.json, tokenizer.json and model.safetensors (or model.safetensors.index.json and its shards)")]
    MissingFile { dir: PathBuf, file: String },
    #[error("no safetensors weights in {dir} (found: {}): expected model.safetensors or model.safetensors.index.json with its shards (PyTorch .bin weights are not supported)", list_or_nothing(.found))]
    NoWeights { dir: PathBuf, found: Vec<String> },
    #[error("{index} lists shards that are not in {dir}: {}", .missing.join(", "))]
    MissingShards {
        dir: PathBuf,
        index: String,
        missing: Vec<String>,
    },
    #[error("{location} holds several .gguf files and none is preferred ({}): {}; name one, as org/name:file.gguf or as a file path", GGUF_PREFERENCE.join(", "), .candidates.join(", "))]
    AmbiguousGguf {
        location: String,
        candidates: Vec<String>,
    },
    #[error("could not read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not valid JSON: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("{path}: {reason}")]
    Malformed { path: PathBuf, reason: String },
    /// `what` says which path of the cache is missing.
    #[error("{}{repo} at revision {revision} is not in the Hugging Face cache: {what}{}", file_of(.file), offline_note(*.offline))]
    NotInCache {
        repo: String,
        revision: String,
        /// The `:file` the reference named, if any.
        file: Option<String>,
        what: String,
        offline: bool,
    },
    // `problem` and `error` below are not `#[source]`s: the message already includes them, and a
    // chain printer would repeat them.
    #[error("{repo} at revision {revision} (cached at {}){}: {problem}", .snapshot.display(), offline_note(*.offline))]
    InSnapshot {
        repo: String,
        revision: String,
        snapshot: PathBuf,
        offline: bool,
        problem: Box<LoadError>,
    },
    #[error("{repo} at revision {revision} has no .gguf file and no config.json with safetensors weights (files: {}): {WHAT_A_MODEL_IS}", list_or_nothing(.found))]
    RepoNotAModel {
        repo: String,
        revision: String,
        found: Vec<String>,
    },
    #[error("Hugging Face Hub request for {repo} at revision {revision} failed: {error}{}", token_hint(.error))]
    Hub {
        repo: String,
        revision: String,
        error: Box<hf_hub::api::sync::ApiError>,
    },
    #[error("{network}; the cache has no copy either: {cache}")]
    Unreachable {
        network: Box<LoadError>,
        cache: Box<LoadError>,
    },
}

fn list_or_nothing(names: &[String]) -> String {
    if names.is_empty() {
        "nothing".to_string()
    } else {
        names.join(", ")
    }
}

fn token_hint(error: &hf_hub::api::sync::ApiError) -> &'static str {
    match hub_status(error) {
        Some(401 | 403) => " (gated and private repos need a token: set HF_TOKEN)",
        _ => "",
    }
}

fn file_of(file: &Option<String>) -> String {
    file.as_ref()
        .map_or_else(String::new, |f| format!("file {f} of "))
}

fn offline_note(offline: bool) -> &'static str {
    if offline {
        ", and offline mode is on (HF_HUB_OFFLINE), so nothing is downloaded"
    } else {
        ""
    }
}

fn io_error(path: &Path, source: std::io::Error) -> LoadError {
    LoadError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Resolves `reference` to files on disk, downloading from the Hub when needed and allowed.
pub fn resolve(reference: &str, opts: &ResolveOptions) -> Result<ResolvedModel, LoadError> {
    match parse_reference(reference)? {
        ModelRef::Path(path) => resolve_path(&path),
        ModelRef::Hub(hub) => resolve_hub(&hub, opts),
    }
}

/// Reads a reference without resolving it: an existing path wins over an id of the same spelling.
pub fn parse_reference(reference: &str) -> Result<ModelRef, LoadError> {
    let reference = reference.trim();
    if reference.is_empty() {
        return Err(LoadError::EmptyReference);
    }
    let path = expand_home(reference);
    if path.exists() {
        return Ok(ModelRef::Path(path));
    }
    if looks_like_path(reference) {
        return Err(LoadError::NotFound { path });
    }
    parse_hub_ref(reference)
        .map(ModelRef::Hub)
        .map_err(|reason| LoadError::BadReference {
            reference: reference.to_string(),
            reason,
        })
}

fn expand_home(reference: &str) -> PathBuf {
    match reference.strip_prefix("~/") {
        Some(rest) => match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(rest),
            None => PathBuf::from(reference),
        },
        None => PathBuf::from(reference),
    }
}

fn looks_like_path(reference: &str) -> bool {
    reference.starts_with('/')
        || reference.starts_with("./")
        || reference.starts_with("../")
        || reference.starts_with('~')
        || reference == "."
        || reference == ".."
        || (reference.to_ascii_lowercase().ends_with(".gguf") && !reference.contains(':'))
}

/// Parses `org/name[@revision][:file]`; the error is the reason it is not one.
pub fn parse_hub_ref(reference: &str) -> Result<HubRef, String> {
    // Git refs cannot contain ':', so the first one always starts the file part.
    let (head, file) = match reference.split_once(':') {
        Some((head, file)) => (head, Some(file)),
        None => (reference, None),
    };
    let (repo_id, revision) = match head.split_once('@') {
        Some((id, rev)) => (id, Some(rev)),
        None => (head, None),
    };
    check_repo_id(repo_id)?;
    if let Some(rev) = revision {
        if rev.is_empty() {
            return Err("the revision after '@' is empty".into());
        }
        if rev.chars().any(|c| c.is_whitespace() || c.is_control())
            || rev
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(format!("`{rev}` is not a valid revision"));
        }
    }
    if let Some(file) = file {
        if file.is_empty() {
            return Err("the file name after ':' is empty".into());
        }
        if file.starts_with('/')
            || file.contains('\\')
            || file
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(format!("`{file}` is not a file path inside a repo"));
        }
    }
    Ok(HubRef {
        repo_id: repo_id.to_string(),
        revision: revision.map(str::to_string),
        file: file.map(str::to_string),
    })
}

/// The Hub's rules for `org/name`; "--" and ".." are banned because the cache folder name joins
/// the parts with "--".
fn check_repo_id(id: &str) -> Result<(), String> {
    let Some((org, name)) = id.split_once('/') else {
        return Err(format!("`{id}` has no '/' between organisation and name"));
    };
    if name.contains('/') {
        return Err(format!("`{id}` has more than one '/'"));
    }
    if id.len() > 96 {
        return Err(format!("`{id}` is longer than 96 characters"));
    }
    for part in [org, name] {
        if part.is_empty() {
            return Err(format!("`{id}` has an empty organisation or name"));
        }
        if let Some(bad) = part
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(format!("`{id}` contains {bad:?}"));
        }
        if part.starts_with(['-', '.'])
            || part.ends_with(['-', '.'])
            || part.contains("--")
            || part.contains("..")
        {
            return Err(format!(
                "`{id}` starts or ends with '-' or '.', or contains \"--\" or \"..\""
            ));
        }
    }
    Ok(())
}

fn resolve_path(path: &Path) -> Result<ResolvedModel, LoadError> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => LoadError::NotFound {
            path: path.to_path_buf(),
        },
        _ => io_error(path, e),
    })?;
    let files = if meta.is_dir() {
        resolve_dir(path)?
    } else {
        check_gguf_magic(path)?;
        ModelFiles::Gguf {
            path: path.to_path_buf(),
        }
    };
    // "." and "models/" have no useful stem of their own; the canonical path does.
    let named = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let stem = if meta.is_dir() {
        named.file_name()
    } else {
        named.file_stem()
    };
    let name = stem.map_or_else(
        || named.display().to_string(),
        |s| s.to_string_lossy().into_owned(),
    );
    Ok(ResolvedModel { files, name })
}

/// A Hugging Face layout when `config.json` comes with safetensors, else the one preferred
/// `.gguf`, else an error saying what is missing.
pub fn resolve_dir(dir: &Path) -> Result<ModelFiles, LoadError> {
    let names = list_files(dir)?;
    let has = |name: &str| names.iter().any(|n| n == name);
    let has_safetensors = names.iter().any(|n| n.ends_with(".safetensors"));
    if has("config.json") && has_safetensors {
        validate_hf_dir(dir)?;
        return Ok(ModelFiles::HfDir {
            dir: dir.to_path_buf(),
        });
    }
    let ggufs: Vec<String> = names.iter().filter(|n| is_gguf_name(n)).cloned().collect();
    if !ggufs.is_empty() {
        let chosen = pick_gguf(&ggufs, &dir.display().to_string())?;
        let path = dir.join(chosen);
        check_gguf_magic(&path)?;
        return Ok(ModelFiles::Gguf { path });
    }
    if has("config.json") {
        // Not loadable; validation names what is missing.
        validate_hf_dir(dir)?;
    }
    Err(LoadError::NotAModel {
        dir: dir.to_path_buf(),
        found: names,
    })
}

/// Checks that `dir` holds `config.json` (valid JSON), `tokenizer.json` and its weights.
pub fn validate_hf_dir(dir: &Path) -> Result<(), LoadError> {
    for file in ["config.json", "tokenizer.json"] {
        if !dir.join(file).is_file() {
            return Err(LoadError::MissingFile {
                dir: dir.to_path_buf(),
                file: file.to_string(),
            });
        }
    }
    read_json(&dir.join("config.json"))?;
    safetensors_files(dir)?;
    Ok(())
}

/// The weight files of a Hugging Face directory, in shard order: the shards named by
/// `model.safetensors.index.json`, else `model.safetensors`.
pub fn safetensors_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let index_name = "model.safetensors.index.json";
    let index = dir.join(index_name);
    if index.is_file() {
        let shards = index_shards(&index)?;
        let missing: Vec<String> = shards
            .iter()
            .filter(|s| !dir.join(s).is_file())
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(LoadError::MissingShards {
                dir: dir.to_path_buf(),
                index: index_name.to_string(),
                missing,
            });
        }
        return Ok(shards.iter().map(|s| dir.join(s)).collect());
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    Err(LoadError::NoWeights {
        dir: dir.to_path_buf(),
        found: list_files(dir)?,
    })
}

/// The distinct shard file names of a safetensors index, sorted (shard names sort in order).
fn index_shards(index: &Path) -> Result<Vec<String>, LoadError> {
    let json = read_json(index)?;
    let Some(map) = json.get("weight_map").and_then(|m| m.as_object()) else {
        return Err(LoadError::Malformed {
            path: index.to_path_buf(),
            reason: "expected an object \"weight_map\" from tensor names to shard files".into(),
        });
    };
    let mut shards = BTreeSet::new();
    for (tensor, file) in map {
        match file.as_str() {
            Some(f) if !f.is_empty() && !f.contains("..") && !f.starts_with('/') => {
                shards.insert(f.to_string());
            }
            _ => {
                return Err(LoadError::Malformed {
                    path: index.to_path_buf(),
                    reason: format!("weight_map[{tensor:?}] is {file}, expected a shard file name"),
                })
            }
        }
    }
    Ok(shards.into_iter().collect())
}

fn read_json(path: &Path) -> Result<serde_json::Value, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| io_error(path, e))?;
    serde_json::from_str(&text).map_err(|source| LoadError::Json {
        path: path.to_path_buf(),
        source,
    })
}

/// Names of the regular files directly in `dir` (following symlinks, as cache snapshots are
/// symlinks into `blobs/`), sorted. A dangling link is left out: its file is not there.
fn list_files(dir: &Path) -> Result<Vec<String>, LoadError> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io_error(dir, e))? {
        let entry = entry.map_err(|e| io_error(dir, e))?;
        if std::fs::metadata(entry.path()).is_ok_and(|m| m.is_file()) {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn is_gguf_name(name: &str) -> bool {
    name.to_ascii_lowercase().ends_with(".gguf")
}

/// Picks one of several `.gguf` file names by the rule in the module docs.
pub fn pick_gguf<'a>(names: &'a [String], location: &str) -> Result<&'a str, LoadError> {
    let candidates: Vec<&'a String> = names
        .iter()
        .filter(|n| !n.to_ascii_lowercase().contains("mmproj"))
        .collect();
    let ambiguous = |candidates: &[&String]| LoadError::AmbiguousGguf {
        location: location.to_string(),
        candidates: candidates.iter().map(|s| s.to_string()).collect(),
    };
    if let [only] = candidates.as_slice() {
        return Ok(only.as_str());
    }
    for quant in GGUF_PREFERENCE {
        let matching: Vec<&String> = candidates
            .iter()
            .copied()
            .filter(|n| has_quant_tag(n, quant))
            .collect();
        match matching.as_slice() {
            [] => continue,
            [one] => return Ok(one.as_str()),
            several => return Err(ambiguous(several)),
        }
    }
    if candidates.is_empty() {
        // Only projector files: list them so the user sees why nothing was picked.
        return Err(ambiguous(&names.iter().collect::<Vec<_>>()));
    }
    Err(ambiguous(&candidates))
}

/// Whether `name` carries `quant` as a whole tag: "x-Q4_0.gguf" has Q4_0, "x-Q4_0_4_4.gguf" does not.
fn has_quant_tag(name: &str, quant: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    let bytes = upper.as_bytes();
    upper.match_indices(quant).any(|(at, _)| {
        let before_ok = at == 0 || matches!(bytes[at - 1], b'-' | b'.' | b'_');
        let end = at + quant.len();
        let after_ok = end == bytes.len() || matches!(bytes[end], b'-' | b'.');
        before_ok && after_ok
    })
}

/// Checks the 4-byte GGUF magic so that a wrong file fails here, with its name, not deep in the
/// model loader.
pub fn check_gguf_magic(path: &Path) -> Result<(), LoadError> {
    let mut file = std::fs::File::open(path).map_err(|e| io_error(path, e))?;
    let mut magic = Vec::with_capacity(4);
    file.by_ref()
        .take(4)
        .read_to_end(&mut magic)
        .map_err(|e| io_error(path, e))?;
    if magic == b"GGUF" {
        Ok(())
    } else {
        Err(LoadError::NotGguf {
            path: path.to_path_buf(),
            found: String::from_utf8_lossy(&magic).into_owned(),
        })
    }
}

/// Reads `dir/generation_config.json`; `Ok(None)` when the file is absent.
pub fn read_generation_config(dir: &Path) -> Result<Option<GenerationConfig>, LoadError> {
    let path = dir.join("generation_config.json");
    if !path.exists() {
        return Ok(None);
    }
    let json = read_json(&path)?;
    let bad = |reason: String| LoadError::Malformed {
        path: path.clone(),
        reason,
    };
    let Some(obj) = json.as_object() else {
        return Err(bad(format!("expected a JSON object, found {json}")));
    };
    let token_id = |key: &str| -> Result<Option<u32>, LoadError> {
        match obj.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => as_token_id(v).map(Some).ok_or_else(|| {
                bad(format!(
                    "{key} is {v}, expected a token id (a non-negative integer)"
                ))
            }),
        }
    };
    let eos_token_ids = match obj.get("eos_token_id") {
        None | Some(serde_json::Value::Null) => Vec::new(),
        Some(serde_json::Value::Array(ids)) => ids
            .iter()
            .map(|v| {
                as_token_id(v).ok_or_else(|| {
                    bad(format!(
                        "eos_token_id holds {v}, expected token ids (non-negative integers)"
                    ))
                })
            })
            .collect::<Result<_, _>>()?,
        Some(v) => vec![as_token_id(v).ok_or_else(|| {
            bad(format!(
                "eos_token_id is {v}, expected a token id or a list of token ids"
            ))
        })?],
    };
    let float = |key: &str| -> Result<Option<f32>, LoadError> {
        match obj.get(key) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|f| Some(f as f32))
                .ok_or_else(|| bad(format!("{key} is {v}, expected a number"))),
        }
    };
    let do_sample = match obj.get("do_sample") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(
            v.as_bool()
                .ok_or_else(|| bad(format!("do_sample is {v}, expected true or false")))?,
        ),
    };
    Ok(Some(GenerationConfig {
        eos_token_ids,
        bos_token_id: token_id("bos_token_id")?,
        pad_token_id: token_id("pad_token_id")?,
        temperature: float("temperature")?,
        top_p: float("top_p")?,
        top_k: token_id("top_k")?,
        do_sample,
        repetition_penalty: float("repetition_penalty")?,
        max_new_tokens: token_id("max_new_tokens")?,
    }))
}

fn as_token_id(value: &serde_json::Value) -> Option<u32> {
    value.as_u64().and_then(|v| u32::try_from(v).ok())
}

mod hub;
use hub::*;

#[cfg(test)]
mod tests;
