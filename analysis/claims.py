"""The papers' claims on our tracks: each claim as data (its words, its source, the two
configurations it compares, what it is about) and its verdict computed from the submissions only.

A claim says that A beats B. It is measured on each of its tracks by the submissions of A and B
(the latest submission of each configuration, as the leaderboard uses them), in one or more ways:
- `rule`: the track's own rule (nanogpt.tracks.Track.rule), i.e. `time` or `steps` below;
- `time`: the best submission of each side that meets the target under the time rule (lowest mean
  train time of its whole runs, as `current_record` picks a record), compared as a new record is
  compared with the record: Welch's one-sided test on the runs' train times, p < alpha;
- `steps`: the best submission of each side under the steps rule (lowest T), compared by track 3's
  pairwise rule, (dloss + dsteps * loss_per_step) / sqrt(1/n1 + 1/n2) >= threshold;
- `loss`: final validation loss at matched steps, for claims about loss: of the schedule lengths T
  both sides submitted, the longest; on each side the submission at that T with the lowest mean
  final loss (no target needed); Welch's one-sided test on the final losses, p < alpha.
Verdicts: confirmed (A better, significant at the rule's level); not confirmed (B significantly
better, or A's observed mean is not ahead, so no number of runs would confirm the claim at these
means); inconclusive at this n (A ahead but not significantly; how many runs of A would settle it
at 80 % power, B kept as is, taking the observed means as the truth, or, when B's own runs leave
too much doubt for any number of A's, how many runs of each); not measured (no submission
of A or of B on the track). The claimant bears the burden: a side none of whose submissions meets the
rule (target test, no divergence, timed alone or accepted) has no time or steps score, so A
without one while B has one is "not confirmed", and B without one while A has one is
"inconclusive" (B's score is unknown, not infinite).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field

from analysis import stats
from analysis.submissions import Rule, current_record, current_submissions, standing
from nanogpt.tracks import TRACKS

VERDICTS = ("confirmed", "not confirmed", "inconclusive", "not measured")
MEASURES = ("rule", "time", "steps", "loss")
CLAIM_TRACKS = ("tiny-moe-cpu", "tiny-llama-cpu", "tiny-cpu")  # the MoE and LLaMA tracks, and tiny-cpu as the dense reference


@dataclass(frozen=True)
class Side:
    """One side of a claim: an optimizer, optionally pinned to hyperparameter values (Muon² with 3
    NS steps); every submission of a matching configuration is a candidate."""

    optimizer: str
    label: str
    hparams: dict = field(default_factory=dict)

    def matches(self, entry: dict) -> bool:
        hp = json.loads(entry["key"]["hparams"])
        return entry["optimizer"] == self.optimizer and all(hp.get(k) == v for k, v in self.hparams.items())


@dataclass(frozen=True)
class Claim:
    """A paper's claim that A beats B, with its words (`verbatim`: quoted from the paper; otherwise
    our summary of it) and the measurements that test it."""

    paper: str
    source: str  # arXiv identifier
    quote: str
    verbatim: bool
    a: Side
    b: Side
    measures: tuple[str, ...]
    tracks: tuple[str, ...] = CLAIM_TRACKS

    def __post_init__(self):
        unknown = [m for m in self.measures if m not in MEASURES]
        if unknown:
            raise ValueError(f"unknown measures {unknown}; measures: {', '.join(MEASURES)}")


MUON = Side("muon", "Muon")
MONA = Side("mona", "MONA")
MONA_QUOTE = "outperforms Muon and AdamW across three scales"
CLAIMS: tuple[Claim, ...] = (
    Claim("MONA", "2605.26842", MONA_QUOTE, True, MONA, MUON, ("rule", "loss")),
    Claim("MONA", "2605.26842", MONA_QUOTE, True, MONA, Side("adamw", "AdamW"), ("rule", "loss")),
    Claim("Muon²", "2604.09967", "40 % fewer Newton-Schulz iterations", True,
          Side("muon2", "Muon² (3 NS steps)", {"ns_steps": 3}), Side("muon", "Muon (5 NS steps)", {"ns_steps": 5}), ("loss",)),
    Claim("Muon²", "2604.09967", "up to 25 % less training time", True,
          Side("muon2", "Muon² (3 NS steps)", {"ns_steps": 3}), Side("muon", "Muon (5 NS steps)", {"ns_steps": 5}), ("rule",)),
    Claim("Newton-Muon", "2604.01472", "about 6 % fewer steps and about 4 % less wall-clock than Muon to the target", False,
          Side("newton_muon", "Newton-Muon"), MUON, ("rule", "steps")),
)


@dataclass(frozen=True)
class Verdict:
    """One claim on one track under one measure: the verdict, what we measured, and why."""

    claim: Claim
    track: str
    measure: str  # time, steps or loss
    verdict: str
    measured: str = ""
    why: str = ""
    runs_needed: int | None = None  # runs of A in total for the claim's test to pass at 80 % power, B as it is
    runs_needed_each: int | None = None  # the same with both sides grown to that many runs


def resolved_measures(claim: Claim, track: str) -> list[str]:
    """The claim's measures on `track`, `rule` replaced by the track's rule, each once."""
    own = Rule.of_track(track).name
    return list(dict.fromkeys(own if m == "rule" else m for m in claim.measures))


def judge(claim: Claim, track: str, measure: str, a_passed: bool, b_passed: bool, a_ahead: bool,
          needed: tuple[int | None, int | None], ns: tuple[int, int], measured: str) -> Verdict:
    """The verdict from the one-sided test in each direction and the observed direction; `needed`:
    the runs of A alone, and of each side, that would settle an inconclusive case."""
    if a_passed:
        return Verdict(claim, track, measure, "confirmed", measured)
    if b_passed:
        return Verdict(claim, track, measure, "not confirmed", measured, f"{claim.b.label} better")
    if not a_ahead:
        return Verdict(claim, track, measure, "not confirmed", measured,
                       f"{claim.b.label} equal or better within noise ({claim.a.label} not ahead)")
    alone, each = needed
    why = (f"about {alone} runs of {claim.a.label} (now {ns[0]}) would settle it" if alone is not None
           else f"about {each} runs of each (now {ns[0]}/{ns[1]}) would settle it" if each is not None
           else "a side has fewer than 2 runs" if min(ns) < 2
           else f"more than {stats.MAX_RUNS} runs of each would be needed")
    return Verdict(claim, track, measure, "inconclusive", measured, why, alone, each)


def percent(a: float, b: float) -> str:
    return f"{(a / b - 1) * 100:+.1f} %"


def compare_scores(claim: Claim, track: str, measure: str, entries: list[dict]) -> Verdict:
    """The best submission of each side that meets the target under the `time` or `steps` rule,
    compared as a new record is compared with the record (analysis.submissions.decide)."""
    rule = Rule.of_track(track, measure)
    hardware = TRACKS[track].hardware
    a = current_record([e for e in entries if claim.a.matches(e)], track, hardware, rule)
    b = current_record([e for e in entries if claim.b.matches(e)], track, hardware, rule)
    if a is None or b is None:
        missing = " and ".join(s.label for s, e in ((claim.a, a), (claim.b, b)) if e is None)
        if b is not None:
            return Verdict(claim, track, measure, "not confirmed", "",
                           f"{claim.b.label} better: no submission of {missing} meets the {measure} rule")
        return Verdict(claim, track, measure, "inconclusive", "", f"no submission of {missing} meets the {measure} rule")
    sa, sb = standing(a, rule), standing(b, rule)
    ns = (len(sa["losses"]), len(sb["losses"]))  # the completed runs (evidence: none diverged)
    if measure == "time":
        forward, reverse = stats.welch_less(sa["train_times"], sb["train_times"]), stats.welch_less(sb["train_times"], sa["train_times"])
        measured = (f"{stats.fmt(sa['train'].mean, '.1f')} s vs {stats.fmt(sb['train'].mean, '.1f')} s per run "
                    f"({percent(sa['train'].mean, sb['train'].mean)}; n {ns[0]}/{ns[1]}, T {sa['steps']}/{sb['steps']}; "
                    f"Welch p = {stats.fmt(forward.p, '.3g', 'n/a')})")
        return judge(claim, track, measure, forward.p < rule.alpha, reverse.p < rule.alpha,
                     sa["train"].mean < sb["train"].mean,
                     tuple(stats.runs_for_welch(sa["train_times"], sb["train_times"], rule.alpha, each=e) for e in (False, True)),
                     ns, measured)
    margin = stats.pairwise_margin(sa["losses"], sa["steps"], sb["losses"], sb["steps"], rule.loss_per_step)
    reverse = stats.pairwise_margin(sb["losses"], sb["steps"], sa["losses"], sa["steps"], rule.loss_per_step)
    measured = (f"T {sa['steps']} vs {sb['steps']} ({percent(sa['steps'], sb['steps'])}), final loss "
                f"{stats.fmt(sa['loss'].mean, '.4f')} vs {stats.fmt(sb['loss'].mean, '.4f')} (n {ns[0]}/{ns[1]}); "
                f"pairwise margin {stats.fmt(margin, '.4f', 'n/a')} (needs ≥ {rule.threshold})")
    needed = tuple(stats.runs_for_pairwise(sa["losses"], sa["steps"], sb["losses"], sb["steps"], rule.loss_per_step,
                                           rule.threshold, rule.sigma, each=e) for e in (False, True))
    return judge(claim, track, measure, margin >= rule.threshold, reverse >= rule.threshold, margin > 0, needed, ns, measured)


def compare_losses(claim: Claim, track: str, entries: list[dict]) -> Verdict:
    """Final loss at matched steps: the longest schedule both sides submitted, on each side its
    submission with the lowest mean final loss at that T; Welch's one-sided test at the track rule's alpha.
    A diverged run has no final loss: the cell says how many there were."""
    rule = Rule.of_track(track)
    latest = [e for e in current_submissions(entries).values() if e["track"] == track]
    by_steps = [{}, {}]
    for side, found in zip((claim.a, claim.b), by_steps):
        for e in filter(side.matches, latest):
            s = standing(e, rule)
            t = s["steps"]
            if t not in found or s["loss"].mean < found[t]["loss"].mean:
                found[t] = s
    common = set(by_steps[0]) & set(by_steps[1])
    if not common:
        return Verdict(claim, track, "loss", "not measured", "", "no schedule length T submitted for both")
    t = max(common)
    sa, sb = by_steps[0][t], by_steps[1][t]
    forward, reverse = stats.welch_less(sa["losses"], sb["losses"]), stats.welch_less(sb["losses"], sa["losses"])
    ns = (len(sa["losses"]), len(sb["losses"]))
    diverged = (sa["n_diverged"], sb["n_diverged"])
    measured = (f"at T = {t}: {stats.fmt(sa['loss'].mean, '.4f')} vs {stats.fmt(sb['loss'].mean, '.4f')} "
                f"(n {ns[0]}/{ns[1]}" + (f", diverged {diverged[0]}/{diverged[1]}" if any(diverged) else "")
                + f"; Welch p = {stats.fmt(forward.p, '.3g', 'n/a')})")
    return judge(claim, track, "loss", forward.p < rule.alpha, reverse.p < rule.alpha, sa["loss"].mean < sb["loss"].mean,
                 tuple(stats.runs_for_welch(sa["losses"], sb["losses"], rule.alpha, each=e) for e in (False, True)), ns, measured)


def evaluate(claim: Claim, entries: Iterable[dict]) -> list[Verdict]:
    """The claim's verdicts on each of its tracks under each of its measures, from submission entries."""
    entries = list(entries)
    out = []
    for track in claim.tracks:
        on_track = [e for e in entries if e["track"] == track]
        absent = [s.label for s in (claim.a, claim.b) if not any(s.matches(e) for e in on_track)]
        for measure in resolved_measures(claim, track):
            if absent:
                out.append(Verdict(claim, track, measure, "not measured", "", f"no submission of {' or '.join(absent)}"))
            elif measure == "loss":
                out.append(compare_losses(claim, track, on_track))
            else:
                out.append(compare_scores(claim, track, measure, on_track))
    return out


def evaluate_all(entries: Iterable[dict], claims: Iterable[Claim] = CLAIMS) -> list[Verdict]:
    entries = list(entries)
    return [v for c in claims for v in evaluate(c, entries)]


MEASURE_NAMES = {"time": "train time of whole runs (time rule)", "steps": "schedule length T (steps rule)",
                 "loss": "final loss at matched steps"}


def to_markdown(verdicts: list[Verdict]) -> str:
    """The README table: one row per claim, track and measure (the claim named on its first row),
    and what the measures and verdicts mean."""
    lines = ["| claim | A vs B | track | measured by | our measurement (A vs B) | verdict |",
             "|---|---|---|---|---|---|"]
    shown = None
    for v in verdicts:
        c = v.claim
        words = f"“{c.quote}”" if c.verbatim else f"{c.quote} (our summary)"
        first = c is not shown
        shown = c
        cell = f"{c.paper}: {words} ([arXiv {c.source}](https://arxiv.org/abs/{c.source}))" if first else ""
        sides = f"{c.a.label} vs {c.b.label}" if first else ""
        verdict = f"**{v.verdict}**" + (f": {v.why}" if v.why else "")
        lines.append(f"| {cell} | {sides} | {v.track} | {MEASURE_NAMES[v.measure]} | {v.measured or '—'} | {verdict} |")
    lines += ["", NOTE]
    return "\n".join(lines) + "\n"


NOTE = ("Each claim says that A beats B. Time rule: the best submission of each side that meets the target (the "
        "lowest mean train time of its whole runs), compared by Welch's one-sided test on the runs' train times "
        f"(p < {stats.ALPHA}), as a new record is compared with the record. Steps rule: the best submission of each side by T, "
        "compared by track 3's pairwise rule. Final loss at matched steps: the longest schedule both sides submitted, "
        f"each side's lowest mean final loss there, Welch's one-sided test (p < {stats.ALPHA}). **confirmed**: A better, "
        "significant; **not confirmed**: B significantly better, or A not ahead at all; **inconclusive**: A ahead but "
        "not significantly, with the runs that would settle it (80 % power, the observed means and spreads taken as "
        "the truth): of A alone, B as it is, or else of each side; **not measured**: no submission of A or of B on "
        "the track. The percentages are A / B - 1.")
