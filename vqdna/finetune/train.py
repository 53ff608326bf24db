"""Stage 3: fine-tuning of a pretrained encoder on one dataset and seed, with LoRA (the paper) or in full.

Frozen tokenizer -> codes; pretrained encoder with LoRA adapters (peft), or
every encoder weight trained (``mode: full``: the fair setting for a randomly
initialised control, whose frozen random weights LoRA could not fix), and an
MLP head on pooled states (``pooling``: mean by default, max or mean_max);
AdamW with linear warm-up and decay; the dev split is scored after every epoch
and the best epoch's adapters and head are kept; the test split is scored
once, at the end, with that best state.

Why our own loop, not HF ``Trainer`` or ``accelerate``: the loop in
:func:`train_epochs` is some 20 lines, and PEFT's LoRA model trains the same
under either. ``Trainer`` would bring its own conventions where ours differ:
checkpoints written in place into ``output_dir`` (ours: the run folder appears
whole or not at all, through ``atomic_dir``), its own log history and
best-model reload (ours: metrics.json, the best epoch kept in memory), and
collators for token-id dicts (our inputs are per-level code arrays, padded by
``pad_codes``). ``accelerate`` would add nothing on one device: bf16 is one
``torch.autocast``. And the three training loops (tokenizer, pretraining,
fine-tuning) share one optimizer step, one loss log and one NaN guard
(:mod:`vqdna.runtime`), which a Trainer for one of them would not.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from tqdm import tqdm
from transformers import get_linear_schedule_with_warmup

from vqdna import VqdnaError
from vqdna.artifacts import atomic_dir, parquet_writer, with_metadata, write_json
from vqdna.batching import evaluation_batches, padding_fraction, token_lengths, training_batches
from vqdna.dataset_tokens import dataset_codes
from vqdna.datasets.spec import DatasetSpec
from vqdna.lm.configuration import CLASSIFIER_HEADS, CLASSIFIER_NORMS, CLASSIFIER_POOLINGS
from vqdna.lm.modeling import VqdnaForSequenceClassification
from vqdna.metrics import classification_metrics, regression_metrics
from vqdna.runtime import (
    RunningLoss,
    check_finite_loss,
    check_tokenizer_hash,
    choose_device,
    optimizer_step,
    pad_codes,
)
from vqdna.tokenizer.api import Tokenizer, VQTokenizer, load_tokenizer

log = logging.getLogger(__name__)

FINETUNE_MODES = ("lora", "full")


@dataclass
class LoraSettings:
    """LoRA hyper-parameters (not published by the paper): rank 8, alpha 16, on every linear layer of the encoder.

    ``dense`` is the attention output projection; ``intermediate`` and ``output`` the MLP.
    """

    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: list[str] = field(default_factory=lambda: ["query", "key", "value", "dense", "intermediate", "output"])


@dataclass
class FinetuneSettings:
    """The ``finetune:`` block of the config, less ``runs`` and ``seeds`` (the workflow expands those)."""

    # lora: adapters on a frozen encoder (the paper); full: every weight but the
    # tokenizer's codebooks is trained. Saved as adapter/ or model/ in the run folder.
    mode: str = "lora"
    learning_rate: float | None = None  # None: the dataset's (datasets sheet); a run fine-tuned in full may need its own
    lora: LoraSettings = field(default_factory=LoraSettings)
    weight_decay: float = 0.01
    gradient_checkpointing: bool = False
    # None keeps the pretrained encoder's (0.1 for BERT-base). 0 lets SDPA use its fused
    # kernel on CPU, which has no dropout: the math kernel it otherwise falls back to
    # holds batch x heads x L x L scores (CPU, 8k nt: 14.6 GB at 0.1; 32k fits only at 0).
    attention_dropout: float | None = None
    # None keeps the pretrained encoder's (0.1). On CPU its Bernoulli draws were a fifth of
    # a small encoder's step (profiled: 32 x 101 nt, 4 x 128): small models may do without.
    hidden_dropout: float | None = None
    eval_batch_size: int = 128
    # How the head reduces the encoder's states (``VqdnaConfig.classifier_pooling``): mean (the
    # default, as before), max or mean_max. Not published by the paper; config/README.md has the dev evidence.
    pooling: str = "mean"
    # What maps the pooled vector to logits (``VqdnaConfig.classifier_head``): mlp (the default, as
    # before) or linear. config/README.md has the dev evidence.
    head: str = "mlp"
    # none (the default, as before) or batch: the pooled vector standardised over the batch before the
    # head (``VqdnaConfig.classifier_norm``). config/README.md has the dev evidence.
    head_norm: str = "none"

    @classmethod
    def from_settings(cls, settings: dict) -> "FinetuneSettings":
        settings = {k: v for k, v in settings.items() if k not in ("runs", "seeds")}
        lora = LoraSettings(**settings.pop("lora", {}))
        options = cls(lora=lora, **settings)
        if options.mode not in FINETUNE_MODES:
            raise VqdnaError(f"finetune.mode: {options.mode!r} is not one of {', '.join(FINETUNE_MODES)}")
        if options.pooling not in CLASSIFIER_POOLINGS:
            raise VqdnaError(f"finetune.pooling: {options.pooling!r} is not one of {', '.join(CLASSIFIER_POOLINGS)}")
        if options.head not in CLASSIFIER_HEADS:
            raise VqdnaError(f"finetune.head: {options.head!r} is not one of {', '.join(CLASSIFIER_HEADS)}")
        if options.head_norm not in CLASSIFIER_NORMS:
            raise VqdnaError(f"finetune.head_norm: {options.head_norm!r} is not one of {', '.join(CLASSIFIER_NORMS)}")
        return options

    def learning_rate_of(self, spec: DatasetSpec) -> float:
        """The run's own learning rate where it sets one, else the dataset's."""
        return self.learning_rate or spec.learning_rate


def weights_fingerprint(named_tensors: dict[str, torch.Tensor], prefix: str = "vqdna.") -> str:
    """sha256 over the encoder's tensors (names under ``prefix``), in name order.

    peft's wrapping is undone in the names (``base_model.model.`` and
    ``.base_layer``) and LoRA tensors are left out, so a fine-tuned model's
    frozen base hashes equal to the pretrained model it was loaded from.
    """
    digest = hashlib.sha256()
    cleaned = {}
    for name, tensor in named_tensors.items():
        name = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
        if name.startswith(prefix) and "lora_" not in name and "modules_to_save" not in name:
            cleaned[name] = tensor
    for name in sorted(cleaned):
        digest.update(name.encode())
        digest.update(cleaned[name].detach().cpu().float().contiguous().numpy().tobytes())
    return digest.hexdigest()


def enable_gradient_checkpointing(model: torch.nn.Module) -> None:
    """Recompute each encoder layer in the backward pass (non-reentrant: works with frozen inputs and LoRA).

    transformers 5.2x renamed the switch ``activation_checkpointing_enable`` and
    deprecated the old name for removal in v6; earlier 5.x releases (5.17 on
    the GPU images we test) know only ``gradient_checkpointing_enable``.
    """
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


@torch.no_grad()
def predict_logits(model: torch.nn.Module, codes: list[np.ndarray], batch_size: int, device: torch.device) -> np.ndarray:
    """Logits of every row, in row order; rows are batched longest first so batches pad little."""
    model.eval()
    out: np.ndarray | None = None
    for rows in evaluation_batches(token_lengths(codes), batch_size):
        input_ids, attention = pad_codes([codes[r] for r in rows], device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(input_ids=input_ids, attention_mask=attention).logits.float().cpu().numpy()
        if out is None:
            out = np.empty((len(codes), logits.shape[1]), dtype=np.float32)
        out[rows] = logits
    return out if out is not None else np.empty((0, 0), dtype=np.float32)


def score(spec: DatasetSpec, logits: np.ndarray, labels: np.ndarray) -> tuple[dict[str, float], np.ndarray]:
    if spec.task == "regression":
        predictions = logits[:, 0]
        return regression_metrics(labels, predictions), predictions
    predictions = logits.argmax(-1)
    return classification_metrics(labels, predictions), predictions


def _check_targets(model: torch.nn.Module, targets: list[str]) -> None:
    names = [name for name, _ in model.named_modules()]
    missing = [t for t in targets if not any(re.search(rf"(^|\.){re.escape(t)}$", n) for n in names)]
    if missing:
        raise VqdnaError(
            f"finetune.lora.target_modules: {', '.join(missing)} not found in the encoder; "
            "its linear layers are query, key, value, dense, intermediate, output"
        )


def model_size(model: torch.nn.Module, tokenizer: Tokenizer, test_codes: list[np.ndarray]) -> dict:
    """Parameters of the encoder (less LoRA and head) and of the tokenizer; forward GFLOPs of a mean test input.

    FLOPs: 2 per weight and token for the matmuls, plus 4 * layers * T^2 * hidden
    for attention scores and their weighted sum (T = mean test tokens); the
    paper does not define its FLOPs column, so Table 2 states this one.
    """
    encoder = sum(p.numel() for n, p in model.named_parameters() if ".vqdna." in f".{n}" and "lora_" not in n)
    tokens = float(np.mean([c.shape[1] for c in test_codes])) if test_codes else 0.0
    config = model.config
    flops = 2 * encoder * tokens + 4 * config.num_hidden_layers * tokens**2 * config.hidden_size
    return {
        "encoder_parameters": encoder,
        "tokenizer_parameters": sum(p.numel() for p in tokenizer.model.parameters()) if isinstance(tokenizer, VQTokenizer) else 0,
        "mean_test_tokens": round(tokens, 2),
        "forward_gflops": round(flops / 1e9, 4),
    }


@dataclass
class Split:
    """One split of a dataset: per row its label and its codes (levels, tokens)."""

    labels: np.ndarray
    codes: list[np.ndarray]


def load_model(
    spec: DatasetSpec, options: FinetuneSettings, pretrained_dir: str | Path, tokenizer_dir: str | Path, device: torch.device
) -> tuple[PeftModel | VqdnaForSequenceClassification, Tokenizer]:
    """The pretrained encoder with a new head (and LoRA adapters) on ``device``, and the tokenizer it was pretrained on."""
    if not (Path(pretrained_dir) / "config.json").is_file():
        raise VqdnaError(f"{pretrained_dir}: not a pretrained model folder (config.json missing)")
    overrides = {
        key: value
        for key, value in (("attention_probs_dropout_prob", options.attention_dropout), ("hidden_dropout_prob", options.hidden_dropout))
        if value is not None
    }
    model = VqdnaForSequenceClassification.from_pretrained(
        pretrained_dir,
        **overrides,
        classifier_pooling=options.pooling,
        classifier_head=options.head,
        classifier_norm=options.head_norm,
        num_labels=spec.num_labels if spec.task == "classification" else 1,
        problem_type="regression" if spec.task == "regression" else "single_label_classification",
    )
    tokenizer = load_tokenizer(tokenizer_dir, device=device)
    check_tokenizer_hash(
        model.config.tokenizer_hash, tokenizer.hash, made=f"{pretrained_dir} was pretrained on", given=tokenizer_dir,
        remedy="rerun pretraining with this tokenizer",
    )
    if options.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if options.mode == "full":  # the code embeddings stay frozen: they are the tokenizer's codebooks
        return model.to(device), tokenizer
    _check_targets(model, options.lora.target_modules)
    lora = LoraConfig(
        task_type="SEQ_CLS",
        r=options.lora.r,
        lora_alpha=options.lora.alpha,
        lora_dropout=options.lora.dropout,
        target_modules=options.lora.target_modules,
        modules_to_save=["classifier"],
    )
    return get_peft_model(model, lora).to(device), tokenizer


def read_splits(tokenizer: Tokenizer, dataset_dir: str | Path, max_length: int) -> dict[str, Split]:
    """train, dev and test of ``dataset_dir``, every sequence cut to ``max_length`` nt and encoded.

    ``dataset_dir`` is a prepared dataset (encoded here) or its dataset tokens
    (``results/dataset_tokens/{tokenizer}/{dataset}``: read, after checking the tokenizer hash).
    """
    return {split: Split(labels, codes) for split, (labels, codes) in dataset_codes(tokenizer, dataset_dir, max_length).items()}


def _batches(
    split: Split, batches: list[np.ndarray], label_dtype: torch.dtype, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(input_ids, attention_mask, labels) of each batch of rows, padded to its longest row."""
    for rows in batches:
        input_ids, attention = pad_codes([split.codes[r] for r in rows], device)
        yield input_ids, attention, torch.as_tensor(split.labels[rows], device=device, dtype=label_dtype)


def train_epochs(
    model: PeftModel | VqdnaForSequenceClassification, spec: DatasetSpec, options: FinetuneSettings, splits: dict[str, Split], seed: int, device: torch.device
) -> tuple[list[dict], int, float]:
    """Train for ``spec.epochs`` epochs, scoring dev after each; the model ends with its best epoch's weights.

    Returns the per-epoch history, the best epoch and its dev score.
    """
    if not splits["train"].codes:
        raise VqdnaError(f"dataset {spec.dataset}: the train split is empty")
    rng = np.random.default_rng(seed)
    trainable = [p for p in model.parameters() if p.requires_grad]
    learning_rate = options.learning_rate_of(spec)
    optimizer = torch.optim.AdamW(trainable, lr=learning_rate, weight_decay=options.weight_decay)
    steps_per_epoch = -(-len(splits["train"].codes) // spec.batch_size)
    schedule = get_linear_schedule_with_warmup(optimizer, spec.warmup_steps, steps_per_epoch * spec.epochs)
    label_dtype = torch.float32 if spec.task == "regression" else torch.long
    train_lengths = token_lengths(splits["train"].codes)
    log.info(
        "%s seed %d: %d train / %d dev / %d test, %d epochs x %d steps at lr %g, %.2fM trainable parameters, %s",
        spec.dataset, seed, len(splits["train"].codes), len(splits["dev"].codes), len(splits["test"].codes),
        spec.epochs, steps_per_epoch, learning_rate, sum(p.numel() for p in trainable) / 1e6, device,
    )

    history, best_score, best_epoch, best_state = [], -np.inf, 0, None
    for epoch in range(1, spec.epochs + 1):
        model.train()
        losses = RunningLoss()
        batches = training_batches(train_lengths, spec.batch_size, rng)
        for input_ids, attention, labels in tqdm(_batches(splits["train"], batches, label_dtype, device), total=steps_per_epoch, desc=f"{spec.dataset} epoch {epoch}", mininterval=10):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
            loss.backward()
            optimizer_step(optimizer, schedule, trainable)
            losses.add(loss)
        train_loss = losses.mean()
        check_finite_loss(
            train_loss, epoch * steps_per_epoch, f"finetune of {spec.dataset} (seed {seed})",
            remedy="lower the dataset's learning_rate or raise its warmup_steps (datasets sheet), then rerun",
        )
        dev = splits["dev"]
        dev_metrics, _ = score(spec, predict_logits(model, dev.codes, options.eval_batch_size, device), dev.labels)
        history.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "train_padding": round(padding_fraction(train_lengths, batches), 4),
                **{f"dev_{k}": v for k, v in dev_metrics.items()},
            }
        )
        log.info("epoch %d %s", epoch, history[-1])
        if best_state is None or dev_metrics[spec.metric] > best_score:
            best_score, best_epoch = dev_metrics[spec.metric], epoch
            best_state = trained_state(model)

    with torch.no_grad():
        for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
            if name in best_state:
                tensor.copy_(best_state[name])
    return history, best_epoch, best_score


def trained_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A copy of what training changes: the trainable weights, and the running statistics of ``head_norm: batch``.

    The statistics are buffers, not weights: an epoch restored without them
    would be scored with the last epoch's mean and variance.
    """
    state = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    for prefix, module in model.named_modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            state |= {f"{prefix}.{name}": b.clone() for name, b in module.named_buffers(recurse=False)}
    return state


def finetune(
    spec: DatasetSpec,
    settings: dict,
    seed: int,
    pretrained_dir: str | Path,
    tokenizer_dir: str | Path,
    dataset_dir: str | Path,
    output_dir: str | Path,
    *,
    threads: int | None = None,
    device: str | None = None,
) -> dict:
    """Fine-tune on ``dataset_dir`` and write metrics.json, predictions.parquet and adapter/ (or model/) to ``output_dir``."""
    options = FinetuneSettings.from_settings(settings)
    device = choose_device(device, threads)
    torch.manual_seed(seed)  # the head's and the adapters' initial weights, and dropout
    model, tokenizer = load_model(spec, options, pretrained_dir, tokenizer_dir, device)
    pretrained_sha256 = weights_fingerprint(dict(model.named_parameters()))  # before training: in full mode it changes
    splits = read_splits(tokenizer, dataset_dir, spec.max_length)

    started = time.time()
    history, best_epoch, best_dev = train_epochs(model, spec, options, splits, seed, device)
    test = splits["test"]
    test_logits = predict_logits(model, test.codes, options.eval_batch_size, device)
    test_metrics, predictions = score(spec, test_logits, test.labels)
    result = {
        **spec.result_fields(),
        "seed": seed,
        "test": test_metrics,
        "best_epoch": best_epoch,
        "best_dev": best_dev,
        "history": history,
        "train_seconds": round(time.time() - started, 1),
        "pretrained": str(pretrained_dir),
        "tokenizer_hash": tokenizer.hash,
        "base_weights_sha256": pretrained_sha256,
        **model_size(model, tokenizer, test.codes),
        "mode": options.mode,
        "learning_rate": options.learning_rate_of(spec),
        **({"lora": asdict(options.lora)} if options.mode == "lora" else {}),
        "attention_dropout": model.config.attention_probs_dropout_prob,
        "hidden_dropout": model.config.hidden_dropout_prob,
        # Only where it is not the default: metrics.json keeps its shape, so no earlier run is redone.
        **({"pooling": options.pooling} if options.pooling != "mean" else {}),
        **({"head": options.head} if options.head != "mlp" else {}),
        **({"head_norm": options.head_norm} if options.head_norm != "none" else {}),
    }
    log.info("%s seed %d test %s", spec.dataset, seed, test_metrics)
    with atomic_dir(output_dir) as tmp:
        model.save_pretrained(tmp / ("adapter" if options.mode == "lora" else "model"))
        _write_predictions(tmp / "predictions.parquet", spec, test.labels, predictions, test_logits)
        write_json(tmp / "metrics.json", result)
    return result


def _write_predictions(path: Path, spec: DatasetSpec, labels: np.ndarray, predictions: np.ndarray, logits: np.ndarray) -> None:
    """Test-split predictions, row ``index`` of test.parquet each."""
    table = pa.table(
        {
            "index": pa.array(np.arange(len(labels)), pa.int64()),
            "label": pa.array(labels),
            "prediction": pa.array(predictions),
            "logits": pa.array(list(logits.astype(np.float32))),
        }
    )
    schema = with_metadata(table.schema, dataset=spec.dataset)
    with parquet_writer(path, schema) as writer:
        writer.write_table(table.replace_schema_metadata(schema.metadata))
