#!/usr/bin/env python3
"""The PyTorch peer of this project's benchmarks: the same shapes and the same work, done the way
a PyTorch user would, so a ratio measured in one GPU call compares two programs at one moment.

  bench/torch_peer.py attn  [--lens 4096,16384,32768] [--b 1 --hq 32 --hkv 2 --d 128]
  bench/torch_peer.py flex  [--lens 65536,131072] [--topk 64] [--check 1]
  bench/torch_peer.py train [--preset bench200m] [--compile 1] [--checkpointing 0]
                            [--B 8 --T 4096] [--profile 0]
  bench/torch_peer.py decode [--preset bench200m] [--lens 32768,65536,131072] [--tokens 256]
                             [--compile 0] [--reps 1]
  common: [--device cuda|cpu] [--reps N]

attn   PyTorch SDPA, causal, GQA, bf16, at bench/bench_attention.cu's shape (B=1, Hq=32, Hkv=2,
       D=128): forward, and forward + backward (gradients of q, k, v for a random dO).
flex   FlexAttention (torch.compile'd) on the block mask that `bench_attention --flex-mask`
       gives our kernels: per 128-token query block the first 128 keys, the 16 blocks of 128
       ending at its own (a 2,048-token window) and topk/2 - 17 random earlier ones chosen with
       the same std::mt19937 seeds, shared by the block's queries and every head; 4,096 visible
       keys per query at topk 64. The mask is given: Flex pays no selection cost. `--check 1`
       first compares Flex's output with SDPA under the same mask written out, at L = 4096.
train  recipes/bench200m.yaml's model (198M parameters: V=32000, d=1024, 12 layers, Hq=16,
       Hkv=2, D=64, SwiGLU 2816, RMSNorm, RoPE, untied head) on random tokens, bf16 autocast,
       fused AdamW, eager or torch.compile'd. `--checkpointing 1` recomputes what our
       `train.activation_checkpointing=true` recomputes (norms, projections, MLP; the attention
       core's output is kept). The step does no gradient clipping (ours clips at 1.0).
       `--preset tiny` is a small shape for checking the script on a CPU. `--profile 1` then
       runs three more steps under torch.profiler and prints their kernels (CPU ops on a CPU)
       for scripts/profile-table.
decode transformers' LlamaForCausalLM of the preset's shape (random weights, bf16, SDPA, static
       cache where the installed version has one) doing generate() of --tokens greedy tokens
       after a random prompt of each length, as bench/bench_decode times ours: the prefill (to
       the first token) and the decode steps (the rest). `--compile 1` lets generate
       compile its decode step (recent transformers do under a static cache); 0 keeps it eager.

Prints one JSON object per line on stdout (scripts/summarize-bench and scripts/plot-bench read
them): first {"torch": ..., "gpu": ...}, then per measurement
  attn:  {"peer": "torch_sdpa", "B", "L", "hq", "hkv", "d", "fwd_ms", "fwd_bwd_ms",
          "fwd_tflops", "fwd_bwd_tflops"}
  flex:  {"peer": "torch_flex_blocksparse", ... the same keys ..., "block": 128,
          "visible_tokens", "mask": "shared128"}
  train: {"peer": "torch_compile" | "torch_eager", "preset", "B", "T", "checkpointing",
          "params_M", "step_ms", "tokens_per_s", "mfu_989", "peak_mem_GB", "warmup_s"}, and
         with --profile 1 per kernel {"peer_kernel", "ms_per_step", "calls_per_step"}
  decode: {"peer": "torch_hf_generate", "mode": "dense", "prompt", "new_tokens", "prefill_s",
          "ms_per_token", "tokens_per_s", "peak_mem_GB", "attention", "cache", "compiled",
          "transformers"}
Times are medians: attention by CUDA events around each call, training steps by the host clock
around a step that ends in a device sync (as `infllm bench` times its own). FLOP counts are the
ones our benchmarks use, so TFLOP/s and MFU compare directly.
"""
import argparse
import json
import math
import random
import statistics
import sys
import time

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    sys.exit("torch_peer.py: needs PyTorch 2.5 or newer (pip install torch)")

H100_BF16_PEAK = 989e12  # dense bf16 FLOP/s of an H100 SXM: the denominator of mfu_989

# The model shapes. bench200m is recipes/bench200m.yaml (keep the two in step); tiny is a CPU check.
PRESETS = {
    "bench200m": dict(vocab=32000, d_model=1024, layers=12, heads=16, kv_heads=2, ffn=2816,
                      B=8, T=4096),
    "tiny": dict(vocab=258, d_model=128, layers=2, heads=2, kv_heads=1, ffn=384, B=2, T=256),
}
INIT_STD, ROPE_THETA, NORM_EPS = 0.02, 10000.0, 1e-5  # the recipe defaults (model.*)


def emit(**fields):
    print(json.dumps(fields), flush=True)


# ---------------------------------------------------------------------------------------------
# Timing


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_call_ms(fn, device, warmup, reps):
    """Median time of fn() in ms: CUDA events on a GPU, the host clock on the CPU."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


# ---------------------------------------------------------------------------------------------
# Attention


def random_qkv(args, L, device, dtype=torch.bfloat16, requires_grad=True):
    """q [B, Hq, L, D], k and v [B, Hkv, L, D], uniform in [-2, 2) as bench_attention fills them."""
    def make(heads):
        x = torch.rand(args.b, heads, L, args.d, device=device, dtype=torch.float32) * 4 - 2
        return x.to(dtype).requires_grad_(requires_grad)
    return make(args.hq), make(args.hkv), make(args.hkv)


def time_attention(attend, q, k, v, device, reps, backward=True):
    """(forward ms, forward + backward ms or None) of attend(q, k, v); the backward returns dq,
    dk, dv for one fixed random dO (no accumulation into .grad, as our kernels write them)."""
    if not backward:
        with torch.no_grad():
            return median_call_ms(lambda: attend(q, k, v), device, warmup=3, reps=reps), None
    with torch.no_grad():
        dout = torch.rand_like(q) * 4 - 2
    fwd = median_call_ms(lambda: attend(q, k, v), device, warmup=3, reps=reps)
    fwd_bwd = median_call_ms(lambda: torch.autograd.grad(attend(q, k, v), (q, k, v), dout),
                             device, warmup=2, reps=max(3, reps // 2))
    return fwd, fwd_bwd


def release(device):
    if device.type == "cuda":
        torch.cuda.empty_cache()


def sdpa_causal(q, k, v):
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


def run_attn(args, device):
    for L in args.lens:
        q, k, v = random_qkv(args, L, device)
        fwd, fwd_bwd = time_attention(sdpa_causal, q, k, v, device, args.reps)
        flops = 2.0 * args.b * L * L * args.d * args.hq  # causal: 2 matmuls over L^2/2 pairs
        emit(peer="torch_sdpa", B=args.b, L=L, hq=args.hq, hkv=args.hkv, d=args.d, fwd_ms=fwd,
             fwd_bwd_ms=fwd_bwd, fwd_tflops=flops / fwd / 1e9,
             fwd_bwd_tflops=3.5 * flops / fwd_bwd / 1e9)
        del q, k, v
        release(device)


FLEX_BLOCK, FLEX_WINDOW_BLOCKS = 128, 16  # Flex's block; the 2,048-token window in its blocks


def mt19937(seed):
    """A random.Random whose getrandbits(32) yields std::mt19937(seed)'s sequence: Python's
    generator is the same MT19937, seeded here with C++'s init_genrand state (624 words)."""
    state = [seed & 0xFFFFFFFF]
    for i in range(1, 624):
        prev = state[-1]
        state.append((1812433253 * (prev ^ (prev >> 30)) + i) & 0xFFFFFFFF)
    gen = random.Random()
    gen.setstate((3, tuple(state) + (624,), None))
    return gen


def shared_128_kv_blocks(query_block, topk):
    """The 128-token key blocks query block `query_block` sees, sorted: bench_attention.cu's
    shared_128_blocks (block 0, the window, random earlier blocks drawn as it draws them)."""
    chosen = [0] + list(range(max(1, query_block - FLEX_WINDOW_BLOCKS + 1), query_block + 1))
    if query_block > FLEX_WINDOW_BLOCKS:
        gen = mt19937(query_block * 7919 + 17)
        pool = query_block - FLEX_WINDOW_BLOCKS
        target = len(chosen) + min(pool, topk // 2 - len(chosen))
        while len(chosen) < target:
            j = 1 + gen.getrandbits(32) % pool
            if j not in chosen:
                chosen.append(j)
    return sorted(chosen)


def flex_block_mask(lists, L, device):
    """A BlockMask from per-query-block key block lists: the blocks below the diagonal are full
    (no mask_mod call), the diagonal block is partial under the causal mask_mod."""
    from torch.nn.attention.flex_attention import BlockMask

    n = L // FLEX_BLOCK
    full_num = torch.zeros(1, 1, n, dtype=torch.int32)
    full_idx = torch.zeros(1, 1, n, n, dtype=torch.int32)
    for i, blocks in enumerate(lists):
        below = [j for j in blocks if j < i]
        full_num[0, 0, i] = len(below)
        full_idx[0, 0, i, :len(below)] = torch.tensor(below, dtype=torch.int32)
    diag_num = torch.ones(1, 1, n, dtype=torch.int32)
    diag_idx = torch.zeros(1, 1, n, n, dtype=torch.int32)
    diag_idx[0, 0, :, 0] = torch.arange(n, dtype=torch.int32)

    def causal(b, h, q_idx, kv_idx):
        return q_idx >= kv_idx

    return BlockMask.from_kv_blocks(diag_num.to(device), diag_idx.to(device), full_num.to(device),
                                    full_idx.to(device), BLOCK_SIZE=FLEX_BLOCK, mask_mod=causal)


def dense_mask(lists, L, device):
    """The same mask as a [L, L] boolean (True = attend), for --check."""
    pos = torch.arange(L)
    visible = torch.zeros(L // FLEX_BLOCK, L // FLEX_BLOCK, dtype=torch.bool)
    for i, blocks in enumerate(lists):
        visible[i, blocks] = True
    keep = visible[pos[:, None] // FLEX_BLOCK, pos[None, :] // FLEX_BLOCK] & (pos[:, None] >= pos)
    return keep.to(device)


FLEX_CHECK_LEN = 4096  # long enough for random blocks (query blocks past the window's 16)


def check_flex(flex, args, device):
    """Flex on the block mask against SDPA on the mask written out as [L, L], in f32 at
    FLEX_CHECK_LEN (the written-out mask and SDPA's f32 scores grow with L^2); exits on a
    mismatch."""
    L = FLEX_CHECK_LEN
    lists = [shared_128_kv_blocks(i, args.topk) for i in range(L // FLEX_BLOCK)]
    q, k, v = random_qkv(args, L, device, dtype=torch.float32, requires_grad=False)
    got = flex(q, k, v, block_mask=flex_block_mask(lists, L, device), enable_gqa=True)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=dense_mask(lists, L, device),
                                          enable_gqa=True)
    err = (got - want).abs().max().item()
    emit(check="flex_mask_vs_sdpa", L=L, max_abs_err=err)
    if not err < 1e-3:
        sys.exit(f"torch_peer.py flex --check: Flex differs from SDPA on the same mask at L={L} "
                 f"by {err:.3g} (expected < 1e-3): the BlockMask does not hold the block lists")
    del q, k, v, got, want
    release(device)


def run_flex(args, device):
    from torch.nn.attention.flex_attention import flex_attention

    # dynamic=False: every length gets a kernel specialized to its shape (by default a second
    # length recompiles with dynamic shapes, a shape-generic kernel).
    flex = torch.compile(flex_attention, dynamic=False) if args.compile else flex_attention
    if args.check:
        check_flex(flex, args, device)
    for L in args.lens:
        if L % FLEX_BLOCK:
            sys.exit(f"torch_peer.py flex: --lens {L} is not a multiple of {FLEX_BLOCK}")
        lists = [shared_128_kv_blocks(i, args.topk) for i in range(L // FLEX_BLOCK)]
        block_mask = flex_block_mask(lists, L, device)
        # FlexAttention has no CPU backward: there the line carries the forward only.
        backward = device.type == "cuda"
        q, k, v = random_qkv(args, L, device, requires_grad=backward)
        fwd, fwd_bwd = time_attention(
            lambda q, k, v: flex(q, k, v, block_mask=block_mask, enable_gqa=True), q, k, v,
            device, args.reps, backward=backward)
        # Visible (query, key) pairs, causal within the diagonal block: the FLOP count of
        # bench_attention's flex_mask rows.
        visible = sum((len(b) - 1) * FLEX_BLOCK * FLEX_BLOCK + FLEX_BLOCK * (FLEX_BLOCK + 1) / 2
                      for b in lists)
        flops = 4.0 * args.b * visible * args.d * args.hq
        emit(peer="torch_flex_blocksparse", B=args.b, L=L, hq=args.hq, hkv=args.hkv, d=args.d,
             fwd_ms=fwd, fwd_bwd_ms=fwd_bwd, fwd_tflops=flops / fwd / 1e9,
             fwd_bwd_tflops=3.5 * flops / fwd_bwd / 1e9 if fwd_bwd else None, block=FLEX_BLOCK,
             visible_tokens=len(lists[-1]) * FLEX_BLOCK, mask="shared128")
        del q, k, v, block_mask
        release(device)


# ---------------------------------------------------------------------------------------------
# Training step


def rms_norm(x, weight):
    return F.rms_norm(x, (x.shape[-1],), weight, NORM_EPS)


def rope(x, cos, sin):
    """Rotates [B, T, H, D] as layers/rope does: dimension i pairs with i + D/2."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


class Block(torch.nn.Module):
    """Pre-norm block with layers/'s parameters: wqkv packed [q heads | k heads | v heads],
    gate_up packed [gate | up]; wo and down start at INIT_STD / sqrt(2 layers), norms at 1."""

    def __init__(self, c, checkpointing):
        super().__init__()
        self.heads, self.kv_heads = c["heads"], c["kv_heads"]
        self.head_dim = c["d_model"] // c["heads"]
        self.checkpointing = checkpointing
        d, hd, out_std = c["d_model"], self.head_dim, INIT_STD / math.sqrt(2 * c["layers"])
        self.attention_norm = torch.nn.Parameter(torch.ones(d))
        qkv_rows = (c["heads"] + 2 * c["kv_heads"]) * hd
        self.wqkv = torch.nn.Parameter(torch.randn(qkv_rows, d) * INIT_STD)
        self.wo = torch.nn.Parameter(torch.randn(d, c["heads"] * hd) * out_std)
        self.mlp_norm = torch.nn.Parameter(torch.ones(d))
        self.gate_up = torch.nn.Parameter(torch.randn(2 * c["ffn"], d) * INIT_STD)
        self.down = torch.nn.Parameter(torch.randn(d, c["ffn"]) * out_std)

    def qkv(self, x, cos, sin):
        B, T, _ = x.shape
        rows = F.linear(rms_norm(x, self.attention_norm), self.wqkv)
        q, k, v = rows.view(B, T, -1, self.head_dim).split(
            [self.heads, self.kv_heads, self.kv_heads], dim=2)
        return rope(q, cos, sin), rope(k, cos, sin), v

    def finish(self, x, attended):
        h = x + F.linear(attended, self.wo)
        gate, up = F.linear(rms_norm(h, self.mlp_norm), self.gate_up).chunk(2, dim=-1)
        return h + F.linear(F.silu(gate) * up, self.down)

    def forward(self, x, cos, sin):
        from torch.utils.checkpoint import checkpoint

        B, T, _ = x.shape
        if self.checkpointing:
            q, k, v = checkpoint(self.qkv, x, cos, sin, use_reentrant=False)
        else:
            q, k, v = self.qkv(x, cos, sin)
        out = sdpa_causal(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        attended = out.transpose(1, 2).reshape(B, T, -1)
        if self.checkpointing:
            return checkpoint(self.finish, x, attended, use_reentrant=False)
        return self.finish(x, attended)


class LanguageModel(torch.nn.Module):
    def __init__(self, c, checkpointing):
        super().__init__()
        self.head_dim = c["d_model"] // c["heads"]
        self.embedding = torch.nn.Parameter(torch.randn(c["vocab"], c["d_model"]) * INIT_STD)
        self.blocks = torch.nn.ModuleList(Block(c, checkpointing) for _ in range(c["layers"]))
        self.final_norm = torch.nn.Parameter(torch.ones(c["d_model"]))
        self.head = torch.nn.Parameter(torch.randn(c["vocab"], c["d_model"]) * INIT_STD)

    def forward(self, tokens, targets):
        T, half = tokens.shape[1], self.head_dim // 2
        inv_freq = ROPE_THETA ** (-torch.arange(half, device=tokens.device) / half)
        angles = torch.arange(T, device=tokens.device)[:, None] * inv_freq[None, :]
        # bf16 like the projections under autocast, so RoPE does not widen q and k to f32.
        cos = angles.cos()[None, :, None, :].to(torch.bfloat16)
        sin = angles.sin()[None, :, None, :].to(torch.bfloat16)
        x = F.embedding(tokens, self.embedding)
        for block in self.blocks:
            x = block(x, cos, sin)
        logits = F.linear(rms_norm(x, self.final_norm), self.head)
        return F.cross_entropy(logits.float().flatten(0, 1), targets.flatten())

    def flops_per_token(self, T, c):
        """TransformerLM::flops_per_token: 6 per matmul weight (embedding excluded) plus causal
        attention, 6 x layers x T x Hq x D."""
        matmul = sum(p.numel() for name, p in self.named_parameters()
                     if p.dim() == 2 and name != "embedding")
        return 6.0 * matmul + 6.0 * c["layers"] * T * c["heads"] * self.head_dim


def run_train(args, device):
    c = dict(PRESETS[args.preset])
    c["B"], c["T"] = args.B or c["B"], args.T or c["T"]
    torch.manual_seed(0)
    model = LanguageModel(c, bool(args.checkpointing)).to(device)
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95),
                                  weight_decay=0.1, fused=fused)
    forward = torch.compile(model) if args.compile else model
    tokens = torch.randint(0, c["vocab"], (c["B"], c["T"]), device=device)
    targets = torch.randint(0, c["vocab"], (c["B"], c["T"]), device=device)

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = forward(tokens, targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        sync(device)
        return loss

    start = time.perf_counter()
    first_loss = step().item()  # compiles, when --compile 1
    for _ in range(2):
        step()
    warmup_s = time.perf_counter() - start
    if not math.isfinite(first_loss):
        sys.exit(f"torch_peer.py train: the first step's loss is {first_loss}")
    times = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        step()
        times.append((time.perf_counter() - t0) * 1e3)
    step_ms = statistics.median(times)
    tokens_per_s = c["B"] * c["T"] / (step_ms / 1e3)
    fields = dict(peer="torch_compile" if args.compile else "torch_eager", preset=args.preset,
                  device=device.type, B=c["B"], T=c["T"],
                  checkpointing="keeps attention" if args.checkpointing else "off",
                  params_M=sum(p.numel() for p in model.parameters()) / 1e6, step_ms=step_ms,
                  tokens_per_s=tokens_per_s, first_loss=first_loss, warmup_s=warmup_s)
    if device.type == "cuda":
        fields["mfu_989"] = tokens_per_s * model.flops_per_token(c["T"], c) / H100_BF16_PEAK
        fields["peak_mem_GB"] = torch.cuda.max_memory_allocated(device) / 1e9
    emit(**fields)
    if args.profile:
        emit_kernel_profile(step, device)


def emit_kernel_profile(step, device, steps=3):
    """One {"peer_kernel", "ms_per_step", "calls_per_step"} line per kernel that `steps` calls of
    step() ran under torch.profiler (the CPU's ops on a CPU)."""
    from torch.profiler import ProfilerActivity, profile
    cuda = device.type == "cuda"
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    for event in prof.key_averages():
        us = event.device_time_total if cuda else event.self_cpu_time_total
        if us > 0:
            emit(peer_kernel=event.key, ms_per_step=us / 1e3 / steps,
                 calls_per_step=event.count / steps)


# ---------------------------------------------------------------------------------------------
# Decoding


def llama_from_preset(c, max_len, device):
    """transformers' LlamaForCausalLM of the preset's shape, random weights, bf16, SDPA."""
    import transformers
    config = transformers.LlamaConfig(
        vocab_size=c["vocab"], hidden_size=c["d_model"], intermediate_size=c["ffn"],
        num_hidden_layers=c["layers"], num_attention_heads=c["heads"],
        num_key_value_heads=c["kv_heads"], head_dim=c["d_model"] // c["heads"],
        max_position_embeddings=max_len, rope_theta=ROPE_THETA, rms_norm_eps=NORM_EPS,
        initializer_range=INIT_STD, tie_word_embeddings=False, hidden_act="silu")
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(
            config, attn_implementation="sdpa", dtype=torch.bfloat16)
    return model.eval()


def run_decode(args, device):
    """generate() of --tokens greedy tokens after each prompt length, timed as bench/bench_decode
    times ours: a logits processor notes the time (after a device sync) at each step, so the
    prefill is start -> first step and the decode steps are first -> last step."""
    try:
        import transformers
    except ImportError:
        sys.exit("torch_peer.py decode: needs transformers (pip install transformers)")

    class StepClock(transformers.LogitsProcessor):
        def __init__(self):
            self.times = []

        def __call__(self, input_ids, scores):
            sync(device)
            self.times.append(time.perf_counter())
            return scores

    c = PRESETS[args.preset]
    model = llama_from_preset(c, max(args.lens) + args.tokens, device)
    # Newer transformers compile the decode step by themselves under a static cache; --compile 0
    # keeps it eager (disable_compile), --compile 1 lets generate compile it.
    model.generation_config.disable_compile = not args.compile
    cache = "static"
    for L in args.lens:
        ids = torch.randint(0, c["vocab"], (1, L), device=device,
                            generator=torch.Generator(device=device).manual_seed(L))

        def generate():
            """(prefill s, decode s) of one generate() call."""
            clock = StepClock()
            kwargs = dict(max_new_tokens=args.tokens, min_new_tokens=args.tokens,
                          do_sample=False, pad_token_id=0,
                          logits_processor=transformers.LogitsProcessorList([clock]))
            if cache == "static":
                kwargs["cache_implementation"] = "static"
            sync(device)
            start = time.perf_counter()
            with torch.no_grad():
                model.generate(ids, **kwargs)
            return clock.times[0] - start, clock.times[-1] - clock.times[0]

        try:
            generate()  # warmup: allocations, compilation
        except (ValueError, NotImplementedError) as error:  # no static cache for this model/version
            print(f"torch_peer.py decode: static cache refused ({error}); dynamic cache",
                  file=sys.stderr)
            cache = "dynamic"
            generate()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        runs = [generate() for _ in range(args.reps)]
        prefill_s = statistics.median(r[0] for r in runs)
        decode_s = statistics.median(r[1] for r in runs)
        steps = max(1, args.tokens - 1)
        peak = torch.cuda.max_memory_allocated(device) / 1e9 if device.type == "cuda" else 0.0
        emit(peer="torch_hf_generate", mode="dense", prompt=L, new_tokens=args.tokens,
             prefill_s=round(prefill_s, 3), ms_per_token=round(decode_s / steps * 1e3, 3),
             tokens_per_s=round(steps / decode_s, 1), peak_mem_GB=round(peak, 2),
             attention="sdpa", cache=cache, compiled=bool(args.compile),
             transformers=transformers.__version__)
        release(device)


# ---------------------------------------------------------------------------------------------


def parse_args(argv):
    def lengths(text):
        return [int(x) for x in text.split(",") if int(x) > 0]

    # Parents share their action objects with every child parser, so no child may call
    # set_defaults on a parent's option: that would change the default of every mode. Modes
    # with other defaults (decode) add their own --reps and --compile instead.
    on_device = argparse.ArgumentParser(add_help=False)
    on_device.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    common = argparse.ArgumentParser(add_help=False, parents=[on_device])
    common.add_argument("--reps", type=int, default=10, help="timed repetitions (median)")
    common.add_argument("--compile", type=int, default=1, choices=[0, 1],
                        help="torch.compile the model (train) or flex_attention (flex)")
    heads = argparse.ArgumentParser(add_help=False)
    heads.add_argument("--b", type=int, default=1)
    heads.add_argument("--hq", type=int, default=32)
    heads.add_argument("--hkv", type=int, default=2)
    heads.add_argument("--d", type=int, default=128)

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    modes = parser.add_subparsers(dest="mode", required=True)
    attn = modes.add_parser("attn", parents=[common, heads], help="SDPA causal dense attention")
    attn.add_argument("--lens", type=lengths, default=[4096, 16384, 32768, 65536, 131072])
    flex = modes.add_parser("flex", parents=[common, heads], help="FlexAttention block-sparse")
    flex.add_argument("--lens", type=lengths, default=[16384, 32768, 65536, 131072])
    flex.add_argument("--topk", type=int, default=64, help="64-token blocks per query")
    flex.add_argument("--check", type=int, default=0, choices=[0, 1],
                      help="first compare Flex with SDPA on the mask written out (L=4096)")
    train = modes.add_parser("train", parents=[common], help="a training step")
    train.add_argument("--preset", default="bench200m", choices=sorted(PRESETS))
    train.add_argument("--B", type=int, default=0, help="batch size (0: the preset's)")
    train.add_argument("--T", type=int, default=0, help="sequence length (0: the preset's)")
    train.add_argument("--checkpointing", type=int, default=0, choices=[0, 1])
    train.add_argument("--profile", type=int, default=0, choices=[0, 1],
                       help="1: then print the kernels of three profiled steps")
    decode = modes.add_parser("decode", parents=[on_device], help="transformers generate")
    decode.add_argument("--preset", default="bench200m", choices=sorted(PRESETS))
    decode.add_argument("--lens", type=lengths, default=[32768, 65536, 131072],
                        help="prompt lengths")
    decode.add_argument("--tokens", type=int, default=256, help="new tokens per generate")
    decode.add_argument("--reps", type=int, default=1, help="timed generate calls (median)")
    decode.add_argument("--compile", type=int, default=0, choices=[0, 1],
                        help="1: let generate compile its decode step")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("torch_peer.py: no CUDA device visible to PyTorch (--device cpu runs on the CPU)")
    device = torch.device(args.device)
    header = dict(torch=torch.__version__, device=args.device)
    if device.type == "cuda":
        header["gpu"] = torch.cuda.get_device_name(device)
    emit(**header)
    {"attn": run_attn, "flex": run_flex, "train": run_train,
     "decode": run_decode}[args.mode](args, device)


if __name__ == "__main__":
    main()
