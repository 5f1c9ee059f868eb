"""Optimizers from installed libraries: any class named on the command line, and the shared pieces of
the shipped library modules (soap.py, lion.py, ...).

A class named as `torch.optim.NAdam` (a dotted path) or `heavyball:SOAP` (`package:Class`) becomes a
synthetic optimizer module (`class_module`): it runs the class on every role in one parameter group,
and its hyperparameters are the constructor's keyword defaults:

- bool, int, float and str defaults are hyperparameters of that type (`--set momentum_decay=0.005`),
  an int default annotated as a float (`weight_decay: float = 0`) a float;
- a tuple of numbers is expanded to NAME_0, NAME_1, ... (betas=(0.9, 0.999) -> betas_0, betas_1) and
  put back together for the constructor;
- any other default (None, a tuple holding None, a callable, a library's sentinel) is not exposed: the
  class keeps its own default;
- a parameter without a default (besides `params`) is refused: it has no value and no type to --set.

Before the run, the class takes a few steps on a copy of one parameter of every role; a class that
raises there (e.g. a matrix-only method given a 1-D tensor) or leaves the copy unchanged is refused
in one line naming the class and the role. A class whose `step` has no default for `closure` is
given one (nanogpt/train.py). The library's package, version and file hash enter the configuration's
identity through `LIBRARIES` (nanogpt/runspec.py), as for the shipped modules.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
from types import ModuleType

import torch

from nanogpt.errors import UserError

INSTALL_HINT = "pip install -e '.[baselines]'"
# Libraries that torch.compile their update by default, and the switch that turns it off: on CPU the
# update runs eagerly (compiling it needs a C++ toolchain and minutes per shape); on GPU it compiles
# during the untimed warmup (nanogpt/train.py), like the model.
EAGER_ON_CPU = {"heavyball": ("heavyball.utils", "compile_mode", None)}


def missing(module: ModuleType) -> list[str]:
    """The libraries a module declares (LIBRARIES) that are not installed."""
    return [name for name in getattr(module, "LIBRARIES", ()) if importlib.util.find_spec(name) is None]


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


def load(package: str, name: str) -> type[torch.optim.Optimizer]:
    """A shipped module's class from its library, with the install hint when the library is missing."""
    if importlib.util.find_spec(package) is None:
        raise UserError(f"this optimizer needs the {package} package: {INSTALL_HINT}")
    return library_class(f"{package}:{name}")


def eager_on_cpu(cls: type, params: list[torch.Tensor]) -> None:
    """Turn off the library's own torch.compile when the parameters are on CPU (EAGER_ON_CPU)."""
    switch = EAGER_ON_CPU.get(cls.__module__.split(".")[0])
    if switch and params and not params[0].is_cuda:
        module, attr, value = switch
        setattr(importlib.import_module(module), attr, value)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def keyword_defaults(cls: type) -> dict:
    """The constructor's keyword defaults as typed hyperparameters (see the module docstring)."""
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
    """A synthetic optimizer module (DEFAULTS, build, LIBRARIES) for an installed optimizer class."""
    cls = library_class(path)
    module = ModuleType(f"optimizer_class_{path}")
    module.__doc__ = f"{path}: the class on every role, its keyword defaults as hyperparameters."
    module.CLASS = cls
    module.LIBRARIES = (cls.__module__.split(".")[0],)
    module.DEFAULTS = keyword_defaults(cls)

    def build(params, hp, model):
        kwargs = constructor_kwargs(cls, hp)
        every = [p for ps in params.values() for p in ps]
        eager_on_cpu(cls, every)
        check_roles(cls, params, kwargs)
        opt = cls(every, **kwargs)
        opt.needs_closure = requires_closure(cls)
        return [opt]

    module.build = build
    return module


def per_role_groups(params: dict[str, list], hp: dict) -> list[dict]:
    """One parameter group per role with its own learning rate (`lr` for matrices, `<role>_lr` for the
    others), as the AdamW baseline: the element-wise library optimizers replace AdamW on every role."""
    return [{"params": ps, "lr": hp["lr" if role == "matrix" else f"{role}_lr"]} for role, ps in params.items() if ps]
