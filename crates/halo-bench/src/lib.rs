//! halo-bench: the library behind `halo bench`.
//!
//! One seeded workload ([`workload`]) is sent to every target — halo workers over gRPC
//! ([`grpc`]) and OpenAI-compatible endpoints over HTTP ([`http`]) — under closed- or open-loop
//! load ([`runner`]); each request's timeline ([`record`]) is reduced to the metrics defined in
//! [`metrics`], and [`report`] writes JSON, CSV, Markdown and SVG. docs/bench.md is the user guide.

pub mod bench;
pub mod dist;
pub mod energy;
pub mod grpc;
pub mod http;
pub mod manifest;
pub mod metrics;
pub mod record;
pub mod report;
pub mod rng;
pub mod runner;
pub mod sse;
pub mod target;
pub mod words;
pub mod workload;

pub use bench::{run, BenchConfig, BenchReport};
pub use dist::LengthDist;
pub use metrics::{Slo, Summary};
pub use runner::{Arrival, LoadConfig, LoadLevel};
pub use target::{ClientOptions, Kind, TargetSpec};
pub use workload::{Source, Workload, WorkloadConfig};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The user asked for something impossible (bad distribution, unreadable workload file...).
    #[error("{0}")]
    Arg(String),
    /// A target could not be set up (unreachable at connect, no model to use...).
    #[error("target '{0}': {1}")]
    Target(String, String),
    #[error("writing reports: {0}")]
    Report(String),
}
