"""The small protocol every lens follows, and the optional capability that lets the reduction fuse."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from torch import Tensor, nn


@runtime_checkable
class Lens(Protocol):
    """Maps residual vectors of one layer to vocabulary logits.

    ``decode(hidden, layer)`` takes ``[..., d_model]`` vectors from residual layer ``layer``
    and returns ``[..., vocab]`` logits in the model's dtype (callers softmax in float32).
    """

    name: str

    def decode(self, hidden: Tensor, layer: int) -> Tensor: ...


@dataclass
class HeadInputs:
    """What a linear read-out needs: ``logits = softcap(normed @ weight.T + bias)``.

    Attributes:
        normed: ``[rows, d_model]`` vectors right before the unembedding (final norm applied),
            on the unembedding's device, in the dtype the final norm returns.
        weight: ``[vocab, d_model]`` unembedding weight (the model's own tensor, not a copy).
        bias: ``[vocab]`` or None.
        softcap: the final-logit soft-cap ``c`` of ``tanh(x / c) * c``, or None.
    """

    normed: Tensor
    weight: Tensor
    bias: Tensor | None
    softcap: float | None


def plain_linear(module: nn.Module) -> bool:
    """True when calling ``module`` is exactly ``F.linear(x, weight, bias)``: an ``nn.Linear``
    whose forward is not overridden and that carries no hooks (a hook could change the output).

    accelerate's placement hook (``_hf_hook``, a per-instance ``forward`` that only moves the
    input to the weight's device) is allowed while the weight is really there; when the weight
    is offloaded (on ``meta`` between calls) only calling the module loads it.
    """
    if not isinstance(module, nn.Linear) or module.weight.device.type == "meta":
        return False
    instance_forward = "forward" in vars(module)
    return (
        (not instance_forward or hasattr(module, "_hf_hook"))
        and type(module).forward is nn.Linear.forward
        and not module._forward_hooks
        and not module._forward_pre_hooks
        and not nn.modules.module._global_forward_hooks
        and not nn.modules.module._global_forward_pre_hooks
    )
