//! One module per subcommand, plus the error-to-exit-status mapping they share.

pub mod bench;
pub mod device;
pub mod engine_args;
pub mod generate;
pub mod info;
pub mod make_model;
pub mod progress;
pub mod serve;

use std::fmt;

/// An error the user caused: bad arguments or a bad model directory. Exit status 2.
#[derive(Debug)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Wraps any error as a usage error (exit 2). An `anyhow::Error` keeps its whole chain (the
/// alternate form prints "context: cause: ..."), so an OS error under a context is not lost.
pub fn usage(e: impl fmt::Display) -> anyhow::Error {
    anyhow::Error::new(UsageError(format!("{e:#}")))
}

pub fn exit_code(e: &anyhow::Error) -> u8 {
    if e.chain().any(|c| c.is::<UsageError>()) {
        2
    } else {
        1
    }
}

/// The error and its causes on one line, as the CLI contract asks.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let s = cause.to_string().replace('\n', " ");
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// Whether stderr is a terminal a person watches (colours, spinners), and NO_COLOR is unset.
pub fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

/// Logs go to stderr, structured, filtered by RUST_LOG (default: warnings). Colour codes only on a
/// terminal (and not with NO_COLOR set): a log file or a pipe gets plain text.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let ansi = stderr_is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .try_init();
}
