"""The tokenizers VQDNA is compared against, behind the same interface as the learned ones.

- ``kmer``: k-mers over A,C,G,T, and one unknown id for every k-mer with an N
  (DNABERT's vocabulary: 4^k k-mers, not 5^k, which at k = 8 would be a 390,625-row
  embedding 96% of which no window uses); overlapping (stride 1, DNABERT's 3-mer
  and 6-mer) or non-overlapping (stride k, the Nucleotide Transformer's 6-mer,
  whose leftover tail bases become single-base tokens);
- ``bpe``: byte-pair encoding trained with HF ``tokenizers`` on the same
  windows (DNABERT-2 style, vocabulary 4096 by default);
- ``char``: one token per base (HyenaDNA's one-hot input).

Ids index each tokenizer's own vocabulary; every tokenizer decodes its ids back
to the exact input, except that a k-mer tokenizer over ACGT decodes a base as N
where every k-mer over it is unknown (``alphabet: ACGTN`` gives every k-mer its
own id, 5^k of them, and exact round trips). ``token_starts`` gives each token's
offset in the sequence. Baselines carry no fixed embedding: the encoder learns one.
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


KMER_ALPHABETS = ("ACGT", "ACGTN")  # prefixes of BASES, so a k-mer's digits are base ids


@dataclass
class KmerConfig:
    type: str = "kmer"
    k: int = 6
    overlapping: bool = True
    alphabet: str = "ACGT"  # k-mers over these bases get an id each; any other k-mer shares the unknown id

    def __post_init__(self):
        if self.alphabet not in KMER_ALPHABETS:
            raise VqdnaError(f"kmer: alphabet {self.alphabet!r} is not one of {', '.join(KMER_ALPHABETS)}")
        if self.k < 1:
            raise VqdnaError(f"kmer: k={self.k} must be at least 1")

    @property
    def kmer_ids(self) -> int:
        return len(self.alphabet) ** self.k

    @property
    def unknown_id(self) -> int | None:
        """The id of every k-mer with a base outside the alphabet; None when the alphabet has them all."""
        return self.kmer_ids if len(self.alphabet) < len(BASES) else None

    @property
    def tail_offset(self) -> int:
        """A leftover tail base b of a non-overlapping k-mer tokenizer is tail_offset + b."""
        return self.kmer_ids + (self.unknown_id is not None)

    @property
    def level_sizes(self) -> list[int]:
        # the k-mers, the unknown id, then (non-overlapping only) the single bases of a leftover tail
        return [self.tail_offset + (0 if self.overlapping else len(BASES))]


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
    """A k-mer's id is its number in base len(alphabet); the unknown id and the tail bases follow (see KmerConfig)."""

    config: KmerConfig

    def encode_with_starts(self, sequences: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        config, out = self.config, []
        k, radix = config.k, len(config.alphabet)
        powers = radix ** np.arange(k - 1, -1, -1)
        stride = 1 if config.overlapping else k
        for sequence in sequences:
            ids = base_ids(sequence).astype(np.int64)
            starts = np.arange(0, max(0, len(ids) - k + 1), stride)
            if len(starts):
                digits = np.lib.stride_tricks.sliding_window_view(ids, k)[starts]
                kmers = digits @ powers
                if config.unknown_id is not None:
                    kmers[(digits >= radix).any(axis=1)] = config.unknown_id
            else:
                kmers = np.empty(0, np.int64)
            if not config.overlapping:
                tail = np.arange(len(starts) * k, len(ids))
                kmers = np.concatenate([kmers, config.tail_offset + ids[tail]])
                starts = np.concatenate([starts, tail])
            elif len(ids) < k:  # too short for one k-mer: nothing to say about it
                raise VqdnaError(f"kmer: sequence of {len(ids)} nt is shorter than k={k}")
            out.append((kmers.astype(np.int64), starts.astype(np.int32)))
        return out

    def decode(self, codes: list[np.ndarray]) -> list[str]:
        config, out = self.config, []
        radix, n = len(config.alphabet), BASES.index("N")
        powers = radix ** np.arange(config.k - 1, -1, -1)
        for c in codes:
            ids = np.asarray(c[0], dtype=np.int64)
            whole = ids[ids < config.tail_offset]
            kmers = (whole[:, None] // powers) % radix  # (tokens, k) base ids
            known = whole < config.kmer_ids
            if config.overlapping:
                # A base is lost only where every k-mer over it is unknown (an N, or a gap of < k bases between Ns).
                bases = np.full(len(whole) + config.k - 1 if len(whole) else 0, n, dtype=np.int64)
                bases[np.flatnonzero(known)[:, None] + np.arange(config.k)] = kmers[known]
            else:
                kmers[~known] = n
                bases = np.concatenate([kmers.ravel(), ids[ids >= config.tail_offset] - config.tail_offset])
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
