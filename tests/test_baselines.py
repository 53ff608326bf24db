"""Baseline tokenizers (k-mer overlapping / non-overlapping, char, BPE): exact round trips, token_starts,
ids, save/load/hash, token files, stage-1 training and evaluation, and every downstream stage run on them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pysam
import pytest
from helpers import TINY_RUN, codes_of_token_files, write_ggg_gue_folder

from vqdna import VqdnaError
from vqdna.artifacts import read_metadata
from vqdna.datasets.prepare import prepare_dataset
from vqdna.datasets.spec import DatasetSpec
from vqdna.finetune.train import finetune
from vqdna.genome import normalise_sequence
from vqdna.lm.configuration import VqdnaConfig
from vqdna.lm.modeling import VqdnaForMaskedLM
from vqdna.lm.pretrain import pretrain
from vqdna.tokenizer.api import load_tokenizer, tokenizer_hash
from vqdna.tokenizer.baselines import (
    BPEConfig,
    BPETokenizer,
    CharConfig,
    CharTokenizer,
    KmerConfig,
    KmerTokenizer,
)
from vqdna.tokenizer.evaluate import evaluate_tokenizer
from vqdna.tokenizer.tokens import check_token_file, tokenize_windows
from vqdna.tokenizer.train import train_tokenizer
from vqdna.windows import WindowSettings, write_windows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


KEY_COLUMNS = ["genome", "contig", "start", "end", "strand", "split"]


def _random_sequence(rng: np.random.Generator, length: int, n_rate: float = 0.0) -> str:
    letters = rng.choice(list("ACGT"), length)
    letters[rng.random(length) < n_rate] = "N"
    return "".join(letters)


def _bpe_windows(count: int = 300, length: int = 64) -> list[str]:
    """A few hundred windows of a 'genome' with repeats, so BPE has merges worth learning."""
    rng = np.random.default_rng(11)
    motifs = ["ACGTTGCA", "GGGCCC", "TATAAT", "AAAAAA"]
    out = []
    for _ in range(count):
        parts = []
        while sum(map(len, parts)) < length:
            parts.append(motifs[rng.integers(len(motifs))] if rng.random() < 0.5 else _random_sequence(rng, 5, 0.02))
        out.append("".join(parts)[:length])
    return out


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(BPEConfig(vocab_size=64), _bpe_windows())


def _tokenizers(bpe: BPETokenizer) -> dict:
    return {
        "kmer3": KmerTokenizer(KmerConfig(k=3)),
        "kmer6": KmerTokenizer(KmerConfig(k=6)),
        "kmer6_nonoverlapping": KmerTokenizer(KmerConfig(k=6, overlapping=False)),
        "kmer6_acgtn": KmerTokenizer(KmerConfig(k=6, alphabet="ACGTN")),
        "kmer6_nonoverlapping_acgtn": KmerTokenizer(KmerConfig(k=6, overlapping=False, alphabet="ACGTN")),
        "char": CharTokenizer(CharConfig()),
        "bpe": bpe,
    }


NAMES = ["kmer3", "kmer6", "kmer6_nonoverlapping", "kmer6_acgtn", "kmer6_nonoverlapping_acgtn", "char", "bpe"]
EXACT = ["kmer6_acgtn", "kmer6_nonoverlapping_acgtn", "char", "bpe"]  # every id decodes to the bases it stands for
KMERS_OVER_ACGT = ["kmer3", "kmer6", "kmer6_nonoverlapping"]  # k-mers with an N share one unknown id

# Soft-masked letters, every IUPAC ambiguity code, N runs, lengths that are not multiples of 6.
RAW_SEQUENCES = [
    "acgtRYKMSWBDHVnNacgtACGTTTGACCA",
    "NNNNNNNNNNN",
    "ACGTACGTNA",
    "ggggccccaaaatttt",
    "ACGTNNACGTTTTTTTTTTTTTTGA",
    "ACGTAC",
    "ACGTACG",
]


def _sequences() -> list[str]:
    rng = np.random.default_rng(5)
    return RAW_SEQUENCES + [_random_sequence(rng, n, 0.05) for n in (6, 7, 11, 29, 64, 100, 257)]


# -- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", EXACT)
def test_exact_baselines_round_trip_n_included(bpe, name):
    tokenizer = _tokenizers(bpe)[name]
    sequences = _sequences()
    codes = tokenizer.encode(sequences)
    assert all(c.ndim == 2 and c.shape[0] == 1 for c in codes)
    decoded = tokenizer.decode(codes)
    for raw, back in zip(sequences, decoded, strict=True):
        assert back == normalise_sequence(raw), (raw, back)
    assert decoded[0] == "ACGTNNNNNNNNNNNNACGTACGTTTGACCA"  # IUPAC -> N, lowercase -> uppercase


def _known_bases(sequence: str, k: int, overlapping: bool) -> str:
    """The sequence with N for every base no N-free k-mer token covers (a non-overlapping tail is kept)."""
    starts = range(0, len(sequence) - k + 1, 1 if overlapping else k)
    known = [False] * len(sequence)
    for start in starts:
        if "N" not in sequence[start : start + k]:
            known[start : start + k] = [True] * k
    if not overlapping:
        tail = len(starts) * k
        known[tail:] = [True] * (len(sequence) - tail)
    return "".join(base if keep else "N" for base, keep in zip(sequence, known, strict=True))


@pytest.mark.parametrize("name", KMERS_OVER_ACGT)
def test_kmers_over_acgt_round_trip_all_but_the_bases_only_unknown_kmers_cover(bpe, name):
    tokenizer = _tokenizers(bpe)[name]
    k, overlapping = tokenizer.config.k, tokenizer.config.overlapping
    sequences = [normalise_sequence(s) for s in _sequences()]
    decoded = tokenizer.decode(tokenizer.encode(sequences))
    lossy = 0
    for sequence, back in zip(sequences, decoded, strict=True):
        assert back == _known_bases(sequence, k, overlapping), (sequence, back)
        lossy += back != sequence
        if "N" not in sequence:
            assert back == sequence
    assert lossy > 0  # the sequences do put Ns next to bases



@pytest.mark.parametrize("name", NAMES)
def test_ids_lie_in_the_vocabulary(bpe, name):
    tokenizer = _tokenizers(bpe)[name]
    ids = np.concatenate([c[0] for c in tokenizer.encode(_sequences())])
    assert ids.dtype.kind == "i"
    assert ids.min() >= 0 and ids.max() < tokenizer.level_sizes[0]
    assert tokenizer.num_levels == 1 and len(tokenizer.level_sizes) == 1


def test_vocabulary_sizes():
    assert KmerConfig(k=3).level_sizes == [4**3 + 1]  # + the unknown id
    assert KmerConfig(k=6).level_sizes == [4**6 + 1] == [4097]
    assert KmerConfig(k=8).level_sizes == [65537]
    assert KmerConfig(k=6, overlapping=False).level_sizes == [4**6 + 1 + 5]  # + the single bases of a tail
    assert KmerConfig(k=6, alphabet="ACGTN").level_sizes == [5**6]  # no unknown id: every k-mer has its own
    assert KmerConfig(k=6, overlapping=False, alphabet="ACGTN").level_sizes == [5**6 + 5]
    assert CharConfig().level_sizes == [5]


def test_kmer_id_is_the_base4_number_over_acgt_and_a_kmer_with_n_is_unknown():
    tokenizer = KmerTokenizer(KmerConfig(k=3))
    assert tokenizer.encode(["ACG"])[0].tolist() == [[0 * 16 + 1 * 4 + 2]] == [[6]]
    assert tokenizer.encode(["TTT"])[0].tolist() == [[63]]
    # ACGTNA -> ACG, CGT, GTN, TNA: the last two are the unknown id 64
    assert tokenizer.encode(["ACGTNA"])[0].tolist() == [[6, 1 * 16 + 2 * 4 + 3, 64, 64]]
    assert tokenizer.encode(["NNN"])[0].tolist() == [[64]]
    six = KmerTokenizer(KmerConfig(k=6, overlapping=False))
    assert six.encode(["ACGTAC"])[0].tolist() == [[0 * 1024 + 1 * 256 + 2 * 64 + 3 * 16 + 0 * 4 + 1]] == [[433]]
    acgtn = KmerTokenizer(KmerConfig(k=3, alphabet="ACGTN"))  # base 5: N is a digit, nothing is unknown
    assert [c.tolist() for c in acgtn.encode(["ACG", "NNN"])] == [[[0 * 25 + 1 * 5 + 2]], [[4 * 25 + 4 * 5 + 4]]]


def test_kmer_alphabet_and_k_are_checked():
    with pytest.raises(VqdnaError, match="alphabet 'ACGU'"):
        KmerConfig(alphabet="ACGU")
    with pytest.raises(VqdnaError, match="k=0"):
        KmerConfig(k=0)


def test_a_kmer_tokenizer_saved_with_ids_over_acgtn_is_refused_with_what_to_do(tmp_path):
    folder = tmp_path / "kmer6"
    KmerTokenizer(KmerConfig(k=6)).save(folder)
    old = json.loads((folder / "config.json").read_text())
    del old["alphabet"]  # what vqdna wrote before k-mer ids were over ACGT
    (folder / "config.json").write_text(json.dumps(old))
    with pytest.raises(VqdnaError, match=r"config.json: a k-mer tokenizer of an older vqdna .*retrain it"):
        load_tokenizer(folder)


def test_char_ids_are_acgtn():
    assert CharTokenizer(CharConfig()).encode(["ACGTNa"])[0].tolist() == [[0, 1, 2, 3, 4, 0]]


def test_nonoverlapping_tail_bases_become_single_base_tokens():
    tokenizer = KmerTokenizer(KmerConfig(k=6, overlapping=False))
    tail = 4**6 + 1  # after the k-mers and the unknown id
    sequence = "ACGTACGTNA"  # one 6-mer, then a 4-base tail G T N A
    ids, starts = tokenizer.encode_with_starts([sequence])[0]
    assert ids.tolist() == [0 * 1024 + 1 * 256 + 2 * 64 + 3 * 16 + 0 * 4 + 1, tail + 2, tail + 3, tail + 4, tail + 0]
    assert starts.tolist() == [0, 6, 7, 8, 9]
    assert tokenizer.decode([ids[None]]) == [sequence]
    short_ids, short_starts = tokenizer.encode_with_starts(["GTN"])[0]  # shorter than k: all tail
    assert short_ids.tolist() == [tail + 2, tail + 3, tail + 4] and short_starts.tolist() == [0, 1, 2]
    assert tokenizer.decode([short_ids[None]]) == ["GTN"]


def test_overlapping_kmer_refuses_a_sequence_shorter_than_k():
    with pytest.raises(VqdnaError, match="shorter than k"):
        KmerTokenizer(KmerConfig(k=6)).encode(["ACGTA"])


@pytest.mark.parametrize("name", NAMES)
def test_baselines_apply_the_sequence_policy_errors(bpe, name):
    with pytest.raises(VqdnaError):
        _tokenizers(bpe)[name].encode(["ACGTAC1GTACGT"])


# -- token_starts ---------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [3, 6])
def test_overlapping_kmer_starts_are_every_position(k):
    tokenizer = KmerTokenizer(KmerConfig(k=k))
    for sequence in _sequences():
        ids, starts = tokenizer.encode_with_starts([sequence])[0]
        assert starts.dtype == np.int32
        assert starts.tolist() == list(range(len(sequence) - k + 1))
        assert len(ids) == len(starts)


def test_nonoverlapping_kmer_starts_are_multiples_of_k_then_tail_positions():
    tokenizer = KmerTokenizer(KmerConfig(k=6, overlapping=False))
    for sequence in _sequences():
        ids, starts = tokenizer.encode_with_starts([sequence])[0]
        whole = len(sequence) // 6
        assert starts.tolist() == [6 * i for i in range(whole)] + list(range(6 * whole, len(sequence)))
        assert len(ids) == whole + len(sequence) % 6


def test_char_starts_are_every_position():
    ids, starts = CharTokenizer(CharConfig()).encode_with_starts(["ACGTNNA"])[0]
    assert starts.tolist() == list(range(7)) and len(ids) == 7


def test_bpe_starts_are_cumulative_lengths_of_the_decoded_tokens(bpe):
    multi_base = 0
    for sequence in _sequences():
        ids, starts = bpe.encode_with_starts([sequence])[0]
        pieces = [bpe.decode([np.array([[i]])])[0] for i in ids]
        assert starts.tolist() == np.concatenate([[0], np.cumsum([len(p) for p in pieces])[:-1]]).tolist()
        assert "".join(pieces) == normalise_sequence(sequence)
        multi_base += sum(len(p) > 1 for p in pieces)
    assert multi_base > 0  # the merges are used: BPE is not a char tokenizer here


def test_bpe_learns_the_vocabulary_size_asked_for(bpe):
    assert bpe.level_sizes == [64] == [bpe.model.get_vocab_size()]
    vocabulary = bpe.model.get_vocab()
    assert set("ACGTN") <= set(vocabulary)
    assert any(len(token) >= 4 for token in vocabulary)


# -- save, load, hash ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_save_load_round_trip_gives_identical_encodings_and_hash(bpe, name, tmp_path):
    tokenizer = _tokenizers(bpe)[name]
    digest = tokenizer.save(tmp_path / name)
    assert digest == tokenizer.hash == tokenizer_hash(tmp_path / name)
    loaded = load_tokenizer(tmp_path / name, device="cpu")
    assert type(loaded) is type(tokenizer)
    assert loaded.hash == digest
    assert loaded.level_sizes == tokenizer.level_sizes
    assert loaded.config == tokenizer.config
    sequences = _sequences()
    for ours, theirs in zip(tokenizer.encode_with_starts(sequences), loaded.encode_with_starts(sequences), strict=True):
        assert np.array_equal(ours[0], theirs[0]) and np.array_equal(ours[1], theirs[1])
    assert loaded.save(tmp_path / f"{name}_again") == digest  # saving again: same bytes, same hash


def test_hash_is_sha256_of_config_and_covers_tokenizer_json_for_bpe(bpe, tmp_path):
    folder = tmp_path / "bpe"
    digest = bpe.save(folder)
    assert {p.name for p in folder.iterdir()} == {"config.json", "tokenizer.json"}
    by_hand = hashlib.sha256(
        b"config.json" + (folder / "config.json").read_bytes() + b"tokenizer.json" + (folder / "tokenizer.json").read_bytes()
    )
    assert digest == by_hand.hexdigest()
    raw = bytearray((folder / "tokenizer.json").read_bytes())
    at = raw.rindex(b"A")  # one letter of the last merge or vocabulary entry; config.json is untouched
    raw[at] = ord("C")
    (folder / "tokenizer.json").write_bytes(bytes(raw))
    assert tokenizer_hash(folder) != digest


def test_kmer_hash_differs_by_k_and_by_overlap(tmp_path):
    digests = {
        KmerTokenizer(KmerConfig(k=3)).save(tmp_path / "a"),
        KmerTokenizer(KmerConfig(k=6)).save(tmp_path / "b"),
        KmerTokenizer(KmerConfig(k=6, overlapping=False)).save(tmp_path / "c"),
        CharTokenizer(CharConfig()).save(tmp_path / "d"),
    }
    assert len(digests) == 4
    assert {p.name for p in (tmp_path / "a").iterdir()} == {"config.json"}
    assert json.loads((tmp_path / "c" / "config.json").read_text())["overlapping"] is False


# -- token files --------------------------------------------------------------------------------------


def _write_genome(folder: Path, length: int = 6400, window: int = 64) -> Path:
    """A one-contig genome with soft-masking, IUPAC letters and a few N, cut into windows."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(3)
    letters = np.array(list(_random_sequence(rng, length)))
    soft = rng.random(length) < 0.2
    letters[soft] = np.char.lower(letters[soft])
    letters[rng.random(length) < 0.01] = "R"
    letters[rng.random(length) < 0.01] = "N"
    sequence = "".join(letters)
    fasta = folder / "toy.fa"
    fasta.write_text(">chr1 toy\n" + "\n".join(sequence[i : i + 60] for i in range(0, length, 60)) + "\n")
    pysam.faidx(str(fasta))
    windows = folder / "windows.parquet"
    write_windows(fasta, windows, "toy", WindowSettings(length=window, step=window))
    return windows


@pytest.fixture(scope="module")
def genome(tmp_path_factory) -> Path:
    return _write_genome(tmp_path_factory.mktemp("baseline_genome"))


@pytest.mark.parametrize("name", NAMES)
def test_tokenize_windows_writes_ids_and_token_starts(bpe, genome, name, tmp_path):
    tokenizer = _tokenizers(bpe)[name]
    digest = tokenizer.save(tmp_path / "tokenizer")
    rows = tokenize_windows(tmp_path / "tokenizer", name, genome, tmp_path / "tokens.parquet", device="cpu")
    windows = pq.read_table(genome)
    tokens = pq.read_table(tmp_path / "tokens.parquet")
    assert rows == windows.num_rows == tokens.num_rows
    assert tokens.schema.field("codes_l1").type == pa.list_(pa.uint16())
    assert tokens.schema.field("token_starts").type == pa.list_(pa.int32())
    assert "codes_l2" not in tokens.schema.names
    for key in KEY_COLUMNS:
        assert tokens.column(key).to_pylist() == windows.column(key).to_pylist(), key
    meta = read_metadata(tmp_path / "tokens.parquet")
    assert meta["vqdna.tokenizer_type"] == tokenizer.config.type
    assert meta["vqdna.tokenizer"] == name
    assert meta["vqdna.tokenizer_hash"] == digest
    assert meta["vqdna.genome"] == "toy"

    sequences = windows.column("sequence").to_pylist()
    expected = tokenizer.encode_with_starts(sequences)
    codes_column, starts_column = tokens.column("codes_l1").to_pylist(), tokens.column("token_starts").to_pylist()
    for (ids, starts), got_ids, got_starts in zip(expected, codes_column, starts_column, strict=True):
        assert got_ids == ids.tolist() and got_starts == starts.tolist()
    exact = sequences[0] if name in EXACT else _known_bases(sequences[0], tokenizer.config.k, tokenizer.config.overlapping)
    assert tokenizer.decode([np.array([codes_column[0]])]) == [exact]  # a token row turns back into its window

    check_token_file(tmp_path / "tokens.parquet", digest)
    codes = codes_of_token_files([tmp_path / "tokens.parquet"])
    assert codes.lengths.tolist() == [len(ids) for ids, _ in expected]
    assert codes.values.shape == (len(expected), max(codes.lengths), 1)
    for row, (ids, _) in enumerate(expected):
        assert codes.values[row, : len(ids), 0].tolist() == ids.tolist()
    train = codes_of_token_files([tmp_path / "tokens.parquet"], "train")
    assert len(train) == windows.column("split").to_pylist().count("train")
    with pytest.raises(VqdnaError, match="made with tokenizer hash"):
        check_token_file(tmp_path / "tokens.parquet", "0" * 64)


# -- stage 1: train and evaluate -----------------------------------------------------------------------

BASELINE_SETTINGS = {
    "kmer3": {"type": "kmer", "k": 3, "train_genomes": ["toy"]},
    "kmer6_nonoverlapping": {"type": "kmer", "k": 6, "overlapping": False},
    "char": {"type": "char"},
    "bpe": {"type": "bpe", "vocab_size": 64, "train_genomes": ["toy"]},
}


@pytest.mark.parametrize("name", list(BASELINE_SETTINGS))
def test_train_and_evaluate_a_baseline(genome, name, tmp_path):
    settings = BASELINE_SETTINGS[name]
    out = tmp_path / name
    summary = train_tokenizer(name, settings, [genome], out, device="cpu")
    files = {p.name for p in out.iterdir()}
    assert {"config.json", "training.json"} <= files
    assert ("tokenizer.json" in files) == (settings["type"] == "bpe")
    assert "model.safetensors" not in files
    assert summary["tokenizer_hash"] == tokenizer_hash(out)
    assert json.loads((out / "training.json").read_text())["tokenizer_hash"] == summary["tokenizer_hash"]

    metrics = evaluate_tokenizer(out, [genome], {"heldout_windows": 16}, out / "metrics.json")
    written = json.loads((out / "metrics.json").read_text())
    assert written["reconstruction_accuracy"] == metrics["reconstruction_accuracy"]
    if settings["type"] == "kmer":  # bases only unknown k-mers (with an N) cover are lost; 2% of the toy genome is N or R
        assert 0.8 < metrics["reconstruction_accuracy"] < 1.0
    else:
        assert metrics["reconstruction_accuracy"] == 1.0
    assert written["type"] == settings["type"]
    assert written["tokenizer_hash"] == summary["tokenizer_hash"]
    assert written["training"]["tokenizer_hash"] == summary["tokenizer_hash"]
    level = written["levels"][0]
    tokenizer = load_tokenizer(out, device="cpu")
    assert level["codebook_size"] == tokenizer.level_sizes[0]
    assert 0 < level["usage"] <= 1
    assert 1 <= level["perplexity"] <= tokenizer.level_sizes[0]
    test_windows = pq.read_table(genome, filters=[("split", "==", "test")]).num_rows
    assert written["heldout_windows"] == min(16, test_windows)
    if settings["type"] == "kmer" and settings.get("overlapping", True):
        assert level["tokens_per_window"] == 64 - 3 + 1
    elif settings["type"] == "kmer":
        assert level["tokens_per_window"] == 64 // 6 + 64 % 6
    elif settings["type"] == "char":
        assert level["tokens_per_window"] == 64
    else:
        assert 1 < level["tokens_per_window"] < 64  # merges shorten the windows


@pytest.mark.parametrize(
    ("settings", "unknown"),
    [
        ({"type": "kmer", "width": 3}, "width"),
        ({"type": "char", "k": 3}, "k"),
        ({"type": "bpe", "vocab_size": 64, "steps": 10}, "steps"),
        ({"type": "kmer", "k": 3, "learning_rate": 1e-3}, "learning_rate"),
    ],
)
def test_unknown_baseline_setting_raises_naming_it(genome, settings, unknown, tmp_path):
    with pytest.raises(VqdnaError, match=rf"unknown setting\(s\) {unknown}\b"):
        train_tokenizer("b", settings, [genome], tmp_path / "b", device="cpu")
    assert not (tmp_path / "b").exists()


# -- stages 2 and 3 on a baseline --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gue_dataset(tmp_path_factory) -> tuple[DatasetSpec, Path]:
    folder = tmp_path_factory.mktemp("baseline_gue")
    write_ggg_gue_folder(folder / "gue", rows_per_split=32)
    spec = DatasetSpec(
        dataset="ggg", group="EMP", task="classification", num_labels=2, metric="mcc", max_length=20,
        epochs=1, batch_size=8, learning_rate=1e-3, warmup_steps=1, source=str(folder / "gue"),
    )
    prepare_dataset(spec, folder / "dataset")
    return spec, folder / "dataset"


@pytest.mark.parametrize("name", ["bpe", "kmer3", "kmer6_nonoverlapping", "char"])
def test_pretrain_and_finetune_run_on_a_baseline(genome, gue_dataset, name, tmp_path):
    settings = BASELINE_SETTINGS[name]
    train_tokenizer(name, settings, [genome], tmp_path / "tokenizer", device="cpu")
    tokenizer = load_tokenizer(tmp_path / "tokenizer", device="cpu")
    tokenize_windows(tmp_path / "tokenizer", name, genome, tmp_path / "tokens.parquet", device="cpu")
    codes = codes_of_token_files([tmp_path / "tokens.parquet"], "train")
    max_length = 12
    assert int(codes.lengths.max()) > max_length  # windows are cut into pieces: chunking is exercised

    run = {**TINY_RUN, "tokenizer": name, "max_length": max_length}
    result = pretrain("tiny_run", run, tmp_path / "tokenizer", [tmp_path / "tokens.parquet"], tmp_path / "pretrained", device="cpu")
    assert result["train_sequences"] == int(np.ceil(codes.lengths / max_length).sum()) > len(codes)
    assert result["tokenizer_hash"] == tokenizer.hash
    config = VqdnaConfig.from_pretrained(tmp_path / "pretrained")
    assert config.code_embedding_dim is None  # baselines: a learned embedding, no frozen codebook
    assert config.vocab_sizes == tokenizer.level_sizes
    assert config.tokenizer_type == settings["type"]
    assert config.tokenizer_hash == tokenizer.hash
    model = VqdnaForMaskedLM.from_pretrained(tmp_path / "pretrained")
    assert [e.num_embeddings for e in model.vqdna.embeddings.code_embeddings] == tokenizer.level_sizes
    assert all(e.weight.requires_grad for e in model.vqdna.embeddings.code_embeddings)
    assert (tmp_path / "pretrained" / "model.safetensors").is_file()

    spec, dataset = gue_dataset
    metrics = finetune(spec, {}, 0, tmp_path / "pretrained", tmp_path / "tokenizer", dataset, tmp_path / "finetuned", device="cpu")
    written = json.loads((tmp_path / "finetuned" / "metrics.json").read_text())
    assert written["test"] == metrics["test"]
    assert {"accuracy", "f1", "mcc"} <= set(written["test"])
    assert written["tokenizer_hash"] == tokenizer.hash
    assert (tmp_path / "finetuned" / "predictions.parquet").is_file()
