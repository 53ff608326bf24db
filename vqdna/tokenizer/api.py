"""The tokenizer as users and the pipeline see it: encode, decode, embed, save, load, hash.

A saved tokenizer is a directory with ``config.json`` (its type and
architecture) and its model: ``model.safetensors`` (weights and codebook
buffers) for the learned VQ/HRQ tokenizers, ``tokenizer.json`` for BPE, nothing
for k-mer and char. Its content hash, the sha256 of those files, is stamped into
every token file made with it and checked by every consumer.

Every tokenizer offers ``encode(sequences)`` (per sequence an array of codes,
levels x tokens), ``encode_with_starts`` (ids and each token's offset; level 1),
``decode(codes)`` and ``level_sizes``; learned ones also ``embed(codes)`` and
``codebook_tables()``, the frozen input embedding of the encoder.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from vqdna import VqdnaError, __version__
from vqdna.compiling import compile_mode
from vqdna.genome import base_ids, bases_from_ids
from vqdna.runtime import best_device
from vqdna.tokenizer.baselines import BASELINE_TYPES, BaselineTokenizer, BPETokenizer
from vqdna.tokenizer.compiled import CompiledCall
from vqdna.tokenizer.convnext import NUM_BASES
from vqdna.tokenizer.folder import CONFIG_FILE, WEIGHTS_FILE, tokenizer_hash
from vqdna.tokenizer.hrq import HRQ, HRQConfig
from vqdna.tokenizer.vq import VQVAE, VQConfig

MODEL_TYPES = {"vq": (VQConfig, VQVAE), "hrq": (HRQConfig, HRQ)}


def onehot(ids: torch.Tensor) -> torch.Tensor:
    """(B, L) base ids -> (B, L, 5) float one-hot."""
    return torch.nn.functional.one_hot(ids.long(), NUM_BASES).float()


def load_tokenizer(directory: str | Path, device: torch.device | str | None = None) -> Tokenizer:
    """Any saved tokenizer, learned or baseline, by the type in its config.json."""
    directory = Path(directory)
    digest = tokenizer_hash(directory)
    raw = json.loads((directory / CONFIG_FILE).read_text())
    raw.pop("producer", None)
    kind = raw.get("type")
    if kind in MODEL_TYPES:
        config_class, model_class = MODEL_TYPES[kind]
        if not (directory / WEIGHTS_FILE).is_file():
            raise VqdnaError(f"{directory}: not a saved tokenizer ({WEIGHTS_FILE} missing)")
        model = model_class(config_class(**raw))
        _load_weights(model, directory / WEIGHTS_FILE)
        return VQTokenizer(model, hash=digest, device=device)
    if kind in BASELINE_TYPES:
        config_class, tokenizer_class = BASELINE_TYPES[kind]
        if kind == "kmer" and "alphabet" not in raw:  # vqdna before stage 4 of train_tokenizer: ids over ACGTN
            raise VqdnaError(f"{directory / CONFIG_FILE}: a k-mer tokenizer of an older vqdna (5^k ids over ACGTN); retrain it")
        if tokenizer_class is BPETokenizer:
            return BPETokenizer(config_class(**raw), BPETokenizer.load_model(directory), hash=digest)
        return tokenizer_class(config_class(**raw), hash=digest)
    raise VqdnaError(f"{directory / CONFIG_FILE}: unknown tokenizer type {kind!r}")


def _load_weights(model: torch.nn.Module, path: Path) -> None:
    """Strict loading, except that training-only counters older files lack start at zero."""
    state = load_file(path)
    for name, buffer in model.state_dict().items():
        if name.endswith("unused_steps") and name not in state:  # a training-only counter newer than some saved files
            state[name] = torch.zeros_like(buffer)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[-1].strip()
        raise VqdnaError(f"{path}: weights do not fit this vqdna's tokenizer model ({first}); retrain the tokenizer") from None


class VQTokenizer:
    """A learned VQ-VAE or HRQ tokenizer: one code per level and ``stride`` nucleotides (the paper: 1)."""

    def __init__(
        self, model: VQVAE, *, hash: str | None = None, device: torch.device | str | None = None, compile: str | None = None
    ):
        """``compile``: the torch.compile mode of the encoder (None: ``$VQDNA_COMPILE_TOKENIZER``, else "none")."""
        self.device = torch.device(device) if device is not None else best_device()
        self.model = model.to(self.device).eval()
        self.config = model.config
        self.hash = hash
        self.compile_mode = compile_mode("tokenizer", compile)
        if self.compile_mode != "none":
            # encode_ids calls self.model.encode: this instance's encode becomes the compiled one (compiled
            # lazily, at the first batch). Rows are independent (LayerNorm, per-position convolutions and
            # code search), so a short last batch is padded to the full batch and reuses the compiled graph.
            self.model.encode = CompiledCall(
                model.encode, self.compile_mode, self.device.type, f"tokenizer {self.config.type} encode", pad_batch=True
            )

    @property
    def level_sizes(self) -> list[int]:
        return self.config.level_sizes

    @property
    def stride(self) -> int:
        """Nucleotides per code; a sequence of L nt has ceil(L / stride) codes per level."""
        return self.config.stride

    @property
    def num_levels(self) -> int:
        return len(self.level_sizes)

    @property
    def embedding_dim(self) -> int:
        return self.config.dim

    def codebook_tables(self) -> list[torch.Tensor]:
        """Each level's code vectors (K_n, D): the frozen input embedding of the encoder."""
        return [codebook.embed.detach().cpu() for codebook in self.model.codebooks]

    # -- persistence ---------------------------------------------------------------------------
    def save(self, directory: str | Path) -> str:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"producer": f"vqdna {__version__}", **asdict(self.config)}
        if config["stride"] == 1:  # the paper's tokenizer: written as before the option, so its content hash is unchanged
            del config["stride"]
        (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in self.model.state_dict().items()}
        save_file(state, directory / WEIGHTS_FILE, metadata={"format": "pt"})
        self.hash = tokenizer_hash(directory)
        return self.hash

    # -- batched encode / decode / embed --------------------------------------------------------
    @torch.no_grad()
    def encode_ids(self, ids: np.ndarray | torch.Tensor) -> list[np.ndarray]:
        """Equal-length base ids (N, L), numpy or torch -> codes per level, each (N, ceil(L / stride)) int64.

        Ids in pinned host memory reach a CUDA device by an asynchronous copy, so the
        caller's host work overlaps it; the codes come back synchronously.
        """
        x = onehot(torch.as_tensor(ids).to(self.device, non_blocking=True))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            codes = self.model.encode(x)
        return [c.cpu().numpy() for c in codes]

    def encode(self, sequences: list[str], batch_size: int = 256) -> list[np.ndarray]:
        """Sequences -> per sequence an array (levels, ceil(length / stride)) of codes.

        Sequences are batched by exact length, so a sequence's codes never depend
        on what it was batched with (the convolutions see no padding).
        """
        by_length: dict[int, list[int]] = defaultdict(list)
        for i, s in enumerate(sequences):
            by_length[len(s)].append(i)
        out: list[np.ndarray | None] = [None] * len(sequences)
        for length, members in by_length.items():
            for b in range(0, len(members), batch_size):
                chunk = members[b : b + batch_size]
                if length == 0:
                    codes = [np.zeros((len(chunk), 0), np.int64)] * self.num_levels
                else:
                    codes = self.encode_ids(np.stack([base_ids(sequences[i]) for i in chunk]))
                for j, i in enumerate(chunk):
                    out[i] = np.stack([level[j] for level in codes])
        return out  # type: ignore[return-value]

    def encode_with_starts(self, sequences: list[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """Level-1 codes and token offsets (one code per ``stride`` nucleotides: 0, s, 2s, ...)."""
        return [(c[0], np.arange(c.shape[1], dtype=np.int32) * self.stride) for c in self.encode(sequences)]

    @torch.no_grad()
    def embed(self, codes: list[np.ndarray]) -> list[np.ndarray]:
        """Per sequence codes (levels, L) -> the tokenizer embedding (L, D), float32."""
        return [
            self.model.embed([torch.as_tensor(c[n], device=self.device)[None] for n in range(len(c))])[0].float().cpu().numpy()
            for c in codes
        ]

    @torch.no_grad()
    def decode(self, codes: list[np.ndarray], lengths: list[int] | None = None) -> list[str]:
        """Per sequence codes (levels, T) -> the reconstructed nucleotides, T x stride of them.

        ``lengths`` (nt per sequence) cuts the tail a stride > 1 padded; without it a
        sequence whose length is not a multiple of the stride decodes a few bases longer.
        """
        out = []
        for i, c in enumerate(codes):
            logits = self.model.decode([torch.as_tensor(c[n], device=self.device)[None].long() for n in range(len(c))])
            bases = bases_from_ids(logits[0].argmax(-1).cpu().numpy())
            out.append(bases if lengths is None else bases[: lengths[i]])
        return out


def stride_metadata(tokenizer) -> dict[str, str]:
    """``vqdna.stride`` of a file of codes made with a strided tokenizer; absent means 1, so stride-1 files keep their shape."""
    stride = getattr(tokenizer, "stride", 1)
    return {"stride": str(stride)} if stride > 1 else {}


# Any tokenizer: what every consumer of codes accepts.
Tokenizer = VQTokenizer | BaselineTokenizer
