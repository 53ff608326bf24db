"""bf16 autocast keeps fp32 where the numerics need it: the code search, the EMA statistics, every loss.

The GPU paths run under ``torch.autocast(dtype=torch.bfloat16)``. Here the
same autocast is forced on the CPU, so these checks run in CI without a GPU:
each would fail if the fp32 island it checks were left to autocast.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import TINY_ENCODER

from vqdna.lm.configuration import VqdnaConfig
from vqdna.lm.modeling import VqdnaForMaskedLM, VqdnaForSequenceClassification
from vqdna.tokenizer.api import onehot
from vqdna.tokenizer.hrq import HRQ, HRQConfig
from vqdna.tokenizer.vq import VQVAE, EMACodebook, VQConfig, nearest_code


def bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


def test_forced_cpu_autocast_really_computes_matmuls_in_bf16():
    a, b = torch.randn(8, 8), torch.randn(8, 8)
    with bf16():
        assert (a @ b).dtype == torch.bfloat16  # else every test below would pass vacuously


def test_the_nearest_code_is_searched_in_fp32_under_autocast():
    """Eq. 1 among close codes: in bf16 the distances' rounding (about 0.1 here) exceeds their gaps (about 0.005)."""
    generator = torch.Generator().manual_seed(0)
    centre = torch.randn(1, 32, generator=generator)
    embed = centre + 0.01 * torch.randn(64, 32, generator=generator)
    z = (centre + 0.01 * torch.randn(4096, 32, generator=generator)).bfloat16()  # the encoder's output under autocast
    with bf16():
        indices, _ = nearest_code(z, embed)
    exact = torch.cdist(z.double(), embed.double()).argmin(1)
    # fp32's own rounding of |z|^2 - 2 z.e + |e|^2 flips 0.8% of these near-ties; bf16's flipped 98.6%
    assert (indices == exact).float().mean() > 0.98


def _codebook() -> EMACodebook:
    codebook = EMACodebook(4, 8, decay=0.99)
    codebook.restarts_enabled = False
    with torch.no_grad():
        codebook.embed.copy_(torch.eye(4, 8) * 10)
        codebook.embed_avg.copy_(codebook.embed)
        codebook.cluster_size.fill_(1.0)
        codebook.initialized.fill_(True)
    return codebook.train()


def test_ema_counts_and_sums_accumulate_in_fp32_under_autocast():
    """3001 outputs choose code 0: bf16 holds 3001 as 3008, and its sums of thousands of vectors to 3 digits."""
    generator = torch.Generator().manual_seed(1)
    near_0 = torch.eye(4, 8)[0] * 10 + torch.rand(3001, 8, generator=generator)
    near_1 = torch.eye(4, 8)[1] * 10 + torch.rand(5, 8, generator=generator)
    z = torch.cat([near_0, near_1])[None].bfloat16()  # (1, N, D), as under autocast
    codebook = _codebook()
    with bf16():
        _, codes = codebook(z)
    assert torch.bincount(codes.flatten(), minlength=4).tolist() == [3001, 5, 0, 0]
    for name in ("embed", "embed_avg", "cluster_size"):
        assert getattr(codebook, name).dtype == torch.float32, name
    expected_size = 0.99 * 1.0 + 0.01 * np.array([3001, 5, 0, 0])
    np.testing.assert_allclose(codebook.cluster_size.numpy(), expected_size, rtol=1e-6)
    expected_sum = 0.99 * 10 + 0.01 * z[0, :3001, 0].double().sum().item()
    assert codebook.embed_avg[0, 0].item() == pytest.approx(expected_sum, rel=1e-6)


@pytest.mark.parametrize(
    "model",
    [
        VQVAE(VQConfig(width=16, depth=1, codebook_size=16)),
        HRQ(HRQConfig(width=16, depth=2, codebook_size=4, taps=[1, 2], codebook_sizes=[8, 16])),
    ],
    ids=["vq", "hrq"],
)
def test_tokenizer_losses_are_fp32_under_autocast_and_close_to_the_fp32_ones(model):
    torch.manual_seed(0)
    targets = torch.randint(0, 4, (4, 64))
    model.eval()  # no EMA step, so both passes see the same codebooks
    reference = model(onehot(targets), targets)
    with bf16():
        out = model(onehot(targets), targets)
    for name in ("loss", "reconstruction_loss", "commitment_loss"):
        value = getattr(out, name)
        assert value.dtype == torch.float32, name
        assert value.item() == pytest.approx(getattr(reference, name).item(), rel=0.05), name


def _encoder_config(**extra) -> VqdnaConfig:
    return VqdnaConfig(vocab_sizes=[16], code_embedding_dim=12, attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0, **TINY_ENCODER, **extra)


def test_masked_modelling_loss_is_fp32_under_autocast_and_padding_stays_finite():
    torch.manual_seed(0)
    model = VqdnaForMaskedLM(_encoder_config()).eval()
    input_ids = torch.randint(0, 16, (4, 40, 1))
    attention = torch.arange(40)[None] < torch.tensor([40, 33, 20, 7])[:, None]  # padded rows: masked attention
    masked = (torch.rand(4, 40) < 0.25) & attention
    labels = torch.where(masked[..., None], input_ids, torch.full_like(input_ids, -100))
    reference = model(input_ids, attention_mask=attention, masked_positions=masked, labels=labels)
    with bf16():
        out = model(input_ids, attention_mask=attention, masked_positions=masked, labels=labels)
    assert out.loss.dtype == torch.float32
    assert out.loss.item() == pytest.approx(reference.loss.item(), rel=0.02)
    assert torch.isfinite(out.logits[attention]).all()


def test_fine_tuning_losses_are_fp32_under_autocast():
    torch.manual_seed(0)
    input_ids = torch.randint(0, 16, (6, 30, 1))
    attention = torch.arange(30)[None] < torch.tensor([30, 30, 25, 12, 30, 5])[:, None]
    for num_labels, labels in ((3, torch.tensor([0, 1, 2, 0, 1, 2])), (1, torch.randn(6))):
        model = VqdnaForSequenceClassification(_encoder_config(num_labels=num_labels, classifier_dropout=0.0)).eval()
        reference = model(input_ids=input_ids, attention_mask=attention, labels=labels)
        with bf16():
            out = model(input_ids=input_ids, attention_mask=attention, labels=labels)
        assert out.loss.dtype == torch.float32
        assert out.loss.item() == pytest.approx(reference.loss.item(), rel=0.05, abs=1e-3)
        if num_labels > 1:  # the loss on bf16 logits would differ: it is taken on their fp32 copy
            assert out.loss.item() == pytest.approx(F.cross_entropy(out.logits.float(), labels).item(), rel=1e-6)
