"""Scoped forward hooks: registered for one block of code, removed on exit and on error.

:func:`scoped_hooks` is the one place lensmap registers hooks. It removes exactly the handles
it registered (never a hook of the caller's), puts the model back as it came in (train/eval
mode of every module, every parameter's ``requires_grad``), and holds the model's lock while
the block runs: two threads capturing from one model take turns instead of seeing each
other's forward passes. :func:`residual_hooks` reads the residual stream at selected rows
(layer numbering: :func:`lensmap.models.handle.residual_site`).
"""

from __future__ import annotations

import contextlib
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from lensmap.errors import LensmapError
from lensmap.models.handle import ModelHandle, block_output, residual_site

HookSpec = tuple[nn.Module, str, Callable]  # (module, "forward" | "pre", hook)

_LOCKS: "weakref.WeakKeyDictionary[nn.Module, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


class StopForward(Exception):
    """Raised by the last needed hook to skip the rest of the forward pass."""


def model_lock(model: nn.Module) -> threading.RLock:
    """The re-entrant lock lensmap holds while its hooks are on ``model`` (one per model)."""
    with _LOCKS_GUARD:
        lock = _LOCKS.get(model)
        if lock is None:
            lock = _LOCKS[model] = threading.RLock()
        return lock


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Restore the model's train/eval mode of every module and each parameter's requires_grad on exit."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training
        for param, flag in grads:
            param.requires_grad_(flag)


@contextlib.contextmanager
def scoped_hooks(model: nn.Module, specs: Sequence[HookSpec]) -> Iterator[None]:
    """Register ``specs`` for the block; remove exactly those handles on exit and on error.

    A ``"pre"`` hook is a forward pre-hook with kwargs (``hook(module, args, kwargs)``), a
    ``"forward"`` hook a forward hook (``hook(module, args, output)``). The model's state is
    restored on exit (:func:`preserved_state`) and its lock is held throughout.
    """
    handles: list[torch.utils.hooks.RemovableHandle] = []
    with model_lock(model):
        try:
            for module, kind, hook in specs:
                if kind == "pre":
                    handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
                elif kind == "forward":
                    handles.append(module.register_forward_hook(hook))
                else:
                    raise ValueError(f"hook kind must be 'pre' or 'forward', got {kind!r}")
            with preserved_state(model):
                yield
        finally:
            for h in handles:
                h.remove()


def hidden_entering(args: tuple, kwargs: dict) -> Tensor:
    """The hidden states a decoder block receives (first positional argument or ``hidden_states``)."""
    hidden = args[0] if args else kwargs.get("hidden_states")
    if not isinstance(hidden, Tensor):
        raise LensmapError("could not find the hidden states entering the decoder block")
    return hidden


@contextlib.contextmanager
def residual_hooks(
    handle: ModelHandle,
    layers: Sequence[int],
    mask: Tensor,
    *,
    stop_after_last: bool = False,
) -> Iterator[dict[int, Tensor]]:
    """Register hooks that store ``hidden[mask]`` (``[n_rows, d_model]``) for each residual layer.

    Yields a dict that fills with ``{layer: tensor}`` as the forward pass runs. With
    ``stop_after_last`` the hook of the deepest requested layer aborts the forward pass (the
    caller must use :func:`lensmap.capture.run_forward`, which swallows that signal), skipping
    the final norm and the ``[seq, vocab]`` unembedding the analysis does not need.
    """
    n = handle.n_layers
    bad = [layer for layer in layers if not 0 <= layer <= n]
    if bad:
        raise LensmapError(f"layer indices {bad} out of range: this model has residual layers 0..{n}")
    wanted = sorted(set(layers))
    deepest = wanted[-1] if wanted else -1
    store: dict[int, Tensor] = {}
    blocks = handle.blocks

    def keep(layer: int, hidden: Tensor) -> None:
        store[layer] = hidden[mask.to(hidden.device)].detach()
        if stop_after_last and layer == deepest:
            raise StopForward

    def make_hook(layer: int, site: str):
        if site == "input":
            return lambda module, args, kwargs: keep(layer, hidden_entering(args, kwargs))
        return lambda module, args, output: keep(layer, block_output(output))

    specs = []
    for layer in wanted:
        block, site = residual_site(layer)
        specs.append((blocks[block], "pre" if site == "input" else "forward", make_hook(layer, site)))
    with scoped_hooks(handle.model, specs):
        yield store
