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
        Err(e) => return usage_exit(e),
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

/// --help and --version print and exit 0; `halo` alone (or a subcommand missing) prints the usage
/// to stderr and exits 2; any other usage error is one line on stderr, exit 2.
fn usage_exit(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if !e.use_stderr() {
        let _ = e.print();
        return ExitCode::SUCCESS;
    }
    if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
        let _ = e.print();
        return ExitCode::from(2);
    }
    eprintln!("{}", one_line_usage(&e.render().to_string()));
    ExitCode::from(2)
}

/// clap's multi-line rendering as one line: the first line, then the indented details under it
/// (e.g. every missing argument), up to the usage section.
fn one_line_usage(rendered: &str) -> String {
    let mut lines = rendered.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("error: invalid arguments");
    let details: Vec<&str> = lines
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more"))
        .collect();
    if details.is_empty() {
        format!("{first} (see --help)")
    } else {
        format!("{first} {} (see --help)", details.join(", "))
    }
}
