"""The optimizer contract (AlgoPerf-style: a narrow API, everything else frozen).

An optimizer is a module (a name in optimizers/, or a path to a .py file) that defines

    DEFAULTS: dict            every hyperparameter with its default (its type is the --set type)
    build(params, hp, model) -> list[torch.optim.Optimizer]
        params: {role: [Parameter, ...]} for the roles matrix / embed / head / scalar
        hp: the resolved hyperparameters (track schedule < DEFAULTS < tuned values < --set)
        model: the (uncompiled) GPT, for optimizers that need its structure (Newton-Muon)

and optionally

    ROLES: tuple              the roles build() handles itself (must include "matrix"); the others
                              go to the auxiliary AdamW of the Muon family (optimizers/_matrix.py),
                              whose hyperparameters (AUX_DEFAULTS: embed_lr, adam_beta1, ...) join
                              the module's; build() then gets empty lists for those roles
    LIBRARIES: tuple          third-party packages the module imports lazily (so that it imports,
                              and --list works, without them): their name, version and file hash
                              enter the configuration's identity like a module-level import's

An optimizer class can also be named directly: `--optimizer torch.optim.NAdam` or
`--optimizer heavyball:SOAP` runs it on every role with its keyword defaults as the hyperparameters
(optimizers/_library.py says how tuples and defaults without a type are handled).

On the optimizer objects build() returns, the harness (nanogpt/train.py) uses, when present:
- `before_forward(step) -> bool`: called before each step's forward passes; returning True asks the
  harness to run that step eagerly (uncompiled) so forward hooks fire.
- `train()` / `eval()`: `train()` right after build, `eval()` before every evaluation (the warmup's,
  the cadence's and the final one) and `train()` after it, all with the clock stopped. After the
  final evaluation the optimizers stay in eval mode, so the model (and a checkpoint) holds the
  weights that were evaluated: schedule-free methods evaluate, and save, their averaged point.
- `needs_closure = True` (an attribute of the object or its class): its `step` is passed a closure
  that zeroes the gradients, re-runs the step's forward and backward on the same micro-batches
  (gradients averaged across ranks as in the step itself) and returns this rank's loss. It runs
  inside the timed step, after the optimizers that need no closure have stepped.
The harness applies the learning-rate schedule by scaling every group's `initial_lr`, and checks
that each trainable parameter is handled exactly once.

Tuned values per track are data (optimizers/tuned.toml, for the shipped optimizers): changing one
changes the resolved hyperparameters of a configuration, not the hash of the update rule.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import tomllib
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

import optimizers
from nanogpt.errors import UserError
from nanogpt.model import ROLES
from nanogpt.schedule import SCHEDULE_KEYS
from nanogpt.tracks import Track
from nanogpt.train import set_training
from optimizers._library import class_module
from optimizers._matrix import AUX_DEFAULTS, aux_adamw

TUNED_FILE = Path(optimizers.__file__).parent / "tuned.toml"
# Hyperparameters that cannot be negative (by name), and those that are fractions in [0, 1].
NON_NEGATIVE = ("lr", "weight_decay", "eps")  # the key, or a key ending in _<one of these>
FRACTIONS = ("momentum", "momentum_start", "beta1", "beta2")  # likewise; also any key starting with "beta"


@dataclass
class OptimizerSpec:
    name: str
    module: ModuleType
    source: str
    path: Path
    shipped: bool  # one of optimizers/ (its tuned values apply), not a module given by path
    library_class: bool = False  # an installed class named by its path: `path` is the file defining it

    @property
    def roles(self) -> tuple[str, ...]:
        """The roles the module's build() handles; the auxiliary AdamW takes the others."""
        return tuple(getattr(self.module, "ROLES", ROLES))

    @property
    def defaults(self) -> dict:
        """The module's DEFAULTS, then the auxiliary AdamW's for the roles it takes (unless DEFAULTS sets them)."""
        aux = [r for r in ROLES if r not in self.roles]
        adam = {k: v for k, v in AUX_DEFAULTS.items() if k.startswith("adam_") or k.split("_")[0] in aux} if aux else {}
        return {**self.module.DEFAULTS, **{k: v for k, v in adam.items() if k not in self.module.DEFAULTS}}


def load_optimizer(spec: str) -> OptimizerSpec:
    """Load a shipped optimizer by name, any module by path to a .py file, or an installed optimizer
    class by its dotted path (torch.optim.NAdam) or package:Class (heavyball:SOAP)."""
    if by_class(spec):
        module = class_module(spec)
        path = Path(inspect.getfile(module.CLASS))
        name = spec.replace(":", ".")
        return OptimizerSpec(name=name, module=module, source=path.read_text(), path=path, shipped=False, library_class=True)
    if by_path(spec):
        path = Path(spec).resolve()
        if not path.is_file():
            raise UserError(f"optimizer file {spec} does not exist")
        name = path.stem
        try:
            mod_spec = importlib.util.spec_from_file_location(f"user_optimizer_{name}", path)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        except Exception as e:  # any import-time failure of user code is the user's to fix
            raise UserError(f"optimizer file {spec} failed to import: {type(e).__name__}: {e}") from e
    else:
        if spec not in optimizers.available():
            raise UserError(f"unknown optimizer {spec!r}; valid: {', '.join(optimizers.available())} (or a path to a .py file)")
        name = spec
        module = importlib.import_module(f"optimizers.{spec}")
        path = Path(module.__file__)
    check_module(module, spec)
    return OptimizerSpec(name=name, module=module, source=path.read_text(), path=path, shipped=not by_path(spec))


def by_path(spec: str) -> bool:
    """An optimizer named by a path to a .py file rather than by a shipped module's name."""
    return spec.endswith(".py") or "/" in spec


def by_class(spec: str) -> bool:
    """An optimizer class named by its path (a dot or a colon, and not a file)."""
    return not by_path(spec) and (":" in spec or "." in spec)


def check_module(module: ModuleType, spec: str) -> None:
    if not isinstance(getattr(module, "DEFAULTS", None), dict):
        raise UserError(f"optimizer {spec} breaks the contract: it must define DEFAULTS, a dict of hyperparameters")
    if not callable(getattr(module, "build", None)):
        raise UserError(f"optimizer {spec} breaks the contract: it must define build(params, hp, model)")
    for key, value in module.DEFAULTS.items():
        if not isinstance(value, (bool, int, float, str)):
            raise UserError(f"optimizer {spec} breaks the contract: default {key}={value!r} is not a bool, int, float or str")
    roles = getattr(module, "ROLES", ROLES)
    if not isinstance(roles, tuple) or "matrix" not in roles or not set(roles) <= set(ROLES):
        raise UserError(f"optimizer {spec} breaks the contract: ROLES must be a tuple of roles among {', '.join(ROLES)} that "
                        "includes 'matrix' (the auxiliary AdamW takes embed, head and scalar only)")


@functools.cache
def tuned_table() -> dict:
    try:
        with open(TUNED_FILE, "rb") as f:
            return tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"{TUNED_FILE}: cannot read the tuned hyperparameters ({e})") from None


def tuned_values(opt: OptimizerSpec, track: Track) -> dict:
    """The shipped optimizer's tuned values for the track (optimizers/tuned.toml), checked against its defaults."""
    tuned = tuned_table().get(opt.name, {}).get(track.name, {}) if opt.shipped else {}
    known = {"steps": track.steps, **track.schedule, **opt.defaults}
    for key, value in tuned.items():
        if key not in known or type(value) is not type(known[key]):
            raise UserError(f"{TUNED_FILE}: [{opt.name}.{track.name}] {key} = {value!r} is not a hyperparameter of "
                            f"{opt.name} of the same type (default {known.get(key)!r})")
    return tuned


def default_hparams(opt: OptimizerSpec, track: Track) -> dict:
    """Schedule length and shape from the track, then the module's defaults, then its tuned values
    for this track. The schedule is part of the submission: a slower optimizer may run longer."""
    return {"steps": track.steps, **track.schedule, **opt.defaults, **tuned_values(opt, track)}


def parse_value(key: str, text: str, default):
    kind = type(default).__name__
    if isinstance(default, bool):
        lowered = text.lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
        raise UserError(f"--set {key}={text}: expected a bool (true/false)")
    try:
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float):
            return float(text)
    except ValueError:
        raise UserError(f"--set {key}={text}: expected {kind} (default {default!r})") from None
    return text


def apply_overrides(hp: dict, items: list[str], max_steps: int | None = None) -> dict:
    """Apply `--set KEY=VALUE` items, type-checked against the defaults; a key given twice, or a
    value out of its range, is refused (the last value silently winning would hide a typo)."""
    hp = dict(hp)
    given: dict[str, str] = {}
    for item in items:
        if "=" not in item:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set lr=0.03")
        key, text = item.split("=", 1)
        key = key.strip()
        if key not in hp:
            valid = ", ".join(f"{k}:{type(v).__name__}" for k, v in sorted(hp.items()))
            raise UserError(f"--set {key}: unknown hyperparameter; valid keys: {valid}")
        if key in given:
            raise UserError(f"{key} is given twice ({given[key]} and {text.strip()}); give each hyperparameter once")
        given[key] = text.strip()
        hp[key] = parse_value(key, text.strip(), hp[key])
    check_ranges(hp, max_steps)
    return hp


def _named(key: str, names: tuple[str, ...]) -> bool:
    return any(key == n or key.endswith(f"_{n}") for n in names)


def check_ranges(hp: dict, max_steps: int | None) -> None:
    """The ranges every optimizer shares: learning rates, decays and epsilons not negative, momenta
    and betas in [0, 1], the schedule within the track's budget. An optimizer checks its own others."""
    for key, value in hp.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if _named(key, NON_NEGATIVE) and value < 0:
            raise UserError(f"{key}={value} must not be negative")
        if (_named(key, FRACTIONS) or key.startswith("beta")) and not 0.0 <= value <= 1.0:
            raise UserError(f"{key}={value} must lie in [0, 1]")
    if hp["steps"] < 1 or (max_steps is not None and hp["steps"] > max_steps):
        raise UserError(f"steps={hp['steps']}: must be a positive number of steps, at most the track's budget of {max_steps}")
    for key in SCHEDULE_KEYS:
        if not 0.0 <= hp[key] <= 1.0:
            raise UserError(f"{key}={hp[key]} must lie in [0, 1]")
    if hp["warmup_frac"] + hp["cooldown_frac"] > 1.0:
        raise UserError("warmup_frac + cooldown_frac must not exceed 1")
    return hp


def params_by_role(model: torch.nn.Module) -> dict[str, list[torch.nn.Parameter]]:
    roles = model.param_roles()
    groups = {role: [] for role in ROLES}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups[roles[name]].append(p)
    return groups


def build_optimizers(opt: OptimizerSpec, model: torch.nn.Module, hp: dict) -> list[torch.optim.Optimizer]:
    """Build the module's optimizers (and the auxiliary AdamW for the roles it does not handle), put
    them in training mode, and check that every trainable parameter is handled exactly once."""
    params = params_by_role(model)
    own = {role: ps if role in opt.roles else [] for role, ps in params.items()}
    try:
        built = opt.module.build(own, hp, model)
        if isinstance(built, torch.optim.Optimizer):
            built = [built]
        if opt.roles != ROLES and isinstance(built, list):
            aux = aux_adamw({role: [] if role in opt.roles else ps for role, ps in params.items()}, hp)
            built = built + ([aux] if aux is not None else [])
    except UserError:
        raise
    except Exception as e:
        raise UserError(f"optimizer {opt.name}: build() failed: {type(e).__name__}: {e}") from e
    if not built or not all(isinstance(o, torch.optim.Optimizer) for o in built):
        raise UserError(f"optimizer {opt.name} breaks the contract: build() must return a list of torch.optim.Optimizer")
    seen: dict[int, int] = {}
    for o in built:
        for group in o.param_groups:
            group.setdefault("initial_lr", group["lr"])
            for p in group["params"]:
                seen[id(p)] = seen.get(id(p), 0) + 1
    names = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    missing = [names[i] for i in names if i not in seen]
    twice = [names[i] for i, c in seen.items() if c > 1 and i in names]
    foreign = [i for i in seen if i not in names]
    if missing or twice or foreign:
        parts = []
        if missing:
            parts.append(f"not handled: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
        if twice:
            parts.append(f"handled more than once: {', '.join(twice[:5])}")
        if foreign:
            parts.append(f"{len(foreign)} tensors that are not model parameters")
        raise UserError(f"optimizer {opt.name} breaks the contract: every trainable parameter must be handled "
                        f"exactly once ({'; '.join(parts)})")
    set_training(built, True)  # schedule-free methods refuse to step until told they are training
    return built

