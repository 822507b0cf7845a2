"""Where the tensors live: Gaudi (device "hpu") when habana_frameworks imports, else CUDA or CPU.

Everything device-specific is here, so the model, the bucketing and the executor run the same
code on all three: lazy-mode step boundaries (mark_step), HPU graphs, memory queries.
"""

from __future__ import annotations

import os

import torch


class Backend:
    name = "cpu"
    # Whether the model must avoid data-dependent control flow (the MoE block's static form):
    # true under HPU graphs, which replay what they captured.
    static_moe = False

    def __init__(self) -> None:
        self.device = torch.device("cpu")

    def mark_step(self) -> None:
        """Ends a lazy-mode graph on HPU; nothing elsewhere."""

    def synchronize(self) -> None:
        pass

    def wrap(self, module):
        """The callable the executor runs: the module itself, or its HPU-graph wrapper."""
        return module

    def device_name(self) -> str:
        return "cpu"

    def memory(self) -> tuple[int, int]:
        """(free, total) bytes the KV cache may draw from."""
        pages = os.sysconf("SC_PHYS_PAGES")
        avail = os.sysconf("SC_AVPHYS_PAGES")
        size = os.sysconf("SC_PAGE_SIZE")
        return avail * size, pages * size

    def default_dtype(self) -> torch.dtype:
        return torch.float32


class CudaBackend(Backend):
    name = "cuda"

    def __init__(self) -> None:
        self.device = torch.device("cuda")

    def synchronize(self) -> None:
        torch.cuda.synchronize()

    def device_name(self) -> str:
        return torch.cuda.get_device_name(self.device)

    def memory(self) -> tuple[int, int]:
        return torch.cuda.mem_get_info(self.device)

    def default_dtype(self) -> torch.dtype:
        return torch.bfloat16


class HpuBackend(Backend):
    name = "hpu"

    def __init__(self) -> None:
        import habana_frameworks.torch.core as htcore
        import habana_frameworks.torch.hpu as hthpu

        self._core, self._hpu = htcore, hthpu
        self.device = torch.device("hpu")
        self.graphs = os.environ.get("HALO_SIDECAR_HPU_GRAPHS", "1") != "0"
        self.static_moe = self.graphs

    def mark_step(self) -> None:
        self._core.mark_step()

    def synchronize(self) -> None:
        self._hpu.synchronize()

    def wrap(self, module):
        if not self.graphs:
            return module
        # The KV cache tensors are module state that the graph updates in place; the tensor
        # cache is off so intermediate activations are not pinned per graph.
        return self._hpu.wrap_in_hpu_graph(module, disable_tensor_cache=True)

    def device_name(self) -> str:
        return self._hpu.get_device_name()

    def memory(self) -> tuple[int, int]:
        try:
            return self._hpu.mem_get_info()
        except AttributeError:
            stats = self._hpu.memory_stats()
            return stats["Limit"] - stats["InUse"], stats["Limit"]

    def default_dtype(self) -> torch.dtype:
        return torch.bfloat16


def hpu_available() -> bool:
    try:
        import habana_frameworks.torch.core  # noqa: F401
    except ImportError:
        return False
    return True


def select(requested: str = "auto") -> Backend:
    """auto: hpu, then cuda, then cpu. An explicit choice that cannot be met raises."""
    if requested in ("auto", "hpu") and hpu_available():
        return HpuBackend()
    if requested == "hpu":
        raise RuntimeError("habana_frameworks is not importable: no HPU backend here")
    if requested in ("auto", "cuda") and torch.cuda.is_available():
        return CudaBackend()
    if requested == "cuda":
        raise RuntimeError("torch sees no CUDA device")
    if requested not in ("auto", "cpu"):
        raise RuntimeError(f"unknown sidecar device {requested!r} (auto, hpu, cuda, cpu)")
    return Backend()
