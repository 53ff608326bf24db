"""``VqdnaConfig``: the HF configuration of the stage-2/3 encoder (``model_type`` "vqdna")."""

from __future__ import annotations

from transformers import PretrainedConfig


CLASSIFIER_POOLINGS = ("mean", "max", "mean_max")
CLASSIFIER_HEADS = ("mlp", "linear")
CLASSIFIER_NORMS = ("none", "batch")


class VqdnaConfig(PretrainedConfig):
    """A BERT-style encoder over learned DNA codes.

    Input: per position one code per tokenizer level. With ``code_embedding_dim``
    set (VQ/HRQ tokenizers) the embedding of a position is the frozen tokenizer
    embedding (HRQ: eq. 10's mean over levels) projected to ``hidden_size``;
    without it (k-mer/BPE/char baselines) an ordinary learned embedding over
    ``vocab_sizes[0]``. Defaults: BERT-base, 12 x 768 x 12.

    ``classifier_pooling`` is how the sequence classifier reduces the encoder's
    states to one vector: ``mean`` over real positions (the default), ``max``
    (per feature its largest value: a motif anywhere in the sequence shows
    undiluted), or ``mean_max`` (both, concatenated). ``classifier_head`` is
    what maps that vector to logits: ``mlp`` (dense, GELU, dropout, dense: the
    default) or ``linear`` (one dense layer). The MLP's two new layers start at
    ``initializer_range`` (0.02), so their product, the logits' gradient, starts
    near zero: on small data its training loss can sit at ln 2 for epochs.
    ``classifier_norm`` ``batch`` standardises the pooled vector feature by
    feature over the batch (BatchNorm without affine weights, as MAE's linear
    probe) before the head: mean pooling leaves every row near one common
    vector, and what tells rows apart is a small spread around it.
    """

    model_type = "vqdna"

    def __init__(
        self,
        vocab_sizes: list[int] | None = None,
        code_embedding_dim: int | None = None,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.1,
        classifier_dropout: float = 0.1,
        classifier_pooling: str = "mean",
        classifier_head: str = "mlp",
        classifier_norm: str = "none",
        layer_norm_eps: float = 1e-12,
        initializer_range: float = 0.02,
        rope_theta: float = 10000.0,
        tokenizer_name: str | None = None,
        tokenizer_hash: str | None = None,
        tokenizer_type: str | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocab_sizes = list(vocab_sizes or [512])
        self.code_embedding_dim = code_embedding_dim
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.classifier_dropout = classifier_dropout
        self.classifier_pooling = classifier_pooling
        self.classifier_head = classifier_head
        self.classifier_norm = classifier_norm
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.rope_theta = rope_theta
        self.tokenizer_name = tokenizer_name
        self.tokenizer_hash = tokenizer_hash
        self.tokenizer_type = tokenizer_type
        if hidden_size % num_attention_heads:
            raise ValueError(f"hidden_size {hidden_size} is not a multiple of num_attention_heads {num_attention_heads}")
        if classifier_pooling not in CLASSIFIER_POOLINGS:
            raise ValueError(f"classifier_pooling {classifier_pooling!r} is not one of {', '.join(CLASSIFIER_POOLINGS)}")
        if classifier_head not in CLASSIFIER_HEADS:
            raise ValueError(f"classifier_head {classifier_head!r} is not one of {', '.join(CLASSIFIER_HEADS)}")
        if classifier_norm not in CLASSIFIER_NORMS:
            raise ValueError(f"classifier_norm {classifier_norm!r} is not one of {', '.join(CLASSIFIER_NORMS)}")

    def to_dict(self) -> dict:
        """As HF's, less the head's keys where they are the default: encoder folders saved before the
        options existed and after them stay alike (config.json's keys are a pinned stage output)."""
        output = super().to_dict()
        for key, default in (("classifier_pooling", "mean"), ("classifier_head", "mlp"), ("classifier_norm", "none")):
            if output.get(key) == default:
                del output[key]
        return output

    @property
    def num_levels(self) -> int:
        return len(self.vocab_sizes)
