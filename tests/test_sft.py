"""Selective SFT: items, labelled examples, trainable sets, training, compact deltas, resume."""

from __future__ import annotations

import json
import re

import pytest
import torch
import transformers as tf
from conftest import tiny_model

from lensmap.models.handle import ModelHandle
from lensmap.models.identity import model_fingerprint
from lensmap.training import (
    SFTSettings,
    build_example,
    build_examples,
    from_layers,
    from_modules,
    from_recommendation,
    full,
    load_delta,
    load_items,
    random_like,
    sample_items_path,
    save_delta,
    snapshot,
    train_sft,
)
from lensmap.training.delta import DeltaError
from lensmap.training.items import SFTItem, TrainingDataError, check_item_languages, parse_items
from lensmap.training.prompts import IGNORE_INDEX
from lensmap.training.sample_set import SAMPLE_LANGUAGES, build_sample_items
from lensmap.training.selection import SelectionError
from lensmap.training.trainer import COMPLETE_MARKER, TrainingError, latest_complete_checkpoint


@pytest.fixture(scope="module")
def items() -> list[SFTItem]:
    return load_items(sample_items_path())


def _tiny_qwen(tokenizer, layers: int = 4, seed: int = 0) -> ModelHandle:
    torch.manual_seed(seed)
    config = tf.Qwen2Config(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                            num_attention_heads=2, num_key_value_heads=1)
    return ModelHandle.wrap(tf.AutoModelForCausalLM.from_config(config), tokenizer, name=f"tiny-qwen-{seed}")


# --- items --------------------------------------------------------------------------------------

def test_shipped_set_is_what_the_generator_writes_and_is_parallel(items):
    committed = [json.loads(line) for line in sample_items_path().read_text(encoding="utf-8").splitlines()]
    assert committed == build_sample_items()
    by_id: dict[str, dict[str, SFTItem]] = {}
    for item in items:
        by_id.setdefault(item.id, {})[item.language] = item
    assert len(by_id) >= 20 and all(set(group) == set(SAMPLE_LANGUAGES) for group in by_id.values())
    for group in by_id.values():
        assert len({item.answer for item in group.values()}) == 1  # translations share the answer
    for item in items:  # the worked arithmetic reaches the answer, and the last line states it
        assert re.search(rf"= {item.answer}\D", item.reasoning), item
        assert re.search(rf"\D{item.answer}\D*$", item.reasoning.splitlines()[-1]), item
        assert len(item.reasoning.splitlines()) >= 6  # intro, known, sought, step(s), check, result


def test_shipped_items_are_in_their_languages(items):
    check_item_languages(items)  # raises if fastText places any question or reasoning elsewhere


def test_bad_items_get_clear_errors(tmp_path):
    good = {"language": "fr", "instruction": "Solve.", "question": "Combien font deux et deux ?",
            "reasoning": "Deux et deux font quatre.", "answer": "4"}
    with pytest.raises(TrainingDataError, match=r"item 1: missing field\(s\) reasoning"):
        parse_items([{k: v for k, v in good.items() if k != "reasoning"}])
    with pytest.raises(TrainingDataError, match=r"item 2: field\(s\) question are empty"):
        parse_items([good, good | {"question": "   "}])
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(good) + "\n{not json\n")
    with pytest.raises(TrainingDataError, match="line 2: not valid JSON"):
        load_items(path)
    path.write_text("\n\n")
    with pytest.raises(TrainingDataError, match="holds no items"):
        load_items(path)
    with pytest.raises(TrainingDataError, match="does not exist"):
        load_items(tmp_path / "missing.jsonl")
    english = good | {"question": "How many apples does the farmer sell on Monday morning?",
                      "reasoning": "The farmer sells twelve apples on Monday morning at the market."}
    with pytest.raises(TrainingDataError, match=r"1 training item\(s\) are not in their stated language: .*looks en"):
        check_item_languages(parse_items([good, english]))


# --- labelled examples --------------------------------------------------------------------------

def _span_text(tokenizer, example, span: str) -> str:
    return tokenizer.decode([t for t, s in zip(example.input_ids, example.spans) if s == span])


def test_chat_template_example_spans_and_labels(items, qwen_tokenizer):
    item = next(i for i in items if i.language == "zh")
    example = build_example(item, qwen_tokenizer)
    assert _span_text(qwen_tokenizer, example, "I").strip() == item.instruction
    assert _span_text(qwen_tokenizer, example, "Q").strip() == item.question
    assert _span_text(qwen_tokenizer, example, "R").strip() == item.reasoning
    assert _span_text(qwen_tokenizer, example, "A") == f"答案: {item.answer}<|im_end|>"  # learns to stop
    assert "You are Qwen" in _span_text(qwen_tokenizer, example, "P")  # the default system prompt is template
    assert [tok for tok, s in zip(example.input_ids, example.spans) if s in "QRA"] == \
        [label for label in example.labels if label != IGNORE_INDEX]
    only_answer = build_example(item, qwen_tokenizer, loss_spans=["A"])
    kept = [label for label in only_answer.labels if label != IGNORE_INDEX]
    assert qwen_tokenizer.decode(kept) == f"答案: {item.answer}<|im_end|>"
    with pytest.raises(TrainingDataError, match="more than max_length 20"):
        build_example(item, qwen_tokenizer, max_length=20)
    with pytest.raises(TrainingDataError, match="loss_spans must be letters"):
        build_example(item, qwen_tokenizer, loss_spans=["X"])


def test_plain_layout_without_chat_template(items, qwen_tokenizer):
    plain = qwen_tokenizer
    template, plain.chat_template = plain.chat_template, None
    try:
        item = next(i for i in items if i.language == "de")
        example = build_example(item, plain)
        text = plain.decode(example.input_ids)
        assert text == f"{item.instruction}\n\n{item.question}\n\n{item.reasoning}\nAntwort: {item.answer}{plain.eos_token}"
        assert _span_text(plain, example, "A").endswith(plain.eos_token)
    finally:
        plain.chat_template = template


# --- trainable sets -----------------------------------------------------------------------------

def test_layer_sets_count_the_models_own_parameters(qwen_tokenizer):
    handle = _tiny_qwen(qwen_tokenizer, layers=6)
    chosen = from_layers(handle, [5, 4])
    blocks = handle.model.model.layers
    assert chosen.layers == [4, 5]
    assert chosen.trainable_params == sum(p.numel() for i in (4, 5) for p in blocks[i].parameters())
    assert chosen.total_params == sum(p.numel() for p in handle.model.parameters())
    assert chosen.trainable_fraction == pytest.approx(chosen.trainable_params / chosen.total_params)
    with pytest.raises(SelectionError, match=r"layer indices \[6\] are out of range; .* 0..5"):
        from_layers(handle, [4, 6])
    with pytest.raises(SelectionError, match="no parameter of this model is named like"):
        from_modules(handle, ["transformer.h.3."])
    rand = random_like(handle, chosen, seed=1)
    assert len(rand.layers) == 2 and rand.layers != chosen.layers
    assert rand.layers == random_like(handle, chosen, seed=1).layers
    assert full(handle).trainable_params == chosen.total_params


def test_tied_embeddings_are_counted_once():
    model = tiny_model("gemma3")  # ties lm_head to the embedding
    handle = ModelHandle.wrap(model, None)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert full(handle).total_params == sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def test_recommendation_file_is_checked_against_the_model(tmp_path, qwen_tokenizer):
    handle = _tiny_qwen(qwen_tokenizer, layers=4)
    total = sum(p.numel() for p in handle.model.parameters())
    path = tmp_path / "recommendation.json"
    path.write_text(json.dumps({"strategy": "linguamap", "layers": [3], "modules": ["model.layers.3."],
                                "model": {"name": "tiny", "n_layers": 4, "total_params": total}}))
    chosen = from_recommendation(handle, path)
    assert chosen.layers == [3] and chosen.notes["strategy"] == "linguamap"
    path.write_text(json.dumps({"strategy": "linguamap", "layers": [23], "modules": ["model.layers.23."],
                                "model": {"name": "qwen2.5-0.5b", "n_layers": 24, "total_params": 494032768}}))
    with pytest.raises(SelectionError, match=r"made for another model \(qwen2.5-0.5b\): n_layers 24 != 4"):
        from_recommendation(handle, path)
    path.write_text("{")
    with pytest.raises(SelectionError, match="not valid JSON"):
        from_recommendation(handle, path)


# --- training -----------------------------------------------------------------------------------

FAST = dict(learning_rate=3e-3, batch_size=4, per_device_batch_size=2, max_steps=3, mixed_precision="no")


def test_selective_training_changes_only_the_chosen_layers(items, qwen_tokenizer, tmp_path):
    handle = _tiny_qwen(qwen_tokenizer)
    model = handle.model
    model.model.layers[0].mlp.up_proj.weight.requires_grad_(False)  # a caller's flag, to be restored
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    chosen = from_layers(handle, [3])
    examples = build_examples(items[:4], qwen_tokenizer)
    result = train_sft(handle, examples, chosen, SFTSettings(**FAST), tmp_path / "work", progress=False)
    assert result.steps == 3 and len(result.history) == 3 and result.history["loss"].notna().all()
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all(name.startswith("model.layers.3.") for name in changed)  # frozen: bit-identical
    assert {name for name in before if name.startswith("model.layers.3.")} == changed
    assert not model.training and not model.model.layers[0].mlp.up_proj.weight.requires_grad
    assert model.model.layers[3].mlp.up_proj.weight.requires_grad


def test_mixed_precision_training_leaves_the_model_running_in_its_own_precision(items, qwen_tokenizer, tmp_path):
    # The engine wraps forward in bf16 autocast while training; left in place, every later
    # evaluation of the tuned model would run in bf16 while the base ran in float32.
    handle = _tiny_qwen(qwen_tokenizer)
    model = handle.model
    ids = torch.tensor([[5, 17, 300, 4000, 12]])
    with torch.no_grad():
        before = model(ids, output_hidden_states=True).hidden_states[3]  # block 2's output: not trained
    settings = SFTSettings(**FAST | {"mixed_precision": "bf16"})
    train_sft(handle, build_examples(items[:4], qwen_tokenizer), from_layers(handle, [3]), settings,
              tmp_path / "work", progress=False)
    assert "forward" not in vars(model)  # no instance-level wrapper left behind
    with torch.no_grad():
        after = model(ids, output_hidden_states=True)
    assert after.logits.dtype == torch.float32
    assert torch.equal(after.hidden_states[3], before)  # frozen blocks: bit-identical float32 outputs


def test_training_lowers_the_loss_on_its_batch(items, qwen_tokenizer, tmp_path):
    handle = _tiny_qwen(qwen_tokenizer)
    examples = build_examples(items[:2], qwen_tokenizer)
    settings = SFTSettings(**FAST | {"max_steps": 12, "batch_size": 2, "learning_rate": 1e-2})
    result = train_sft(handle, examples, full(handle), settings, tmp_path / "work", progress=False)
    losses = result.history["loss"].tolist()
    assert losses[-1] < losses[0] - 0.5  # nats; frozen or broken training stays at ln(vocab) ≈ 11.9


def test_lora_on_the_chosen_layers_merges_back(items, qwen_tokenizer, tmp_path):
    handle = _tiny_qwen(qwen_tokenizer)
    model = handle.model
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    settings = SFTSettings(**FAST | {"lora_r": 4})
    train_sft(handle, build_examples(items[:4], qwen_tokenizer), from_layers(handle, [2]), settings,
              tmp_path / "work", lora=True, progress=False)
    assert not any("lora" in name for name, _ in model.named_parameters())  # merged, plain model again
    changed = {name for name, p in model.named_parameters() if not torch.equal(p, before[name])}
    assert changed and all(name.startswith("model.layers.2.") and name.endswith("proj.weight") for name in changed)


def test_bad_settings_are_refused(items, qwen_tokenizer, tmp_path):
    handle = _tiny_qwen(qwen_tokenizer)
    examples = build_examples(items[:2], qwen_tokenizer)
    with pytest.raises(TrainingError, match="per_device_batch_size \\(8\\) is larger than the effective batch_size"):
        train_sft(handle, examples, full(handle), SFTSettings(per_device_batch_size=8, batch_size=4), tmp_path)
    with pytest.raises(TrainingError, match="no training examples"):
        train_sft(handle, [], full(handle), SFTSettings(), tmp_path)


# --- compact deltas and resuming ----------------------------------------------------------------

def test_delta_round_trip_and_refusals(items, qwen_tokenizer, tmp_path):
    handle = _tiny_qwen(qwen_tokenizer)
    base_state = {name: p.detach().clone() for name, p in handle.model.state_dict().items()}
    fingerprint = model_fingerprint(handle)
    before = snapshot(handle.model)
    train_sft(handle, build_examples(items[:4], qwen_tokenizer), from_layers(handle, [1, 3]), SFTSettings(**FAST),
              tmp_path / "work", progress=False)
    manifest = save_delta(handle, before, tmp_path / "delta", fingerprint)
    assert set(manifest["tensors"]) == {n for n in base_state if n.startswith(("model.layers.1.", "model.layers.3."))}
    fresh = _tiny_qwen(qwen_tokenizer)
    assert all(torch.equal(fresh.model.state_dict()[n], t) for n, t in base_state.items())
    load_delta(fresh, tmp_path / "delta")
    tuned = handle.model.state_dict()
    assert all(torch.equal(t, tuned[n]) for n, t in fresh.model.state_dict().items())
    with pytest.raises(DeltaError, match="parameter .* is not the base value"):
        load_delta(fresh, tmp_path / "delta")  # already applied
    other = _tiny_qwen(qwen_tokenizer, seed=1)
    with pytest.raises(DeltaError, match="another base model"):
        load_delta(other, tmp_path / "delta")
    weights = tmp_path / "delta" / "changed.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(DeltaError, match="missing or corrupt"):
        load_delta(_tiny_qwen(qwen_tokenizer), tmp_path / "delta")
    with pytest.raises(DeltaError, match="not a tuned-weights directory"):
        load_delta(_tiny_qwen(qwen_tokenizer), tmp_path)


def test_resume_continues_from_the_last_complete_checkpoint(items, qwen_tokenizer, tmp_path):
    from transformers import TrainerCallback

    class StopAfterTwo(TrainerCallback):  # as if the run were killed after checkpoint-2
        def on_step_end(self, args, state, control, **kwargs):
            control.should_training_stop = state.global_step >= 2

    examples = build_examples(items[:8], qwen_tokenizer)
    settings = SFTSettings(**FAST | {"max_steps": 4, "save_steps": 1})
    straight = _tiny_qwen(qwen_tokenizer)
    train_sft(straight, examples, from_layers(straight, [3]), settings, tmp_path / "a", progress=False)

    work = tmp_path / "b"
    first = _tiny_qwen(qwen_tokenizer)
    stopped = train_sft(first, examples, from_layers(first, [3]), settings, work, progress=False,
                        callbacks=[StopAfterTwo()])
    assert stopped.steps == 2 and (work / "checkpoint-2" / COMPLETE_MARKER).is_file()
    (work / "checkpoint-9").mkdir()  # half-written by a killed run: ignored and removed
    assert latest_complete_checkpoint(work) == work / "checkpoint-2" and not (work / "checkpoint-9").exists()
    resumed = _tiny_qwen(qwen_tokenizer)
    result = train_sft(resumed, examples, from_layers(resumed, [3]), settings, work, progress=False)
    assert result.resumed_from.endswith("checkpoint-2") and result.steps == 4
    for (name, a), b in zip(straight.model.named_parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)


# --- lensmap sft, end to end on a tiny model -----------------------------------------------------

def _tiny_model_dir(tmp_path, tokenizer) -> str:
    handle = _tiny_qwen(tokenizer)
    handle.model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    return str(tmp_path / "tiny")


def test_sft_command_end_to_end(tmp_path, qwen_tokenizer):
    from lensmap.cli import main
    from lensmap.models.loading import load_model

    model_dir = _tiny_model_dir(tmp_path, qwen_tokenizer)
    out = tmp_path / "run"
    config = tmp_path / "sft.yaml"
    config.write_text(
        f"model: {model_dir}\noutput: {out}\nselect: {{layers: [3]}}\nlanguages: [fr, zh]\n"
        "variants: [selective, full, random, lora]\n"
        "evaluation: {benchmarks: [mgsm], languages: [fr, zh], n_items: 1, scenarios: [code_switched],"
        " generation: {max_new_tokens: 2}}\n"
        "training: {max_steps: 2, batch_size: 4, per_device_batch_size: 4, learning_rate: 1e-3, mixed_precision: 'no'}\n"
        "probes: [{kind: cloze, target: fr, n: 3}]\nlens_languages: [en, fr]\n")
    assert main(["sft", str(config), "-q"]) == 0
    assert not (tmp_path / "run.work").exists()  # work dir removed after success
    records = {r["variant"]: r for r in json.loads((out / "variants.json").read_text())}
    assert set(records) == {"selective", "full", "random", "lora"}
    assert records["selective"]["trainable"]["layers"] == [3] and records["random"]["trainable"]["layers"] != [3]
    assert all(r["frozen_bit_identical"] and r["steps"] == 2 for r in records.values())
    assert records["lora"]["optimised_params"] < records["selective"]["optimised_params"]
    comparison = __import__("pandas").read_csv(out / "sft_comparison.csv")
    assert list(comparison.columns) == ["variant", "benchmark", "scenario", "language", "n", "accuracy",
                                        "language_consistency", "accuracy_ci_low", "accuracy_ci_high",
                                        "choice_accuracy", "choice_ci_low", "choice_ci_high"]
    assert (comparison["accuracy_ci_low"] <= comparison["accuracy"]).all()
    assert sorted(comparison["variant"].unique()) == ["base", "full", "lora", "random", "selective"]
    assert len(comparison) == 5 * 2 and (comparison["n"] == 1).all()
    mass = __import__("pandas").read_csv(out / "language_mass.csv")
    assert set(mass["variant"]) == {"base", "selective", "full", "random", "lora"}
    assert (out / "report.html").stat().st_size > 10_000
    for variant in ("selective", "lora"):  # each delta loads onto a fresh base and changes only layer 3
        handle = load_model(model_dir, dtype="float32", self_check=False)
        manifest = load_delta(handle, out / "weights" / variant)
        assert manifest["tensors"] and all(name.startswith("model.layers.3.") for name in manifest["tensors"])


def test_sft_config_errors_are_clear(tmp_path):
    from lensmap.config.sft import parse_sft_config
    from lensmap.errors import ConfigError

    base = {"model": "m", "output": str(tmp_path / "o")}
    with pytest.raises(ConfigError, match="select needs exactly one of"):
        parse_sft_config(base | {"select": {}})
    with pytest.raises(ConfigError, match="variants\\[1\\] must be one of selective, full, random, lora; got 'half'"):
        parse_sft_config(base | {"select": {"layers": [1]}, "variants": ["full", "half"]})
    with pytest.raises(ConfigError, match="select.recommendation: file .* does not exist"):
        parse_sft_config(base | {"select": {"recommendation": str(tmp_path / "nope.json")}})
    with pytest.raises(ConfigError, match="unknown key 'lr' in training"):
        parse_sft_config(base | {"select": {"layers": [1]}, "training": {"lr": 1e-3}})
    with pytest.raises(ConfigError, match="training: per_device_batch_size \\(32\\) is larger"):
        parse_sft_config(base | {"select": {"layers": [1]}, "training": {"per_device_batch_size": 32}})


def test_mmlu_items_convert_to_training_items(tmp_path):
    from lensmap.evaluation.benchmarks import sample_path
    from lensmap.training.items import items_from_mmlu

    items = items_from_mmlu(sample_path("mmlu", "fr"), "fr")
    first = items[0]
    assert len(items) == 20 and first.answer == "C" and first.language == "fr"
    assert first.question.endswith("D. L'océan Arctique") and first.reasoning == "La bonne option est C : L'océan Pacifique."
    with pytest.raises(TrainingDataError, match="no MMLU reasoning template in 'sw'"):
        items_from_mmlu(sample_path("mmlu", "fr"), "sw")


def test_a_stopped_run_resumes_only_with_the_same_settings(tmp_path, items):
    from lensmap.config.sft import parse_sft_config
    from lensmap.errors import LensmapError
    from lensmap.runs.sft import check_work_settings

    work = tmp_path / "o.work"
    config = parse_sft_config({"model": "m", "output": str(tmp_path / "o"), "select": {"layers": [1]}})
    check_work_settings(work, config, items[:12])
    check_work_settings(work, config, items[:12])  # the same settings: resumes
    more = parse_sft_config({"model": "m", "output": str(tmp_path / "o"), "select": {"layers": [1]},
                             "variants": ["selective", "full"]})
    check_work_settings(work, more, items[:12])  # another variant may be added to a stopped run
    other = parse_sft_config({"model": "m", "output": str(tmp_path / "o"), "select": {"layers": [1]},
                              "training": {"learning_rate": 3e-5}})
    with pytest.raises(LensmapError, match=r"other settings \(changed: training\).*Delete .*o\.work"):
        check_work_settings(work, other, items[:12])
    with pytest.raises(LensmapError, match=r"changed: items_sha256"):
        check_work_settings(work, config, items[:11])
