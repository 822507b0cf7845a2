#!/usr/bin/env python3
"""Renders one of halo's kustomizations without the kustomize binary, for offline CI.

Only the subset deploy/k8s uses is implemented, and anything else is refused rather than
ignored, so a manifest can never silently render differently here and in `kubectl apply -k`:
`resources` (files or directories with a kustomization.yaml), `patches` (RFC 6902 JSON patches
from a file, with a `target` of kind/name; ops add, remove, replace, test) and `images`
(name -> newName/newTag/digest). ci/deploy-check.sh also compares this renderer's output with
`kubectl kustomize` wherever kubectl is installed.

    render.py DIR [--format yaml|json]
"""

import argparse
import copy
import json
import os
import sys

import yaml

SUPPORTED_KEYS = {"apiVersion", "kind", "resources", "patches", "images"}
POD_SPEC_PATHS = {
    "Deployment": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "Pod": ("spec",),
}


class RenderError(Exception):
    pass


def load_documents(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def build(directory):
    kfile = os.path.join(directory, "kustomization.yaml")
    if not os.path.isfile(kfile):
        raise RenderError(f"{directory}: no kustomization.yaml")
    with open(kfile, encoding="utf-8") as f:
        kust = yaml.safe_load(f) or {}
    unknown = sorted(set(kust) - SUPPORTED_KEYS)
    if unknown:
        raise RenderError(f"{kfile}: unsupported fields {unknown} (render.py implements {sorted(SUPPORTED_KEYS)})")
    objects = []
    for res in kust.get("resources", []):
        path = os.path.normpath(os.path.join(directory, res))
        objects += build(path) if os.path.isdir(path) else load_documents(path)
    for patch in kust.get("patches", []):
        apply_patch(directory, kfile, patch, objects)
    for image in kust.get("images", []):
        set_image(objects, image)
    seen = set()
    for obj in objects:
        key = (obj.get("apiVersion"), obj.get("kind"), obj.get("metadata", {}).get("name"))
        if key in seen:
            raise RenderError(f"{kfile}: {key} defined twice")
        seen.add(key)
    return objects


def apply_patch(directory, kfile, patch, objects):
    unknown = sorted(set(patch) - {"path", "target"})
    if unknown or "path" not in patch or "target" not in patch:
        raise RenderError(f"{kfile}: each patch needs exactly `path` and `target` (got {sorted(patch)})")
    target = patch["target"]
    if sorted(set(target) - {"kind", "name"}):
        raise RenderError(f"{kfile}: a patch target may name only kind and name")
    path = os.path.join(directory, patch["path"])
    with open(path, encoding="utf-8") as f:
        ops = yaml.safe_load(f)
    if not isinstance(ops, list):
        raise RenderError(f"{path}: only JSON patches (a list of ops) are supported")
    matched = [
        o for o in objects
        if o.get("kind") == target.get("kind", o.get("kind"))
        and o.get("metadata", {}).get("name") == target.get("name", o.get("metadata", {}).get("name"))
    ]
    if not matched:
        raise RenderError(f"{path}: the target {target} matches nothing")
    for obj in matched:
        for i, op in enumerate(ops):
            try:
                json_patch_op(obj, op)
            except (KeyError, IndexError, ValueError, TypeError) as e:
                raise RenderError(f"{path}: op {i} {op.get('op')} {op.get('path')}: {e}") from None


def split_pointer(pointer):
    if not pointer.startswith("/"):
        raise ValueError("a JSON pointer starts with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in pointer[1:].split("/")]


def json_patch_op(doc, op):
    kind = op["op"]
    parts = split_pointer(op["path"])
    parent = doc
    for p in parts[:-1]:
        parent = parent[int(p)] if isinstance(parent, list) else parent[p]
    last = parts[-1]
    if isinstance(parent, list):
        if kind == "add":
            index = len(parent) if last == "-" else int(last)
            if not 0 <= index <= len(parent):
                raise IndexError(f"index {index} out of range")
            parent.insert(index, copy.deepcopy(op["value"]))
            return
        index = int(last)
        if not 0 <= index < len(parent):
            raise IndexError(f"index {index} out of range")
    elif isinstance(parent, dict):
        index = last
        if kind in ("remove", "replace", "test") and index not in parent:
            raise KeyError(f"no member {index!r}")
    else:
        raise TypeError("the parent is not a container")
    if kind == "add" or kind == "replace":
        parent[index] = copy.deepcopy(op["value"])
    elif kind == "remove":
        del parent[index]
    elif kind == "test":
        if parent[index] != op["value"]:
            raise ValueError(f"test failed: {parent[index]!r} != {op['value']!r}")
    else:
        raise ValueError(f"unsupported op {kind!r}")


def set_image(objects, image):
    name = image["name"]
    for obj in objects:
        path = POD_SPEC_PATHS.get(obj.get("kind"))
        if path is None:
            continue
        spec = obj
        for p in path:
            spec = spec.get(p, {})
        for container in spec.get("initContainers", []) + spec.get("containers", []):
            current = container.get("image", "")
            base, tag, digest = current, None, None
            if "@" in base:
                base, digest = base.split("@", 1)
            if ":" in base.rsplit("/", 1)[-1]:
                base, tag = base.rsplit(":", 1)
            if base != name:
                continue
            base = image.get("newName", base)
            if "digest" in image:
                container["image"] = f"{base}@{image['digest']}"
            elif "newTag" in image:
                container["image"] = f"{base}:{image['newTag']}"
            else:
                container["image"] = base + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--format", choices=["yaml", "json"], default="yaml")
    args = ap.parse_args()
    try:
        objects = build(args.dir)
    except (RenderError, OSError, yaml.YAMLError) as e:
        print(f"render.py: {e}", file=sys.stderr)
        return 1
    if args.format == "json":
        json.dump(objects, sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
    else:
        yaml.safe_dump_all(objects, sys.stdout, sort_keys=False, default_flow_style=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
