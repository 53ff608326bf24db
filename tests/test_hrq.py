"""Hierarchical Residual Quantization (eqs. 6-11) on hand-made tensors, and one tiny HRQ trained on real genomes."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from helpers import data_file

from vqdna import VqdnaError
from vqdna.download import fetch_genome
from vqdna.tokenizer.api import load_tokenizer, onehot
from vqdna.tokenizer.evaluate import evaluate_tokenizer
from vqdna.tokenizer.hrq import HRQ, HRQConfig
from vqdna.tokenizer.train import split_config, train_tokenizer
from vqdna.windows import WindowSettings, write_windows

WIDTH = 8


def _vectors(rows: list[list[float]]) -> torch.Tensor:
    """2-d points padded with zeros to WIDTH dimensions: distances are those of the first two coordinates."""
    out = torch.zeros(len(rows), WIDTH)
    out[:, : len(rows[0])] = torch.tensor(rows, dtype=torch.float32)
    return out


def _hrq(tables: list[torch.Tensor], *, beta: float = 0.5) -> HRQ:
    """An HRQ with one level per table, level n reading encoder block n, its codebooks set by hand."""
    depth = len(tables)
    model = HRQ(
        HRQConfig(width=WIDTH, depth=depth, taps=list(range(1, depth + 1)), codebook_sizes=[len(t) for t in tables], beta=beta)
    )
    for codebook, table in zip(model.codebooks, tables, strict=True):
        codebook.embed.copy_(table)
        codebook.embed_avg.copy_(table)
        codebook.cluster_size.fill_(1.0)
        codebook.initialized.fill_(True)
    return model


def _nearest(points: torch.Tensor, table: torch.Tensor) -> list[int]:
    """Brute-force L2 nearest code per row (no ties in the cases below)."""
    return ((points[:, None, :] - table[None, :, :]) ** 2).sum(-1).argmin(1).tolist()


# Level 1: a 4 x 4 grid; level 2 (and 3): a 2 x 2 grid, half the scale (residual levels are finer).
LEVEL1 = _vectors([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0], [4.0, 4.0]])
LEVEL2 = _vectors([[0.0, 0.0], [2.0, 0.0], [0.0, 2.0], [2.0, 2.0]])
LEVEL3 = _vectors([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])

# Three positions (B=1, L=3). Z^(1) and Z^(2) are the hidden states at the two taps.
Z1 = _vectors([[3.9, 0.1], [0.2, 3.7], [3.8, 3.9]])
Z2 = _vectors([[2.2, 0.2], [0.9, 2.9], [2.1, 1.9]])


def _hidden(*levels: torch.Tensor, grad: bool = False) -> list[torch.Tensor]:
    return [z.clone()[None].requires_grad_(grad) for z in levels]


# -- eq. 8: what each level quantizes ------------------------------------------------------------------


def test_level_one_quantizes_z1_and_level_two_quantizes_2z2_minus_the_level_one_code():
    model = _hrq([LEVEL1, LEVEL2])
    q = model.quantize(_hidden(Z1, Z2), update=False)
    # level 1: nearest codes of Z^(1): (3.9, 0.1) -> 1, (0.2, 3.7) -> 2, (3.8, 3.9) -> 3
    assert q.codes[0][0].tolist() == [1, 2, 3] == _nearest(Z1, LEVEL1)
    # H^(2) = 2 Z^(2) - e(M^(1)): (0.4, 0.4), (1.8, 1.8), (0.2, -0.2) -> codes 0, 3, 0
    h2 = 2 * Z2 - LEVEL1[[1, 2, 3]]
    assert torch.allclose(h2[:, :2], torch.tensor([[0.4, 0.4], [1.8, 1.8], [0.2, -0.2]]), atol=1e-6)
    assert q.codes[1][0].tolist() == [0, 3, 0] == _nearest(h2, LEVEL2)
    # The case discriminates: the nearest codes of Z^(2) itself are 1, 2, 3 at every position.
    assert _nearest(Z2, LEVEL2) == [1, 2, 3]
    assert all(a != b for a, b in zip(q.codes[1][0].tolist(), _nearest(Z2, LEVEL2)))


def test_level_three_quantizes_2z3_minus_the_level_two_code():
    """H^(n) = 2 Z^(n) - e(M^(n-1)): the previous level's code vector, not a running sum or the level-1 code."""
    z3 = _vectors([[0.9, 0.4], [1.6, 1.1], [0.3, 0.8]])
    model = _hrq([LEVEL1, LEVEL2, LEVEL3])
    q = model.quantize(_hidden(Z1, Z2, z3), update=False)
    m1, m2 = q.codes[0][0], q.codes[1][0]
    assert m1.tolist() == [1, 2, 3] and m2.tolist() == [0, 3, 0]
    h3 = 2 * z3 - LEVEL2[m2]  # (1.8, 0.8), (1.2, 0.2), (0.6, 1.6)
    expected = _nearest(h3, LEVEL3)
    assert expected == [3, 1, 3]
    assert q.codes[2][0].tolist() == expected
    assert _nearest(2 * z3 - LEVEL1[m1], LEVEL3) != expected  # e(M^(1)) instead would pick other codes
    assert _nearest(z3, LEVEL3) != expected


def test_quantize_without_update_leaves_the_codebooks_alone():
    model = _hrq([LEVEL1, LEVEL2]).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.quantize(_hidden(Z1, Z2), update=False)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key


# -- eqs. 9-10: the tokenizer embedding ------------------------------------------------------------------


def test_embedding_is_the_mean_of_the_level_code_vectors():
    model = _hrq([LEVEL1, LEVEL2])
    q = model.quantize(_hidden(Z1, Z2), update=False)
    e1, e2 = LEVEL1[[1, 2, 3]], LEVEL2[[0, 3, 0]]
    expected = (e1 + e2) / 2
    assert torch.allclose(q.embedding[0], expected, atol=1e-6)  # forward value of the straight-through sum
    assert torch.allclose(model.embed(q.codes)[0], expected, atol=1e-6)
    assert torch.allclose(q.partial_embeddings[0][0], e1, atol=1e-6)  # after 1 level: e(M^(1))
    assert torch.allclose(q.partial_embeddings[1][0], expected, atol=1e-6)  # after 2 levels: the embedding
    assert not any(p.requires_grad for p in q.partial_embeddings)


def test_partial_embeddings_of_three_levels_are_running_means():
    z3 = _vectors([[0.9, 0.4], [1.6, 1.1], [0.3, 0.8]])
    model = _hrq([LEVEL1, LEVEL2, LEVEL3])
    q = model.quantize(_hidden(Z1, Z2, z3), update=False)
    vectors = [table[codes[0]] for table, codes in zip([LEVEL1, LEVEL2, LEVEL3], q.codes)]
    for n in range(3):
        assert torch.allclose(q.partial_embeddings[n][0], torch.stack(vectors[: n + 1]).mean(0), atol=1e-6), n
    assert torch.allclose(q.embedding[0], torch.stack(vectors).mean(0), atol=1e-6)
    assert torch.allclose(model.embed(q.codes)[0], torch.stack(vectors).mean(0), atol=1e-6)


# -- eq. 11: the loss ------------------------------------------------------------------------------


def test_commitment_is_the_sum_over_levels_of_the_distance_to_the_embedding_after_n_levels():
    model = _hrq([LEVEL1, LEVEL2])
    q = model.quantize(_hidden(Z1, Z2), update=False)
    e1, e2 = LEVEL1[[1, 2, 3]], LEVEL2[[0, 3, 0]]
    by_hand = ((Z1 - e1) ** 2).mean() + ((Z2 - (e1 + e2) / 2) ** 2).mean()
    assert torch.allclose(q.commitment, by_hand, atol=1e-6)
    # Not the per-level distance to the level's own code vector (the plain residual-VQ reading).
    assert not torch.allclose(q.commitment, ((Z1 - e1) ** 2).mean() + ((2 * Z2 - e1 - e2) ** 2).mean(), atol=1e-3)


def test_forward_loss_is_cross_entropy_plus_beta_commitment_by_hand():
    torch.manual_seed(0)
    model = HRQ(HRQConfig(width=WIDTH, depth=2, taps=[1, 2], codebook_sizes=[6, 10], beta=0.7)).eval()
    ids = torch.as_tensor(np.random.default_rng(0).integers(0, 5, (3, 17)))
    with torch.no_grad():
        z1, z2 = model.encoder(onehot(ids))
        t1, t2 = model.codebooks[0].embed, model.codebooks[1].embed
        m1 = ((z1[:, :, None] - t1[None, None]) ** 2).sum(-1).argmin(-1)
        h2 = 2 * z2 - t1[m1]
        m2 = ((h2[:, :, None] - t2[None, None]) ** 2).sum(-1).argmin(-1)
        embedding = (t1[m1] + t2[m2]) / 2
        commitment = ((z1 - t1[m1]) ** 2).mean() + ((z2 - embedding) ** 2).mean()
        reconstruction = -model.decoder(embedding).log_softmax(-1).gather(-1, ids[..., None]).mean()
        out = model(onehot(ids), ids)
    assert torch.equal(out.codes[0], m1) and torch.equal(out.codes[1], m2)
    assert torch.allclose(out.commitment_loss, commitment, atol=1e-5)
    assert torch.allclose(out.reconstruction_loss, reconstruction, atol=1e-5)
    assert torch.allclose(out.loss, reconstruction + 0.7 * commitment, atol=1e-5)
    # decode(codes) reads the same embedding
    assert torch.allclose(model.decode(out.codes), model.decoder(embedding), atol=1e-5)


# -- straight-through gradients --------------------------------------------------------------------------


def test_straight_through_gradient_reaches_both_taps_with_the_eq8_factors():
    """Z^ = (H^^(1) + H^^(2)) / 2 with H^(2) = 2 Z^(2) - sg[e(M^(1))]:

    dZ^/dZ^(2) = (1/2) * 2 = 1, and dZ^/dZ^(1) = 1/2 through level 1 only (had e(M^(1)) in
    H^(2) carried a gradient, the two paths would cancel and Z^(1) would get none).
    """
    model = _hrq([LEVEL1, LEVEL2])
    hidden = _hidden(Z1, Z2, grad=True)
    q = model.quantize(hidden, update=False)
    upstream = torch.randn(q.embedding.shape, generator=torch.Generator().manual_seed(1))
    (q.embedding * upstream).sum().backward()
    assert hidden[0].grad is not None and hidden[0].grad.abs().sum() > 0
    assert hidden[1].grad is not None and hidden[1].grad.abs().sum() > 0
    assert torch.allclose(hidden[0].grad, upstream / 2, atol=1e-6)
    assert torch.allclose(hidden[1].grad, upstream, atol=1e-6)


def test_commitment_gradient_pulls_each_tap_toward_its_embedding_after_n_levels():
    model = _hrq([LEVEL1, LEVEL2])
    hidden = _hidden(Z1, Z2, grad=True)
    q = model.quantize(hidden, update=False)
    q.commitment.backward()
    e1, e2 = LEVEL1[[1, 2, 3]], LEVEL2[[0, 3, 0]]
    numel = Z1.numel()
    assert torch.allclose(hidden[0].grad[0], 2 * (Z1 - e1) / numel, atol=1e-6)
    assert torch.allclose(hidden[1].grad[0], 2 * (Z2 - (e1 + e2) / 2) / numel, atol=1e-6)


def test_reconstruction_gradient_reaches_the_encoder_stem_through_both_levels():
    torch.manual_seed(0)
    model = HRQ(HRQConfig(width=WIDTH, depth=2, taps=[1, 2], codebook_sizes=[4, 4])).train()
    ids = torch.as_tensor(np.random.default_rng(1).integers(0, 5, (2, 20)))
    out = model(onehot(ids), ids)
    out.reconstruction_loss.backward()
    for block in model.encoder.blocks:  # block 2 feeds level 2 only; block 1 both levels
        grads = [p.grad for p in block.parameters() if p.grad is not None]
        assert grads and any(g.abs().sum() > 0 for g in grads)


# -- level sizes and configuration -----------------------------------------------------------------------


def test_default_level_sizes_are_2_to_the_n_times_k():
    config = HRQConfig(codebook_size=16, width=WIDTH, taps=[3, 6])
    assert config.level_sizes == [32, 64]
    model = HRQ(config)
    assert [cb.codebook_size for cb in model.codebooks] == [32, 64]
    assert [tuple(cb.embed.shape) for cb in model.codebooks] == [(32, WIDTH), (64, WIDTH)]
    assert HRQConfig(codebook_size=512, width=WIDTH).level_sizes == [1024, 2048]  # the paper's K = 512
    assert HRQConfig(codebook_size=4, width=WIDTH, taps=[2, 4, 6]).level_sizes == [8, 16, 32]


def test_explicit_codebook_sizes_are_used_as_given():
    config = HRQConfig(width=WIDTH, taps=[3, 6], codebook_sizes=[170, 342])
    assert config.level_sizes == [170, 342]
    assert [cb.codebook_size for cb in HRQ(config).codebooks] == [170, 342]


@pytest.mark.parametrize(
    "overrides",
    [
        {"taps": [6, 3]},  # not increasing
        {"taps": [3, 7]},  # beyond depth 6
        {"taps": [0, 3]},  # blocks count from 1
        {"taps": [2, 4], "depth": 3},  # beyond a shallower encoder
        {"taps": [3, 6], "codebook_sizes": [16]},  # one size for two levels
    ],
)
def test_bad_taps_or_sizes_raise(overrides):
    with pytest.raises(VqdnaError):
        HRQConfig(**{"width": WIDTH, **overrides})


def test_bad_taps_in_a_config_entry_raise_before_training():
    with pytest.raises(VqdnaError, match="taps"):
        split_config("h", {"type": "hrq", "taps": [4, 2], "width": WIDTH})


def test_projection_into_a_code_space_of_another_dimension():
    """code_dim != width: one projection per level into the code space, one back out (Table 7b)."""
    torch.manual_seed(0)
    model = HRQ(HRQConfig(width=WIDTH, depth=2, taps=[1, 2], codebook_sizes=[4, 8], code_dim=6)).eval()
    ids = torch.as_tensor(np.random.default_rng(2).integers(0, 5, (2, 11)))
    out = model(onehot(ids), ids)
    assert [tuple(c.shape) for c in out.codes] == [(2, 11), (2, 11)]
    assert int(out.codes[0].max()) < 4 and int(out.codes[1].max()) < 8
    assert tuple(model.embed(out.codes).shape) == (2, 11, 6)
    assert tuple(out.logits.shape) == (2, 11, 5)


# -- a tiny HRQ trained on real genomes ------------------------------------------------------------------

REAL_SETTINGS = {
    "type": "hrq",
    "train_genomes": ["ecoli_k12", "lambda_phage"],
    "codebook_size": 256,
    "width": 64,
    "steps": 400,
    "batch_size": 64,
    "crop_length": 128,
    "learning_rate": 2e-3,
    "warmup_steps": 50,
    "restart_free_steps": 200,
}


@pytest.fixture(scope="module")
def real_hrq(test_data, tmp_path_factory) -> dict:
    """E. coli + lambda windows (512 nt) -> one HRQ training (400 steps) -> evaluation on held-out windows."""
    folder = tmp_path_factory.mktemp("real_hrq")
    windows = []
    for genome, relative in [
        ("ecoli_k12", "genomes/GCF_000005845.2_ASM584v2_genomic.fna.gz"),
        ("lambda_phage", "genomes/lambda_virus.fa"),
    ]:
        fasta = folder / f"{genome}.fa.gz"
        fetch_genome(genome, str(data_file(test_data, relative)), fasta)
        write_windows(fasta, folder / f"{genome}.parquet", genome, WindowSettings(length=512, step=512))
        windows.append(folder / f"{genome}.parquet")
    out = folder / "tokenizer"
    # One thread: on a 2-core machine shared with another busy process, two OpenMP threads run ~8x slower
    # per step (spin-waiting), one thread at most ~2x slower when the machine is idle.
    threads = torch.get_num_threads()
    try:
        summary = train_tokenizer("hrq_tiny", REAL_SETTINGS, windows, out, threads=1, device="cpu")
        metrics = evaluate_tokenizer(out, windows, {"heldout_windows": 512, "probe_windows": 2048}, out / "metrics.json")
    finally:
        torch.set_num_threads(threads)  # train_tokenizer sets the process-wide count
    return {"out": out, "summary": summary, "metrics": metrics}


def test_real_hrq_reconstructs_and_uses_both_levels(real_hrq):
    metrics = real_hrq["metrics"]
    assert json.loads((real_hrq["out"] / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert metrics["type"] == "hrq"
    assert metrics["reconstruction_accuracy"] >= 0.99, metrics
    levels = metrics["levels"]
    assert [level["codebook_size"] for level in levels] == [512, 1024]
    assert levels[0]["usage"] >= 0.25, levels[0]
    assert levels[1]["usage"] >= 0.10, levels[1]
    assert levels[0]["neighbour_probe"]["mean"] >= 0.40, levels[0]  # chance is ~0.25
    assert set(levels[1]["neighbour_probe"]) >= {"-2", "-1", "+1", "+2", "mean"}
    assert levels[-1]["reconstruction_accuracy"] == metrics["reconstruction_accuracy"]


def test_real_hrq_curves_show_no_restart_in_the_final_stretch(real_hrq):
    out = real_hrq["out"]
    with open(out / "curves.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {"batch_usage_l1", "batch_usage_l2", "restarts", "step"} <= set(rows[0])
    assert int(rows[-1]["step"]) == 400
    final = {int(float(r["restarts"])) for r in rows if int(r["step"]) > 200}
    assert len(final) == 1, f"restarts changed after step 200: {sorted(final)}"
    assert int(float(rows[-1]["restarts"])) == real_hrq["summary"]["restarts"]
    assert (out / "curves.png").is_file() and (out / "curves.png").stat().st_size > 0


def test_real_hrq_loads_and_encodes_two_levels(real_hrq):
    tokenizer = load_tokenizer(real_hrq["out"], device="cpu")
    assert tokenizer.config.type == "hrq" and tokenizer.level_sizes == [512, 1024]
    assert tokenizer.hash == real_hrq["metrics"]["tokenizer_hash"] == real_hrq["summary"]["tokenizer_hash"]
    codes = tokenizer.encode(["ACGTACGTTTGACCANNACGT"])[0]
    assert codes.shape == (2, 21)
    assert (codes[0] < 512).all() and (codes[1] < 1024).all()
