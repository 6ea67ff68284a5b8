"""Language-specific neurons from streamed activation statistics (pure tensors; no model here).

Statistics (:class:`NeuronStats`): per language ``k``, block ``l`` and neuron ``j`` the number of
tokens seen, how many had an activation > 0, the sum and the sum of squares of the activation,
all float64 ``[K, L, D]`` (tokens ``[K, L]``). They are sums, so a pass over any number of
tokens needs the same memory, and two passes add. They are saved as ``.npz`` without pickles.

LAPE selection (Tang et al. 2024, arXiv 2402.16438), :func:`lape_select`:

1. activation probability ``p[k, l, j] = positive / tokens``;
2. normalise each neuron's probabilities over languages, ``q = p / Σ_k p``, and take the
   entropy ``H = -Σ_k q ln q`` (0 ln 0 = 0; a neuron that never fires has no entropy and is
   never selected). A neuron equally active in all K languages has ``H = ln K``, one active in
   a single language ``H = 0``;
3. τ is the ``tau_quantile`` (0.95) quantile of all probabilities ``p`` (or a given ``tau``);
   a neuron where no language exceeds τ is dropped;
4. of the rest, the ``fraction`` (1 %) of all ``L × D`` neurons with the lowest entropy are kept
   (``round(fraction · L · D)``; ties broken by position; fewer when fewer neurons pass τ — the
   selection then says so);
5. a kept neuron belongs to every language whose probability exceeds τ (so at least one).

Key neurons (Lingua Franca, arXiv 2410.11718), :func:`key_neuron_z`: the z-score of each
neuron's mean activation across languages, key when ``z > 2``. With population standard
deviation the largest z any of K values can reach is ``√(K − 1)``, so with K ≤ 5 languages no
neuron can pass; :func:`key_neuron_z` warns then. LAPE is lensmap's default.
"""

from __future__ import annotations

import io
import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from lensmap.errors import LensmapError, LensmapWarning
from lensmap.frames import columns
from lensmap.io import atomic_write_bytes
from lensmap.metrics.similarity import bootstrap_means

STATS_FORMAT = "lensmap-neuron-stats-1"


# --------------------------------------------------------------------------- streamed statistics


@dataclass
class NeuronStats:
    """Sums of MLP activations per language, block and neuron.

    Attributes:
        languages: the K language codes, in order.
        site: where the activations were read (``act`` or ``down_input``).
        tokens: ``[K, L]`` float64 tokens counted per language and block.
        positive: ``[K, L, D]`` float64 count of activations > 0.
        total: ``[K, L, D]`` float64 sum of activations.
        squares: ``[K, L, D]`` float64 sum of squared activations.
        info: free-form facts about the pass (model, text source, budget), saved with it.
    """

    languages: list[str]
    site: str
    tokens: Tensor
    positive: Tensor
    total: Tensor
    squares: Tensor
    info: dict = field(default_factory=dict)

    @classmethod
    def empty(cls, languages: Sequence[str], n_blocks: int, d_mlp: int, site: str = "act") -> "NeuronStats":
        k = len(languages)
        zeros = lambda: torch.zeros(k, n_blocks, d_mlp, dtype=torch.float64)  # noqa: E731
        return cls(list(languages), site, torch.zeros(k, n_blocks, dtype=torch.float64), zeros(), zeros(), zeros())

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(K languages, L blocks, D neurons)``."""
        return tuple(self.positive.shape)  # type: ignore[return-value]

    def add(self, language: str | int, block: int, rows: Tensor) -> None:
        """Add ``rows`` (``[n, D]`` activations of real tokens of one language at one block)."""
        k = self.languages.index(language) if isinstance(language, str) else language
        if rows.dim() != 2 or rows.shape[1] != self.shape[2]:
            raise LensmapError(f"activation rows must be [n, {self.shape[2]}]; got {tuple(rows.shape)}")
        self.tokens[k, block] += rows.shape[0]
        self.positive[k, block] += (rows > 0).sum(dim=0, dtype=torch.float64).cpu()
        wide = rows.to(torch.float64)
        self.total[k, block] += wide.sum(dim=0).cpu()
        self.squares[k, block] += wide.square().sum(dim=0).cpu()

    def _per_token(self, value: Tensor) -> Tensor:
        if (self.tokens == 0).any():
            empty = sorted({self.languages[k] for k in (self.tokens == 0).nonzero()[:, 0].tolist()})
            raise LensmapError(f"no tokens were counted for {', '.join(empty)}; give each language some text")
        return value / self.tokens[:, :, None]

    def probability(self) -> Tensor:
        """``[K, L, D]`` fraction of tokens with activation > 0."""
        return self._per_token(self.positive)

    def mean(self) -> Tensor:
        """``[K, L, D]`` mean activation."""
        return self._per_token(self.total)

    def std(self) -> Tensor:
        """``[K, L, D]`` population standard deviation of the activation."""
        mean = self.mean()
        return (self._per_token(self.squares) - mean.square()).clamp(min=0).sqrt()

    def merged(self, other: "NeuronStats") -> "NeuronStats":
        """The statistics of both passes (same languages, site and shape)."""
        if other.languages != self.languages or other.site != self.site or other.shape != self.shape:
            raise LensmapError("can only merge neuron statistics of the same languages, site and shape")
        return NeuronStats(self.languages, self.site, self.tokens + other.tokens, self.positive + other.positive,
                           self.total + other.total, self.squares + other.squares, dict(self.info))

    def save(self, path: str | os.PathLike) -> Path:
        """Write an ``.npz`` (numpy arrays and a JSON header; loads without pickle)."""
        header = json.dumps({"format": STATS_FORMAT, "languages": self.languages, "site": self.site,
                             "info": self.info}, default=str)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, header=np.array(header), tokens=self.tokens.numpy(),
                            positive=self.positive.numpy(), total=self.total.numpy(), squares=self.squares.numpy())
        return atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NeuronStats":
        """Read what :meth:`save` wrote."""
        path = Path(path)
        if not path.is_file():
            raise LensmapError(f"neuron statistics file {str(path)!r} does not exist")
        with np.load(path, allow_pickle=False) as data:
            header = json.loads(str(data["header"]))
            if header.get("format") != STATS_FORMAT:
                raise LensmapError(f"{path} is not a lensmap neuron-statistics file (format {header.get('format')!r})")
            arrays = {k: torch.from_numpy(data[k].astype(np.float64)) for k in ("tokens", "positive", "total", "squares")}
        return cls(header["languages"], header["site"], info=header.get("info", {}), **arrays)

    def summary(self, model: str = "") -> pd.DataFrame:
        """The tidy ``neuron_stats.csv`` frame: one row per language × block."""
        prob, mean = self.probability(), self.mean()
        k, n_blocks, d = self.shape
        rows = []
        for i, lang in enumerate(self.languages):
            for b in range(n_blocks):
                rows.append({"model": model, "site": self.site, "language": lang, "block": b,
                             "n_tokens": int(self.tokens[i, b]), "d_mlp": d,
                             "mean_probability": float(prob[i, b].mean()),
                             "mean_activation": float(mean[i, b].mean()),
                             "never_active": int((self.positive[i, b] == 0).sum())})
        return pd.DataFrame(rows, columns=columns("neuron_stats"))


# --------------------------------------------------------------------------- LAPE


def language_entropy(prob: Tensor) -> Tensor:
    """``[K, L, D]`` probabilities → ``[L, D]`` entropy (nats) of each neuron's normalised distribution.

    A neuron with all probabilities 0 gets NaN (it has no distribution over languages).
    """
    prob = prob.to(torch.float64)
    norm = prob / prob.sum(dim=0, keepdim=True)
    terms = torch.where(norm > 0, norm * norm.log(), torch.zeros_like(norm))
    entropy = -terms.sum(dim=0)
    return torch.where(prob.sum(dim=0) > 0, entropy, torch.full_like(entropy, float("nan")))


@dataclass
class LapeSelection:
    """The neurons LAPE selected.

    Attributes:
        languages: the K language codes.
        selected: ``[L, D]`` bool, the kept neurons.
        assigned: ``[K, L, D]`` bool, kept neurons of each language (a neuron may have several).
        entropy: ``[L, D]`` float64 entropy over languages (NaN for neurons that never fire).
        probability: ``[K, L, D]`` float64 activation probability.
        tau: the probability threshold used.
        settings: every threshold, as given and as resolved (written beside the results).
    """

    languages: list[str]
    selected: Tensor
    assigned: Tensor
    entropy: Tensor
    probability: Tensor
    tau: float
    settings: dict

    def neurons_of(self, language: str) -> dict[int, Tensor]:
        """``{block: neuron indices}`` assigned to ``language``."""
        mask = self.assigned[self.languages.index(language)]
        return {b: mask[b].nonzero()[:, 0] for b in range(mask.shape[0]) if mask[b].any()}

    def count(self, language: str) -> int:
        return int(self.assigned[self.languages.index(language)].sum())


def lape_select(
    prob: Tensor,
    languages: Sequence[str],
    *,
    tau_quantile: float = 0.95,
    tau: float | None = None,
    fraction: float = 0.01,
) -> LapeSelection:
    """LAPE on ``prob`` (``[K, L, D]`` activation probabilities); see the module docstring."""
    k, n_blocks, d = prob.shape
    if len(languages) != k:
        raise LensmapError(f"{len(languages)} language names for {k} languages of statistics")
    if k < 2:
        raise LensmapError("LAPE compares languages: give at least two")
    if not 0 < fraction <= 1:
        raise LensmapError(f"fraction must be in (0, 1] (of all neurons); got {fraction}")
    if not 0 <= tau_quantile <= 1:
        raise LensmapError(f"tau_quantile must be in [0, 1]; got {tau_quantile}")
    prob = prob.to(torch.float64)
    given_tau = tau
    if tau is None:
        tau = float(np.quantile(prob.numpy().ravel(), tau_quantile))
    entropy = language_entropy(prob)
    above = prob > tau  # [K, L, D]
    eligible = above.any(dim=0) & ~entropy.isnan()
    n_keep = round(fraction * n_blocks * d)
    ranked = torch.where(eligible, entropy, torch.full_like(entropy, float("inf"))).flatten()
    order = torch.sort(ranked, stable=True).indices[:n_keep]
    order = order[ranked[order].isfinite()]
    selected = torch.zeros(n_blocks * d, dtype=torch.bool)
    selected[order] = True
    selected = selected.view(n_blocks, d)
    settings = {"tau_quantile": tau_quantile if given_tau is None else None, "tau": tau, "fraction": fraction,
                "n_target": n_keep, "n_selected": int(selected.sum()), "n_eligible": int(eligible.sum()),
                "n_blocks": n_blocks, "d_mlp": d}
    if int(selected.sum()) < n_keep:
        warnings.warn(f"LAPE kept {int(selected.sum())} neurons instead of {n_keep}: only {int(eligible.sum())} "
                      f"exceed τ = {tau:.4g} in some language; lower tau_quantile to consider more", LensmapWarning,
                      stacklevel=2)
    return LapeSelection(list(languages), selected, above & selected[None], entropy, prob, tau, settings)


# --------------------------------------------------------------------------- tidy frames


def language_neuron_frame(selection: LapeSelection, *, model: str = "", site: str = "act") -> pd.DataFrame:
    """``language_neurons.csv``: one row per selected block × neuron × assigned language."""
    k_idx, b_idx, j_idx = selection.assigned.nonzero(as_tuple=True)
    n_langs = selection.assigned.sum(dim=0)
    frame = pd.DataFrame({
        "model": model, "site": site, "block": b_idx.numpy(), "neuron": j_idx.numpy(),
        "language": [selection.languages[i] for i in k_idx.tolist()],
        "probability": selection.probability[k_idx, b_idx, j_idx].numpy(),
        "entropy": selection.entropy[b_idx, j_idx].numpy(),
        "n_languages": n_langs[b_idx, j_idx].numpy(),
    })
    return frame.sort_values(["block", "neuron", "language"], ignore_index=True)[columns("language_neurons")]


def density_frame(selection: LapeSelection, *, model: str = "", site: str = "act") -> pd.DataFrame:
    """``neuron_density.csv``: per block × language the count and the fraction of the block's neurons."""
    _, n_blocks, d = selection.assigned.shape
    rows = []
    for k, lang in enumerate(selection.languages):
        for b in range(n_blocks):
            n = int(selection.assigned[k, b].sum())
            rows.append({"model": model, "site": site, "block": b, "language": lang, "n_neurons": n,
                         "fraction": n / d, "d_mlp": d})
    return pd.DataFrame(rows, columns=columns("neuron_density"))


def overlap_frame(selection: LapeSelection, *, model: str = "", site: str = "act") -> pd.DataFrame:
    """``neuron_overlap.csv``: per ordered language pair, neurons of both, Jaccard and share of the first's."""
    sets = selection.assigned.flatten(1)  # [K, L*D]
    rows = []
    for a, la in enumerate(selection.languages):
        for b, lb in enumerate(selection.languages):
            shared = int((sets[a] & sets[b]).sum())
            na, nb = int(sets[a].sum()), int(sets[b].sum())
            union = int((sets[a] | sets[b]).sum())
            rows.append({"model": model, "site": site, "language_a": la, "language_b": lb, "n_a": na, "n_b": nb,
                         "n_shared": shared, "jaccard": shared / union if union else float("nan"),
                         "share_of_a": shared / na if na else float("nan")})
    return pd.DataFrame(rows, columns=columns("neuron_overlap"))


# --------------------------------------------------------------------------- random control


def random_control(neurons: Mapping[int, Tensor], d_mlp: int, *, exclude: Tensor | None = None,
                   seed: int = 0) -> dict[int, Tensor]:
    """As many random neurons per block as ``neurons`` has there, avoiding ``exclude`` (``[L, D]`` bool).

    The control of a deactivation: same count, same blocks, none of the selected neurons.
    """
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for block, idx in sorted(neurons.items()):
        pool = torch.arange(d_mlp)
        if exclude is not None:
            pool = pool[~exclude[block]]
        if len(pool) < len(idx):
            pool = torch.arange(d_mlp)
        out[block] = pool[torch.randperm(len(pool), generator=gen)[:len(idx)]].sort().values
    return out


# --------------------------------------------------------------------------- key neurons (Lingua Franca)


def max_z(n_languages: int) -> float:
    """The largest z-score (population std) any one of ``n_languages`` values can reach: √(K − 1)."""
    return math.sqrt(max(n_languages - 1, 0))


def key_neuron_z(mean: Tensor, threshold: float = 2.0) -> tuple[Tensor, Tensor]:
    """``[K, L, D]`` mean activations → ``(z [K, L, D], key [K, L, D] bool = z > threshold)``.

    Warns when ``threshold >= √(K − 1)``: no neuron can then be a key neuron.
    """
    k = mean.shape[0]
    if threshold >= max_z(k):
        warnings.warn(f"key-neuron z-scores cannot exceed √(K−1) = {max_z(k):.2f} with {k} languages, so z > "
                      f"{threshold} selects nothing; use LAPE (the default) or more than {int(threshold ** 2) + 1} "
                      "languages", LensmapWarning, stacklevel=2)
    mean = mean.to(torch.float64)
    std = mean.std(dim=0, unbiased=False, keepdim=True)
    z = torch.where(std > 0, (mean - mean.mean(dim=0, keepdim=True)) / std, torch.zeros_like(mean))
    return z, z > threshold


# --------------------------------------------------------------------------- deactivation


def deactivation_frame(
    losses: Mapping[tuple[str, str], Mapping[str, Tensor]],
    base: Mapping[str, Tensor],
    counts: Mapping[tuple[str, str], int],
    *,
    model: str = "",
    site: str = "act",
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """``deactivation.csv`` from per-sequence mean losses.

    ``base[lang]`` is ``[n_seq]`` loss of the unchanged model on ``lang``'s held-out text;
    ``losses[(off, control)][lang]`` the same with ``off``'s neurons (``control = "language"``)
    or as many random ones (``"random"``) switched off; ``counts[(off, control)]`` how many
    neurons were off. The interval is a paired percentile bootstrap over held-out sequences.
    """
    rows = []
    for (off, control), per_lang in losses.items():
        for lang, values in per_lang.items():
            diff = (values - base[lang]).to(torch.float64).numpy()[None, :]
            value, low, high = bootstrap_means(diff, n_boot=n_boot, seed=seed)
            rows.append({"model": model, "site": site, "neurons_of": off, "control": control,
                         "n_neurons": counts[(off, control)], "language": lang,
                         "base_loss": float(base[lang].mean()), "loss": float(values.mean()),
                         "loss_increase": float(value[0]), "ci_low": float(low[0]), "ci_high": float(high[0]),
                         "n_sequences": int(values.numel())})
    return pd.DataFrame(rows, columns=columns("deactivation"))


def diagonal_dominance(frame: pd.DataFrame) -> pd.DataFrame:
    """Per switched-off language: its own loss increase, the largest on another language, and the random control's.

    ``dominant`` is True when the own language rises more than every other language and more
    than under the random control.
    """
    rows = []
    lang = frame[frame["control"] == "language"]
    rand = frame[frame["control"] == "random"]
    for off, part in lang.groupby("neurons_of", sort=False):
        own = part.loc[part["language"] == off, "loss_increase"]
        if own.empty:
            continue
        others = part.loc[part["language"] != off, "loss_increase"]
        control = rand.loc[(rand["neurons_of"] == off) & (rand["language"] == off), "loss_increase"]
        own_v = float(own.iloc[0])
        other_v = float(others.max()) if len(others) else float("nan")
        ctrl_v = float(control.iloc[0]) if len(control) else float("nan")
        rows.append({"neurons_of": off, "own": own_v, "max_other": other_v, "random_own": ctrl_v,
                     "dominant": bool(own_v > other_v and (np.isnan(ctrl_v) or own_v > ctrl_v))})
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- Lingua Franca similarity

SIMILARITY_METRICS = ("within_language", "cross_language", "region_difference",
                      "same_meaning", "different_meaning", "alignment_difference")


def activation_similarity_items(pooled: Tensor) -> dict[str, Tensor]:
    """Per-block, per-item cosine statistics of ``pooled`` ``[K, N, L, D]`` activation vectors.

    ``pooled[k, i]`` is item ``i`` in language ``k`` (item ``i`` is parallel across languages),
    token-pooled. Each vector is L2-normalised. For item ``i`` (averaged over its K versions):

    * ``within_language`` — cosine to the other items of the same language;
    * ``cross_language`` — cosine to every item of the other languages;
    * ``same_meaning`` — cosine to the translations of item ``i``;
    * ``different_meaning`` — cosine to the other items of the other languages.

    ``region_difference = within − cross`` (Lingua Franca's language-region difference) and
    ``alignment_difference = same − different`` (its semantic alignment). Returns
    ``{metric: [L, N]}``.
    """
    k, n, n_blocks, _ = pooled.shape
    if k < 2 or n < 2:
        raise LensmapError(f"activation similarity needs at least 2 languages and 2 items; got {k} and {n}")
    unit = torch.nn.functional.normalize(pooled.to(torch.float32), dim=-1)
    flat = unit.permute(2, 0, 1, 3).reshape(n_blocks, k * n, -1)  # [L, K*N, D], index = lang * n + item
    sims = (flat @ flat.transpose(1, 2)).view(n_blocks, k, n, k, n).to(torch.float64)
    same_lang = torch.eye(k, dtype=torch.bool)[:, None, :, None]
    same_item = torch.eye(n, dtype=torch.bool)[None, :, None, :]
    masks = {
        "within_language": same_lang & ~same_item,
        "cross_language": ~same_lang & torch.ones_like(same_item),
        "same_meaning": ~same_lang & same_item,
        "different_meaning": ~same_lang & ~same_item,
    }
    out = {}
    for name, mask in masks.items():
        m = mask.expand(k, n, k, n).to(torch.float64)
        per_version = (sims * m).sum(dim=(3, 4)) / m.sum(dim=(2, 3))  # [L, K, N]
        out[name] = per_version.mean(dim=1)  # [L, N]
    out["region_difference"] = out["within_language"] - out["cross_language"]
    out["alignment_difference"] = out["same_meaning"] - out["different_meaning"]
    return out


def activation_similarity_frame(pooled: Tensor, *, model: str = "", site: str = "act", n_boot: int = 1000,
                                seed: int = 0) -> pd.DataFrame:
    """``neuron_similarity.csv``: per block and metric the mean over items and its bootstrap interval."""
    stats = activation_similarity_items(pooled)
    frames = []
    n = pooled.shape[1]
    for metric in SIMILARITY_METRICS:
        value, low, high = bootstrap_means(stats[metric].numpy(), n_boot=n_boot, seed=seed)
        frames.append(pd.DataFrame({"model": model, "site": site, "block": np.arange(len(value)), "metric": metric,
                                    "value": value, "ci_low": low, "ci_high": high, "n_items": n}))
    return pd.concat(frames, ignore_index=True)[columns("neuron_similarity")]
