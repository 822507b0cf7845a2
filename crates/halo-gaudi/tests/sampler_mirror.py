"""Reads sampling cases (JSON on stdin), samples each with the sidecar's sampler, writes the
results (JSON on stdout). gaudi_sampler_mirror.rs compares them with halo_hal::sampling."""

import json
import os
import sys

sys.path.insert(0, os.environ["HALO_REAL_SIDECAR_DIR"])

import numpy as np  # noqa: E402

from halo_sidecar import sampling  # noqa: E402


def main():
    out = []
    for case in json.load(sys.stdin):
        p = case["params"]
        req = sampling.Request(
            params=sampling.Params(**p),
            rng_offset=case["rng_offset"],
            top_n=case["top_n"],
            prompt=case.get("prompt"),
            generated=case.get("generated"),
            history=[tuple(h) for h in case["history"]] if "history" in case else None,
        )
        try:
            s = sampling.sample(np.array(case["logits"], dtype=np.float32), req)
            out.append({"token": s.token, "logprob": s.logprob, "top": [[t, lp] for t, lp in s.top]})
        except sampling.NonFiniteLogits:
            out.append(None)
    json.dump(out, sys.stdout)


main()
