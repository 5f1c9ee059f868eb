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
(`class_module` below says how tuples and defaults without a type are handled).

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
from nanogpt.config import Track
from nanogpt.errors import UserError
from nanogpt.model import ROLES
from nanogpt.schedule import SCHEDULE_KEYS
from nanogpt.train import set_training
from optimizers._aux import AUX_DEFAULTS, aux_adamw

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


# ---- an installed optimizer class, named on the command line -------------------------------------


def split_path(path: str) -> tuple[str, str]:
    """'heavyball:SOAP' -> ('heavyball', 'SOAP'); 'torch.optim.NAdam' -> ('torch.optim', 'NAdam')."""
    module, sep, attr = path.partition(":")
    if not sep:
        module, _, attr = path.rpartition(".")
    if not module or not attr:
        raise UserError(f"optimizer class {path!r}: expected a dotted path (torch.optim.NAdam) or package:Class (heavyball:SOAP)")
    return module, attr


def library_class(path: str) -> type[torch.optim.Optimizer]:
    """The optimizer class named by `path`, imported; a one-line error when it is not there."""
    module_name, attr = split_path(path)
    try:
        obj = importlib.import_module(module_name)
    except ImportError as e:
        raise UserError(f"optimizer class {path}: cannot import {module_name!r} ({e}); install its package, "
                        f"or name a shipped optimizer (run.py --list)") from None
    for part in attr.split("."):
        obj = getattr(obj, part, None)
    if not (isinstance(obj, type) and issubclass(obj, torch.optim.Optimizer)):
        raise UserError(f"optimizer class {path}: {module_name} has no torch.optim.Optimizer subclass {attr!r}")
    return obj


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def keyword_defaults(cls: type) -> dict:
    """The constructor's keyword defaults as typed hyperparameters (the rules: class_module)."""
    out = {}
    for name, p in list(inspect.signature(cls.__init__).parameters.items())[2:]:  # after self, params
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty:
            raise UserError(f"{cls.__name__}: constructor argument {name!r} has no default, so it has no value or type "
                            f"to set; write a module for it (README, 'Adding an optimizer')")
        if isinstance(p.default, (bool, int, float, str)):
            # weight_decay: float = 0 is a float hyperparameter (--set weight_decay=0.1 must parse)
            out[name] = float(p.default) if _is_number(p.default) and "float" in str(p.annotation) else p.default
        elif isinstance(p.default, tuple) and p.default and all(_is_number(v) for v in p.default):
            out.update({f"{name}_{i}": v for i, v in enumerate(p.default)})
    return out


def constructor_kwargs(cls: type, hp: dict) -> dict:
    """The hyperparameters in `hp` back as the constructor's keyword arguments (tuples re-assembled)."""
    kwargs = {}
    for name, p in list(inspect.signature(cls.__init__).parameters.items())[2:]:
        if name in hp:
            kwargs[name] = hp[name]
        elif isinstance(p.default, tuple) and f"{name}_0" in hp:
            kwargs[name] = tuple(hp[f"{name}_{i}"] for i in range(len(p.default)))
    return kwargs


def requires_closure(cls: type) -> bool:
    """A class whose step() has no default for `closure` cannot step without one."""
    closure = inspect.signature(cls.step).parameters.get("closure")
    return closure is not None and closure.default is inspect.Parameter.empty


PROBE_STEPS = 3  # SOAP's first step only sets up its preconditioner


def check_roles(cls: type, params: dict[str, list[torch.Tensor]], kwargs: dict) -> None:
    """A few steps of the class on a copy of the first parameter of each role, with seeded gradients
    (its own generator: the run's random state is untouched). A class that raises or leaves the copy
    unchanged mishandles the role."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    for role, ps in params.items():
        if not ps:
            continue
        probe = torch.nn.Parameter(ps[0].detach().clone())
        grad = torch.randn(probe.shape, generator=gen).to(probe.device, probe.dtype)
        what = f"{cls.__name__} cannot handle the {role} role (a tensor of shape {tuple(probe.shape)})"
        try:
            opt = cls([probe], **kwargs)
            if hasattr(opt, "train"):
                opt.train()
            for _ in range(PROBE_STEPS):
                probe.grad = grad.clone()
                opt.step((lambda: torch.zeros(())) if requires_closure(cls) else None)
        except Exception as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            raise UserError(f"{what}: {type(e).__name__}: {first}") from None
        if torch.equal(probe.detach(), ps[0].detach()):
            raise UserError(f"{what}: its step left the tensor unchanged (a zero learning rate, or a class that skips such tensors)")


def class_module(path: str) -> ModuleType:
    """A synthetic optimizer module (DEFAULTS, build, LIBRARIES) for an installed optimizer class: the
    class on every role in one parameter group, its constructor's keyword defaults as hyperparameters:

    - bool, int, float and str defaults are hyperparameters of that type (an int default annotated
      as a float, `weight_decay: float = 0`, is a float);
    - a tuple of numbers is expanded to NAME_0, NAME_1, ... (betas=(0.9, 0.999) -> betas_0, betas_1)
      and put back together for the constructor;
    - any other default (None, a tuple holding None, a callable, a library's sentinel) is not
      exposed: the class keeps its own default;
    - a parameter without a default (besides `params`) is refused: it has no value and no type.

    Before the run the class takes a few steps on a copy of one parameter of every role
    (check_roles). A class whose `step` has no default for `closure` is given one. Its package's
    name, version and file hash enter the identity through LIBRARIES (nanogpt/runspec.py)."""
    cls = library_class(path)
    module = ModuleType(f"optimizer_class_{path}")
    module.__doc__ = f"{path}: the class on every role, its keyword defaults as hyperparameters."
    module.CLASS = cls
    module.LIBRARIES = (cls.__module__.split(".")[0],)
    module.DEFAULTS = keyword_defaults(cls)

    def build(params, hp, model):
        from optimizers._library import eager_on_cpu  # the glue of library classes: in their code hash, not the harness's

        kwargs = constructor_kwargs(cls, hp)
        every = [p for ps in params.values() for p in ps]
        eager_on_cpu(cls, every)
        check_roles(cls, params, kwargs)
        opt = cls(every, **kwargs)
        opt.needs_closure = requires_closure(cls)
        return [opt]

    module.build = build
    return module



# --------------------------------------------------------------------------------------------------


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

