"""Per-track leaderboards built from the records table only (never edited by hand)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def config_id(hparams: str) -> str:
    return hashlib.sha256(hparams.encode()).hexdigest()[:6]


def leaderboard(df: pd.DataFrame, track: str) -> pd.DataFrame:
    """One row per configuration (optimizer + hyperparameters) on `track`, fastest first.

    Time to target is averaged over the runs that reached it; `reached` says how many did.
    """
    runs = df[(df["track"] == track) & (df["status"] != "interrupted")].copy()
    if runs.empty:
        return pd.DataFrame()
    runs["config"] = runs["hparams"].map(config_id)
    rows = []
    for (optimizer, config), g in runs.groupby(["optimizer", "config"], sort=False):
        hit = g[g["reached_target"].astype(bool)]
        ttt = hit["time_to_target_s"].to_numpy(float)
        rows.append({
            "optimizer": optimizer,
            "config": config,
            "n": len(g),
            "reached": len(hit),
            "diverged": int((g["status"] == "diverged").sum()),
            "time_to_target_s": ttt.mean() if len(ttt) else np.nan,
            "time_std_s": ttt.std(ddof=1) if len(ttt) > 1 else np.nan,
            "steps_to_target": hit["steps_to_target"].mean() if len(hit) else np.nan,
            "tokens_to_target": hit["tokens_to_target"].mean() if len(hit) else np.nan,
            "final_val_loss": g["final_val_loss"].mean(),
            "step_time_ms": g["step_time_ms"].mean(),
            "seeds": " ".join(str(int(s)) for s in sorted(g["seed"])),
        })
    table = pd.DataFrame(rows)
    table["all_reached"] = table["reached"] == table["n"]
    return table.sort_values(["all_reached", "time_to_target_s"], ascending=[False, True], na_position="last").reset_index(drop=True)


def fmt(x, spec: str) -> str:
    return "—" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, spec)


def to_markdown(table: pd.DataFrame, track: str, target: float | None = None) -> str:
    head = f"### {track}" + (f" (target val loss {target})" if target is not None else "")
    if table.empty:
        return head + "\n\nNo runs recorded yet.\n"
    lines = [
        head, "",
        "| # | optimizer | config | n | reached | time to target (s) | steps to target | tokens to target | final val loss | step (ms) |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, r in table.iterrows():
        spread = f" ± {fmt(r.time_std_s, '.1f')}" if not np.isnan(r.time_std_s) else ""
        lines.append(
            f"| {i + 1} | {r.optimizer} | {r.config} | {r.n} | {r.reached}/{r.n} | {fmt(r.time_to_target_s, '.1f')}{spread} | "
            f"{fmt(r.steps_to_target, '.0f')} | {fmt(r.tokens_to_target, '.3g')} | {fmt(r.final_val_loss, '.4f')} | {fmt(r.step_time_ms, '.1f')} |"
        )
    lines.append("\nTime to target: mean ± standard deviation over the seeds that reached the target.")
    return "\n".join(lines) + "\n"


def plot_time_to_target(df: pd.DataFrame, table: pd.DataFrame, track: str, path: Path) -> Path:
    """Bar per configuration (mean time to target), error bar = std over seeds, dots = seeds."""
    done = table[table["reached"] > 0]
    fig, ax = plt.subplots(figsize=(7, 0.6 * max(len(done), 1) + 1.6))
    runs = df[(df["track"] == track) & df["reached_target"].astype(bool)].copy()
    runs["config"] = runs["hparams"].map(config_id)
    labels = [f"{r.optimizer} ({r.config}) n={r.n}" for r in done.itertuples()]
    y = np.arange(len(done))
    ax.barh(y, done["time_to_target_s"], xerr=done["time_std_s"].fillna(0), color="#4C72B0", alpha=0.8, capsize=4)
    for yi, r in zip(y, done.itertuples()):
        seeds = runs[(runs["optimizer"] == r.optimizer) & (runs["config"] == r.config)]["time_to_target_s"]
        ax.scatter(seeds, np.full(len(seeds), yi), color="black", s=12, zorder=3)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    ax.set_xlabel("train time to target (s)")
    ax.set_title(f"{track}: time to target (mean ± std over seeds)")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
