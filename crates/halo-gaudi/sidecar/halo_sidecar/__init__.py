"""halo's Gaudi sidecar: a PyTorch executor behind a private gRPC Unix socket.

The Rust worker (crates/halo-gaudi) owns scheduling, KV block allocation and stop rules; this
package loads Llama, Mistral, Qwen2, Qwen3, Qwen3-MoE, Mixtral, Gemma 2, Gemma 3 (text) and Phi-3
weights into plain torch (families.py), keeps the paged KV cache as device
tensors, pads each step to a warmed shape bucket and samples with halo_hal's reference semantics.
It runs on Gaudi (device "hpu", HPU graphs) when habana_frameworks is importable, else on torch
CUDA or CPU with the same code, which is how it is tested.
"""
