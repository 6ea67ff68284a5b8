"""Language-specific neurons: streamed statistics, LAPE, deactivation, activation similarity.

Every check compares against brute force or a planted signal on tiny random models.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from conftest import tiny_model

from lensmap.capture.activations import activation_hooks, mlp_width
from lensmap.capture.neuron_ablation import zero_neurons
from lensmap.errors import LensmapError
from lensmap.metrics.neurons import (
    NeuronStats,
    activation_similarity_items,
    density_frame,
    key_neuron_z,
    language_entropy,
    lape_select,
    max_z,
    overlap_frame,
    random_control,
)
from lensmap.models.handle import ModelHandle
from lensmap.readout.neurons import collect_neuron_stats, losses_with_neurons_off, sequence_losses


class _Tok:
    """The two attributes the readout asks a tokenizer for."""

    pad_token_id = 0
    eos_token_id = 0
    bos_token_id = 1


def _handle(arch: str = "qwen2", seed: int = 0) -> ModelHandle:
    model = tiny_model(arch, seed).eval()
    return ModelHandle.wrap(model, _Tok(), name=f"tiny-{arch}")


def _sequences(seed: int, n: int, lo: int, hi: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [[1] + torch.randint(lo, hi, (int(torch.randint(4, 12, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)]


LANG_RANGES = {"aa": (10, 80), "bb": (90, 160), "cc": (170, 240)}


def _planted_handle() -> tuple[ModelHandle, int, int]:
    """A tiny Qwen2 whose block-0 neuron 5 fires only on language aa's tokens and neuron 7 on every token."""
    handle = _handle("qwen2")
    with torch.no_grad():
        emb = handle.embed.weight
        emb[:, 2:] = torch.randn(emb.shape[0], emb.shape[1] - 2, generator=torch.Generator().manual_seed(1))
        for block in handle.blocks:  # no other neuron reads the two planted dimensions
            block.mlp.gate_proj.weight[:, :2] = 0.0
        emb[:, 0] = -5.0
        emb[LANG_RANGES["aa"][0]:LANG_RANGES["aa"][1], 0] = 5.0  # the language-aa marker dimension
        emb[:, 1] = 5.0  # a dimension every token carries
        gate = handle.blocks[0].mlp.gate_proj.weight
        gate[5] = 0.0
        gate[5, 0] = 10.0
        gate[7] = 0.0
        gate[7, 1] = 10.0
    return handle, 5, 7


def _corpus(n: int = 12) -> dict[str, list[list[int]]]:
    return {lang: _sequences(i, n, lo, hi) for i, (lang, (lo, hi)) in enumerate(LANG_RANGES.items())}


# --------------------------------------------------------------------------- statistics


def _brute_force(handle: ModelHandle, corpus, site: str = "act") -> NeuronStats:
    """Every activation of every real, non-BOS token, one sequence at a time, summed in float64."""
    width = mlp_width(handle)
    stats = NeuronStats.empty(list(corpus), handle.n_layers, width, site)
    for k, (lang, seqs) in enumerate(corpus.items()):
        for seq in seqs:
            seen = {}
            handles = []
            for b in range(handle.n_layers):
                module = handle.mlp_activation(b) if site == "act" else handle.mlp_down(b)
                if site == "act":
                    handles.append(module.register_forward_hook(lambda m, a, o, b=b: seen.__setitem__(b, o[0])))
                else:
                    handles.append(module.register_forward_pre_hook(lambda m, a, b=b: seen.__setitem__(b, a[0][0])))
            with torch.no_grad():
                handle.model(input_ids=torch.tensor([seq]))
            for h in handles:
                h.remove()
            keep = torch.tensor(seq) != 1
            for b in range(handle.n_layers):
                x = seen[b][keep].double()
                stats.tokens[k, b] += x.shape[0]
                stats.positive[k, b] += (x > 0).double().sum(0)
                stats.total[k, b] += x.sum(0)
                stats.squares[k, b] += (x * x).sum(0)
    return stats


@pytest.mark.parametrize("arch,site", [("qwen2", "act"), ("qwen2", "down_input"), ("gpt2", "act")])
def test_streamed_statistics_equal_brute_force(arch, site):
    handle = _handle(arch)
    corpus = {"aa": _sequences(0, 5, 10, 200), "bb": _sequences(1, 4, 10, 200)}
    got = collect_neuron_stats(handle, corpus, site=site, batch_size=3)
    want = _brute_force(handle, corpus, site)
    assert torch.equal(got.tokens, want.tokens)
    assert got.tokens[0, 0] == sum(len(s) - 1 for s in corpus["aa"])  # BOS never counted
    assert (got.positive - want.positive).abs().max() <= 1  # a value within float noise of 0 may flip
    torch.testing.assert_close(got.total, want.total, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got.squares, want.squares, rtol=1e-5, atol=1e-5)


def test_batch_of_one_equals_left_padded_batch():
    handle = _handle("llama")
    corpus = {"aa": _sequences(3, 8, 10, 200), "bb": _sequences(4, 8, 10, 200)}
    one = collect_neuron_stats(handle, corpus, batch_size=1)
    eight = collect_neuron_stats(handle, corpus, batch_size=8)
    assert torch.equal(one.tokens, eight.tokens)
    assert torch.equal(one.positive, eight.positive)
    torch.testing.assert_close(one.total, eight.total, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(one.squares, eight.squares, rtol=1e-6, atol=1e-6)


def test_statistics_memory_does_not_grow_and_round_trip(tmp_path):
    stats = NeuronStats.empty(["aa", "bb"], 3, 64)
    before = [t.data_ptr() for t in (stats.positive, stats.total, stats.squares)]
    for _ in range(5):
        stats.add("aa", 0, torch.randn(100, 64))
    assert [t.data_ptr() for t in (stats.positive, stats.total, stats.squares)] == before
    assert stats.tokens[0, 0] == 500
    path = stats.save(tmp_path / "s.npz")
    back = NeuronStats.load(path)
    assert back.languages == ["aa", "bb"] and back.site == "act"
    assert torch.equal(back.total, stats.total) and torch.equal(back.tokens, stats.tokens)
    with pytest.raises(LensmapError, match="no tokens"):
        back.probability()  # bb has none


def test_planted_neurons_on_a_tiny_model():
    handle, specific, shared = _planted_handle()
    stats = collect_neuron_stats(handle, _corpus(), batch_size=4)
    prob = stats.probability()
    assert prob[0, 0, specific] == 1.0 and prob[1:, 0, specific].max() == 0.0
    assert (prob[:, 0, shared] == 1.0).all()
    entropy = language_entropy(prob)
    assert entropy[0, shared] == pytest.approx(math.log(3), abs=1e-12)
    assert entropy[0, specific] == 0.0
    sel = lape_select(prob, stats.languages, fraction=0.05)
    n_target = round(0.05 * handle.n_layers * mlp_width(handle))
    assert int(sel.selected.sum()) == n_target == sel.settings["n_selected"]
    assert sel.selected[0, specific] and not sel.selected[0, shared]
    assert sel.assigned[:, 0, specific].tolist() == [True, False, False]
    assert (sel.assigned.sum(dim=0)[sel.selected] >= 1).all()  # every selected neuron has a language
    assert not sel.assigned[:, ~sel.selected].any()


# --------------------------------------------------------------------------- LAPE on synthetic probabilities


def test_lape_synthetic_count_entropy_and_assignment():
    g = torch.Generator().manual_seed(0)
    k, n_blocks, d = 4, 5, 200
    prob = 0.3 + 0.1 * torch.rand(k, n_blocks, d, generator=g, dtype=torch.float64)
    prob[:, 2, 10] = 0.9  # uniform: entropy ln 4, above τ everywhere
    prob[:, 3, 20] = torch.tensor([0.0, 0.95, 0.0, 0.0], dtype=torch.float64)  # language x only
    prob[:, 4, 30] = torch.tensor([0.0, 0.0, 0.8, 0.8], dtype=torch.float64)  # shared by 2 and 3
    for fraction in (0.01, 0.003):
        sel = lape_select(prob, list("wxyz"), fraction=fraction)
        assert int(sel.selected.sum()) == round(fraction * n_blocks * d)
        assert (sel.assigned.any(dim=0) == sel.selected).all()
    assert language_entropy(prob)[2, 10] == pytest.approx(math.log(4), abs=1e-12)
    sel = lape_select(prob, list("wxyz"), fraction=0.01)
    assert not sel.selected[2, 10]
    assert sel.assigned[:, 3, 20].tolist() == [False, True, False, False]
    assert sel.assigned[:, 4, 30].tolist() == [False, False, True, True]
    assert sel.tau == pytest.approx(float(torch.quantile(prob.flatten(), 0.95)))
    assert sel.settings["tau_quantile"] == 0.95
    fixed = lape_select(prob, list("wxyz"), tau=0.5, fraction=0.01)
    assert fixed.tau == 0.5 and fixed.settings["tau_quantile"] is None
    over = overlap_frame(sel)
    yz = over[(over.language_a == "y") & (over.language_b == "z")].iloc[0]
    assert yz.n_shared >= 1
    dens = density_frame(sel)
    assert dens.n_neurons.sum() == int(sel.assigned.sum())
    assert 20 in sel.neurons_of("x")[3].tolist()


def test_lape_fewer_eligible_warns_and_never_firing_is_never_selected():
    prob = torch.zeros(2, 1, 10, dtype=torch.float64)
    prob[0, 0, 3] = 1.0
    with pytest.warns(Warning, match="instead of"):
        sel = lape_select(prob, ["a", "b"], fraction=0.5)
    assert sel.selected[0].nonzero()[:, 0].tolist() == [3]
    assert language_entropy(prob)[0, 0].isnan()


def test_key_neuron_z_bound_and_warning():
    mean = torch.zeros(5, 1, 3, dtype=torch.float64)
    mean[0, 0, 0] = 1.0  # one language stands out as far as possible
    with pytest.warns(Warning, match="cannot exceed"):
        z, key = key_neuron_z(mean)
    assert float(z[0, 0, 0]) == pytest.approx(max_z(5)) == 2.0
    assert not key.any()
    mean = torch.zeros(8, 1, 1, dtype=torch.float64)
    mean[0] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z, key = key_neuron_z(mean)
    assert key[0, 0, 0] and float(z[0, 0, 0]) == pytest.approx(math.sqrt(7))


def test_random_control_same_count_same_blocks_avoiding_selected():
    selected = torch.zeros(3, 50, dtype=torch.bool)
    selected[1, :10] = True
    own = {1: torch.arange(10), 2: torch.tensor([4, 5])}
    ctrl = random_control(own, 50, exclude=selected, seed=1)
    assert {b: len(v) for b, v in ctrl.items()} == {1: 10, 2: 2}
    assert not selected[1, ctrl[1]].any()


# --------------------------------------------------------------------------- deactivation


def _logits(handle, ids):
    with torch.no_grad():
        return handle.model(input_ids=ids).logits


def test_deactivation_empty_identical_nonempty_changes_hooks_removed_and_ran():
    handle = _handle("qwen2")
    ids = torch.tensor([[1, 20, 30, 40, 50, 60]])
    base = _logits(handle, ids)
    with zero_neurons(handle, {}) as trace:
        same = _logits(handle, ids)
    trace.check()
    assert torch.equal(base, same)
    with zero_neurons(handle, {0: [1, 2, 3], 2: torch.tensor([5])}) as trace:
        changed = _logits(handle, ids)
    trace.check()
    assert trace.calls == {0: 1, 2: 1}
    assert not torch.allclose(base, changed)
    for b in range(handle.n_layers):
        assert not handle.mlp_activation(b)._forward_hooks and not handle.mlp_down(b)._forward_pre_hooks
    assert torch.equal(base, _logits(handle, ids))


@pytest.mark.parametrize("site", ["act", "down_input"])
def test_zeroing_really_zeroes_the_neuron(site):
    handle = _handle("qwen2")
    seen = {}
    with zero_neurons(handle, {1: [4, 9]}, site=site):
        with activation_hooks(handle, torch.ones(1, 5, dtype=torch.bool),
                              lambda b, x: seen.__setitem__(b, x.clone()), site="down_input"):
            _logits(handle, torch.tensor([[1, 5, 6, 7, 8]]))
    assert (seen[1][:, [4, 9]] == 0).all() and (seen[1][:, :4] != 0).all()


def test_a_hook_that_never_ran_is_an_error():
    handle = _handle("qwen2")
    with zero_neurons(handle, {0: [1]}) as trace:
        pass  # no forward pass: the neurons were never switched off
    with pytest.raises(LensmapError, match="never ran"):
        trace.check()
    with pytest.raises(LensmapError, match="out of range|0..63"):
        with zero_neurons(handle, {0: [64]}):
            pass


def test_deactivating_the_planted_neuron_hurts_only_where_it_fires():
    handle, specific, _ = _planted_handle()
    heldout = {lang: torch.tensor([s[:5] for s in seqs if len(s) >= 5][:4]) for lang, seqs in _corpus(8).items()}
    base = {lang: sequence_losses(handle, seqs)[0] for lang, seqs in heldout.items()}
    off = losses_with_neurons_off(handle, heldout, {0: [specific]})
    assert not torch.equal(off["aa"], base["aa"])
    assert torch.equal(off["bb"], base["bb"]) and torch.equal(off["cc"], base["cc"])  # it is 0 there anyway


def test_sequence_losses_match_hand_computation_with_padding():
    handle = _handle("qwen2")
    seqs = [[1, 20, 30, 40], [1, 50, 60, 70, 80, 90]]
    loss, counts = sequence_losses(handle, seqs, batch_size=2)
    for i, s in enumerate(seqs):
        logits = _logits(handle, torch.tensor([s]))[0]
        want = torch.nn.functional.cross_entropy(logits[:-1].float(), torch.tensor(s[1:]))
        assert counts[i] == len(s) - 1
        assert float(loss[i]) == pytest.approx(float(want), abs=1e-5)


# --------------------------------------------------------------------------- similarity


def test_activation_similarity_planted_language_and_meaning():
    g = torch.Generator().manual_seed(0)
    k, n, d = 3, 6, 40
    lang = torch.randn(k, 1, 1, d, generator=g) * 3
    meaning = torch.randn(1, n, 1, d, generator=g) * 3
    noise = torch.randn(k, n, 2, d, generator=g) * 0.1
    pooled = torch.cat([lang.expand(k, n, 1, d), meaning.expand(k, n, 1, d)], dim=2) + noise
    stats = activation_similarity_items(pooled)
    # block 0 carries only the language: within-language cosine near 1, no meaning alignment
    assert stats["region_difference"][0].mean() > 0.5 and abs(stats["alignment_difference"][0].mean()) < 0.1
    # block 1 carries only the meaning
    assert stats["alignment_difference"][1].mean() > 0.5 and stats["region_difference"][1].mean() < 0
    # brute force of one item's within-language value
    unit = torch.nn.functional.normalize(pooled, dim=-1)
    want = sum(float(unit[kk, 0, 0] @ unit[kk, j, 0]) for kk in range(k) for j in range(1, n)) / (k * (n - 1))
    assert float(stats["within_language"][0, 0]) == pytest.approx(want, abs=1e-5)


# --------------------------------------------------------------------------- recommendation


def test_neurons_strategy_picks_the_densest_blocks_of_the_targets_within_budget():
    import pandas as pd

    from lensmap.analysis.recommend import recommend
    from lensmap.models.params import block_parameters, count_parameters

    handle = _handle("qwen2")
    rows = [{"block": b, "language": lang, "n_neurons": n, "fraction": n / 64}
            for b, lang, n in [(0, "aa", 1), (1, "aa", 9), (2, "aa", 4), (0, "bb", 20), (1, "bb", 0), (2, "bb", 0)]]
    density = pd.DataFrame(rows)
    one_block = block_parameters(handle)[1] / count_parameters(handle.model)
    rec = recommend(handle, "neurons", neuron_density=density, target_languages=["aa"], budget=one_block * 1.5)
    assert rec.layers == [1]
    rec = recommend(handle, "neurons", neuron_density=density, target_languages=["aa"], budget=one_block * 2.5)
    assert rec.layers == [1, 2]
    assert recommend(handle, "neurons", neuron_density=density, budget=one_block * 1.5).layers == [0]
    with pytest.raises(LensmapError, match="neurons: section"):
        recommend(handle, "neurons")
