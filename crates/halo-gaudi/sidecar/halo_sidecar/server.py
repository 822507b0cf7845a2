"""The gRPC face of the sidecar: decodes requests, checks the epoch, calls the executor.

Steps are serialized (one device, one KV cache); Health answers from counters without waiting
for a step, so the supervisor can tell a busy sidecar from a dead one.
"""

from __future__ import annotations

import os
import sys
import threading
from concurrent import futures

import grpc

from . import sampling
from .executor import BadRequest, Executor, NotReady, Seq

_DTYPE_TO_NAME = {1: "f32", 2: "f16", 3: "bf16"}
_NAME_TO_DTYPE = {v: k for k, v in _DTYPE_TO_NAME.items()}
MAX_MESSAGE = 64 * 1024 * 1024


def load_stubs(proto_root: str):
    """Compiles sidecar.proto at start-up (grpcio-tools), so no generated file can go stale."""
    if proto_root not in sys.path:
        sys.path.insert(0, proto_root)
    return grpc.protos_and_services("halo/sidecar/v1/sidecar.proto")


def _sample_request(pb, msg) -> sampling.Request:
    p = msg.params
    params = sampling.Params(
        temperature=p.temperature,
        top_k=p.top_k,
        top_p=p.top_p,
        min_p=p.min_p,
        repetition_penalty=p.repetition_penalty,
        frequency_penalty=p.frequency_penalty,
        presence_penalty=p.presence_penalty,
        seed=p.seed,
    )
    req = sampling.Request(params=params, rng_offset=msg.rng_offset, logprobs=msg.logprobs, top_n=msg.top_n)
    if msg.has_penalties:
        if len(msg.history_tokens) != len(msg.history_output_counts):
            raise BadRequest("history_tokens and history_output_counts differ in length")
        if msg.history_tokens:
            req.history = list(zip(msg.history_tokens, msg.history_output_counts))
        else:
            req.prompt, req.generated = list(msg.prompt_tokens), list(msg.generated_tokens)
    return req


def make_servicer(pb, services, executor: Executor, epoch: int):
    lock = threading.Lock()

    def check_epoch(request, context):
        if request.epoch != epoch:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"epoch {request.epoch} is not {epoch}")

    def guarded(context, fn):
        try:
            return fn()
        except BadRequest as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except NotReady as e:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(e))
        except torch_oom() as e:
            context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(e)[:500])

    class Servicer(services.SidecarServicer):
        def Load(self, request, context):
            check_epoch(request, context)

            def run():
                from .config import ConfigError
                from .model import WeightError

                try:
                    info = executor.load(request.model_dir, _DTYPE_TO_NAME.get(request.dtype))
                except (ConfigError, WeightError, OSError) as e:
                    raise BadRequest(f"load failed: {e}") from None
                model = pb.ModelInfo(
                    **{k: v for k, v in info.items() if k not in ("dtype", "load_ms")},
                    dtype=_NAME_TO_DTYPE[info["dtype"]],
                )
                _free, total = executor.backend.memory()
                return pb.LoadReply(
                    epoch=epoch,
                    model=model,
                    backend=executor.backend.name,
                    device_name=executor.backend.device_name(),
                    memory_bytes=total,
                    load_ms=info["load_ms"],
                )

            with lock:
                return guarded(context, run)

        def Warmup(self, request, context):
            check_epoch(request, context)

            def run():
                n, per_block, shapes, ms = executor.warmup(
                    request.block_size,
                    request.max_batch_tokens,
                    request.max_batch_seqs,
                    request.max_seq_len,
                    request.num_blocks,
                    request.kv_cache_bytes,
                )
                return pb.WarmupReply(
                    epoch=epoch,
                    block_size=request.block_size,
                    num_blocks=n,
                    bytes_per_block=per_block,
                    buckets_warmed=shapes,
                    warmup_ms=ms,
                )

            with lock:
                return guarded(context, run)

        def Step(self, request, context):
            check_epoch(request, context)

            def run():
                seqs = [
                    Seq(
                        seq_id=s.seq_id,
                        tokens=list(s.tokens),
                        start_pos=s.start_pos,
                        block_table=list(s.block_table),
                        sample=_sample_request(pb, s.sample) if s.HasField("sample") else None,
                        long_rope=s.long_rope,
                    )
                    for s in request.seqs
                ]
                results, t = executor.step(seqs)
                out = []
                for r in results:
                    if r.sampled is None:
                        out.append(pb.SeqResult(seq_id=r.seq_id, failure=pb.SEQ_FAILURE_NON_FINITE_LOGITS))
                        continue
                    tok = pb.SampledToken(
                        token=r.sampled.token,
                        logprob=r.sampled.logprob,
                        top=[pb.TopToken(token=a, logprob=b) for a, b in r.sampled.top],
                    )
                    out.append(pb.SeqResult(seq_id=r.seq_id, token=tok))
                timings = pb.StepTimings(
                    forward_us=t.forward_us,
                    padded_tokens=t.padded_tokens,
                    bucket=t.bucket,
                    graph_compiled=t.graph_compiled,
                )
                return pb.StepReply(epoch=epoch, step_id=request.step_id, results=out, timings=timings)

            with lock:
                return guarded(context, run)

        def Health(self, request, context):
            check_epoch(request, context)
            return pb.HealthReply(
                epoch=epoch,
                loaded=executor.model is not None,
                warmed=executor.warmed,
                steps=executor.steps,
                padded_tokens_total=executor.padded_tokens_total,
                compiles_after_warmup=executor.compiles_after_warmup,
                backend=executor.backend.name,
            )

    return Servicer()


def torch_oom():
    import torch

    return getattr(torch, "OutOfMemoryError", MemoryError)


def serve(socket_path: str, epoch: int, executor: Executor, proto_root: str) -> grpc.Server:
    pb, services = load_stubs(proto_root)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=4),
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
        ],
    )
    services.add_SidecarServicer_to_server(make_servicer(pb, services, executor, epoch), server)
    old = os.umask(0o177)  # the socket is created 0600
    try:
        server.add_insecure_port(f"unix:{socket_path}")
        server.start()
    finally:
        os.umask(old)
    os.chmod(socket_path, 0o600)
    return server
