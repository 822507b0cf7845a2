"""Bucket ladders, the shape a batch pads to, and the warmup set covering what the limits allow."""

from halo_sidecar.buckets import Buckets, Shape, ceil_to, ladder


def test_ladder_doubles_and_ends_at_max():
    assert ladder(1, 1) == [1]
    assert ladder(1, 6) == [1, 2, 4, 6]
    assert ladder(16, 64) == [16, 32, 64]
    assert ladder(16, 100) == [16, 32, 64, 100]


def test_ceil_to_pads_up_and_beyond_the_top():
    assert ceil_to([1, 2, 4], 3) == 4
    assert ceil_to([1, 2, 4], 4) == 4
    assert ceil_to([1, 2, 4], 9) == 12


def test_prefill_and_decode_shapes_are_warmed():
    b = Buckets(block_size=16, max_batch_tokens=64, max_batch_seqs=4, max_seq_len=128)
    warm = set(b.warmup_shapes())
    # Three prompts of 5, 17 and 9 tokens: 3 rows pad to 4, 17 tokens pad to 32 (2 blocks).
    s = b.prefill(batch=3, max_tokens=17, max_end=17)
    assert s == Shape("prefill", 4, 32, 2)
    assert s in warm
    # A 20-token chunk of a prompt whose first 40 tokens are cached: 60 positions, 4 blocks.
    s = b.prefill(batch=1, max_tokens=20, max_end=60)
    assert s == Shape("prefill", 1, 32, 4) and s in warm
    for n in range(1, 5):
        for end in range(1, 129):
            assert b.decode(n, end) in warm


def test_every_prefill_the_limits_allow_packs_into_warmed_shapes():
    b = Buckets(block_size=16, max_batch_tokens=64, max_batch_seqs=4, max_seq_len=128)
    warm = set(b.warmup_shapes())
    # Any mix of fresh prompts and chunks with context within the token budget.
    cases = [[(33, 33), (20, 20), (11, 11)], [(64, 64)], [(20, 60), (20, 20), (1, 1), (1, 1)],
             [(10, 120), (30, 30), (24, 24)], [(16, 16)] * 4]
    for rows in cases:
        passes = b.pack_prefill(rows, warm)
        assert all(shape in warm for shape, _ in passes), rows
        assert sorted(i for _, idx in passes for i in idx) == list(range(len(rows)))
        for shape, idx in passes:
            assert len(idx) <= shape.batch
            assert all(rows[i][0] <= shape.tokens and rows[i][1] <= shape.blocks * 16 for i in idx)
    # Equal prompts share one pass.
    assert len(b.pack_prefill([(16, 16)] * 4, warm)) == 1


def test_padding_counts():
    b = Buckets(block_size=16, max_batch_tokens=64, max_batch_seqs=4, max_seq_len=128)
    s = b.prefill(batch=1, max_tokens=15, max_end=15)
    assert s.batch * s.tokens - 15 == 1


def test_the_pool_caps_the_block_ladder():
    # The engine may ask for the model's whole context with a tiny pool: no shape needs more
    # blocks than the pool has.
    b = Buckets(block_size=16, max_batch_tokens=64, max_batch_seqs=8, max_seq_len=4096, num_blocks=10)
    assert b.blocks == [1, 2, 4, 8, 10]
    assert max(s.blocks for s in b.warmup_shapes()) == 10
