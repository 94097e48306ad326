"""`finetune`: the control. The same epochs of plain fine-tuning with no compression, so that a method that
"beats the baseline" after extra epochs is compared with those epochs spent on the uncompressed model."""

from . import METHODS
from .base import Method


@METHODS.register("finetune")
class Finetune(Method):
    """Every hook is the identity: train the original model as it is."""

    title = "Fine-tune"
    summary = "the control, the same epochs with no compression"
    search_source = "no hyperparameter of its own (the uncompressed control)"
