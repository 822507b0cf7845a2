"""Device-to-device copy bandwidth (bytes read + written per second): the HBM roofline's denominator.
Usage: python copy_bandwidth.py  -> prints one number (bytes/s)."""
import time

import torch

n = 1 << 30
src = torch.empty(n, dtype=torch.uint8, device="cuda")
dst = torch.empty_like(src)
for _ in range(3):
    dst.copy_(src)
torch.cuda.synchronize()
reps = 20
t0 = time.perf_counter()
for _ in range(reps):
    dst.copy_(src)
torch.cuda.synchronize()
print(2 * n * reps / (time.perf_counter() - t0))
