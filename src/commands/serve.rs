//! `halo serve`: not built yet (its issue is open).

#[derive(clap::Args, Debug)]
pub struct ServeArgs {}

pub fn run(_args: ServeArgs) -> anyhow::Result<()> {
    Err(super::usage("'serve' is not available in this build yet"))
}
