"""User-facing errors: each names the problem and the fix; the CLI prints them without a traceback."""


class LcbenchError(Exception):
    """An error caused by input the user can fix (config, data, checkpoint, paths)."""


class ConfigError(LcbenchError):
    """A config key, value or type is wrong."""


class RedundantRun(ConfigError):
    """A run that would repeat another variant's run exactly (KD init=teacher with nothing to copy): a sweep
    leaves it out of its plan and says why; a single run is refused."""


class DataError(LcbenchError):
    """A data set is missing or malformed."""


class CheckpointError(LcbenchError):
    """A checkpoint is missing, corrupt or of another architecture."""


class TrainingDiverged(LcbenchError):
    """The loss became NaN or infinite."""


class RunLockedError(LcbenchError):
    """Another process is executing the same run."""


class DependencyError(LcbenchError):
    """A run needs another run (its pretrain) that has not completed."""


class RankLost(LcbenchError):
    """Another rank of this DDP run ended (killed, crashed, out of memory): this one cannot go on."""


class RunStopped(Exception):  # noqa: N818 - a requested outcome, not an error
    """A run was asked to stop (`lcbench tune RUN --trigger stop`); it saved a resumable checkpoint."""


def first_line(error: BaseException, limit: int = 160) -> str:
    """An error's first line, shortened (state-dict and unpickling errors run over many lines)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
