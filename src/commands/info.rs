//! `halo info`: not built yet (its issue is open).

#[derive(clap::Args, Debug)]
pub struct InfoArgs {}

pub fn run(_args: InfoArgs) -> anyhow::Result<()> {
    Err(super::usage("'info' is not available in this build yet"))
}
