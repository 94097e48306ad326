"""Running many runs: sweep specs and their plans, submissions, the local queue (its supervisor and warm
workers), SLURM through submitit, status, cancel, and the GPU rehearsal of a recipe. It may import the
layers below (`core`, `zoo`, `training`)."""
