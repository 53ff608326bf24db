"""VQ tokenizer: nearest code (eq. 1), EMA codebook (eq. 5), dead-code restarts, straight-through
estimator (eqs. 2-3), the loss (eq. 4), save/load/hash, encode, code metrics and stage-1 training."""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pysam
import pytest
import torch

from vqdna import VqdnaError
from vqdna.tokenizer import metrics
from vqdna.tokenizer.api import VQTokenizer, load_tokenizer, onehot, tokenizer_hash
from vqdna.tokenizer.evaluate import evaluate_tokenizer
from vqdna.tokenizer.train import train_tokenizer
from vqdna.tokenizer.vq import VQVAE, EMACodebook, VQConfig, nearest_code
from vqdna.windows import WindowSettings, read_base_ids, write_windows

TINY = dict(width=16, depth=1, codebook_size=16)


def _tiny_model(seed: int = 0, **overrides) -> VQVAE:
    torch.manual_seed(seed)
    return VQVAE(VQConfig(**{**TINY, **overrides}))


def _random_sequence(rng: np.random.Generator, length: int) -> str:
    return "".join(rng.choice(list("ACGT"), length))


def _synthetic_windows(folder: Path, length: int = 4000, window: int = 32) -> Path:
    """A random one-contig genome (plain FASTA, faidx-indexed) cut into windows."""
    folder.mkdir(parents=True, exist_ok=True)
    sequence = _random_sequence(np.random.default_rng(7), length)
    fasta = folder / "toy.fa"
    fasta.write_text(">chr1\n" + "\n".join(sequence[i : i + 60] for i in range(0, length, 60)) + "\n")
    pysam.faidx(str(fasta))
    windows = folder / "toy.windows.parquet"
    write_windows(fasta, windows, "toy", WindowSettings(length=window, step=window))
    return windows


# -- eq. 1: nearest code ---------------------------------------------------------------------------


def test_nearest_code_is_the_l2_nearest_not_the_largest_inner_product():
    embed = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [10.0, 0.0]])
    z = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.6], [-1.0, -1.0], [1.2, 0.0]])
    indices, distance = nearest_code(z, embed)
    # Row 4: the inner product favours code 4 (12.0 > 1.2), the L2 distance code 1 (0.04 < 77.44).
    assert indices.tolist() == [1, 2, 3, 0, 1]
    assert torch.allclose(distance, torch.tensor([0.02, 0.08, 0.32, 2.0, 0.04]), atol=1e-6)


def test_nearest_code_runs_in_fp32_under_bf16_autocast():
    """Integer-valued inputs near 100 are exact in bf16; their squared distances (~1e5) are not.

    Computed in bf16 the distance expansion loses the small differences between
    codes and picks wrong codes; in fp32 every distance is exact.
    """
    g = torch.Generator().manual_seed(0)
    n, k, d = 256, 8, 16
    z = torch.randint(90, 110, (n, d), generator=g).to(torch.bfloat16)
    centre = torch.randint(90, 110, (1, d), generator=g)
    embed = (centre + torch.randint(-3, 4, (k, d), generator=g)).to(torch.bfloat16)
    exact = ((z.double()[:, None, :] - embed.double()[None, :, :]) ** 2).sum(-1)  # (n, k)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        naive = z.pow(2).sum(1, keepdim=True) - 2 * z @ embed.t() + embed.pow(2).sum(1)[None, :]
        indices, distance = nearest_code(z, embed)
    # The case discriminates: a bf16 computation of eq. 1 picks a farther code on some rows.
    naive_pick = exact.gather(1, naive.argmin(1)[:, None]).squeeze(1)
    assert (naive_pick > exact.min(1).values).any()
    assert distance.dtype == torch.float32
    chosen = exact.gather(1, indices[:, None]).squeeze(1)
    assert torch.equal(chosen, exact.min(1).values)  # every row gets a nearest code (ties allowed)
    assert torch.equal(distance.double(), exact.min(1).values)


# -- eq. 5: EMA update ---------------------------------------------------------------------------


def test_ema_update_matches_eq5_with_laplace_smoothing_by_hand():
    codebook = EMACodebook(3, 2, decay=0.9, eps=0.1)
    codebook.cluster_size.copy_(torch.tensor([1.0, 2.0, 3.0]))
    codebook.embed_avg.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]))
    z = torch.tensor([[1.0, 1.0], [3.0, 1.0], [0.0, 2.0], [2.0, 2.0]])
    codebook._ema_update(z, torch.tensor([0, 0, 2, 2]))
    # counts (2, 0, 2); sums (4, 2), (0, 0), (2, 4)
    cluster_size = [0.9 * 1 + 0.1 * 2, 0.9 * 2 + 0.1 * 0, 0.9 * 3 + 0.1 * 2]  # 1.1, 1.8, 2.9
    embed_avg = [[0.9 * 1 + 0.1 * 4, 0.9 * 2 + 0.1 * 2], [0.9 * 3, 0.9 * 4], [0.9 * 5 + 0.1 * 2, 0.9 * 6 + 0.1 * 4]]
    total = sum(cluster_size)  # 5.8
    smoothed = [(c + 0.1) / (total + 3 * 0.1) * total for c in cluster_size]
    embed = [[v / s for v in row] for row, s in zip(embed_avg, smoothed)]
    assert torch.allclose(codebook.cluster_size, torch.tensor(cluster_size), atol=1e-6)
    assert torch.allclose(codebook.embed_avg, torch.tensor(embed_avg), atol=1e-6)
    assert torch.allclose(codebook.embed, torch.tensor(embed), atol=1e-6)
    assert torch.allclose(codebook.embed[0], torch.tensor([1.3, 2.0]) / (1.2 / 6.1 * 5.8), atol=1e-6)


# -- dead-code restarts ----------------------------------------------------------------------------


def _codebook_with_dead_codes(k: int = 8, live: int = 4, *, restart_fraction: float = 0.25, seed: int = 3) -> EMACodebook:
    codebook = EMACodebook(k, 2, dead_code_threshold=0.03, restart_fraction=restart_fraction, seed=seed)
    counts = torch.zeros(k)
    counts[:live] = 10.0
    codebook.cluster_size.copy_(counts)
    codebook.embed.copy_(torch.arange(2 * k, dtype=torch.float32).view(k, 2) - 1000)
    codebook.embed_avg.copy_(codebook.embed)
    codebook.initialized.fill_(True)
    return codebook


def _candidates(n: int = 20) -> torch.Tensor:
    return torch.stack([torch.arange(n, dtype=torch.float32) + 100, -torch.arange(n, dtype=torch.float32)], 1)


@pytest.mark.parametrize(("restart_fraction", "expected"), [(0.25, 2), (0.3, 3), (0.01, 1), (1.0, 4)])
def test_restart_moves_at_most_ceil_fraction_of_k_dead_codes_onto_encoder_outputs(restart_fraction, expected):
    codebook = _codebook_with_dead_codes(restart_fraction=restart_fraction)
    before = codebook.embed.clone()
    mean_count = float(codebook.cluster_size.mean())
    z = _candidates()
    restarted = codebook._restart_dead_codes(z, torch.ones(len(z)))
    # 4 dead codes (4..7); budget ceil(fraction * 8) (at least 1), never more than the dead ones.
    assert restarted == expected == min(4, max(1, math.ceil(restart_fraction * 8)))
    changed = (codebook.embed != before).any(1).nonzero().flatten().tolist()
    assert len(changed) == expected
    assert set(changed) <= {4, 5, 6, 7}  # live codes are never moved
    for code in changed:
        assert (codebook.embed[code] == z).all(1).any(), f"code {code} is not on an encoder output"
        assert codebook.cluster_size[code] == pytest.approx(0.03 * mean_count * 2)
        assert torch.allclose(codebook.embed_avg[code], codebook.embed[code] * codebook.cluster_size[code])
    assert len({tuple(codebook.embed[c].tolist()) for c in changed}) == len(changed)  # distinct outputs


def test_restart_draws_where_the_quantization_error_is():
    codebook = _codebook_with_dead_codes(restart_fraction=0.01)  # one code per call
    z = _candidates()
    distance = torch.zeros(len(z))
    distance[7] = 5.0  # only output 7 is badly quantized
    assert codebook._restart_dead_codes(z, distance) == 1
    assert (codebook.embed == z[7]).all(1).sum() == 1


def test_no_dead_codes_no_restart():
    codebook = _codebook_with_dead_codes(live=8)
    before = codebook.embed.clone()
    assert codebook._restart_dead_codes(_candidates(), torch.ones(20)) == 0
    assert torch.equal(codebook.embed, before)


def test_a_code_no_output_chose_for_patience_steps_is_dead_even_with_a_high_ema_count():
    codebook = _codebook_with_dead_codes(live=8, restart_fraction=1.0)
    codebook.dead_code_patience = 3
    z = _candidates()
    chosen = torch.arange(len(z)) % 4  # the outputs choose codes 0..3 only
    for step in range(3):
        codebook._ema_update(z, chosen)
        assert codebook.unused_steps.tolist() == [0] * 4 + [step + 1] * 4
    assert (codebook.cluster_size[4:] >= 0.03 * codebook.cluster_size.mean()).all()  # not rare by count
    assert codebook._restart_dead_codes(z, torch.ones(len(z))) == 4
    assert codebook.unused_steps.tolist() == [0] * 8


def test_initial_codes_are_distinct_encoder_outputs():
    codebook = EMACodebook(16, 2, seed=1)
    z = _candidates(20)
    codebook._initialize(z)
    rows = {tuple(row.tolist()) for row in codebook.embed}
    assert len(rows) == 16
    assert rows <= {tuple(row.tolist()) for row in z}


def test_restarts_are_keyed_by_seed_and_step():
    def restart(step: int, seed: int = 3) -> torch.Tensor:
        codebook = _codebook_with_dead_codes(k=64, live=24, restart_fraction=0.1, seed=seed)
        codebook.step.fill_(step)
        codebook._restart_dead_codes(_candidates(200), torch.ones(200))
        return codebook.embed

    assert torch.equal(restart(5), restart(5))
    assert not torch.equal(restart(5), restart(6))
    assert not torch.equal(restart(5, seed=3), restart(5, seed=4))


@pytest.mark.parametrize("enabled", [True, False])
def test_forward_restarts_only_when_enabled(enabled):
    codebook = _codebook_with_dead_codes()
    codebook.train()
    codebook.embed[:4] = torch.tensor([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0], [50.0, 50.0]])
    codebook.restarts_enabled = enabled
    z = _candidates()[None] / 4  # (1, 20, 2), all nearer to live codes than to dead ones (at -1000)
    reference = copy.deepcopy(codebook)
    flat = z.reshape(-1, 2)
    indices, _ = nearest_code(flat, reference.embed)
    reference._ema_update(flat, indices)  # what the EMA alone does
    codebook(z)
    if enabled:
        assert codebook.last_restarts == 2
        assert not torch.equal(codebook.embed[4:], reference.embed[4:])
    else:
        assert codebook.last_restarts == 0
        assert torch.equal(codebook.embed, reference.embed)
    assert torch.equal(codebook.embed[:4], reference.embed[:4])
    assert int(codebook.step) == 1


# -- eqs. 2-4: straight-through estimator and loss --------------------------------------------------


def test_straight_through_forward_value_is_the_code_vector_and_gradient_is_identity():
    codebook = EMACodebook(6, 4).eval()
    z = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    quantized, codes = codebook(z)
    assert torch.allclose(quantized, codebook.embed[codes], atol=1e-6)
    weights = torch.randn(2, 5, 4)
    (quantized * weights).sum().backward()
    assert torch.allclose(z.grad, weights)  # dL/dZ := dL/dZ~


def test_reconstruction_gradient_reaches_the_encoder():
    model = _tiny_model().train()
    ids = torch.as_tensor(np.random.default_rng(0).integers(0, 5, (2, 24)))
    out = model(onehot(ids), ids)
    out.reconstruction_loss.backward()  # only the CE term: no commitment gradient
    grad = model.encoder.stem.weight.grad
    assert grad is not None and grad.abs().sum() > 0


def test_loss_is_reconstruction_plus_beta_commitment_by_hand():
    model = _tiny_model(beta=0.7).eval()
    ids = torch.as_tensor(np.random.default_rng(1).integers(0, 5, (3, 20)))
    with torch.no_grad():
        z = model.encoder(onehot(ids))[-1]  # code_dim == width: no projection
        embed = model.codebooks[0].embed
        codes = ((z[:, :, None, :] - embed[None, None]) ** 2).sum(-1).argmin(-1)
        q = embed[codes]
        commitment = ((z - q) ** 2).mean()
        log_probs = model.decoder(q).log_softmax(-1)
        reconstruction = -log_probs.gather(-1, ids[..., None]).mean()
        out = model(onehot(ids), ids)
    assert torch.equal(out.codes[0], codes)
    assert torch.allclose(out.commitment_loss, commitment, atol=1e-6)
    assert torch.allclose(out.reconstruction_loss, reconstruction, atol=1e-5)
    assert torch.allclose(out.loss, reconstruction + 0.7 * commitment, atol=1e-5)


# -- Tokenizer: save, load, hash, encode ------------------------------------------------------------


def test_save_load_gives_identical_codes_and_the_hash_is_sha256_of_config_and_weights(tmp_path):
    tokenizer = VQTokenizer(_tiny_model(), device="cpu")
    digest = tokenizer.save(tmp_path / "a")
    by_hand = hashlib.sha256(
        b"config.json" + (tmp_path / "a/config.json").read_bytes() + b"model.safetensors" + (tmp_path / "a/model.safetensors").read_bytes()
    )
    assert digest == tokenizer_hash(tmp_path / "a") == by_hand.hexdigest()

    loaded = load_tokenizer(tmp_path / "a", device="cpu")
    assert loaded.hash == digest
    rng = np.random.default_rng(2)
    sequences = [_random_sequence(rng, n) for n in (50, 50, 17, 64)]
    for ours, theirs in zip(tokenizer.encode(sequences), loaded.encode(sequences), strict=True):
        assert ours.shape == (1, len(theirs[0]))
        assert np.array_equal(ours, theirs)

    assert VQTokenizer(loaded.model, device="cpu").save(tmp_path / "b") == digest  # same model, same hash
    with torch.no_grad():
        loaded.model.encoder.stem.weight[0, 0, 0] += 1.0
    assert loaded.save(tmp_path / "c") != digest


def test_encode_does_not_depend_on_the_batch():
    tokenizer = VQTokenizer(_tiny_model(), device="cpu")
    rng = np.random.default_rng(3)
    target = _random_sequence(rng, 40)
    others = [_random_sequence(rng, n) for n in (40, 40, 13, 77, 40)]
    alone = tokenizer.encode([target])[0]
    batched = tokenizer.encode(others[:2] + [target] + others[2:])[2]
    assert np.array_equal(alone, batched)
    assert np.array_equal(alone, tokenizer.encode([target], batch_size=1)[0])


def test_encode_applies_the_sequence_policy():
    tokenizer = VQTokenizer(_tiny_model(), device="cpu")
    raw = "acgtRYKMSWBDHVnNacgtACGT"
    policy = "ACGTNNNNNNNNNNNNACGTACGT"
    assert np.array_equal(tokenizer.encode([raw])[0], tokenizer.encode([policy])[0])
    with pytest.raises(VqdnaError):
        tokenizer.encode(["ACGT1ACGT"])
    with pytest.raises(VqdnaError):
        tokenizer.encode(["ACGTXACGT"])


# -- code metrics --------------------------------------------------------------------------------


def test_usage_and_perplexity_by_hand():
    uniform = np.tile(np.arange(8), 5)
    assert metrics.usage(uniform, 8) == 1.0
    assert metrics.perplexity(uniform, 8) == pytest.approx(8.0)
    single = np.full((3, 4), 5)
    assert metrics.usage(single, 8) == 1 / 8
    assert metrics.perplexity(single, 8) == pytest.approx(1.0)
    halves = np.array([[0, 1], [0, 1]])
    assert metrics.usage(halves, 4) == 0.5
    assert metrics.perplexity(halves, 4) == pytest.approx(2.0)
    skewed = np.array([0, 0, 0, 1])  # p = (3/4, 1/4)
    assert metrics.perplexity(skewed, 4) == pytest.approx(math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25))))


def test_reconstruction_accuracy_excludes_n():
    truth = np.array([[0, 1, 4, 4, 2]])
    predicted = np.array([[0, 2, 0, 1, 2]])
    assert metrics.reconstruction_accuracy(predicted, truth) == pytest.approx(2 / 3)
    assert math.isnan(metrics.reconstruction_accuracy(predicted, np.full((1, 5), 4)))


def test_neighbour_probe_codes_that_name_the_next_base():
    rng = np.random.default_rng(4)
    train_bases, test_bases = rng.integers(0, 4, (100, 30)), rng.integers(0, 4, (100, 30))

    def next_base_codes(bases):
        return np.concatenate([bases[:, 1:], bases[:, -1:]], axis=1)

    result = metrics.neighbour_probe(next_base_codes(train_bases), train_bases, next_base_codes(test_bases), test_bases, 4)
    assert result["+1"] == 1.0
    for offset in ("-2", "-1", "+2"):
        assert abs(result[offset] - 0.25) < 0.03
    assert result["mean"] == pytest.approx(np.mean([result[k] for k in ("-2", "-1", "+1", "+2")]))


def test_neighbour_probe_random_codes_are_at_chance():
    rng = np.random.default_rng(5)
    bases = rng.integers(0, 4, (400, 60))
    codes = rng.integers(0, 16, (400, 60))
    result = metrics.neighbour_probe(codes[:200], bases[:200], codes[200:], bases[200:], 16)
    for offset in ("-2", "-1", "+1", "+2", "mean"):
        assert abs(result[offset] - 0.25) < 0.02, result


# -- stage 1 training ------------------------------------------------------------------------------

TRAIN_SETTINGS = {
    **TINY,
    "steps": 4,
    "batch_size": 8,
    "warmup_steps": 1,
    "restart_free_steps": 1,
    "log_every": 2,
}


@pytest.fixture(scope="module")
def windows_file(tmp_path_factory) -> Path:
    return _synthetic_windows(tmp_path_factory.mktemp("genome"))


@pytest.fixture(scope="module")
def trained(windows_file, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("trained") / "tokenizer"
    result = train_tokenizer("tiny", TRAIN_SETTINGS, [windows_file], out, device="cpu")
    evaluate_tokenizer(out, [windows_file], {"heldout_windows": 8, "probe_windows": 32}, out / "metrics.json")
    return out, result


def test_train_tokenizer_writes_a_measured_tokenizer(trained):
    out, result = trained
    expected = {"config.json", "model.safetensors", "training.json", "metrics.json", "curves.csv", "curves.png"}
    assert {p.name for p in out.iterdir()} >= expected
    written = json.loads((out / "metrics.json").read_text())
    assert written["tokenizer_hash"] == result["tokenizer_hash"] == tokenizer_hash(out)
    assert 0.0 <= written["reconstruction_accuracy"] <= 1.0
    level = written["levels"][0]
    assert level["codebook_size"] == 16
    assert 0 < level["usage"] <= 1.0
    assert 1.0 <= level["perplexity"] <= 16.0
    assert 0.0 <= level["neighbour_probe"]["mean"] <= 1.0
    assert written["heldout_windows"] == 8
    with open(out / "curves.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["step"]) for r in rows] == [2, 4]
    assert {"loss", "reconstruction_loss", "commitment_loss", "batch_usage_l1"} <= set(rows[0])
    loaded = load_tokenizer(out, device="cpu")
    assert loaded.hash == written["tokenizer_hash"]
    assert loaded.config.width == 16 and loaded.config.codebook_size == 16
    assert bool(loaded.model.codebooks[0].initialized) and int(loaded.model.codebooks[0].step) == 4


def test_a_dev_split_measurement_reads_dev_windows_and_says_so(trained, windows_file, tmp_path):
    out, _ = trained
    settings = {"heldout_windows": 1000, "probe_windows": 32}
    test = evaluate_tokenizer(out, [windows_file], settings, tmp_path / "test.json")
    dev = evaluate_tokenizer(out, [windows_file], settings, tmp_path / "dev.json", split="dev")
    assert "heldout_split" not in test  # the workflow's metrics.json keeps its shape
    assert json.loads((tmp_path / "dev.json").read_text())["heldout_split"] == "dev"
    assert dev["heldout_windows"] == len(read_base_ids(windows_file, "dev")) != 0
    assert test["heldout_windows"] == len(read_base_ids(windows_file, "test"))
    assert dev["levels"][0]["code_counts"] != test["levels"][0]["code_counts"]
    with pytest.raises(VqdnaError, match="split 'train'"):
        evaluate_tokenizer(out, [windows_file], settings, tmp_path / "train.json", split="train")
    assert not (tmp_path / "train.json").exists()


def test_train_tokenizer_is_reproducible(trained, windows_file, tmp_path):
    _, first = trained
    again = train_tokenizer("tiny", TRAIN_SETTINGS, [windows_file], tmp_path / "again", device="cpu")
    assert again["tokenizer_hash"] == first["tokenizer_hash"]
    other = train_tokenizer("tiny", {**TRAIN_SETTINGS, "seed": 1}, [windows_file], tmp_path / "other", device="cpu")
    assert other["tokenizer_hash"] != first["tokenizer_hash"]


def test_train_tokenizer_refuses_an_unknown_setting(windows_file, tmp_path):
    with pytest.raises(VqdnaError, match="codebok_size"):
        train_tokenizer("tiny", {**TRAIN_SETTINGS, "codebok_size": 8}, [windows_file], tmp_path / "t", device="cpu")
    assert not (tmp_path / "t").exists()
