"""The public capture API under misuse: bad shapes, empty layer lists, threads, over-long prompts."""

from __future__ import annotations

import threading

import pytest
import torch
from conftest import tiny_model

from lensmap.capture import capture_residuals
from lensmap.data.probes import Prompt
from lensmap.errors import LensmapError, ProbeError
from lensmap.models.handle import ModelHandle
from lensmap.readout.probes import run_probes


def _handle(arch: str = "qwen2") -> ModelHandle:
    return ModelHandle.wrap(tiny_model(arch), None, name=f"tiny-{arch}")


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def test_a_mask_of_the_wrong_shape_names_the_expected_shape():
    handle = _handle()
    ids = torch.randint(0, 200, (2, 7))
    with pytest.raises(LensmapError, match=r"attention_mask must have the shape of input_ids, \(2, 7\)"):
        capture_residuals(handle, ids, torch.ones(2, 5, dtype=torch.long))
    with pytest.raises(LensmapError, match=r"input_ids must be an integer tensor of shape \[batch, seq\]"):
        capture_residuals(handle, torch.rand(2, 7))
    with pytest.raises(LensmapError, match=r"input_ids must be an integer tensor"):
        capture_residuals(handle, ids[0])
    assert _hooks(handle.model) == 0


def test_an_empty_layer_list_is_a_clear_error():
    handle = _handle()
    with pytest.raises(LensmapError, match="no residual layers requested"):
        capture_residuals(handle, torch.randint(0, 200, (1, 5)), layers=[])
    with pytest.raises(LensmapError, match=r"out of range: this model has residual layers 0..3"):
        capture_residuals(handle, torch.randint(0, 200, (1, 5)), layers=[4])


def test_two_threads_on_one_model_get_their_own_residuals():
    """Each thread's result equals the sequential one bit for bit; no hook leaks; the mode comes back."""
    handle = _handle()
    handle.model.train()  # the caller's mode, to be restored after every capture
    torch.manual_seed(1)
    inputs = [torch.randint(0, 257, (1 + i % 3, 4 + 3 * i)) for i in range(6)]  # different shapes on purpose
    expected = [capture_residuals(handle, ids, positions="all").hidden for ids in inputs]
    results: dict[tuple[int, int], torch.Tensor] = {}
    errors: list[BaseException] = []

    def work(thread: int) -> None:
        try:
            for rep in range(5):
                for i, ids in enumerate(inputs):
                    results[(thread, rep * len(inputs) + i)] = capture_residuals(handle, ids, positions="all").hidden
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 3 * 5 * len(inputs)
    for (thread, k), hidden in results.items():
        assert torch.equal(hidden, expected[k % len(inputs)]), (thread, k)
    assert _hooks(handle.model) == 0
    assert handle.model.training  # restored to the caller's train mode


class _Tokenizer:
    """A character-level tokenizer (enough for run_probes): ids 1..256, pad 0."""

    pad_token, pad_token_id, eos_token, eos_token_id, padding_side, truncation_side = "<pad>", 0, "<pad>", 0, "right", "right"
    bos_token_id = None

    def __call__(self, texts, return_tensors=None, padding=False, truncation=False, max_length=None, **_):
        single = isinstance(texts, str)
        rows = [[1 + (ord(c) % 255) for c in (texts if single else t)] for t in ([texts] if single else texts)]
        if truncation and max_length:
            rows = [r[-max_length:] if self.truncation_side == "left" else r[:max_length] for r in rows]
        if single and return_tensors is None:
            return {"input_ids": rows[0]}
        width = max(len(r) for r in rows)
        pad = lambda r: ([0] * (width - len(r)) + r) if self.padding_side == "left" else (r + [0] * (width - len(r)))  # noqa: E731
        ids = torch.tensor([pad(r) for r in rows])
        mask = torch.tensor([pad([1] * len(r)) for r in rows])
        return {"input_ids": ids, "attention_mask": mask}

    def decode(self, ids):
        return "".join(chr(i) for i in ids)


def _short_context_handle() -> ModelHandle:
    model = tiny_model("gpt2")  # absolute positions: n_positions is a hard limit
    model.config.n_positions = model.transformer.wpe.weight.shape[0]
    handle = ModelHandle.wrap(model, _Tokenizer(), name="tiny-gpt2")
    return handle


def test_a_prompt_longer_than_the_context_is_refused_or_truncated():
    handle = _short_context_handle()
    context = handle.context_length
    assert context == 1024
    prompts = [Prompt(text="x" * (context + 10), probe="long", source="", target=""), Prompt(text="short", probe="long", source="", target="")]
    weights = torch.full((handle.vocab_size, 1), 1.0)
    with pytest.raises(ProbeError, match=rf"longer than the model's context of {context} tokens .*too_long: truncate"):
        run_probes(handle, prompts, weights, ["all"], progress=False)
    with pytest.warns(UserWarning, match="cut to their last"):
        result = run_probes(handle, prompts, weights, ["all"], progress=False, too_long="truncate")
    assert result.mass["n_prompts"].max() == 2


def test_a_prompt_the_tokenizer_refuses_names_the_prompt():
    class Refusing(_Tokenizer):
        def __call__(self, texts, **kwargs):
            if any("\ud800" in t for t in ([texts] if isinstance(texts, str) else texts)):
                raise TypeError("TextEncodeInput must be Union[TextInputSequence, ...]")
            return super().__call__(texts, **kwargs)

    handle = ModelHandle.wrap(tiny_model("gpt2"), Refusing(), name="tiny-gpt2")
    prompts = [Prompt(text="fine", probe="p", source="", target=""), Prompt(text="bad \ud800 text", probe="p", source="", target="")]
    with pytest.raises(ProbeError, match="prompt 1 of probe 'p' cannot be tokenized"):
        run_probes(handle, prompts, torch.ones(handle.vocab_size, 1), ["all"], progress=False)
