"""The four-scenario evaluation: task accuracy and language consistency on MMLU, MGSM and XQuAD."""

from lensmap.evaluation.benchmarks import BENCHMARKS, BenchItem, load_benchmark
from lensmap.evaluation.generation import GenerationSettings, Response, generate, generate_responses
from lensmap.evaluation.protocol import EvalSettings, evaluate_model, score_responses, summarize
from lensmap.evaluation.scenarios import SCENARIOS, build_prompt
from lensmap.evaluation.scoring import FAILURE_MODES, judge

__all__ = ["BENCHMARKS", "BenchItem", "EvalSettings", "FAILURE_MODES", "GenerationSettings", "Response", "SCENARIOS",
           "build_prompt", "evaluate_model", "generate", "generate_responses", "judge", "load_benchmark",
           "score_responses", "summarize"]
