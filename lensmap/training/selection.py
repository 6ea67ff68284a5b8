"""Which parameters selective SFT trains: layer sets, recommendation files, freezing.

A :class:`TrainableSet` names parameter-name prefixes (``model.layers.21.``); every parameter
whose name starts with one of them is trained and every other parameter is frozen. Parameters
are counted once even when tied (an unembedding that shares the embedding matrix).
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from torch import nn

from lensmap.errors import SelectionError
from lensmap.models.handle import ModelHandle
from lensmap.models.identity import tensor_sha256
from lensmap.models.params import count_parameters, layer_prefixes, matches


@dataclass
class TrainableSet:
    """The parameters one SFT variant trains.

    ``layers`` are decoder-block indices (0-based; empty for a module list that is not made
    of whole blocks), ``modules`` the parameter-name prefixes that are unfrozen.
    """

    name: str
    layers: list[int]
    modules: list[str]
    trainable_params: int
    total_params: int
    source: str = ""
    notes: dict = field(default_factory=dict)

    @property
    def trainable_fraction(self) -> float:
        return self.trainable_params / self.total_params if self.total_params else 0.0

    def to_dict(self) -> dict:
        return asdict(self) | {"trainable_fraction": self.trainable_fraction}


def _check_layers(handle: ModelHandle, layers: Sequence[int], where: str) -> list[int]:
    n = handle.n_layers
    try:
        chosen = sorted({int(i) for i in layers})
    except (TypeError, ValueError):
        raise SelectionError(f"{where}: layers must be integers; got {list(layers)!r}") from None
    bad = [i for i in chosen if not 0 <= i < n]
    if bad:
        raise SelectionError(f"{where}: layer indices {bad} are out of range; this model has decoder layers 0..{n - 1}")
    if not chosen:
        raise SelectionError(f"{where}: the layer list is empty; give at least one layer")
    return chosen


def from_layers(handle: ModelHandle, layers: Sequence[int], name: str = "selective", source: str = "layers") -> TrainableSet:
    """Train whole decoder blocks ``layers``."""
    chosen = _check_layers(handle, layers, name)
    prefixes = layer_prefixes(handle, chosen)
    return TrainableSet(name, chosen, prefixes, count_parameters(handle.model, prefixes),
                        count_parameters(handle.model), source)


def from_modules(handle: ModelHandle, modules: Sequence[str], name: str = "selective", source: str = "modules") -> TrainableSet:
    """Train every parameter under the given name prefixes; each prefix must match something."""
    names = [n for n, _ in handle.model.named_parameters()]
    unknown = [m for m in modules if not any(matches(n, [m]) for n in names)]
    if unknown:
        raise SelectionError(f"{name}: no parameter of this model is named like {unknown} "
                             f"(parameter names look like {names[min(3, len(names) - 1)]!r})")
    if not modules:
        raise SelectionError(f"{name}: the module list is empty")
    block = f"{handle.adapter.layers}."
    layers = sorted({int(m[len(block):].split(".")[0]) for m in modules
                     if m.startswith(block) and m[len(block):].split(".")[0].isdigit()})
    return TrainableSet(name, layers, list(modules), count_parameters(handle.model, modules),
                        count_parameters(handle.model), source)


def full(handle: ModelHandle) -> TrainableSet:
    """Every parameter (full fine-tuning)."""
    return TrainableSet("full", list(range(handle.n_layers)), [""], count_parameters(handle.model),
                        count_parameters(handle.model), "all parameters")


def random_like(handle: ModelHandle, reference: TrainableSet, seed: int = 0) -> TrainableSet:
    """As many randomly chosen whole blocks as ``reference`` trains, never exactly the same set."""
    n, k = handle.n_layers, len(reference.layers)
    if not 0 < k < n:
        raise SelectionError(f"a random baseline needs a reference of 1..{n - 1} layers; it has {k}")
    rng = random.Random(seed)
    while True:  # k < n, so at least two subsets exist
        layers = sorted(rng.sample(range(n), k))
        if layers != sorted(reference.layers):
            return from_layers(handle, layers, name="random", source=f"random {k} of {n} layers, seed {seed}")


def from_recommendation(handle: ModelHandle, path: str | os.PathLike) -> TrainableSet:
    """The set in a ``recommendation.json`` written by ``lensmap report``, checked against the model.

    Refuses a file made for another model (different number of layers, parameter count or
    unembedding hash, when the file records them) and modules this model does not have.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SelectionError(f"recommendation file {str(path)!r} does not exist; `lensmap report` writes one") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise SelectionError(f"recommendation file {str(path)!r} is not valid JSON ({error})") from None
    if not isinstance(data, dict) or not (data.get("modules") or data.get("layers")):
        raise SelectionError(f"recommendation file {str(path)!r} has neither `modules` nor `layers`")
    _check_same_model(handle, data, path)
    where = f"recommendation {path.name}"
    if data.get("modules"):
        chosen = from_modules(handle, [str(m) for m in data["modules"]], source=f"{where} ({data.get('strategy', '?')})")
    else:
        chosen = from_layers(handle, data["layers"], source=f"{where} ({data.get('strategy', '?')})")
    if data.get("layers") is not None:
        _check_layers(handle, data["layers"], where)
    chosen.notes = {key: data[key] for key in ("strategy", "boundaries") if key in data}
    return chosen


def _check_same_model(handle: ModelHandle, data: dict, path: Path) -> None:
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    recorded = {
        "n_layers": model.get("n_layers", data.get("n_layers")),
        "total_params": model.get("total_params", data.get("total_params")),
        "unembed_sha256": model.get("unembed_sha256") or (model.get("fingerprint") or {}).get("unembed_sha256"),
    }
    actual = {"n_layers": handle.n_layers, "total_params": count_parameters(handle.model)}
    differs = [f"{key} {recorded[key]} != {actual[key]}" for key in actual
               if recorded[key] is not None and int(recorded[key]) != actual[key]]
    if recorded["unembed_sha256"]:
        if tensor_sha256(handle.unembed.weight) != recorded["unembed_sha256"]:
            differs.append("unembedding weights differ")
    if differs:
        name = model.get("name") if model else data.get("model")
        raise SelectionError(f"recommendation file {str(path)!r} was made for another model ({name or 'unknown'}): "
                             f"{'; '.join(differs)}. Run `lensmap report` on this model to get its recommendation")


def apply(model: nn.Module, chosen: TrainableSet) -> int:
    """Unfreeze exactly the parameters of ``chosen``, freeze all others; returns the trainable count."""
    for name, parameter in model.named_parameters():
        parameter.requires_grad_(matches(name, chosen.modules))  # the prefix "" (full) matches every name
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
