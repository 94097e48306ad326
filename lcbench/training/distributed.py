"""One run on several processes with torch.distributed (DDP): the ranks, their process group, and the few
collectives the trainer and the evaluation need.

A run with `nproc=N` (and `nodes=M`) is started as N x M processes with torchrun's environment (`RANK`,
`WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`): by torchrun for `lcbench run`, by the local
queue (ranks forked with that environment), by SLURM tasks through submitit's `TorchDistributedEnvironment`
on a cluster. NCCL on GPUs,
gloo on the CPU. Rank 0 writes the run's records, checkpoints and W&B run; every rank trains and evaluates
its share. A single-process run never touches any of this (`current()` is rank 0 of 1).
"""

from __future__ import annotations

import datetime
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..core.config import RunConfig
from ..core.errors import ConfigError, RankLost, first_line

RANK_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """This process's place in its run: rank of size, and its rank on its node (which GPU it takes)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes the run's records (rank 0)."""
        return self.rank == 0


def current() -> World:
    """The initialised process group's world, or a single process."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return World()


def launched_as_rank() -> bool:
    """Whether this process was started as one rank of a multi-process run (torchrun's environment)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def env_main() -> bool:
    """Whether this process is rank 0 by its environment (also before and after the process group)."""
    return int(os.environ.get("RANK", "0")) == 0


def torchrun(cfg: RunConfig, target: list[str]) -> int:
    """Run a DDP run's ranks here through torchrun's launcher (`--standalone`: a free port; every rank
    stopped when one fails) and return the run's exit code. A rank that failed is named in one line (which
    rank, how it ended, that the same command resumes) in place of torchrun's report; a multi-node run is
    SLURM's to start (torchrun would have to be started on every node)."""
    if cfg.nodes > 1:
        raise ConfigError(
            f"nodes={cfg.nodes}: a multi-node run is started by SLURM (`lcbench launch SPEC --executor "
            "slurm`), one task per process; on one machine use nodes=1"
        )
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    os.environ.setdefault("OMP_NUM_THREADS", str(max(cfg.threads, 1)))  # (each rank sets its own threads)
    os.environ[LAUNCHER_PID] = str(os.getpid())  # (each rank dies with this process: `die_with_launcher`)
    args = parse_args(["--standalone", f"--nproc-per-node={cfg.nproc}", *target])
    _quiet_torchrun_logs()
    try:
        run(args)
    except ChildFailedError as e:
        return _report_failed_rank(e, cfg.nproc)
    except SignalException as e:  # Ctrl-C or a scheduler's SIGTERM: torchrun has stopped the ranks
        print("lcbench: interrupted", file=sys.stderr)
        return 128 + int(e.sigval)
    return 0


LAUNCHER_PID = "LCBENCH_LAUNCHER_PID"
PR_SET_PDEATHSIG = 1  # prctl(2)


def die_with_launcher() -> None:
    """In a rank `torchrun` started: ask Linux for SIGTERM when the launcher dies (a SIGKILLed `lcbench run
    nproc=N` left its ranks training on as orphans, holding the run's lock), and end now when it already
    has. Elsewhere, or for ranks another launcher started (SLURM, the local queue), nothing."""
    launcher = os.environ.get(LAUNCHER_PID, "")
    if not launcher.isdigit() or not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        return  # (not allowed here: torchrun's own cleanup remains)
    if os.getppid() != int(launcher):  # it died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _quiet_torchrun_logs() -> None:
    """torchrun's agent logs each rank it stops and each failure over several lines: the ranks' own
    errors and `_report_failed_rank`'s line say it once."""
    import logging

    for name in list(logging.root.manager.loggerDict):
        if name.startswith(
            ("torch.distributed.elastic", "torch.distributed.launcher", "torch.distributed.run")
        ):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def _report_failed_rank(error, nproc: int) -> int:
    """The rank whose end stopped the run, in one line (the others were stopped by torchrun, or ended
    with `RankLost` on noticing), and the run's exit code (128 + signal for a killed rank, as a shell)."""
    from ..core.exits import EXIT_USER, first_failed_rank, how_it_ended

    rank, _ = first_failed_rank({r: f.exitcode for r, f in error.failures.items()})
    failure = error.failures[rank]
    if failure.exitcode == EXIT_USER:  # an error each rank has printed in one line already
        return EXIT_USER
    print(
        f"lcbench: rank {rank} of {nproc} (pid {failure.pid}) {how_it_ended(failure.exitcode)}, which "
        "stopped the other rank(s). The run's last checkpoint is kept: the same command resumes it",
        file=sys.stderr,
    )
    return 128 - failure.exitcode if failure.exitcode < 0 else failure.exitcode


def init(processes: int, device: torch.device, timeout_min: float = 30.0) -> World:
    """Join the run's process group (torchrun's environment must say `processes` ranks) and return the
    world; on CUDA, this rank's device is its LOCAL_RANK (of the GPUs visible to it)."""
    missing = [v for v in RANK_VARIABLES if v not in os.environ]
    if missing:
        raise ConfigError(
            f"this run has {processes} processes (nproc x nodes) but was started as one: "
            f"{', '.join(missing)} not set. Start it with `lcbench run` (which runs torchrun), "
            "`torchrun --nproc-per-node N -m lcbench run ...`, the local queue or SLURM"
        )
    size = int(os.environ["WORLD_SIZE"])
    if size != processes:
        raise ConfigError(
            f"WORLD_SIZE={size} but the run's config asks for nproc x nodes = {processes} processes; "
            "start as many ranks as the config says"
        )
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]) % torch.cuda.device_count())
    dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_min))
    return current()


@contextmanager
def joined(processes: int, device: torch.device) -> Iterator[World]:
    """This process in its run's process group for the duration (nothing to join for one process, or
    when an outer run has joined already: a compress run executing its missing pretrain)."""
    if processes == 1 or current().size > 1:
        yield current()
        return
    world = init(processes, device)
    try:
        yield world
    finally:
        shutdown()


# How a collective fails when another rank has gone (gloo raises plain RuntimeErrors; NCCL DistErrors)
PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "remote worker crash", "Broken pipe")


@contextmanager
def naming_a_lost_rank() -> Iterator[None]:
    """A collective that failed because another rank of this run ended (killed, crashed, out of memory)
    becomes `RankLost`: one line that says so and that the same command resumes, not gloo's traceback
    and an internal error."""
    try:
        yield
    except RuntimeError as e:
        world = current()
        gone = isinstance(e, dist.DistError) or any(m in str(e) for m in PEER_GONE)
        if world.size == 1 or not gone:
            raise
        # gloo's first sentence, without its "[.../pair.cc:561] " source tag
        detail = re.sub(r"^\[[^\]]*\]\s*", "", first_line(e, limit=400)).split(". ")[0]
        raise RankLost(
            f"rank {world.rank} of {world.size} lost the run's other rank(s) ({detail}): one ended (killed, "
            "crashed or out of memory; the launcher or its log says which), so this one stops too. The last "
            "checkpoint is kept: the same command resumes the run"
        ) from e


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def rank_device(device: torch.device) -> torch.device:
    """This rank's device: its own GPU (LOCAL_RANK) on CUDA, the CPU otherwise."""
    if device.type == "cuda" and current().size > 1:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def all_reduce_sum(values: list[float], device: torch.device) -> list[float]:
    """`values` summed over the ranks (float64: counts and loss sums stay exact to the last sample)."""
    if current().size == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def all_true(flag: bool, device: torch.device) -> bool:
    """Whether `flag` holds on every rank (so all ranks take the same branch)."""
    if current().size == 1:
        return flag
    tensor = torch.tensor([0 if flag else 1], dtype=torch.int32, device=device)
    dist.all_reduce(tensor)
    return int(tensor.item()) == 0


def broadcast(obj: object) -> object:
    """Rank 0's `obj` on every rank (a picklable object: a request read from the control folder)."""
    if current().size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: object) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    world = current()
    if world.size == 1:
        return [obj]
    out: list = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def sync_buffers(model: torch.nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank: each rank updated its own copy with
    its share of the last batch, which DDP broadcasts only at the next forward."""
    for buffer in model.buffers():
        dist.broadcast(buffer, src=0)


def barrier() -> None:
    if current().size > 1:
        dist.barrier()
