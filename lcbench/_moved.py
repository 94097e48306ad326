"""The import paths of lcbench 0.1's flat modules (`lcbench.models`, `lcbench.pipeline`, ...), now in the
layered subpackages: each old path still imports the module from its new place, with a DeprecationWarning,
for one release (lcbench 0.2 removes them). No file stands at the old place: a finder on `sys.meta_path`
answers for exactly these names."""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

LAYERS = {
    "core": "errors fields registry extras bundled config store record exits durations",
    "zoo": "data fashion_data text_data fingerprint device_decode loaders models text_models hf_folded "
    "architecture residual collapse measure",
    "training": "distributed tasks evaluation examples optim slopes checkpoint control callbacks train "
    "tracking cost rng provenance resolve pipeline replay postcollapse job",
    "execution": "sweep submissions executors local_queue queue_server queue_worker slurm slurm_job status "
    "runner rehearsal",
    "measurement": "latency export bench",
}
MOVED = {f"lcbench.{m}": f"lcbench.{layer}.{m}" for layer, names in LAYERS.items() for m in names.split()}


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path, target=None):
        return importlib.util.spec_from_loader(fullname, self) if fullname in MOVED else None

    def create_module(self, spec):
        return None  # a placeholder module; exec_module puts the real one in its place

    def exec_module(self, module) -> None:
        new = MOVED[module.__name__]
        warnings.warn(
            f"{module.__name__} moved to {new}; the old path goes in lcbench 0.2",
            DeprecationWarning,
            stacklevel=2,
        )
        sys.modules[module.__name__] = importlib.import_module(new)


def install() -> None:
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
