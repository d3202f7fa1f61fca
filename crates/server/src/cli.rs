//! The `cohost` command line: flags (each also an environment variable) -> one validated
//! [`Config`] -> a listening server whose model loads in the background.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use runner::engine::{EngineConfig, EngineHandle};

use crate::auth::ApiKeys;
use crate::config::Config;
use crate::registry::Registry;
use crate::routes::{app, AppState};

/// The default model, relative to the repository root.
pub const DEFAULT_MODEL: &str = "models/cache/SmolLM2-135M-Instruct.Q4_1.gguf";
const FETCH_SCRIPT: &str = "models/fetch-default.sh";

#[derive(Debug, Parser)]
#[command(
    name = "cohost",
    version,
    about = "Self-hosted inference server speaking Cohere's Chat API v2"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve models over HTTP: POST /v2/chat (Cohere v2), /v1|v2/embed, /v1|v2/rerank, /v1/models,
    /// /v1/tokenize, /v1/detokenize, /v1/check-api-key, GET /health (liveness) and GET /ready (503
    /// until every model is loaded).
    Serve(ServeArgs),
    /// Load-test a running server: N concurrent streamed chats per level (sweeping N), reporting
    /// aggregate and per-stream tokens/s, time to first token and inter-token latency; JSON report
    /// and SVG chart. Works against any Cohere-compatible URL, or llama-server (--api llama).
    Bench(crate::bench::BenchArgs),
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Model to serve; repeat for several in one process (env: comma-separated). Each is a .gguf
    /// file, a Hugging Face model directory or id (org/name[@revision][:file.gguf]) for chat, or
    /// an encoder directory: a sentence-embedding model (embed, and rerank by cosine) or a
    /// cross-encoder (rerank). What a model serves comes from its own files. Default:
    /// SmolLM2-135M-Instruct Q4_1 from models/cache/ (under COHOST_MODEL_DIR if set), fetched
    /// with models/fetch-default.sh when missing.
    #[arg(long = "model", env = "COHOST_MODEL", value_delimiter = ',')]
    pub models: Vec<String>,

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

    /// Compute threads of each model's forward pass (default: all cores; each model has its own
    /// pool, so an embedding burst shares the cores with chat instead of holding its pool).
    #[arg(long, env = "COHOST_THREADS")]
    pub threads: Option<usize>,

    /// Lower OS priority (Linux nice, 0 to 19) for the threads of embedding and rerank models,
    /// so that chat streams in the same process keep their pace during an embedding burst.
    #[arg(long, env = "COHOST_ENCODER_NICE", default_value_t = 5,
          value_parser = clap::value_parser!(i32).range(0..=19))]
    pub encoder_nice: i32,

    /// Ceiling on output tokens per request; a request's larger max_tokens is capped to it.
    #[arg(long, env = "COHOST_MAX_TOKENS")]
    pub max_tokens: Option<usize>,

    /// Seconds running streams may continue after SIGINT/SIGTERM before the server exits.
    #[arg(long, env = "COHOST_SHUTDOWN_GRACE", default_value_t = 30)]
    pub shutdown_grace: u64,

    /// Largest request body accepted, in bytes (larger ones get 413).
    #[arg(long, env = "COHOST_MAX_BODY_BYTES", default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
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
        "the default model is missing at {path} and fetching it failed ({reason}); run `models/fetch-default.sh` \
         from the repository, or pass --model <file.gguf | hf-id>"
    )]
    DefaultModelMissing { path: PathBuf, reason: String },
    #[error("{names} --served-model-name values for {models} models: with several models, give at most one name per model")]
    TooManyNames { names: usize, models: usize },
}

impl ServeArgs {
    /// Checks the flags and resolves everything that needs the file system (keys, default model).
    pub fn into_config(self) -> Result<Config, ConfigError> {
        for (flag, value) in [
            ("max-concurrent", self.max_concurrent),
            ("max-queue", self.max_queue),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero { flag });
            }
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
        let mut models: Vec<String> = self.models.into_iter().filter(|m| !m.is_empty()).collect();
        if models.is_empty() {
            models.push(default_model()?.display().to_string());
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
            encoder_nice: self.encoder_nice,
            max_tokens: self.max_tokens,
            max_body_bytes: self.max_body_bytes,
            keep_alive: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(self.shutdown_grace),
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

/// The repository root this binary was built from (crates/server/../..).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The default model's path; runs the fetch script once when the file is missing.
pub fn default_model() -> Result<PathBuf, ConfigError> {
    let file_name = Path::new(DEFAULT_MODEL)
        .file_name()
        .expect("constant has a file name");
    let path = match std::env::var_os("COHOST_MODEL_DIR") {
        Some(dir) => PathBuf::from(dir).join(file_name),
        None => repo_root().join(DEFAULT_MODEL),
    };
    if path.is_file() {
        return Ok(path);
    }
    let script = repo_root().join(FETCH_SCRIPT);
    let reason = if !script.is_file() {
        format!("{} not found", script.display())
    } else {
        tracing::info!(script = %script.display(), "default model missing; fetching it");
        match std::process::Command::new("bash").arg(&script).status() {
            Ok(s) if s.success() && path.is_file() => return Ok(path),
            Ok(s) if s.success() => {
                "the script ran but wrote the model elsewhere (COHOST_MODEL_DIR?)".to_string()
            }
            Ok(s) => format!("{} exited with {s}", script.display()),
            Err(e) => format!("cannot run {}: {e}", script.display()),
        }
    };
    Err(ConfigError::DefaultModelMissing { path, reason })
}

pub fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args),
        Command::Bench(args) => crate::bench::main(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    init_tracing();
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

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour codes only for a person at a terminal: logs piped to files or tests stay plain.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .init();
}

/// Binds, starts loading the model, serves until a signal, then drains within the grace period.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.addr).await?;
    let addr = listener.local_addr()?;
    if !config.api_keys.enabled() && !addr.ip().is_loopback() {
        tracing::warn!(%addr, "no API key configured and the server is reachable beyond loopback: anyone can use it");
    }
    tracing::info!(%addr, models = %config.models.join(","), "listening; loading the models");
    let state = AppState::new(config.clone());

    let loader = tokio::task::spawn_blocking({
        let config = config.clone();
        move || load_registry(&config)
    });
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = axum::serve(listener, app(state.clone())).with_graceful_shutdown({
        let mut stop_rx = stop_rx.clone();
        async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        }
    });
    let server = tokio::spawn(async move { server.await });
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: no new connections; running streams may finish");
        let _ = stop_tx.send(true);
    });

    let loaded = tokio::select! {
        loaded = loader => loaded?,
        _ = stop_rx.wait_for(|stop| *stop) => return Ok(()),
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

    let _ = stop_rx.wait_for(|stop| *stop).await;
    match tokio::time::timeout(config.shutdown_grace, server).await {
        Ok(joined) => joined??,
        Err(_) => tracing::warn!(
            grace_s = config.shutdown_grace.as_secs(),
            "grace period over; exiting with streams open"
        ),
    }
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
    };
    let loaded = runner::load_with(model, &runner::loader::ResolveOptions::from_env(), &run)?;
    // The engine caps this again at the model's own context.
    let context_length = config.context_length.unwrap_or(loaded.info.context_length);
    let engine_config = EngineConfig {
        max_concurrent: config.max_concurrent,
        max_queue: config.max_queue,
        context_length,
        prefill_chunk: PREFILL_CHUNK,
    };
    Ok(runner::engine::start(loaded, engine_config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

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
    fn the_default_model_is_found_in_the_repository() {
        // The repository's models/cache holds it in this project's set-up.
        let path = repo_root().join(DEFAULT_MODEL);
        if path.is_file() {
            assert_eq!(
                default_model().unwrap().canonicalize().unwrap(),
                path.canonicalize().unwrap()
            );
        }
    }
}
