"""`vqdna embed` and `vqdna predict`: a user's FASTA or CSV in, embeddings or predictions out, from saved models."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest
import torch
from helpers import data_file, tiny_pretrained
from peft import PeftModel
from transformers import AutoModel

from vqdna.artifacts import read_metadata
from vqdna.cli import main
from vqdna.datasets.prepare import prepare_dataset
from vqdna.datasets.spec import DatasetSpec, read_split
from vqdna.finetune.train import finetune
from vqdna.lm.modeling import VqdnaForMaskedLM, VqdnaForSequenceClassification
from vqdna.metrics import classification_metrics
from vqdna.predict import embed
from vqdna.tokenizer.api import load_tokenizer, tokenizer_hash

PROM = "gue/prom/prom_core_notata"
SUBSET_ROWS = {"train": 96, "dev": 48, "test": 200}  # the first rows of each real split
FASTA_RECORDS = {  # mixed case, an IUPAC letter, lengths that pad when batched together
    "short": "acgtRACGTTGCA" * 2,
    "middle": "GGCATTACNNGATCCA" * 4,
    "long": "TTGACAtataatGCCGTAAC" * 6,
}


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """These models are tiny: one thread is many times faster than two on a busy 2-core machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _gue_subset(source: Path, folder: Path) -> Path:
    folder.mkdir()
    for split, rows in SUBSET_ROWS.items():
        lines = (source / f"{split}.csv").read_text().splitlines()[: rows + 1]
        (folder / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.fixture(scope="module")
def stage(test_data, tmp_path_factory) -> Path:
    """Tiny tokenizer + pretrained model, and a real fine-tuning run on GUE core promoters, made as the workflow
    makes them: from the working directory, with relative paths (so the adapter records ``pretrained``)."""
    folder = tmp_path_factory.mktemp("predict")
    tiny_pretrained(folder, seed=5, length=2400)
    spec = DatasetSpec(
        dataset="prom_core_notata", task="classification", num_labels=2, max_length=70, epochs=1, batch_size=16,
        learning_rate=1e-3, warmup_steps=1, source=str(_gue_subset(data_file(test_data, PROM), folder / "gue")),
    )
    prepare_dataset(spec, folder / "dataset")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        finetune(spec, {"lora": {"r": 2, "alpha": 4}}, 0, "pretrained", "tokenizer", "dataset", "finetuned", threads=1, device="cpu")
    sequences, labels = read_split(folder / "dataset" / "test.parquet")
    (folder / "test.csv").write_text("sequence,label\n" + "".join(f"{s},{l}\n" for s, l in zip(sequences, labels)))
    with gzip.open(folder / "user.fa.gz", "wt") as handle:
        for name, sequence in FASTA_RECORDS.items():
            handle.write(f">{name} a description\n" + "\n".join(sequence[i : i + 30] for i in range(0, len(sequence), 30)) + "\n")
    return folder


def _vqdna(*args: str | Path) -> int:
    return main([str(a) for a in args] + ["--device", "cpu", "--threads", "1"])


def _predict(stage: Path, input_path: Path, output: Path, *extra: str | Path) -> int:
    return _vqdna("predict", "--tokenizer", stage / "tokenizer", "--model", stage / "finetuned", "--input", input_path, "--output", output, *extra)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(1, keepdims=True))
    return shifted / shifted.sum(1, keepdims=True)


def _hand_embedding(encoder: torch.nn.Module, tokenizer_dir: Path, sequence: str, chunk: int | None = None) -> np.ndarray:
    """One sequence alone (no padding): the mean over its tokens of last_hidden_state, piece by piece."""
    codes = load_tokenizer(tokenizer_dir, device="cpu").encode([sequence.upper().replace("R", "N")])[0]
    chunk = chunk or codes.shape[1]
    with torch.no_grad():
        states = [
            encoder(input_ids=torch.as_tensor(codes[:, i : i + chunk].T[None])).last_hidden_state[0]
            for i in range(0, codes.shape[1], chunk)
        ]
    return torch.cat(states).mean(0).numpy()


def _lora_encoder(stage: Path) -> torch.nn.Module:
    base = VqdnaForSequenceClassification.from_pretrained(stage / "pretrained", num_labels=2)
    return PeftModel.from_pretrained(base, stage / "finetuned" / "adapter").eval().get_base_model().vqdna


# -- predict -------------------------------------------------------------------------------------------


def test_predict_on_a_saved_model_reproduces_the_test_metrics(stage, tmp_path):
    assert _predict(stage, stage / "test.csv", tmp_path / "predictions.csv") == 0
    written = pacsv.read_csv(tmp_path / "predictions.csv", convert_options=pacsv.ConvertOptions(column_types={"id": pa.string()}))
    assert written.column_names == ["id", "label", "prediction", "probability_0", "probability_1"]
    _, labels = read_split(stage / "dataset" / "test.parquet")
    assert written.column("id").to_pylist() == [str(i) for i in range(SUBSET_ROWS["test"])]
    assert written.column("label").to_pylist() == labels.tolist()

    finetuned = pq.read_table(stage / "finetuned" / "predictions.parquet")
    predictions = np.array(written.column("prediction").to_pylist())
    assert predictions.tolist() == finetuned.column("prediction").to_pylist()
    recomputed = classification_metrics(labels, predictions)
    recorded = json.loads((stage / "finetuned" / "metrics.json").read_text())["test"]
    assert np.allclose([recomputed[m] for m in ("accuracy", "f1", "mcc")], [recorded[m] for m in ("accuracy", "f1", "mcc")])

    probabilities = np.stack([written.column(f"probability_{k}").to_numpy() for k in (0, 1)], axis=1)
    assert np.allclose(probabilities, _softmax(np.array(finetuned.column("logits").to_pylist())), atol=1e-5)


def test_predict_on_a_fasta_gives_the_same_predictions_as_parquet_with_provenance(stage, tmp_path):
    sequences, _ = read_split(stage / "dataset" / "test.parquet")
    fasta = tmp_path / "test.fasta"
    fasta.write_text("".join(f">row{i}\n{s[:35].lower()}\n{s[35:]}\n" for i, s in enumerate(sequences)))
    assert _predict(stage, fasta, tmp_path / "predictions.parquet") == 0
    written = pq.read_table(tmp_path / "predictions.parquet")
    assert written.column_names == ["id", "prediction", "probability_0", "probability_1"]  # a FASTA has no labels
    assert written.column("id").to_pylist() == [f"row{i}" for i in range(len(sequences))]
    assert written.column("prediction").to_pylist() == pq.read_table(stage / "finetuned" / "predictions.parquet").column("prediction").to_pylist()
    metadata = read_metadata(tmp_path / "predictions.parquet")
    assert metadata["vqdna.tokenizer_hash"] == tokenizer_hash(stage / "tokenizer")
    assert metadata["vqdna.dataset"] == "prom_core_notata"
    assert Path(metadata["vqdna.pretrained"]).resolve() == (stage / "pretrained").resolve()


def test_predictions_of_mixed_lengths_equal_each_sequence_predicted_alone(stage, tmp_path):
    lengths = [23, 5, 70, 41, 12, 58, 33]
    sequences, _ = read_split(stage / "dataset" / "test.parquet")
    (tmp_path / "mixed.csv").write_text("sequence\n" + "".join(f"{s[:n]}\n" for s, n in zip(sequences, lengths)))
    assert _predict(stage, tmp_path / "mixed.csv", tmp_path / "out.csv", "--batch-size", 3) == 0
    written = pacsv.read_csv(tmp_path / "out.csv")
    base = VqdnaForSequenceClassification.from_pretrained(stage / "pretrained", num_labels=2)
    model = PeftModel.from_pretrained(base, stage / "finetuned" / "adapter").eval()
    codes = load_tokenizer(stage / "tokenizer", device="cpu").encode([s[:n] for s, n in zip(sequences, lengths)])
    with torch.no_grad():
        alone = np.concatenate([model(input_ids=torch.as_tensor(c.T[None])).logits.numpy() for c in codes])
    assert written.column("prediction").to_pylist() == alone.argmax(1).tolist()
    assert np.allclose(written.column("probability_1").to_numpy(), _softmax(alone)[:, 1], atol=1e-5)


def test_predict_cuts_sequences_to_max_length(stage, tmp_path):
    sequences, _ = read_split(stage / "dataset" / "test.parquet")
    (tmp_path / "cut.csv").write_text("sequence\n" + "".join(f"{s[:20]}\n" for s in sequences[:10]))
    (tmp_path / "long.csv").write_text("sequence\n" + "".join(f"{s[:20]}{'A' * 30}\n" for s in sequences[:10]))
    assert _predict(stage, tmp_path / "cut.csv", tmp_path / "cut_out.csv") == 0
    assert _predict(stage, tmp_path / "long.csv", tmp_path / "long_out.csv", "--max-length", 20) == 0
    assert pacsv.read_csv(tmp_path / "long_out.csv").equals(pacsv.read_csv(tmp_path / "cut_out.csv"))


def test_predict_finds_a_moved_base_model_through_pretrained(stage, tmp_path, capsys):
    moved = tmp_path / "elsewhere" / "seed0"
    shutil.copytree(stage / "finetuned", moved)  # the recorded relative path 'pretrained' no longer resolves
    args = ["predict", "--tokenizer", stage / "tokenizer", "--model", moved, "--input", stage / "test.csv"]
    assert _vqdna(*args, "--output", tmp_path / "out.csv") == 1
    assert "--pretrained" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "out.csv").exists()
    assert _vqdna(*args, "--output", tmp_path / "out.csv", "--pretrained", stage / "pretrained") == 0
    predictions = pacsv.read_csv(tmp_path / "out.csv").column("prediction").to_pylist()
    assert predictions == pq.read_table(stage / "finetuned" / "predictions.parquet").column("prediction").to_pylist()


def test_predict_refuses_a_base_model_with_other_weights(stage, tmp_path, capsys):
    other = VqdnaForMaskedLM.from_pretrained(stage / "pretrained")
    with torch.no_grad():
        other.vqdna.final_norm.bias[0] += 1e-3
    other.save_pretrained(tmp_path / "other_pretrained")
    assert _predict(stage, stage / "test.csv", tmp_path / "out.csv", "--pretrained", tmp_path / "other_pretrained") == 1
    assert "not the model" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "out.csv").exists()


def test_predict_refuses_another_tokenizer(stage, tmp_path, capsys):
    args = ["predict", "--tokenizer", stage / "other_tokenizer", "--model", stage / "finetuned"]
    assert _vqdna(*args, "--input", stage / "test.csv", "--output", tmp_path / "out.csv") == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error:") and "tokenizer" in last
    assert list(tmp_path.iterdir()) == []


BAD_INPUTS = {
    "missing.csv": (None, "no such file"),
    "no_sequence.csv": ("seq,label\nACGT,1\n", "no 'sequence' column"),
    "header_only.csv": ("sequence,label\n", "no rows"),
    "empty.fa": ("", "no FASTA record"),
    "reads.fastq": ("@r1\nACGT\n+\nIIII\n", "unsupported input type"),
    "fastq_named.fa": ("@r1\nACGT\n+\nIIII\n", "FASTQ"),
    "digits.fa": (">a\nACGT\n>b\nAC1T\n", "record 'b'"),
    "twice.fa": (">a\nACGT\n>a\nACGT\n", "duplicate record name 'a'"),
    "blank.csv": ("sequence\nACGT\n\"\"\n", "data row 2: empty sequence"),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUTS))
@pytest.mark.parametrize("command", ["predict", "embed"])
def test_bad_input_is_a_one_line_error_naming_the_file_and_writes_nothing(stage, tmp_path, capsys, name, command):
    content, problem = BAD_INPUTS[name]
    if content is not None:
        (tmp_path / name).write_text(content)
    output = tmp_path / "out" / "result.parquet"
    model = stage / ("finetuned" if command == "predict" else "pretrained")
    assert _vqdna(command, "--tokenizer", stage / "tokenizer", "--model", model, "--input", tmp_path / name, "--output", output) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {tmp_path / name}") and problem in err
    assert not output.parent.exists()


@pytest.mark.parametrize("command, output", [("predict", "out.tsv"), ("embed", "out.csv")])
def test_unsupported_output_type_is_refused(stage, tmp_path, capsys, command, output):
    model = stage / ("finetuned" if command == "predict" else "pretrained")
    assert _vqdna(command, "--tokenizer", stage / "tokenizer", "--model", model, "--input", stage / "test.csv", "--output", tmp_path / output) == 1
    assert "unsupported output type" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


# -- embed ---------------------------------------------------------------------------------------------


def test_embed_fasta_is_the_mean_pooled_last_hidden_state(stage, tmp_path):
    args = ["embed", "--tokenizer", stage / "tokenizer", "--model", stage / "pretrained", "--input", stage / "user.fa.gz"]
    assert _vqdna(*args, "--output", tmp_path / "embeddings.parquet", "--batch-size", 2) == 0
    table = pq.read_table(tmp_path / "embeddings.parquet")
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 32)
    assert table.column("id").to_pylist() == list(FASTA_RECORDS)
    assert table.column("length").to_pylist() == [len(s) for s in FASTA_RECORDS.values()]
    encoder = AutoModel.from_pretrained(stage / "pretrained").eval()
    expected = np.stack([_hand_embedding(encoder, stage / "tokenizer", s) for s in FASTA_RECORDS.values()])
    assert np.allclose(np.array(table.column("embedding").to_pylist()), expected, atol=1e-5)
    metadata = read_metadata(tmp_path / "embeddings.parquet")
    assert metadata["vqdna.tokenizer_hash"] == tokenizer_hash(stage / "tokenizer")
    assert metadata["vqdna.tokenizer"] == "tiny" and metadata["vqdna.model"] == str(stage / "pretrained")


def test_embed_of_a_finetuned_run_comes_from_its_lora_adapted_encoder(stage, tmp_path):
    common = ["--tokenizer", stage / "tokenizer", "--input", stage / "user.fa.gz"]
    assert _vqdna("embed", *common, "--model", stage / "finetuned", "--output", tmp_path / "finetuned.parquet") == 0
    assert _vqdna("embed", *common, "--model", stage / "pretrained", "--output", tmp_path / "pretrained.parquet") == 0
    finetuned = np.array(pq.read_table(tmp_path / "finetuned.parquet").column("embedding").to_pylist())
    expected = np.stack([_hand_embedding(_lora_encoder(stage), stage / "tokenizer", s) for s in FASTA_RECORDS.values()])
    assert np.allclose(finetuned, expected, atol=1e-5)
    assert not np.allclose(finetuned, np.array(pq.read_table(tmp_path / "pretrained.parquet").column("embedding").to_pylist()), atol=1e-6)


def test_embed_in_chunks_averages_over_every_token_of_every_chunk(stage, tmp_path):
    csv = tmp_path / "user.csv"
    csv.write_text("id,sequence\n" + "".join(f"{name},{s}\n" for name, s in FASTA_RECORDS.items()))
    rows = embed(stage / "tokenizer", stage / "pretrained", csv, tmp_path / "chunked.parquet", chunk_length=16, device="cpu")
    assert rows == len(FASTA_RECORDS)
    table = pq.read_table(tmp_path / "chunked.parquet")
    assert table.column("id").to_pylist() == list(FASTA_RECORDS)
    encoder = AutoModel.from_pretrained(stage / "pretrained").eval()
    expected = np.stack([_hand_embedding(encoder, stage / "tokenizer", s, chunk=16) for s in FASTA_RECORDS.values()])
    assert np.allclose(np.array(table.column("embedding").to_pylist()), expected, atol=1e-5)
