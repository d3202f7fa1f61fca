//! The server's command line (`cohost serve`, `cohost pull`): flags (each also an environment
//! variable) -> one validated [`Config`] -> a listening server whose model loads in the background.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use runner::engine::{EngineConfig, EngineHandle};

use crate::auth::ApiKeys;
use crate::config::Config;
use crate::registry::Registry;
use crate::routes::{app, AppState};

/// The server's subcommands. The `cohost` binary (`src/main.rs`) parses them together with
/// `bench`, which lives in its own crate.
#[derive(Debug, Subcommand)]
// Parsed once per process and matched at once: the size of the serve variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Serve models over HTTP: POST /v2/chat (Cohere v2), /v1|v2/embed, /v1|v2/rerank, /v1/models,
    /// /v1/tokenize, /v1/detokenize, /v1/check-api-key, GET / (the playground page), GET /health
    /// (liveness) and GET /ready (503 until every model is loaded).
    Serve(ServeArgs),
    /// Fetch a model ahead of serving it: a known one (the default SmolLM2, Gemma 3 270M, the
    /// embedding model all-MiniLM-L6-v2) into the model directory, or a Hugging Face id into the
    /// Hugging Face cache. Prints each model's path.
    Pull(crate::pull::PullArgs),
}

/// `--version`: the release and the CPU path the matrix kernels take on this machine (a build
/// runs everywhere and picks its fastest path at start-up, so the path says what to expect).
pub fn version() -> &'static str {
    static VERSION: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    VERSION.get_or_init(|| {
        format!(
            "{} (CPU path: {}, {})",
            env!("CARGO_PKG_VERSION"),
            kernels::isa().name(),
            std::env::consts::ARCH
        )
    })
}

/// `--embed-precision`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EmbedPrecision {
    Auto,
    F32,
    Bf16,
}

impl From<EmbedPrecision> for encoder::Precision {
    fn from(p: EmbedPrecision) -> Self {
        match p {
            EmbedPrecision::Auto => encoder::Precision::Auto,
            EmbedPrecision::F32 => encoder::Precision::F32,
            EmbedPrecision::Bf16 => encoder::Precision::Bf16,
        }
    }
}

/// How log lines are written (to stderr).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line: timestamp, level, target, message and the event's fields at the top level.
    Json,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Model to serve; repeat for several in one process (env: comma-separated). Each is a .gguf
    /// file, a Hugging Face model directory or id (org/name[@revision][:file.gguf]) for chat, an
    /// encoder directory (a sentence-embedding model: embed, and rerank by cosine; or a
    /// cross-encoder: rerank), or a known name (see `cohost pull --help`). What a model serves
    /// comes from its own files. Default: SmolLM2-135M-Instruct Q4_1 from the model directory,
    /// fetched there when missing.
    #[arg(long = "model", env = "COHOST_MODEL", value_delimiter = ',')]
    pub models: Vec<String>,

    /// Where the default and other known models are kept and fetched to (default: cohost under
    /// the user cache directory, e.g. ~/.cache/cohost; inside the repository `cargo run` uses
    /// models/cache/).
    #[arg(long, env = "COHOST_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,

    /// Log format on stderr: text, or json for one JSON object per line (log collectors).
    #[arg(long, env = "COHOST_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Address to listen on. Anything but loopback exposes the server to the network: set an API key.
    #[arg(long, env = "COHOST_HOST", default_value = "127.0.0.1")]
    pub host: IpAddr,

    /// Port to listen on (0 picks a free one; the log says which).
    #[arg(long, env = "COHOST_PORT", default_value_t = 8080)]
    pub port: u16,

    /// Name clients must put in `model`; repeat for several (env: comma-separated). With one
    /// --model, every name is that model's; with several, names pair with the models in order
    /// (the first name is the first model's...). Default: each model's own name (file stem,
    /// directory name or Hugging Face id).
    #[arg(
        long = "served-model-name",
        env = "COHOST_SERVED_MODEL_NAME",
        value_delimiter = ','
    )]
    pub served_model_names: Vec<String>,

    /// API key clients must send as `Authorization: Bearer <key>`; repeat for several (env:
    /// comma-separated). With no key at all, auth is off.
    #[arg(
        long = "api-key",
        env = "COHOST_API_KEY",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_keys: Vec<String>,

    /// File of API keys, one per line (blank lines and lines starting with # are skipped); added to --api-key.
    #[arg(long, env = "COHOST_API_KEY_FILE")]
    pub api_key_file: Option<PathBuf>,

    /// Most sequences generated at once (one batch); further requests wait in the queue.
    #[arg(long, env = "COHOST_MAX_CONCURRENT", default_value_t = 16)]
    pub max_concurrent: usize,

    /// Most requests waiting for a slot, per model; beyond that the server answers 429 with
    /// Retry-After.
    #[arg(long, env = "COHOST_MAX_QUEUE", default_value_t = 64)]
    pub max_queue: usize,

    /// Context length to serve, prompt plus output (default: the model's own; never more).
    #[arg(long, env = "COHOST_CONTEXT_LENGTH")]
    pub context_length: Option<usize>,

    /// MiB of memory for each chat model's KV cache, a pool of 16-token blocks shared by every
    /// sequence and kept for repeated prompt prefixes (default: room for --max-concurrent full
    /// contexts, capped at a quarter of the memory available at start-up). It must hold one
    /// sequence at the full context; the size chosen is logged at start-up. Requests wait in the
    /// queue while their prompt does not fit.
    #[arg(long, env = "COHOST_KV_CACHE_MB")]
    pub kv_cache_mb: Option<u64>,

    /// Reuse the keys and values of prompt prefixes seen before (multi-turn chats, shared system
    /// prompts and documents): they are computed once and the usage reports them as
    /// cached_tokens. Replies are the same with or without it.
    #[arg(long, env = "COHOST_PREFIX_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
    pub prefix_cache: bool,

    /// Speculative decoding by prompt lookup: each decode step may add up to this many guessed
    /// tokens, copied from where the sequence's last tokens occurred before in its prompt or
    /// reply, and verify them in the same forward pass. Replies are identical with or without
    /// it (greedy and seeded alike); answers that quote their documents and rewrites come
    /// faster. 0 turns it off. `cohost_draft_accepted_tokens_total` and
    /// `cohost_draft_tokens_total` on /metrics give the acceptance.
    #[arg(long, env = "COHOST_DRAFT_TOKENS", default_value_t = runner::engine::Speculation::default().max_draft)]
    pub draft_tokens: usize,

    /// Drafts are added only while a step feeds at most this many tokens in all (decode tokens,
    /// prompt tokens and drafts): a bigger step is bound by compute, where a guessed token
    /// costs about what a decoded one does.
    #[arg(long, env = "COHOST_DRAFT_STEP_TOKENS", default_value_t = runner::engine::Speculation::default().step_tokens)]
    pub draft_step_tokens: usize,

    /// Compute threads of each model's forward pass (default: all cores; each model has its own
    /// pool, so an embedding burst shares the cores with chat instead of holding its pool).
    #[arg(long, env = "COHOST_THREADS")]
    pub threads: Option<usize>,

    /// Lower OS priority (Linux nice, 0 to 19) for the threads of embedding and rerank models,
    /// so that chat streams in the same process keep their pace during an embedding burst.
    #[arg(long, env = "COHOST_ENCODER_NICE", default_value_t = 5,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    pub encoder_nice: i32,

    /// What embedding and rerank models compute their matrix products in. auto: bf16 on CPUs
    /// with AMX (Intel Xeon 4th generation and later: several times faster, cosine to the f32
    /// embedding above 0.9999), f32 elsewhere. f32: always f32. bf16: always bf16 (without AMX:
    /// AVX-512 BF16 where present, else a slow portable path).
    #[arg(long, env = "COHOST_EMBED_PRECISION", value_enum, default_value_t = EmbedPrecision::Auto)]
    pub embed_precision: EmbedPrecision,

    /// Ceiling on output tokens per request; a request's larger max_tokens is capped to it.
    #[arg(long, env = "COHOST_MAX_TOKENS")]
    pub max_tokens: Option<usize>,

    /// Seconds running streams may continue after SIGINT/SIGTERM before the server exits.
    #[arg(long, env = "COHOST_SHUTDOWN_GRACE", default_value_t = 30)]
    pub shutdown_grace: u64,

    /// Largest request body accepted, in bytes (larger ones get 413; a declared Content-Length
    /// over it is refused before the body is read).
    #[arg(long, env = "COHOST_MAX_BODY_BYTES", default_value_t = 8 << 20)]
    pub max_body_bytes: usize,

    /// Seconds a client may take to send a request body (408 after that).
    #[arg(long, env = "COHOST_BODY_READ_TIMEOUT", default_value_t = 30)]
    pub body_read_timeout: u64,

    /// Seconds a client may take to send a request's headers; also how long an idle kept-alive
    /// connection stays open. A connection that stalls mid-header is closed.
    #[arg(long, env = "COHOST_HEADER_READ_TIMEOUT", default_value_t = 10)]
    pub header_read_timeout: u64,

    /// Most connections open at once (kept under the process's open-file limit); past it a new
    /// connection is answered 503 and closed.
    #[arg(long, env = "COHOST_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Serve GET /metrics (Prometheus text format) without an API key, for a scraper inside
    /// the cluster; by default it needs a key like every API route (when keys are set).
    #[arg(long, env = "COHOST_METRICS_PUBLIC")]
    pub metrics_public: bool,
}

/// Why the flags do not make a usable configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--{flag} must be at least 1")]
    Zero { flag: &'static str },
    #[error("cannot read the API key file {path}: {source}")]
    KeyFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the API key file {path} holds no key")]
    EmptyKeyFile { path: PathBuf },
    #[error(
        "the model {name} is not at {path} and fetching it failed: {source}\n(retry with \
         `cohost pull {name}`, point --model-dir / COHOST_MODEL_DIR at a folder that holds it, or pass \
         --model <file.gguf | hf-id>)"
    )]
    Fetch {
        name: &'static str,
        path: PathBuf,
        source: crate::model_store::StoreError,
    },
    #[error("{names} --served-model-name values for {models} models: with several models, give at most one name per model")]
    TooManyNames { names: usize, models: usize },
}

impl ServeArgs {
    /// Checks the flags and resolves everything that needs the file system (keys, default model).
    pub fn into_config(self) -> Result<Config, ConfigError> {
        for (flag, value) in [
            ("max-concurrent", self.max_concurrent),
            ("max-queue", self.max_queue),
            ("max-connections", self.max_connections),
            ("body-read-timeout", self.body_read_timeout as usize),
            ("header-read-timeout", self.header_read_timeout as usize),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero { flag });
            }
        }
        if self.kv_cache_mb == Some(0) {
            return Err(ConfigError::Zero {
                flag: "kv-cache-mb",
            });
        }
        for (flag, value) in [
            ("context-length", self.context_length),
            ("threads", self.threads),
            ("max-tokens", self.max_tokens),
        ] {
            if value == Some(0) {
                return Err(ConfigError::Zero { flag });
            }
        }
        let mut keys = self.api_keys;
        if let Some(path) = &self.api_key_file {
            let from_file = read_key_file(path)?;
            if from_file.is_empty() {
                return Err(ConfigError::EmptyKeyFile { path: path.clone() });
            }
            keys.extend(from_file);
        }
        let mut models = Vec::new();
        for model in self.models.into_iter().filter(|m| !m.is_empty()) {
            // A known name is fetched like the default, unless a file of that name is here.
            match crate::model_store::find(&model).filter(|_| !Path::new(&model).exists()) {
                Some(known) => models.push(
                    known_model_path(known, self.model_dir.as_deref())?
                        .display()
                        .to_string(),
                ),
                None => models.push(model),
            }
        }
        if models.is_empty() {
            let known = crate::model_store::default_model();
            models.push(
                known_model_path(known, self.model_dir.as_deref())?
                    .display()
                    .to_string(),
            );
        }
        let served_model_names: Vec<String> = self
            .served_model_names
            .into_iter()
            .filter(|n| !n.is_empty())
            .collect();
        if models.len() > 1 && served_model_names.len() > models.len() {
            return Err(ConfigError::TooManyNames {
                names: served_model_names.len(),
                models: models.len(),
            });
        }
        Ok(Config {
            models,
            addr: SocketAddr::new(self.host, self.port),
            served_model_names,
            api_keys: ApiKeys::new(keys),
            max_concurrent: self.max_concurrent,
            max_queue: self.max_queue,
            context_length: self.context_length,
            threads: self.threads,
            kv_cache_mb: self.kv_cache_mb,
            prefix_cache: self.prefix_cache,
            speculation: runner::engine::Speculation {
                max_draft: self.draft_tokens,
                step_tokens: self.draft_step_tokens,
            },
            encoder_nice: self.encoder_nice,
            embed_precision: self.embed_precision.into(),
            max_tokens: self.max_tokens,
            max_body_bytes: self.max_body_bytes,
            body_read_timeout: Duration::from_secs(self.body_read_timeout),
            header_read_timeout: Duration::from_secs(self.header_read_timeout),
            max_connections: self.max_connections,
            keep_alive: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(self.shutdown_grace),
            metrics_public: self.metrics_public,
        })
    }
}

fn read_key_file(path: &Path) -> Result<Vec<String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::KeyFile {
        path: path.into(),
        source,
    })?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

/// Where a known model is in the model directory; fetched there first when missing.
fn known_model_path(
    known: &'static crate::model_store::KnownModel,
    model_dir: Option<&Path>,
) -> Result<PathBuf, ConfigError> {
    let fetch_error = |path: PathBuf| {
        move |source| ConfigError::Fetch {
            name: known.name,
            path,
            source,
        }
    };
    let dir =
        crate::model_store::model_dir(model_dir).map_err(fetch_error(PathBuf::from(known.name)))?;
    crate::model_store::ensure(known, &dir).map_err(fetch_error(known.path_in(&dir)))
}

/// Runs one of the server's subcommands.
pub fn run_command(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(args),
        Command::Pull(args) => {
            init_tracing(LogFormat::Text);
            crate::pull::main(args)
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing(args.log_format);
    tracing::info!(version = version(), "cohost starting");
    let config = args.into_config()?;
    if let Some(threads) = config.threads {
        // candle's CPU kernels size their thread pool from this, read once at first use.
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(config))
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        // Colour codes only for a person at a terminal: logs piped to files or tests stay plain.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // Fields at the top level (`"status":200`, not `"fields":{"status":200}`), where log
        // collectors index them.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// How long, after the grace period, the server waits for the error ends of cut streams to go
/// out before it exits.
const CUT_FLUSH: Duration = Duration::from_secs(2);

/// Binds, starts loading the model, serves until a signal, then drains within the grace period:
/// `/ready` turns 503 at once, no new connections are taken, running streams may finish, and
/// when the grace runs out the streams still open end with `ERROR` and `[DONE]`.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let addr = listener.local_addr()?;
    if !config.api_keys.enabled() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "no API key configured and the server is reachable beyond loopback: anyone can use it");
    }
    let max_connections = crate::listen::connection_capacity(config.max_connections);
    if max_connections < config.max_connections {
        tracing::warn!(
            wanted = config.max_connections,
            max_connections,
            "the open-file limit allows fewer connections than --max-connections"
        );
    }
    tracing::info!(
        %addr,
        models = %config.models.join(","),
        max_connections,
        "listening; loading the models"
    );
    let state = AppState::new(config.clone());

    let loader = tokio::task::spawn_blocking({
        let config = config.clone();
        move || load_registry(&config)
    });
    // `draining` turns true at the signal (the listener keeps answering, so probes see 503);
    // `stop` once the streams are over or the grace has run out (the listener closes).
    let (drain_tx, mut drain_rx) = tokio::sync::watch::channel(false);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let limits = crate::listen::ListenLimits {
        header_read_timeout: config.header_read_timeout,
        max_connections,
    };
    let mut server = tokio::spawn(crate::listen::serve(
        listener,
        app(state.clone()),
        limits,
        stop_rx,
    ));
    tokio::spawn({
        let state = state.clone();
        async move {
            shutdown_signal().await;
            tracing::info!(
                "shutting down: not ready, new chats refused; running streams may finish"
            );
            state.start_draining();
            let _ = drain_tx.send(true);
        }
    });

    let loaded = tokio::select! {
        loaded = loader => loaded?,
        () = crate::listen::stopped(&mut drain_rx) => return Ok(()),
    };
    match loaded {
        Ok(registry) => {
            tracing::info!(
                models = registry.models().len(),
                "every model loaded; ready"
            );
            state.set_registry(registry);
        }
        Err(e) => return Err(e),
    }

    crate::listen::stopped(&mut drain_rx).await;
    let streams_done = async {
        while state.active_chats() > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    if tokio::time::timeout(config.shutdown_grace, streams_done)
        .await
        .is_err()
    {
        tracing::warn!(
            grace_s = config.shutdown_grace.as_secs(),
            open = state.active_chats(),
            "grace period over; ending the streams still open"
        );
        state.cut_open_streams();
        let cut_done = async {
            while state.active_chats() > 0 {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let _ = tokio::time::timeout(CUT_FLUSH, cut_done).await;
    }
    let _ = stop_tx.send(true);
    match tokio::time::timeout(CUT_FLUSH, &mut server).await {
        Ok(joined) => joined??,
        Err(_) => tracing::warn!("connections still open at exit"),
    }
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Longest prompt slice run in one engine step, so running streams keep moving during a long
/// prefill.
const PREFILL_CHUNK: usize = 256;

/// Loads every model, in order, each with its engine (blocking; runs off the async runtime).
pub fn load_registry(config: &Config) -> anyhow::Result<Registry> {
    let backends = config
        .models
        .iter()
        .map(|m| {
            crate::registry::load_backend(config, m)
                .map_err(|e| e.context(format!("loading the model {m}")))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Registry::new(backends, &config.served_model_names))
}

/// Loads the first model as a chat model and starts its engine loop (blocking).
pub fn load_engine(config: &Config) -> anyhow::Result<EngineHandle> {
    let model = config.models.first().map_or("", String::as_str);
    load_chat(config, model)
}

/// Loads a chat model's weights and starts its engine loop (blocking).
pub fn load_chat(config: &Config, model: &str) -> anyhow::Result<EngineHandle> {
    let run = runner::model::LoadOptions {
        threads: config.threads,
        kv: runner::model::KvBudget {
            mib: config.kv_cache_mb,
            max_concurrent: config.max_concurrent,
            context_length: config.context_length,
            prefix_cache: config.prefix_cache,
        },
    };
    let loaded = runner::load_with(model, &runner::loader::ResolveOptions::from_env(), &run)?;
    // The engine caps this again at the model's own context.
    let context_length = config.context_length.unwrap_or(loaded.info.context_length);
    let engine_config = EngineConfig {
        max_concurrent: config.max_concurrent,
        max_queue: config.max_queue,
        context_length,
        prefill_chunk: PREFILL_CHUNK,
        speculation: config.speculation,
    };
    Ok(runner::engine::start(loaded, engine_config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    /// The server's commands as the binary parses them (`src/main.rs` adds `bench`).
    #[derive(Debug, Parser)]
    #[command(name = "cohost")]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    fn parse(args: &[&str]) -> ServeArgs {
        let mut argv = vec!["cohost", "serve"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(a) => a,
            other => panic!("not serve: {other:?}"),
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_has_an_env_var_and_help() {
        let cmd = Cli::command();
        let serve = cmd.find_subcommand("serve").unwrap();
        for arg in serve
            .get_arguments()
            .filter(|a| a.get_long().is_some() && a.get_id() != "help")
        {
            let env = arg
                .get_env()
                .unwrap_or_else(|| panic!("--{} has no env var", arg.get_id()));
            assert!(env.to_str().unwrap().starts_with("COHOST_"));
            assert!(arg.get_help().is_some(), "--{} has no help", arg.get_id());
        }
    }

    #[test]
    fn flags_build_the_config() {
        let dir = std::env::temp_dir().join(format!("cohost-keys-{}", std::process::id()));
        std::fs::write(&dir, "# keys\nfrom-file\n\n  second  \n").unwrap();
        let config = parse(&[
            "--model",
            "some.gguf",
            "--host",
            "0.0.0.0",
            "--port",
            "9000",
            "--served-model-name",
            "a",
            "--served-model-name",
            "b",
            "--api-key",
            "k1",
            "--api-key-file",
            dir.to_str().unwrap(),
            "--max-concurrent",
            "2",
            "--max-queue",
            "3",
            "--context-length",
            "1024",
            "--threads",
            "2",
            "--max-tokens",
            "64",
        ])
        .into_config()
        .unwrap();
        std::fs::remove_file(&dir).unwrap();
        assert_eq!(config.models, ["some.gguf"]);
        assert_eq!(config.addr, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(config.served_model_names, ["a", "b"]);
        assert!(config.api_keys.check(Some(b"Bearer second")).is_ok());
        assert!(config.api_keys.check(Some(b"Bearer k1")).is_ok());
        assert!(config.api_keys.check(Some(b"Bearer # keys")).is_err());
        assert_eq!((config.max_concurrent, config.max_queue), (2, 3));
        assert_eq!(
            (config.context_length, config.threads, config.max_tokens),
            (Some(1024), Some(2), Some(64))
        );
    }

    #[test]
    fn several_models_pair_with_their_names_in_order() {
        let config = parse(&[
            "--model",
            "chat.gguf",
            "--model",
            "models/cache/all-MiniLM-L6-v2",
            "--served-model-name",
            "chat",
        ])
        .into_config()
        .unwrap();
        assert_eq!(
            config.models,
            ["chat.gguf", "models/cache/all-MiniLM-L6-v2"]
        );
        assert_eq!(config.served_model_names, ["chat"]);
        let err = parse(&[
            "--model",
            "a",
            "--model",
            "b",
            "--served-model-name",
            "x,y,z",
        ]);
        assert_eq!(err.served_model_names, ["x", "y", "z"], "comma lists split");
        let err = err.into_config().unwrap_err().to_string();
        assert!(
            err.contains("3 --served-model-name values for 2 models"),
            "{err}"
        );
        let listed = parse(&["--model", "a.gguf,b-dir"]);
        assert_eq!(listed.models, ["a.gguf", "b-dir"]);
    }

    #[test]
    fn defaults_are_loopback_and_no_auth() {
        let args = parse(&["--model", "x.gguf"]);
        assert_eq!(args.host, IpAddr::from([127, 0, 0, 1]));
        let config = args.into_config().unwrap();
        assert!(!config.api_keys.enabled());
        assert!(config.served_model_names.is_empty());
    }

    #[test]
    fn zero_limits_are_rejected() {
        let err = parse(&["--model", "x", "--max-concurrent", "0"])
            .into_config()
            .unwrap_err();
        assert_eq!(err.to_string(), "--max-concurrent must be at least 1");
        assert!(parse(&["--model", "x", "--context-length", "0"])
            .into_config()
            .is_err());
    }

    #[test]
    fn known_names_and_the_default_resolve_in_the_model_dir() {
        // A model directory that already holds the default (a file of the right size) and
        // nothing else: nothing is fetched.
        let dir = std::env::temp_dir().join(format!("cohost-cli-models-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let default = crate::model_store::default_model();
        std::fs::File::create(default.path_in(&dir))
            .unwrap()
            .set_len(default.size)
            .unwrap();
        let dir_flag = dir.to_str().unwrap();
        for args in [
            &["--model-dir", dir_flag][..],
            &["--model-dir", dir_flag, "--model", "default"],
            &[
                "--model-dir",
                dir_flag,
                "--model",
                "SmolLM2-135M-Instruct.Q4_1",
            ],
        ] {
            let config = parse(args).into_config().unwrap();
            assert_eq!(config.models, [default.path_in(&dir).display().to_string()]);
        }
        // Anything else passes through to the loader untouched.
        let config = parse(&["--model-dir", dir_flag, "--model", "org/name"])
            .into_config()
            .unwrap();
        assert_eq!(config.models, ["org/name"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn log_format_defaults_to_text_and_takes_json() {
        assert_eq!(parse(&["--model", "x"]).log_format, LogFormat::Text);
        assert_eq!(
            parse(&["--model", "x", "--log-format", "json"]).log_format,
            LogFormat::Json
        );
        assert!(Cli::try_parse_from(["cohost", "serve", "--log-format", "xml"]).is_err());
    }

    #[test]
    fn the_version_names_the_cpu_path() {
        let v = version();
        assert!(v.starts_with(env!("CARGO_PKG_VERSION")), "{v}");
        assert!(v.contains(kernels::isa().name()), "{v}");
    }

    #[test]
    fn pull_takes_names_or_list() {
        let cli = Cli::try_parse_from(["cohost", "pull", "default", "org/name"]).unwrap();
        let Command::Pull(args) = cli.command else {
            panic!("not pull")
        };
        assert_eq!(args.models, ["default", "org/name"]);
        assert!(Cli::try_parse_from(["cohost", "pull", "--list"]).is_ok());
        assert!(
            Cli::try_parse_from(["cohost", "pull"]).is_err(),
            "a name or --list is required"
        );
    }
}
