"""transformers classes for GPT-2 and BERT models whose feed-forward blocks LayerCollapse folded.

A folded block is one Linear (hidden -> hidden): the block's two Linears with the activation taken as the
identity. A stock GPT-2 or BERT cannot hold it (`n_inner` / `intermediate_size` and the activation are the
same for every layer), so `lcbench export --format hf` saves these classes beside the weights and the
folder loads with `AutoModel*.from_pretrained(folder, trust_remote_code=True)`. This file is copied into
that folder as it is: it imports only torch and transformers.
"""

from __future__ import annotations

from torch import nn
from transformers import BertConfig, BertForSequenceClassification, GPT2Config, GPT2LMHeadModel


class FoldedGPT2Config(GPT2Config):
    """GPT-2's configuration plus the layers whose MLP is folded."""

    model_type = "lcbench_folded_gpt2"

    def __init__(self, folded_layers: list[int] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.folded_layers = list(folded_layers or [])


class FoldedMLP(nn.Module):
    """A GPT-2 MLP after the fold: x -> dropout(c_fc(x)), c_fc an nn.Linear (hidden -> hidden)."""

    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.c_fc = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)

    def forward(self, hidden_states, *args, **kwargs):
        return self.dropout(self.c_fc(hidden_states))


class FoldedGPT2LMHeadModel(GPT2LMHeadModel):
    """GPT-2 with the MLPs of `config.folded_layers` folded."""

    config_class = FoldedGPT2Config

    def __init__(self, config: FoldedGPT2Config) -> None:
        super().__init__(config)
        for i in config.folded_layers:
            self.transformer.h[i].mlp = FoldedMLP(config.n_embd, config.resid_pdrop)


class FoldedBertConfig(BertConfig):
    """BERT's configuration plus the layers whose feed-forward block is folded."""

    model_type = "lcbench_folded_bert"

    def __init__(self, folded_layers: list[int] | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.folded_layers = list(folded_layers or [])


class FoldedBertForSequenceClassification(BertForSequenceClassification):
    """BERT with the feed-forward blocks of `config.folded_layers` folded: `intermediate.dense` is the
    folded Linear (hidden -> hidden), its activation and `output.dense` are identities (the dropout, the
    residual and the LayerNorm of `output` stay)."""

    config_class = FoldedBertConfig

    def __init__(self, config: FoldedBertConfig) -> None:
        super().__init__(config)
        for i in config.folded_layers:
            layer = self.bert.encoder.layer[i]
            layer.intermediate.dense = nn.Linear(config.hidden_size, config.hidden_size)
            layer.intermediate.intermediate_act_fn = nn.Identity()
            layer.output.dense = nn.Identity()
