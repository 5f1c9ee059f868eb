"""Tracks: frozen workloads. Records are comparable only within one track.

A track fixes everything except the optimizer: data, tokenizer, architecture, batch, schedule
length and shape defaults, evaluation cadence and size, target and the hardware class it is
timed on. Tracks are data; add one by adding an entry to TRACKS. This module holds values only
(the classes are in nanogpt/config.py): a run's resolved track enters its configuration by value
(track_sha256), so this file is not part of the harness hash (nanogpt.identity.VALUE_MODULES).
"""

from __future__ import annotations

import dataclasses
import glob
import math
from pathlib import Path

from nanogpt.config import ROOT, ModelConfig, MoEConfig, Track
from nanogpt.errors import UserError

OFFICIAL_RECORDS = ROOT / "records"  # the committed board: written by submissions, or when asked for
PERSONAL_RUNS = ROOT / "runs"  # a user's own runs (git-ignored): where run.py records by default


# The workload of the CPU tracks (tiny-cpu and its LLaMA and MoE variants): the byte-level Brown
# corpus on 2 cores, its batch, schedule, budget, evaluation cadence and validation size.
BROWN_2CORE = dict(hardware="cpu-2core", tokenizer="bytes", train_files="data/brown/shards/brown_train_*.bin",
                   val_files="data/brown/shards/brown_val_*.bin", seq_len=256, batch_size=16, micro_batch_size=16,
                   steps=400, max_steps=1200, eval_every=25, val_tokens=65536)

TRACKS: dict[str, Track] = {
    # The main job out of the box: byte-level Brown corpus on 2 CPU cores. Size, batch and
    # cadence were chosen so a tuned Muon reaches the target in 60-120 s of train time
    # (measurements in the issue notes and README); the target was set from >= 3 seeds.
    "tiny-cpu": Track(
        name="tiny-cpu",
        description="Brown corpus, byte-level, 4x128 GPT, 2 CPU cores",
        **BROWN_2CORE,
        model=ModelConfig(vocab_size=257, n_layer=4, n_head=4, n_embd=128),  # the harness's own architecture (defaults)
        target=1.60,
        schedule={"warmup_frac": 0.0, "cooldown_frac": 0.4, "final_lr_mult": 0.0},
        compile=True,  # inductor on CPU: ~20 % faster steps for ~30 s of untimed warmup
        # The steps rule's constants measured on tiny-cpu's records (scripts/calibrate_steps_rule.py,
        # 2026-12-03: 32 configurations of 8 optimizers, 68 degrees of freedom; 7 step searches). The
        # final loss scatters about 5x more across seeds than track 3's sigma of 0.0013, and near the
        # admitted T one step saves about 12x more loss than track 3's 0.0045 per 100 steps.
        steps_sigma=0.0069,
        steps_threshold=0.0214,  # 3.09 sigma: p < 0.001
        steps_loss_per_step=0.000557,
    ),
}

# ---- Model families: LLaMA-style blocks and Mixture-of-Experts (issue 11) -----------------------
# The LLaMA block (Touvron et al. 2023, arXiv 2302.13971 §2.2): SwiGLU MLP of width 2/3·4d rounded up
# to a multiple (multiple_of), pre-norm RMSNorm with learnable gains, RoPE; the head is untied
# (the default). The harness's stabilisers (QK-norm, embedding norm, logit soft-cap, zero-initialised
# output projections) are kept, so a LLaMA track differs from its GPT twin in the block only.
ARCH_LLAMA = dict(mlp="swiglu", norm_gains=True)
# tiny-cpu's target 1.60 against its default Muon's mean final loss 1.5568 (seeds 0-2 at 400 steps, records/).
TARGET_MARGIN = 0.043


def cpu_target(muon_mean: float) -> float:
    """A CPU track's target: the default Muon's mean final loss at the track's steps over >= 3
    seeds plus tiny-cpu's own margin, rounded up to 0.01, so that Muon crosses it shortly before
    the end of its schedule as on tiny-cpu (step 350 of 400). It is kept once the tuned Muon's
    step search puts its train time at T inside tiny-cpu's 60-120 s band."""
    return math.ceil(round((muon_mean + TARGET_MARGIN) * 100, 6)) / 100

TRACKS.update({
    # tiny-cpu with the LLaMA block: same data, size (4 x 128, 4 heads), batch, cadence and budget.
    # SwiGLU hidden width 352 = 32·ceil(2/3·512 / 32) (multiple_of 32 at this width). Target
    # (cpu_target): the default Muon's final validation losses at 400 steps, seeds 0-2, were
    # 1.5250, 1.5368, 1.5374 (mean 1.5331; 2026-12-02, OMP_NUM_THREADS=1 on a busy 2-core VM): 1.58.
    # Alone on a 2-core AMD EPYC VM (2026-12-07, both threads) the same three runs gave the same losses
    # and train times of 99.1, 87.5 and 90.9 s, each crossing 1.58 at step 350 (76.7-86.8 s): inside
    # the 60-120 s band. AdamW with tiny-cpu's rates reaches it within the budget: 1200 steps, seeds
    # 0-2, 1.4637, 1.4607, 1.4547, crossing 1.58 at steps 825-875 (records/, 2026-12-07). The tuned
    # Muon (lr 0.02 of {0.02, 0.04}; find_steps, seeds 0-2, same VM and day) reaches it at T = 347 in
    # 81.3 s of train time [76.2, 86.5]: inside the band, so the target is final (optimizers/tuned.toml).
    "tiny-llama-cpu": Track(
        name="tiny-llama-cpu",
        description="Brown corpus, byte-level, 4x128 LLaMA-style (SwiGLU, RMSNorm gains), 2 CPU cores",
        **BROWN_2CORE,
        model=ModelConfig(vocab_size=257, n_layer=4, n_head=4, n_embd=128, mlp_multiple_of=32, **ARCH_LLAMA),
        target=cpu_target(1.5331),
        compile=True,
    ),
    # The LLaMA block with a Mixtral-style MoE MLP (Jiang et al. 2024, arXiv 2401.04088: 8 SwiGLU
    # experts, top-2, softmax router, top-2 weights renormalised) plus the Switch load-balancing loss
    # (0.01) and the ST-MoE router z-loss (0.001), on tiny-cpu's data, size, batch and cadence. Expert
    # width 176 = half the dense SwiGLU width: the two active experts cost what tiny-llama-cpu's MLP
    # costs. Target as above: the default Muon's final losses at 400 steps, seeds 0-2, were
    # 1.4876, 1.4994, 1.4932 (mean 1.4934): 1.54. Compiled (these calibration runs predate the one-graph
    # MoE of model.compiled: the expert loop then broke the graph and recompiled per routing pattern,
    # the first 50 timed steps taking ~360 ms against ~325 ms later; benchmarks/README.md), alone on a 2-core
    # AMD EPYC VM (2026-12-07) the default Muon's 400 steps, seeds 0-2, took 132.1, 140.0, 135.1 s
    # compiled against 146.0, 157.4, 154.4 s eager (losses 1.4887, 1.5001, 1.4939 and 1.4882, 1.4967,
    # 1.4912: the target stays 1.54). Compiled, the runs cross 1.54 at step 350 in 115-122 s, 84-104 s
    # at the tiny-cpu reference machine's figure (calib_ms 242.7 against these runs' 278-332): inside
    # the 60-120 s band there, at its edge on this VM (records/archive/track-calibration). AdamW with
    # tiny-cpu's rates reaches it within the budget: 1200 steps, seeds 0-2, 1.4455, 1.4387, 1.4400,
    # crossing 1.54 at steps 875-900 (records/, 2026-12-07). The tuned Muon (lr 0.04 of {0.02, 0.04})
    # reaches it at T = 319 in 107.1 s [101.3, 112.8] on this VM: inside the band, the target is final.
    "tiny-moe-cpu": Track(
        name="tiny-moe-cpu",
        description="Brown corpus, byte-level, 4x128 LLaMA-style MoE (8 experts, top-2), 2 CPU cores",
        **BROWN_2CORE,
        model=ModelConfig(vocab_size=257, n_layer=4, n_head=4, n_embd=128, mlp_multiple_of=32, **ARCH_LLAMA,
                          moe=MoEConfig(n_experts=8, top_k=2, expert_hidden=176)),
        target=cpu_target(1.4934),
        compile=True,
    ),
})

# ---- The GPT-2 speedrun tracks (FineWeb10B, GPT-2 tokens, timed on GPUs) ----------------------
# Sources: KellerJordan/modded-nanogpt (README record table, records/ logs, data/cached_fineweb10B.py).
# Data: the kjj0/fineweb10B-gpt2 shards (data/fineweb.py); about 100M tokens per shard.
FINEWEB_DIR = "data/fineweb10B"
# Every GPT-2 track reads train shards 000001-000039 (~3.9B tokens; there is no train shard
# 000000) without downloading all 103 shards. The glob matches exactly those 39 files. In the
# records' order (sampler "sequential") they last about 7,410 steps of 524,288 tokens (190 per
# shard, the tails dropped), then the order wraps to shard 1: the last ~90 steps of gpt2-medium's
# default 7,500 repeat data.
FINEWEB_TRAIN_SHARDS = 39
FINEWEB_TRAIN = f"{FINEWEB_DIR}/fineweb_train_0000[0-3][0-9].bin"
FINEWEB_VAL = f"{FINEWEB_DIR}/fineweb_val_000000.bin"
GPT2_VOCAB_PADDED = 50304  # 50257 GPT-2 tokens padded to a multiple of 128 (modded-nanogpt record 10/14/24)
SPEEDRUN_BATCH = 8 * 64  # sequences per step: 8 GPUs x 64 (every record since 10/2024), 524,288 tokens
SPEEDRUN_SEQ_LEN = 1024  # modded-nanogpt records up to 11/2024
SPEEDRUN_VAL_TOKENS = 10_485_760  # "val_tokens = 10485760 ... keep this fixed" (all records)
SPEEDRUN_EVAL_EVERY = 125  # "val_loss_every = 125" (all records)
# The records read the train shards once, in order, 8 GPUs x 64 sequences per step (their
# DistributedDataLoader, 10/10/24-11/06/24): the GPT-2 tracks reproduce that order exactly.
RECORD_RANKS = 8
GPU_RUN = dict(device="cuda", dtype="bfloat16", compile=True, warmup_steps=5, tokenizer="gpt2",
               train_files=FINEWEB_TRAIN, val_files=FINEWEB_VAL, train_shards=FINEWEB_TRAIN_SHARDS,
               seq_len=SPEEDRUN_SEQ_LEN, val_tokens=SPEEDRUN_VAL_TOKENS, eval_every=SPEEDRUN_EVAL_EVERY,
               sampler="sequential", sampler_ranks=RECORD_RANKS)

# The records' architectures as ModelConfig fields. Sources are KellerJordan/modded-nanogpt at
# f411b3d3 as read for the golden fixtures (tests/fixtures/records/README.md §6-§8; L = line of the
# record's script), and each is proven against those fixtures (tests/test_record_fixtures.py).
# 10/10/24 "Muon" (records/track_1_short/2024-10-10_Muon/train_gpt2.py):
ARCH_2024_10_10 = dict(
    mlp="gelu",  # exact (erf) GELU, F.gelu's default (L181)
    tie_embeddings=True,  # lm_head.weight is the embedding's tensor (L219)
    logit_cap=0.0,  # none: logits.float() then cross-entropy (L235-236)
    rope_table_dtype="float32",  # cos/sin cached in float32 (L123-124)
    embed_norm=False,  # the embedding enters the first block as is (L226-229)
    qk_norm=False,  # RoPE straight on q and k (L163-165)
    attn_out_depth_scale=True,  # x + attn_scale·attn(N(x)), attn_scale = 1/sqrt(2·n_layer) (L191, L194)
    norm_eps=1e-6,  # rmsnorm: x.float()·rsqrt(mean(x²) + 1e-6), cast back (L136-139)
    # No init code: PyTorch's defaults. Every nn.Linear is U(±1/sqrt(fan_in)); the tied tensor is the
    # head's nn.Linear draw (the embedding's N(0, 1) draw is discarded by the tie).
    init_embed="uniform(std=1/sqrt(3*fan_in))", init_head="uniform(std=1/sqrt(3*fan_in))",
    init_qkv="uniform(std=1/sqrt(3*fan_in))", init_attn_proj="uniform(std=1/sqrt(3*fan_in))",
    init_fc="uniform(std=1/sqrt(3*fan_in))", init_mlp_proj="uniform(std=1/sqrt(3*fan_in))",
    eval_dtype="float32",  # validation runs without autocast in this record (L454)
)
# 11/03/24 "UntieEmbed" (the script embedded in records/track_1_short/2024-11-03_UntieEmbed/d6b50d71-...txt)
# plus the logit soft-cap line of 11/06/24 (the script in 2024-11-06_ShortcutsTweaks/dd7304a6-...txt, L251):
ARCH_2024_11_03_SOFTCAP = dict(
    mlp="relu2",  # relu(x).square() (L191)
    tie_embeddings=False,  # separate lm_head (L227-228)
    logit_cap=30.0, logit_cap_dtype="logits",  # 11/06 L251: 30·tanh(logits/30) after the head matmul, before .float() (L252)
    rope_table_dtype="bfloat16",  # cos/sin cached as bfloat16 (L139-140), result cast to the input's dtype (L150)
    embed_norm=True,  # F.rms_norm after the embedding (L233-234)
    qk_norm=True,  # F.rms_norm of q and k per head, before RoPE (L174-175)
    attn_out_depth_scale=False,  # x + attn(N(x)) (L202-205)
    norm_eps=None,  # F.rms_norm without eps: the dtype's machine epsilon
    init_embed="normal(std=1)",  # nn.Embedding's default
    init_qkv="uniform(std=1/sqrt(3*fan_in))", init_fc="uniform(std=1/sqrt(3*fan_in))",  # nn.Linear's default
    init_attn_proj="zero", init_mlp_proj="zero", init_head="zero",  # .weight.data.zero_() (L164-165, L186-187, L227-228)
    eval_dtype="autocast",  # validation under the training autocast (L468)
)

TRACKS.update({
    # Exactly the 11/03/24 record "Untied embed and lm_head" (10.8 min on 8xH100, README record table;
    # its log reports val loss 3.2762 at step 4578 under pytorch 2.5.1) plus the logit soft-cap line of
    # 11/06/24, and nothing else of that record: the architecture is ARCH_2024_11_03_SOFTCAP (each
    # field's source there); 12 layers, 768 wide, 6 heads of 128 (L384), vocab 50304 (L383);
    # 8x64x1024 tokens per step, 4578 steps, no warmup, a 1308-step linear cooldown to 0 (L343-345);
    # Muon and Adam hyperparameters in optimizers/tuned.toml [muon.<track>] (L402-405). Proven against
    # the golden fixtures rec-2024-11-03-untie(+softcap30) (tests/test_record_fixtures.py).
    # Budget: 10,000 steps (5.2B tokens) covers the AdamW baseline of 06/06/24 (~5B tokens).
    "gpt2-small": Track(
        name="gpt2-small",
        description="FineWeb10B, GPT-2 tokens, 12x768 GPT (124M), 8xH100",
        hardware="8xH100",
        model=ModelConfig(vocab_size=GPT2_VOCAB_PADDED, n_layer=12, n_head=6, n_embd=768, **ARCH_2024_11_03_SOFTCAP),
        batch_size=SPEEDRUN_BATCH,
        micro_batch_size=32,  # 2 accumulation steps per GPU on 8 GPUs (fp32 logits of 64 sequences are 13 GB)
        steps=4578,
        max_steps=10_000,
        target=3.28,  # the speedrun's target (llm.c's GPT-2 124M after 10B tokens)
        schedule={"warmup_frac": 0.0, "cooldown_frac": 1308 / 4578, "final_lr_mult": 0.0},
        **GPU_RUN,
    ),
    # GPT-2 medium size (24 layers x 1024 wide, ~350M parameters without the head) with gpt2-small's
    # architecture (ARCH_2024_11_03_SOFTCAP). Target 2.92 and schedule from the 01/18/25 "GPT2Medium" record (7500 steps of
    # 8x64x1024 tokens, cooldown_frac 0.4 to 0.1 x lr, final val loss 2.9166); that record used a
    # 16-layer model with value embeddings, so the default schedule here is a starting point.
    "gpt2-medium": Track(
        name="gpt2-medium",
        description="FineWeb10B, GPT-2 tokens, 24x1024 GPT (~350M), 8xH100",
        hardware="8xH100",
        model=ModelConfig(vocab_size=GPT2_VOCAB_PADDED, n_layer=24, n_head=8, n_embd=1024,  # heads of 128
                          **ARCH_2024_11_03_SOFTCAP),
        batch_size=SPEEDRUN_BATCH,
        micro_batch_size=16,
        steps=7500,
        max_steps=15_000,
        target=2.92,
        schedule={"warmup_frac": 0.0, "cooldown_frac": 0.4, "final_lr_mult": 0.1},
        **GPU_RUN,
    ),
    # Exactly the October 2024 Muon record (10/10/24 "Muon improvements",
    # records/track_1_short/2024-10-10_Muon, 22.3 min on 8xH100, README record table; its log reports
    # val loss 3.2785 at step 6200 under pytorch 2.4.1), the configuration the Newton-Muon paper uses:
    # the architecture is ARCH_2024_10_10 (each field's source there: exact GELU, tied embedding,
    # no norm on the embedding or on q/k, 1/sqrt(2·n_layer) attention scale, eps 1e-6, PyTorch's
    # default init, fp32 validation); 12 layers, 768 wide, 12 heads of 64 (L377), GPT-2 vocabulary
    # 50257 unpadded (L376); 6200 steps of 8x64x1024 tokens, no warmup, linear cooldown over the last
    # 1800 steps to 0 (L336-339); Muon and AdamW hyperparameters in optimizers/tuned.toml [muon.<track>]
    # (L388-391). Proven against the golden fixture rec-2024-10-10-muon (tests/test_record_fixtures.py).
    "gpt2-muon-2024": Track(
        name="gpt2-muon-2024",
        description="FineWeb10B, October 2024 Muon record config (GELU, tied), 8xH100",
        hardware="8xH100",
        model=ModelConfig(vocab_size=50257, n_layer=12, n_head=12, n_embd=768, **ARCH_2024_10_10),
        batch_size=SPEEDRUN_BATCH,
        micro_batch_size=32,
        steps=6200,
        max_steps=6200,  # the record's fixed budget: the Newton-Muon claim is about steps within it
        target=3.28,
        schedule={"warmup_frac": 0.0, "cooldown_frac": 1800 / 6200, "final_lr_mult": 0.0},
        **GPU_RUN,
    ),
    # For users with one GPU: a smaller model (8 layers x 512, 4 heads of 128, gpt2-small's
    # architecture ARCH_2024_11_03_SOFTCAP) and batch
    # (128 x 1024 tokens) sized from a FLOP estimate so that one H100 runs the default 3500 steps in
    # about 10 minutes: 3500 x 131,072 tokens x 0.33 GFLOP/token (GPT.flops_per_token) = 1.5e17
    # FLOP, ~8.5 min at 300 TFLOP/s. PROVISIONAL: the step time and the target (3.90, an estimate
    # for ~0.46B tokens on a ~50M-parameter model) must be calibrated on an H100 with >= 3 Muon
    # seeds (scripts/bench_gpu.py, then `run.py --track gpt2-1gpu`), as tiny-cpu's was.
    "gpt2-1gpu": Track(
        name="gpt2-1gpu",
        description="FineWeb10B, GPT-2 tokens, 8x512 GPT, 1xH100 (provisional target)",
        hardware="1xH100",
        model=ModelConfig(vocab_size=GPT2_VOCAB_PADDED, n_layer=8, n_head=4, n_embd=512, **ARCH_2024_11_03_SOFTCAP),
        batch_size=128,
        micro_batch_size=64,
        steps=3500,
        max_steps=7000,
        target=3.90,
        schedule={"warmup_frac": 0.0, "cooldown_frac": 0.3, "final_lr_mult": 0.0},
        **{**GPU_RUN, "sampler_ranks": 1},  # the record loader's order on the one GPU of the hardware class
    ),
})

# A Mixture-of-Experts GPU track. PROVISIONAL: never run on a GPU yet. The MoE recipe of OLMoE-1B-7B
# (Muennighoff et al. 2024, arXiv 2409.02060, Table 1: 64 experts, 8 active per token, dropless,
# softmax router, load-balancing loss 0.01, router z-loss 0.001, SwiGLU experts of width d/2, RMSNorm,
# RoPE, QK-norm, untied head) at gpt2-1gpu's size and data (8 x 512, 4 heads of 128, 128 x 1024 tokens
# per step): experts of width 256, 8 x 64 x 3 x 512 x 256 = 201M expert parameters, 25M of them active
# per token. Steps from a step-time estimate: ~0.4 GFLOP per token on the active path
# (GPT.flops_per_token), at an assumed 25 % of an H100's 989 TFLOP/s (small per-expert matmuls,
# gathers) about 0.2 s per step, so 3000 steps are ~10 minutes. The target 3.90 is gpt2-1gpu's
# provisional one (a model with more parameters at the same tokens should reach it); both must be
# calibrated on an H100 with >= 3 Muon seeds. Uncompiled: the expert loop unrolls into 64 experts'
# matmuls per layer in one graph (model.compiled); whether inductor pays on a GPU, as it does on
# tiny-moe-cpu's CPU, is for that calibration.
TRACKS["moe-1gpu"] = Track(
    name="moe-1gpu",
    description="FineWeb10B, GPT-2 tokens, 8x512 OLMoE-style MoE (64 experts, top-8), 1xH100 (provisional)",
    hardware="1xH100",
    model=ModelConfig(vocab_size=GPT2_VOCAB_PADDED, n_layer=8, n_head=4, n_embd=512, **ARCH_LLAMA,
                      moe=MoEConfig(n_experts=64, top_k=8, expert_hidden=256, aux_loss_coef=0.01, z_loss_coef=0.001)),
    batch_size=128,
    micro_batch_size=64,
    steps=3000,
    max_steps=7000,
    target=3.90,
    schedule={"warmup_frac": 0.0, "cooldown_frac": 0.3, "final_lr_mult": 0.0},
    **{**GPU_RUN, "sampler_ranks": 1, "compile": False},
)

# ---- Unofficial variants: smoke tests and local data, never mixed with real records -------------
DEBUG_SUFFIX = "~debug"  # a tiny model: rows land in '<track>~debug', hardware 'debug'
LOCAL_SUFFIX = "~local"  # the track's model on other shards: rows land in '<track>~local'
LOCAL_VAL_TOKENS = 2**18  # validation tokens of a ~local run (data/make_local_gpt2_shards.py writes 2**19)
LOCAL_GPT2_DIR = ROOT / "data" / "local_gpt2"  # GPT-2-token shards of the embedded corpora (git-ignored)
LOCAL_GPT2_COMMAND = "python data/make_local_gpt2_shards.py"


def debug_variant(track: Track, device: str) -> Track:
    """The track shrunk to seconds per run (2 layers x 64, 64-token sequences, batch 8 in
    micro-batches of 2, so 1, 2 or 4 processes accumulate the same batch) on `device`, keeping the
    track's data, tokenizer and architecture choices. For CI on CPU and a first check of a GPU machine."""
    model = dataclasses.replace(track.model, n_layer=2, n_head=2, n_embd=64)
    return track.with_overrides(
        name=track.name + DEBUG_SUFFIX, description=f"tiny smoke test of {track.name} (not a record)", hardware="debug",
        model=model, seq_len=64, batch_size=8, micro_batch_size=2, steps=20, max_steps=200, eval_every=5,
        val_tokens=2048, device=device, dtype=track.dtype if device == "cuda" else "float32", warmup_steps=1,
        train_shards=0,
    )


def local_data_variant(track: Track, data_dir: str | Path) -> Track:
    """The track's shard names read from `data_dir` (e.g. data/make_local_gpt2_shards.py's output on
    a GPU machine without internet); validation shrinks to what such a folder holds. With the
    track's own model ('~local') batches are random windows: the sequential order needs shards of
    at least one step (524,289 tokens on gpt2-small) and local shards hold 2**19; a debug model
    ('~debug') keeps the track's sampler."""
    folder = Path(data_dir).resolve()
    if not folder.is_dir():
        hint = f"; build it with `{LOCAL_GPT2_COMMAND}`" if folder == LOCAL_GPT2_DIR else ""
        raise UserError(f"--data-dir {data_dir} is not a folder{hint}")
    debug = track.name.endswith(DEBUG_SUFFIX)
    return track.with_overrides(
        name=track.name if debug else track.name + LOCAL_SUFFIX,
        train_files=str(folder / Path(track.train_files).name), val_files=str(folder / Path(track.val_files).name),
        val_tokens=min(track.val_tokens, LOCAL_VAL_TOKENS), train_shards=0, sampler=track.sampler if debug else "random",
    )


def offline_data_dir(track: Track) -> Path | None:
    """The folder a debug run of a GPT-2 track reads when the track's own shards are absent (no
    FineWeb on this machine): the local GPT-2 shards (LOCAL_GPT2_DIR). None when the shards exist."""
    if track.tokenizer != "gpt2" or glob.glob(track.resolve(track.train_files)):
        return None
    return LOCAL_GPT2_DIR


def prepare_hint(track: Track) -> str:
    """The command that makes a track's training shards, for 'no shards match' errors."""
    files = Path(track.resolve(track.train_files))
    if files.parent == LOCAL_GPT2_DIR:
        return f"build them with `{LOCAL_GPT2_COMMAND}` (offline, a few seconds)"
    if files.parent == ROOT / FINEWEB_DIR:
        shards = f" --train-shards {track.train_shards}" if track.train_shards else ""
        return (f"download them with `python data/fineweb.py{shards}` (README 'The GPT-2 speedrun on GPUs'); without "
                f"internet, `python run.py --track {track.name.split('~')[0]} --debug-model` runs a smoke test on local "
                f"GPT-2 shards (`{LOCAL_GPT2_COMMAND}`)")
    if files.parent == ROOT / "data" / "brown" / "shards":
        return "regenerate them with `python data/prepare_brown.py`"
    return "prepare the track's data first (README 'Data')"


def get_track(name: str) -> Track:
    if name not in TRACKS:
        raise UserError(f"unknown track {name!r}; valid tracks: {', '.join(sorted(TRACKS))}")
    return TRACKS[name]
