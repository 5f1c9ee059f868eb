"""Everything that reads runs after they are made, or launches many of them: the records table,
statistics, submissions, sweeps, verification, leaderboards, plots and the robustness study.

Nothing here shapes a training step, so none of it is part of a run's harness hash; the
training core is `nanogpt/` and the optimizers are `optimizers/`.
"""
