"""Language mass, entropy and token statistics against hand-computed values."""

from __future__ import annotations

import math

import torch

from lensmap.metrics.mass import TokenSets, read_layers, reduce_logits


def test_mass_on_toy_vocabulary_matches_hand_computation():
    # vocab of 4 tokens: 0,1 -> "en", 2 -> "fr", 3 -> half en / half fr (a soft lexicon token)
    weights = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    logits = torch.tensor([[0.0, math.log(2.0), math.log(3.0), math.log(4.0)]])  # probs 1,2,3,4 / 10
    out = reduce_logits(logits, weights, torch.tensor([[2, -1]]), TokenSets.from_lists([[[0, 1], [3]]]))
    assert torch.allclose(out["mass"], torch.tensor([[0.1 + 0.2 + 0.2, 0.3 + 0.2]]))
    p = torch.tensor([0.1, 0.2, 0.3, 0.4])
    assert torch.allclose(out["entropy"], -(p * p.log()).sum().unsqueeze(0))
    assert torch.allclose(out["token_prob"][0, 0], torch.tensor(0.3))
    assert torch.isnan(out["token_prob"][0, 1])
    assert out["token_rank"][0, 0].item() == 2.0  # token 2 is second most likely
    assert torch.allclose(out["set_prob"], torch.tensor([[0.3, 0.4]]))
    assert out["top_token"].tolist() == [3]


def test_bfloat16_logits_are_softmaxed_in_float32():
    logits = torch.tensor([[10.0, 10.0 + 1 / 64, -5.0]], dtype=torch.bfloat16)
    out = reduce_logits(logits, torch.eye(3))
    assert out["mass"].dtype == torch.float32
    torch.testing.assert_close(out["mass"], torch.softmax(logits.float(), -1))


class _ScaleLens:
    name = "toy"

    def __init__(self, matrix):
        self.matrix = matrix

    def decode(self, hidden, layer):
        return hidden @ self.matrix * (layer + 1)


def test_chunking_does_not_change_results():
    g = torch.Generator().manual_seed(0)
    lens = _ScaleLens(torch.randn(8, 50, generator=g))
    hidden = torch.randn(3, 37, 8, generator=g)
    weights = torch.softmax(torch.randn(50, 5, generator=g), -1)
    ids = torch.randint(0, 50, (37, 2), generator=g)
    sets = TokenSets.from_lists([[[i % 50, (i + 7) % 50]] for i in range(37)])
    whole = read_layers(lens, hidden, [0, 4, 9], weights, token_ids=ids, token_sets=sets, chunk_rows=1000)
    parts = read_layers(lens, hidden, [0, 4, 9], weights, token_ids=ids, token_sets=sets, chunk_rows=5)
    for field in ("mass", "entropy", "token_prob", "token_rank", "set_prob", "top_token"):
        torch.testing.assert_close(getattr(whole, field), getattr(parts, field))
    naive = torch.softmax(hidden[1] @ lens.matrix * 5, -1) @ weights
    torch.testing.assert_close(whole.mass[1], naive, rtol=1e-5, atol=1e-6)
    assert torch.allclose(whole.mass.sum(-1), torch.ones(3, 37))


def test_entropy_and_ranks_against_torch_on_random_logits():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(6, 1000, generator=g) * 4
    logits[2, 10:20] = float("-inf")  # masked tokens must not turn the entropy into NaN
    out = reduce_logits(logits, torch.ones(1000, 1), torch.tensor([[0, 5]] * 6))
    logp = torch.log_softmax(logits, -1)
    expected = -(logp.exp() * logp).nan_to_num(0.0).sum(-1)
    torch.testing.assert_close(out["entropy"], expected, rtol=1e-5, atol=1e-4)
    ranks = (logits.argsort(-1, descending=True) == 5).float().argmax(-1) + 1
    torch.testing.assert_close(out["token_rank"][:, 1], ranks.float())
    torch.testing.assert_close(out["token_prob"][:, 0], logp[:, 0].exp())
    assert torch.equal(out["top_token"], logits.argmax(-1))
