"""The four-scenario evaluation: loaders, samples, templates, extraction, language, summaries, end to end."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import transformers as tf

from lensmap.evaluation import BenchItem, build_prompt, evaluate_model, judge, load_benchmark, summarize
from lensmap.evaluation.benchmarks import BenchmarkError, load_mgsm, load_mmlu, load_xquad
from lensmap.evaluation.generation import GenerationSettings, generate, generate_responses
from lensmap.evaluation.protocol import build_items, score_responses, settings_from
from lensmap.evaluation.scenarios import TemplateError
from lensmap.evaluation.scoring import extract_choice, extract_number, extract_span, parse_number, span_scores
from lensmap.models.handle import ModelHandle

LANGS = ("en", "fr", "de", "zh", "ja", "ru")


# --- answer extraction --------------------------------------------------------------------------

@pytest.mark.parametrize("response, expected", [
    ("Dolphins are mammals. The answer is (B)", "B"),
    ("Réflexion…\nRéponse : D.", "D"),
    ("分析如下。\n答案：C", "C"),
    ("Ответ: A", "A"),
    ("I am sure it is (C) here", "C"),
    ("A dolphin is a mammal.", None),  # an article is not a choice
    ("no idea", None),
])
def test_extract_choice(response, expected):
    assert extract_choice(response) == expected


def test_extract_choice_by_option_text():
    assert extract_choice("It must be the Dolphin.", ("Shark", "Dolphin", "Trout", "Octopus")) == "B"
    assert extract_choice("Shark or Dolphin?", ("Shark", "Dolphin", "Trout", "Octopus")) is None  # ambiguous


@pytest.mark.parametrize("response, expected", [
    ("答案是 42", 42.0),
    ("3 + 4 = 7, then 7 × 2 = 14.\nAnswer: 14", 14.0),
    ("Antwort: 2.850 Kilometer", 2850.0),
    ("Réponse : 1 234", 1234.0),
    ("So the total is 1,234 and then we add 6 more: 1,240", 1240.0),
    ("it costs 0.5 euros", 0.5),
    ("答え：-3", -3.0),
    ("no number at all", None),
])
def test_extract_number(response, expected):
    assert extract_number(response) == expected


def test_parse_number_forms():
    assert parse_number("3,5") == 3.5 and parse_number("1.234.567") == 1234567 and parse_number("12") == 12
    assert parse_number("abc") is None


def test_span_scores_by_hand():
    assert span_scores("the Black Forest", ("The black forest",)) == (1.0, 1.0)  # casing and article
    em, f1 = span_scores("黑森林", ("德国的黑森林",))  # characters: P = 3/3, R = 3/6
    assert em == 0.0 and f1 == pytest.approx(2 * 1 * 0.5 / 1.5)
    em, f1 = span_scores("in the city of Paris", ("Paris",))  # tokens in, city, of, paris: P = 1/4, R = 1
    assert f1 == pytest.approx(2 * 0.25 / 1.25)
    assert extract_span("Le fleuve naît là.\nRéponse : en Forêt-Noire.") == "en Forêt-Noire"


# --- language and failure modes -----------------------------------------------------------------

FR_ITEM = BenchItem("mgsm", "fr", "x", "Combien font 40 et 17 ?", answer="57")


@pytest.mark.parametrize("response, language, ok, mode", [
    ("On ajoute 40 et 17, ce qui donne 57.\nRéponse : 57", "fr", True, "ok"),
    ("We add 40 and 17, which gives 57.\nAnswer: 57", "en", False, "consistency_bottleneck"),
    ("On ajoute 40 et 17, ce qui donne 56.\nRéponse : 56", "fr", True, "transfer_bottleneck"),
    ("We add 40 and 17, which gives 56.\nAnswer: 56", "en", False, "both"),
    ("40 + 17 = 57", "unk", None, "undetectable_language"),
    ("   ", "unk", None, "empty"),
])
def test_judge_language_and_failure_mode(response, language, ok, mode):
    j = judge(FR_ITEM, response)
    assert (j.language, j.language_ok, j.failure_mode) == (language, ok, mode)


def test_script_decides_short_chinese_and_langdetect_is_recorded():
    item = BenchItem("mgsm", "zh", "x", "问题", answer="14")
    j = judge(item, "笔记本7欧元，包7欧元，所以一共是7 + 7 = 14欧元。")  # fastText alone says Italian
    assert (j.language, j.language_method, j.language_ok, j.correct) == ("zh", "script", True, True)
    assert j.langdetect in ("zh", "ko", "ja", "unk")  # the second opinion is recorded, not decisive


def test_summary_fractions_by_hand():
    rows = [(FR_ITEM, "native", "p")] * 6
    responses = ["Donc 57.\nRéponse : 57", "Il reste donc cinquante-sept pommes dans le panier, soit 57.", "So it is 57.\nAnswer: 57",
                 "Donc 50.\nRéponse : 50", "57", ""]
    items = score_responses(rows, responses)
    assert items["failure_mode"].tolist() == ["ok", "ok", "consistency_bottleneck", "transfer_bottleneck",
                                              "undetectable_language", "empty"]
    s = summarize(items).iloc[0]
    assert s["n"] == 6 and s["accuracy"] == pytest.approx(4 / 6)  # 57 four times
    assert s["language_consistency"] == pytest.approx(3 / 4)  # of the 4 judged responses
    assert s["consistency_bottleneck"] == pytest.approx(1 / 6) and s["transfer_bottleneck"] == pytest.approx(1 / 6)
    assert (s["n_undetectable"], s["n_empty"]) == (1, 1)


# --- loaders and shipped samples ----------------------------------------------------------------

def test_shipped_samples_are_parallel_across_six_languages():
    for benchmark in ("mmlu", "mgsm", "xquad"):
        sets = {lang: load_benchmark(benchmark, lang) for lang in LANGS}
        assert all(len(items) == 20 for items in sets.values()), benchmark
        if benchmark != "xquad":
            answers = {lang: [i.answer for i in items] for lang, items in sets.items()}
            assert all(a == answers["en"] for a in answers.values()), benchmark
        else:
            ids = {lang: [i.id for i in items] for lang, items in sets.items()}
            assert all(v == ids["en"] for v in ids.values())
            assert all(span in item.context for items in sets.values() for item in items for span in item.answers)
    assert {i.answer for i in load_benchmark("mmlu", "en")} == set("ABCD")


def test_loaders_read_upstream_variants(tmp_path):
    plain = tmp_path / "mmlu.csv"  # upstream MMLU: no header
    plain.write_text('"What is 2+2?",3,4,5,6,B\n')
    assert load_mmlu(plain, "en")[0].answer == "B"
    jsonl = tmp_path / "mmlu.jsonl"
    jsonl.write_text(json.dumps({"question": "Q?", "choices": ["a", "b", "c", "d"], "answer": 3, "subject": "x"}) + "\n")
    item = load_mmlu(jsonl, "en")[0]
    assert (item.answer, item.options[3], item.subject) == ("D", "d", "x")
    parquet = tmp_path / "mmlu.parquet"
    pd.DataFrame([{"Question": "Q?", "A": "a", "B": "b", "C": "c", "D": "d", "Answer": "c"}]).to_parquet(parquet)
    assert load_mmlu(parquet, "en")[0].answer == "C"
    mgsm = tmp_path / "mgsm_fr.tsv"
    mgsm.write_text("Combien ?\t1,250\n")
    assert load_benchmark("mgsm", "fr", str(tmp_path / "mgsm_{lang}.tsv"))[0].answer == "1250"


def test_bad_benchmark_files_get_clear_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("Question,A,B,C,Answer\nQ?,a,b,c,A\n")
    with pytest.raises(BenchmarkError, match="row 1 lacks options A–D"):
        load_mmlu(bad, "en")
    bad.write_text("Question,A,B,C,D,Answer\nQ?,a,b,c,d,E\n")
    with pytest.raises(BenchmarkError, match="the answer must be a letter A–D .* got 'E'"):
        load_mmlu(bad, "en")
    tsv = tmp_path / "m.tsv"
    tsv.write_text("How many?\tmany\n")
    with pytest.raises(BenchmarkError, match="line 1: the answer 'many' is not a number"):
        load_mgsm(tsv, "en")
    js = tmp_path / "x.json"
    js.write_text(json.dumps({"data": [{"paragraphs": [{"context": "c", "qas": [{"question": "q", "answers": []}]}]}]}))
    with pytest.raises(BenchmarkError, match="needs 'question' and at least one answer"):
        load_xquad(js, "en")
    with pytest.raises(BenchmarkError, match="does not exist; put the file there"):
        load_benchmark("mgsm", "fr", str(tmp_path / "nope_{lang}.tsv"))
    with pytest.raises(BenchmarkError, match="shipped mgsm sample has no 'sw' file"):
        load_benchmark("mgsm", "sw")


def test_templates():
    item = load_benchmark("mgsm", "ja")[0]
    native, switched = build_prompt(item, "native"), build_prompt(item, "code_switched")
    assert native.startswith("次の問題を解いてください") and item.question in native
    assert switched.startswith("Solve the following problem.") and item.question in switched
    assert "in Japanese." in build_prompt(item, "code_switched_explicit")
    assert "A baker makes 36 loaves" in build_prompt(item, "english_distractor")
    assert build_prompt(item, "native", instructions={"mgsm": {"ja": "解いて。"}}).startswith("解いて。")
    swahili = BenchItem("mgsm", "sw", "x", "Swali?", answer="1")
    with pytest.raises(TemplateError, match="no mgsm instruction in 'sw'.*evaluation.instructions"):
        build_prompt(swahili, "native")
    assert build_prompt(swahili, "code_switched").startswith("Solve")  # English instruction needs none


# --- generation and the protocol on a tiny model ------------------------------------------------

@pytest.fixture(scope="module")
def tiny_qwen(qwen_tokenizer) -> ModelHandle:
    torch.manual_seed(0)
    config = tf.Qwen2Config(vocab_size=len(qwen_tokenizer), hidden_size=16, intermediate_size=32,
                            num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)
    return ModelHandle.wrap(tf.AutoModelForCausalLM.from_config(config).eval(), qwen_tokenizer, name="tiny")


def test_batched_generation_matches_one_by_one(tiny_qwen):
    prompts = ["Short?", "A much longer prompt, so that the batch needs left padding here.", "中文的问题？"]
    settings = GenerationSettings(max_new_tokens=6, batch_size=3, stop=[])
    side, pad = tiny_qwen.tokenizer.padding_side, tiny_qwen.tokenizer.pad_token
    batched = generate(tiny_qwen, prompts, settings, progress=False)
    single = [generate(tiny_qwen, [p], settings, progress=False)[0] for p in prompts]
    assert batched == single and all(batched)  # left padding does not change any row
    assert (tiny_qwen.tokenizer.padding_side, tiny_qwen.tokenizer.pad_token) == (side, pad)  # restored


def test_evaluate_model_end_to_end(tiny_qwen, tmp_path):
    settings = {"benchmarks": ["mgsm", "xquad"], "languages": ["fr", "zh"], "n_items": 2,
                "scenarios": ["native", "code_switched"], "generation": {"max_new_tokens": 4}}
    items, summary = evaluate_model(tiny_qwen, settings, progress=False)
    assert len(items) == 2 * 2 * 2 * 2 and len(summary) == 2 * 2 * 2
    assert set(items["failure_mode"]) <= {"ok", "consistency_bottleneck", "transfer_bottleneck", "both", "empty",
                                          "undetectable_language"}
    again, _ = evaluate_model(tiny_qwen, settings, progress=False)
    assert again["response"].tolist() == items["response"].tolist()  # greedy and seeded: repeatable
    for column in ("benchmark", "scenario", "language", "n", "accuracy", "language_consistency",
                   "transfer_bottleneck", "consistency_bottleneck"):
        assert column in summary.columns


def test_eval_command_writes_outputs(tmp_path, qwen_tokenizer, tiny_qwen):
    from lensmap.cli import main

    tiny_qwen.model.save_pretrained(tmp_path / "tiny")
    qwen_tokenizer.save_pretrained(tmp_path / "tiny")
    config = tmp_path / "eval.yaml"
    config.write_text(f"model: {tmp_path / 'tiny'}\noutput: {tmp_path / 'out'}\ndtype: float32\n"
                      "evaluation: {benchmarks: [mmlu], languages: [de], n_items: 2, scenarios: [native],"
                      " generation: {max_new_tokens: 3}}\n")
    assert main(["eval", str(config), "-q"]) == 0
    summary = pd.read_csv(tmp_path / "out" / "eval_summary.csv")
    assert summary[["benchmark", "scenario", "language", "n"]].values.tolist() == [["mmlu", "native", "de", 2]]
    assert (tmp_path / "out" / "report.html").stat().st_size > 10_000
    config.write_text(f"model: {tmp_path / 'tiny'}\noutput: {tmp_path / 'out2'}\n"
                      "evaluation: {benchmarks: [mmlu], scenarios: [native, polite]}\n")
    assert main(["eval", str(config), "-q"]) == 2
    assert not (tmp_path / "out2").exists()


def test_report_with_evaluation_section(tmp_path, qwen_tokenizer, tiny_qwen):
    from lensmap.cli import main

    tiny_qwen.model.save_pretrained(tmp_path / "tiny")
    qwen_tokenizer.save_pretrained(tmp_path / "tiny")
    config = tmp_path / "report.yaml"
    config.write_text(f"model: {tmp_path / 'tiny'}\nlanguages: [en, fr]\noutput: {tmp_path / 'out'}\ndtype: float32\n"
                      "probes: [{kind: cloze, target: fr, n: 3}]\nphases: {enabled: false}\nevaluate: true\n"
                      "evaluation: {benchmarks: [mgsm], languages: [fr], n_items: 2, scenarios: [code_switched],"
                      " generation: {max_new_tokens: 3}}\n")
    assert main(["report", str(config), "-q"]) == 0
    summary = pd.read_csv(tmp_path / "out" / "eval_summary.csv")
    assert summary[["benchmark", "scenario", "language", "n"]].values.tolist() == [["mgsm", "code_switched", "fr", 2]]
    assert "Evaluation: mgsm" in (tmp_path / "out" / "report.html").read_text()
    assert not (tmp_path / "out" / "similarity.csv").exists()  # phases switched off


def test_responses_that_hit_max_new_tokens_are_flagged(tiny_qwen):
    prompts = ["Short?", "中文的问题？"]
    settings = GenerationSettings(max_new_tokens=3, batch_size=2, stop=[])
    # A random model does not emit its end-of-turn token in 3 steps: every response is cut short.
    assert [r.truncated for r in generate_responses(tiny_qwen, prompts, settings, progress=False)] == [True, True]
    config = tiny_qwen.model.generation_config
    old = config.eos_token_id
    config.eos_token_id = list(range(tiny_qwen.model.config.vocab_size))  # any token ends the turn
    try:
        stopped = generate_responses(tiny_qwen, prompts, settings, progress=False)
    finally:
        config.eos_token_id = old
    assert [r.truncated for r in stopped] == [False, False]
    rows = build_items(settings_from({"benchmarks": ["mgsm"], "languages": ["fr"], "n_items": 2,
                                      "scenarios": ["native"]}))
    items = score_responses(rows, ["Réponse : 3", "Réponse : 4"], truncated=[True, False])
    assert items["truncated"].tolist() == [True, False] and summarize(items)["n_truncated"].tolist() == [1]


# --- multiple choice by option likelihood -------------------------------------------------------

def _brute_logprob(handle, context: str, continuation: str) -> float:
    """Sum of log p(continuation tokens) from the model's own full logits, one sequence at a time."""
    tok = handle.tokenizer
    ctx = tok(context, add_special_tokens=False)["input_ids"]
    cont = tok(continuation, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = handle.model(torch.tensor([ctx + cont])).logits[0].float()
    logprobs = torch.log_softmax(logits, dim=-1)
    return float(sum(logprobs[len(ctx) - 1 + s, t] for s, t in enumerate(cont)))


def test_option_likelihood_equals_the_models_own_logits(tiny_qwen):
    from lensmap.evaluation.likelihood import continuation_logprobs

    contexts = ["Question: 2+2?\nAnswer:", "A much longer context, so that the batch is padded on the right.\nRéponse :",
                "问题？答案："]
    continuations = [[" A", " B", " C", " D"],  # one token each: one shared pass
                     [" four", " quatre et demi", " B"],  # several tokens: one pass per option
                     ["A", "B"]]
    got = continuation_logprobs(tiny_qwen, contexts, continuations, batch_size=2)
    want = [[_brute_logprob(tiny_qwen, c, o) for o in opts] for c, opts in zip(contexts, continuations)]
    assert len(tiny_qwen.tokenizer(" quatre et demi", add_special_tokens=False)["input_ids"]) > 1
    for g, w in zip(got, want):
        assert g == pytest.approx(w, abs=1e-4)
    assert len({round(v, 3) for v in got[0]}) > 1  # the options really differ


def test_mmlu_is_also_scored_by_option_likelihood(tiny_qwen):
    settings = {"benchmarks": ["mmlu", "mgsm"], "languages": ["fr"], "n_items": 3, "scenarios": ["native"],
                "generation": {"max_new_tokens": 2}}
    items, summary = evaluate_model(tiny_qwen, settings, progress=False)
    mmlu = items[items["benchmark"] == "mmlu"]
    assert set(mmlu["choice_prediction"]) <= set("ABCD") and mmlu["choice_prediction"].notna().all()
    assert items[items["benchmark"] == "mgsm"]["choice_prediction"].isna().all()
    assert (mmlu["choice_correct"] == (mmlu["choice_prediction"] == mmlu["gold"])).all()
    row = summary[summary["benchmark"] == "mmlu"].iloc[0]
    assert row["choice_accuracy"] == pytest.approx(mmlu["choice_correct"].astype(bool).mean())
    assert row["choice_ci_low"] <= row["choice_accuracy"] <= row["choice_ci_high"]
    assert np.isnan(summary[summary["benchmark"] == "mgsm"].iloc[0]["choice_accuracy"])
    off, _ = evaluate_model(tiny_qwen, {**settings, "choice_scoring": False}, progress=False)
    assert off["choice_prediction"].isna().all()


def test_wilson_interval_by_hand():
    from lensmap.metrics.intervals import wilson

    low, high = wilson(8, 10)  # textbook value: 0.490 .. 0.943
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)
    assert wilson(0, 5)[0] == 0.0 and 0 < wilson(0, 5)[1] < 0.5 and wilson(5, 5)[1] == 1.0
    assert all(np.isnan(wilson(0, 0)))
    with pytest.raises(ValueError):
        wilson(6, 5)
