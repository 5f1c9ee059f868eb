"""Shared pieces of the optimizer modules built on libraries (soap.py, lion.py, ...).

Library modules import their library inside build() (through `load`), so that they import, and
`run.py --list` works, without the `baselines` extra; they declare it in LIBRARIES, which puts the
library's name, version and file hash in the configuration's identity (nanogpt/runspec.py).
Like every optimizer module, this one does not import the harness.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

import torch

INSTALL_HINT = "pip install -e '.[baselines]'"
# The AdamW baseline's per-role learning rates (optimizers/adamw.py's DEFAULTS): the defaults of the
# element-wise Adam-like baselines that replace it on every role, until they are tuned.
ADAMW_ROLE_RATES = {"lr": 0.003, "embed_lr": 0.03, "head_lr": 0.003, "scalar_lr": 0.01}
# Libraries that torch.compile their update by default, and the switch that turns it off: on CPU the
# update runs eagerly (compiling it needs a C++ toolchain and minutes per shape); on GPU it compiles
# during the untimed warmup (nanogpt/train.py), like the model.
EAGER_ON_CPU = {"heavyball": ("heavyball.utils", "compile_mode", None)}


def missing(module: ModuleType) -> list[str]:
    """The libraries a module declares (LIBRARIES) that are not installed."""
    return [name for name in getattr(module, "LIBRARIES", ()) if importlib.util.find_spec(name) is None]


def load(package: str, name: str) -> type:
    """A shipped module's class from its library, with the install hint when the library is missing."""
    if importlib.util.find_spec(package) is None:
        raise ImportError(f"this optimizer needs the {package} package: {INSTALL_HINT}")
    return getattr(importlib.import_module(package), name)


def eager_on_cpu(cls: type, params: list[torch.Tensor]) -> None:
    """Turn off the library's own torch.compile when the parameters are on CPU (EAGER_ON_CPU)."""
    switch = EAGER_ON_CPU.get(cls.__module__.split(".")[0])
    if switch and params and not params[0].is_cuda:
        module, attr, value = switch
        setattr(importlib.import_module(module), attr, value)


def per_role_groups(params: dict[str, list], hp: dict) -> list[dict]:
    """One parameter group per role with its own learning rate (`lr` for matrices, `<role>_lr` for the
    others), as the AdamW baseline: the element-wise library optimizers replace AdamW on every role."""
    return [{"params": ps, "lr": hp["lr" if role == "matrix" else f"{role}_lr"]} for role, ps in params.items() if ps]
