"""Every plotly figure lensmap draws, one module per subject, all drawn from saved frames.

* :mod:`~lensmap.figures.backbone` — language mass, entropy and answer probability per layer;
* :mod:`~lensmap.figures.lens_eval` — tuned lens against logit lens on held-out text;
* :mod:`~lensmap.figures.phases` — cross-lingual similarity, phase bands, the recommendation;
* :mod:`~lensmap.figures.evaluation` — the four-scenario evaluation;
* :mod:`~lensmap.figures.sft` — selective SFT against its baselines;
* :mod:`~lensmap.figures.neurons` — language-specific neurons: density, overlap, deactivation, similarity;
* :mod:`~lensmap.figures.sweeps` — layer-sweep drop curves, the perception/production profile, patching;
* :mod:`~lensmap.figures.style` — colours and layout every figure shares;
* :mod:`~lensmap.figures.html` — the self-contained HTML report.

This package is ``lensmap.plots`` too: ``lm.plots.mass_heatmap(result.mass)``.
"""

from lensmap.figures.backbone import answer_curves, default_sections, entropy_curve, mass_curves, mass_heatmap
from lensmap.figures.evaluation import evaluation_sections, failure_modes, scenario_language_heatmap
from lensmap.figures.html import ReportSection, render_report, write_report
from lensmap.figures.lens_eval import eval_section, lens_eval_curves
from lensmap.figures.neurons import (
    deactivation_heatmap,
    density_curves,
    density_heatmap,
    neuron_section,
    overlap_heatmap,
)
from lensmap.figures.neurons import similarity_curves as neuron_similarity_curves
from lensmap.figures.phases import add_phase_bands, phase_curves, phase_section, similarity_curves
from lensmap.figures.sft import language_heatmap, mass_difference, scenario_bars, sft_sections, training_curves
from lensmap.figures.style import BUCKETS, LANGUAGE_COLORS, language_color, language_order
from lensmap.figures.sweeps import drop_curves_figure, patching_figure, profile_figure, sweep_section

__all__ = [
    "BUCKETS", "LANGUAGE_COLORS", "ReportSection", "add_phase_bands", "answer_curves", "default_sections",
    "entropy_curve", "eval_section", "evaluation_sections", "failure_modes", "language_color", "language_heatmap",
    "language_order", "lens_eval_curves", "mass_curves", "mass_difference", "mass_heatmap", "phase_curves",
    "phase_section", "render_report", "scenario_bars", "scenario_language_heatmap", "sft_sections",
    "similarity_curves", "training_curves", "write_report",
    "deactivation_heatmap", "density_curves", "density_heatmap", "neuron_section", "neuron_similarity_curves",
    "overlap_heatmap",
    "drop_curves_figure", "patching_figure", "profile_figure", "sweep_section",
]
