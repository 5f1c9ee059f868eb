"""Shipped optimizers, one module each; modules starting with '_' hold shared pieces."""

from pathlib import Path


def available() -> list[str]:
    return sorted(p.stem for p in Path(__file__).parent.glob("*.py") if not p.stem.startswith("_"))
