"""The recommended trainable-layer set, written as ``recommendation.json`` for ``lensmap sft``.

Strategies (layers are decoder blocks, 0-based; residual layer ``r`` is block ``r - 1``'s output):

* ``linguamap`` — the final blocks, from the block that produces the *generate_start* residual
  layer to the last, trimmed from the front to fit a parameter budget (default 5 % of all
  parameters; at least one block). Without a clear generate boundary it falls back to the final
  blocks within the budget and says so in ``notes``.
* ``cogsym`` — from a layer sweep's evidence (``lensmap sweep``): the first blocks, as many as
  the input-side sweep needs to halve perception, and the last blocks, as many as the
  output-side sweep needs to halve production, trimmed from the inside to fit the parameter
  budget (at least one block per side with evidence). The measured extents and curves go into
  ``recommendation.json`` (``evidence``). Without sweep evidence it applies ``cogsym-fixed``
  and says so in ``notes``.
* ``cogsym-fixed`` — the outermost 25 % of blocks, half at the start and half at the end (an odd
  count puts the extra block at the end): 24 blocks → 0–2 and 21–23.
* ``neurons`` — the blocks holding the most language-specific neurons (LAPE, ``neuron_density.csv``)
  of the target languages (all languages of the frame when none are given), densest first, added
  while they fit the parameter budget (at least one block).
* ``custom`` — the blocks the user lists.

``modules`` are parameter-name prefixes (``model.layers.22.``) and the parameter counts come
from the model itself (tied weights counted once). The file also records the model's identity
(name, architecture, number of layers, parameter count, sha256 of the unembedding) so that
``lensmap sft`` refuses a recommendation made for another model.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lensmap.analysis.phases import Boundary, Phases
from lensmap.errors import LensmapError
from lensmap.io import atomic_write_text
from lensmap.models.handle import ModelHandle
from lensmap.models.identity import model_identity
from lensmap.models.params import block_parameters, count_parameters, layer_prefixes


@dataclass
class Recommendation:
    """What to fine-tune, with the numbers and the evidence."""

    strategy: str
    layers: list[int]
    modules: list[str]
    trainable_params: int
    total_params: int
    trainable_fraction: float
    boundaries: dict[str, dict[str, Any]]
    model: dict[str, Any]
    budget: float | None = None
    notes: list[str] = field(default_factory=list)
    evidence: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """One paragraph in words, for the report."""
        span = ", ".join(str(x) for x in self.layers)
        text = (f"Strategy {self.strategy}: fine-tune decoder blocks {span} of {self.model['n_layers']} "
                f"({self.trainable_params:,} of {self.total_params:,} parameters, {self.trainable_fraction:.2%}).")
        g = self.boundaries.get("generate_start", {})
        if g.get("layer") is not None:
            text += (f" The target language takes over at residual layer {g['layer']} "
                     f"(90 % interval {g['ci_low']:.0f}–{g['ci_high']:.0f}).")
        return " ".join([text, *self.notes])


def _boundary_dict(boundary: Boundary | None) -> dict[str, Any]:
    if boundary is None:
        return {"layer": None, "ci_low": None, "ci_high": None, "stability": 0.0}
    return asdict(boundary)


def cogsym_layers(n_layers: int, fraction: float = 0.25) -> list[int]:
    """The outermost ``fraction`` of ``n_layers`` blocks, split between the two ends."""
    k = max(2, int(n_layers * fraction + 0.5))  # half up: 25 % of 18 blocks is 5
    first = k // 2
    return list(range(first)) + list(range(n_layers - (k - first), n_layers))


def linguamap_layers(handle: ModelHandle, phases: Phases | None, budget: float = 0.05) -> tuple[list[int], list[str]]:
    """Final blocks from the generate boundary on, within ``budget`` of all parameters."""
    n = handle.n_layers
    sizes = block_parameters(handle)
    total = count_parameters(handle.model)
    notes = []
    start_residual = phases.generate_start.layer if phases is not None else None
    if start_residual is None:
        first = 0
        notes.append("No clear generate boundary was found, so the final blocks within the budget are used.")
    else:
        first = max(0, start_residual - 1)  # residual layer r is produced by block r - 1
    chosen: list[int] = []
    used = 0
    for block in range(n - 1, first - 1, -1):  # from the last block towards the boundary
        if chosen and used + sizes[block] > budget * total:
            notes.append(f"The budget of {budget:.0%} of parameters stops the set at block {chosen[-1]}; the generate "
                         f"phase starts at block {first}.")
            break
        chosen.append(block)
        used += sizes[block]
    return sorted(chosen), notes


@dataclass
class Evidence:
    """What a strategy may read: the phases, the budget, a user's layers, the CogSym fraction."""

    phases: Phases | None = None
    budget: float = 0.05
    layers: Sequence[int] | None = None
    cogsym_fraction: float = 0.25
    neuron_density: Any = None  # a neuron_density frame (lensmap.metrics.neurons.density_frame)
    target_languages: Sequence[str] | None = None
    sweep: dict[str, Any] | None = None  # {"perception": k or None, "production": k or None, ...} from a sweep


def neuron_layers(handle: ModelHandle, density: Any, languages: Sequence[str] | None = None,
                  budget: float = 0.05) -> tuple[list[int], list[str]]:
    """Blocks with the most language-specific neurons of ``languages``, densest first, within ``budget``."""
    from lensmap.frames import require_columns

    frame = require_columns(density, "neuron_density", "neuron_density")
    if languages:
        missing = [x for x in languages if x not in set(frame["language"])]
        if missing:
            raise LensmapError(f"the neuron density has no rows for {missing}; it has {sorted(set(frame['language']))}")
        frame = frame[frame["language"].isin(list(languages))]
    per_block = frame.groupby("block")["n_neurons"].sum()
    per_block = per_block[per_block.index < handle.n_layers].sort_values(ascending=False, kind="stable")
    if per_block.empty or per_block.iloc[0] == 0:
        raise LensmapError("no language-specific neuron of the target languages was found; strategy neurons has "
                           "nothing to choose from")
    sizes, total = block_parameters(handle), count_parameters(handle.model)
    chosen, used = [], 0
    for block, n in per_block.items():
        if n == 0 or (chosen and used + sizes[int(block)] > budget * total):
            continue
        chosen.append(int(block))
        used += sizes[int(block)]
    share = per_block[chosen].sum() / per_block.sum()
    names = ", ".join(languages) if languages else "all languages"
    return sorted(chosen), [f"These blocks hold {share:.0%} of the language-specific neurons of {names}."]


def _neurons(handle: ModelHandle, evidence: Evidence) -> tuple[list[int], list[str]]:
    if evidence.neuron_density is None:
        raise LensmapError("strategy neurons needs the neuron analysis: add a neurons: section to the config")
    return neuron_layers(handle, evidence.neuron_density, evidence.target_languages, evidence.budget)


def _linguamap(handle: ModelHandle, evidence: Evidence) -> tuple[list[int], list[str]]:
    return linguamap_layers(handle, evidence.phases, evidence.budget)


def _cogsym_fixed(handle: ModelHandle, evidence: Evidence) -> tuple[list[int], list[str]]:
    return cogsym_layers(handle.n_layers, evidence.cogsym_fraction), []


def cogsym_evidence_layers(handle: ModelHandle, perception: float | None, production: float | None,
                           budget: float) -> tuple[list[int], list[str]]:
    """First ``ceil(perception)`` and last ``ceil(production)`` blocks, trimmed from the inside to the budget."""
    import math

    n, sizes, total = handle.n_layers, block_parameters(handle), count_parameters(handle.model)
    notes = []
    first = list(range(min(n, math.ceil(perception)))) if perception else []
    last = list(range(n - min(n, math.ceil(production)), n)) if production else []
    if not first:
        notes.append("No perception metric halved within the input-side sweep, so no input-side block is chosen.")
    if not last:
        notes.append("No production metric halved within the output-side sweep, so no output-side block is chosen.")
    if not first and not last:
        return cogsym_layers(n), notes + ["Neither side halved: the fixed 25 % rule (cogsym-fixed) is used instead."]
    trimmed = False
    while sum(sizes[b] for b in set(first + last)) > budget * total and len(first) + len(last) > (bool(first) + bool(last)):
        if len(first) >= len(last) and len(first) > 1:
            first.pop()  # drop the innermost block of the longer side
        elif len(last) > 1:
            last.pop(0)
        else:
            first.pop()
        trimmed = True
    if trimmed:
        notes.append(f"The budget of {budget:.0%} of parameters trims the sets from the inside.")
    return sorted(set(first + last)), notes


def _cogsym(handle: ModelHandle, evidence: Evidence) -> tuple[list[int], list[str]]:
    if evidence.sweep is None:
        return cogsym_layers(handle.n_layers, evidence.cogsym_fraction), [
            "No layer-sweep evidence was given (run `lensmap sweep`), so this is the fixed 25 % rule of "
            "cogsym-fixed, not a measurement of where perception and production live."]
    return cogsym_evidence_layers(handle, evidence.sweep.get("perception"), evidence.sweep.get("production"),
                                  evidence.budget)


def _custom(handle: ModelHandle, evidence: Evidence) -> tuple[list[int], list[str]]:
    if not evidence.layers:
        raise LensmapError("strategy custom needs layers: [..]")
    chosen = sorted({int(x) for x in evidence.layers})
    bad = [x for x in chosen if not 0 <= x < handle.n_layers]
    if bad:
        raise LensmapError(f"layers {bad} are out of range; this model has blocks 0..{handle.n_layers - 1}")
    return chosen, []


@dataclass(frozen=True)
class Strategy:
    """One way to choose the blocks: ``choose(handle, evidence) -> (blocks, notes)``."""

    name: str
    choose: Callable[[ModelHandle, Evidence], tuple[list[int], list[str]]]
    uses_budget: bool
    description: str


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (
    Strategy("linguamap", _linguamap, True, "the final blocks from the generate boundary, within the budget"),
    Strategy("cogsym", _cogsym, True, "the outer blocks where a layer sweep places perception and production"),
    Strategy("cogsym-fixed", _cogsym_fixed, False, "the outermost 25 % of blocks, split between both ends"),
    Strategy("custom", _custom, False, "the blocks the user lists"),
    Strategy("neurons", _neurons, True, "the blocks densest in language-specific neurons, within the budget"),
)}


def recommend(
    handle: ModelHandle,
    strategy: str = "linguamap",
    *,
    phases: Phases | None = None,
    budget: float = 0.05,
    layers: Sequence[int] | None = None,
    cogsym_fraction: float = 0.25,
    neuron_density: Any = None,
    target_languages: Sequence[str] | None = None,
    sweep: dict[str, Any] | None = None,
) -> Recommendation:
    """The trainable-layer set of ``strategy`` for ``handle`` (see the module docstring)."""
    if strategy not in STRATEGIES:
        raise LensmapError(f"unknown strategy {strategy!r}; choose from {', '.join(STRATEGIES)} "
                           "(to add one, add a Strategy to lensmap.analysis.recommend.STRATEGIES)")
    if not 0 < budget <= 1:
        raise LensmapError(f"budget must be a fraction of the parameters in (0, 1]; got {budget}")
    chosen, notes = STRATEGIES[strategy].choose(handle, Evidence(phases, budget, layers, cogsym_fraction,
                                                                neuron_density, target_languages, sweep))
    modules = layer_prefixes(handle, chosen)
    trainable = count_parameters(handle.model, modules)
    identity = model_identity(handle)
    boundaries = {"align_end": _boundary_dict(phases.align_end if phases else None),
                  "generate_start": _boundary_dict(phases.generate_start if phases else None)}
    if phases is not None:
        boundaries["structure"] = phases.structure
        boundaries["reasons"] = phases.reasons
    return Recommendation(strategy, chosen, modules, trainable, identity["total_params"],
                          trainable / identity["total_params"], boundaries, identity,
                          budget if STRATEGIES[strategy].uses_budget else None, notes,
                          {"sweep": sweep} if sweep is not None else {})


def write_recommendation(recommendation: Recommendation, path: str | os.PathLike) -> Path:
    """``recommendation.json``, written atomically."""
    return atomic_write_text(path, json.dumps(recommendation.to_dict(), indent=2))
