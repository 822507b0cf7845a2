#!/usr/bin/env python3
"""Offline validation of halo's Kubernetes manifests (run by ci/deploy-check.sh).

For every overlay (cpu, cuda, gaudi) and deploy/k8s/monitoring: render with render.py, validate
every object against the Kubernetes OpenAPI schemas bundled in kubernetes-validate (strict: no
unknown fields) for the oldest and newest Kubernetes versions we claim, validate CRD objects
against deploy/k8s/schemas, check the wiring between objects (selectors, named ports, the HPA's
target, the probes, the grace period against the drain timeout), and, where kubectl is
installed, check that `kubectl kustomize` renders exactly the same objects.

What needs the halo binary (flags, defaults, health service names) is tests/deploy_manifests.rs.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import jsonschema
import kubernetes_validate
import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import render  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OVERLAYS = ["cpu", "cuda", "gaudi"]
# grpc probes are GA since 1.27; validate the oldest version still commonly run and the newest.
K8S_VERSIONS = ["1.30.0", "1.37.0"]
# After the drain: halo-server's transport grace (5 s) and engine stop wait (5 s).
SHUTDOWN_AFTER_DRAIN_S = 10
DEVICE_RESOURCE = {"cpu": None, "cuda": "nvidia.com/gpu", "gaudi": "habana.ai/gaudi"}
CRD_SCHEMAS = {("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor.json"}

problems = []


def problem(where, msg):
    problems.append(f"{where}: {msg}")


def validate(where, obj):
    key = (obj.get("apiVersion"), obj.get("kind"))
    name = f"{where} {key[1]}/{obj.get('metadata', {}).get('name')}"
    if key in CRD_SCHEMAS:
        with open(os.path.join(HERE, "schemas", CRD_SCHEMAS[key]), encoding="utf-8") as f:
            schema = json.load(f)
        try:
            jsonschema.validate(obj, schema)
        except jsonschema.ValidationError as e:
            problem(name, f"schema: {e.message} at {list(e.absolute_path)}")
        return
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            problem(name, f"Kubernetes {version} schema: {e.message} at {list(e.path)}")
        except kubernetes_validate.SchemaNotFoundError:
            problem(name, f"no Kubernetes {version} schema for {key}")


def by_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def labels_match(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


def resolve_port(container, port):
    if isinstance(port, int):
        return port
    for p in container.get("ports", []):
        if p.get("name") == port:
            return p["containerPort"]
    return None


def arg_value(args, flag):
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def check_overlay(variant, objects):
    where = f"overlays/{variant}"
    deployments = by_kind(objects, "Deployment")
    if len(deployments) != 1:
        problem(where, f"{len(deployments)} Deployments, want 1")
        return
    dep = deployments[0]
    pod = dep["spec"]["template"]
    spec = pod["spec"]
    labels = pod["metadata"]["labels"]
    if not labels_match(dep["spec"]["selector"]["matchLabels"], labels):
        problem(where, "the Deployment's selector does not match its pod labels")
    container = next((c for c in spec["containers"] if c["name"] == "halo"), None)
    if container is None:
        problem(where, "no container named halo")
        return
    env = {e["name"]: e.get("value") for e in container.get("env", [])}
    if env.get("HALO_DEVICE") != variant:
        problem(where, f"HALO_DEVICE is {env.get('HALO_DEVICE')!r}, want {variant!r}")
    if not container["image"].endswith(f":{variant}") or container["image"] == "halo":
        problem(where, f"image {container['image']!r} is not the {variant} image")
    sec = spec.get("securityContext", {})
    if not sec.get("runAsNonRoot") or not sec.get("runAsUser"):
        problem(where, "the pod must run as a non-root uid")
    if container.get("securityContext", {}).get("allowPrivilegeEscalation") is not False:
        problem(where, "allowPrivilegeEscalation must be false")

    # Probes: all grpc on the gRPC port (health needs no token); readiness and startup exist.
    grpc_port = resolve_port(container, "grpc")
    metrics_port = resolve_port(container, "metrics")
    if grpc_port is None or metrics_port is None:
        problem(where, "the container needs ports named grpc and metrics")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        p = container.get(probe)
        if not p or "grpc" not in p:
            problem(where, f"{probe} must be a grpc probe")
            continue
        if resolve_port(container, p["grpc"]["port"]) != grpc_port:
            problem(where, f"{probe} probes port {p['grpc']['port']}, not the grpc port {grpc_port}")
    startup = container.get("startupProbe", {})
    budget = startup.get("periodSeconds", 10) * startup.get("failureThreshold", 3)
    if budget < 300:
        problem(where, f"the startupProbe allows {budget} s for model load and warmup; want >= 300")

    # Grace period: preStop + drain + shutdown after the drain, with room to spare.
    drain = arg_value(container.get("args", []), "--drain-timeout-secs")
    if drain is None:
        problem(where, "--drain-timeout-secs must be explicit in args")
    else:
        pre_stop = 0
        cmd = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        if len(cmd) == 2 and cmd[0] == "sleep":
            pre_stop = int(cmd[1])
        need = pre_stop + int(drain) + SHUTDOWN_AFTER_DRAIN_S
        grace = spec.get("terminationGracePeriodSeconds", 30)
        if grace <= need:
            problem(where, f"terminationGracePeriodSeconds {grace} <= preStop {pre_stop} + drain {drain} + {SHUTDOWN_AFTER_DRAIN_S}")

    # Resources: the device's extended resource, requested and limited.
    res = container.get("resources", {})
    dev = DEVICE_RESOURCE[variant]
    for r in ("nvidia.com/gpu", "habana.ai/gaudi"):
        has = r in res.get("limits", {})
        if has != (r == dev):
            problem(where, f"limits {'lack' if not has else 'carry'} {r}")
    if "memory" not in res.get("limits", {}):
        problem(where, "no memory limit")

    # Volumes: models read-only from a PVC, the token from a Secret as a file.
    vols = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {m["name"]: m for m in container.get("volumeMounts", [])}
    if "persistentVolumeClaim" not in vols.get("models", {}) and "hostPath" not in vols.get("models", {}):
        problem(where, "the models volume must be a PVC or a hostPath")
    if not mounts.get("models", {}).get("readOnly"):
        problem(where, "the models volume must be mounted read-only")
    token_file = arg_value(container.get("args", []), "--auth-token-file")
    secret = vols.get("auth-token", {}).get("secret")
    mount = mounts.get("auth-token")
    if not secret or not mount or not token_file:
        problem(where, "the auth token must come from a Secret volume through --auth-token-file")
    else:
        items = {i["path"] for i in secret.get("items", [])}
        if os.path.dirname(token_file) != mount["mountPath"] or os.path.basename(token_file) not in items:
            problem(where, f"--auth-token-file {token_file} is not the Secret's mounted file")
    ann = pod["metadata"].get("annotations", {})
    if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(metrics_port):
        problem(where, "prometheus.io annotations must name the metrics port")

    # Services: both select the pods; one headless; named target ports exist.
    services = by_kind(objects, "Service")
    if sorted(s["spec"].get("clusterIP") == "None" for s in services) != [False, True]:
        problem(where, "want one headless Service and one regular Service")
    for s in services:
        if not labels_match(s["spec"]["selector"], labels):
            problem(where, f"Service {s['metadata']['name']} does not select the worker pods")
        for p in s["spec"]["ports"]:
            if resolve_port(container, p["targetPort"]) is None:
                problem(where, f"Service {s['metadata']['name']} targets unknown port {p['targetPort']}")
    for pdb in by_kind(objects, "PodDisruptionBudget"):
        if not labels_match(pdb["spec"]["selector"]["matchLabels"], labels):
            problem(where, "the PodDisruptionBudget does not select the worker pods")
    hpas = by_kind(objects, "HorizontalPodAutoscaler")
    if len(hpas) != 1:
        problem(where, "want one HorizontalPodAutoscaler")
    for hpa in hpas:
        ref = hpa["spec"]["scaleTargetRef"]
        if (ref["kind"], ref["name"]) != ("Deployment", dep["metadata"]["name"]):
            problem(where, "the HPA does not scale the Deployment")
        names = [m.get("pods", {}).get("metric", {}).get("name") for m in hpa["spec"]["metrics"]]
        if "halo_queue_depth" not in names:
            problem(where, "the HPA must scale on halo_queue_depth")
        if "replicas" in dep["spec"]:
            problem(where, "the Deployment sets replicas while an HPA owns them")
    return services


def check_monitoring(objects, services):
    for sm in objects:
        sel = sm["spec"]["selector"]["matchLabels"]
        chosen = [s for s in services if labels_match(sel, s["metadata"].get("labels", {}))]
        if len(chosen) != 1 or chosen[0]["spec"].get("clusterIP") != "None":
            problem("monitoring", "the ServiceMonitor must select exactly the headless Service")
            continue
        ports = {p["name"] for p in chosen[0]["spec"]["ports"]}
        for ep in sm["spec"]["endpoints"]:
            if ep["port"] not in ports:
                problem("monitoring", f"ServiceMonitor port {ep['port']} is not a port of the headless Service")


def canonical(objects):
    return sorted(json.dumps(o, sort_keys=True) for o in objects)


def main():
    kubectl = shutil.which("kubectl")
    services = []
    for variant in OVERLAYS + ["monitoring"]:
        d = os.path.join(HERE, "overlays", variant) if variant != "monitoring" else os.path.join(HERE, "monitoring")
        try:
            objects = render.build(d)
        except (render.RenderError, OSError, yaml.YAMLError) as e:
            problem(variant, f"render: {e}")
            continue
        for obj in objects:
            validate(variant, obj)
        if variant == "monitoring":
            check_monitoring(objects, services)
        else:
            services = check_overlay(variant, objects) or services
        if kubectl:
            out = subprocess.run([kubectl, "kustomize", d], capture_output=True, text=True, check=False)
            if out.returncode != 0:
                problem(variant, f"kubectl kustomize failed: {out.stderr.strip()}")
            elif canonical(y for y in yaml.safe_load_all(out.stdout) if y) != canonical(objects):
                problem(variant, "render.py and `kubectl kustomize` disagree")
        print(f"deploy-check: {variant}: {len(objects)} objects rendered and validated"
              + (" (same as kubectl kustomize)" if kubectl else ""), file=sys.stderr)
    if problems:
        for p in problems:
            print(f"deploy-check: FAIL: {p}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
