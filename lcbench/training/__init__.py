"""Training one run: the trainer and its callbacks, optimisers and schedules, tasks (losses and metrics),
evaluation and per-example records, checkpoints, live tuning, DDP, W&B tracking, a run's identity and the
pipeline that executes a run in its folder (`pipeline.execute`). It may import `lcbench.core`,
`lcbench.zoo` and the method plug-ins (`lcbench.methods`, `lcbench.baselines`, which sit in this layer)."""
