//! One forward pass as a sequence of launches over fixed activation buffers, and the sampling
//! launch. The same code runs eagerly for mixed batches and under stream capture for the decode
//! graphs, so buffers never move after warmup and every launch argument is a fixed address.

use crate::error::CudaError;
use crate::family::Features;
use crate::gemm::Gemm;
use crate::kernels::{self, Arch, KernelId, KernelSource};
use crate::plan::geometry;
use crate::sampling::MAX_TOP_N;
use crate::weights::{DevBuf, ModelWeights};
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
}

impl Buffers {
    pub(crate) fn new(
        s: &Arc<CudaStream>,
        c: &ModelConfig,
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

    /// Embedding through the logits of `samples` gathered rows, over `n` token rows.
    pub(crate) fn forward(
        &self,
        b: &Buffers,
        kv: &KvCache,
        n: usize,
        samples: usize,
    ) -> Result<(), CudaError> {
        let c = self.c;
        let (h, hd, nh, nkv, inter) = (
            c.hidden_size,
            c.head_dim,
            c.num_attention_heads,
            c.num_key_value_heads,
            c.intermediate_size,
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
            self.linear(
                b.normed.ptr,
                lw.gate_up.ptr,
                b.gate_up.ptr,
                n,
                h,
                2 * inter,
                lw.gate_up_bias.as_ref(),
            )?;
            self.run(
                f.activation,
                geometry::elementwise(n * inter),
                &[
                    Arg::P(b.act.ptr),
                    Arg::P(b.gate_up.ptr),
                    Arg::I(n as i32),
                    Arg::I(inter as i32),
                ],
            )?;
            self.linear(
                b.act.ptr,
                lw.down.ptr,
                b.delta.ptr,
                n,
                inter,
                h,
                lw.down_bias.as_ref(),
            )?;
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
