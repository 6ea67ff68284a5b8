"""Model loading, the zoo's join-and-verify, and the real zoo models' self-check."""

from __future__ import annotations

import hashlib

import pytest
import torch

from lensmap.errors import ModelLoadError
from lensmap.models import zoo
from lensmap.models.loading import load_model, resolve_dtype, resolve_model_source
from lensmap.models.zoo import ZooEntry


@pytest.fixture
def fake_zoo(tmp_path, monkeypatch):
    """A two-chunk zoo entry whose chunks live in a throwaway importable package."""
    pkg = tmp_path / "site" / "fake_chunks"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    parts = [b"GGUF" + bytes(range(200)), bytes(range(100, 250)) * 3]
    for i, part in enumerate(parts):
        (pkg / "data" / f"p{i}.bin").write_bytes(part)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("LENSMAP_CACHE", str(tmp_path / "cache"))
    whole = b"".join(parts)

    def make(sha=hashlib.sha256(whole).hexdigest(), size=len(whole), module="fake_chunks"):
        entry = ZooEntry("fake-model", "test", "qwen2", 2, ("fake-chunks==1.0",),
                         ((module, "data/p0.bin"), (module, "data/p1.bin")), size, sha)
        monkeypatch.setitem(zoo.ZOO, entry.name, entry)
        return entry

    return make, whole


def test_zoo_joins_and_verifies_chunks(fake_zoo):
    make, whole = fake_zoo
    make()
    path = zoo.zoo_gguf_path("fake-model")
    assert path.read_bytes() == whole
    assert zoo.zoo_gguf_path("fake-model") == path  # second call uses the verified stamp


def test_zoo_rejects_a_wrong_digest_and_leaves_nothing(fake_zoo):
    make, _ = fake_zoo
    make(sha="0" * 64)
    with pytest.raises(ModelLoadError, match="sha256 .* expected 0000"):
        zoo.zoo_gguf_path("fake-model")
    assert not list((zoo.cache_dir() / "zoo").glob("*.gguf*"))


def test_missing_zoo_package_gives_install_command(fake_zoo):
    make, _ = fake_zoo
    make(module="not_installed_chunks_pkg")
    with pytest.raises(ModelLoadError, match="pip install fake-chunks==1.0"):
        zoo.zoo_gguf_path("fake-model")


def test_model_spec_resolution(tmp_path):
    assert resolve_model_source("qwen2.5-0.5b") == ("zoo", "qwen2.5-0.5b")
    assert resolve_model_source("Qwen/Qwen2.5-0.5B") == ("hub", "Qwen/Qwen2.5-0.5B")
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model_source(str(tmp_path / "missing"))
    with pytest.raises(ModelLoadError, match="not a zoo model"):
        resolve_model_source("qwen-7b")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no config.json"):
        resolve_model_source(str(tmp_path / "empty"))


def test_dtype_resolution():
    assert resolve_dtype("float32") == torch.float32
    assert resolve_dtype("auto") in (torch.float32, torch.bfloat16)
    with pytest.raises(ModelLoadError, match="dtype must be one of"):
        resolve_dtype("int3")


def test_local_directory_loads_and_self_checks(tmp_path, qwen_tokenizer):
    from conftest import tiny_model

    model = tiny_model("llama")
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="no tokenizer"):
        load_model(tmp_path / "m", dtype="float32")
    qwen_tokenizer.save_pretrained(tmp_path / "m")
    handle = load_model(tmp_path / "m", dtype="float32")
    assert handle.info["self_check_max_abs_diff"] < 1e-4
    assert not handle.model.training  # loaded for analysis


@pytest.mark.real
def test_real_qwen_zoo_model_lens_equals_logits(qwen_handle):
    assert qwen_handle.adapter.family == "qwen2" and qwen_handle.n_layers == 24
    assert qwen_handle.info["self_check_max_abs_diff"] == 0.0
    # the untied output matrix really is separate from the embedding
    assert qwen_handle.unembed.weight.data_ptr() != qwen_handle.embed.weight.data_ptr()


def test_every_adapter_path_resolves_and_the_mlp_parts_are_wired_as_named(tiny_handle):
    """The block-relative parts exist, and ``mlp_down``'s input has one value per neuron: the
    activation module's output (gated MLPs: times ``up``) is what reaches the output projection."""
    h = tiny_handle
    seen = {}
    block = 1
    act, down = h.mlp_activation(block), h.mlp_down(block)
    hooks = [act.register_forward_hook(lambda m, i, o: seen.__setitem__("act", o)),
             down.register_forward_pre_hook(lambda m, a: seen.__setitem__("down_in", a[0]))]
    attn_out = {}
    hooks += [h.attention(block).register_forward_hook(lambda m, i, o: attn_out.__setitem__("a", o)),
              h.mlp(block).register_forward_hook(lambda m, i, o: attn_out.__setitem__("m", o))]
    try:
        with torch.no_grad():
            h.model(torch.tensor([[1, 2, 3, 4]]))
    finally:
        for k in hooks:
            k.remove()
    assert set(seen) == {"act", "down_in"} and set(attn_out) == {"a", "m"}
    assert seen["act"].shape == seen["down_in"].shape  # [batch, seq, d_mlp]
    mlp_out = attn_out["m"][0] if isinstance(attn_out["m"], tuple) else attn_out["m"]
    assert mlp_out.shape[-1] == h.d_model
