"""Inference for users: embeddings and predictions for their own sequences, from any saved tokenizer + model.

Input is a FASTA (plain or gzip; one sequence per record, its id the first word
of the header) or a CSV (plain or gzip) with a ``sequence`` column; an ``id``
column names the rows (without one a row's id is its 0-based row number, as
``index`` in a fine-tuning run's predictions.parquet) and a ``label`` column is
carried into the predictions. Sequences follow the sequence policy (uppercase,
IUPAC ambiguity letters to N; any other character is an error).

A model is a pretrained encoder folder (``results/pretrain/{run}/``) or a
fine-tuned run folder (``results/finetune/{run}/{dataset}/seed{seed}/`` with
``adapter/``, or ``model/`` after full fine-tuning: a whole model, read as it is). A LoRA run's base model is the folder its adapter recorded; the
workflow records it relative to its working directory, so it is looked up as
given, then under every folder above the run (``--pretrained`` overrides). Where
the run's metrics.json holds the base weights' fingerprint, the base model found
must match it: a moved or retrained folder is an error, not silently other weights.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import torch
from peft import PeftModel
from safetensors import safe_open

from vqdna import VqdnaError
from vqdna.artifacts import atomic_path, parquet_writer, with_metadata
from vqdna.batching import evaluation_batches, token_lengths
from vqdna.finetune.train import predict_logits, weights_fingerprint
from vqdna.genome import base_ids, normalise_sequence, read_fasta
from vqdna.lm.configuration import VqdnaConfig
from vqdna.lm.modeling import VqdnaForSequenceClassification, VqdnaModel
from vqdna.runtime import (
    check_tokenizer_hash,
    choose_device,
    encode_sequences,
    pad_codes,
)
from vqdna.tokenizer.api import Tokenizer, load_tokenizer

log = logging.getLogger(__name__)

FASTA_SUFFIXES = (".fa", ".fasta", ".fna", ".fas")
CSV_SUFFIXES = (".csv",)
ADAPTER = "adapter"
FULL_MODEL = "model"  # a fully fine-tuned run's whole model (finetune.mode: full)
# The classifier's Linear layers as peft saves them (classifier[0] and [3] of the MLP head, [1] of the
# linear one, one more with head_norm batch): the rows of the last are the labels.
HEAD_WEIGHT = re.compile(r"base_model\.model\.classifier\.(\d+)\.weight")


# -- input ---------------------------------------------------------------------------------------------


@dataclass
class Sequences:
    """A user's sequences, in input order: ids, policy-normalised sequences, and labels when the input had them."""

    ids: list[str]
    sequences: list[str]
    labels: pa.Array | None = None


def _input_kind(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    if name.endswith(FASTA_SUFFIXES):
        return "fasta"
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    raise VqdnaError(f"{path}: unsupported input type; give a FASTA ({' '.join(FASTA_SUFFIXES)}) or a CSV (.csv), optionally .gz")


def _policy_sequence(sequence: str, where: str) -> str:
    """The sequence policy, with the place named when a character is not a base."""
    if not sequence:
        raise VqdnaError(f"{where}: empty sequence")
    try:
        base_ids(sequence)
    except VqdnaError as err:
        raise VqdnaError(f"{where}: {err}") from None
    return normalise_sequence(sequence)


def _read_fasta(path: Path) -> Sequences:
    records = read_fasta(path)
    sequences = [_policy_sequence(r.sequence, f"{path} record {r.name!r} (line {r.line})") for r in records]
    return Sequences([r.name for r in records], sequences)


def _read_csv(path: Path) -> Sequences:
    """pyarrow's reader: gzip by suffix, quoting, and the label's type inferred (int, float or text)."""
    text_columns = pacsv.ConvertOptions(column_types={"sequence": pa.string(), "id": pa.string()})
    try:
        table = pacsv.read_csv(path, convert_options=text_columns)
    except (pa.ArrowInvalid, OSError) as err:
        raise VqdnaError(f"{path}: not a readable CSV ({str(err).splitlines()[0]})") from None
    if "sequence" not in table.column_names:
        raise VqdnaError(f"{path}: no 'sequence' column (columns: {', '.join(table.column_names) or 'none'})")
    if table.num_rows == 0:
        raise VqdnaError(f"{path}: no rows")
    sequences = [_policy_sequence(s, f"{path} data row {row + 1}") for row, s in enumerate(table.column("sequence").to_pylist())]
    ids = table.column("id").to_pylist() if "id" in table.column_names else [str(i) for i in range(table.num_rows)]
    labels = table.column("label").combine_chunks() if "label" in table.column_names else None
    return Sequences(ids, sequences, labels)


def read_sequences(path: str | Path) -> Sequences:
    """A FASTA or CSV of the user's, checked whole before any model is loaded."""
    path = Path(path)
    kind = _input_kind(path)
    if not path.is_file():
        raise VqdnaError(f"{path}: no such file")
    sequences = _read_fasta(path) if kind == "fasta" else _read_csv(path)
    seen: set[str] = set()
    for name in sequences.ids:
        if name in seen:
            raise VqdnaError(f"{path}: duplicate id {name!r}; ids must be unique so outputs join back to the input")
        seen.add(name)
    return sequences


# -- models --------------------------------------------------------------------------------------------


def is_finetuned_run(model_dir: Path) -> bool:
    return (model_dir / ADAPTER / "adapter_config.json").is_file() or (model_dir / FULL_MODEL / "config.json").is_file()


def classifier_of(model: PeftModel | VqdnaForSequenceClassification) -> VqdnaForSequenceClassification:
    """The classifier under a LoRA wrapper (adapters still applied), or the fully fine-tuned model itself."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


def _run_metrics(run_dir: Path) -> dict:
    path = run_dir / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def base_model_dir(run_dir: Path, pretrained_dir: str | Path | None = None) -> Path:
    """The pretrained folder a fine-tuned run was made from: ``pretrained_dir``, else the adapter's recorded path.

    A relative recorded path is tried from the current folder, then from every
    folder above the run (the workflow records paths relative to its working
    directory, which is an ancestor of ``results/finetune/...``).
    """
    if pretrained_dir is not None:
        if not (Path(pretrained_dir) / "config.json").is_file():
            raise VqdnaError(f"--pretrained {pretrained_dir}: not a pretrained model folder (config.json missing)")
        return Path(pretrained_dir)
    recorded = Path(json.loads((run_dir / ADAPTER / "adapter_config.json").read_text())["base_model_name_or_path"])
    candidates = [recorded] if recorded.is_absolute() else [recorded, *(folder / recorded for folder in run_dir.resolve().parents)]
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate
    raise VqdnaError(
        f"{run_dir}: its base model {recorded} is not found (as given, or under any folder above the run); "
        "pass --pretrained with the pretrained folder it was fine-tuned from"
    )


@contextlib.contextmanager
def _without_load_report() -> Iterator[None]:
    """Silence transformers' warnings while loading: the MLM heads it reports unused and the head it reports
    newly initialised are expected here (an adapter brings the head), and only confuse a user asking for outputs."""
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _num_labels(run_dir: Path) -> int:
    """The head's output size, read from the saved adapter (metrics.json does not record it)."""
    with safe_open(run_dir / ADAPTER / "adapter_model.safetensors", "pt") as saved:
        layers = sorted((int(match[1]), key) for key in saved.keys() if (match := HEAD_WEIGHT.fullmatch(key)))
        if not layers:
            raise VqdnaError(f"{run_dir / ADAPTER}: no classifier head saved (base_model.model.classifier.*); not a vqdna fine-tuned run")
        return saved.get_slice(layers[-1][1]).get_shape()[0]


def load_finetuned(run_dir: Path, pretrained_dir: str | Path | None = None) -> tuple[PeftModel | VqdnaForSequenceClassification, Path]:
    """The run's base model + LoRA adapter + head (or its whole fully fine-tuned model), ready for inference; also the base folder used."""
    if (run_dir / FULL_MODEL / "config.json").is_file():
        with _without_load_report():
            return VqdnaForSequenceClassification.from_pretrained(run_dir / FULL_MODEL).eval(), run_dir / FULL_MODEL
    base_dir = base_model_dir(run_dir, pretrained_dir)
    num_labels = _num_labels(run_dir)
    metrics = _run_metrics(run_dir)
    with _without_load_report():
        base = VqdnaForSequenceClassification.from_pretrained(
            base_dir, num_labels=num_labels, problem_type="regression" if num_labels == 1 else "single_label_classification",
            # the head's, recorded where not the default
            classifier_pooling=metrics.get("pooling", "mean"), classifier_head=metrics.get("head", "mlp"),
            classifier_norm=metrics.get("head_norm", "none"),
        )
    expected = metrics.get("base_weights_sha256")
    if expected and weights_fingerprint(dict(base.named_parameters())) != expected:
        raise VqdnaError(
            f"{base_dir} is not the model {run_dir} was fine-tuned from (base weights sha256 differs from its metrics.json); "
            "pass --pretrained with the folder it was fine-tuned from"
        )
    return PeftModel.from_pretrained(base, run_dir / ADAPTER).eval(), base_dir


def load_encoder(model_dir: Path, pretrained_dir: str | Path | None = None) -> tuple[torch.nn.Module, VqdnaConfig, Path]:
    """The encoder of a pretrained folder, or a fine-tuned run's LoRA-adapted encoder; its config; its base folder."""
    if is_finetuned_run(model_dir):
        model, base_dir = load_finetuned(model_dir, pretrained_dir)
        return classifier_of(model).vqdna, model.config, base_dir
    if not (model_dir / "config.json").is_file():
        raise VqdnaError(f"{model_dir}: not a pretrained model folder (config.json) or a fine-tuned run ({ADAPTER}/)")
    with _without_load_report():
        encoder = VqdnaModel.from_pretrained(model_dir).eval()
    return encoder, encoder.config, model_dir


def matching_tokenizer(config: VqdnaConfig, tokenizer_dir: str | Path, model_dir: Path, device: torch.device) -> Tokenizer:
    """The tokenizer in ``tokenizer_dir``, once it is the one the model in ``model_dir`` was pretrained on."""
    tokenizer = load_tokenizer(tokenizer_dir, device=device)
    check_tokenizer_hash(
        config.tokenizer_hash, tokenizer.hash, made=f"{model_dir} was pretrained on", given=tokenizer_dir,
        remedy="give the tokenizer folder the model was pretrained with",
    )
    return tokenizer


# -- computing -----------------------------------------------------------------------------------------


@torch.no_grad()
def _hidden_sums(encoder: torch.nn.Module, pieces: list[np.ndarray], batch_size: int, device: torch.device) -> np.ndarray:
    """Per piece the sum of the encoder's last hidden states over its tokens, (P, H) float64."""
    sums = np.zeros((len(pieces), encoder.config.hidden_size))
    for rows in evaluation_batches(token_lengths(pieces), batch_size):
        input_ids, attention = pad_codes([pieces[i] for i in rows], device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            hidden = encoder(input_ids=input_ids, attention_mask=attention).last_hidden_state  # (B, L, H)
        sums[rows] = (hidden.float() * attention[..., None]).sum(1).double().cpu().numpy()
    return sums


def mean_pooled(encoder: torch.nn.Module, codes: list[np.ndarray], batch_size: int, device: torch.device, chunk_length: int | None = None) -> np.ndarray:
    """Per sequence the mean of the last hidden states over all its tokens, (N, H) float32.

    With ``chunk_length`` a sequence is encoded in pieces of at most that many
    tokens (attention memory grows with the square of the length) and the mean
    is over all tokens of all its pieces; without it, in one piece.
    """
    step = chunk_length or max(c.shape[1] for c in codes)
    pieces, owners = [], []
    for row, c in enumerate(codes):
        for start in range(0, c.shape[1], step):
            pieces.append(c[:, start : start + step])
            owners.append(row)
    totals = np.zeros((len(codes), encoder.config.hidden_size))
    np.add.at(totals, np.array(owners), _hidden_sums(encoder, pieces, batch_size, device))
    return (totals / np.array([c.shape[1] for c in codes])[:, None]).astype(np.float32)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


def _prediction_columns(logits: np.ndarray, regression: bool) -> dict[str, pa.Array]:
    """Regression: the value. Classification: the class index (as fine-tuning scored it) and each class's probability."""
    if regression:
        return {"prediction": pa.array(logits[:, 0])}
    columns = {"prediction": pa.array(logits.argmax(1).astype(np.int64))}
    for k, probability in enumerate(_softmax(logits).T):
        columns[f"probability_{k}"] = pa.array(probability)
    return columns


# -- output --------------------------------------------------------------------------------------------


def _check_output_type(path: Path, allowed: tuple[str, ...]) -> None:
    """Before any work: a wrong suffix found after minutes of inference is a wasted run."""
    if path.suffix.lower().lstrip(".") not in allowed:
        raise VqdnaError(f"{path}: unsupported output type; name it .{' or .'.join(allowed)}")


def _write_table(path: Path, table: pa.Table, **provenance: str) -> None:
    """Parquet with ``vqdna.*`` provenance, or CSV (which has nowhere to keep it); atomic either way."""
    if path.suffix.lower() == ".csv":
        with atomic_path(path) as tmp:
            pacsv.write_csv(table, tmp)
        return
    schema = with_metadata(table.schema, **{k: v for k, v in provenance.items() if v is not None})
    with parquet_writer(path, schema) as writer:
        writer.write_table(table.replace_schema_metadata(schema.metadata))


def embed(
    tokenizer_dir: str | Path,
    model_dir: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    *,
    batch_size: int = 64,
    chunk_length: int | None = None,
    pretrained_dir: str | Path | None = None,
    threads: int | None = None,
    device: str | None = None,
) -> int:
    """Write ``id``, ``length`` (nt) and mean-pooled ``embedding`` per input sequence to Parquet; returns the row count."""
    model_dir, output_path = Path(model_dir), Path(output_path)
    _check_output_type(output_path, ("parquet",))
    sequences = read_sequences(input_path)
    device = choose_device(device, threads)
    encoder, config, base_dir = load_encoder(model_dir, pretrained_dir)
    tokenizer = matching_tokenizer(config, tokenizer_dir, model_dir, device)
    embeddings = mean_pooled(encoder.to(device), encode_sequences(tokenizer, sequences.ids, sequences.sequences), batch_size, device, chunk_length)
    table = pa.table(
        {
            "id": pa.array(sequences.ids, pa.string()),
            "length": pa.array([len(s) for s in sequences.sequences], pa.int64()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.ravel(), pa.float32()), embeddings.shape[1]),
        }
    )
    _write_table(
        output_path, table, tokenizer=config.tokenizer_name, tokenizer_hash=tokenizer.hash, model=str(model_dir),
        pretrained=str(base_dir), input=str(input_path), pooling="mean over tokens of the last hidden state",
    )
    log.info("%s: %d embeddings of dimension %d", output_path, len(embeddings), embeddings.shape[1])
    return len(embeddings)


def predict(
    tokenizer_dir: str | Path,
    model_dir: str | Path,
    input_path: str | Path,
    output_path: str | Path,
    *,
    max_length: int | None = None,
    batch_size: int = 64,
    pretrained_dir: str | Path | None = None,
    threads: int | None = None,
    device: str | None = None,
) -> int:
    """Write a fine-tuned run's predictions per input sequence to CSV or Parquet; returns the row count.

    Columns: ``id``, ``label`` (when the input has one), ``prediction`` (class
    index, or the regressed value) and, for classification, ``probability_{k}``
    per class. Sequences are cut to ``max_length`` nt as fine-tuning cut them;
    the default is the run's recorded ``max_length`` (metrics.json), else none.
    """
    model_dir, output_path = Path(model_dir), Path(output_path)
    _check_output_type(output_path, ("csv", "parquet"))
    if not is_finetuned_run(model_dir):
        raise VqdnaError(f"{model_dir}: not a fine-tuned run (neither {ADAPTER}/adapter_config.json nor {FULL_MODEL}/config.json); predict needs one, embed takes a pretrained folder")
    sequences = read_sequences(input_path)
    device = choose_device(device, threads)
    model, base_dir = load_finetuned(model_dir, pretrained_dir)
    tokenizer = matching_tokenizer(model.config, tokenizer_dir, model_dir, device)
    run = _run_metrics(model_dir)
    max_length = max_length or run.get("max_length")
    cut = [s[:max_length] for s in sequences.sequences] if max_length else sequences.sequences
    logits = predict_logits(model.to(device), encode_sequences(tokenizer, sequences.ids, cut), batch_size, device)

    columns = {"id": pa.array(sequences.ids, pa.string())}
    if sequences.labels is not None:
        columns["label"] = sequences.labels
    columns |= _prediction_columns(logits, classifier_of(model).is_regression)
    _write_table(
        output_path, pa.table(columns), tokenizer=model.config.tokenizer_name, tokenizer_hash=tokenizer.hash,
        model=str(model_dir), pretrained=str(base_dir), dataset=run.get("dataset"), input=str(input_path),
        max_length=str(max_length) if max_length else None,
    )
    log.info("%s: %d predictions", output_path, len(logits))
    return len(logits)
