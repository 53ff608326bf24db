"""torch.compile as an option: compiled, the tokenizer gives eager's codes and pretraining eager's numbers and
files (on the CPU, inductor); off, the default, nothing is compiled and nothing a job reads or writes changes."""

from __future__ import annotations

import copy
import logging
from pathlib import Path

import numpy as np
import pysam
import pytest
import torch
import yaml
from safetensors.torch import load_file

from helpers import TINY_ENCODER, TINY_RUN, tiny_tokenizer
from vqdna import VqdnaError
from vqdna.compiling import ENVIRONMENT, CompileSettings, compile_mode
from vqdna.lm.configuration import VqdnaConfig
from vqdna.lm.corpus import Codes
from vqdna.lm.modeling import VqdnaForMaskedLM
from vqdna.lm.pretrain import PretrainConfig, Process, _masked_batch, _padded_batch, global_batch_indices, pretrain, train_step
from vqdna.plan import build_plan
from vqdna.tokenizer.api import VQTokenizer, load_tokenizer
from vqdna.tokenizer.compiled import CompiledCall
from vqdna.tokenizer.hrq import HRQ, HRQConfig
from vqdna.tokenizer.tokens import tokenize_windows
from vqdna.tokenizer.vq import VQVAE, VQConfig
from vqdna.windows import WindowSettings, write_windows

REPO = Path(__file__).resolve().parents[1]
# No dropout: inductor draws its own random numbers, so dropout masks (not the arithmetic) would differ from eager's.
ENCODER = {**TINY_ENCODER, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
CPU = Process(rank=0, world=1, device=torch.device("cpu"))


@pytest.fixture(autouse=True)
def _no_compile_variables(monkeypatch):
    for variable in ENVIRONMENT.values():
        monkeypatch.delenv(variable, raising=False)


# -- off by default -----------------------------------------------------------------------------------------


def test_off_by_default_nothing_is_compiled_and_the_workflow_exports_nothing(monkeypatch):
    assert CompileSettings() == CompileSettings.from_config(None) == CompileSettings("none", "none")
    assert CompileSettings().environment() == {}  # the jobs' shell prefix stays as it was
    monkeypatch.chdir(REPO)
    plan = build_plan(yaml.safe_load((REPO / "config" / "config.yaml").read_text()), REPO / "workflow" / "schemas")
    assert plan.compile == CompileSettings() and plan.compile.environment() == {}
    model = VQVAE(VQConfig(width=8, depth=1, codebook_size=4))
    VQTokenizer(model, device="cpu")
    assert "encode" not in vars(model)  # encode_ids calls the class's own encode, as before the option existed
    assert compile_mode("pretrain") == compile_mode("tokenizer") == "none"


def test_modes_come_from_the_config_or_the_environment_and_bad_ones_are_refused(monkeypatch):
    settings = CompileSettings.from_config({"pretrain": "reduce-overhead"})
    assert settings.environment() == {"VQDNA_COMPILE_PRETRAIN": "reduce-overhead"}
    with pytest.raises(VqdnaError, match="compile.tokenizer: compile mode 'max' is not one of none, default, reduce-overhead"):
        CompileSettings.from_config({"tokenizer": "max"})
    with pytest.raises(VqdnaError, match="unknown key"):
        CompileSettings.from_config({"finetune": "default"})
    monkeypatch.setenv("VQDNA_COMPILE_TOKENIZER", "default")
    model = VQVAE(VQConfig(width=8, depth=1, codebook_size=4))
    assert isinstance(VQTokenizer(model, device="cpu").model.encode, CompiledCall)  # compiled lazily: nothing ran yet
    assert compile_mode("pretrain") == "none"
    monkeypatch.setenv("VQDNA_COMPILE_PRETRAIN", "fast")
    with pytest.raises(VqdnaError, match=r"\$VQDNA_COMPILE_PRETRAIN: compile mode 'fast'"):
        compile_mode("pretrain")


# -- the tokenizer --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["vq", "hrq"])
def test_compiled_tokenizer_gives_eager_codes_and_a_short_last_batch_reuses_the_compile(kind, caplog):
    torch.manual_seed(0)
    if kind == "hrq":
        model = HRQ(HRQConfig(width=16, depth=2, codebook_size=4, taps=[1, 2], codebook_sizes=[8, 16]))
    else:
        model = VQVAE(VQConfig(width=16, depth=1, codebook_size=16))
    ids = np.random.default_rng(1).integers(0, 5, (10, 48))  # A, C, G, T, N
    eager = VQTokenizer(copy.deepcopy(model), device="cpu").encode_ids(ids)  # one batch of 10
    compiled = VQTokenizer(model, device="cpu", compile="default")
    with caplog.at_level(logging.INFO, logger="vqdna.tokenizer.compiled"):
        # as `vqdna tokenize` batches a windows file: 4, 4 and 2 rows, the last padded to 4 inside and cut back
        parts = [compiled.encode_ids(ids[i : i + 4]) for i in range(0, len(ids), 4)]
    codes = [np.concatenate([part[level] for part in parts]) for level in range(len(eager))]
    assert all(np.array_equal(a, b) for a, b in zip(eager, codes, strict=True))
    assert all(len(np.unique(level)) > 1 for level in codes)  # codes vary: the comparison compares something
    assert model.encode.shapes == [((4, 48, 5),)]  # one compile served all three batches
    assert model.encode.compile_seconds > 0 and "first call at input shape (4, 48, 5)" in caplog.text


# -- pretraining ----------------------------------------------------------------------------------------------


def test_compiled_training_step_gives_eager_logits_loss_and_gradients_on_padded_batches():
    """Windows of 10-23 tokens: eager pads each batch to its longest, compiled to the corpus's longest (23)."""
    rng = np.random.default_rng(0)
    run = PretrainConfig(tokenizer="t", encoder=ENCODER, batch_size=4, mask_ratio=0.25)
    lengths = rng.integers(10, 23, 16)
    lengths[0] = 23
    corpus = Codes(rng.integers(0, 16, (16, 23, 1)).astype(np.uint16), lengths)
    step = next(s for s in range(1, 5) if 0 not in global_batch_indices(run.seed, s, run.batch_size, corpus)[1])
    _, step_rows = global_batch_indices(run.seed, step, run.batch_size, corpus)  # the longest window is not in this batch
    assert lengths[step_rows].max() < 23  # so the compiled step really pads beyond what eager pads
    torch.manual_seed(0)
    eager = VqdnaForMaskedLM(VqdnaConfig(vocab_sizes=[16], **ENCODER))
    twin = copy.deepcopy(eager)
    compiled = torch.compile(twin, dynamic=False)

    eager_loss = train_step(eager, run, corpus, step, CPU)
    compiled_loss = train_step(compiled, run, corpus, step, CPU, static_length=23)
    torch.testing.assert_close(compiled_loss, eager_loss, rtol=1e-5, atol=1e-6)
    for (name, a), b in zip(eager.named_parameters(), twin.parameters(), strict=True):
        if a.grad is not None:
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)

    rows = np.setdiff1d(np.arange(16), [np.argmax(lengths)])[:4]
    input_ids, masked, labels, attention = _masked_batch(corpus, rows, rows, 0, 2, 0.25, 1, CPU.device)
    longest = input_ids.shape[1]
    assert longest < 23 and not attention.all()  # padded twice over: to the batch's longest, then to 23
    reference = eager(input_ids, attention_mask=attention, masked_positions=masked, labels=labels)
    padded_ids, padded_masked, padded_labels, padded_attention = _padded_batch(23, input_ids, masked, labels, attention)
    out = compiled(padded_ids, attention_mask=padded_attention, masked_positions=padded_masked, labels=padded_labels)
    real = attention  # (B, longest): the logits of real tokens must agree
    torch.testing.assert_close(out.logits[:, :longest][real], reference.logits[real], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.loss, reference.loss, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def pretrained_twice(tmp_path_factory):
    """A random genome -> windows -> tiny VQ tokenizer -> tokens, pretrained eager and compiled (3 steps, checkpoint at 2)."""
    folder = tmp_path_factory.mktemp("compile_pretrain")
    sequence = "".join(np.random.default_rng(5).choice(list("ACGT"), 3200))
    fasta = folder / "toy.fa"
    fasta.write_text(">chr1\n" + "\n".join(sequence[i : i + 60] for i in range(0, len(sequence), 60)) + "\n")
    pysam.faidx(str(fasta))
    write_windows(fasta, folder / "windows.parquet", "toy", WindowSettings(length=24, step=24))
    tiny_tokenizer(folder / "tokenizer", seed=0)
    tokens = [folder / "tokens.parquet"]
    tokenize_windows(folder / "tokenizer", "tiny", folder / "windows.parquet", tokens[0], device="cpu")
    settings = {**TINY_RUN, "encoder": ENCODER, "checkpoint_every": 2}
    results = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("vqdna.lm.pretrain.clear_state", lambda path: None)  # keep the checkpoint to read its keys
        for mode in ("none", "default"):
            results[mode] = pretrain("tiny_run", settings, folder / "tokenizer", tokens, folder / mode, state_dir=folder / f"state_{mode}",
                                     device="cpu", compile=mode)
    return folder, results


def test_compiled_pretraining_saves_eager_keys_and_weights(pretrained_twice):
    folder, results = pretrained_twice
    eager, compiled = load_file(folder / "none" / "model.safetensors"), load_file(folder / "default" / "model.safetensors")
    assert sorted(compiled) == sorted(eager) and not any("_orig_mod" in key for key in compiled)
    for key in eager:
        torch.testing.assert_close(compiled[key], eager[key], rtol=1e-4, atol=1e-5, msg=key)  # 3 steps of AdamW agree
    eager_checkpoint = load_file(folder / "state_none" / "checkpoint-2" / "model.safetensors")
    compiled_checkpoint = load_file(folder / "state_default" / "checkpoint-2" / "model.safetensors")
    assert sorted(compiled_checkpoint) == sorted(eager_checkpoint)
    model = VqdnaForMaskedLM.from_pretrained(folder / "default")  # an eager model loads the compiled run's folder
    assert not model.vqdna.embeddings.code_embeddings[0].weight.requires_grad
    assert results["default"]["final_loss"] == pytest.approx(results["none"]["final_loss"], rel=1e-4)


def test_compile_time_is_reported_only_when_compiled(pretrained_twice):
    _, results = pretrained_twice
    assert "compile" not in results["none"]  # the eager run's metrics.json is as it always was
    report = results["default"]["compile"]
    assert report["mode"] == "default" and report["static_length"] == 24
    assert report["first_step_seconds"] > 0 and report["later_steps"] == 2 and report["later_step_seconds"] > 0


def test_a_compiled_tokenizer_loaded_from_its_folder_encodes_like_eager(pretrained_twice, monkeypatch):
    """What `vqdna tokenize` does under the workflow's export: the mode comes from the environment."""
    folder, _ = pretrained_twice
    ids = np.random.default_rng(2).integers(0, 5, (4, 48))  # the shape the VQ test compiled: inductor's cache serves it
    eager = load_tokenizer(folder / "tokenizer", device="cpu").encode_ids(ids)
    monkeypatch.setenv("VQDNA_COMPILE_TOKENIZER", "reduce-overhead")  # on the CPU: inductor without CUDA graphs
    tokenizer = load_tokenizer(folder / "tokenizer", device="cpu")
    assert tokenizer.compile_mode == "reduce-overhead"
    assert all(np.array_equal(a, b) for a, b in zip(eager, tokenizer.encode_ids(ids), strict=True))
