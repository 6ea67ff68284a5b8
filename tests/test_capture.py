"""Hooked residuals against Hugging Face's hidden states, the lens against the logits, hook hygiene."""

from __future__ import annotations

import pytest
import torch

from lensmap.capture import capture_residuals, residual_hooks, run_forward, select_positions
from lensmap.errors import LensmapError, UnsupportedArchitectureError
from lensmap.lenses.logit import LogitLens
from lensmap.models.handle import ModelHandle
from lensmap.models.selfcheck import check_last_layer_lens


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_residuals_equal_hf_hidden_states(tiny_handle):
    model = tiny_handle.model
    ids = torch.randint(0, 257, (2, 7), generator=torch.Generator().manual_seed(1))
    model.eval()
    with torch.no_grad():
        ref = model(ids, output_hidden_states=True)
    res = capture_residuals(tiny_handle, ids, positions="all")
    assert res.layers == list(range(tiny_handle.n_layers + 1))
    assert res.hidden.shape == (tiny_handle.n_layers + 1, 14, 32)
    # HF's last hidden state is after the final norm; every other layer must match exactly.
    for layer in range(tiny_handle.n_layers):
        expected = ref.hidden_states[layer].reshape(14, 32)
        torch.testing.assert_close(res.layer(layer), expected, rtol=0, atol=1e-6)
    normed = tiny_handle.final_norm(res.layer(tiny_handle.n_layers))
    torch.testing.assert_close(normed, ref.hidden_states[-1].reshape(14, 32), rtol=1e-5, atol=1e-5)


def test_last_layer_lens_equals_logits(tiny_handle):
    ids = torch.randint(0, 257, (3, 5), generator=torch.Generator().manual_seed(2))
    tiny_handle.model.eval()
    with torch.no_grad():
        logits = tiny_handle.model(ids).logits
        res = capture_residuals(tiny_handle, ids, positions="all")
        lens = LogitLens(tiny_handle).decode(res.layer(tiny_handle.n_layers))
    torch.testing.assert_close(lens, logits.reshape(15, -1), rtol=1e-5, atol=1e-5)
    assert check_last_layer_lens(tiny_handle) < 1e-4


def test_softcap_is_applied():
    from conftest import tiny_model

    handle = ModelHandle.wrap(tiny_model("gemma2-softcap"))
    assert handle.logit_softcap == 5.0
    ids = torch.arange(6).unsqueeze(0)
    handle.model.eval()
    with torch.no_grad():
        logits = handle.model(ids).logits[0]
        res = capture_residuals(handle, ids, positions="all")
        lens = LogitLens(handle).decode(res.layer(handle.n_layers))
    assert lens.abs().max() <= 5.0
    torch.testing.assert_close(lens, logits, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("side", ["left", "right"])
def test_padding_maps_positions(tiny_handle, side):
    g = torch.Generator().manual_seed(3)
    seqs = [torch.randint(1, 257, (n,), generator=g) for n in (6, 3, 5)]
    width = 6
    ids = torch.zeros(3, width, dtype=torch.long)
    mask = torch.zeros(3, width, dtype=torch.long)
    for i, s in enumerate(seqs):
        if side == "left":
            ids[i, width - len(s):], mask[i, width - len(s):] = s, 1
        else:
            ids[i, : len(s)], mask[i, : len(s)] = s, 1
    batched = capture_residuals(tiny_handle, ids, mask, positions="last")
    assert batched.rows.tolist() == [
        [i, (width - 1) if side == "left" else len(s) - 1] for i, s in enumerate(seqs)
    ]
    for i, s in enumerate(seqs):
        alone = capture_residuals(tiny_handle, s.unsqueeze(0), positions="last")
        torch.testing.assert_close(batched.hidden[:, i], alone.hidden[:, 0], rtol=1e-4, atol=1e-4)
    everything = capture_residuals(tiny_handle, ids, mask, positions="all")
    assert everything.hidden.shape[1] == sum(len(s) for s in seqs)


def test_custom_mask_and_bad_masks(tiny_handle):
    ids = torch.randint(0, 257, (2, 4))
    attn = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    wanted = torch.tensor([[False, True, False, False], [False, False, True, True]])
    res = capture_residuals(tiny_handle, ids, attn, positions=wanted, layers=[1, 2])
    assert res.rows.tolist() == [[0, 1], [1, 2], [1, 3]]
    assert res.layers == [1, 2]
    with pytest.raises(LensmapError, match="padding"):
        capture_residuals(tiny_handle, ids, attn, positions=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(LensmapError, match="out of range"):
        capture_residuals(tiny_handle, ids, attn, layers=[99])


def test_no_hook_survives_an_exception_and_state_is_restored(tiny_handle):
    model = tiny_handle.model
    model.train()
    frozen, *others = list(tiny_handle.blocks[0].parameters())
    frozen.requires_grad_(False)
    foreign = model.lm_head.register_forward_hook(lambda *a: None)  # a user's own hook must survive
    before = _hook_count(model)
    mask = torch.ones(1, 4, dtype=torch.bool)
    with pytest.raises(RuntimeError, match="boom"):
        with residual_hooks(tiny_handle, [0, 1, 2], mask):
            assert _hook_count(model) == before + 3
            run_forward(model, torch.arange(4).unsqueeze(0), torch.ones(1, 4))
            raise RuntimeError("boom")
    assert _hook_count(model) == before
    assert model.training and all(m.training for m in model.modules())
    assert frozen.requires_grad is False
    assert all(p.requires_grad for p in others)
    foreign.remove()


def test_select_positions_last_handles_both_paddings():
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 0], [1, 0, 0, 0]])
    assert select_positions(mask, "last").nonzero().tolist() == [[0, 3], [1, 2], [2, 0]]
    with pytest.raises(LensmapError, match="no real tokens"):
        select_positions(torch.tensor([[0, 0]]), "last")


def test_unknown_architecture_is_named():
    model = torch.nn.Linear(2, 2)
    model.config = type("C", (), {"model_type": "mamba-ish"})()
    with pytest.raises(UnsupportedArchitectureError, match="mamba-ish.*Supported: .*qwen2"):
        ModelHandle.wrap(model)


def test_missing_layers_are_named():
    from conftest import tiny_model

    model = tiny_model("qwen2")
    del model.model.layers
    with pytest.raises(UnsupportedArchitectureError, match="decoder layers.*model.layers"):
        ModelHandle.wrap(model)
