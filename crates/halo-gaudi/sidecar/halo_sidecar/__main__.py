"""Entry point: python -m halo_sidecar --socket PATH --epoch N [--device auto|hpu|cuda|cpu].

Started by halo-gaudi's supervisor, never by hand in production. The process ends within half
a second of its parent (a parent-pid watch), so a crashed worker leaves no orphan holding the
accelerator. PR_SET_PDEATHSIG is not used: it fires when the spawning *thread* exits, and the
worker may spawn from a thread that ends before the device does.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time


def _die_with_parent() -> None:
    parent = os.getppid()

    def watch():
        while True:
            if os.getppid() != parent:
                os._exit(3)
            time.sleep(0.5)

    threading.Thread(target=watch, daemon=True).start()


def main(argv=None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    default_proto = os.environ.get(
        "HALO_SIDECAR_PROTO_ROOT", os.path.normpath(os.path.join(here, "..", "..", "..", "..", "proto"))
    )
    ap = argparse.ArgumentParser(prog="halo_sidecar")
    ap.add_argument("--socket", required=True)
    ap.add_argument("--epoch", type=int, required=True)
    ap.add_argument("--device", default=os.environ.get("HALO_SIDECAR_DEVICE", "auto"))
    ap.add_argument("--proto-root", default=default_proto)
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = ap.parse_args(argv)

    _die_with_parent()
    import torch

    from .backend import select
    from .executor import Executor
    from .server import serve

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    backend = select(args.device)
    server = serve(args.socket, args.epoch, Executor(backend), args.proto_root)
    print(f"halo-sidecar ready: epoch {args.epoch} backend {backend.name}", file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: server.stop(grace=1))
    server.wait_for_termination()
    return 0


if __name__ == "__main__":
    sys.exit(main())
