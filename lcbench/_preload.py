"""Imported once by the local queue's fork server, so each worker starts with everything loaded.

Nothing here touches CUDA or starts threads: a process forked from this state is safe and initialises its
own device.
"""

import sklearn.datasets  # noqa: F401 - the digits loader
import timm  # noqa: F401
import torch._dynamo  # noqa: F401 - imported lazily by the first optimizer otherwise (about a second)

from . import cli  # noqa: F401 - fixed for the queue's lifetime
from .execution import queue_worker  # noqa: F401
from .methods import METHODS
from .training import pipeline  # noqa: F401

METHODS.names()  # discovers (imports) every method once, before the fork server forks runs
