//! The `cohost` binary: the server's subcommands (`serve`, `pull`) and the load bench (`bench`)
//! under one name.
//!
//! They are put together here rather than in the server's CLI so that the server crate does not
//! depend on the bench (and its HTTP client, reqwest) and the bench does not depend on the server
//! (and the model stack): each is built and tested on its own, and only the binary needs both.

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "cohost",
    version = server::cli::version(),
    about = "Self-hosted inference server speaking Cohere's Chat API v2"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Server(server::cli::Command),
    /// Load-test a running server: N concurrent streamed chats per level (sweeping N), reporting
    /// aggregate and per-stream tokens/s, time to first token and inter-token latency; or a
    /// prompt-cache workload (--workload multi-turn, round-robin, shared-prefix) reporting time
    /// to first token where prompts repeat. JSON report, tables, SVG chart. Works against any
    /// Cohere-compatible URL, or llama-server (--api llama).
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Server(command) => server::cli::run_command(command),
        Command::Bench(args) => bench::main(args),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_is_reachable() {
        let names: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_string())
            .collect();
        assert_eq!(names, ["serve", "pull", "bench"]);
        match Cli::try_parse_from(["cohost", "bench", "--concurrency", "2,3"])
            .unwrap()
            .command
        {
            Command::Bench(args) => assert_eq!(args.concurrency, Some(vec![2, 3])),
            other => panic!("not bench: {other:?}"),
        }
        assert!(matches!(
            Cli::try_parse_from(["cohost", "serve", "--port", "0"])
                .unwrap()
                .command,
            Command::Server(server::cli::Command::Serve(_))
        ));
    }
}
