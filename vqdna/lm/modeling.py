"""The VQDNA encoder: a pre-LN BERT over learned DNA codes, with RoPE positions and SDPA attention.

Input ``input_ids`` are codes, (B, L) for one tokenizer level or (B, L, N) for N
levels. The embedding of a position is the frozen tokenizer embedding
Z^ = (1/N) sum_n e_n(M^(n)) (eq. 10; eq. 2 for N = 1) projected to the hidden
size; masked positions get a learned mask vector instead. Positions are RoPE
(rotary) rather than ALiBi: an explicit ALiBi bias would force SDPA off its
flash path and cost B x H x L^2 memory at 32k. Pre-LN (a LayerNorm before each
sub-layer, one at the end) keeps the paper's lr 5e-4 stable.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForSequenceClassification,
    PreTrainedModel,
)
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    SequenceClassifierOutput,
)

from vqdna.lm.configuration import VqdnaConfig


def _levels_last(input_ids: torch.Tensor) -> torch.Tensor:
    """(B, L) or (B, L, N) -> (B, L, N)."""
    return input_ids[..., None] if input_ids.dim() == 2 else input_ids


class VqdnaEmbeddings(nn.Module):
    def __init__(self, config: VqdnaConfig):
        super().__init__()
        self.frozen = config.code_embedding_dim is not None
        if self.frozen:
            # The tokenizer's codebooks, copied in at creation and never trained (stage 2 freezes the vocabulary).
            self.code_embeddings = nn.ModuleList(
                nn.Embedding(size, config.code_embedding_dim) for size in config.vocab_sizes
            )
            for table in self.code_embeddings:
                table.weight.requires_grad_(False)
            self.projection = nn.Linear(config.code_embedding_dim, config.hidden_size)
        else:
            self.code_embeddings = nn.ModuleList([nn.Embedding(config.vocab_sizes[0], config.hidden_size)])
            self.projection = nn.Identity()
        self.mask_embedding = nn.Parameter(torch.zeros(config.hidden_size))
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, masked_positions: torch.Tensor | None = None) -> torch.Tensor:
        codes = _levels_last(input_ids)  # (B, L, N)
        z = torch.stack([table(codes[..., n]) for n, table in enumerate(self.code_embeddings)]).mean(0)  # eq. 10
        x = self.projection(z)  # (B, L, H)
        if masked_positions is not None:
            x = torch.where(masked_positions[..., None], self.mask_embedding.to(x.dtype), x)
        return self.dropout(x)


class RotaryEmbedding(nn.Module):
    """RoPE: rotate query/key channel pairs by position-dependent angles.

    The frequencies are recomputed per call rather than kept in a buffer: HF
    loads models on the meta device, where a non-persistent buffer would be lost.
    """

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim, self.theta = head_dim, theta

    def forward(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = self.theta ** (-torch.arange(0, self.head_dim, 2, device=device, dtype=torch.float32) / self.head_dim)
        angles = torch.outer(torch.arange(length, device=device, dtype=torch.float32), inv_freq)
        angles = torch.cat([angles, angles], dim=-1)  # (L, head_dim)
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    rotated = torch.cat([-second, first], dim=-1)
    return (x.float() * cos + rotated.float() * sin).to(x.dtype)


class VqdnaSelfAttention(nn.Module):
    def __init__(self, config: VqdnaConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.dropout = config.attention_probs_dropout_prob

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], attention_mask: torch.Tensor | None) -> torch.Tensor:
        B, L, H = x.shape
        q, k, v = (proj(x).view(B, L, self.num_heads, self.head_dim).transpose(1, 2) for proj in (self.query, self.key, self.value))
        q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)  # (B, heads, L, head_dim)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attention_mask, dropout_p=self.dropout if self.training else 0.0
        )
        return self.dense(y.transpose(1, 2).reshape(B, L, H))


class VqdnaLayer(GradientCheckpointingLayer):
    def __init__(self, config: VqdnaConfig):
        super().__init__()
        self.attention_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = VqdnaSelfAttention(config)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.intermediate = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = ACT2FN[config.hidden_act]
        self.output = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, rotary: tuple[torch.Tensor, torch.Tensor], attention_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.dropout(self.attention(self.attention_norm(x), rotary, attention_mask))
        x = x + self.dropout(self.output(self.act(self.intermediate(self.mlp_norm(x)))))
        return x


class VqdnaPreTrainedModel(PreTrainedModel):
    config_class = VqdnaConfig
    base_model_prefix = "vqdna"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["VqdnaLayer"]

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # transformers materializes loaded weights as new Parameters that require grad: re-freeze the codebooks.
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded
        for module in model.modules():
            if isinstance(module, VqdnaEmbeddings) and module.frozen:
                module.code_embeddings.requires_grad_(False)
        return loaded

    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if isinstance(module, VqdnaEmbeddings):
            with torch.no_grad():
                module.mask_embedding.normal_(0.0, self.config.initializer_range)


class VqdnaModel(VqdnaPreTrainedModel):
    def __init__(self, config: VqdnaConfig):
        super().__init__(config)
        self.embeddings = VqdnaEmbeddings(config)
        self.rotary = RotaryEmbedding(config.hidden_size // config.num_attention_heads, config.rope_theta)
        self.layers = nn.ModuleList(VqdnaLayer(config) for _ in range(config.num_hidden_layers))
        self.final_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.gradient_checkpointing = False
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.embeddings.code_embeddings[0]

    def set_code_embeddings(self, tables: list[torch.Tensor]) -> None:
        """Copy the tokenizer's codebooks (one (K_n, D) table per level) into the frozen input embedding."""
        for table, weight in zip(self.embeddings.code_embeddings, tables, strict=True):
            table.weight.data.copy_(weight)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        masked_positions: torch.Tensor | None = None,
        output_hidden_states: bool = False,
        return_dict: bool = True,
        **kwargs,
    ) -> BaseModelOutput:
        x = self.embeddings(input_ids, masked_positions)  # (B, L, H)
        rotary = self.rotary(x.shape[1], x.device)
        # SDPA boolean mask: True = attend. None when nothing is padded keeps the fastest kernels. Compiled, the
        # mask is used as given (checking it on the device would break the graph): callers pass None when unpadded.
        sdpa_mask = None
        if attention_mask is not None and (torch.compiler.is_compiling() or not bool(attention_mask.all())):
            sdpa_mask = attention_mask.bool()[:, None, None, :]
        hidden_states = [x] if output_hidden_states else None
        for layer in self.layers:
            x = layer(x, rotary, sdpa_mask)
            if hidden_states is not None:
                hidden_states.append(x)
        x = self.final_norm(x)
        return BaseModelOutput(last_hidden_state=x, hidden_states=tuple(hidden_states) if hidden_states else None)


class VqdnaLMHead(nn.Module):
    """Predicts one level's code at each position."""

    def __init__(self, config: VqdnaConfig, vocab_size: int):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = ACT2FN[config.hidden_act]
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.decoder = nn.Linear(config.hidden_size, vocab_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.act(self.dense(x))))


@dataclass
class VqdnaMaskedLMOutput(MaskedLMOutput):
    level_logits: tuple[torch.Tensor, ...] | None = None  # one (B, L, K_n) per level


class VqdnaForMaskedLM(VqdnaPreTrainedModel):
    """Masked modelling of codes: one head per tokenizer level; the loss is the mean over levels."""

    def __init__(self, config: VqdnaConfig):
        super().__init__(config)
        self.vqdna = VqdnaModel(config)
        self.heads = nn.ModuleList(VqdnaLMHead(config, size) for size in config.vocab_sizes)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        masked_positions: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool = True,
        **kwargs,
    ) -> VqdnaMaskedLMOutput:
        """``labels``: codes like ``input_ids``, -100 where no prediction is scored."""
        x = self.vqdna(input_ids, attention_mask=attention_mask, masked_positions=masked_positions).last_hidden_state
        logits = tuple(head(x) for head in self.heads)
        loss = None
        if labels is not None:
            labels = _levels_last(labels)
            loss = torch.stack(
                [F.cross_entropy(l.float().flatten(0, 1), labels[..., n].flatten(), ignore_index=-100) for n, l in enumerate(logits)]
            ).mean()
        return VqdnaMaskedLMOutput(loss=loss, logits=logits[0], level_logits=logits)


class BatchStandardisation(nn.BatchNorm1d):
    """Each feature standardised over the batch, no affine weights (MAE's linear probe); running statistics at eval.

    A training batch of one row has no spread to standardise by (BatchNorm1d
    refuses it): it is standardised by the running statistics instead.
    """

    def __init__(self, num_features: int):
        super().__init__(num_features, affine=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, training=False, eps=self.eps)
        return super().forward(x)


class VqdnaForSequenceClassification(VqdnaPreTrainedModel):
    """Pooled encoder states (``config.classifier_pooling``: mean, max or both), standardised or not
    (``config.classifier_norm``) -> head (``config.classifier_head``: MLP or linear).

    ``num_labels == 1`` (or problem_type "regression") regresses.
    """

    def __init__(self, config: VqdnaConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.vqdna = VqdnaModel(config)
        pooled_size = config.hidden_size * (2 if config.classifier_pooling == "mean_max" else 1)
        norm = [BatchStandardisation(pooled_size)] if config.classifier_norm == "batch" else []
        if config.classifier_head == "linear":
            head = [nn.Dropout(config.classifier_dropout), nn.Linear(pooled_size, config.num_labels)]
        else:
            head = [
                nn.Linear(pooled_size, config.hidden_size),
                nn.GELU(),
                nn.Dropout(config.classifier_dropout),
                nn.Linear(config.hidden_size, config.num_labels),
            ]
        self.classifier = nn.Sequential(*norm, *head)
        self.post_init()

    @property
    def is_regression(self) -> bool:
        return self.config.problem_type == "regression" or self.num_labels == 1

    def pool(self, x: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, L, H) states -> (B, H), or (B, 2H) for mean_max; padding never counts."""
        pooling = self.config.classifier_pooling
        pooled = []
        if pooling in ("mean", "mean_max"):
            if attention_mask is None:
                pooled.append(x.mean(1))
            else:
                weights = attention_mask.to(x.dtype)[..., None]
                pooled.append((x * weights).sum(1) / weights.sum(1).clamp_min(1))
        if pooling in ("max", "mean_max"):
            if attention_mask is not None:
                x = x.masked_fill(~attention_mask.bool()[..., None], torch.finfo(x.dtype).min)
            pooled.append(x.amax(1))
        return torch.cat(pooled, -1) if len(pooled) > 1 else pooled[0]

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        return_dict: bool = True,
        **kwargs,
    ) -> SequenceClassifierOutput:
        x = self.vqdna(input_ids, attention_mask=attention_mask).last_hidden_state  # (B, L, H)
        logits = self.classifier(self.pool(x, attention_mask))
        loss = None
        if labels is not None:
            if self.is_regression:
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
            else:
                loss = F.cross_entropy(logits.float(), labels.long())
        return SequenceClassifierOutput(loss=loss, logits=logits)


AutoConfig.register("vqdna", VqdnaConfig, exist_ok=True)
AutoModel.register(VqdnaConfig, VqdnaModel, exist_ok=True)
AutoModelForMaskedLM.register(VqdnaConfig, VqdnaForMaskedLM, exist_ok=True)
AutoModelForSequenceClassification.register(VqdnaConfig, VqdnaForSequenceClassification, exist_ok=True)
