"""What a trained model learned, beyond its loss: the measurements of "Muon Learns More Robust and
Transferable Features than Adam" (arXiv 2606.09658), made cheap enough to run on every checkpoint.

- Effective rank of the residual stream (tokens x width) before the first block and after each
  block: erank = exp(-sum q_i log q_i), q_i = s_i^2 / sum_j s_j^2. Centred by default: the residual
  stream carries a large common offset (the same for every token) whose single singular direction
  would otherwise dominate q and make erank measure the size of that offset, not the spread of
  the representations. The uncentred value is reported beside it.
- Logit margins (correct logit - largest other logit) of next-token linear probes fitted on frozen,
  RMS-normalised hidden states of a train slice, evaluated on held-out validation tokens, clean
  and with random token replacement in the inputs (targets stay clean, so positions stay aligned).
- Loss increase under a seeded corruption suite (character insertion / deletion / substitution /
  swap, word deletion / swap on decoded text, random token replacement on tokens) at severities
  1..5, relative to the same text passed through the same decode/re-encode path uncorrupted.
- Transfer to a second domain: loss after fine-tuning with one fixed AdamW budget, and a linear
  probe on the frozen last-layer features.

Everything is deterministic given the evaluation seed, and every checkpoint sees the same corrupted
texts and batches, so differences between checkpoints are paired comparisons.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from nanogpt.data import BatchSampler, TokenStream
from nanogpt.errors import UserError
from nanogpt.model import GPT, rms_norm
from nanogpt.tokenizer import BYTES_EOT, GPT2_EOT, decode, encode_document
from nanogpt.tracks import ROOT, Track

RATES = (0.0, 0.02, 0.05, 0.10, 0.15, 0.20)  # corruption rate (per character / word / token) at severity 0..5
SEVERITIES = tuple(range(1, len(RATES)))
TEXT_CORRUPTIONS = ("char_insert", "char_delete", "char_substitute", "char_swap", "word_delete", "word_swap")
CORRUPTIONS = (*TEXT_CORRUPTIONS, "token_replace")
ALPHABET = np.array(list(string.ascii_lowercase))
TRANSFER_DATA = ROOT / "data" / "transfer" / "sotu.jsonl"
TRANSFER_VAL_EVERY = 10  # document i of the transfer corpus is validation when i % 10 == 0


# ---- metrics ------------------------------------------------------------------------------------

def effective_rank(h: torch.Tensor, center: bool = True) -> float:
    """exp(entropy of the normalised squared singular values) of a (tokens x width) matrix; 0 for a zero matrix."""
    h = h.reshape(-1, h.shape[-1]).double()
    if center:
        h = h - h.mean(dim=0, keepdim=True)
    power = torch.linalg.svdvals(h).square()
    if power.sum() == 0:
        return 0.0
    q = power / power.sum()
    q = q[q > 0]
    return float(torch.exp(-(q * q.log()).sum()))


def logit_margins(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Correct-class logit minus the largest other logit, per row (negative where the probe is wrong)."""
    correct = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    others = logits.scatter(-1, targets.unsqueeze(-1), float("-inf"))
    return correct - others.max(dim=-1).values


# ---- corruptions --------------------------------------------------------------------------------

Seed = int | tuple[int, ...]


def corruption_rng(kind: str, severity: int, seed: Seed) -> np.random.Generator:
    """A generator that depends on the corruption, the severity and the seed (an int or a tuple of ints)."""
    if kind not in CORRUPTIONS:
        raise UserError(f"unknown corruption {kind!r}; valid: {', '.join(CORRUPTIONS)}")
    if not 0 <= severity < len(RATES):
        raise UserError(f"corruption severity {severity} is out of range; valid: 0..{len(RATES) - 1}")
    return np.random.default_rng([*np.atleast_1d(seed).tolist(), CORRUPTIONS.index(kind), severity])


def _disjoint_pairs(hit: np.ndarray) -> list[int]:
    """Selected positions i such that (i, i+1) pairs do not overlap and i+1 exists."""
    out, last = [], -2
    for i in np.flatnonzero(hit[:-1]):
        if i > last + 1:
            out.append(int(i))
            last = i
    return out


def _corrupt_chars(text: str, kind: str, rate: float, rng: np.random.Generator) -> str:
    chars = np.array(list(text), dtype=object)
    hit = rng.random(len(chars)) < rate
    if kind == "char_insert":
        chars = np.insert(chars, np.flatnonzero(hit) + 1, rng.choice(ALPHABET, size=int(hit.sum())))
    elif kind == "char_delete":
        chars = chars[~hit]
    elif kind == "char_substitute":
        chars[hit] = rng.choice(ALPHABET, size=int(hit.sum()))
    else:  # char_swap: transpose adjacent characters
        for i in _disjoint_pairs(hit):
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
    return "".join(chars.tolist())


def _corrupt_words(text: str, kind: str, rate: float, rng: np.random.Generator) -> str:
    parts = re.split(r"(\s+)", text)  # words at even indices, the whitespace between them at odd ones
    words, gaps = parts[0::2], parts[1::2] + [""]
    hit = rng.random(len(words)) < rate
    if kind == "word_delete":
        return "".join(w + g for w, g, h in zip(words, gaps, hit) if not h)
    for i in _disjoint_pairs(hit):  # word_swap: exchange adjacent words, keep the whitespace in place
        words[i], words[i + 1] = words[i + 1], words[i]
    return "".join(w + g for w, g in zip(words, gaps))


def corrupt_text(text: str, kind: str, severity: int, seed: Seed) -> str:
    """A text corruption at severity 0..5 (rate RATES[severity]); the same (kind, severity, seed) gives the same text."""
    rng = corruption_rng(kind, severity, seed)
    if kind not in TEXT_CORRUPTIONS:
        raise UserError(f"corruption {kind!r} works on tokens, not text; text corruptions: {', '.join(TEXT_CORRUPTIONS)}")
    if severity == 0 or not text:
        return text
    if kind.startswith("char_"):
        return _corrupt_chars(text, kind, RATES[severity], rng)
    return _corrupt_words(text, kind, RATES[severity], rng)


def replace_tokens(tokens: np.ndarray, severity: int, seed: Seed, vocab_size: int, eot: int) -> np.ndarray:
    """Replace a RATES[severity] fraction of the non-separator tokens by uniform random non-separator tokens."""
    rng = corruption_rng("token_replace", severity, seed)
    out = np.array(tokens, copy=True)
    hit = (rng.random(out.shape) < RATES[severity]) & (out != eot)
    new = rng.integers(0, vocab_size - 1, size=int(hit.sum()))
    out[hit] = new + (new >= eot)  # skip the separator id
    return out


# ---- data ---------------------------------------------------------------------------------------

def eot_token(tokenizer: str) -> int:
    return BYTES_EOT if tokenizer == "bytes" else GPT2_EOT


def reencode(tokens: np.ndarray, tokenizer: str, transform=None) -> np.ndarray:
    """Decode each document piece of a token stream (split at the separators, which stay where they
    are), apply `transform(text, piece_index)` if given, and encode again with the same tokenizer."""
    eot = eot_token(tokenizer)
    out, start = [], 0
    for end in [*np.flatnonzero(tokens == eot), len(tokens)]:
        if end > start:
            text = decode(tokens[start:end], tokenizer)
            out.append(encode_document(transform(text, len(out)) if transform else text, tokenizer)[1:])
        if end < len(tokens):
            out.append(np.array([eot]))
        start = end + 1
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)


def spread_windows(tokens: np.ndarray, n_seq: int, length: int, what: str) -> np.ndarray:
    """n_seq windows of `length` tokens at evenly spaced offsets, so that they cover the whole stream."""
    if n_seq < 1 or len(tokens) < length:
        raise UserError(f"{what}: need at least one window of {length} tokens from {len(tokens)} tokens; check the sizes")
    starts = np.linspace(0, len(tokens) - length, n_seq).astype(np.int64)
    return np.stack([np.asarray(tokens[s : s + length], dtype=np.int64) for s in starts])


def sample_windows(tokens: np.ndarray, n_seq: int, length: int, rng: np.random.Generator) -> np.ndarray:
    """n_seq windows of `length` tokens at seeded random offsets."""
    starts = rng.integers(0, len(tokens) - length + 1, size=n_seq)
    return np.stack([np.asarray(tokens[s : s + length], dtype=np.int64) for s in starts])


def load_transfer_corpus(path: Path, tokenizer: str) -> tuple[np.ndarray, np.ndarray]:
    """(train tokens, validation tokens) of a JSON-lines corpus: document i is validation when i % 10 == 0."""
    if not path.is_file():
        raise UserError(f"transfer corpus {path} is missing; it ships as data/transfer/sotu.jsonl (or pass --transfer-data)")
    train, val = [], []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f):
            try:
                text = json.loads(line)["text"]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise UserError(f"{path}:{i + 1}: expected a JSON object with a 'text' field") from None
            (val if i % TRANSFER_VAL_EVERY == 0 else train).append(encode_document(text, tokenizer))
    if not train or not val:
        raise UserError(f"transfer corpus {path} needs at least {TRANSFER_VAL_EVERY + 1} documents")
    return np.concatenate(train).astype(np.int64), np.concatenate(val).astype(np.int64)


@dataclass(frozen=True)
class Settings:
    """Evaluation sizes (in sequences of the track's seq_len) and budgets; the defaults keep one
    tiny-cpu checkpoint to a few seconds on 2 cores."""

    val_seqs: int = 8  # validation windows for erank and probe evaluation, spread over the track's validation tokens
    probe_train_seqs: int = 16  # train-split windows the probes are fitted on
    probe_iters: int = 20  # L-BFGS iterations per probe
    probe_l2: float = 1e-3  # keeps probe weights, hence margins, finite and comparable
    margin_severity: int = 3  # token-replacement severity of the corrupted probe inputs
    corrupt_seqs: int = 8  # validation windows per corruption and severity
    transfer_seqs: int = 8  # validation windows of the transfer corpus
    ft_steps: int = 20  # fine-tuning steps on the transfer corpus
    ft_batch: int = 4  # sequences per fine-tuning step
    ft_lr: float = 1e-3  # fixed AdamW learning rate, constant
    batch: int = 16  # sequences per forward pass
    seed: int = 0  # corruption and sampling seed, shared by every checkpoint


@dataclass
class EvalData:
    """Everything a checkpoint is evaluated on, prepared once per track; (x, y) are inputs and targets."""

    val: tuple[torch.Tensor, torch.Tensor]
    val_corrupted: tuple[torch.Tensor, torch.Tensor]  # inputs with tokens replaced, clean targets
    probe_train: tuple[torch.Tensor, torch.Tensor]
    text_suite: dict[tuple[str, int], torch.Tensor]  # (corruption, severity) -> windows; ("clean", 0): the same path uncorrupted
    transfer_val: tuple[torch.Tensor, torch.Tensor]
    transfer_probe_train: tuple[torch.Tensor, torch.Tensor]
    transfer_batches: torch.Tensor  # (ft_steps, ft_batch, seq_len + 1)


def split_xy(w: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.as_tensor(w)
    return w[..., :-1], w[..., 1:]


def corruption_suite(val_tokens: np.ndarray, track: Track, s: Settings) -> dict[tuple[str, int], torch.Tensor]:
    """Windows of validation text under every corruption and severity. Each window comes from its own
    chunk of twice the window length (deletions shorten text); text corruptions act on the decoded
    chunk and are re-encoded, token replacement acts on the clean re-encoded tokens."""
    T, tok, eot = track.seq_len, track.tokenizer, eot_token(track.tokenizer)
    chunks = spread_windows(val_tokens, s.corrupt_seqs, 2 * (T + 1), f"track {track.name} validation")

    def window(tokens: np.ndarray, what: str) -> np.ndarray:
        if len(tokens) < T + 1:
            raise UserError(f"{what} left {len(tokens)} tokens in a chunk, fewer than the {T + 1} of a window")
        return tokens[: T + 1]

    def corrupt_chunk(chunk: np.ndarray, kind: str, sev: int, seed: tuple[int, int]) -> np.ndarray:
        return reencode(chunk, tok, lambda text, piece: corrupt_text(text, kind, sev, (*seed, piece)))

    clean = [reencode(c, tok) for c in chunks]
    suite = {("clean", 0): torch.from_numpy(np.stack([window(c, "re-encoding") for c in clean]))}
    for kind in CORRUPTIONS:
        for sev in SEVERITIES:
            what = f"{kind} at severity {sev}"
            if kind == "token_replace":
                out = [window(replace_tokens(c, sev, (s.seed, i), track.model.vocab_size, eot), what) for i, c in enumerate(clean)]
            else:
                out = [window(corrupt_chunk(c, kind, sev, (s.seed, i)), what) for i, c in enumerate(chunks)]
            suite[(kind, sev)] = torch.from_numpy(np.stack(out))
    return suite


def prepare_data(track: Track, s: Settings, transfer_path: Path = TRANSFER_DATA) -> EvalData:
    """Validation, train slice, corruption suite and transfer data for `track`, all deterministic in s.seed."""
    T = track.seq_len
    if not 1 <= s.margin_severity <= SEVERITIES[-1]:
        raise UserError(f"margin severity {s.margin_severity} is out of range; valid: 1..{SEVERITIES[-1]}")
    val_stream = TokenStream(track.resolve(track.val_files))
    val_tokens = val_stream.first_tokens(min(track.val_tokens, int(val_stream.sizes.sum())))
    val = spread_windows(val_tokens, s.val_seqs, T + 1, f"track {track.name} validation")
    x_bad = replace_tokens(val[:, :-1], s.margin_severity, s.seed, track.model.vocab_size, eot_token(track.tokenizer))
    sampler = BatchSampler(TokenStream(track.resolve(track.train_files)), T, s.probe_train_seqs, s.seed)
    train_t, val_t = load_transfer_corpus(transfer_path, track.tokenizer)
    rng = np.random.default_rng([s.seed, 1])
    return EvalData(
        val=split_xy(val),
        val_corrupted=(torch.from_numpy(x_bad), split_xy(val)[1]),
        probe_train=split_xy(sampler.next_global_batch()),
        text_suite=corruption_suite(val_tokens, track, s),
        transfer_val=split_xy(spread_windows(val_t, s.transfer_seqs, T + 1, f"transfer corpus {transfer_path.name}")),
        transfer_probe_train=split_xy(sample_windows(train_t, s.probe_train_seqs, T + 1, rng)),
        transfer_batches=torch.from_numpy(sample_windows(train_t, s.ft_steps * s.ft_batch, T + 1, rng)).view(s.ft_steps, s.ft_batch, T + 1),
    )


# ---- model probes ------------------------------------------------------------------------------

@torch.no_grad()
def forward_states(model: GPT, x: torch.Tensor, y: torch.Tensor, batch: int) -> tuple[float, list[torch.Tensor]]:
    """Mean next-token loss and the residual stream at each depth (input of block 0, output of every
    block) as (tokens x width) matrices, captured with hooks so the model's forward stays the only one."""
    per_layer: list[list[torch.Tensor]] = [[] for _ in range(len(model.blocks) + 1)]
    current: list[torch.Tensor] = []
    hooks = [model.blocks[0].register_forward_pre_hook(lambda m, args: current.append(args[0]))]
    hooks += [b.register_forward_hook(lambda m, args, out: current.append(out)) for b in model.blocks]
    total = 0.0
    try:
        for i in range(0, len(x), batch):
            current.clear()
            total += model(x[i : i + batch], y[i : i + batch], reduction="sum").item()
            for layer, h in enumerate(current):
                per_layer[layer].append(h.reshape(-1, h.shape[-1]).float())
    finally:
        for h in hooks:
            h.remove()
    return total / y.numel(), [torch.cat(hs) for hs in per_layer]


@torch.no_grad()
def mean_loss(model: GPT, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    total = sum(model(x[i : i + batch], y[i : i + batch], reduction="sum").item() for i in range(0, len(x), batch))
    return total / y.numel()


def fit_probe(features: torch.Tensor, targets: torch.Tensor, n_classes: int, iters: int, l2: float) -> nn.Linear:
    """Multinomial logistic regression on RMS-normalised features, full-batch L-BFGS from zero,
    with an L2 penalty on the weights (a fixed procedure, so probes of different models compare)."""
    probe = nn.Linear(features.shape[1], n_classes)
    nn.init.zeros_(probe.weight)
    nn.init.zeros_(probe.bias)
    x = rms_norm(features)
    opt = torch.optim.LBFGS(probe.parameters(), lr=1.0, max_iter=iters, history_size=10, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(probe(x), targets) + l2 * probe.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return probe


@torch.no_grad()
def probe_scores(probe: nn.Linear, features: torch.Tensor, targets: torch.Tensor) -> dict[str, float]:
    logits = probe(rms_norm(features))
    return {"margin": logit_margins(logits, targets).mean().item(), "acc": (logits.argmax(-1) == targets).float().mean().item(),
            "loss": F.cross_entropy(logits, targets).item()}


def finetune(model: GPT, batches: torch.Tensor, lr: float) -> GPT:
    """A copy of the model fine-tuned with AdamW at a constant learning rate, one step per batch."""
    tuned = copy.deepcopy(model).train()
    opt = torch.optim.AdamW(tuned.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.0)
    for w in batches:
        loss = tuned(w[:, :-1], w[:, 1:])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return tuned.eval()


def evaluate_checkpoint(model: GPT, data: EvalData, s: Settings) -> list[dict]:
    """All metrics of one model as tidy rows {metric, layer, corruption, severity, value}."""
    rows: list[dict] = []

    def add(metric: str, value: float, layer: int | None = None, corruption: str = "", severity: int | None = None) -> None:
        rows.append({"metric": metric, "layer": layer, "corruption": corruption, "severity": severity, "value": float(value)})

    vocab = model.cfg.vocab_size
    val_loss, states = forward_states(model, *data.val, s.batch)
    add("val_loss", val_loss)
    _, states_bad = forward_states(model, *data.val_corrupted, s.batch)
    _, states_train = forward_states(model, *data.probe_train, s.batch)
    y_val, y_train = data.val[1].reshape(-1), data.probe_train[1].reshape(-1)
    for layer, h in enumerate(states):
        add("erank", effective_rank(h, center=True), layer)
        add("erank_uncentred", effective_rank(h, center=False), layer)
        probe = fit_probe(states_train[layer], y_train, vocab, s.probe_iters, s.probe_l2)
        for tag, feats in (("clean", h), ("corrupted", states_bad[layer])):
            scores = probe_scores(probe, feats, y_val)
            add(f"probe_margin_{tag}", scores["margin"], layer)
            add(f"probe_acc_{tag}", scores["acc"], layer)

    clean = mean_loss(model, *split_xy(data.text_suite[("clean", 0)]), s.batch)
    add("text_loss_clean", clean)
    for (kind, sev), w in data.text_suite.items():
        if kind != "clean":
            add("loss_increase", mean_loss(model, *split_xy(w), s.batch) - clean, corruption=kind, severity=sev)

    add("transfer_zero_shot_loss", mean_loss(model, *data.transfer_val, s.batch))
    _, t_train = forward_states(model, *data.transfer_probe_train, s.batch)
    _, t_val = forward_states(model, *data.transfer_val, s.batch)
    probe = fit_probe(t_train[-1], data.transfer_probe_train[1].reshape(-1), vocab, s.probe_iters, s.probe_l2)
    scores = probe_scores(probe, t_val[-1], data.transfer_val[1].reshape(-1))
    add("transfer_probe_loss", scores["loss"])
    add("transfer_probe_acc", scores["acc"])
    add("transfer_finetune_loss", mean_loss(finetune(model, data.transfer_batches, s.ft_lr), *data.transfer_val, s.batch))
    return rows


# ---- selecting and comparing runs -------------------------------------------------------------

RUN_COLUMNS = ["run_id", "label", "optimizer", "seed", "steps", "final_val_loss", "checkpoint"]


def select_runs(df: pd.DataFrame, track: str, optimizers: list[str] | None = None, seeds: list[int] | None = None) -> pd.DataFrame:
    """Runs of `track` with status ok and a checkpoint, optionally restricted to optimizers and seeds.

    Each run gets a label: its optimizer name, or optimizer@config when the table holds several
    hyperparameter configurations (ignoring the schedule length) of that optimizer. A seed repeated
    within one label and schedule length keeps its latest run (a repeat would fake agreement)."""
    runs = df[(df["track"] == track) & (df["status"] == "ok") & (df["checkpoint"].fillna("").astype(str) != "")].copy()
    if optimizers:
        unknown = sorted(set(optimizers) - set(runs["optimizer"]))
        if unknown:
            have = ", ".join(sorted(set(runs["optimizer"]))) or "none"
            raise UserError(f"no checkpoints of {', '.join(unknown)} on track {track}; optimizers with checkpoints: {have}")
        runs = runs[runs["optimizer"].isin(optimizers)]
    if seeds:
        runs = runs[runs["seed"].isin(seeds)]
    if runs.empty:
        raise UserError(f"no runs with a checkpoint on track {track} match; train some with "
                        f"`python run.py --track {track} --save-checkpoint --optimizer NAME --seed N`")
    configs = runs["hparams"].map(lambda h: hashlib.sha256(json.dumps({k: v for k, v in json.loads(h).items() if k != "steps"},
                                                                      sort_keys=True).encode()).hexdigest()[:6])
    several = runs.assign(config=configs).groupby("optimizer")["config"].transform("nunique") > 1
    runs["label"] = np.where(several, runs["optimizer"] + "@" + configs, runs["optimizer"])
    runs["steps"] = runs["steps"].astype(int)
    runs["seed"] = runs["seed"].astype(int)
    runs = runs.drop_duplicates(["label", "steps", "seed"], keep="last")
    return runs[RUN_COLUMNS].reset_index(drop=True)


def matched_budget(runs: pd.DataFrame, steps: int | None = None) -> tuple[pd.DataFrame, int]:
    """Runs at one schedule length: `steps`, or by default the length that most labels share (the longest among ties)."""
    if steps is None:
        counts = runs.groupby("steps")["label"].nunique()
        steps = int(counts[counts == counts.max()].index.max())
    elif steps not in set(runs["steps"]):
        raise UserError(f"no checkpoints trained for {steps} steps; available: {', '.join(map(str, sorted(set(runs['steps']))))}")
    return runs[runs["steps"] == steps].reset_index(drop=True), steps


def matched_loss(runs: pd.DataFrame, level: float | None = None) -> tuple[pd.DataFrame, float]:
    """For each label, the schedule length whose mean final validation loss (over seeds) is closest to
    `level` (ties: the shorter). The default level is the lowest loss every label reaches: the largest,
    over labels, of each label's best mean loss. Checkpoints are ends of complete schedules (train the
    faster optimizers again with a shorter --steps), never mid-schedule states, which are not annealed."""
    means = runs.groupby(["label", "steps"])["final_val_loss"].mean().reset_index()
    if level is None:
        level = float(means.groupby("label")["final_val_loss"].min().max())
    means["gap"] = (means["final_val_loss"] - level).abs()
    picks = means.sort_values(["gap", "steps"]).groupby("label").head(1)[["label", "steps"]]
    return runs.merge(picks, on=["label", "steps"]).reset_index(drop=True), level


def headline(metrics: pd.DataFrame, centred: bool = True) -> pd.DataFrame:
    """Per run: the scalars the summary compares (depth-mean erank, last-layer probe margins, mean loss
    increase over the corruption suite, transfer losses)."""
    last = metrics["layer"] == metrics["layer"].max()
    erank = "erank" if centred else "erank_uncentred"

    def per_run(mask: pd.Series, name: str) -> pd.Series:
        return metrics[mask].groupby("run_id")["value"].mean().rename(name)

    m = metrics["metric"]
    return pd.concat([
        per_run(m == erank, "erank"),
        per_run((m == "probe_margin_clean") & last, "margin_clean"),
        per_run((m == "probe_margin_corrupted") & last, "margin_corrupted"),
        per_run(m == "loss_increase", "loss_increase"),
        per_run(m == "transfer_zero_shot_loss", "transfer_zero_shot"),
        per_run(m == "transfer_finetune_loss", "transfer_finetuned"),
        per_run(m == "transfer_probe_loss", "transfer_probe"),
    ], axis=1).reset_index()


def mean_std(runs: pd.DataFrame, values: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Mean, standard deviation (over seeds; NaN for one seed) and count of every value column, per group."""
    table = runs.merge(values, on="run_id")
    cols = [c for c in values.columns if c not in ("run_id", *by)]
    agg = table.groupby(by, sort=True)[cols].agg(["mean", "std", "count"])
    agg.columns = [f"{c}_{stat}" for c, stat in agg.columns]
    return agg.reset_index()


def aggregate(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean, std and count over seeds of every tidy metric row, per label and schedule length."""
    keys = ["label", "steps", "metric", "layer", "corruption", "severity"]
    table = runs[["run_id", "label", "steps"]].merge(metrics, on="run_id")
    out = table.groupby(keys, dropna=False, sort=True)["value"].agg(["mean", "std", "count"])
    return out.reset_index()
