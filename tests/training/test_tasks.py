"""Task metrics against the libraries that define them (scikit-learn, SciPy) and the losses by hand."""

import math

import pytest
import torch
import torch.nn.functional as F
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import f1_score, matthews_corrcoef
from torch.utils.data import DataLoader, TensorDataset

from lcbench.training.evaluation import evaluate
from lcbench.training.tasks import IGNORE_INDEX, TASKS


class Fixed(torch.nn.Module):
    """Returns the logits stored for each input index (the input is the index)."""

    def __init__(self, outputs: torch.Tensor) -> None:
        super().__init__()
        self.outputs = torch.nn.Parameter(outputs, requires_grad=False)

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.outputs[index]


def _loader(targets: torch.Tensor, batch: int = 7) -> DataLoader:
    return DataLoader(TensorDataset(torch.arange(len(targets)), targets), batch_size=batch)


def test_two_class_metrics_equal_scikit_learns():
    torch.manual_seed(0)
    logits = torch.randn(53, 2)
    targets = torch.randint(0, 2, (53,))
    result = evaluate(Fixed(logits), _loader(targets), torch.device("cpu"), task="classification")
    predicted = logits.argmax(1).numpy()
    assert result["f1"] == pytest.approx(100 * f1_score(targets.numpy(), predicted))
    assert result["mcc"] == pytest.approx(100 * matthews_corrcoef(targets.numpy(), predicted))
    assert result["top1"] == pytest.approx(100 * (predicted == targets.numpy()).mean())
    assert result["loss"] == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)
    three = evaluate(Fixed(torch.randn(53, 3)), _loader(targets), torch.device("cpu"))
    assert "f1" not in three and "mcc" not in three  # (GLUE's F1 and MCC are two-class metrics)


def test_regression_metrics_equal_scipys():
    torch.manual_seed(0)
    predictions = torch.randn(41, 1)
    targets = (predictions[:, 0] + 0.5 * torch.randn(41)).float()
    result = evaluate(Fixed(predictions), _loader(targets), torch.device("cpu"), task="regression")
    assert result["pearson"] == pytest.approx(100 * pearsonr(predictions[:, 0], targets).statistic)
    assert result["spearman"] == pytest.approx(100 * spearmanr(predictions[:, 0], targets).statistic)
    assert result["loss"] == pytest.approx(F.mse_loss(predictions[:, 0], targets).item(), rel=1e-6)
    assert result["samples"] == 41


def test_perplexity_is_the_exponential_of_the_mean_token_loss_over_scored_tokens():
    torch.manual_seed(0)
    logits = torch.randn(9, 5, 11)
    targets = torch.randint(0, 11, (9, 5))
    targets[0, :2] = IGNORE_INDEX  # padding is not scored
    result = evaluate(Fixed(logits), _loader(targets, batch=4), torch.device("cpu"), task="language_modeling")
    scored = targets != IGNORE_INDEX
    losses = F.cross_entropy(logits[scored], targets[scored], reduction="none")
    assert result["tokens"] == int(scored.sum()) == 43 and result["samples"] == 9
    assert result["loss"] == pytest.approx(losses.mean().item(), rel=1e-6)
    assert result["perplexity"] == pytest.approx(math.exp(losses.mean().item()), rel=1e-6)
    right = (logits.argmax(-1) == targets)[scored].float().mean().item()
    assert result["top1"] == pytest.approx(100 * right)


def test_training_losses_and_accuracies_per_task():
    torch.manual_seed(0)
    lm = TASKS["language_modeling"]
    logits, targets = torch.randn(2, 4, 6), torch.randint(0, 6, (2, 4))
    assert lm.loss(logits, targets) == pytest.approx(
        F.cross_entropy(logits.reshape(8, 6), targets.reshape(8))
    )
    per_sample = (logits.argmax(-1) == targets).float().mean(1).sum()
    assert lm.correct(logits, targets) == pytest.approx(per_sample)  # fractions of each sample's tokens
    regression = TASKS["regression"]
    assert regression.correct(torch.zeros(3, 1), torch.zeros(3)) is None and not regression.has_accuracy
    assert regression.loss(torch.ones(3, 1), torch.zeros(3)) == pytest.approx(1.0)
