"""Stage 3: test metrics, the base-weights fingerprint under peft, and LoRA fine-tuning end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from helpers import TINY_ENCODER, tiny_pretrained, write_ggg_gue_folder
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from scipy.stats import spearmanr
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    matthews_corrcoef,
    mean_squared_error,
)

from vqdna import VqdnaError
from vqdna.datasets.prepare import prepare_dataset
from vqdna.datasets.spec import DatasetSpec, read_split
from vqdna.finetune import train
from vqdna.finetune.train import (
    enable_gradient_checkpointing,
    finetune,
    predict_logits,
    weights_fingerprint,
)
from vqdna.lm.configuration import VqdnaConfig
from vqdna.lm.modeling import VqdnaForSequenceClassification
from vqdna.metrics import classification_metrics, regression_metrics
from vqdna.predict import embed, predict
from vqdna.tokenizer.api import load_tokenizer, tokenizer_hash

TARGETS = ["query", "key", "value", "dense"]

# -- metrics ------------------------------------------------------------------------------------------


def test_classification_metrics_by_hand_and_as_scikit_learn():
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 1])
    predictions = np.array([0, 1, 1, 1, 2, 0, 2, 2])
    result = classification_metrics(labels, predictions)
    assert set(result) == {"accuracy", "f1", "mcc"}
    # per-class F1: class 0 P=R=1/2, class 1 P=R=2/3, class 2 P=R=2/3 -> macro mean
    assert result["accuracy"] == pytest.approx(5 / 8)
    assert result["f1"] == pytest.approx((1 / 2 + 2 / 3 + 2 / 3) / 3)
    # multiclass MCC: (c*s - sum p_k t_k) / sqrt((s^2 - sum p_k^2)(s^2 - sum t_k^2)), c=5, s=8, p=t=(2,3,3)
    assert result["mcc"] == pytest.approx((5 * 8 - 22) / 42)
    assert result["accuracy"] == pytest.approx(accuracy_score(labels, predictions))
    assert result["f1"] == pytest.approx(f1_score(labels, predictions, average="macro"))
    assert result["mcc"] == pytest.approx(matthews_corrcoef(labels, predictions))


def test_classification_metrics_of_a_constant_predictor():
    result = classification_metrics(np.array([0, 1, 1, 0]), np.array([1, 1, 1, 1]))
    assert result["accuracy"] == 0.5
    assert result["mcc"] == 0.0
    assert result["f1"] == pytest.approx((0 + 2 * 0.5 * 1 / 1.5) / 2)


@pytest.mark.filterwarnings("ignore:An input array is constant")
def test_regression_metrics_by_hand_and_as_scipy():
    labels = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    predictions = np.array([1.5, 1.0, 3.5, 5.0, 4.0])
    result = regression_metrics(labels, predictions)
    assert set(result) == {"spearman", "mse"}
    # prediction ranks (2, 1, 3, 5, 4): sum d^2 = 4, rho = 1 - 6 * 4 / (5 * 24)
    assert result["spearman"] == pytest.approx(0.8)
    assert result["mse"] == pytest.approx(3.5 / 5)
    assert result["spearman"] == pytest.approx(spearmanr(labels, predictions).statistic)
    assert result["mse"] == pytest.approx(mean_squared_error(labels, predictions))
    assert regression_metrics(labels, np.full(5, 2.0))["spearman"] == 0.0  # undefined correlation -> 0, not NaN


# -- base-weights fingerprint --------------------------------------------------------------------------


def _classifier(seed: int = 0) -> VqdnaForSequenceClassification:
    torch.manual_seed(seed)
    config = VqdnaConfig(vocab_sizes=[16], code_embedding_dim=12, num_labels=2, **TINY_ENCODER)
    return VqdnaForSequenceClassification(config)


def test_fingerprint_sees_through_peft_and_ignores_lora():
    model = _classifier()
    before = weights_fingerprint(dict(model.named_parameters()))
    assert weights_fingerprint(model.state_dict()) == before
    wrapped = get_peft_model(
        model, LoraConfig(task_type="SEQ_CLS", r=2, lora_alpha=4, target_modules=TARGETS, modules_to_save=["classifier"])
    )
    names = [name for name, _ in wrapped.named_parameters()]
    assert any(".base_layer." in n for n in names) and any("lora_" in n for n in names)
    assert weights_fingerprint(dict(wrapped.named_parameters())) == before

    with torch.no_grad():
        for name, parameter in wrapped.named_parameters():
            if "lora_" in name or "classifier" in name:
                parameter.add_(1.0)
    assert weights_fingerprint(dict(wrapped.named_parameters())) == before  # adapters and head are not the base

    with torch.no_grad():
        wrapped.base_model.model.vqdna.layers[0].attention.query.base_layer.weight[0, 0] += 1e-3
    assert weights_fingerprint(dict(wrapped.named_parameters())) != before


def test_fingerprint_changes_with_one_base_weight():
    model = _classifier()
    before = weights_fingerprint(dict(model.named_parameters()))
    with torch.no_grad():
        model.vqdna.final_norm.bias[3] += 1e-4
    assert weights_fingerprint(dict(model.named_parameters())) != before
    assert weights_fingerprint(dict(_classifier(seed=1).named_parameters())) != before


# -- fine-tuning end to end ------------------------------------------------------------------------


def _spec(source: Path) -> DatasetSpec:
    return DatasetSpec(
        dataset="ggg", group="EMP", task="classification", num_labels=2, metric="mcc", max_length=20,
        epochs=2, batch_size=8, learning_rate=1e-3, warmup_steps=1, source=str(source),
    )


@pytest.fixture(scope="module")
def stage3(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stage3")
    tiny_pretrained(folder, seed=22, length=2400)
    write_ggg_gue_folder(folder / "gue")
    spec = _spec(folder / "gue")
    prepare_dataset(spec, folder / "dataset")
    result = finetune(spec, {}, 0, folder / "pretrained", folder / "tokenizer", folder / "dataset", folder / "finetuned", device="cpu")
    return {"folder": folder, "spec": spec, "result": result}


def test_finetune_writes_metrics_predictions_and_adapter(stage3):
    out = stage3["folder"] / "finetuned"
    assert {"metrics.json", "predictions.parquet", "adapter"} <= {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in (out / "adapter").iterdir()}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["dataset"] == "ggg" and metrics["seed"] == 0 and metrics["metric"] == "mcc"
    assert {"accuracy", "f1", "mcc"} <= set(metrics["test"])
    assert metrics["best_epoch"] in (1, 2)
    assert [h["epoch"] for h in metrics["history"]] == [1, 2]
    assert [h["train_padding"] for h in metrics["history"]] == [0.0, 0.0]  # one code per nt, equal-length rows
    assert metrics["best_dev"] == max(h["dev_mcc"] for h in metrics["history"])
    assert metrics["tokenizer_hash"] == tokenizer_hash(stage3["folder"] / "tokenizer")


def test_predictions_have_one_row_per_test_row_and_give_the_test_metrics(stage3):
    folder = stage3["folder"]
    predictions = pq.read_table(folder / "finetuned" / "predictions.parquet")
    _, labels = read_split(folder / "dataset" / "test.parquet")
    assert predictions.num_rows == len(labels) == 40
    assert predictions.column("index").to_pylist() == list(range(40))
    assert predictions.column("label").to_pylist() == labels.tolist()
    logits = np.array(predictions.column("logits").to_pylist())
    assert logits.shape == (40, 2)
    assert predictions.column("prediction").to_pylist() == logits.argmax(1).tolist()
    metrics = json.loads((folder / "finetuned" / "metrics.json").read_text())
    expected = classification_metrics(labels, logits.argmax(1))
    for name in ("accuracy", "f1", "mcc"):
        assert metrics["test"][name] == pytest.approx(expected[name])


def test_finetuning_leaves_the_base_weights_unchanged(stage3):
    folder = stage3["folder"]
    pretrained = load_file(folder / "pretrained" / "model.safetensors")
    assert stage3["result"]["base_weights_sha256"] == weights_fingerprint(pretrained)
    metrics = json.loads((folder / "finetuned" / "metrics.json").read_text())
    assert metrics["base_weights_sha256"] == weights_fingerprint(pretrained)


def test_saved_adapter_trained_and_reproduces_the_test_logits(stage3):
    folder = stage3["folder"]
    adapter = load_file(folder / "finetuned" / "adapter" / "adapter_model.safetensors")
    lora_b = [t for name, t in adapter.items() if "lora_B" in name]
    assert lora_b and any(t.abs().sum() > 0 for t in lora_b)  # lora_B starts at zero: the adapters learned
    base = VqdnaForSequenceClassification.from_pretrained(folder / "pretrained", num_labels=2)
    model = PeftModel.from_pretrained(base, folder / "finetuned" / "adapter").eval()
    sequences, _ = read_split(folder / "dataset" / "test.parquet")
    codes = load_tokenizer(folder / "tokenizer", device="cpu").encode(sequences)
    logits = predict_logits(model, codes, 16, torch.device("cpu"))
    written = np.array(pq.read_table(folder / "finetuned" / "predictions.parquet").column("logits").to_pylist())
    assert np.allclose(logits, written, atol=1e-5)


def test_finetune_refuses_a_lora_target_that_does_not_exist(stage3, tmp_path):
    folder = stage3["folder"]
    settings = {"lora": {"target_modules": ["query", "nonexistent"]}}
    with pytest.raises(VqdnaError, match="nonexistent"):
        finetune(stage3["spec"], settings, 0, folder / "pretrained", folder / "tokenizer", folder / "dataset", tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()


def test_finetune_refuses_a_model_pretrained_on_another_tokenizer(stage3, tmp_path):
    folder = stage3["folder"]
    with pytest.raises(VqdnaError, match="tokenizer"):
        finetune(stage3["spec"], {}, 0, folder / "pretrained", folder / "other_tokenizer", folder / "dataset", tmp_path / "out", device="cpu")
    assert not (tmp_path / "out").exists()


def test_finetune_is_reproducible_from_its_seed(stage3, tmp_path):
    folder = stage3["folder"]
    again = finetune(stage3["spec"], {}, 0, folder / "pretrained", folder / "tokenizer", folder / "dataset", tmp_path / "again", device="cpu")
    assert again["history"] == stage3["result"]["history"] and again["test"] == stage3["result"]["test"]
    first = pq.read_table(folder / "finetuned" / "predictions.parquet")
    assert pq.read_table(tmp_path / "again" / "predictions.parquet").equals(first)


def test_attention_dropout_is_the_encoders_unless_the_config_sets_it(stage3, tmp_path):
    folder = stage3["folder"]
    pretrained = json.loads((folder / "pretrained" / "config.json").read_text())["attention_probs_dropout_prob"]
    assert stage3["result"]["attention_dropout"] == pretrained > 0
    args = (stage3["spec"], {"attention_dropout": 0.0}, 0, folder / "pretrained", folder / "tokenizer", folder / "dataset", tmp_path / "out")
    assert finetune(*args, device="cpu")["attention_dropout"] == 0.0


def test_metrics_give_encoder_and_tokenizer_sizes_and_forward_flops(stage3):
    result = stage3["result"]
    pretrained = load_file(stage3["folder"] / "pretrained" / "model.safetensors")
    assert result["encoder_parameters"] == sum(t.numel() for n, t in pretrained.items() if n.startswith("vqdna."))
    assert result["tokenizer_parameters"] > 0
    assert result["mean_test_tokens"] == 20  # max_length 20 of longer sequences, one code per nucleotide
    config = json.loads((stage3["folder"] / "pretrained" / "config.json").read_text())
    expected = 2 * result["encoder_parameters"] * 20 + 4 * config["num_hidden_layers"] * 20**2 * config["hidden_size"]
    assert result["forward_gflops"] == pytest.approx(expected / 1e9, abs=1e-4)


def test_gradient_checkpointing_recomputes_every_layer_and_leaves_lora_gradients_unchanged():
    """The switch finetune uses (whichever name this transformers gives it) is on, and costs no exactness."""
    config = VqdnaConfig(vocab_sizes=[16], code_embedding_dim=8, **TINY_ENCODER, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0, classifier_dropout=0.0, num_labels=2)
    input_ids = torch.randint(0, 16, (3, 20), generator=torch.Generator().manual_seed(1))
    gradients = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = VqdnaForSequenceClassification(config)
        if checkpointing:
            enable_gradient_checkpointing(model)
            assert all(layer.gradient_checkpointing for layer in model.vqdna.layers)
        model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, target_modules=TARGETS, modules_to_save=["classifier"]))
        model.train()
        model(input_ids=input_ids, labels=torch.tensor([0, 1, 0])).loss.backward()
        gradients.append({n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad})
    assert gradients[0].keys() == gradients[1].keys() and any("lora_B" in n for n in gradients[0])
    for name, gradient in gradients[0].items():
        torch.testing.assert_close(gradients[1][name], gradient, atol=1e-6, rtol=1e-5)


# -- full fine-tuning (the random-init control's mode) ---------------------------------------------


@pytest.fixture(scope="module")
def full_run(stage3):
    folder = stage3["folder"]
    args = (stage3["spec"], {"mode": "full"}, 0, folder / "pretrained", folder / "tokenizer", folder / "dataset")
    return finetune(*args, folder / "full", device="cpu")


def test_full_finetuning_trains_the_encoder_but_not_the_codebooks_and_saves_the_whole_model(stage3, full_run):
    folder = stage3["folder"]
    assert full_run["mode"] == "full" and "lora" not in full_run and stage3["result"]["mode"] == "lora"
    assert {p.name for p in (folder / "full").iterdir()} == {"metrics.json", "predictions.parquet", "model"}
    pretrained = load_file(folder / "pretrained" / "model.safetensors")
    tuned = load_file(folder / "full" / "model" / "model.safetensors")
    changed = {n for n, t in pretrained.items() if n.startswith("vqdna.") and not torch.equal(t, tuned[n])}
    codebooks = {n for n in pretrained if "code_embeddings" in n}
    assert codebooks and not changed & codebooks  # the tokenizer's codebooks stay frozen
    assert {n for n in pretrained if n.startswith("vqdna.") and "layers" in n} <= changed
    assert full_run["base_weights_sha256"] == weights_fingerprint(pretrained)  # what it started from


def test_a_fully_fine_tuned_model_reproduces_its_test_logits(stage3, full_run):
    folder = stage3["folder"]
    model = VqdnaForSequenceClassification.from_pretrained(folder / "full" / "model").eval()
    sequences, _ = read_split(folder / "dataset" / "test.parquet")
    codes = load_tokenizer(folder / "tokenizer", device="cpu").encode(sequences)
    written = np.array(pq.read_table(folder / "full" / "predictions.parquet").column("logits").to_pylist())
    assert np.allclose(predict_logits(model, codes, 16, torch.device("cpu")), written, atol=1e-5)


def test_an_unknown_finetune_mode_is_a_one_line_error(stage3, tmp_path):
    folder = stage3["folder"]
    with pytest.raises(VqdnaError, match=r"^finetune.mode: 'partial' is not one of lora, full$"):
        finetune(stage3["spec"], {"mode": "partial"}, 0, folder / "pretrained", folder / "tokenizer", folder / "dataset", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_predict_and_embed_read_a_fully_fine_tuned_run(stage3, full_run, tmp_path):
    folder = stage3["folder"]
    sequences, labels = read_split(folder / "dataset" / "test.parquet")
    (tmp_path / "test.csv").write_text("sequence,label\n" + "".join(f"{s},{y}\n" for s, y in zip(sequences, labels)))
    assert predict(folder / "tokenizer", folder / "full", tmp_path / "test.csv", tmp_path / "predictions.parquet") == len(sequences)
    ours = pq.read_table(tmp_path / "predictions.parquet").column("prediction").to_pylist()
    assert ours == pq.read_table(folder / "full" / "predictions.parquet").column("prediction").to_pylist()
    assert embed(folder / "tokenizer", folder / "full", tmp_path / "test.csv", tmp_path / "embeddings.parquet") == len(sequences)


def test_a_run_may_set_its_own_learning_rate_in_place_of_the_datasets(stage3, tmp_path):
    folder = stage3["folder"]
    args = (stage3["spec"], {"mode": "full", "learning_rate": 1e-5}, 0, folder / "pretrained", folder / "tokenizer", folder / "dataset")
    result = finetune(*args, tmp_path / "out", device="cpu")
    assert result["learning_rate"] == 1e-5 != stage3["spec"].learning_rate
    assert stage3["result"]["learning_rate"] == stage3["spec"].learning_rate


# -- the head's pooling (finetune.pooling) ----------------------------------------------------------


def _pooling_classifier(pooling: str) -> VqdnaForSequenceClassification:
    torch.manual_seed(0)
    config = VqdnaConfig(vocab_sizes=[16], code_embedding_dim=12, num_labels=2, classifier_pooling=pooling, **TINY_ENCODER)
    return VqdnaForSequenceClassification(config).eval()


def test_each_pooling_reduces_only_the_real_positions():
    hidden = TINY_ENCODER["hidden_size"]
    states = torch.randn(2, 5, hidden)
    states[1, 3:] = 100.0  # padding of row 1, larger than any real value: it must not show in max or mean
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    real_mean = torch.stack([states[0].mean(0), states[1, :3].mean(0)])
    real_max = torch.stack([states[0].amax(0), states[1, :3].amax(0)])
    assert torch.allclose(_pooling_classifier("mean").pool(states, mask), real_mean)
    assert torch.equal(_pooling_classifier("max").pool(states, mask), real_max)
    assert torch.allclose(_pooling_classifier("mean_max").pool(states, mask), torch.cat([real_mean, real_max], -1))
    assert _pooling_classifier("mean_max").classifier[0].in_features == 2 * hidden


@pytest.mark.parametrize("pooling", ["mean", "max", "mean_max"])
def test_a_rows_logits_do_not_depend_on_the_padding_of_its_batch(pooling):
    model = _pooling_classifier(pooling)
    short, long = torch.randint(0, 16, (1, 7)), torch.randint(0, 16, (1, 11))
    alone = model(input_ids=short).logits
    batch = torch.cat([torch.cat([short, torch.zeros(1, 4, dtype=torch.long)], 1), long])
    mask = torch.tensor([[1] * 7 + [0] * 4, [1] * 11])
    assert torch.allclose(model(input_ids=batch, attention_mask=mask).logits[0], alone[0], atol=1e-5)


def test_an_unknown_pooling_is_a_one_line_error(stage3, tmp_path):
    folder = stage3["folder"]
    with pytest.raises(VqdnaError, match=r"^finetune.pooling: 'cls' is not one of mean, max, mean_max$"):
        finetune(stage3["spec"], {"pooling": "cls"}, 0, folder / "pretrained", folder / "tokenizer", folder / "dataset", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _assert_predict_reproduces_the_runs_test_predictions(folder: Path, tmp_path: Path) -> None:
    """``predict`` of the run in ``tmp_path / "run"`` on its own test rows gives the probabilities of the logits it wrote."""
    sequences, labels = read_split(folder / "dataset" / "test.parquet")
    (tmp_path / "test.csv").write_text("sequence,label\n" + "".join(f"{s},{y}\n" for s, y in zip(sequences, labels)))
    predict(folder / "tokenizer", tmp_path / "run", tmp_path / "test.csv", tmp_path / "predictions.parquet")
    ours = pq.read_table(tmp_path / "predictions.parquet")
    written = np.array(pq.read_table(tmp_path / "run" / "predictions.parquet").column("logits").to_pylist())
    probabilities = np.exp(written) / np.exp(written).sum(1, keepdims=True)
    assert np.allclose(np.stack([ours.column(f"probability_{k}").to_numpy() for k in (0, 1)], 1), probabilities, atol=1e-5)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_a_max_pooled_run_records_its_pooling_and_predict_reproduces_its_test_predictions(stage3, mode, tmp_path):
    folder = stage3["folder"]
    settings = {"mode": mode, "pooling": "mean_max" if mode == "full" else "max"}
    result = finetune(stage3["spec"], settings, 0, folder / "pretrained", folder / "tokenizer", folder / "dataset", tmp_path / "run", device="cpu")
    assert result["pooling"] == settings["pooling"] and "pooling" not in stage3["result"]  # the default leaves metrics.json as it was
    assert result["test"] != stage3["result"]["test"] or result["history"] != stage3["result"]["history"]
    _assert_predict_reproduces_the_runs_test_predictions(folder, tmp_path)


def test_the_default_pooling_leaves_a_saved_config_as_it_was_and_others_are_saved(tmp_path):
    _pooling_classifier("mean").config.save_pretrained(tmp_path / "mean")
    assert "classifier_pooling" not in json.loads((tmp_path / "mean" / "config.json").read_text())
    _pooling_classifier("mean_max").config.save_pretrained(tmp_path / "mean_max")
    assert VqdnaConfig.from_pretrained(tmp_path / "mean_max").classifier_pooling == "mean_max"
    assert VqdnaConfig.from_pretrained(tmp_path / "mean").classifier_pooling == "mean"


# -- the head (finetune.head) -----------------------------------------------------------------------


def test_a_linear_head_is_one_dense_layer_on_the_pooled_vector():
    torch.manual_seed(0)
    config = VqdnaConfig(vocab_sizes=[16], code_embedding_dim=12, num_labels=3, classifier_head="linear", classifier_pooling="mean_max", **TINY_ENCODER)
    model = VqdnaForSequenceClassification(config).eval()
    dense = [m for m in model.classifier if isinstance(m, torch.nn.Linear)]
    assert [(d.in_features, d.out_features) for d in dense] == [(2 * TINY_ENCODER["hidden_size"], 3)]
    ids = torch.randint(0, 16, (2, 9))
    pooled = model.pool(model.vqdna(ids).last_hidden_state, None)
    assert torch.allclose(model(input_ids=ids).logits, dense[0](pooled), atol=1e-6)
    assert "classifier_head" in config.to_dict() and "classifier_head" not in VqdnaConfig(vocab_sizes=[16]).to_dict()
    with pytest.raises(ValueError, match="classifier_head 'cnn' is not one of mlp, linear"):
        VqdnaConfig(vocab_sizes=[16], classifier_head="cnn")


@pytest.mark.parametrize(
    ("settings", "message"),
    [({"head": "cnn"}, "finetune.head: 'cnn' is not one of mlp, linear"), ({"head_norm": "layer"}, "finetune.head_norm: 'layer' is not one of none, batch")],
)
def test_an_unknown_head_is_a_one_line_error(stage3, settings, message, tmp_path):
    folder = stage3["folder"]
    with pytest.raises(VqdnaError, match=f"^{message}$"):
        finetune(stage3["spec"], settings, 0, folder / "pretrained", folder / "tokenizer", folder / "dataset", tmp_path / "out")
    assert not (tmp_path / "out").exists()


HEADS = [("lora", {"head": "linear"}), ("full", {"head": "linear", "head_norm": "batch"}), ("lora", {"head_norm": "batch"})]


@pytest.mark.parametrize(("mode", "head"), HEADS)
def test_a_run_records_its_head_and_predict_reproduces_its_test_predictions(stage3, mode, head, tmp_path):
    folder = stage3["folder"]
    result = finetune(stage3["spec"], {"mode": mode, **head}, 0, folder / "pretrained", folder / "tokenizer", folder / "dataset", tmp_path / "run", device="cpu")
    assert {key: result[key] for key in head} == head and not set(head) & set(stage3["result"])  # the defaults leave metrics.json as it was
    _assert_predict_reproduces_the_runs_test_predictions(folder, tmp_path)


def test_the_best_epoch_is_restored_with_its_own_running_statistics(stage3, tmp_path, monkeypatch):
    """head_norm batch: an earlier best epoch is scored with the mean and variance it was trained to, not the last epoch's."""
    snapshots, real_predict, real_score = [], train.predict_logits, train.score

    def snapshot_then_predict(model, *args, **kwargs):
        snapshots.append({name: tensor.clone() for name, tensor in model.state_dict().items()})
        return real_predict(model, *args, **kwargs)

    def first_epoch_best(spec, logits, labels):
        metrics, predictions = real_score(spec, logits, labels)
        return {**metrics, spec.metric: -len(snapshots)}, predictions

    monkeypatch.setattr(train, "predict_logits", snapshot_then_predict)
    monkeypatch.setattr(train, "score", first_epoch_best)
    folder = stage3["folder"]
    settings = {"head": "linear", "head_norm": "batch"}
    result = finetune(stage3["spec"], settings, 0, folder / "pretrained", folder / "tokenizer", folder / "dataset", tmp_path / "run", device="cpu")
    assert result["best_epoch"] == 1 and len(snapshots) == 3  # dev after epochs 1 and 2, then test
    epoch_1, epoch_2, at_test = snapshots
    running = [name for name in at_test if name.endswith(("running_mean", "running_var"))]
    assert running and not all(torch.equal(epoch_1[name], epoch_2[name]) for name in running)  # epoch 2 moved them
    assert all(torch.equal(epoch_1[name], at_test[name]) for name in at_test), [n for n in at_test if not torch.equal(epoch_1[n], at_test[n])]


def test_head_norm_batch_standardises_the_pooled_vector_feature_by_feature():
    torch.manual_seed(0)
    config = VqdnaConfig(vocab_sizes=[16], code_embedding_dim=12, num_labels=2, classifier_norm="batch", **TINY_ENCODER)
    model = VqdnaForSequenceClassification(config).train()
    ids = torch.randint(0, 16, (64, 9))
    pooled = model.pool(model.vqdna(ids).last_hidden_state, None)
    standardised = model.classifier[0](pooled)
    assert torch.allclose(standardised.mean(0), torch.zeros(pooled.shape[1]), atol=1e-5)
    assert torch.allclose(standardised.std(0, unbiased=False), torch.ones(pooled.shape[1]), atol=1e-3)
    assert not list(model.classifier[0].parameters())  # no affine weights: the head's dense layers scale it
    one_row = model(input_ids=ids[:1]).logits  # a last batch of one row: the running statistics, not an error
    assert torch.isfinite(one_row).all() and one_row.shape == (1, 2)


