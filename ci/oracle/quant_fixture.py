#!/usr/bin/env python3
"""Reference fixtures for halo's GGUF block (de)quantization (crates/halo-model/src/quant).

The reference is the `gguf` Python package (gguf-py, `gguf.quants`), which mirrors ggml's scalar
reference code. For every block type halo supports this script makes a few random but valid
blocks (random bytes, with the f16 scale fields overwritten by finite values of moderate size so
that every dequantized value is finite), dequantizes them with `gguf.quants.dequantize`, and
writes both to tests/fixtures/quant/. For the types gguf-py can quantize (Q8_0, Q4_0, and the
float types F16/BF16) it also records `gguf.quants.quantize` of random f32 rows, including the
awkward cases (all-zero blocks, ties, a negative extreme, repeated extremes of both signs).

Files (all little-endian), for each type T (lower case):
  T.blocks.bin        the blocks, laid end to end
  T.dequant.f32       gguf-py's dequantization of T.blocks.bin
  T.quant_src.f32     f32 rows handed to gguf-py's quantizer (Q8_0, Q4_0, F16, BF16 only)
  T.quant.bin         gguf-py's quantization of T.quant_src.f32
  k.quant_src.f32     f32 super-blocks of assorted distributions, for the K-quant quantizers
  T.ggml_quant.bin    ggml's own `quantize_row_T_ref` of k.quant_src.f32 (Q4_K, Q5_K, Q6_K),
                      called from a libggml-base built from the same llama.cpp sources: gguf-py
                      has no K-quant quantizers, so halo's are held to ggml's error, not its bits
  manifest.json       seed, gguf-py version, counts

Usage (any Python with numpy and gguf-py; the llama.cpp sources vendor gguf-py, and a cmake
build of them has libggml-base.so):
  PYTHONPATH=/root/llamacpp/llama_cpp_python-0.3.36/vendor/llama.cpp/gguf-py \
      python3 ci/oracle/quant_fixture.py tests/fixtures/quant /root/llamacpp/build/bin/libggml-base.so
The output is a pure function of the seed and gguf-py's arithmetic: rerunning it must leave the
committed files unchanged.
"""

import ctypes
import json
import sys
from pathlib import Path

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

SEED = 20240611

# Blocks per type: a few KB of fixture each (a K-quant block dequantizes to 1 KB of f32).
N_BLOCKS = {T.Q4_0: 16, T.Q8_0: 16, T.Q4_K: 4, T.Q5_K: 4, T.Q6_K: 4}

# Byte offsets of the f16 scale fields inside one block (see the layouts in quant/mod.rs).
F16_FIELDS = {
    T.Q4_0: [0],  # d
    T.Q8_0: [0],  # d
    T.Q4_K: [0, 2],  # d, dmin
    T.Q5_K: [0, 2],  # d, dmin
    T.Q6_K: [208],  # d (after ql[128], qh[64], scales[16])
}


def moderate_f16(rng: np.random.Generator, n: int) -> np.ndarray:
    """Finite f16 values of either sign, log-uniform over [1e-6, 4] (so some are subnormal),
    with an exact zero and a negative value placed first for the edge cases."""
    mag = np.exp(rng.uniform(np.log(1e-6), np.log(4.0), n))
    sign = np.where(rng.random(n) < 0.25, -1.0, 1.0)
    v = (mag * sign).astype(np.float16)
    if n >= 2:
        v[0] = np.float16(0.0)
        v[1] = np.float16(-0.375)
    return v


def random_blocks(rng: np.random.Generator, qtype: T) -> np.ndarray:
    n = N_BLOCKS[qtype]
    _, type_size = gguf.GGML_QUANT_SIZES[qtype]
    blocks = rng.integers(0, 256, size=(n, type_size), dtype=np.uint8)
    for off in F16_FIELDS[qtype]:
        blocks[:, off : off + 2] = moderate_f16(rng, n).view(np.uint8).reshape(n, 2)
    return blocks


def quant_rows(rng: np.random.Generator, qtype: T) -> np.ndarray:
    """Rows of 32-value blocks: Gaussian at several scales, then the edge cases."""
    blocks = [rng.standard_normal(32).astype(np.float32) * np.float32(s) for s in (1.0, 1e-3, 37.0, 1e-6, 0.02, 5.0)]
    blocks.append(np.zeros(32, np.float32))  # d = 0: every quant is the zero point
    one = np.zeros(32, np.float32)
    one[7] = -2.5  # a single negative extreme
    blocks.append(one)
    both = rng.uniform(-1, 1, 32).astype(np.float32)
    both[3], both[20] = 1.5, -1.5  # extremes of equal size and both signs: the first one wins
    blocks.append(both)
    both = rng.uniform(-1, 1, 32).astype(np.float32)
    both[3], both[20] = -1.5, 1.5
    blocks.append(both)
    # Values on exact half steps of the Q8_0 grid (127 -> d = 1), so rounding ties occur.
    ties = (np.arange(32, dtype=np.float32) - 16) + np.float32(0.5)
    ties[0] = 127.0
    blocks.append(ties)
    # Values on the Q4_0 grid with d = -0.25 (max -8 * d = 2): ties of x * id + 8.5.
    grid = (rng.integers(0, 16, 32).astype(np.float32) - 8) * np.float32(-0.25)
    grid[0] = 2.0
    blocks.append(grid)
    blocks.append(np.linspace(-3, 3, 32, dtype=np.float32))
    blocks.append(rng.uniform(-65504 / 128, 65504 / 128, 32).astype(np.float32))
    blocks.append(rng.standard_normal(32).astype(np.float32) * np.float32(1e-4))
    blocks.append(rng.standard_normal(32).astype(np.float32))
    rows = np.concatenate(blocks).reshape(-1, 64)
    if qtype in (T.F16, T.BF16):
        rows = rows * np.float32(3.0)  # same rows; still in range of f16
    return rows.astype(np.float32)


def k_quant_rows(rng: np.random.Generator) -> np.ndarray:
    """Super-blocks the K-quant fits find hard in different ways, one per 256 values."""
    n = 256
    blocks = [
        rng.standard_normal(n),  # weights-like
        rng.laplace(size=n) * 0.05,  # heavy tails at a small scale
        rng.uniform(-1, 1, n),
        np.where(np.arange(n) % 37 == 0, 8.0, 1.0) * rng.standard_normal(n),  # outliers
        np.abs(rng.standard_normal(n)) + 0.5,  # all positive: the min is clamped at 0
        -np.abs(rng.standard_normal(n)) - 2.0,  # all negative
        rng.standard_normal(n) * np.repeat(np.exp(rng.uniform(-6, 1, 16)), 16),  # scale per sub-block
        np.concatenate([np.zeros(128), rng.standard_normal(128) * 1e-3]),  # half zero, tiny
        # Sub-block scales spanning e^-12..e^6: most sub-blocks' 6-bit scales round to 0, where
        # ggml keeps the levels of the fit.
        rng.standard_normal(n) * np.repeat(np.exp(rng.uniform(-12, 6, 8)), 32),
        np.round(rng.standard_normal(n) * 4) / 4,  # on a quarter grid: ties in every comparison
        np.where(rng.random(n) < 0.5, -0.0, 0.0),  # signed zeros: the sign of d and dmin
    ]
    return np.concatenate(blocks).astype(np.float32)


def ggml_k_quants(lib_path: str, src: np.ndarray) -> dict[T, bytes]:
    lib = ctypes.CDLL(lib_path)
    out = {}
    for qtype, fn in ((T.Q4_K, "quantize_row_q4_K_ref"), (T.Q5_K, "quantize_row_q5_K_ref"), (T.Q6_K, "quantize_row_q6_K_ref")):
        f = getattr(lib, fn)
        f.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        f.restype = None
        _, type_size = gguf.GGML_QUANT_SIZES[qtype]
        buf = np.zeros(src.size // 256 * type_size, np.uint8)
        f(src.ctypes.data, buf.ctypes.data, src.size)
        out[qtype] = buf.tobytes()
    return out


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/quant")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(SEED)
    manifest = {"seed": SEED, "gguf_version": getattr(gguf, "__version__", "vendored llama.cpp gguf-py"), "types": {}}
    for qtype in (T.Q4_0, T.Q8_0, T.Q4_K, T.Q5_K, T.Q6_K):
        blocks = random_blocks(rng, qtype)
        values = dequantize(blocks.reshape(-1), qtype).astype("<f4")
        assert np.all(np.isfinite(values)), qtype.name
        name = qtype.name.lower()
        (out / f"{name}.blocks.bin").write_bytes(blocks.tobytes())
        (out / f"{name}.dequant.f32").write_bytes(values.tobytes())
        manifest["types"][qtype.name] = {"blocks": int(blocks.shape[0]), "values": int(values.size)}
    for qtype in (T.Q8_0, T.Q4_0, T.F16, T.BF16):
        rows = quant_rows(rng, qtype)
        q = np.ascontiguousarray(quantize(rows, qtype)).view(np.uint8)
        name = qtype.name.lower()
        (out / f"{name}.quant_src.f32").write_bytes(rows.astype("<f4").tobytes())
        (out / f"{name}.quant.bin").write_bytes(q.tobytes())
        entry = manifest["types"].setdefault(qtype.name, {})
        entry["quant_rows"] = int(rows.shape[0])
        entry["quant_cols"] = int(rows.shape[1])
    ksrc = k_quant_rows(rng)
    (out / "k.quant_src.f32").write_bytes(ksrc.astype("<f4").tobytes())
    manifest["k_quant_src_blocks"] = ksrc.size // 256
    if len(sys.argv) > 2:
        for qtype, blob in ggml_k_quants(sys.argv[2], ksrc).items():
            (out / f"{qtype.name.lower()}.ggml_quant.bin").write_bytes(blob)
    else:
        print("no libggml-base given: kept the existing *.ggml_quant.bin", file=sys.stderr)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")


if __name__ == "__main__":
    main()
