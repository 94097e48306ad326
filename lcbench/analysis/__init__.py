"""From run records to the paper's tables and plots: `lcbench report runs/X.yaml` writes results/<sweep>/."""
