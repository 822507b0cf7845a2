//! One forward pass as a sequence of launches over fixed activation buffers, and the sampling
//! launch. The same code runs eagerly for mixed batches and under stream capture for the decode
//! graphs, so buffers never move after warmup and every launch argument is a fixed address.

use crate::error::CudaError;
use crate::family::{Features, MoePlan};
use crate::gemm::Gemm;
use crate::kernels::{self, Arch, KernelId, KernelSource};
use crate::plan::geometry;
use crate::sampling::MAX_TOP_N;
use crate::weights::{DevBuf, FfnWeights, LayerWeights, ModelWeights};
use cudarc::driver::{CudaFunction, CudaStream, LaunchConfig, PushKernelArg};
use halo_hal::DType;
use halo_model::ModelConfig;
use std::collections::HashMap;
use std::sync::Arc;

pub(crate) enum Arg {
    P(u64),
    I(i32),
    F(f32),
}

/// Every kernel entry point, compiled for this GPU and loaded.
pub(crate) struct Kernels {
    funcs: HashMap<String, CudaFunction>,
}

impl Kernels {
    pub(crate) fn load(stream: &Arc<CudaStream>, arch: Arch) -> Result<Kernels, CudaError> {
        let mut funcs = HashMap::new();
        for source in KernelSource::ALL {
            let module = stream
                .context()
                .load_module(kernels::compile(source, arch)?)?;
            for k in source.kernels() {
                for sym in k.all_symbols() {
                    funcs.insert(sym.clone(), module.load_function(&sym)?);
                }
            }
        }
        Ok(Kernels { funcs })
    }

    pub(crate) fn launch(
        &self,
        stream: &CudaStream,
        id: KernelId,
        dtype: DType,
        (grid, block): ((u32, u32, u32), (u32, u32, u32)),
        args: &[Arg],
    ) -> Result<(), CudaError> {
        let f = &self.funcs[&id.symbol(dtype)];
        let mut b = stream.launch_builder(f);
        for a in args {
            match a {
                Arg::P(v) => b.arg(v),
                Arg::I(v) => b.arg(v),
                Arg::F(v) => b.arg(v),
            };
        }
        let cfg = LaunchConfig {
            grid_dim: grid,
            block_dim: block,
            shared_mem_bytes: 0,
        };
        // SAFETY: argument lists match the kernels' signatures in kernels/*.cu, and every
        // pointer addresses a buffer sized for the launch's rows (see Buffers::new).
        unsafe { b.launch(cfg) }?;
        Ok(())
    }
}

/// Activation and I/O buffers for at most `rows` tokens, `seqs` sequences of `width` blocks.
pub(crate) struct Buffers {
    pub rows: usize,
    pub seqs: usize,
    pub width: usize,
    pub ids: DevBuf,
    pub positions: DevBuf,
    pub long_rope: DevBuf,
    pub tok_seq: DevBuf,
    pub slots: DevBuf,
    pub tables: DevBuf,
    pub sample_rows: DevBuf,
    residual: DevBuf,
    normed: DevBuf,
    qkv: DevBuf,
    attn: DevBuf,
    gate_up: DevBuf,
    act: DevBuf,
    delta: DevBuf,
    gathered: DevBuf,
    pub logits: DevBuf,
    pub params: DevBuf,
    pub pens: DevBuf,
    pub pens_cap: usize,
    pub work: DevBuf,
    pub e: DevBuf,
    pub outs: DevBuf,
    pub top_tokens: DevBuf,
    pub top_logprobs: DevBuf,
    /// For models with sparse layers.
    moe: Option<MoeBuffers>,
}

/// A sparse layer's intermediates for `rows` tokens of `top_k` experts each (one "pair" per
/// token and chosen expert).
struct MoeBuffers {
    /// `[rows, experts]` router logits in T.
    logits: DevBuf,
    /// `[pairs]` i32 expert ids and f32 weights, each token's ascending by id.
    ids: DevBuf,
    weights: DevBuf,
    /// `[experts + 1]` i32: where each expert's pairs start in `order`.
    offsets: DevBuf,
    /// `[pairs]` i32: pair index by sorted position, and sorted position by pair index.
    order: DevBuf,
    pos: DevBuf,
    /// By sorted position: gate|up `[pairs, 2 * inter]`, activation `[pairs, inter]`, expert
    /// output `[pairs, hidden]`, in T.
    gate_up: DevBuf,
    act: DevBuf,
    out: DevBuf,
}

impl MoeBuffers {
    fn new(
        s: &Arc<CudaStream>,
        m: &MoePlan,
        hidden: usize,
        t: usize,
        rows: usize,
    ) -> Result<MoeBuffers, CudaError> {
        let pairs = rows * m.top_k;
        let z = |n: usize| DevBuf::zeros(s, n);
        Ok(MoeBuffers {
            logits: z(rows * m.num_experts * t)?,
            ids: z(pairs * 4)?,
            weights: z(pairs * 4)?,
            offsets: z((m.num_experts + 1) * 4)?,
            order: z(pairs * 4)?,
            pos: z(pairs * 4)?,
            gate_up: z(pairs * 2 * m.inter * t)?,
            act: z(pairs * m.inter * t)?,
            out: z(pairs * hidden * t)?,
        })
    }
}

impl Buffers {
    pub(crate) fn new(
        s: &Arc<CudaStream>,
        c: &ModelConfig,
        f: &Features,
        dtype: DType,
        rows: usize,
        seqs: usize,
        width: usize,
    ) -> Result<Buffers, CudaError> {
        let t = dtype.size_in_bytes();
        let qkv_w = (c.num_attention_heads + 2 * c.num_key_value_heads) * c.head_dim;
        let z = |n: usize| DevBuf::zeros(s, n);
        let pens_cap = 4096;
        Ok(Buffers {
            rows,
            seqs,
            width,
            ids: z(rows * 4)?,
            positions: z(rows * 4)?,
            long_rope: z(rows * 4)?,
            tok_seq: z(rows * 4)?,
            slots: z(rows * 8)?,
            tables: z(seqs * width * 4)?,
            sample_rows: z(seqs * 4)?,
            residual: z(rows * c.hidden_size * t)?,
            normed: z(rows * c.hidden_size * t)?,
            qkv: z(rows * qkv_w * t)?,
            attn: z(rows * c.num_attention_heads * c.head_dim * t)?,
            gate_up: z(rows * 2 * c.intermediate_size * t)?,
            act: z(rows * c.intermediate_size * t)?,
            delta: z(rows * c.hidden_size * t)?,
            gathered: z(seqs * c.hidden_size * t)?,
            logits: z(seqs * c.vocab_size * 4)?,
            params: z(seqs * 64)?,
            pens: z(pens_cap * 16)?,
            pens_cap,
            work: z(seqs * c.vocab_size * 4)?,
            e: z(seqs * c.vocab_size * 8)?,
            outs: z(seqs * 16)?,
            top_tokens: z(seqs * MAX_TOP_N * 4)?,
            top_logprobs: z(seqs * MAX_TOP_N * 4)?,
            moe: f
                .moe
                .as_ref()
                .map(|m| MoeBuffers::new(s, m, c.hidden_size, t, rows))
                .transpose()?,
        })
    }
}

/// The per-layer KV cache: K and V of `[slots, n_kv, head_dim]` each.
pub(crate) struct KvCache {
    pub layers: Vec<(DevBuf, DevBuf)>,
    pub block_size: usize,
}

pub(crate) struct Net<'a> {
    pub stream: &'a CudaStream,
    pub kernels: &'a Kernels,
    pub gemm: &'a Gemm,
    pub w: &'a ModelWeights,
    pub c: &'a ModelConfig,
    pub f: &'a Features,
    pub dtype: DType,
}

impl Net<'_> {
    fn run(
        &self,
        id: KernelId,
        geo: ((u32, u32, u32), (u32, u32, u32)),
        args: &[Arg],
    ) -> Result<(), CudaError> {
        self.kernels.launch(self.stream, id, self.dtype, geo, args)
    }

    // The three device pointers and the three GEMM dimensions are the call; a struct for them
    // would only be unpacked again on the next line.
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &self,
        x: u64,
        w: u64,
        y: u64,
        n: usize,
        k: usize,
        m: usize,
        bias: Option<&DevBuf>,
    ) -> Result<(), CudaError> {
        // SAFETY: buffers are sized for `n` rows of the model's widths (Buffers::new).
        unsafe { self.gemm.linear(x, w, y, n, k, m, self.dtype, self.dtype) }?;
        if let Some(b) = bias {
            self.run(
                KernelId::AddBias,
                geometry::elementwise(n * m),
                &[Arg::P(y), Arg::P(b.ptr), Arg::I(n as i32), Arg::I(m as i32)],
            )?;
        }
        Ok(())
    }

    /// `residual += delta` (none when `delta` is 0, before the first layer), then
    /// `normed = rmsnorm(residual) * weight`, over `n` rows.
    fn add_rms_norm(
        &self,
        b: &Buffers,
        delta: u64,
        weight: u64,
        n: usize,
    ) -> Result<(), CudaError> {
        let h = self.c.hidden_size;
        self.run(
            KernelId::AddRmsNorm,
            geometry::rows(n, h),
            &[
                Arg::P(b.residual.ptr),
                Arg::P(delta),
                Arg::P(weight),
                Arg::P(b.normed.ptr),
                Arg::I(h as i32),
                Arg::F(self.c.rms_norm_eps as f32),
                Arg::F(self.f.norm_offset),
            ],
        )
    }

    /// RMSNorm in place over `per_row` sub-rows of `width` in each of `n` rows of `stride`
    /// values: the first `n_first` sub-rows take `w_first`, the rest `w_second`.
    #[allow(clippy::too_many_arguments)]
    fn norm_sub_rows(
        &self,
        x: u64,
        w_first: u64,
        w_second: u64,
        n_first: usize,
        n: usize,
        per_row: usize,
        width: usize,
        stride: usize,
    ) -> Result<(), CudaError> {
        self.run(
            KernelId::RmsNormHeads,
            geometry::sub_rows(n, per_row, width),
            &[
                Arg::P(x),
                Arg::P(w_first),
                Arg::P(w_second),
                Arg::I(n_first as i32),
                Arg::I(width as i32),
                Arg::I(stride as i32),
                Arg::F(self.c.rms_norm_eps as f32),
                Arg::F(self.f.norm_offset),
            ],
        )
    }

    /// Gemma's norm of a sublayer's output (`delta`, `n` rows of hidden) before the residual add.
    fn norm_output(&self, b: &Buffers, weight: u64, n: usize) -> Result<(), CudaError> {
        let h = self.c.hidden_size;
        self.norm_sub_rows(b.delta.ptr, weight, weight, 1, n, 1, h, h)
    }

    /// `delta = ffn(normed)` over `n` rows.
    fn feed_forward(&self, b: &Buffers, lw: &LayerWeights, n: usize) -> Result<(), CudaError> {
        let (h, inter) = (self.c.hidden_size, self.c.intermediate_size);
        match &lw.ffn {
            FfnWeights::Dense {
                gate_up,
                gate_up_bias,
                down,
                down_bias,
            } => {
                self.linear(
                    b.normed.ptr,
                    gate_up.ptr,
                    b.gate_up.ptr,
                    n,
                    h,
                    2 * inter,
                    gate_up_bias.as_ref(),
                )?;
                self.activation(b.act.ptr, b.gate_up.ptr, n, inter)?;
                self.linear(
                    b.act.ptr,
                    down.ptr,
                    b.delta.ptr,
                    n,
                    inter,
                    h,
                    down_bias.as_ref(),
                )
            }
            FfnWeights::Sparse {
                router,
                gate_up,
                down,
            } => self.sparse_feed_forward(b, (router, gate_up, down), n),
        }
    }

    /// The gated activation: `out[r] = act(gate_up[r][..inter]) * gate_up[r][inter..]`.
    fn activation(&self, out: u64, gate_up: u64, n: usize, inter: usize) -> Result<(), CudaError> {
        self.run(
            self.f.activation,
            geometry::elementwise(n * inter),
            &[
                Arg::P(out),
                Arg::P(gate_up),
                Arg::I(n as i32),
                Arg::I(inter as i32),
            ],
        )
    }

    /// The MoE block over `n` rows (kernels/moe.cu): route, group the step's (token, expert)
    /// pairs by expert, each expert's gate|up, activation and down over its pairs, combine.
    fn sparse_feed_forward(
        &self,
        b: &Buffers,
        (router, gate_up, down): (&DevBuf, &DevBuf, &DevBuf),
        n: usize,
    ) -> Result<(), CudaError> {
        let (m, mb) = match (&self.f.moe, &b.moe) {
            (Some(m), Some(mb)) => (m, mb),
            _ => {
                return Err(CudaError::Unsupported(
                    "a sparse layer without MoE buffers".into(),
                ))
            }
        };
        let h = self.c.hidden_size;
        let (experts, k, inter) = (m.num_experts, m.top_k, m.inter);
        let pairs = n * k;
        // SAFETY: `logits` holds `rows` rows of `experts` in T, `n <= rows`.
        unsafe {
            self.gemm.linear(
                b.normed.ptr,
                router.ptr,
                mb.logits.ptr,
                n,
                h,
                experts,
                self.dtype,
                self.dtype,
            )
        }?;
        self.run(
            KernelId::MoeRoute,
            geometry::moe_route(n),
            &[
                Arg::P(mb.logits.ptr),
                Arg::I(experts as i32),
                Arg::I(k as i32),
                Arg::I(i32::from(m.renormalize)),
                Arg::P(mb.ids.ptr),
                Arg::P(mb.weights.ptr),
            ],
        )?;
        self.run(
            KernelId::MoeGroup,
            geometry::moe_group(),
            &[
                Arg::P(mb.ids.ptr),
                Arg::I(pairs as i32),
                Arg::I(experts as i32),
                Arg::P(mb.offsets.ptr),
                Arg::P(mb.order.ptr),
                Arg::P(mb.pos.ptr),
            ],
        )?;
        let expert_linear = |out: u64, x: u64, w: u64, n_out: usize, n_in: usize, gather: bool| {
            self.run(
                KernelId::MoeLinear,
                geometry::moe_linear(n_out, experts),
                &[
                    Arg::P(out),
                    Arg::P(x),
                    Arg::P(w),
                    Arg::P(mb.offsets.ptr),
                    Arg::P(mb.order.ptr),
                    Arg::I(n_out as i32),
                    Arg::I(n_in as i32),
                    Arg::I(k as i32),
                    Arg::I(i32::from(gather)),
                ],
            )
        };
        expert_linear(
            mb.gate_up.ptr,
            b.normed.ptr,
            gate_up.ptr,
            2 * inter,
            h,
            true,
        )?;
        self.activation(mb.act.ptr, mb.gate_up.ptr, pairs, inter)?;
        expert_linear(mb.out.ptr, mb.act.ptr, down.ptr, h, inter, false)?;
        self.run(
            KernelId::MoeCombine,
            geometry::rows(n, h),
            &[
                Arg::P(b.delta.ptr),
                Arg::P(mb.out.ptr),
                Arg::P(mb.pos.ptr),
                Arg::P(mb.weights.ptr),
                Arg::I(k as i32),
                Arg::I(h as i32),
            ],
        )
    }

    /// Embedding through the logits of `samples` gathered rows, over `n` token rows.
    pub(crate) fn forward(
        &self,
        b: &Buffers,
        kv: &KvCache,
        n: usize,
        samples: usize,
    ) -> Result<(), CudaError> {
        let c = self.c;
        let (h, hd, nh, nkv) = (
            c.hidden_size,
            c.head_dim,
            c.num_attention_heads,
            c.num_key_value_heads,
        );
        let f = self.f;
        let qkv_w = (nh + 2 * nkv) * hd;
        self.run(
            KernelId::Embed,
            geometry::rows(n, h),
            &[
                Arg::P(b.residual.ptr),
                Arg::P(self.w.embed.ptr),
                Arg::P(b.ids.ptr),
                Arg::I(h as i32),
                Arg::I(c.vocab_size as i32),
                Arg::F(f.embed_scale),
            ],
        )?;
        for (l, lw) in self.w.layers.iter().enumerate() {
            let delta = if l == 0 { 0 } else { b.delta.ptr };
            self.add_rms_norm(b, delta, lw.input_norm.ptr, n)?;
            self.linear(
                b.normed.ptr,
                lw.qkv.ptr,
                b.qkv.ptr,
                n,
                h,
                qkv_w,
                lw.qkv_bias.as_ref(),
            )?;
            if let Some((qn, kn)) = &lw.qk_norm {
                // q heads then k heads of each token's fused row; v is left alone
                self.norm_sub_rows(b.qkv.ptr, qn.ptr, kn.ptr, nh, n, nh + nkv, hd, qkv_w)?;
            }
            let (rope, tables) = (&f.ropes[lw.rope], &self.w.ropes[lw.rope]);
            let rotary = rope.tables.rotary_dim;
            self.run(
                KernelId::Rope,
                geometry::rows(n, (nh + nkv) * rotary / 2),
                &[
                    Arg::P(b.qkv.ptr),
                    Arg::P(b.positions.ptr),
                    Arg::P(b.long_rope.ptr),
                    Arg::P(tables.short.ptr),
                    Arg::P(tables.long.ptr),
                    Arg::I(rope.long_from),
                    Arg::I(nh as i32),
                    Arg::I(nkv as i32),
                    Arg::I(hd as i32),
                    Arg::I(rotary as i32),
                    Arg::F(rope.tables.attention_factor),
                ],
            )?;
            let (kc, vc) = &kv.layers[l];
            self.run(
                KernelId::KvWrite,
                geometry::rows(n, nkv * hd),
                &[
                    Arg::P(kc.ptr),
                    Arg::P(vc.ptr),
                    Arg::P(b.qkv.ptr),
                    Arg::P(b.slots.ptr),
                    Arg::I(nh as i32),
                    Arg::I(nkv as i32),
                    Arg::I(hd as i32),
                ],
            )?;
            self.run(
                KernelId::PagedAttention,
                geometry::attention(n, nh),
                &[
                    Arg::P(b.attn.ptr),
                    Arg::P(b.qkv.ptr),
                    Arg::P(kc.ptr),
                    Arg::P(vc.ptr),
                    Arg::P(b.tok_seq.ptr),
                    Arg::P(b.positions.ptr),
                    Arg::P(b.tables.ptr),
                    Arg::I(b.width as i32),
                    Arg::I(kv.block_size as i32),
                    Arg::I(nh as i32),
                    Arg::I(nkv as i32),
                    Arg::I(hd as i32),
                    Arg::F(f.attn_scale),
                    Arg::F(f.attn_softcap),
                    Arg::I(lw.window),
                ],
            )?;
            self.linear(
                b.attn.ptr,
                lw.o.ptr,
                b.delta.ptr,
                n,
                nh * hd,
                h,
                lw.o_bias.as_ref(),
            )?;
            if let Some((attn_out, _)) = &lw.sandwich {
                self.norm_output(b, attn_out.ptr, n)?;
            }
            self.add_rms_norm(b, b.delta.ptr, lw.post_norm.ptr, n)?;
            self.feed_forward(b, lw, n)?;
            if let Some((_, ffn_out)) = &lw.sandwich {
                self.norm_output(b, ffn_out.ptr, n)?;
            }
        }
        let delta = if self.w.layers.is_empty() {
            0
        } else {
            b.delta.ptr
        };
        self.add_rms_norm(b, delta, self.w.final_norm.ptr, n)?;
        if samples > 0 {
            self.run(
                KernelId::GatherRows,
                geometry::rows(samples, h),
                &[
                    Arg::P(b.gathered.ptr),
                    Arg::P(b.normed.ptr),
                    Arg::P(b.sample_rows.ptr),
                    Arg::I(h as i32),
                ],
            )?;
            // SAFETY: `gathered` holds `samples` rows, `logits` `samples` f32 rows of the vocab.
            unsafe {
                self.gemm.linear(
                    b.gathered.ptr,
                    self.w.lm_head_ptr(),
                    b.logits.ptr,
                    samples,
                    h,
                    c.vocab_size,
                    self.dtype,
                    DType::F32,
                )
            }?;
            if f.final_softcap > 0.0 {
                self.run(
                    KernelId::LogitSoftcap,
                    geometry::elementwise(samples * c.vocab_size),
                    &[
                        Arg::P(b.logits.ptr),
                        Arg::I(samples as i32),
                        Arg::I(c.vocab_size as i32),
                        Arg::F(f.final_softcap),
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// Samples `samples` rows of `b.logits` with the records already in `b.params` / `b.pens`.
    pub(crate) fn sample(&self, b: &Buffers, samples: usize) -> Result<(), CudaError> {
        self.kernels.launch(
            self.stream,
            KernelId::SampleTokens,
            self.dtype,
            geometry::sampling(samples),
            &[
                Arg::P(b.logits.ptr),
                Arg::I(self.c.vocab_size as i32),
                Arg::P(b.params.ptr),
                Arg::P(b.pens.ptr),
                Arg::P(b.work.ptr),
                Arg::P(b.e.ptr),
                Arg::P(b.outs.ptr),
                Arg::P(b.top_tokens.ptr),
                Arg::P(b.top_logprobs.ptr),
                Arg::I(MAX_TOP_N as i32),
            ],
        )
    }
}
