"""The shapes of a workload: the track, model and MoE dataclasses and what they compute.

Code, not data: these classes are part of the harness hash. The track definitions themselves
(nanogpt/tracks.py) are values; a run holds its resolved track in its configuration
(track_sha256), so adding or editing another track never splits a configuration.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from nanogpt.errors import UserError

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class MoEConfig:
    """A Mixture-of-Experts MLP in every block (nanogpt/model.py MoE): each token goes to its top_k
    of n_experts experts (MLPs of the block's `mlp` kind, hidden width expert_hidden), dropless.

    router "softmax" (Switch, Mixtral) or "sigmoid" (DeepSeek-V3) scores; the top-k weights are
    renormalised to sum to 1 (Mixtral, DeepSeek-V3). The training loss adds
    aux_loss_coef * (load-balancing loss, Switch/GShard form) + z_loss_coef * (router z-loss, ST-MoE),
    summed over layers; validation reports the language-model loss alone."""

    n_experts: int
    top_k: int
    expert_hidden: int
    router: str = "softmax"  # "softmax" or "sigmoid"
    aux_loss_coef: float = 0.01  # Switch Transformer's alpha
    z_loss_coef: float = 0.001  # ST-MoE's c_z
    shared_expert: bool = False  # one always-on expert of width expert_hidden (DeepSeekMoE)


@dataclass(frozen=True)
class ModelConfig:
    """The architecture, every choice a field: the model (nanogpt/model.py) reads these and nothing
    else, so a track that names a record states that record's choices here. The defaults are the
    harness's own modern architecture (tiny-cpu)."""

    vocab_size: int
    n_layer: int
    n_head: int
    n_embd: int
    mlp: str = "relu2"  # "relu2" (ReLU²), "gelu" (exact, erf), "gelu_tanh" (tanh approximation) or "swiglu"
    mlp_ratio: int = 4  # hidden width mlp_ratio·d; "swiglu": LLaMA's 2/3 of it, rounded up to a multiple of mlp_multiple_of
    mlp_multiple_of: int = 256  # LLaMA's multiple_of (swiglu only)
    norm_gains: bool = False  # learnable per-channel gains (role scalar, init 1) on the pre-attention, pre-MLP and final norms
    moe: MoEConfig | None = None  # routed experts instead of the dense MLP
    tie_embeddings: bool = False  # one tensor is the embedding and the head; it is initialised by init_embed
    logit_cap: float = 30.0  # cap·tanh(logits/cap); 0 disables the soft-cap
    logit_cap_dtype: str = "float32"  # "float32": cap after the logits' cast to float32; "logits": before it,
    #                                   in the head's output dtype (bf16 under autocast)
    rope_base: float = 10000.0
    rope_table_dtype: str = "input"  # RoPE cos/sin tables: "input" (in q/k's dtype), "float32", or "bfloat16"
    #                                  (rounded); the rotation is computed in the promoted dtype and cast back
    embed_norm: bool = True  # RMS norm on the token embedding before the first block
    qk_norm: bool = True  # RMS norm of each head's q and k (before RoPE)
    attn_out_depth_scale: bool = False  # scale the attention branch by 1/sqrt(2·n_layer) before the residual add
    norm_eps: float | None = None  # eps of every RMS norm, inside the sqrt; None: the dtype's machine epsilon
    # Initialisation of each weight kind, a name from nanogpt.model.INITS: "zero", "normal(std=1)",
    # "normal(std=0.02)", "uniform(std=1/sqrt(fan_in))", "uniform(std=1/sqrt(3*fan_in))" (nn.Linear's default).
    init_embed: str = "normal(std=1)"
    init_qkv: str = "uniform(std=1/sqrt(fan_in))"
    init_attn_proj: str = "zero"
    init_fc: str = "uniform(std=1/sqrt(fan_in))"
    init_mlp_proj: str = "zero"
    init_head: str = "zero"
    eval_dtype: str = "autocast"  # evaluation (forward without autograd): "autocast" as in training, or "float32"


# The fields that say how a track's runs are judged, not what a run computes: its description, its
# step budget and its rules' constants. A track's identity (track_sha256) leaves them out, so that
# calibrating a rule or widening the budget keeps every recorded run in its configuration.
JUDGING_FIELDS = ("description", "max_steps", "rule", "steps_sigma", "steps_threshold", "steps_loss_per_step")


@dataclass(frozen=True)
class Track:
    name: str
    description: str
    hardware: str  # the hardware class timings are comparable on
    tokenizer: str  # "bytes" or "gpt2"
    train_files: str  # glob, relative to the repository root unless absolute
    val_files: str
    model: ModelConfig
    seq_len: int
    batch_size: int  # global sequences per optimizer step
    micro_batch_size: int  # sequences per process per forward/backward (accumulation fills the rest)
    steps: int  # default schedule length; submissions may choose their own (--steps) up to max_steps
    max_steps: int  # the step budget of the track
    eval_every: int  # fixed evaluation cadence in steps (plus the last step)
    val_tokens: int  # evaluated on the first val_tokens tokens of the validation split
    target: float  # target validation loss
    # Schedule shape applied identically to every optimizer; submissions may override via --set.
    schedule: dict = field(default_factory=lambda: {"warmup_frac": 0.0, "cooldown_frac": 0.4, "final_lr_mult": 0.0})
    device: str = "cpu"
    dtype: str = "float32"  # autocast dtype for forward/backward ("float32" disables autocast)
    compile: bool = False
    warmup_steps: int = 3  # untimed steps (compilation, allocator) before a full state reset
    diverge_loss: float = 0.0  # train loss above this stops the run as diverged (0: 1.5 * ln(vocab))
    train_shards: int = 0  # exact number of training shards the track samples from (0: whatever matches)
    # How training batches are drawn (nanogpt/data.py, README "Data order"): "random" (seeded random
    # windows, with replacement) or "sequential" (the shards read once in order, exactly as the
    # modded-nanogpt records' loader read them on `sampler_ranks` GPUs, batch_size / sampler_ranks
    # sequences per GPU per step).
    sampler: str = "random"
    sampler_ranks: int = 1
    # How a submission is judged (analysis/submissions.py, records/README.md "The rules"); both rules
    # are computed from the same runs, `rule` is the one the leaderboard ranks by.
    # "time": modded-nanogpt's main track: n runs of one schedule length T, score = mean train time of
    #   the whole runs, accepted when ttest_1samp(final losses, target, alternative="less") gives p < 0.01.
    # "steps": modded-nanogpt's optimization track (track 3): score = T (the same for every seed, no
    #   early stopping), accepted when (target - mean final loss) * sqrt(n) >= steps_threshold, i.e. a
    #   z-test with a fixed sigma (steps_sigma = 0.0013, p < 0.001: 0.0013 * 3.09 = 0.004); against a
    #   record: (dloss + dsteps * steps_loss_per_step) / sqrt(1/n1 + 1/n2) >= steps_threshold, where
    #   dloss = record mean - this mean and dsteps = record T - this T (0.0045 loss per 100 steps).
    #   These defaults are track 3's; scripts/calibrate_steps_rule.py measures a track's own.
    rule: str = "time"
    steps_sigma: float = 0.0013
    steps_threshold: float = 0.004
    steps_loss_per_step: float = 0.0045 / 100

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def resolve(self, pattern: str) -> str:
        path = Path(pattern)
        return str(path if path.is_absolute() else ROOT / path)

    def with_overrides(self, **changes) -> Track:
        return dataclasses.replace(self, **changes)

    def check_train_files(self, files: list[str]) -> None:
        """A track samples from a fixed set of shards: fewer (or more) would change the data distribution."""
        if self.train_shards and len(files) != self.train_shards:
            raise UserError(
                f"track {self.name} trains on {self.train_shards} shards matching {self.train_files} but "
                f"{len(files)} are present; run `python data/fineweb.py --train-shards {self.train_shards}`"
            )
