"""Layer interventions, sweeps and patching on tiny random models: each check can fail when the code is wrong."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import transformers as tf
from conftest import TINY, tiny_model

from lensmap.capture.ablation import (
    Intervention,
    RevertSource,
    cache_blocks,
    intervene,
    intervened_residual,
    part_means,
    replay,
)
from lensmap.capture.patching import patch_hooks, patched_residual
from lensmap.errors import LensmapError
from lensmap.lenses.logit import LogitLens
from lensmap.metrics.choices import choice_correct, option_logliks
from lensmap.metrics.sweeps import drop_curves, halving_k, layer_profile, retained, side_extent, sweep_settings
from lensmap.models.handle import ModelHandle
from lensmap.readout.patching import switch_layers

ARCHS = ["qwen2", "gemma3", "gpt2"]


def handle_of(arch: str, seed: int = 0) -> ModelHandle:
    return ModelHandle.wrap(tiny_model(arch, seed).eval(), None, name=f"tiny-{arch}")


def batch(seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 257, (3, 9), generator=g)
    mask = torch.ones_like(ids)
    mask[0, :3] = 0  # left padding
    return ids, mask


def logits(handle: ModelHandle, ids, mask) -> torch.Tensor:
    with torch.no_grad():
        pos = (mask.cumsum(1) - 1).clamp(min=0)
        kwargs = {"position_ids": pos} if handle.adapter.family != "bloom" else {}
        return handle.model(input_ids=ids, attention_mask=mask, use_cache=False, **kwargs).logits


def no_hooks(model) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


@pytest.mark.parametrize("arch", ARCHS)
def test_k0_is_bit_identical(arch):
    h = handle_of(arch)
    ids, mask = batch()
    base = logits(h, ids, mask)
    for kind in ("skip", "zero"):
        with intervene(h, Intervention(kind, (), "block" if kind == "skip" else "mlp")):
            assert torch.equal(logits(h, ids, mask), base)
    cache = cache_blocks(h, ids, mask)
    for setting in sweep_settings(h.n_layers, ("input", "output"), ks=[0]):
        assert torch.equal(h.head(intervened_residual(h, cache, Intervention("skip", setting.blocks))), base)


@pytest.mark.parametrize("arch", ARCHS)
def test_replay_equals_hooked_full_forward(arch):
    h = handle_of(arch)
    ids, mask = batch()
    cache = cache_blocks(h, ids, mask)
    assert torch.equal(h.head(replay(h, cache, 0)), logits(h, ids, mask))
    means = part_means(h, range(h.n_layers), "attention", ids, mask)
    cases = [Intervention("skip", (1,)), Intervention("skip", (0, 1)), Intervention("zero", (1, 2), "mlp"),
             Intervention("mean", (0,), "attention", means)]
    for iv in cases:
        with intervene(h, iv):
            full = logits(h, ids, mask)
        fast = h.head(intervened_residual(h, cache, iv))
        assert torch.equal(fast, full), iv.label
        assert not torch.equal(full, logits(h, ids, mask)), f"{iv.label} changed nothing"  # the hook ran
    assert no_hooks(h.model)


@pytest.mark.parametrize("arch", ARCHS)
def test_skip_last_k_is_the_logit_lens_at_layer_L_minus_k(arch):
    h = handle_of(arch)
    ids, mask = batch()
    n = h.n_layers
    from lensmap.capture.residuals import capture_residuals

    res = capture_residuals(h, ids, mask, positions="all")
    lens = LogitLens(h)
    for k in range(n + 1):
        with intervene(h, Intervention("skip", tuple(range(n - k, n)))):
            got = logits(h, ids, mask)[mask.bool()]
        assert torch.equal(got, lens.decode(res.layer(n - k), n - k)), k


def test_mean_ablation_with_the_real_mean_is_not_zero_ablation_and_skips_padding():
    h = handle_of("qwen2")
    ids, mask = batch()
    means = part_means(h, [1], "mlp", ids, mask)
    seen = []
    handle = h.mlp(1).register_forward_hook(lambda m, a, o: seen.append(o.detach()))
    logits(h, ids, mask)
    handle.remove()
    brute = seen[0][mask.bool()].float().mean(dim=0)  # real tokens only
    assert torch.allclose(means[(1, "mlp")], brute, atol=1e-6)
    assert not torch.allclose(means[(1, "mlp")], seen[0].float().mean(dim=(0, 1)), atol=1e-4)  # padding would change it


def test_revert_to_same_weights_changes_nothing():
    h = handle_of("qwen2")
    ids, mask = batch()
    base = logits(h, ids, mask)
    same = RevertSource({n: p.detach().clone() for n, p in h.model.named_parameters()})
    with intervene(h, Intervention("revert", tuple(range(h.n_layers)), source=same)):
        assert torch.equal(logits(h, ids, mask), base)


def test_reverting_every_block_of_a_tuned_model_gives_base_logits_exactly(tmp_path):
    from lensmap.models.identity import model_fingerprint
    from lensmap.training.delta import save_delta, snapshot
    from lensmap.training.revert import apply_delta_keeping_base

    tuned = handle_of("qwen2")
    ids, mask = batch()
    base_logits = logits(tuned, ids, mask)
    before, fingerprint = snapshot(tuned.model), model_fingerprint(tuned)
    with torch.no_grad():
        for b in range(tuned.n_layers):
            tuned.blocks[b].mlp.down_proj.weight.add_(0.05 * torch.randn_like(tuned.blocks[b].mlp.down_proj.weight))
    save_delta(tuned, before, tmp_path / "delta", fingerprint)
    tuned_logits = logits(tuned, ids, mask)

    fresh = handle_of("qwen2")  # the base model, loaded again
    source = apply_delta_keeping_base(fresh, tmp_path / "delta")
    assert torch.equal(logits(fresh, ids, mask), tuned_logits)
    assert len(source.tensors) == fresh.n_layers  # only the changed tensors are held
    with intervene(fresh, Intervention("revert", tuple(range(fresh.n_layers)), source=source)):
        assert torch.equal(logits(fresh, ids, mask), base_logits)
    with intervene(fresh, Intervention("revert", (0,), source=source)):
        partial = logits(fresh, ids, mask)
    assert not torch.equal(partial, tuned_logits) and not torch.equal(partial, base_logits)
    assert torch.equal(logits(fresh, ids, mask), tuned_logits)  # weights put back
    cache = cache_blocks(fresh, ids, mask)
    fast = fresh.head(intervened_residual(fresh, cache, Intervention("revert", (1, 2), source=source)))
    with intervene(fresh, Intervention("revert", (1, 2), source=source)):
        assert torch.equal(fast, logits(fresh, ids, mask))


@pytest.mark.parametrize("arch", ARCHS)
def test_patching_at_the_last_layer_reproduces_the_source_distribution(arch):
    h = handle_of(arch)
    src_ids, src_mask = batch(2)
    tgt_ids, tgt_mask = batch(3)
    n = h.n_layers
    src, tgt = cache_blocks(h, src_ids, src_mask), cache_blocks(h, tgt_ids, tgt_mask)
    last = torch.full((3,), tgt_ids.shape[1] - 1)
    source_logits = h.head(src.inputs[n][:, -1])
    fast = h.head(patched_residual(h, tgt, n, last, src.inputs[n][:, -1])[:, -1])
    assert torch.equal(fast, source_logits)
    for layer in (0, 1, n):
        with patch_hooks(h, layer, last, src.inputs[layer][:, -1]):
            full = logits(h, tgt_ids, tgt_mask)[:, -1]
        assert torch.equal(h.head(patched_residual(h, tgt, layer, last, src.inputs[layer][:, -1])[:, -1]), full)
    assert torch.equal(full, source_logits)
    assert not torch.equal(logits(h, tgt_ids, tgt_mask)[:, -1], source_logits)


def test_no_hook_survives_an_exception_mid_sweep():
    h = handle_of("qwen2")
    ids, mask = batch()
    weights = {n: p.detach().clone() for n, p in h.model.named_parameters()}
    h.model.train()
    other = RevertSource({n: torch.zeros_like(p) for n, p in h.model.named_parameters()})
    for iv in (Intervention("skip", (0, 2)), Intervention("zero", (1,), "attention"), Intervention("revert", (1,), source=other)):
        with pytest.raises(RuntimeError):
            with intervene(h, iv):
                logits(h, ids, mask)
                raise RuntimeError("boom")
        assert no_hooks(h.model)
        assert h.model.training  # mode restored
        assert all(torch.equal(p, weights[n]) for n, p in h.model.named_parameters())
    h.model.eval()
    from lensmap.readout.sweeps import Item, Task, evaluate_settings

    task = Task("text_loss", "xx", "loss", [Item(list(range(5, 12)), [(p - 1, [p + 5]) for p in range(1, 7)])])
    calls = []

    def factory(blocks):
        calls.append(blocks)
        if len(calls) == 3:
            raise RuntimeError("mid-sweep")
        return Intervention("skip", blocks)

    h.tokenizer = type("T", (), {"pad_token_id": 0, "eos_token_id": 0})()
    with pytest.raises(RuntimeError, match="mid-sweep"):
        evaluate_settings(h, [task], sweep_settings(h.n_layers, ("input",)), {"skip": factory}, progress=False)
    assert no_hooks(h.model)


def test_interventions_refuse_what_they_cannot_do():
    bloom = ModelHandle.wrap(tf.AutoModelForCausalLM.from_config(tf.BloomConfig(vocab_size=257, hidden_size=32, n_layer=3,
                                                                               n_head=4)).eval(), None)
    with pytest.raises(LensmapError, match="residual"):
        with intervene(bloom, Intervention("zero", (0,), "mlp")):
            pass
    h = handle_of("qwen2")
    for bad, match in ((Intervention("skip", (7,)), "out of range"), (Intervention("mean", (0,), "mlp"), "means"),
                       (Intervention("zero", (0,)), "part"), (Intervention("revert", (0,)), "RevertSource")):
        with pytest.raises(LensmapError, match=match):
            with intervene(h, bad):
                pass
    assert no_hooks(h.model) and no_hooks(bloom.model)


def test_sweep_settings_sides_singles_windows():
    s = sweep_settings(4, ("input", "output", "single", "window"), window=2)
    by = {(x.direction, x.k): x.blocks for x in s}
    assert by[("input", 0)] == () and by[("input", 3)] == (0, 1, 2) and by[("input", 4)] == (0, 1, 2, 3)
    assert by[("output", 1)] == (3,) and by[("output", 3)] == (1, 2, 3)
    assert [x.blocks for x in s if x.direction == "single"] == [(0,), (1,), (2,), (3,)]
    assert [x.blocks for x in s if x.direction == "window"] == [(0, 1), (1, 2), (2, 3)]
    with pytest.raises(LensmapError):
        sweep_settings(4, ("sideways",))
    assert sweep_settings(4, ("single",))[0] == sweep_settings(4, ("input",))[0]  # the baseline is always there


def test_option_loglik_choice_against_brute_force():
    lp = torch.log_softmax(torch.randn(5, 4, 3), dim=-1)
    mask = torch.ones(5, 4, 3, dtype=torch.bool)
    mask[:, 0, 2] = False
    scores = option_logliks(lp, mask)
    assert torch.allclose(scores[:, 0], lp[:, 0, :2].sum(-1)) and torch.allclose(scores[:, 1], lp[:, 1].sum(-1))
    mean = option_logliks(lp, mask, "mean")
    assert torch.allclose(mean[:, 0], lp[:, 0, :2].mean(-1))
    gold = scores.argmax(1)
    assert choice_correct(scores, gold).sum() == 5 and choice_correct(scores, (gold + 1) % 4).sum() == 0
    assert choice_correct(torch.zeros(2, 4), torch.tensor([0, 1])).tolist() == [1.0, 0.0]  # ties: first option


def test_retained_halving_and_extent_hand_computed():
    assert np.isclose(retained(1.0 + np.log(2), 1.0, "loss"), 0.5)
    assert np.isclose(retained(0.3, 0.6, "score"), 0.5)
    rows = []
    for k, v in enumerate([1.0, 1.2, 1.0 + np.log(2) + 0.01, 3.0]):  # loss rises: halves at k=2
        rows.append(dict(model="m", intervention="skip", direction="input", k=k, language="fr", metric="en_answer_loss",
                         value=v, ci_low=v, ci_high=v))
    for k, v in enumerate([0.8, 0.5, 0.41, 0.1]):  # prob falls: halves (≤ 0.4) at k=3
        rows.append(dict(model="m", intervention="skip", direction="output", k=k, language="fr",
                         metric="target_answer_prob", value=v, ci_low=v, ci_high=v))
    curves = drop_curves(pd.DataFrame(rows))
    halving = halving_k(curves).set_index("metric")["k_half"]
    assert halving["en_answer_loss"] == 2 and halving["target_answer_prob"] == 3
    assert side_extent(halving_k(curves), 3) == {"perception": 2.0, "production": 3.0}
    profile = layer_profile(curves).set_index("block")  # no single settings: what each step adds
    assert profile.loc[0, "perception"] == pytest.approx(1 - np.exp(-0.2))  # k 0 → 1 adds block 0
    assert profile.loc[0, "production"] == pytest.approx((0.41 - 0.1) / 0.8)  # output k 2 → 3 adds block 0


def test_cogsym_from_evidence_and_without():
    from lensmap.analysis.recommend import cogsym_layers, recommend

    h = ModelHandle.wrap(tf.AutoModelForCausalLM.from_config(tf.Qwen2Config(**{**TINY, "num_hidden_layers": 8})), None)
    fixed = recommend(h, "cogsym")
    assert fixed.layers == cogsym_layers(8) and "No layer-sweep evidence" in " ".join(fixed.notes)
    assert recommend(h, "cogsym-fixed").layers == cogsym_layers(8)
    rec = recommend(h, "cogsym", budget=1.0, sweep={"perception": 1.5, "production": 3})
    assert rec.layers == [0, 1, 5, 6, 7] and rec.evidence["sweep"]["production"] == 3
    small = recommend(h, "cogsym", budget=0.2, sweep={"perception": 2, "production": 3})
    assert small.layers == [0, 7]  # trimmed from the inside, one block per side kept (each block is ~10 %)
    mid = recommend(h, "cogsym", budget=0.45, sweep={"perception": 2, "production": 3})
    assert mid.layers == [0, 1, 6, 7] and mid.trainable_fraction <= 0.45


def test_switch_layers_on_planted_curves():
    n_layers = 6
    p = torch.zeros(2, n_layers + 1, 4)  # words: A_X, A_Y, B_X, B_Y
    p[:, :, 3] = 0.9  # B in Y everywhere ...
    p[0, 2:4] = torch.tensor([0.0, 0.0, 0.9, 0.05])  # pair 0: B in X at layers 2-3 (language first) ...
    p[0, 3] = torch.tensor([0.0, 0.0, 0.0, 0.9])  # ... with a dip back to Y at layer 3
    p[0, 4:] = torch.tensor([0.9, 0.01, 0.01, 0.01])  # ... A in X from layer 4
    p[1, 5:] = torch.tensor([0.9, 0.01, 0.01, 0.01])
    lang, concept = switch_layers(p)
    assert lang.tolist() == [4.0, 5.0] and concept.tolist() == [4.0, 5.0]  # the dip makes layer 4 the stable switch
    p[0, 3] = torch.tensor([0.0, 0.0, 0.9, 0.05])
    lang, concept = switch_layers(p)
    assert lang[0] == 2.0 and concept[0] == 4.0
    p[1, n_layers] = torch.tensor([0.0, 0.0, 0.0, 0.9])  # not the source's at the last layer: no switch
    lang, concept = switch_layers(p)
    assert np.isnan(lang[1]) and np.isnan(concept[1])
