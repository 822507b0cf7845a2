//! `halo`: the worker's command line. Each subcommand lives in `commands/`; this file only parses
//! arguments and maps errors to the exit-status contract (0 ok, 2 bad arguments or model, 1 other).

mod commands;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "halo", version, about = "An LLM inference worker")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text for one prompt (or a file of prompts) through the engine.
    Generate(commands::generate::GenerateArgs),
    /// Serve the worker gRPC API for the hub router.
    Serve(commands::serve::ServeArgs),
    /// Benchmark workers and OpenAI-compatible endpoints with one seeded workload.
    Bench(commands::bench::BenchArgs),
    /// Write a random-weight model in the hub's format.
    MakeModel(commands::make_model::MakeModelArgs),
    /// Describe the device and the model.
    Info(commands::info::InfoArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; a usage error is one line on stderr.
            if !e.use_stderr() {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let rendered = e.render().to_string();
            let first = rendered
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments");
            let detail = rendered
                .lines()
                .skip_while(|l| *l != first)
                .skip(1)
                .map(str::trim)
                .find(|l| !l.is_empty() && !l.starts_with("Usage:") && !l.starts_with("For more"))
                .map(|l| format!(" {l}"))
                .unwrap_or_default();
            eprintln!("{}{detail} (see --help)", first.trim_end());
            return ExitCode::from(2);
        }
    };
    commands::init_logging();
    let result = match cli.command {
        Command::Generate(args) => commands::generate::run(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::MakeModel(args) => commands::make_model::run(args),
        Command::Info(args) => commands::info::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", commands::one_line(&e));
            ExitCode::from(commands::exit_code(&e))
        }
    }
}
