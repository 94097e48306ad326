"""lcbench: LayerCollapse against knowledge distillation, layer fusion, pruning, low-rank factorisation and
the closest prior art.

The package is layered by concern; each layer imports only from the ones before it:
`core` (configuration and records) -> `zoo` (data sets and models) -> `training` (one run; the method
plug-ins `methods` and `baselines` belong here) -> `execution` (sweeps, the local queue, SLURM) ->
`measurement` (latency, export, benchmarks) -> `analysis` (reports) -> `cli`.
"""

from ._moved import install

__version__ = "0.1.0"

install()  # lcbench 0.1's flat import paths (lcbench.models, ...) keep working for one release
