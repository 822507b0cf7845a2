//! `halo bench`: not built yet (its issue is open).

#[derive(clap::Args, Debug)]
pub struct BenchArgs {}

pub fn run(_args: BenchArgs) -> anyhow::Result<()> {
    Err(super::usage("'bench' is not available in this build yet"))
}
