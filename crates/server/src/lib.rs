//! server: the Cohere v2 HTTP API in front of the runner's engine, and the `cohost` command line.
pub mod cli {
    pub fn main() -> anyhow::Result<()> {
        anyhow::bail!("not built yet")
    }
}
