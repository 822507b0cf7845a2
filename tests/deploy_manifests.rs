//! The deployment manifests cannot drift from the binary: every flag the images' entrypoints and
//! the rendered Deployments pass to `halo serve` exists in `halo serve --help` and parses; the
//! probes' ports are the ports the entrypoint listens on; the grace period covers the drain
//! timeout the worker actually runs with; and each probe's grpc.health.v1 service name is one
//! the real worker reports SERVING for.
//!
//! Rendering needs PyYAML: the venv ci/deploy-check.sh builds (`$HALO_DEPLOY_PYTHON`, which
//! ci/test.sh exports; else the script is run to build or reuse it). Offline schema validation
//! of the same manifests is ci/deploy-check.sh's part.

mod serve_common;

use serde_json::Value;
use serve_common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const VARIANTS: [&str; 3] = ["cpu", "cuda", "gaudi"];
/// After the drain: halo-server's transport grace (5 s) and engine stop wait (5 s), server.rs.
const SHUTDOWN_AFTER_DRAIN_S: u64 = 10;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy_python() -> &'static PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        if let Some(p) = std::env::var_os("HALO_DEPLOY_PYTHON").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        let out = Command::new("bash")
            .arg(root().join("ci/deploy-check.sh"))
            .arg("--venv-only")
            .output()
            .expect("run ci/deploy-check.sh");
        assert!(
            out.status.success(),
            "ci/deploy-check.sh --venv-only failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        PathBuf::from(text.lines().last().expect("a python path").trim())
    })
}

/// The objects `kubectl apply -k deploy/k8s/overlays/VARIANT` would create.
fn render(variant: &str) -> Vec<Value> {
    let out = Command::new(deploy_python())
        .arg(root().join("deploy/k8s/render.py"))
        .arg(root().join("deploy/k8s/overlays").join(variant))
        .args(["--format", "json"])
        .output()
        .expect("run render.py");
    assert!(
        out.status.success(),
        "render.py {variant}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// `halo serve --help`: each long flag, with its `[default: X]` when it has one.
fn serve_flags() -> &'static BTreeMap<String, Option<String>> {
    static FLAGS: OnceLock<BTreeMap<String, Option<String>>> = OnceLock::new();
    FLAGS.get_or_init(|| {
        let out = Command::new(env!("CARGO_BIN_EXE_halo"))
            .args(["serve", "--help"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).unwrap();
        let mut flags = BTreeMap::new();
        let mut current: Option<String> = None;
        for line in text.lines() {
            let t = line.trim_start();
            let flag_line = t.starts_with("--") || (t.starts_with('-') && t.contains(", --"));
            if flag_line {
                let long = t[t.find("--").unwrap()..]
                    .split(|c: char| c.is_whitespace() || c == '=' || c == ',')
                    .next()
                    .unwrap()
                    .to_string();
                flags.insert(long.clone(), None);
                current = Some(long);
            }
            if let (Some(f), Some(i)) = (&current, t.find("[default: ")) {
                let rest = &t[i + "[default: ".len()..];
                let value = rest[..rest.find(']').unwrap()].to_string();
                flags.insert(f.clone(), Some(value));
            }
        }
        assert!(flags.contains_key("--listen") && flags.contains_key("--drain-timeout-secs"));
        flags
    })
}

/// `halo serve`'s arguments from a Dockerfile's exec-form ENTRYPOINT (everything after `serve`).
fn entrypoint_serve_args(dockerfile: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dockerfile).unwrap();
    let line = text
        .lines()
        .rfind(|l| l.starts_with("ENTRYPOINT "))
        .unwrap_or_else(|| panic!("{} has no ENTRYPOINT", dockerfile.display()));
    let argv: Vec<String> = serde_json::from_str(line["ENTRYPOINT ".len()..].trim())
        .unwrap_or_else(|e| panic!("{}: ENTRYPOINT is not exec form: {e}", dockerfile.display()));
    let serve = argv.iter().position(|a| a == "serve").expect("halo serve");
    assert!(
        argv[serve - 1].ends_with("/halo"),
        "the entrypoint runs halo serve"
    );
    argv[serve + 1..].to_vec()
}

fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter().enumerate().find_map(|(i, a)| {
        if a == flag {
            args.get(i + 1).map(String::as_str)
        } else {
            a.strip_prefix(flag).and_then(|r| r.strip_prefix('='))
        }
    })
}

/// Every `--flag` in `args` exists in `halo serve --help`.
fn assert_known_flags(args: &[String], what: &str) {
    for a in args.iter().filter(|a| a.starts_with("--")) {
        let name = a.split('=').next().unwrap();
        assert!(
            serve_flags().contains_key(name),
            "{what}: {name} is not a flag of `halo serve` (see halo serve --help)"
        );
    }
}

fn port_of(addr: &str) -> i64 {
    addr.parse::<std::net::SocketAddr>()
        .unwrap_or_else(|e| panic!("{addr}: {e}"))
        .port() as i64
}

fn deployment(objects: &[Value]) -> &Value {
    let deps: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "Deployment")
        .collect();
    assert_eq!(deps.len(), 1);
    deps[0]
}

fn halo_container(dep: &Value) -> &Value {
    dep["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "halo")
        .expect("a container named halo")
}

/// A container port by name or number.
fn resolve_port(container: &Value, port: &Value) -> i64 {
    if let Some(n) = port.as_i64() {
        return n;
    }
    container["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == *port)
        .and_then(|p| p["containerPort"].as_i64())
        .unwrap_or_else(|| panic!("no container port {port}"))
}

/// The container's args with Kubernetes' `$(VAR)` expansion from its plain env values.
fn expanded_args(container: &Value) -> Vec<String> {
    let env: BTreeMap<String, String> = container["env"]
        .as_array()
        .map(|e| {
            e.iter()
                .filter_map(|v| {
                    Some((
                        v["name"].as_str()?.to_string(),
                        v["value"].as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let mut s = a.as_str().expect("string args").to_string();
            for (k, v) in &env {
                s = s.replace(&format!("$({k})"), v);
            }
            assert!(!s.contains("$("), "unexpanded variable in {s}");
            s
        })
        .collect()
}

#[test]
fn entrypoints_and_manifests_pass_only_flags_halo_serve_has() {
    for variant in VARIANTS {
        let dockerfile = root().join(format!("deploy/docker/{variant}.Dockerfile"));
        let entry = entrypoint_serve_args(&dockerfile);
        assert_known_flags(&entry, &format!("{variant}.Dockerfile ENTRYPOINT"));
        let listen = flag_value(&entry, "--listen").expect("the entrypoint sets --listen");
        let metrics = flag_value(&entry, "--metrics-listen").expect("and --metrics-listen");
        assert!(listen.starts_with("0.0.0.0:") && metrics.starts_with("0.0.0.0:"));

        let objects = render(variant);
        let dep = deployment(&objects);
        let c = halo_container(dep);
        assert!(
            c["command"].is_null(),
            "{variant}: the Deployment must keep the image's entrypoint"
        );
        let image = c["image"].as_str().unwrap();
        assert!(
            image.ends_with(&format!(":{variant}")),
            "{variant}: image {image} is not built from {variant}.Dockerfile"
        );
        let args = expanded_args(c);
        assert_known_flags(&args, &format!("overlays/{variant} args"));
        for f in ["--listen", "--metrics-listen"] {
            assert!(
                flag_value(&args, f).is_none(),
                "{variant}: {f} is the entrypoint's; repeating it is a clap error"
            );
        }
        assert_eq!(flag_value(&args, "--device"), Some(variant));

        // Ports: the probes and named ports are what the entrypoint listens on.
        let grpc = port_of(listen);
        assert_eq!(resolve_port(c, &Value::from("grpc")), grpc, "{variant}");
        assert_eq!(
            resolve_port(c, &Value::from("metrics")),
            port_of(metrics),
            "{variant}"
        );
        for probe in ["startupProbe", "readinessProbe", "livenessProbe"] {
            let p = &c[probe]["grpc"];
            assert!(p.is_object(), "{variant}: {probe} is a grpc probe");
            assert_eq!(resolve_port(c, &p["port"]), grpc, "{variant} {probe}");
        }
        let ann = &dep["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(
            ann["prometheus.io/port"].as_str().unwrap(),
            port_of(metrics).to_string()
        );
        for svc in objects.iter().filter(|o| o["kind"] == "Service") {
            for p in svc["spec"]["ports"].as_array().unwrap() {
                let target = resolve_port(c, &p["targetPort"]);
                assert!(target == grpc || target == port_of(metrics));
            }
        }

        // The grace period covers preStop + the drain the binary will run + its shutdown.
        let drain: u64 = flag_value(&args, "--drain-timeout-secs")
            .map(str::to_string)
            .or_else(|| serve_flags()["--drain-timeout-secs"].clone())
            .expect("a drain timeout")
            .parse()
            .unwrap();
        let pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
            .as_array()
            .filter(|cmd| cmd.len() == 2 && cmd[0] == "sleep")
            .map(|cmd| cmd[1].as_str().unwrap().parse::<u64>().unwrap())
            .unwrap_or(0);
        let grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30);
        assert!(
            grace > pre_stop + drain + SHUTDOWN_AFTER_DRAIN_S,
            "{variant}: terminationGracePeriodSeconds {grace} must exceed preStop {pre_stop} + \
             --drain-timeout-secs {drain} + {SHUTDOWN_AFTER_DRAIN_S}"
        );
    }
}

#[test]
fn gpu_manifests_parse_as_halo_serve_arguments() {
    // No GPU or Gaudi here: run each overlay's full argument list and require that halo gets
    // past argument parsing (it then fails on the device or the missing model, not on clap).
    for variant in VARIANTS {
        let objects = render(variant);
        let c = halo_container(deployment(&objects));
        let dockerfile = root().join(format!("deploy/docker/{variant}.Dockerfile"));
        let mut args = entrypoint_serve_args(&dockerfile);
        for a in args.iter_mut() {
            if a.starts_with("0.0.0.0:") {
                *a = "127.0.0.1:0".into();
            }
        }
        args.extend(expanded_args(c));
        let out = Command::new(env!("CARGO_BIN_EXE_halo"))
            .arg("serve")
            .args(&args)
            .env_remove("HALO_AUTH_TOKEN")
            .env("HALO_SIDECAR_PYTHON", "/nonexistent/python")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{variant}: no model, no token file");
        // halo prints clap's errors on one line ending "(see --help)".
        assert!(
            !stderr.contains("(see --help)")
                && !stderr.contains("unexpected argument")
                && !stderr.contains("invalid value"),
            "{variant}: halo serve rejected the manifest's arguments {args:?}: {stderr}"
        );
    }
}

#[test]
fn probe_service_names_are_ones_the_worker_reports_serving() {
    let objects = render("cpu");
    let c = halo_container(deployment(&objects));
    let services: BTreeSet<String> = ["startupProbe", "readinessProbe", "livenessProbe"]
        .iter()
        .map(|p| c[*p]["grpc"]["service"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(services.contains("halo.worker.v1.Worker"));

    // The cpu overlay's own arguments, with the fixture model and a token file in place of the
    // volumes; the listen addresses come from Server::start (loopback, port 0).
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "deploy-test-token\n").unwrap();
    let model = root().join("tests/fixtures/models/tiny-qwen2");
    let mut args = expanded_args(c);
    let model_at = args.iter().position(|a| a == "--model").unwrap();
    args.drain(model_at..model_at + 2);
    let token_at = args.iter().position(|a| a == "--auth-token-file").unwrap();
    args[token_at + 1] = token.display().to_string();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start_with_model(&model, &args, &[]);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let health =
            tonic_health::pb::health_client::HealthClient::new(channel(&server.url()).await);
        let check = |service: String| {
            let mut h = health.clone();
            async move {
                h.check(tonic_health::pb::HealthCheckRequest { service })
                    .await
                    .map(|r| r.into_inner().status)
            }
        };
        for service in &services {
            let status = check(service.clone()).await.unwrap_or_else(|e| {
                panic!("probe service {service:?}: {e} (health needs no token)")
            });
            assert_eq!(
                status,
                tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
                "probe service {service:?}"
            );
        }
        // A name the worker does not register is NOT_FOUND: the check above is meaningful.
        let e = check("halo.worker.v1.NoSuchService".into())
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
    });
}
