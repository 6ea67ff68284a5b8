"""Native hooks, TransformerLens 4 and nnsight 0.8 give the same residuals and the same maps.

The grid: every tiny architecture of conftest × every backend, against lensmap's native hooks
(which test_capture.py checks against Hugging Face's hidden states). Also: users' own bridges
and nnsight models, lensmap called inside a user's TransformerLens hook and nnsight trace,
models sharded layer by layer with accelerate, hook hygiene, and clear errors.
"""

from __future__ import annotations

import sys

import pytest
import torch
import transformers as tf
from conftest import TINY_CONFIGS, tiny_model

from lensmap.capture import position_ids_for
from lensmap.capture.backends import BACKENDS, as_handle, available_backends, bind, get_backend
from lensmap.capture.shadow import shadow_copy
from lensmap.data.probes import Prompt
from lensmap.errors import LensmapError, UnsupportedArchitectureError
from lensmap.lenses.logit import LogitLens
from lensmap.metrics.hidden import read_hidden
from lensmap.metrics.mass import read_layers
from lensmap.models.handle import ModelHandle
from lensmap.readout.probes import run_probes

ARCHS = sorted(TINY_CONFIGS)
NAMES = list(BACKENDS)
TOL = 1e-4  # the bar: per-layer language mass agrees to 1e-4 in float32


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _state(model: torch.nn.Module, tensors: bool = True) -> dict:
    """Every module's class, instance attributes (by identity), submodules, hooks and tensors."""
    return {
        name: (type(m), {k: id(v) for k, v in vars(m).items()}, dict(m._modules), dict(m._forward_hooks),
               dict(m._forward_pre_hooks), m.training,
               {k: id(v) for k, v in [*m._parameters.items(), *m._buffers.items()]} if tensors else None)
        for name, m in model.named_modules()
    }


def _inputs(batch: int = 3, seq: int = 7, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids with left padding of different widths (so position ids matter)."""
    ids = torch.randint(1, 257, (batch, seq), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    for row in range(1, batch):
        mask[row, : 2 * row] = 0
    return ids, mask


def _weights(vocab: int = 257, columns: int = 5) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.softmax(torch.randn(vocab, columns, generator=g) * 3, -1)


def _with_architectures(model: torch.nn.Module) -> torch.nn.Module:
    # Checkpoints loaded with from_pretrained carry config.architectures (TransformerLens reads it).
    model.config.architectures = [type(model).__name__]
    return model


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A 257-token word-level tokenizer ("w1 w2 ..."), saved and reloaded like a real one."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<pad>": 0, **{f"w{i}": i for i in range(1, 257)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<pad>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<pad>",
                                      eos_token="w1", bos_token="w1")
    path = tmp_path_factory.mktemp("tokenizer")
    fast.save_pretrained(path)
    return tf.AutoTokenizer.from_pretrained(path)


# ---------------------------------------------------------------------------------------------
# The registry

def test_registry_names_aliases_and_unknown_names():
    assert NAMES == ["native", "transformer-lens", "nnsight"]
    assert available_backends() == {name: True for name in NAMES}  # the test extra installs both
    assert get_backend().name == "native"
    assert get_backend("TransformerLens").name == "transformer-lens"
    assert get_backend("nnsight", remote=False).name == "nnsight"
    with pytest.raises(LensmapError, match="unknown capture backend 'pyvene'; choose one of: native, "
                                           "transformer-lens, nnsight"):
        get_backend("pyvene")
    with pytest.raises(LensmapError, match="bad option for the native backend"):
        get_backend("native", remote=True)
    custom = lambda *args, **kwargs: None  # noqa: E731 - any function with capture_residuals' signature
    assert get_backend(custom) is custom


@pytest.mark.parametrize("name, package, extra", [("transformer-lens", "transformer_lens", "transformer-lens"),
                                                  ("nnsight", "nnsight", "nnsight")])
def test_missing_optional_package_names_the_install_command(monkeypatch, name, package, extra):
    monkeypatch.setitem(sys.modules, package, None)  # makes `import package` fail
    with pytest.raises(LensmapError, match=f'pip install "lensmap\\[{extra}\\]"'):
        get_backend(name)


# ---------------------------------------------------------------------------------------------
# The grid: architectures × backends

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("arch", ARCHS)
def test_backends_agree_with_native_hooks(arch, name):
    model = tiny_model(arch)  # in train mode, as built: the backends must run it in eval mode
    handle = ModelHandle.wrap(model, name=arch)
    before, config = _state(model), model.config.to_dict()
    ids, mask = _inputs()
    reference = get_backend("native")(handle, ids, mask, positions="all")
    backend = get_backend(name)
    got = backend(handle, ids, mask, positions="all")
    assert got.layers == reference.layers and torch.equal(got.rows, reference.rows)
    torch.testing.assert_close(got.hidden, reference.hidden, rtol=0, atol=1e-5)
    # the same language mass, layer by layer
    lens, weights = LogitLens(handle), _weights()
    mass = read_layers(lens, got.hidden, got.layers, weights).mass
    expected = read_layers(lens, reference.hidden, reference.layers, weights).mass
    assert (mass - expected).abs().max().item() <= TOL
    # subsets of layers and the last position; the shadow is reused, not rebuilt
    last = backend(handle, ids, mask, positions="last", layers=[2, 0])
    assert last.layers == [0, 2] and last.hidden.shape == (2, 3, 32)
    torch.testing.assert_close(last.hidden, get_backend("native")(handle, ids, mask, layers=[0, 2]).hidden,
                               rtol=0, atol=1e-5)
    # the caller's model is exactly as it came in: modules, forwards, hooks, config, train mode
    assert _state(model) == before and model.config.to_dict() == config
    assert model.training


def _more_architectures():
    """Supported families conftest's grid does not build: Gemma 1 and Gemma 3 with its vision tower."""
    from conftest import TINY

    gemma = tf.GemmaConfig(**TINY, head_dim=8)
    text = dict(TINY, head_dim=8, vocab_size=300)
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=28,
                  patch_size=14)
    multimodal = tf.Gemma3Config(text_config=text, vision_config=vision, mm_tokens_per_image=4,
                                 image_token_index=299, boi_token_index=297, eoi_token_index=298)
    for config in (gemma, multimodal):
        torch.manual_seed(0)
        config._attn_implementation = "eager"
        yield (tf.AutoModelForCausalLM.from_config(config) if config is gemma
               else tf.Gemma3ForConditionalGeneration(config))


def test_more_architectures_agree():
    families = []
    for model in _more_architectures():
        handle = ModelHandle.wrap(model)
        families.append(handle.adapter.family)
        before = _state(model)
        ids, mask = _inputs()
        reference = get_backend("native")(handle, ids, mask, positions="all")
        lens, weights = LogitLens(handle), _weights(handle.vocab_size)
        expected = read_layers(lens, reference.hidden, reference.layers, weights).mass
        for name in NAMES[1:]:
            got = get_backend(name)(handle, ids, mask, positions="all")
            torch.testing.assert_close(got.hidden, reference.hidden, rtol=0, atol=1e-5)
            assert (read_layers(lens, got.hidden, got.layers, weights).mass - expected).abs().max() <= TOL
        assert _state(model) == before
    assert families == ["gemma", "gemma3-multimodal"]


@pytest.mark.parametrize("name", NAMES)
def test_run_probes_maps_agree_across_backends(name, tokenizer):
    handle = ModelHandle.wrap(tiny_model("qwen2").eval(), tokenizer, name="tiny")
    prompts = [Prompt(" ".join(f"w{(7 * i + j) % 250 + 2}" for j in range(3 + i % 4)), "p", "", "")
               for i in range(5)]
    columns = ["a", "b", "c", "d", "e"]
    kwargs = dict(batch_size=2, progress=False, positions="all")
    native = run_probes(handle, prompts, _weights(), columns, **kwargs)
    other = run_probes(handle, prompts, _weights(), columns, backend=name, **kwargs)
    assert other.info["backend"] == name
    diff = (native.mass["mass"] - other.mass["mass"]).abs().max()
    assert diff <= TOL
    assert (native.stats["entropy"] - other.stats["entropy"]).abs().max() <= 1e-3


# ---------------------------------------------------------------------------------------------
# Users' own TransformerLens bridges and nnsight models

def _user_bridge(arch, tokenizer):
    from transformer_lens.model_bridge import TransformerBridge

    bridge = TransformerBridge.boot_transformers(f"tiny-{arch}", hf_model=_with_architectures(tiny_model(arch)),
                                                 tokenizer=tokenizer)
    with torch.no_grad():
        bridge(torch.arange(1, 5)[None])  # TransformerLens adds some hooks of its own on the first forward
    return bridge


def _user_nnsight(arch, tokenizer):
    from nnsight import TransformersModel

    return TransformersModel(tiny_model(arch), tokenizer=tokenizer)


@pytest.mark.parametrize("kind", ["bridge", "nnsight"])
@pytest.mark.parametrize("arch", ["qwen2", "gemma3", "bloom", "gpt2"])
def test_users_own_objects(arch, kind, tokenizer):
    obj = _user_bridge(arch, tokenizer) if kind == "bridge" else _user_nnsight(arch, tokenizer)
    inner = obj.original_model if kind == "bridge" else obj._module
    ids, mask = _inputs()
    reference = get_backend("native")(ModelHandle.wrap(tiny_model(arch)), ids, mask, positions="all")
    hooks_before = _hooks(obj if kind == "bridge" else inner)
    handle, backend = bind(obj)
    assert backend.name == ("transformer-lens" if kind == "bridge" else "nnsight")
    assert handle.tokenizer is not None and handle.n_layers == 3
    for capture, target in [(backend, handle), (backend, obj), (get_backend("native"), obj)]:
        got = capture(target, ids, mask, positions="all")
        torch.testing.assert_close(got.hidden, reference.hidden, rtol=0, atol=1e-5)
    assert _hooks(obj if kind == "bridge" else inner) == hooks_before
    # the lens of the unwrapped handle reproduces the model's own logits
    with torch.no_grad():
        logits = tiny_model(arch).eval()(ids, attention_mask=mask, position_ids=position_ids_for(mask)).logits
    last = backend(handle, ids, mask, positions="last")
    lens_logits = LogitLens(handle).decode(last.layer(3))
    torch.testing.assert_close(lens_logits, logits[:, -1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["bridge", "nnsight"])
def test_hooks_are_removed_when_capture_fails(kind, tokenizer):
    obj = _user_bridge("qwen2", tokenizer) if kind == "bridge" else _user_nnsight("qwen2", tokenizer)
    inner = obj.original_model if kind == "bridge" else obj._module
    root = obj if kind == "bridge" else inner
    block = (obj.blocks[1] if kind == "bridge" else inner.model.layers[1])

    def boom(*args):
        raise RuntimeError("boom")

    foreign = block.register_forward_hook(boom)  # the user's own hook, which fails mid-forward
    before = _hooks(root)
    with pytest.raises(Exception, match="boom"):
        get_backend("transformer-lens" if kind == "bridge" else "nnsight")(obj, *_inputs())
    assert _hooks(root) == before
    foreign.remove()
    got = get_backend("transformer-lens" if kind == "bridge" else "nnsight")(obj, *_inputs())
    assert got.hidden.shape[0] == 4


def test_nnsight_remote_path_in_local_simulation(tokenizer):
    """remote="local" is nnsight's in-process simulation of remote execution (serialised trace, no network)."""
    model = _user_nnsight("bloom", tokenizer)
    ids, mask = _inputs()
    reference = get_backend("native")(ModelHandle.wrap(tiny_model("bloom")), ids, mask, positions="all")
    got = get_backend("nnsight", remote="local")(model, ids, mask, positions="all")
    torch.testing.assert_close(got.hidden, reference.hidden, rtol=0, atol=1e-5)
    assert _hooks(model._module) == 0


def test_a_handle_from_one_library_is_refused_by_the_other(tokenizer):
    handle = as_handle(_user_nnsight("qwen2", tokenizer))
    with pytest.raises(LensmapError, match="not a TransformerLens bridge"):
        get_backend("transformer-lens")(handle, *_inputs())
    with pytest.raises(LensmapError, match="remote=True needs an nnsight TransformersModel"):
        get_backend("nnsight", remote=True)(ModelHandle.wrap(tiny_model("qwen2")), *_inputs())


# ---------------------------------------------------------------------------------------------
# Embedding: lensmap's pieces inside the user's own hook or trace

def test_read_hidden_inside_a_transformer_lens_hook(tokenizer):
    bridge = _user_bridge("qwen2", tokenizer)
    handle = as_handle(bridge)
    lens, weights = LogitLens(handle), _weights()
    ids, mask = _inputs()
    seen = {}

    def my_hook(resid, hook):  # [batch, positions, d_model]
        seen["readout"] = read_hidden(lens, resid, weights, layer=2)
        seen["resid"] = resid.detach().clone()

    before = _hooks(bridge)
    with torch.no_grad():
        bridge.run_with_hooks(ids, attention_mask=mask, fwd_hooks=[("blocks.1.hook_resid_post", my_hook)],
                              return_type=None)
    assert _hooks(bridge) == before  # calling the lens fired no bridge hook and added none
    mass = seen["readout"].mass
    assert mass.shape == (3, 7, 5)
    torch.testing.assert_close(mass.sum(-1), torch.ones(3, 7))
    expected = read_layers(lens, seen["resid"].reshape(1, 21, 32), [2], weights).mass.reshape(3, 7, 5)
    torch.testing.assert_close(mass, expected)
    # [layers, batch, positions, d] gives [layers, batch, positions, columns]
    stacked = read_hidden(lens, torch.stack([seen["resid"]] * 2), weights, layers=[2, 2])
    assert stacked.mass.shape == (2, 3, 7, 5) and stacked.entropy.shape == (2, 3, 7)


def test_read_hidden_inside_an_nnsight_trace(tokenizer):
    import nnsight

    model = _user_nnsight("qwen2", tokenizer)
    handle = as_handle(model)
    lens, weights = LogitLens(handle), _weights()
    ids, mask = _inputs()
    with torch.no_grad():
        with model.trace(input_ids=ids, attention_mask=mask):
            hidden = model.model.layers[1].output  # a Tensor [batch, positions, d_model]
            mass = nnsight.save(read_hidden(lens, hidden, weights, layer=2).mass)
            # the lens ran the norm, but the trace still sees only the model's own call of it
            norm_out = nnsight.save(model.model.norm.output)
            logits = nnsight.save(model.output.logits)
    assert mass.shape == (3, 7, 5)
    residuals = get_backend("nnsight")(model, ids, mask, positions="all", layers=[2, 3])
    expected = read_layers(lens, residuals.hidden[:1], [2], weights).mass
    torch.testing.assert_close(mass[mask.bool()], expected[0])
    torch.testing.assert_close(model._module.lm_head(norm_out), logits)
    assert _hooks(model._module) == 0


# ---------------------------------------------------------------------------------------------
# Large models: device maps and accelerate dispatch

def _module_names(handle: ModelHandle) -> list[str]:
    names = [handle.adapter.embed, handle.adapter.final_norm, handle.adapter.unembed]
    names += [f"{handle.adapter.layers}.{i}" for i in range(handle.n_layers)]
    model_children = {"qwen2": ["model.rotary_emb"], "gpt2": ["transformer.wpe"],
                      "bloom": ["transformer.word_embeddings_layernorm"]}
    return names + model_children[handle.adapter.family]


@pytest.mark.parametrize("arch", ["qwen2", "gpt2", "bloom"])
def test_sharded_models_capture_the_same_residuals(arch, tokenizer, tmp_path):
    from accelerate import dispatch_model

    from lensmap.models.loading import load_model

    reference_handle = ModelHandle.wrap(tiny_model(arch).eval())
    ids, mask = _inputs()
    reference = get_backend("native")(reference_handle, ids, mask, positions="all").hidden
    per_layer = {name: "cpu" for name in _module_names(reference_handle)}
    # 1. load_model passes device_map through to transformers / accelerate
    tiny_model(arch).save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    loaded = load_model(tmp_path / "model", dtype="float32", device_map=per_layer)
    assert loaded.info["self_check_max_abs_diff"] < 1e-4
    # 2. accelerate's dispatch_model with block 1 offloaded to disk: its weights live on the meta
    #    device and are loaded by accelerate's hooks only while block 1 runs.
    offloaded = dict(per_layer, **{f"{reference_handle.adapter.layers}.1": "disk"})
    dispatched = dispatch_model(tiny_model(arch).eval(), device_map=offloaded, offload_dir=str(tmp_path / "offload"),
                                force_hooks=True)
    dispatched_handle = ModelHandle.wrap(dispatched)
    assert next(dispatched_handle.blocks[1].parameters()).device.type == "meta"
    before = _state(dispatched, tensors=False)  # accelerate swaps the offloaded block's tensors
    for handle in (loaded, dispatched_handle):
        for name in NAMES:
            got = get_backend(name)(handle, ids, mask, positions="all").hidden
            torch.testing.assert_close(got, reference, rtol=0, atol=1e-5)
    assert _state(dispatched, tensors=False) == before  # accelerate's hooks and forwards are all there


# ---------------------------------------------------------------------------------------------
# Bad input

def test_unknown_architectures_from_either_library_are_named(tokenizer):
    from nnsight import TransformersModel
    from transformer_lens.model_bridge import TransformerBridge

    config = tf.GPTNeoXConfig(vocab_size=257, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4)
    bridge = TransformerBridge.boot_transformers(
        "tiny-neox", hf_model=_with_architectures(tf.AutoModelForCausalLM.from_config(config)), tokenizer=tokenizer)
    with pytest.raises(UnsupportedArchitectureError,
                       match="TransformerLens bridge wraps a 'gpt_neox' model: .*no adapter.*Supported: .*qwen2"):
        as_handle(bridge)
    with pytest.raises(UnsupportedArchitectureError, match="TransformerLens bridge wraps a 'gpt_neox'"):
        get_backend("transformer-lens")(bridge, *_inputs())
    neox = TransformersModel(tf.AutoModelForCausalLM.from_config(config), tokenizer=tokenizer)
    for call in (lambda: as_handle(neox), lambda: get_backend("nnsight")(neox, *_inputs())):
        with pytest.raises(UnsupportedArchitectureError, match="nnsight model wraps a 'gpt_neox' model: .*Supported"):
            call()


@pytest.mark.parametrize("name", NAMES)
def test_a_model_whose_layers_cannot_be_found(name, tokenizer):
    model = tiny_model("qwen2")
    model.model.decoder_stack = model.model.layers  # renamed: lensmap's qwen2 adapter cannot find it
    del model.model.layers
    with pytest.raises(UnsupportedArchitectureError, match="cannot find the decoder layers .* at 'model.layers'"):
        get_backend(name)(model, *_inputs())
    if name == "nnsight":
        from nnsight import TransformersModel

        with pytest.raises(UnsupportedArchitectureError, match="nnsight model wraps a 'qwen2' model: cannot find"):
            get_backend(name)(TransformersModel(model, tokenizer=tokenizer), *_inputs())


def test_objects_that_are_not_models():
    with pytest.raises(LensmapError, match="cannot use a str as a model"):
        as_handle("qwen2.5-0.5b")
    with pytest.raises(UnsupportedArchitectureError, match="cannot use a Linear"):
        get_backend("nnsight")(torch.nn.Linear(2, 2), *_inputs())
    with pytest.raises(LensmapError, match="out of range"):
        get_backend("transformer-lens")(ModelHandle.wrap(tiny_model("llama")), *_inputs(), layers=[9])


@pytest.mark.parametrize("name", NAMES[1:])
def test_wrapped_shadows_are_reused_and_do_not_keep_the_model_alive(name):
    import gc
    import weakref

    backend = get_backend(name)
    model = tiny_model("qwen2")
    handle = ModelHandle.wrap(model)
    cache = backend._bridges if name == "transformer-lens" else backend._wrapped
    backend(handle, *_inputs())
    first = cache.get(model)
    backend(handle, *_inputs())
    assert cache.get(model) is first  # built once, reused
    hook = model.model.layers[0].register_forward_hook(lambda *args: None)
    assert cache.get(model) is not first  # the model changed (a new hook): rebuilt
    hook.remove()
    alive = weakref.ref(model)
    del model, handle, first
    gc.collect()
    assert alive() is None and not cache._items


def test_shadow_copy_shares_tensors_and_isolates_structure():
    model = tiny_model("llama")
    shadow = shadow_copy(model)
    assert shadow is not model and shadow.model.layers[0] is not model.model.layers[0]
    assert shadow.lm_head.weight is model.lm_head.weight
    assert shadow.config is not model.config and shadow.model.layers[0].self_attn.config is shadow.config
    shadow.model.layers[0] = torch.nn.Identity()
    shadow.config._attn_implementation = "sdpa"
    assert isinstance(model.model.layers[0], tf.models.llama.modeling_llama.LlamaDecoderLayer)
    assert model.config._attn_implementation == "eager"


# ---------------------------------------------------------------------------------------------
# The real model (float32): the three backends give the same maps

@pytest.mark.real
def test_qwen_language_mass_agrees_across_backends(qwen_handle):
    from lensmap.data.probes import translation_probes
    from lensmap.languages.vocab_map import build_vocabulary_map

    vmap = build_vocabulary_map(qwen_handle.tokenizer, ["en", "fr", "de", "zh"], vocab_size=qwen_handle.vocab_size,
                                progress=False)
    prompts = translation_probes("fr", "zh", n=6, shots=3)
    results = {name: run_probes(qwen_handle, prompts, vmap.weights(), vmap.columns(), batch_size=3, progress=False,
                                backend=name) for name in NAMES}
    native = results["native"].mass.set_index(["probe", "layer", "language"])["mass"]
    assert len(native) == 25 * len(vmap.columns())
    for name in NAMES[1:]:
        other = results[name].mass.set_index(["probe", "layer", "language"])["mass"]
        diff = (other - native).abs().max()
        print(f"qwen2.5-0.5b float32, max |mass({name}) - mass(native)| = {diff:.2e}")
        assert diff <= TOL


@pytest.mark.real
@pytest.mark.parametrize("library", ["TransformerLens", "nnsight"])
def test_docs_examples_run(library, capsys, tmp_path):
    """The embedding examples of docs/backends.md run as written (offline, on the zoo's Qwen)."""
    import re
    import runpy
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "backends.md").read_text(encoding="utf-8")
    blocks = {b.splitlines()[0].split(": ", 1)[1]: b
              for b in re.findall(r"```python\n(# runnable example: .*?)```", text, flags=re.S)}
    script = tmp_path / f"example_{library}.py"  # nnsight reads a trace's body back from its source file
    script.write_text(blocks[library], encoding="utf-8")
    namespace = runpy.run_path(str(script))
    out = capsys.readouterr().out
    assert "'zh':" in out and "mass" in out
    mass = namespace["result"].mass.query("layer == 24").set_index("language")["mass"]
    assert mass["zh"] > mass["en"]  # the answer is Chinese at the last layer
