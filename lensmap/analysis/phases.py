"""Phase detection: where alignment ends and where generation of the target language starts.

LinguaMap reads three phases off a model's layers: early layers **align** inputs of all
languages into a shared space, middle layers **reason**, late layers **generate** the target
language. lensmap places the two boundaries with a stated rule on two curves, both indexed by
residual layer (0 = embedding output, L = last block's output):

* the **alignment curve** ``A(l)``: per item, the centred cosine gap between an item and its
  translation versus non-translations, averaged over language pairs
  (:mod:`lensmap.metrics.similarity`);
* the **target curve** ``T(l)``: per prompt, the lens's probability mass on the target
  language's tokens (the backbone's language mass).

The rule, on the item / prompt means (smoothed with a centred moving average of width
``1 + 2 * (L // 60)``: none below 60 layers):

1. **align_end** — let ``p`` be the layer of the highest alignment in the first three quarters
   of the model and ``m`` the lowest alignment before it. ``align_end`` is the first layer at
   which ``A`` reaches ``m + 0.9 (A(p) - m)``: the rise into the shared space is done.
2. **generate_start** — let ``f = T(L)`` (the model's own prediction) and ``b`` the lowest
   target mass from ``align_end`` on. ``generate_start`` is the layer after the last layer
   before L at which ``T`` is below ``b + 0.5 (f - b)``: from there on, the target language
   holds at least half of its final rise.
3. Between them lies the reasoning phase.

**Uncertainty**: the rule is re-run on bootstrap resamples of the items and of the prompts
(independently); each boundary reports its 5–95 % percentile interval and its *stability*, the
share of resamples within one layer of the point estimate.

**No invented structure**: the verdict is ``three-phase`` only when (a) the alignment rise is
real — at least ``min_rise_z`` (default 6) standard errors of the per-item change from the low
to the peak layer (high, because both layers are picked on the same data), and at least 10 %
of the peak's level;
(b) the target language really arrives — ``f - b`` is at least ``min_target_rise`` (default
0.05 of probability mass) in 95 % of resamples; (c) ``generate_start > align_end`` with at
least one layer between them in 80 % of resamples. Otherwise the verdict is ``none`` or
``partial`` and ``reasons`` says which test failed; a missing boundary is ``None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from lensmap.errors import LensmapError


@dataclass
class Boundary:
    """A residual-layer boundary with its bootstrap interval (``None`` when not found)."""

    layer: int | None
    ci_low: float | None = None
    ci_high: float | None = None
    stability: float = 0.0  # share of resamples within one layer of ``layer``


@dataclass
class Phases:
    """The detected boundaries, the verdict and the curves they were read from."""

    n_layers: int
    align_end: Boundary
    generate_start: Boundary
    structure: str  # three-phase | partial | none
    reasons: list[str] = field(default_factory=list)
    curves: pd.DataFrame | None = None  # layer, alignment, target_mass (means over items / prompts)

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("curves")
        return data


def smooth(curve: np.ndarray, n_layers: int) -> np.ndarray:
    """Centred moving average of width ``1 + 2 * (n_layers // 60)`` (edges use the shorter window)."""
    half = n_layers // 60
    if half == 0:
        return curve.astype(float)
    out = np.empty_like(curve, dtype=float)
    for i in range(len(curve)):
        out[i] = curve[max(0, i - half): i + half + 1].mean()
    return out


def _align_end(a: np.ndarray, n_layers: int) -> tuple[int, float, float, int, int]:
    """``(align_end, rise, peak level, peak layer, low layer)`` of a smoothed alignment curve (length L + 1)."""
    top = max(2, int(0.75 * n_layers))
    peak = 1 + int(np.argmax(a[1:top + 1]))
    start = int(np.argmin(a[:peak + 1]))
    rise = float(a[peak] - a[start])
    threshold = a[start] + 0.9 * rise
    end = start + int(np.argmax(a[start:peak + 1] >= threshold - 1e-12))
    return end, rise, float(a[peak]), peak, start


def _generate_start(t: np.ndarray, after: int) -> tuple[int, float]:
    """``(generate_start, rise)`` of a target-mass curve ``t`` (length L + 1), searched from ``after``."""
    final = float(t[-1])
    base = float(t[after:].min())
    rise = final - base
    threshold = base + 0.5 * rise
    below = [layer for layer in range(after, len(t) - 1) if t[layer] < threshold]
    return (below[-1] + 1 if below else after), rise


def _boundaries(a_items: np.ndarray, t_rows: np.ndarray, n_layers: int) -> tuple[float, ...]:
    """``(align_end, rise, peak level, generate_start, target rise, rise z-score)``."""
    a = smooth(a_items.mean(axis=1), n_layers)
    t = t_rows.mean(axis=1)
    t = np.concatenate([smooth(t[:-1], n_layers), t[-1:]])  # the model's own prediction is not smoothed
    align_end, rise, peak, peak_layer, low_layer = _align_end(a, n_layers)
    generate_start, t_rise = _generate_start(t, align_end)
    diff = a_items[peak_layer] - a_items[low_layer]  # paired, per item
    z = rise / (diff.std(ddof=1) / np.sqrt(len(diff)) + 1e-12)
    return align_end, rise, peak, generate_start, t_rise, z


def _interval(samples: np.ndarray, point: int) -> Boundary:
    return Boundary(int(point), float(np.quantile(samples, 0.05)), float(np.quantile(samples, 0.95)),
                    float(np.mean(np.abs(samples - point) <= 1)))


def detect_phases(
    alignment: np.ndarray,
    target_mass: np.ndarray,
    *,
    n_boot: int = 200,
    seed: int = 0,
    min_target_rise: float = 0.05,
    min_rise_z: float = 6.0,
) -> Phases:
    """Place align_end and generate_start (see the module docstring).

    Args:
        alignment: ``[L + 1, n_items]`` per-item alignment (e.g. :func:`alignment_items`).
        target_mass: ``[L + 1, n_prompts]`` per-prompt target-language mass (e.g.
            :func:`target_mass_rows`).
    """
    alignment, target_mass = np.asarray(alignment, float), np.asarray(target_mass, float)
    if alignment.ndim != 2 or target_mass.ndim != 2 or alignment.shape[0] != target_mass.shape[0]:
        raise LensmapError(f"alignment [layers, items] and target mass [layers, prompts] must have the same number "
                           f"of layers; got {alignment.shape} and {target_mass.shape}")
    n_layers = alignment.shape[0] - 1
    if n_layers < 4:
        raise LensmapError(f"phase detection needs a model with at least 4 layers; got {n_layers}")
    if alignment.shape[1] < 5 or target_mass.shape[1] < 3:
        raise LensmapError(f"phase detection needs at least 5 aligned items and 3 prompts for its bootstrap; got "
                           f"{alignment.shape[1]} and {target_mass.shape[1]}")
    align_end, rise, peak, generate_start, t_rise, z = _boundaries(alignment, target_mass, n_layers)
    rng = np.random.default_rng(seed)
    boot = np.array([
        _boundaries(alignment[:, rng.integers(0, alignment.shape[1], alignment.shape[1])],
                    target_mass[:, rng.integers(0, target_mass.shape[1], target_mass.shape[1])], n_layers)
        for _ in range(n_boot)])
    b_align, b_gen, b_trise = boot[:, 0], boot[:, 3], boot[:, 4]
    reasons = []
    has_align = z >= min_rise_z and rise >= 0.1 * abs(peak)
    if not has_align:
        reasons.append(f"no clear alignment rise: the cross-lingual similarity rises by {rise:.3g} "
                       f"({z:.1f} standard errors of the per-item change; {min_rise_z:g} needed), not clearly above "
                       "noise")
    has_generate = np.quantile(b_trise, 0.05) >= min_target_rise
    if not has_generate:
        reasons.append(f"the target language never clearly arrives: its mass rises by {t_rise:.3g} after alignment "
                       f"(5 % bootstrap quantile {np.quantile(b_trise, 0.05):.3g} < {min_target_rise})")
    separated = np.mean(b_gen - b_align >= 2)
    if has_align and has_generate and separated < 0.8:
        reasons.append(f"the boundaries are not separated: only {separated:.0%} of resamples leave a reasoning "
                       "layer between them")
    structure = "three-phase" if not reasons else ("partial" if has_align or has_generate else "none")
    curves = pd.DataFrame({"layer": np.arange(n_layers + 1), "alignment": alignment.mean(axis=1),
                           "target_mass": target_mass.mean(axis=1)})
    return Phases(
        n_layers=n_layers,
        align_end=_interval(b_align, align_end) if has_align else Boundary(None),
        generate_start=_interval(b_gen, generate_start) if has_generate else Boundary(None),
        structure=structure, reasons=reasons, curves=curves)


def alignment_items(states: dict[str, dict[str, Tensor]], pooling: str = "mean") -> np.ndarray:
    """Per-item centred cosine gap, averaged over ordered language pairs: ``[layers, n_items]``."""
    from lensmap.metrics.similarity import pair_item_stats

    languages = list(states)
    stacked = torch.stack([states[lang][pooling] for lang in languages])
    centred = stacked - stacked.mean(dim=(0, 2), keepdim=True)
    gaps = [pair_item_stats(centred[i], centred[j])["cosine_gap"]
            for i in range(len(languages)) for j in range(len(languages)) if i != j]
    return torch.stack(gaps).mean(dim=0).numpy()


def target_mass_rows(result, probes: Sequence[str] | None = None) -> np.ndarray:
    """Per-row mass on each row's target language from a :class:`~lensmap.readout.probes.ProbeResult`: ``[layers, rows]``.

    Rows whose prompt has no target language among the map's columns are left out;
    ``probes`` restricts to some probe sets.
    """
    if result.row_mass is None:
        raise LensmapError("this ProbeResult has no per-row mass (run_probes keeps it; frames read from CSV do not)")
    columns = result.info["columns"]
    targets = result.prompts["target"].tolist()
    names = result.prompts["probe"].tolist()
    keep, cols = [], []
    for row, prompt in enumerate(result.row_prompt):
        target = targets[prompt]
        if target in columns and (probes is None or names[prompt] in probes):
            keep.append(row)
            cols.append(columns.index(target))
    if not keep:
        raise LensmapError("no probe row has a target language among the mapped languages")
    return result.row_mass[:, keep, cols]
