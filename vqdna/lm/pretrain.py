"""Stage 2: masked modelling of learned codes (paper: 25% masking, lr 5e-4, batch 2048, 500k steps).

The encoder reads the frozen tokenizer embedding of every position; a fraction
``mask_ratio`` of positions is replaced by a learned mask vector and the model
predicts, at those positions, the code of every tokenizer level.

Masks are a pure function of (seed, step, global sample index), and the sample
order a pure function of (seed, epoch), so a run is reproducible from its
config alone, whatever the process count. Under ``torchrun`` each step's global
batch is cut into one contiguous slice per rank (and each slice into
``grad_accum_steps`` micro-batches); every micro-batch's loss is weighted by its
share of the global batch's masked tokens, so DDP's gradient mean equals the
gradient of the global batch's mean loss. A run checkpoints every
``checkpoint_every`` steps into its state folder (:mod:`vqdna.lm.checkpoints`)
and, rerun after being killed, continues from the last complete checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from types import FrameType

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.lr_scheduler import LRScheduler
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup

from vqdna import VqdnaError
from vqdna.artifacts import atomic_dir, write_csv, write_json
from vqdna.batching import training_batches
from vqdna.compiling import compile_mode, torch_mode
from vqdna.distributed import (
    all_gather_objects,
    all_reduce_sum,
    barrier,
    broadcast_object,
    is_distributed,
    join_process_group,
    rank_device,
)
from vqdna.lm.checkpoints import (
    clear_state,
    fingerprint,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from vqdna.lm.configuration import VqdnaConfig
from vqdna.lm.corpus import (
    LAYOUT,
    Codes,
    MappedCodes,
    WindowCodes,
    build_corpus,
    open_corpus,
)
from vqdna.lm.modeling import VqdnaForMaskedLM
from vqdna.runtime import best_device, check_finite_loss, optimizer_step
from vqdna.tokenizer.api import VQTokenizer, load_tokenizer

log = logging.getLogger(__name__)

ENCODER_KEYS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "classifier_dropout",
    "rope_theta",
    "initializer_range",
)


@dataclass
class PretrainConfig:
    """A ``runs:`` entry. Defaults follow the paper's stage 2.

    ``steps: 0`` saves the seeded initial weights untrained: the random-init
    control, fine-tuned beside the pretrained encoder to show what pretraining adds.
    """

    tokenizer: str = ""
    pretrain_genomes: list[str] = field(default_factory=list)
    encoder: dict = field(default_factory=dict)  # VqdnaConfig sizes; empty: BERT-base
    mask_ratio: float = 0.25
    # Masked positions come in runs of this many tokens (1: the paper's independent positions).
    # A learned code names its position's whole receptive field (about 37 nt for the paper's
    # tokenizer), so a lone masked code is nearly determined by its neighbours' codes; a span
    # wider than that field leaves the model real sequence to infer.
    mask_span: int = 1
    steps: int = 500_000
    batch_size: int = 2048
    learning_rate: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 10_000
    max_length: int | None = None  # cut windows into pieces of this many tokens; None: whole windows
    grad_accum_steps: int = 1  # micro-batches per rank and step; batch_size stays the global batch
    log_every: int = 100
    # Steps between held-out masked-code accuracy measurements (a curve in
    # metrics.json and heldout_curve.csv); the last step is always measured. 0: only the last.
    eval_every: int = 5000
    checkpoint_every: int = 1000  # steps between resumable checkpoints (0: none)
    keep_checkpoints: int = 2
    heldout_windows: int = 1024
    seed: int = 0

    def fingerprint_settings(self) -> dict:
        """The settings a checkpoint's numbers depend on (not how often it logs or checkpoints).

        ``mask_span`` 1, the default, is left out: checkpoints written before it existed still resume.
        """
        ignored = {"log_every", "eval_every", "checkpoint_every", "keep_checkpoints"} | ({"mask_span"} if self.mask_span == 1 else set())
        return {k: v for k, v in asdict(self).items() if k not in ignored}

    @classmethod
    def from_settings(cls, name: str, settings: dict) -> "PretrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - known)
        if unknown:
            raise VqdnaError(f"runs.{name}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        config = cls(**settings)
        bad = sorted(set(config.encoder) - set(ENCODER_KEYS))
        if bad:
            raise VqdnaError(f"runs.{name}.encoder: unknown key(s) {', '.join(bad)}; known: {', '.join(ENCODER_KEYS)}")
        if not 0 < config.mask_ratio < 1:
            raise VqdnaError(f"runs.{name}: mask_ratio must lie in (0, 1), got {config.mask_ratio}")
        if config.mask_span < 1:
            raise VqdnaError(f"runs.{name}: mask_span must be 1 or more tokens, got {config.mask_span}")
        if config.steps < 0 or config.batch_size < 1 or config.grad_accum_steps < 1:
            raise VqdnaError(f"runs.{name}: batch_size and grad_accum_steps must be positive, steps 0 or more")
        return config


def _uniform_keys(seed: int, step: int, sample_index: np.ndarray, length: int) -> np.ndarray:
    """Counter-based uniform numbers in [0, 1): splitmix64 of (seed, step, sample, position)."""
    with np.errstate(over="ignore"):
        x = (
            np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
            + np.uint64(step) * np.uint64(0xBF58476D1CE4E5B9)
            + sample_index.astype(np.uint64)[:, None] * np.uint64(0x94D049BB133111EB)
            + np.arange(length, dtype=np.uint64)[None, :]
        )
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def mask_positions(
    seed: int, step: int, sample_index: np.ndarray, length: int, ratio: float, lengths: np.ndarray | None = None, span: int = 1
) -> np.ndarray:
    """Exactly round(ratio * n) masked positions among each sample's n real tokens.

    Keyed by (seed, step, global sample index): a sample's mask does not depend
    on the batch it is in or on the process count. ``lengths`` (per sample)
    leaves padding unmasked; without it every position is real. ``span`` > 1
    masks whole blocks of ``span`` consecutive tokens (blocks tile the sample
    from its first token; the last block chosen may be cut to keep the count exact).
    """
    lengths = np.full(len(sample_index), length) if lengths is None else np.asarray(lengths)
    positions = np.arange(length)
    blocks = _uniform_keys(seed, step, sample_index, -(-length // span))  # one key per block
    keys = blocks if span == 1 else blocks[:, positions // span] + positions[None, :] * 1e-9 / length  # a block ranks as one
    keys[positions[None, :] >= lengths[:, None]] = np.inf  # padding is never chosen
    rank = np.argsort(np.argsort(keys, axis=1, kind="stable"), axis=1, kind="stable")
    return rank < masked_counts(lengths, ratio)[:, None]


def masked_counts(lengths: np.ndarray, ratio: float) -> np.ndarray:
    """Masked positions per sample: round(ratio * n) of its n real tokens, at least one."""
    return np.maximum(1, np.rint(ratio * np.asarray(lengths))).astype(np.int64)


@functools.lru_cache(maxsize=2)
def sample_order(seed: int, epoch: int, batch_size: int, codes: WindowCodes) -> np.ndarray:
    """The order windows are read in during one epoch (cached: one order per epoch, not per step).

    Where token counts vary (BPE and k-mer tokens, windows cut into pieces), the
    epoch reads length-grouped batches (:func:`vqdna.batching.training_batches`):
    on 512-nt windows a shuffled batch of BPE tokens was 7.8% padding, a grouped
    one 0.3% (benchmarks/padding.py). The batches are laid out so each step's
    global batch is one of them: the first ``head`` windows complete the step
    that began in the previous epoch, and the one short batch comes last. With
    equal counts (learned tokenizers on whole windows) the order is the plain
    permutation.
    """
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(codes))
    lengths = codes.lengths
    if len(codes) == 0 or lengths.min() == lengths.max():
        return order
    head = min(len(order), -(epoch * len(codes)) % batch_size)
    rest = order[head:]
    batches = sorted(training_batches(lengths[rest], batch_size, rng), key=lambda rows: len(rows) < batch_size)  # stable
    return np.concatenate([order[:head], *(rest[rows] for rows in batches)])


def global_batch_indices(seed: int, step: int, batch_size: int, codes: WindowCodes) -> np.ndarray:
    """Global sample indices of ``step`` (1-based) and the windows they read, epoch by epoch."""
    num_windows = len(codes)
    first = (step - 1) * batch_size
    sample_index = np.arange(first, first + batch_size)
    epochs = sample_index // num_windows
    windows = np.empty(batch_size, dtype=np.int64)
    for epoch in np.unique(epochs):
        here = epochs == epoch
        windows[here] = sample_order(seed, int(epoch), batch_size, codes)[sample_index[here] % num_windows]
    return np.stack([sample_index, windows])


def _masked_batch(
    codes: WindowCodes, rows: np.ndarray, sample_index: np.ndarray, seed: int, step: int, ratio: float, span: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs, mask, labels (-100 where unscored) and attention mask of the windows ``rows``."""
    lengths = codes.lengths[rows]
    values = codes.padded(rows)
    longest = values.shape[1]
    mask = mask_positions(seed, step, sample_index, longest, ratio, lengths, span)
    input_ids = torch.as_tensor(values.astype(np.int64), device=device)  # (B, L, levels)
    masked = torch.as_tensor(mask, device=device)
    labels = torch.where(masked[..., None], input_ids, torch.full_like(input_ids, -100))
    attention = torch.as_tensor(np.arange(longest)[None, :] < lengths[:, None], device=device)
    return input_ids, masked, labels, attention


@torch.no_grad()
def masked_accuracy(
    model: VqdnaForMaskedLM, codes: Codes, seed: int, ratio: float, span: int, device: torch.device, batch: int = 64
) -> list[float]:
    """Held-out masked-code accuracy per level, with masks fixed by (seed, step 0)."""
    model.eval()
    correct = np.zeros(codes.values.shape[-1])
    total = 0
    for i in range(0, len(codes), batch):
        rows = np.arange(i, min(i + batch, len(codes)))
        input_ids, masked, labels, attention = _masked_batch(codes, rows, rows, seed, 0, ratio, span, device)
        out = model(input_ids, attention_mask=attention, masked_positions=masked)
        for level, logits in enumerate(out.level_logits):
            correct[level] += (logits.argmax(-1)[masked] == labels[..., level][masked]).sum().item()
        total += int(masked.sum())
    model.train()
    return (correct / max(1, total)).tolist()


def most_frequent_codes(codes: WindowCodes, rows_per_read: int = 4096) -> np.ndarray:
    """Per level, the code seen most often among real (unpadded) tokens; reads the corpus in slices."""
    counts = None
    for first in range(0, len(codes), rows_per_read):
        rows = np.arange(first, min(first + rows_per_read, len(codes)))
        values = codes.padded(rows)
        real = np.arange(values.shape[1])[None, :] < codes.lengths[rows][:, None]
        here = [np.bincount(values[..., n][real].astype(np.int64)) for n in range(values.shape[-1])]
        counts = here if counts is None else [_add_counts(a, b) for a, b in zip(counts, here)]
    return np.array([c.argmax() for c in counts])


def _add_counts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if len(a) < len(b):
        a, b = b, a
    a = a.copy()
    a[: len(b)] += b
    return a


def nearest_unmasked(masked: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """(B, L) index of the nearest real unmasked position (left on ties); -1 where there is none."""
    positions = np.arange(masked.shape[1])[None, :]
    visible = ~masked & (positions < lengths[:, None])
    left = np.maximum.accumulate(np.where(visible, positions, -1), axis=1)
    big = masked.shape[1] * 2
    right = np.minimum.accumulate(np.where(visible, positions, big)[:, ::-1], axis=1)[:, ::-1]
    use_right = (left < 0) | ((right < big) & (right - positions < positions - left))
    nearest = np.where(use_right, right, left)
    return np.where(nearest >= big, -1, nearest)


def masked_baselines(codes: Codes, frequent: np.ndarray, seed: int, ratio: float, span: int = 1) -> dict[str, list[float]]:
    """The accuracy the MLM must beat, on the held-out masks of :func:`masked_accuracy`.

    ``most_frequent``: always the train set's most frequent code of the level.
    ``copy_neighbour``: the code of the nearest unmasked position. Strong for
    tokens that repeat (k-mer ids of low-complexity runs); for learned codes,
    which name their own position's context, it is near zero (0.004 in the demo).
    """
    rows = np.arange(len(codes))
    longest = codes.values.shape[1]
    masked = mask_positions(seed, 0, rows, longest, ratio, codes.lengths, span)
    neighbour = nearest_unmasked(masked, codes.lengths)
    copied = np.take_along_axis(codes.values, np.clip(neighbour, 0, None)[..., None], axis=1)
    levels = codes.values.shape[-1]
    truth = codes.values[masked]  # (masked tokens, levels)
    has_neighbour = (neighbour >= 0)[masked]
    return {
        "most_frequent": [float((truth[:, n] == frequent[n]).mean()) for n in range(levels)],
        "copy_neighbour": [float(((copied[masked][:, n] == truth[:, n]) & has_neighbour).mean()) for n in range(levels)],
    }


def _heldout_sample(held: MappedCodes, count: int, seed: int) -> Codes:
    """A seeded sample of held-out windows spread over every genome (not the first genome's first windows)."""
    if len(held) <= count:
        return held.take(np.arange(len(held)))
    return held.take(np.sort(np.random.default_rng(seed).choice(len(held), count, replace=False)))


@contextlib.contextmanager
def _mapped_corpus(token_files: list[str | Path], tokenizer_hash: str, folder: Path | None, rank: int) -> Iterator[tuple[MappedCodes, MappedCodes]]:
    """The train and test windows of ``token_files``, built once by rank 0 into ``folder`` and mapped by every rank.

    ``folder`` None: a temporary folder, removed at the end (one node only:
    ranks on other nodes could not see it; the workflow always passes a state folder).
    """
    with contextlib.ExitStack() as stack:
        if folder is None:
            made = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vqdna-corpus-"))) if rank == 0 else None
            folder = broadcast_object(made)
        elif rank == 0:  # in the state folder: another fingerprint's corpus, or a killed build, is stale
            for stale in [*folder.parent.glob("corpus-*"), *folder.parent.glob(".corpus-*")]:
                if stale.name != folder.name and stale.is_dir():
                    shutil.rmtree(stale)
        if rank == 0:
            for split in ("train", "test"):
                if not (folder / split / LAYOUT).is_file():
                    build_corpus(token_files, tokenizer_hash, split, folder / split)
        barrier()
        yield open_corpus(folder / "train"), open_corpus(folder / "test")
        barrier()  # no rank still reads the temporary folder when rank 0 removes it


class StopRequested:
    """Set by SIGTERM (SLURM preemption or time limit): the run saves a checkpoint at the end of the step and stops."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.requested = enabled, False
        self._previous: Callable[[int, FrameType | None], object] | int | None = None

    def __enter__(self) -> StopRequested:
        if self.enabled and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def anywhere(self, device: torch.device) -> bool:
        """True on every rank once any rank was asked to stop, so all ranks checkpoint the same step.

        Asking the other ranks reads a tensor back every step (a host sync); one process has no one to ask.
        """
        if not self.enabled:
            return False
        if not is_distributed():
            return self.requested
        return bool(all_reduce_sum(torch.tensor([float(self.requested)], device=device)).item())


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(states: list[dict], rank: int) -> None:
    """Restore this rank's dropout RNG (a run resumed on another process count reseeds the extra ranks)."""
    if rank < len(states):
        torch.set_rng_state(states[rank]["torch"])
        if "cuda" in states[rank] and torch.cuda.is_available():
            torch.cuda.set_rng_state(states[rank]["cuda"])
    else:
        torch.manual_seed(rank)


def micro_batches(batch_size: int, rank: int, world: int, accum: int) -> list[slice]:
    """Positions in the global batch of rank ``rank``'s micro-batches: one contiguous shard per rank, cut in ``accum``."""
    per_rank = batch_size // world
    micro = per_rank // accum
    return [slice(rank * per_rank + m * micro, rank * per_rank + (m + 1) * micro) for m in range(accum)]


@dataclass(frozen=True)
class Process:
    """This process's part in a run: rank ``rank`` of ``world`` data-parallel processes, computing on ``device``."""

    rank: int
    world: int
    device: torch.device


@dataclass(frozen=True)
class StateFolder:
    """Where a run keeps its resumable checkpoints and its mapped corpus, and the fingerprint both belong to."""

    path: Path
    fingerprint: str
    keep: int  # complete checkpoints kept

    @property
    def corpus(self) -> Path:
        return self.path / f"corpus-{self.fingerprint[:16]}"


@dataclass(frozen=True)
class Corpus:
    """What a run reads: its train windows (mapped, read batch by batch) and a sample of held-out windows (in memory)."""

    train: MappedCodes
    heldout: Codes


@dataclass
class TrainingState:
    """What a checkpoint holds: the model, its optimizer and schedule, the last step taken and the curves so far."""

    model: VqdnaForMaskedLM
    optimizer: torch.optim.Optimizer
    schedule: LRScheduler
    step: int = 0
    curves: list[dict] = field(default_factory=list)
    heldout_curve: list[dict] = field(default_factory=list)  # held-out masked-code accuracy per level, every eval_every steps


def train_step(
    step_model: torch.nn.Module, run: PretrainConfig, codes: WindowCodes, step: int, process: Process, *, static_length: int | None = None
) -> torch.Tensor:
    """Forward and backward of this rank's slice of the step's global batch.

    Returns (this rank's summed masked-token loss, the global masked count / world):
    all-reduced, their ratio is the global batch's mean loss.

    ``static_length`` (a compiled ``step_model``): every micro-batch is padded to
    that many tokens, so all have one shape (one compile; CUDA graphs can replay
    it), and its attention mask is None when it has no padding (the mask the
    eager model drops itself: a compiled graph cannot check it on the device).
    """
    rank, world, device = process.rank, process.world, process.device
    sample_index, rows = global_batch_indices(run.seed, step, run.batch_size, codes)
    global_masked = int(masked_counts(codes.lengths[rows], run.mask_ratio).sum())
    parts = micro_batches(run.batch_size, rank, world, run.grad_accum_steps)
    use_bf16 = device.type == "cuda"
    loss_sum = torch.zeros(1, device=device)
    for m, part in enumerate(parts):
        input_ids, masked, labels, attention = _masked_batch(
            codes, rows[part], sample_index[part], run.seed, step, run.mask_ratio, run.mask_span, device
        )
        if static_length is not None:
            input_ids, masked, labels, attention = _padded_batch(static_length, input_ids, masked, labels, attention)
            if codes.lengths[rows[part]].min() >= static_length:  # nothing padded, known on the host
                attention = None
            torch.compiler.cudagraph_mark_step_begin()  # reduce-overhead: the previous replay's outputs are spent
        last = m == len(parts) - 1
        with contextlib.nullcontext() if last or world == 1 else step_model.no_sync():
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
                loss = step_model(input_ids, attention_mask=attention, masked_positions=masked, labels=labels).loss
            share = masked.sum() / global_masked  # this micro-batch's share of the global batch's masked tokens
            (loss * share * world).backward()  # DDP averages over ranks: x world makes it the global mean
        loss_sum += loss.detach().float() * masked.sum()
    return torch.cat([loss_sum, torch.tensor([float(global_masked) / world], device=device)])


def _padded_batch(
    length: int, input_ids: torch.Tensor, masked: torch.Tensor, labels: torch.Tensor, attention: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """A batch padded on the right to ``length`` tokens: code 0, never masked, never scored (-100), never attended."""
    extra = length - input_ids.shape[1]
    if extra <= 0:
        return input_ids, masked, labels, attention
    pad = torch.nn.functional.pad
    return pad(input_ids, (0, 0, 0, extra)), pad(masked, (0, extra)), pad(labels, (0, 0, 0, extra), value=-100), pad(attention, (0, extra))


def pretrain(
    name: str,
    settings: dict,
    tokenizer_dir: str | Path,
    token_files: list[str | Path],
    output_dir: str | Path,
    *,
    state_dir: str | Path | None = None,
    threads: int | None = None,
    device: str | None = None,
    compile: str | None = None,
) -> dict:
    """Pretrain run ``name`` on ``token_files`` and save the final model with ``save_pretrained``.

    With ``state_dir``, checkpoints every ``checkpoint_every`` steps go there, a
    rerun resumes from the newest complete one with a matching fingerprint, and
    the folder is removed once the final model is saved. SIGTERM saves a
    checkpoint at the end of the current step and stops with an error.

    ``compile``: the torch.compile mode of the training step (None:
    ``$VQDNA_COMPILE_PRETRAIN``, else "none"; :mod:`vqdna.compiling`). The saved
    model and checkpoints are the uncompiled module's: the same keys either way.
    """
    run = PretrainConfig.from_settings(name, settings)
    mode = compile_mode("pretrain", compile)
    rank, world = join_process_group()
    if run.batch_size % (world * run.grad_accum_steps):
        raise VqdnaError(
            f"runs.{name}: batch_size {run.batch_size} is not divisible by {world} processes x {run.grad_accum_steps} grad_accum_steps"
        )
    if threads:
        torch.set_num_threads(threads)
    process = Process(rank, world, torch.device(rank_device(device, rank, world) or best_device()))
    tokenizer = load_tokenizer(tokenizer_dir, device="cpu")
    state = None
    if state_dir is not None:
        run_fingerprint = broadcast_object(
            fingerprint(run.fingerprint_settings(), tokenizer.hash, token_files) if rank == 0 else None
        )
        state = StateFolder(Path(state_dir), run_fingerprint, run.keep_checkpoints)
    with _mapped_corpus(token_files, tokenizer.hash, state.corpus if state else None, rank) as (train_codes, test_codes):
        if len(train_codes) == 0:
            raise VqdnaError(f"runs.{name}: no train-split windows in the token files")
        heldout = _heldout_sample(test_codes, run.heldout_windows, run.seed)
        if run.max_length:  # every window cut into max_length pieces: all of the corpus is read
            train_codes, heldout = train_codes.chunked(run.max_length), heldout.chunked(run.max_length)
        return _pretrain(name, run, tokenizer, Corpus(train_codes, heldout), Path(output_dir), state, process, mode)


def _pretrain(
    name: str, run: PretrainConfig, tokenizer: VQTokenizer, corpus: Corpus, output_dir: Path, state: StateFolder | None, process: Process,
    mode: str = "none",
) -> dict:
    """The run once its corpus is mapped: start or resume, train, then (rank 0) measure and save the model."""
    training, resumed_from = _start_training(name, run, tokenizer, state, process)
    log.info(
        "run %s: %d train sequences of up to %d tokens, %.1fM trainable parameters, process %d of %d, %s",
        name, len(corpus.train), corpus.train.longest, sum(p.numel() for p in _trainable(training.model)) / 1e6,
        process.rank, process.world, process.device,
    )
    started = time.time()
    compiled = _train(name, run, training, corpus, state, process, mode)
    if run.steps == 0:  # the random-init control: its curve is one point, the untrained model's
        _measure_heldout(run, training, corpus, process)

    result = None
    if process.rank == 0:
        result = {
            "run": name,
            "tokenizer": run.tokenizer,
            "tokenizer_hash": tokenizer.hash,
            "train_sequences": len(corpus.train),
            "heldout_sequences": len(corpus.heldout),
            "steps": run.steps,
            "processes": process.world,
            "resumed_from": resumed_from,
            "final_loss": training.curves[-1]["loss"] if training.curves else None,  # None: steps 0
            "heldout_masked_accuracy": training.heldout_curve[-1]["masked_accuracy"],
            "heldout_curve": training.heldout_curve,
            "heldout_baselines": masked_baselines(corpus.heldout, most_frequent_codes(corpus.train), run.seed, run.mask_ratio, run.mask_span),
            "train_seconds": round(time.time() - started, 1),
            "budget": training_budget(run, training.model, corpus.train),
            "run_config": asdict(run),
        }
        if compiled is not None:  # only when compiled: an eager run's metrics.json is as it always was
            result["compile"] = compiled
        with atomic_dir(output_dir) as tmp:
            training.model.save_pretrained(tmp)
            write_json(tmp / "metrics.json", result)
            if training.curves:
                write_csv(tmp / "curves.csv", training.curves)
            write_csv(tmp / "heldout_curve.csv", [_curve_columns(row) for row in training.heldout_curve])
        if state is not None:
            clear_state(state.path)
    barrier()
    return broadcast_object(result)


def training_budget(run: PretrainConfig, model: VqdnaForMaskedLM, train: WindowCodes) -> dict:
    """What a run's steps cost: windows and tokens read, and training FLOPs, so runs on different tokenizers compare.

    Tokens are estimated from the mean train window (every window is read about
    equally often). FLOPs per token: 6 N for the encoder's matmul weights N
    (forward and backward) plus 12 * layers * hidden * T for attention over T
    tokens (the mean window); the MLM heads, which run on masked positions
    only, are left out.
    """
    windows = run.steps * run.batch_size
    mean_tokens = float(np.mean(train.lengths)) if len(train) else 0.0
    config = model.config
    matmul = sum(m.weight.numel() for m in model.vqdna.layers.modules() if isinstance(m, torch.nn.Linear))
    per_token = 6 * matmul + 12 * config.num_hidden_layers * config.hidden_size * mean_tokens
    return {
        "windows": windows,
        "tokens": round(windows * mean_tokens),
        "mean_tokens_per_window": round(mean_tokens, 2),
        "train_tflops": round(windows * mean_tokens * per_token / 1e12, 3),
    }


def _curve_columns(row: dict) -> dict:
    """A held-out curve row as CSV columns: step, masked_accuracy_l1, masked_accuracy_l2, ..."""
    return {"step": row["step"], **{f"masked_accuracy_l{n + 1}": value for n, value in enumerate(row["masked_accuracy"])}}


def _measure_heldout(run: PretrainConfig, training: TrainingState, corpus: Corpus, process: Process) -> None:
    """Append the held-out masked-code accuracy at ``training.step`` to the curve (rank 0; the others go on)."""
    if process.rank == 0:
        accuracy = masked_accuracy(training.model, corpus.heldout, run.seed, run.mask_ratio, run.mask_span, process.device)
        training.heldout_curve.append({"step": training.step, "masked_accuracy": accuracy})
        log.info("step %d held-out masked-code accuracy %s", training.step, " ".join(f"{a:.4f}" for a in accuracy))


def _trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """Every parameter but the frozen code embeddings (a learned tokenizer's codebooks)."""
    return [p for p in model.parameters() if p.requires_grad]


def _start_training(
    name: str, run: PretrainConfig, tokenizer: VQTokenizer, state: StateFolder | None, process: Process
) -> tuple[TrainingState, str | None]:
    """A new model, its optimizer and schedule on this process's device, resumed from the newest checkpoint if any.

    Returns them and the checkpoint resumed from (None: a fresh start).
    """
    torch.manual_seed(run.seed)  # the same initial weights on every rank
    model = VqdnaForMaskedLM(
        VqdnaConfig(
            vocab_sizes=tokenizer.level_sizes,
            code_embedding_dim=tokenizer.embedding_dim,
            tokenizer_name=run.tokenizer,
            tokenizer_hash=tokenizer.hash,
            tokenizer_type=tokenizer.config.type,
            **run.encoder,
        )
    )
    if tokenizer.embedding_dim is not None:  # learned tokenizers: their codebooks are the frozen input embedding
        model.vqdna.set_code_embeddings(tokenizer.codebook_tables())
    optimizer = torch.optim.AdamW(_trainable(model), lr=run.learning_rate, weight_decay=run.weight_decay, betas=(0.9, 0.98))
    training = TrainingState(model, optimizer, get_cosine_schedule_with_warmup(optimizer, run.warmup_steps, run.steps))

    found = None
    if state is not None:
        found = broadcast_object(latest_checkpoint(state.path, state.fingerprint) if process.rank == 0 else None)
    if found is not None:
        saved = load_checkpoint(found, model)
        optimizer.load_state_dict(saved["optimizer"])
        training.schedule.load_state_dict(saved["schedule"])
        _set_rng_state(saved["rng"], process.rank)
        training.step, training.curves = saved["step"], saved["curves"]
        training.heldout_curve = saved.get("heldout_curve", [])
        log.info("run %s: resumed from %s (step %d of %d)", name, found, training.step, run.steps)
    model.to(process.device).train()
    _move_optimizer_state(optimizer, process.device)
    return training, None if found is None else str(found)


def _train(
    name: str, run: PretrainConfig, training: TrainingState, corpus: Corpus, state: StateFolder | None, process: Process, mode: str = "none"
) -> dict | None:
    """Steps from the one after ``training.step`` to ``run.steps``, logging, measuring and checkpointing on the way.

    ``mode`` other than "none": the step runs compiled (the DDP wrapper, if any, inside the compiled module, as
    torch recommends); ``training.model`` stays the eager module that is measured, checkpointed and saved.
    Returns, when compiled, the mode and the first step's seconds (its compile), else None.
    """
    model, optimizer, schedule, codes = training.model, training.optimizer, training.schedule, corpus.train
    device = process.device
    step_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) if process.world > 1 else model
    static_length, compiled = None, None
    if mode != "none":
        # dynamic=False with every batch padded to the longest sequence: one shape, one compile (two when some
        # batches have padding and others none); any other recompile is logged by torch.
        step_model = torch.compile(step_model, mode=torch_mode(mode, device.type), dynamic=False)
        static_length = int(codes.lengths.max())
        torch._logging.set_logs(recompiles=True)
        compiled = {"mode": mode, "static_length": static_length}
    trainable = _trainable(model)
    started = time.time()
    first_step, first_done = None, 0.0
    with StopRequested(enabled=state is not None) as stop:
        for step in tqdm(range(training.step + 1, run.steps + 1), desc=f"pretrain {name}", mininterval=10, disable=process.rank > 0):
            step_started = time.perf_counter()
            loss_sum, count = train_step(step_model, run, codes, step, process, static_length=static_length).split(1)  # backward included
            optimizer_step(optimizer, schedule, trainable)
            if compiled is not None and "first_step_seconds" not in compiled:
                first_step, first_done = step, time.perf_counter()
                compiled["first_step_seconds"] = round(first_done - step_started, 3)
                log.info(
                    "run %s: torch.compile (%s) first step %.1f s (compiling and one step; batches padded to %d tokens)",
                    name, mode, compiled["first_step_seconds"], static_length,
                )
            training.step = step
            # The logged loss is the logged step's (a global batch is large enough), read once per
            # interval: a resumed run then logs exactly what an uninterrupted one would.
            if step % run.log_every == 0 or step == run.steps:
                total, masked = all_reduce_sum(torch.cat([loss_sum, count])).tolist()
                loss = total / masked  # mean over the global batch's masked tokens
                check_finite_loss(loss, step, f"runs.{name}")
                training.curves.append({"step": step, "loss": loss, "learning_rate": schedule.get_last_lr()[0], "seconds": round(time.time() - started, 3)})
                log.info("step %d loss %.4f", step, loss)
            if (run.eval_every and step % run.eval_every == 0) or step == run.steps:
                _measure_heldout(run, training, corpus, process)
            stopping = stop.anywhere(device)
            due = state is not None and run.checkpoint_every and step % run.checkpoint_every == 0 and step < run.steps
            if due or stopping:
                _checkpoint(state, training, process)
            if stopping:
                raise VqdnaError(f"runs.{name}: stopped by SIGTERM after step {step}; checkpoint saved in {state.path}, rerun to continue")
    if compiled is not None and "first_step_seconds" in compiled:
        later = run.steps - (first_step or run.steps)
        compiled["later_steps"] = later
        if later:  # the steps after the compile, checkpoints and held-out measurements included
            compiled["later_step_seconds"] = round((time.perf_counter() - first_done) / later, 4)
            log.info("run %s: compiled steps after the first: %.4f s each", name, compiled["later_step_seconds"])
    return compiled


def _move_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    """A checkpoint's optimizer moments are loaded on the CPU; they belong beside the weights."""
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, torch.Tensor) and key != "step":
                state[key] = value.to(device)


def _checkpoint(state: StateFolder, training: TrainingState, process: Process) -> None:
    rng = all_gather_objects(_rng_state())  # every rank's dropout RNG, so a resume continues each stream
    if process.rank == 0:
        trainer_state = {
            "step": training.step,
            "optimizer": training.optimizer.state_dict(),
            "schedule": training.schedule.state_dict(),
            "rng": rng,
            "curves": training.curves,
            "heldout_curve": training.heldout_curve,
        }
        folder = save_checkpoint(state.path, training.step, state.fingerprint, training.model, trainer_state, keep=state.keep)
        log.info("step %d: checkpoint %s", training.step, folder)
    barrier()
