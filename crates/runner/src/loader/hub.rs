//! Models from the Hugging Face Hub: the local cache first (offline when asked or when the
//! network is down), then the download of the chosen files, with progress in the log.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::{ApiBuilder, ApiError};
use hf_hub::api::Progress;
use hf_hub::{Repo, RepoType};

use super::*;

pub(super) fn resolve_hub(hub: &HubRef, opts: &ResolveOptions) -> Result<ResolvedModel, LoadError> {
    let cache_dir = opts.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let files = if opts.offline {
        resolve_cached(hub, &cache_dir, true)?
    } else {
        match download(hub, opts, &cache_dir) {
            Ok(files) => files,
            Err(network @ LoadError::Hub { .. }) if network_unreachable(&network) => {
                tracing::warn!(error = %network, "Hub unreachable, using the local cache");
                resolve_cached(hub, &cache_dir, false).map_err(|cache| LoadError::Unreachable {
                    network: Box::new(network),
                    cache: Box::new(cache),
                })?
            }
            Err(e) => return Err(e),
        }
    };
    Ok(ResolvedModel {
        files,
        name: hub.repo_id.clone(),
    })
}

/// Connection failures and timeouts (after hf-hub's retries): the cache may still serve.
pub(super) fn network_unreachable(err: &LoadError) -> bool {
    match err {
        LoadError::Hub { error, .. } => {
            matches!(request_error(error), Some(ureq::Error::Transport(_)))
        }
        _ => false,
    }
}

/// The HTTP status the Hub answered with, if the request got that far.
pub(super) fn hub_status(error: &ApiError) -> Option<u16> {
    match request_error(error)? {
        ureq::Error::Status(code, _) => Some(*code),
        ureq::Error::Transport(_) => None,
    }
}

/// The HTTP client's error behind an hf-hub error, through its retries.
fn request_error(error: &ApiError) -> Option<&ureq::Error> {
    match error {
        ApiError::RequestError(e) => Some(e),
        ApiError::TooManyRetries(inner) => request_error(inner),
        _ => None,
    }
}

/// `<cache>/models--org--name`, as the Python library names it.
pub fn repo_cache_dir(cache_dir: &Path, repo_id: &str) -> PathBuf {
    cache_dir.join(format!("models--{}", repo_id.replace('/', "--")))
}

pub(super) fn is_commit_hash(revision: &str) -> bool {
    revision.len() == 40 && revision.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Finds a Hub reference in the cache alone: `refs/<revision>` gives the commit (unless the
/// revision is one), `snapshots/<commit>/` holds the files as symlinks into `blobs/`.
pub(super) fn resolve_cached(
    hub: &HubRef,
    cache_dir: &Path,
    offline: bool,
) -> Result<ModelFiles, LoadError> {
    let repo_dir = repo_cache_dir(cache_dir, &hub.repo_id);
    let revision = hub.revision();
    let not_in_cache = |what: String| LoadError::NotInCache {
        repo: hub.repo_id.clone(),
        revision: revision.to_string(),
        file: hub.file.clone(),
        what,
        offline,
    };
    if !repo_dir.is_dir() {
        return Err(not_in_cache(format!(
            "nothing is cached for this repo: {} is missing",
            repo_dir.display()
        )));
    }
    let commit = if is_commit_hash(revision) {
        revision.to_ascii_lowercase()
    } else {
        let ref_path = repo_dir.join("refs").join(revision);
        match std::fs::read_to_string(&ref_path) {
            Ok(text) => text.trim().to_string(),
            Err(_) => {
                return Err(not_in_cache(format!(
                    "the revision's commit is unknown: {} is missing",
                    ref_path.display()
                )))
            }
        }
    };
    let snapshot = repo_dir.join("snapshots").join(&commit);
    if !snapshot.is_dir() {
        return Err(not_in_cache(format!(
            "the snapshot of commit {commit}, {}, is missing",
            snapshot.display()
        )));
    }
    if let Some(file) = &hub.file {
        let path = snapshot.join(file);
        if !path.is_file() {
            return Err(not_in_cache(format!("{} is missing", path.display())));
        }
        check_gguf_magic(&path)?;
        return Ok(ModelFiles::Gguf { path });
    }
    resolve_dir(&snapshot).map_err(|problem| LoadError::InSnapshot {
        repo: hub.repo_id.clone(),
        revision: revision.to_string(),
        snapshot: snapshot.clone(),
        offline,
        problem: Box::new(problem),
    })
}

/// Files of a Hugging Face layout fetched besides config, tokenizer and weights when the repo
/// has them: the chat template and special tokens live in these.
pub(super) const HF_OPTIONAL_FILES: [&str; 4] = [
    "tokenizer_config.json",
    "generation_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
];

/// Downloads what `hub` needs into the cache and returns it from there. Every file is fetched at
/// the commit the revision pointed to when listed, so one snapshot directory holds them all.
pub(super) fn download(
    hub: &HubRef,
    opts: &ResolveOptions,
    cache_dir: &Path,
) -> Result<ModelFiles, LoadError> {
    let revision = hub.revision();
    let hub_error = |error: ApiError| LoadError::Hub {
        repo: hub.repo_id.clone(),
        revision: revision.to_string(),
        error: Box::new(error),
    };
    // HF_ENDPOINT and the token file under HF_HOME as hf-hub reads them; ours win when set.
    let mut builder = ApiBuilder::from_env()
        .with_cache_dir(cache_dir.to_path_buf())
        .with_progress(false);
    if let Some(token) = &opts.token {
        builder = builder.with_token(Some(token.clone()));
    }
    if let Some(endpoint) = &opts.endpoint {
        builder = builder.with_endpoint(endpoint.clone());
    }
    let api = builder.build().map_err(hub_error)?;
    let model = |revision: &str| {
        api.repo(Repo::with_revision(
            hub.repo_id.clone(),
            RepoType::Model,
            revision.to_string(),
        ))
    };
    let info = model(revision).info().map_err(hub_error)?;
    let commit = info.sha.clone();
    let files: Vec<String> = info.siblings.into_iter().map(|s| s.rfilename).collect();
    let repo = model(&commit);
    let snapshot = repo_cache_dir(cache_dir, &hub.repo_id)
        .join("snapshots")
        .join(&commit);
    let fetch = |file: &str| -> Result<PathBuf, LoadError> {
        // A file of this commit already in the cache is the same file: no request.
        let cached = snapshot.join(file);
        if cached.is_file() {
            return Ok(cached);
        }
        repo.download_with_progress(file, LogProgress::new(&hub.repo_id))
            .map_err(hub_error)
    };
    let result = choose_and_fetch(hub, &files, fetch);
    if result.is_ok() && !is_commit_hash(revision) && is_commit_hash(&commit) {
        // hf-hub writes refs only for downloads by branch name; offline lookups need it.
        let ref_path = repo_cache_dir(cache_dir, &hub.repo_id)
            .join("refs")
            .join(revision);
        if let Some(parent) = ref_path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| io_error(parent, e))?;
        }
        std::fs::write(&ref_path, &commit).map_err(|e| io_error(&ref_path, e))?;
    }
    result
}

/// Decides from the repo's file list what to fetch, fetches it with `fetch` (which returns the
/// local path) and validates the result the way a local path is validated.
pub(super) fn choose_and_fetch(
    hub: &HubRef,
    files: &[String],
    fetch: impl Fn(&str) -> Result<PathBuf, LoadError>,
) -> Result<ModelFiles, LoadError> {
    if let Some(file) = &hub.file {
        let path = fetch(file)?;
        check_gguf_magic(&path)?;
        return Ok(ModelFiles::Gguf { path });
    }
    // Only the top level counts, as for a local directory.
    let top: Vec<String> = files.iter().filter(|f| !f.contains('/')).cloned().collect();
    let has = |name: &str| top.iter().any(|f| f == name);
    if has("config.json") && top.iter().any(|f| f.ends_with(".safetensors")) {
        let config = fetch("config.json")?;
        let dir = config.parent().map(Path::to_path_buf).unwrap_or_default();
        for file in ["tokenizer.json"].into_iter().chain(HF_OPTIONAL_FILES) {
            if has(file) {
                fetch(file)?;
            }
        }
        let index = "model.safetensors.index.json";
        if has(index) {
            let index_path = fetch(index)?;
            for shard in index_shards(&index_path)? {
                fetch(&shard)?;
            }
        } else if has("model.safetensors") {
            fetch("model.safetensors")?;
        }
        validate_hf_dir(&dir)?;
        return Ok(ModelFiles::HfDir { dir });
    }
    let ggufs: Vec<String> = top.iter().filter(|f| is_gguf_name(f)).cloned().collect();
    if !ggufs.is_empty() {
        let location = format!("{} at revision {}", hub.repo_id, hub.revision());
        let chosen = pick_gguf(&ggufs, &location)?;
        let path = fetch(chosen)?;
        check_gguf_magic(&path)?;
        return Ok(ModelFiles::Gguf { path });
    }
    Err(LoadError::RepoNotAModel {
        repo: hub.repo_id.clone(),
        revision: hub.revision().to_string(),
        found: top,
    })
}

/// Logs a download as it goes: one line when each file starts, at every further 10% and when
/// it completes, with bytes, so a long first start is visibly working.
pub(super) struct LogProgress {
    repo: String,
    file: String,
    total: usize,
    done: usize,
    /// The last tenth logged.
    logged: Option<usize>,
}

impl LogProgress {
    fn new(repo: &str) -> Self {
        Self {
            repo: repo.to_string(),
            file: String::new(),
            total: 0,
            done: 0,
            logged: None,
        }
    }

    fn log(&mut self) {
        // An unknown size (0) counts as done: log it once.
        let tenth = self
            .done
            .saturating_mul(10)
            .checked_div(self.total)
            .unwrap_or(10);
        if self.logged.is_none_or(|last| tenth > last) {
            self.logged = Some(tenth);
            tracing::info!(
                repo = %self.repo,
                file = %self.file,
                bytes = self.done,
                total = self.total,
                "download progress"
            );
        }
    }
}

impl Progress for LogProgress {
    fn init(&mut self, size: usize, filename: &str) {
        // A retry starts again from its resume point (`update` gives it).
        if self.file != filename {
            self.file = filename.to_string();
            self.logged = None;
            tracing::info!(repo = %self.repo, file = %filename, bytes = size, "downloading");
        }
        self.total = size;
        self.done = 0;
    }

    fn update(&mut self, size: usize) {
        self.done = self.done.saturating_add(size);
        self.log();
    }

    fn finish(&mut self) {
        self.done = self.total;
        self.log();
    }
}
