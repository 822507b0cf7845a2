"""python -m halo_fake_sidecar: the real sidecar with corrupted Step replies (tests only).

HALO_FAKE_MODE: wrong_count | oov | wrong_epoch | wrong_step | nan_logprob | no_outcome.
HALO_FAKE_AFTER: how many honest steps come first (default 0).
HALO_REAL_SIDECAR_DIR: where halo_sidecar lives.
"""

import os
import sys

sys.path.insert(0, os.environ["HALO_REAL_SIDECAR_DIR"])

from halo_sidecar import __main__ as real  # noqa: E402
from halo_sidecar import server  # noqa: E402

MODE = os.environ.get("HALO_FAKE_MODE", "")
AFTER = int(os.environ.get("HALO_FAKE_AFTER", "0"))
_make = server.make_servicer


def corrupt(reply):
    if MODE == "wrong_count":
        reply.results.add(seq_id=reply.results[0].seq_id if reply.results else 1)
    elif MODE == "oov":
        for r in reply.results:
            r.token.token = 1_000_000
    elif MODE == "wrong_epoch":
        reply.epoch += 1
    elif MODE == "wrong_step":
        reply.step_id += 5
    elif MODE == "nan_logprob":
        for r in reply.results:
            r.token.logprob = float("nan")
    elif MODE == "no_outcome":
        for r in reply.results:
            r.ClearField("token")
    return reply


def make_servicer(pb, services, executor, epoch):
    inner = _make(pb, services, executor, epoch)
    honest = [0]
    step = inner.Step

    def lying_step(request, context):
        reply = step(request, context)
        honest[0] += 1
        return reply if honest[0] <= AFTER else corrupt(reply)

    inner.Step = lying_step
    return inner


server.make_servicer = make_servicer

if __name__ == "__main__":
    sys.exit(real.main())
