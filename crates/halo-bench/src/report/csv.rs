//! CSV by hand (RFC 4180 quoting): one row per request, and one row per target and load level.

use crate::bench::BenchReport;
use crate::metrics::{itl_gaps, tpot, ttft, Stats};
use crate::record::Outcome;

fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or(String::new(), |v| v.to_string())
}

fn ms(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{:.3}", v * 1e3))
}

pub fn requests(report: &BenchReport) -> String {
    let mut out = String::from(
        "target,level,index,result,status,start_s,end_s,ttft_ms,tpot_ms,itl_mean_ms,e2e_ms,\
         stream_tokens,output_tokens,prompt_tokens,nominal_input_len,max_tokens,finish_reason,\
         server_queue_ms,server_ttft_ms,server_e2e_ms\n",
    );
    for r in report.records() {
        let (result, status) = match &r.outcome {
            Outcome::Ok => ("ok", ""),
            Outcome::Failed { status, .. } => ("failed", status.as_str()),
        };
        let t = ttft(&r.chunks);
        let gaps = itl_gaps(&r.chunks);
        let itl_mean = (!gaps.is_empty()).then(|| gaps.iter().sum::<f64>() / gaps.len() as f64);
        let row = [
            field(&r.target),
            field(&r.level),
            r.index.to_string(),
            result.to_string(),
            field(status),
            format!("{:.6}", r.start),
            format!("{:.6}", r.end),
            ms(t),
            ms(t.and_then(|t| tpot(t, r.end, r.output_tokens()))),
            ms(itl_mean),
            ms(Some(r.end)),
            r.stream_tokens.to_string(),
            r.output_tokens().to_string(),
            opt(r.prompt_tokens),
            opt(r.nominal_input_len),
            r.max_tokens.to_string(),
            field(r.finish_reason.as_deref().unwrap_or("")),
            opt(r.server.map(|s| s.queue_ms)),
            opt(r.server.map(|s| s.ttft_ms)),
            opt(r.server.map(|s| s.e2e_ms)),
        ];
        out.push_str(&row.join(","));
        out.push('\n');
    }
    out
}

fn stats_cols(s: Option<Stats>) -> [String; 4] {
    match s {
        Some(s) => [s.mean, s.p50, s.p90, s.p99].map(|v| format!("{v:.3}")),
        None => Default::default(),
    }
}

pub fn summary(report: &BenchReport) -> String {
    let mut out = String::from(
        "target,level,requests,completed,failed,duration_s,input_tokens,output_tokens",
    );
    for m in ["ttft", "tpot", "itl", "e2e"] {
        for s in ["mean", "p50", "p90", "p99"] {
            out.push_str(&format!(",{m}_{s}_ms"));
        }
    }
    out.push_str(
        ",request_throughput,output_token_throughput,total_token_throughput,goodput,\
         cost_per_million_output_tokens,server_ttft_p50_ms,server_ttft_p99_ms,server_e2e_p50_ms,workload_sha256\n",
    );
    for t in &report.targets {
        for l in &t.levels {
            let s = &l.summary;
            let mut row = vec![
                field(&t.label),
                field(&l.name),
                s.requests.to_string(),
                s.completed.to_string(),
                s.failed.to_string(),
                format!("{:.6}", s.duration_s),
                s.input_tokens.to_string(),
                s.output_tokens.to_string(),
            ];
            for st in [s.ttft_ms, s.tpot_ms, s.itl_ms, s.e2e_ms] {
                row.extend(stats_cols(st));
            }
            let srv = s.server.as_ref();
            row.extend([
                format!("{:.6}", s.request_throughput),
                format!("{:.6}", s.output_token_throughput),
                format!("{:.6}", s.total_token_throughput),
                opt(s.goodput.map(|g| format!("{g:.6}"))),
                opt(s.cost_per_million_output_tokens.map(|c| format!("{c:.6}"))),
                opt(srv.and_then(|v| v.ttft_ms).map(|x| format!("{:.3}", x.p50))),
                opt(srv.and_then(|v| v.ttft_ms).map(|x| format!("{:.3}", x.p99))),
                opt(srv.and_then(|v| v.e2e_ms).map(|x| format!("{:.3}", x.p50))),
                report.workload.sha256.clone(),
            ]);
            out.push_str(&row.join(","));
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn quotes_only_when_needed() {
        assert_eq!(super::field("a"), "a");
        assert_eq!(super::field("a,b"), "\"a,b\"");
        assert_eq!(super::field("say \"x\""), "\"say \"\"x\"\"\"");
    }
}
