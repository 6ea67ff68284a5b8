"""MLP neuron activations of every decoder block, handed over block by block for the real tokens only.

A *neuron* is one coordinate of the MLP's hidden width ``d_mlp``. Two sites are read:

* ``act`` — the output of the adapter's ``mlp_activation`` module: ``act_fn(gate_proj(x))`` in
  gated MLPs (Qwen, Llama, Gemma), the activation of the first projection otherwise (GPT-2,
  BLOOM). LAPE counts this value > 0.
* ``down_input`` — the input of the MLP's output projection (``handle.mlp_down``):
  ``act_fn(gate) * up`` in gated MLPs, the same as ``act`` otherwise. Lingua Franca reads this.

:func:`activation_hooks` calls ``consume(block, rows)`` once per block and forward pass with
``rows = activation[mask]`` (``[n_rows, d_mlp]``, rows in ``(batch, position)`` row-major
order, exactly ``mask.nonzero()``): padding is never handed over when the mask excludes it. Nothing
is stored here, so a caller that reduces ``rows`` at once uses memory independent of the
number of tokens. After the forward pass :meth:`ActivationTrace.check` fails when a block's
hook never ran.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from torch import Tensor, nn

from lensmap.capture.hooks import HookSpec, scoped_hooks
from lensmap.errors import LensmapError
from lensmap.models.handle import ModelHandle

SITES = ("act", "down_input")


def check_site(site: str) -> str:
    if site not in SITES:
        raise LensmapError(f"neuron site must be one of {', '.join(SITES)} (act = the activation function's output, "
                           f"down_input = the input of the MLP output projection); got {site!r}")
    return site


def site_module(handle: ModelHandle, block: int, site: str) -> tuple[nn.Module, str]:
    """The module to hook for ``site`` in ``block`` and the hook kind: ``(module, "forward" | "pre")``."""
    check_site(site)
    if site == "act":
        return handle.mlp_activation(block), "forward"
    return handle.mlp_down(block), "pre"


def check_distinct(handle: ModelHandle, blocks: Sequence[int], site: str) -> list[nn.Module]:
    """The site's module of each block; a module shared by two blocks would mix their neurons, so it is an error."""
    modules = [site_module(handle, b, site)[0] for b in blocks]
    if len({id(m) for m in modules}) != len(modules):
        raise LensmapError(f"the {site} module of this {handle.adapter.family} model is shared between blocks, so a "
                           "hook on it cannot tell the blocks apart; use site: down_input")
    return modules


def site_value(kind: str, args: tuple, kwargs: dict, output: object = None) -> Tensor:
    """The per-neuron tensor at a hook: a forward hook's output, or the first input of a pre-hook."""
    value = output if kind == "forward" else (args[0] if args else next(iter(kwargs.values()), None))
    if not isinstance(value, Tensor):
        raise LensmapError(f"the MLP {'activation output' if kind == 'forward' else 'output projection input'} is a "
                           f"{type(value).__name__}, not a tensor")
    return value


def mlp_width(handle: ModelHandle, site: str = "act") -> int:
    """``d_mlp``: the number of neurons per block (the input width of the MLP output projection)."""
    down = handle.mlp_down(0)
    weight = getattr(down, "weight", None)
    if weight is None:
        raise LensmapError("the MLP output projection has no weight; cannot tell the MLP width")
    # nn.Linear stores [out, in]; GPT-2's Conv1D stores [in, out]
    return int(weight.shape[0] if type(down).__name__ == "Conv1D" else weight.shape[1])


@dataclass
class ActivationTrace:
    """How many times each block's hook ran (filled during the forward pass)."""

    blocks: list[int]
    calls: dict[int, int] = field(default_factory=dict)

    def check(self, passes: int = 1) -> None:
        """Every block's hook ran ``passes`` times; otherwise the hook never saw the model's activations."""
        wrong = {b: self.calls.get(b, 0) for b in self.blocks if self.calls.get(b, 0) != passes}
        if wrong:
            raise LensmapError(f"neuron hooks ran {wrong} times instead of {passes} (block: calls): the MLP "
                               "activation module is not on the forward path of this model")


@contextlib.contextmanager
def activation_hooks(
    handle: ModelHandle,
    mask: Tensor,
    consume: Callable[[int, Tensor], None],
    *,
    site: str = "act",
    blocks: Sequence[int] | None = None,
) -> Iterator[ActivationTrace]:
    """Hook ``site`` in every block (or ``blocks``); call ``consume(block, activation[mask])`` each forward pass.

    ``mask`` is the ``[batch, seq]`` bool selection of the rows to hand over (the real tokens),
    for the one batch the caller runs inside the block. Yields an :class:`ActivationTrace`.
    """
    blocks = list(range(handle.n_layers)) if blocks is None else sorted({int(b) for b in blocks})
    modules = check_distinct(handle, blocks, site)
    trace = ActivationTrace(blocks)

    def make(block: int, kind: str):
        def seen(value: Tensor) -> None:
            trace.calls[block] = trace.calls.get(block, 0) + 1
            if value.shape[:2] != mask.shape:
                raise LensmapError(f"block {block}: the MLP activation has shape {tuple(value.shape)}, expected "
                                   f"[batch, seq, d_mlp] with batch, seq = {tuple(mask.shape)}")
            consume(block, value[mask.to(value.device)].detach())

        if kind == "forward":
            return lambda module, args, output: seen(site_value(kind, args, {}, output))
        return lambda module, args, kwargs: seen(site_value(kind, args, kwargs))

    kind = site_module(handle, blocks[0], site)[1] if blocks else "forward"
    specs: list[HookSpec] = [(module, kind, make(b, kind)) for b, module in zip(blocks, modules)]
    with scoped_hooks(handle.model, specs):
        yield trace
