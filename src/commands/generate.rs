//! `halo generate`: not built yet (its issue is open).

#[derive(clap::Args, Debug)]
pub struct GenerateArgs {}

pub fn run(_args: GenerateArgs) -> anyhow::Result<()> {
    Err(super::usage("'generate' is not available in this build yet"))
}
