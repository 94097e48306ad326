"""Read W&B's offline transaction log (`run-<id>.wandb`) with wandb's own protobuf definitions.

wandb >= 0.2x keeps no Python reader of its log, so the tests parse it here: a 7-byte header (':W&B',
magic, version), then LevelDB log framing (32 KiB blocks; each chunk: crc32, length, type) around
serialized `wandb_internal_pb2.Record` messages.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32768
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path: str | Path) -> list:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B log"
    out, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < HEADER:  # block trailer padding
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            out.append(record)
            pending = b""
    return out


def run_info(path: str | Path) -> dict:
    """The run record's id, name, group, job_type, tags; every history row; the final summary."""
    info: dict = {"history": [], "summary": {}}
    logged = records(path)
    kinds = [record.WhichOneof("record_type") for record in logged]
    assert "run" in kinds, f"no run record in {path} ({Path(path).stat().st_size} bytes; records: {kinds})"
    for record, kind in zip(logged, kinds):
        if kind == "run":
            run = record.run
            info.update(
                id=run.run_id,
                name=run.display_name,
                group=run.run_group,
                job_type=run.job_type,
                tags=list(run.tags),
            )
            info["config"] = {item.key: json.loads(item.value_json) for item in run.config.update}
        elif kind == "history":
            info["history"].append({_key(item): json.loads(item.value_json) for item in record.history.item})
        elif kind == "summary":
            info["summary"].update(
                {_key(item): json.loads(item.value_json) for item in record.summary.update}
            )
    return info


def _key(item) -> str:
    return item.key or "/".join(item.nested_key)
