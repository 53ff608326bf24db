"""The tokenizers VQDNA is compared against, behind the same interface as the learned ones.

- ``kmer``: k-mers over A,C,G,T,N; overlapping (stride 1, DNABERT's 3-mer and
  6-mer) or non-overlapping (stride k, the Nucleotide Transformer's 6-mer, whose
  leftover tail bases become single-base tokens);
- ``bpe``: byte-pair encoding trained with HF ``tokenizers`` on the same
  windows (DNABERT-2 style, vocabulary 4096 by default);
- ``char``: one token per base (HyenaDNA's one-hot input).

Ids index each tokenizer's own vocabulary; every tokenizer decodes its ids back
to the exact input (N included). ``token_starts`` gives each token's offset in
the sequence. Baselines carry no fixed embedding: the encoder learns one.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from vqdna import VqdnaError, __version__
from vqdna.genome import BASES, base_ids, bases_from_ids, normalise_sequence
from vqdna.tokenizer.folder import BPE_FILE, CONFIG_FILE, tokenizer_hash


@dataclass
class KmerConfig:
    type: str = "kmer"
    k: int = 6
    overlapping: bool = True

    @property
    def level_sizes(self) -> list[int]:
        # every k-mer over ACGTN, then (non-overlapping only) the single bases of a leftover tail
        return [len(BASES) ** self.k + (0 if self.overlapping else len(BASES))]


@dataclass
class CharConfig:
    type: str = "char"

    @property
    def level_sizes(self) -> list[int]:
        return [len(BASES)]


@dataclass
class BPEConfig:
    type: str = "bpe"
    vocab_size: int = 4096
    max_train_windows: int = 200_000  # BPE statistics settle long before a whole genome is counted
    seed: int = 0

    @property
    def level_sizes(self) -> list[int]:
        return [self.vocab_size]


class BaselineTokenizer(ABC):
    """Shared plumbing: the config, the hash, save/load, per-sequence (1, n) code arrays."""

    embedding_dim = None  # no fixed embedding: the encoder learns one over the vocabulary
    config: KmerConfig | CharConfig | BPEConfig

    def __init__(self, config, hash: str | None = None):
        self.config = config
        self.hash = hash

    @property
    def level_sizes(self) -> list[int]:
        return self.config.level_sizes

    @property
    def num_levels(self) -> int:
        return 1

    def encode(self, sequences: list[str]) -> list[np.ndarray]:
        """Sequences -> per sequence an array (1, tokens) of ids."""
        return [ids[None, :] for ids, _ in self.encode_with_starts(sequences)]

    @abstractmethod
    def encode_with_starts(self, sequences: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per sequence (ids, token_starts)."""

    @abstractmethod
    def decode(self, codes: list[np.ndarray]) -> list[str]:
        """Per sequence ids (1, tokens) -> the exact sequence."""

    def save(self, directory: str | Path) -> str:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"producer": f"vqdna {__version__}", **asdict(self.config)}
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        self._save_model(directory)
        self.hash = tokenizer_hash(directory)
        return self.hash

    def _save_model(self, directory: Path) -> None:
        """Files beyond config.json (BPE's merges); none for rule-based tokenizers."""


class KmerTokenizer(BaselineTokenizer):
    """A k-mer's id is its base-5 number over ACGTN; a leftover base b of a non-overlapping tail is 5^k + b."""

    config: KmerConfig

    def encode_with_starts(self, sequences: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        k, out = self.config.k, []
        powers = len(BASES) ** np.arange(k - 1, -1, -1)
        for sequence in sequences:
            ids = base_ids(sequence).astype(np.int64)
            stride = 1 if self.config.overlapping else k
            starts = np.arange(0, max(0, len(ids) - k + 1), stride)
            kmers = np.lib.stride_tricks.sliding_window_view(ids, k)[starts] @ powers if len(starts) else np.empty(0, np.int64)
            if not self.config.overlapping:
                tail = np.arange(len(starts) * k, len(ids))
                kmers = np.concatenate([kmers, len(BASES) ** k + ids[tail]])
                starts = np.concatenate([starts, tail])
            elif len(ids) < k:  # too short for one k-mer: nothing to say about it
                raise VqdnaError(f"kmer: sequence of {len(ids)} nt is shorter than k={k}")
            out.append((kmers.astype(np.int64), starts.astype(np.int32)))
        return out

    def decode(self, codes: list[np.ndarray]) -> list[str]:
        k, out = self.config.k, []
        digits = len(BASES) ** np.arange(k - 1, -1, -1)
        for c in codes:
            ids = np.asarray(c[0], dtype=np.int64)
            whole = ids[ids < len(BASES) ** k]
            kmers = (whole[:, None] // digits) % len(BASES)  # (tokens, k) base ids
            if self.config.overlapping:
                bases = np.concatenate([kmers[0], kmers[1:, -1]]) if len(kmers) else np.empty(0, np.int64)
            else:
                bases = np.concatenate([kmers.ravel(), ids[ids >= len(BASES) ** k] - len(BASES) ** k])
            out.append(bases_from_ids(bases.astype(np.uint8)))
        return out


class CharTokenizer(BaselineTokenizer):
    config: CharConfig

    def encode_with_starts(self, sequences: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(base_ids(s).astype(np.int64), np.arange(len(s), dtype=np.int32)) for s in sequences]

    def decode(self, codes: list[np.ndarray]) -> list[str]:
        return [bases_from_ids(np.asarray(c[0], dtype=np.uint8)) for c in codes]


class BPETokenizer(BaselineTokenizer):
    """Byte-pair encoding over ACGTN, no pre-tokenization: merges may span a whole window."""

    config: BPEConfig

    def __init__(self, config: BPEConfig, model=None, hash: str | None = None):
        super().__init__(config, hash)
        self.model = model  # a trained tokenizers.Tokenizer

    @classmethod
    def train(cls, config: BPEConfig, windows: list[str]) -> "BPETokenizer":
        from tokenizers import Tokenizer, models, trainers

        if len(windows) > config.max_train_windows:
            pick = np.random.default_rng(config.seed).choice(len(windows), config.max_train_windows, replace=False)
            windows = [windows[i] for i in np.sort(pick)]
        model = Tokenizer(models.BPE())
        trainer = trainers.BpeTrainer(vocab_size=config.vocab_size, initial_alphabet=list(BASES), show_progress=False)
        model.train_from_iterator((normalise_sequence(w) for w in windows), trainer=trainer, length=len(windows))
        config.vocab_size = model.get_vocab_size()  # the data may support fewer merges than asked for
        return cls(config, model)

    def encode_with_starts(self, sequences: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        for s in sequences:
            base_ids(s)  # the sequence policy's errors, before BPE sees the text
        encodings = self.model.encode_batch([normalise_sequence(s) for s in sequences])
        return [(np.asarray(e.ids, np.int64), np.asarray([o[0] for o in e.offsets], np.int32)) for e in encodings]

    def decode(self, codes: list[np.ndarray]) -> list[str]:
        return ["".join(self.model.id_to_token(int(i)) for i in c[0]) for c in codes]

    def _save_model(self, directory: Path) -> None:
        self.model.save(str(directory / BPE_FILE))

    @classmethod
    def load_model(cls, directory: Path):
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(directory / BPE_FILE))


BASELINE_TYPES = {"kmer": (KmerConfig, KmerTokenizer), "char": (CharConfig, CharTokenizer), "bpe": (BPEConfig, BPETokenizer)}
