//! Writes a finished run to `--out DIR`: report.json (the manifest, summaries, rounds, energy,
//! each target's self-description), report.sha256 (its checksum, `sha256sum -c` format), requests.jsonl and requests.csv (one record per request),
//! summary.csv, report.md (targets side by side) and SVG charts.

pub mod csv;
pub mod markdown;
pub mod svg;

use crate::bench::BenchReport;
use crate::BenchError;
use sha2::Digest;
use std::path::{Path, PathBuf};

fn write(
    dir: &Path,
    name: &str,
    bytes: &[u8],
    written: &mut Vec<PathBuf>,
) -> Result<(), BenchError> {
    let path = dir.join(name);
    std::fs::write(&path, bytes)
        .map_err(|e| BenchError::Report(format!("cannot write {}: {e}", path.display())))?;
    written.push(path);
    Ok(())
}

/// Writes every report file into `dir` (created if missing) and returns their paths.
pub fn write_all(report: &BenchReport, dir: &Path) -> Result<Vec<PathBuf>, BenchError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| BenchError::Report(format!("cannot create {}: {e}", dir.display())))?;
    let mut written = Vec::new();
    let json = serde_json::to_vec_pretty(report).map_err(|e| BenchError::Report(e.to_string()))?;
    write(dir, "report.json", &json, &mut written)?;
    // The checksum a published result is checked with: `sha256sum -c report.sha256`.
    let digest: String = sha2::Sha256::digest(&json)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    write(
        dir,
        "report.sha256",
        format!("{digest}  report.json\n").as_bytes(),
        &mut written,
    )?;
    let mut lines = Vec::new();
    for r in report.records() {
        serde_json::to_writer(&mut lines, r).map_err(|e| BenchError::Report(e.to_string()))?;
        lines.push(b'\n');
    }
    write(dir, "requests.jsonl", &lines, &mut written)?;
    write(
        dir,
        "requests.csv",
        csv::requests(report).as_bytes(),
        &mut written,
    )?;
    write(
        dir,
        "summary.csv",
        csv::summary(report).as_bytes(),
        &mut written,
    )?;
    write(
        dir,
        "report.md",
        format!(
            "{}\n- report.json sha256: `{digest}` (report.sha256)\n",
            markdown::render(report)
        )
        .as_bytes(),
        &mut written,
    )?;
    for (name, svg) in svg::charts(report)? {
        write(dir, &name, svg.as_bytes(), &mut written)?;
    }
    Ok(written)
}
