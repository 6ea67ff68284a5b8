"""The fused lens + reduction against the reference (full logits, then reduce_logits)."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_CONFIGS, tiny_model

from lensmap.lenses.base import HeadInputs
from lensmap.lenses.logit import LogitLens
from lensmap.lenses.tuned import TunedLens
from lensmap.metrics.fused import ColumnMap, fused_reduce
from lensmap.metrics.mass import TokenSets, read_layers, reduce_logits
from lensmap.models.handle import ModelHandle

FIELDS = ("mass", "entropy", "token_prob", "token_rank", "set_prob", "top_token")


def _reference(lens, hidden, layers, weights, ids, sets):
    """The pre-fusion implementation: lens.decode one layer at a time, then reduce_logits."""
    return read_layers(lens, hidden, layers, weights, token_ids=ids, token_sets=sets, fused=False)


def _problem(vocab: int, n_rows: int, n_cols: int, seed: int, soft: bool):
    g = torch.Generator().manual_seed(seed)
    column = torch.randint(0, n_cols, (vocab,), generator=g)
    weights = torch.nn.functional.one_hot(column, n_cols).float()
    if soft:
        weights[::7] = torch.softmax(torch.randn(len(weights[::7]), n_cols, generator=g), -1)
    ids = torch.randint(0, vocab, (n_rows, 3), generator=g)
    ids[::4, 2] = -1
    sets = TokenSets.from_lists([[torch.randint(0, vocab, (1 + r % 3,), generator=g).tolist(), [r % vocab]]
                                 for r in range(n_rows)])
    return weights, ids, sets


# The reference's entropy (log Z from the top token's probability) carries float32 cancellation
# error of up to ~2e-4 nats at these scales; the fused one is checked against float64 separately.
ENTROPY_ATOL = 5e-4


def _entropy64(logits):
    logp = torch.log_softmax(logits.double(), -1)
    return -(logp.exp() * logp).nan_to_num(0.0).sum(-1)


def _assert_same(fused, reference):
    for field in FIELDS:
        a, b = getattr(fused, field), getattr(reference, field)
        assert a.shape == b.shape, field
        if field in ("top_token", "token_rank"):
            assert torch.equal(a.nan_to_num(-7), b.nan_to_num(-7)), field
        else:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-6 if field != "entropy" else ENTROPY_ATOL, equal_nan=True,
                                       msg=field)


@pytest.mark.parametrize("arch", ["qwen2", "gemma2-softcap", "gpt2", "bloom"])
@pytest.mark.parametrize("soft", [False, True])
def test_fused_read_layers_matches_reference_on_tiny_models(arch, soft):
    model = tiny_model(arch).eval()
    handle = ModelHandle.wrap(model, None, name=arch)
    lens = LogitLens(handle)
    assert lens.head_inputs(torch.randn(2, handle.d_model)) is not None
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(4, 23, handle.d_model, generator=g) * 3
    layers = [0, 1, 2, 3]
    weights, ids, sets = _problem(handle.vocab_size, 23, 5, 2, soft)
    reference = _reference(lens, hidden, layers, weights, ids, sets)
    # row blocks that straddle layers, and vocabulary tiles that do not divide the vocabulary
    for row_block in (7, 200):
        fused = read_layers(lens, hidden, layers, weights, token_ids=ids, token_sets=sets, chunk_rows=row_block)
        _assert_same(fused, reference)
    assert torch.allclose(reference.mass.sum(-1), torch.ones(4, 23))


def test_softcap_is_applied_per_tile():
    handle = ModelHandle.wrap(tiny_model("gemma2-softcap").eval(), None, name="g")
    assert handle.logit_softcap == 5.0
    h = torch.randn(6, handle.d_model) * 10
    head = LogitLens(handle).head_inputs(h)
    weights = torch.eye(handle.vocab_size)  # mass is then every token's probability
    out = fused_reduce(head, ColumnMap.from_weights(weights), vocab_tile=50)
    torch.testing.assert_close(out["mass"], torch.softmax(handle.head(h).float(), -1), rtol=0, atol=1e-6)
    assert handle.head(h).abs().max() <= 5.0


def test_tuned_lens_takes_the_fused_path_with_its_translators():
    handle = ModelHandle.wrap(tiny_model("llama").eval(), None, name="l")
    lens = TunedLens(handle)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for t in lens.translators:
            t.weight.normal_(0, 0.3, generator=g)
            t.bias.normal_(0, 0.3, generator=g)
    hidden = torch.randn(4, 9, handle.d_model, generator=g)
    weights, ids, sets = _problem(handle.vocab_size, 9, 3, 4, soft=False)
    reference = _reference(lens, hidden, [0, 1, 2, 3], weights, ids, sets)
    fused = read_layers(lens, hidden, [0, 1, 2, 3], weights, token_ids=ids, token_sets=sets, chunk_rows=10)
    _assert_same(fused, reference)
    # the translators matter: layer 0 differs from the logit lens
    plain = read_layers(LogitLens(handle), hidden, [0, 1, 2, 3], weights)
    assert not torch.allclose(plain.mass[0], fused.mass[0])


def _linear_head(vocab, d, rows, seed, dtype=torch.float32, bias=True, softcap=None):
    g = torch.Generator().manual_seed(seed)
    weight = (torch.randn(vocab, d, generator=g) / d**0.5).to(dtype)
    b = torch.randn(vocab, generator=g).to(dtype) if bias else None
    h = (torch.randn(rows, d, generator=g) * 4).to(dtype)
    return HeadInputs(h, weight, b, softcap)


def _full_logits(head):
    x = torch.nn.functional.linear(head.normed, head.weight, head.bias)
    return x if head.softcap is None else torch.tanh(x / head.softcap) * head.softcap


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("segment_sum", [False, True])
def test_fused_reduce_matches_reduce_logits(dtype, segment_sum):
    head = _linear_head(3001, 48, 37, 5, dtype=dtype, softcap=30.0)
    weights, ids, sets = _problem(3001, 37, 6, 6, soft=False)
    ids[3] = torch.topk(_full_logits(head)[3].float(), 3).indices  # ranks 1, 2, 3
    expected = reduce_logits(_full_logits(head), weights, ids, sets)
    got = fused_reduce(head, ColumnMap.from_weights(weights), ids, sets, vocab_tile=256, segment_sum=segment_sum)
    assert got["token_rank"][3].tolist() == [1.0, 2.0, 3.0]
    for key in FIELDS:
        if key in ("top_token", "token_rank"):
            assert torch.equal(got[key].nan_to_num(-7), expected[key].nan_to_num(-7)), key
        else:
            torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-6 if key != "entropy" else ENTROPY_ATOL,
                                       equal_nan=True, msg=key)
    torch.testing.assert_close(got["entropy"].double(), _entropy64(_full_logits(head)), rtol=0, atol=2e-5)


def test_bfloat16_ties_give_the_reference_ranks():
    # bfloat16 logits tie often; rank counts strictly greater logits, top token the first maximum
    head = _linear_head(2000, 16, 12, 7, dtype=torch.bfloat16, bias=False)
    logits = _full_logits(head)
    ids = logits.float().argsort(-1, descending=True)[:, [0, 5, 50, 500]]
    expected = reduce_logits(logits, torch.ones(2000, 1), ids)
    got = fused_reduce(head, ColumnMap.from_weights(torch.ones(2000, 1)), ids, vocab_tile=300)
    assert torch.equal(got["token_rank"], expected["token_rank"])
    assert torch.equal(got["top_token"], expected["top_token"])
    assert (logits.float().unsqueeze(-1) == logits.float().unsqueeze(-2)).sum() > 12 * 2000  # ties exist


def test_infinite_logits_fall_back_to_the_reference_rows():
    head = _linear_head(500, 8, 5, 8, bias=True)
    head.bias[10:20] = float("-inf")  # masked tokens: 0 * -inf must not poison the entropy
    weights, ids, _ = _problem(500, 5, 2, 9, soft=False)
    ids[:, 0] = 15  # tracking a masked token: probability 0, rank after every finite logit
    expected = reduce_logits(_full_logits(head), weights, ids)
    got = fused_reduce(head, ColumnMap.from_weights(weights), ids, vocab_tile=64)
    for key in ("mass", "entropy", "token_prob"):
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=ENTROPY_ATOL, equal_nan=True)
    assert torch.equal(got["token_rank"].nan_to_num(-7), expected["token_rank"].nan_to_num(-7))
    assert torch.isfinite(got["entropy"]).all() and (got["token_rank"][:, 0] == 491).all()


def test_lens_without_linear_head_keeps_the_generic_path():
    handle = ModelHandle.wrap(tiny_model("qwen2").eval(), None, name="q")
    calls = []
    hook = handle.unembed.register_forward_hook(lambda m, i, o: calls.append(1))
    try:
        assert LogitLens(handle).head_inputs(torch.randn(1, handle.d_model)) is None
        read_layers(LogitLens(handle), torch.randn(1, 3, handle.d_model), [0], torch.ones(handle.vocab_size, 1))
    finally:
        hook.remove()
    assert calls  # the user's hook on the unembedding ran: the lens went through decode


def test_token_sets_take_repeats_rows():
    sets = TokenSets.from_lists([[[1, 2], [3]], [[4], []], [[5, 6, 7], [8]]])
    taken = sets.take(torch.tensor([2, 0, 2]))
    got = sorted(zip(taken.row.tolist(), taken.slot.tolist(), taken.token.tolist()))
    assert got == sorted([(0, 0, 5), (0, 0, 6), (0, 0, 7), (0, 1, 8), (1, 0, 1), (1, 0, 2), (1, 1, 3),
                          (2, 0, 5), (2, 0, 6), (2, 0, 7), (2, 1, 8)])


def test_every_tiny_architecture_has_a_linear_head():
    for arch in sorted(TINY_CONFIGS):
        handle = ModelHandle.wrap(tiny_model(arch).eval(), None, name=arch)
        h = torch.randn(3, handle.d_model)
        head = LogitLens(handle).head_inputs(h)
        assert head is not None, arch
        assert torch.equal(_full_logits(head), handle.head(h)), arch  # norm and soft-cap kept exactly
