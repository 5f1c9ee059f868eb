"""The run log: one self-contained text file per run, and the source of truth for every figure.

A log is a sequence of sections, each opened by a line `==== title ====`. As in modded-nanogpt's
logs, the code comes first and a line of 100 `=` follows it, so everything before that line is
the code that ran (since format 3; older logs start with their config and are still read):

    run.py, nanogpt/*.py, optimizer NAME.py, optimizers/*.py
                    the full source of the harness and of the optimizer with what it imports, verbatim
    ==========...   (100 of them)
    config          the resolved run configuration (JSON), with a manifest of the embedded sources
    environment     Python / PyTorch / CUDA versions, device, world size (JSON)
    training        one line per step and per evaluation, in the modded-nanogpt form
    result          the records-table row of the run (JSON), written when the run ends

Source sections are read by the character count the manifest gives, so source text that happens
to contain a header-like or separator line cannot split a section. Every figure of the row (final loss, time,
steps and tokens to target, status) is computed by `figures` from the training lines exactly as
they are written, so anyone can recompute it from the log alone (scripts/verify.py does).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from nanogpt.errors import UserError
from nanogpt.identity import closure

HEADER_RE = re.compile(r"^==== (.+) ====$")
EVAL_RE = re.compile(r"^step:(\d+)/(\d+) val_loss:(\S+) train_time:(\d+)ms step_avg:(\S+)ms$")
TRAIN_RE = re.compile(r"^step:(\d+)/(\d+) train_loss:(\S+) train_time:(\d+)ms(?: step_avg:(\S+)ms)?$")  # step_avg since 3
CODE_END = "=" * 100  # the line after the embedded code (modded-nanogpt's separator)
TRAINING = "training"
RESULT = "result"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def harness_files(root: Path) -> list[str]:
    """The files that make up the harness: run.py and every project module it imports at module
    level, transitively (nanogpt.identity): exactly the code that runs a step, not reporting code."""
    return ["run.py", *closure(root / "run.py", root)[0]]


def read_sources(root: Path, names: list[str]) -> dict[str, str]:
    return {name: (root / name).read_text() for name in names}


def manifest(sources: dict[str, str]) -> dict[str, dict]:
    """Per embedded section: its sha256 and length in characters (how the parser finds its end)."""
    return {title: {"sha256": sha256_text(text), "chars": len(text)} for title, text in sources.items()}


def combined_sha256(files: list[str], entries: dict[str, dict]) -> str:
    """The harness hash: a hash over the ordered (file, file hash) list, so that moving text from
    one file to another changes it too."""
    return sha256_text("".join(f"{name} {entries[name]['sha256']}\n" for name in files))


def optimizer_section(filename: str) -> str:
    return f"optimizer {filename}"


def code_sha256(files: list[str], entries: dict[str, dict], packages: dict[str, dict]) -> str:
    """The optimizer's code hash: its module and every project module it imports (in order), and
    the name, version and file hash of each third-party package it imports."""
    text = "".join(f"{name} {entries[name]['sha256']}\n" for name in files)
    text += "".join(f"package {name} {p['version']} {p['sha256']}\n" for name, p in sorted(packages.items()))
    return sha256_text(text)


def eval_line(step: int, total: int, loss: float, elapsed_s: float) -> str:
    ms = elapsed_s * 1000
    return f"step:{step}/{total} val_loss:{loss:.4f} train_time:{ms:.0f}ms step_avg:{ms / max(step, 1):.2f}ms"


def train_line(step: int, total: int, loss: float, elapsed_s: float) -> str:
    ms = elapsed_s * 1000
    return f"step:{step}/{total} train_loss:{loss:.4f} train_time:{ms:.0f}ms step_avg:{ms / max(step, 1):.2f}ms"


def expert_load_line(step: int, loads: list[list[int]]) -> str:
    """The routing of the evaluation at `step`: per MoE layer, the largest and smallest share of the
    (token, expert) assignments an expert received and how many experts received none; uniform
    routing gives max = min = 1/n_experts, a collapsed router max = 1/top_k and idle experts.
    Dropless routing drops no token (dropped:0). Not a `step:` line: parse_training skips it."""
    parts = []
    for i, counts in enumerate(loads):
        total = max(sum(counts), 1)
        parts.append(f"L{i}:max={max(counts) / total:.3f},min={min(counts) / total:.3f},idle={sum(c == 0 for c in counts)}")
    return f"expert_load step:{step} dropped:0 " + " ".join(parts)


EXPERT_LOAD_RE = re.compile(r"^expert_load step:(\d+) dropped:(\d+)((?: L\d+:max=[\d.]+,min=[\d.]+,idle=\d+)*)$")


def parse_expert_loads(lines: list[str]) -> dict[int, list[dict[str, float]]]:
    """The expert_load lines of a training section: step -> per layer {max, min, idle, dropped}."""
    out = {}
    for text in lines:
        if m := EXPERT_LOAD_RE.match(text):
            layers = re.findall(r"L\d+:max=([\d.]+),min=([\d.]+),idle=(\d+)", m[3])
            out[int(m[1])] = [{"max": float(a), "min": float(b), "idle": int(c), "dropped": int(m[2])} for a, b, c in layers]
    return out


class RunLog:
    """Append-only writer, flushed line by line so that an interrupted run keeps everything up to
    the interruption. It remembers the training lines it wrote: the row is computed from them."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(path, "w", newline="")
        self.training: list[str] = []

    def section(self, title: str, body: str = "") -> None:
        if body and not body.endswith("\n"):
            body += "\n"  # the parser drops it again: the manifest gives the exact length
        self.file.write(f"==== {title} ====\n{body}")
        self.file.flush()

    def begin(self, config: dict, environment: dict, sources: dict[str, str]) -> None:
        """Every source listed in config['sources'], the separator line, config, environment, then
        the training header."""
        for title in config["sources"]:
            self.section(title, sources[title])
        self.file.write(CODE_END + "\n")
        self.section("config", json.dumps(config, indent=1))
        self.section("environment", json.dumps(environment, indent=1))
        self.section(TRAINING)

    def line(self, text: str) -> None:
        self.training.append(text)
        self.file.write(text + "\n")
        self.file.flush()

    def finish(self, row: dict) -> None:
        self.section(RESULT, json.dumps(row, indent=1))
        self.file.close()


@dataclass(frozen=True)
class Eval:
    step: int
    loss: float
    time_ms: int
    step_avg_ms: float


@dataclass(frozen=True)
class TrainStep:
    step: int
    loss: float
    time_ms: int


@dataclass
class Training:
    total: int | None = None  # T of `step:N/T`
    evals: list[Eval] = field(default_factory=list)
    steps: list[TrainStep] = field(default_factory=list)


@dataclass
class ParsedLog:
    path: Path
    sections: dict[str, str]
    config: dict
    environment: dict
    training: Training
    result: dict | None


def parse_training(lines: list[str], where: str = "training", first_lineno: int = 1) -> Training:
    """Parse `step:` lines; other lines are ignored (comments a tool may add), a broken `step:` line is an error."""
    out = Training()
    for lineno, text in enumerate(lines, start=first_lineno):
        if not text.startswith("step:"):
            continue
        if m := EVAL_RE.match(text):
            out.evals.append(Eval(int(m[1]), _number(m[3], where, lineno), int(m[4]), _number(m[5], where, lineno)))
        elif m := TRAIN_RE.match(text):
            out.steps.append(TrainStep(int(m[1]), _number(m[3], where, lineno), int(m[4])))
        else:
            raise UserError(f"{where}:{lineno}: malformed training line {text[:80]!r}")
        total = int(m[2])
        if out.total not in (None, total):
            raise UserError(f"{where}:{lineno}: step total {total} differs from the earlier {out.total}")
        out.total = total
    return out


def _number(text: str, where: str, lineno: int) -> float:
    try:
        return float(text)
    except ValueError:
        raise UserError(f"{where}:{lineno}: {text!r} is not a number") from None


def parse_log(path: str | Path) -> ParsedLog:
    """Split a log into sections (sources by their manifest length) and parse config, training and result."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            text = f.read()
    except OSError as e:
        raise UserError(f"cannot read log {path}: {e.strerror}") from None
    code_text, rest, offset = _split_code(text)
    sections, section_line, lengths = _sections(path, rest, {}, offset)
    config = _json_section(path, section_line["config"], "config", sections["config"]) if "config" in sections else {}
    lengths = {t: int(e["chars"]) for t, e in config.get("sources", {}).items()}
    if code_text:
        code, code_line, _ = _sections(path, code_text, lengths, 1)
        if set(code) & set(sections):
            raise UserError(f"{path}: section {sorted(set(code) & set(sections))[0]!r} appears twice")
        sections, section_line = {**code, **sections}, {**code_line, **section_line}
    if "config" not in sections:
        raise UserError(f"{path}: no config section; not a run log")
    environment = _json_section(path, section_line.get("environment", 0), "environment", sections.get("environment", "{}"))
    training_body = sections.get(TRAINING, "")
    training = parse_training(training_body.splitlines(), str(path), section_line.get(TRAINING, 0) + 1)
    result = _json_section(path, section_line[RESULT], RESULT, sections[RESULT]) if RESULT in sections else None
    return ParsedLog(path, sections, config, environment, training, result)


def _split_code(text: str) -> tuple[str, str, int]:
    """(the embedded code, the rest, the line number the rest starts at): since format 3 the code
    comes first and ends at a line of 100 `=` followed by the config header."""
    marker = CODE_END + "\n==== config ====\n"
    at = 0 if text.startswith(marker) else text.find("\n" + marker) + 1
    if at == 0 and not text.startswith(marker):
        return "", text, 1  # an older log: config first, sources after it
    return text[:at], text[at + len(CODE_END) + 1 :], text.count("\n", 0, at) + 2


def _sections(path: Path, text: str, lengths: dict[str, int], first_lineno: int) -> tuple[dict, dict, dict]:
    """Split text into sections: a title in `lengths` (a source of the manifest) is read by its
    character count, any other up to the next header. A config section met on the way (an older
    log) supplies the lengths of the sections after it."""
    sections: dict[str, str] = {}
    section_line: dict[str, int] = {}
    pos = 0
    while pos < len(text):
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        lineno = text.count("\n", 0, pos) + first_lineno
        m = HEADER_RE.match(text[pos:end])
        if not m:
            raise UserError(f"{path}:{lineno}: expected a section header '==== title ====', found {text[pos:end][:60]!r}")
        title, start = m[1], end + 1
        if title in sections:
            raise UserError(f"{path}:{lineno}: section {title!r} appears twice")
        if title in lengths:
            stop = start + lengths[title]
            if stop > len(text):
                raise UserError(f"{path}:{lineno}: section {title!r} is shorter than its manifest says; the log is truncated or edited")
            body, pos = text[start:stop], stop + (1 if lengths[title] and not text[start:stop].endswith("\n") else 0)
            if pos < len(text) and not HEADER_RE.match(text[pos : text.find("\n", pos)]):
                raise UserError(f"{path}:{lineno}: embedded {title} is not {lengths[title]} characters long as the manifest "
                                "records: the source was edited after the run")
        else:
            nxt = re.search(r"^==== .+ ====$", text[start:], re.M)
            stop = len(text) if nxt is None else start + nxt.start()
            body, pos = text[start:stop], stop
        sections[title], section_line[title] = body, lineno
        if title == "config":
            config = _json_section(path, lineno, title, body)
            lengths = {t: int(e["chars"]) for t, e in config.get("sources", {}).items()}
    return sections, section_line, lengths


def _json_section(path: Path, lineno: int, title: str, body: str) -> dict:
    try:
        value = json.loads(body)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{lineno}: section {title!r} is not valid JSON ({e.msg})") from None
    if not isinstance(value, dict):
        raise UserError(f"{path}:{lineno}: section {title!r} must be a JSON object")
    return value


def derive_status(training: Training, total: int, diverge_at: float) -> str:
    """ok: the final evaluation at step T is there; diverged: the last step's loss blew up; else interrupted."""
    if any(e.step == total for e in training.evals):
        return "ok"
    if training.steps and (not math.isfinite(training.steps[-1].loss) or training.steps[-1].loss > diverge_at):
        return "diverged"
    return "interrupted"


def figures(training: Training, config: dict, status: str | None = None) -> dict:
    """Every figure of the row that the training lines determine, computed from the logged values.

    `status` is the trainer's own verdict; without it (rebuilding from a log that has no result)
    the status is derived from the lines.
    """
    total, target = config["steps"], config["target"]
    status = status or derive_status(training, total, config["diverge_at"])
    steps = training.steps[-1].step if training.steps else 0
    time_ms = training.steps[-1].time_ms if training.steps else 0
    final = [e for e in training.evals if e.step == total]
    reached = next((e for e in training.evals if e.loss <= target), None)
    tokens_per_step = config["tokens_per_step"]
    return {
        "status": status,
        "steps": steps,
        "tokens": steps * tokens_per_step,
        "train_time_s": time_ms / 1000,
        "final_val_loss": final[-1].loss if final and status == "ok" else None,
        "target": target,
        "reached_target": reached is not None,
        "time_to_target_s": None if reached is None else reached.time_ms / 1000,
        "steps_to_target": None if reached is None else reached.step,
        "tokens_to_target": None if reached is None else reached.step * tokens_per_step,
        "flops_to_target": None if reached is None else reached.step * tokens_per_step * config["flops_per_token"],
        "step_time_ms": round(time_ms / max(steps, 1), 3),
    }


def training_problems(training: Training, config: dict) -> list[str]:
    """What makes the training lines impossible for an honest run: gaps, clocks going backwards,
    evaluations off the track's cadence, or an evaluation time that differs from the step it follows."""
    problems = []
    total, every = config["steps"], config["track_config"]["eval_every"]
    if training.total not in (None, total):
        problems.append(f"lines say {training.total} steps, config says {total}")
    if [s.step for s in training.steps] != list(range(1, len(training.steps) + 1)):
        problems.append("training steps are not numbered 1, 2, 3, ... without gaps")
    times = [s.time_ms for s in training.steps]
    if any(b < a for a, b in zip(times, times[1:])):
        problems.append("train_time decreases between steps")
    done = len(training.steps)
    expected = [s for s in range(0, min(done, total - 1) + 1) if s % every == 0] + ([total] if done == total else [])
    got = [e.step for e in training.evals]
    if got != expected[: len(got)] or (got and got[-1] == total and got != expected):
        shown = f"{got[:6]}{'...' if len(got) > 6 else ''}"
        problems.append(f"evaluations at steps {shown} are off the track's cadence (every {every} and at {total})")
    at_step = {s.step: s.time_ms for s in training.steps} | {0: 0}
    for e in training.evals:
        if e.step in at_step and at_step[e.step] != e.time_ms:
            problems.append(f"evaluation at step {e.step} says train_time {e.time_ms}ms, the step itself {at_step[e.step]}ms")
            break
        if abs(e.step_avg_ms - e.time_ms / max(e.step, 1)) > 0.5 / max(e.step, 1) + 0.006:
            problems.append(f"evaluation at step {e.step}: step_avg {e.step_avg_ms}ms does not match train_time / step")
            break
    return problems
