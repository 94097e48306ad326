"""Per-example outcomes of a run's evaluations (`examples.npz` in its folder): what the verdicts resample.

One group of arrays per evaluation: `final` (the run's final model), `original` (the model it started
from: a compress run copies its pretrain run's `final`, so its folder holds every model it is compared
with) and a method's own (LayerCollapse: `prefold`). Arrays are in held-out order, as `tasks` makes them.
The file's bytes depend on its arrays only (fixed zip dates, sorted names), so its SHA-256, recorded in
result.json, is the same wherever the same numbers are computed.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np

from ..core.errors import CheckpointError
from ..core.integrity import describe_file, read_verified
from ..core.store import atomic_write_bytes

FILE = "examples.npz"
EPOCH = (1980, 1, 1, 0, 0, 0)  # every member's date: the bytes depend on the arrays only

Outcomes = dict[str, np.ndarray]


def to_bytes(groups: dict[str, Outcomes]) -> bytes:
    """The npz bytes of `{evaluation: {name: array}}` (members `evaluation.name.npy`)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for group in sorted(groups):
            for name in sorted(groups[group]):
                array = io.BytesIO()
                np.lib.format.write_array(
                    array, np.ascontiguousarray(groups[group][name]), allow_pickle=False
                )
                member = zipfile.ZipInfo(f"{group}.{name}.npy", date_time=EPOCH)
                member.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(member, array.getvalue())
    return buffer.getvalue()


def write(run_path: Path, groups: dict[str, Outcomes]) -> dict:
    """Write `examples.npz` atomically; returns what result.json records of it."""
    data = to_bytes(groups)
    path = Path(run_path) / FILE
    atomic_write_bytes(path, data)
    return {
        "file": FILE,
        **describe_file(path, data),
        "evaluations": sorted(groups),
        "samples": {group: len(next(iter(arrays.values()))) for group, arrays in groups.items() if arrays},
    }


def read(run_path: Path, expected: dict | None = None) -> dict[str, Outcomes]:
    """The groups of a run's `examples.npz`, checked against its record's SHA-256 when given (a link is
    never followed: the file must be the run's own)."""
    path = Path(run_path) / FILE
    if not expected and not path.exists():
        raise CheckpointError(f"{path} does not exist: the run predates per-example records")
    data = read_verified(path, expected, "per-example records")
    groups: dict[str, Outcomes] = {}
    with np.load(io.BytesIO(data), allow_pickle=False) as archive:
        for key in archive.files:
            group, name = key.split(".", 1)
            groups.setdefault(group, {})[name] = archive[key]
    return groups
