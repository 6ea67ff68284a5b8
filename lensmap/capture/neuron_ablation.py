"""Switch neurons off: zero chosen MLP activations inside a scoped hook, removed on exit and on error.

``neurons`` maps a decoder block to the indices of its neurons to zero (see
:mod:`lensmap.capture.activations` for the two sites). At site ``act`` the activation function's
output is replaced by a copy with those coordinates set to 0 (LAPE's deactivation: in a gated
MLP the product ``act_fn(gate) * up`` is then 0 too); at ``down_input`` the output projection's
input is. An empty set registers no hook, so the model runs exactly as without the block.

A deactivation whose hook never runs gives the unchanged model's numbers, which look like a
finding ("switching these neurons off changes nothing"). :class:`AblationTrace` counts the calls;
:meth:`AblationTrace.check` fails when a block's hook did not run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from lensmap.capture.activations import check_distinct, mlp_width, site_module
from lensmap.capture.hooks import HookSpec, scoped_hooks
from lensmap.errors import LensmapError
from lensmap.models.handle import ModelHandle

NeuronSet = Mapping[int, Sequence[int] | Tensor]  # decoder block -> neuron indices


@dataclass
class AblationTrace:
    """Calls of each block's zeroing hook during the block of code."""

    blocks: list[int]
    calls: dict[int, int] = field(default_factory=dict)

    def check(self) -> None:
        """Every hooked block ran at least once (an empty set has no blocks and always passes)."""
        missing = [b for b in self.blocks if not self.calls.get(b)]
        if missing:
            raise LensmapError(f"the deactivation hooks of blocks {missing} never ran: the neurons were not switched off")


def neuron_index(handle: ModelHandle, neurons: NeuronSet, site: str) -> dict[int, Tensor]:
    """``{block: sorted unique long indices}`` without empty blocks; bad blocks or indices are errors."""
    width = mlp_width(handle, site)
    out = {}
    for block, idx in neurons.items():
        block = int(block)
        if not 0 <= block < handle.n_layers:
            raise LensmapError(f"block {block} is out of range; this model has blocks 0..{handle.n_layers - 1}")
        index = torch.as_tensor(idx, dtype=torch.long).flatten().unique()
        if index.numel() == 0:
            continue
        if int(index.min()) < 0 or int(index.max()) >= width:
            raise LensmapError(f"block {block}: neuron indices must lie in 0..{width - 1}; got "
                               f"{int(index.min())}..{int(index.max())}")
        out[block] = index
    return out


@contextlib.contextmanager
def zero_neurons(handle: ModelHandle, neurons: NeuronSet, *, site: str = "act") -> Iterator[AblationTrace]:
    """Zero ``neurons`` (``{block: indices}``) at ``site`` for every forward pass inside the block."""
    index = neuron_index(handle, neurons, site)
    blocks = sorted(index)
    modules = check_distinct(handle, blocks, site)
    trace = AblationTrace(blocks)

    def zeroed(block: int, value: Tensor) -> Tensor:
        trace.calls[block] = trace.calls.get(block, 0) + 1
        return value.index_fill(-1, index[block].to(value.device), 0)

    def make(block: int, kind: str):
        if kind == "forward":
            return lambda module, args, output: zeroed(block, output)

        def pre(module, args, kwargs):
            if args:
                return (zeroed(block, args[0]), *args[1:]), kwargs
            name = next(iter(kwargs))
            return args, kwargs | {name: zeroed(block, kwargs[name])}
        return pre

    specs: list[HookSpec] = [(m, site_module(handle, b, site)[1], make(b, site_module(handle, b, site)[1]))
                             for b, m in zip(blocks, modules)]
    with scoped_hooks(handle.model, specs):
        yield trace
