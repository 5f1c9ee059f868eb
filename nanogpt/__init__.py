"""The training core: everything that runs a training step and records it.

tracks (the frozen workloads), model, data and tokenizer, the optimizer contract (optim), the
learning-rate schedule, clocks, torch.distributed plumbing, the step loop (train), the run log
and the row a run appends to the records table. This package, run.py and the shared optimizer
pieces make up a run's harness hash; code that only reads runs afterwards lives in `analysis/`.
"""
