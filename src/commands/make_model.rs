//! `halo make-model`: not built yet (its issue is open).

#[derive(clap::Args, Debug)]
pub struct MakeModelArgs {}

pub fn run(_args: MakeModelArgs) -> anyhow::Result<()> {
    Err(super::usage("'make-model' is not available in this build yet"))
}
