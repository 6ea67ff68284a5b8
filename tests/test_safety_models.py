"""Issue 18, models: devices, cache integrity, offline loading, broken model files, GGUF conversion temporaries.

Everything runs on tiny random models and fake zoo entries in a temporary ``LENSMAP_CACHE``;
nothing touches the real cache or the network.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import transformers
from conftest import TINY_CONFIGS

from lensmap.errors import DeviceError, IntegrityError, LensmapError, ModelLoadError
from lensmap.models import gguf as gguf_module
from lensmap.models import integrity, loading, zoo
from lensmap.models.devices import available_devices, validate_device
from lensmap.models.loading import load_model, load_tokenizer
from lensmap.models.zoo import ZooEntry

REPO = Path(__file__).resolve().parents[1]
_AUTO_MODEL = transformers.AutoModelForCausalLM  # captured before any test replaces it


def small_tokenizer():
    """A byte-level tokenizer with 256 byte tokens + <|endoftext|> (257 = the tiny models' vocabulary)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from lensmap.languages.tokens import byte_to_char

    chars = byte_to_char()
    vocab = {chars[b]: b for b in range(256)} | {"<|endoftext|>": 256}
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>")


def tiny_model(arch: str, **overrides) -> torch.nn.Module:
    """conftest's tiny random model, with config fields overridden (e.g. a wider MLP)."""
    torch.manual_seed(0)
    config = TINY_CONFIGS[arch]()
    for key, value in overrides.items():
        setattr(config, key, value)
    config._attn_implementation = "eager"
    return _AUTO_MODEL.from_config(config)


def save_tiny(directory: Path, arch: str = "qwen2", tokenizer: bool = True) -> Path:
    model = tiny_model(arch)
    model.save_pretrained(directory)
    if tokenizer:
        small_tokenizer().save_pretrained(directory)
    return directory


def flip_byte(path: Path, offset: int) -> None:
    """Flip one byte of ``path`` in place and put its mtime back, as bit rot would leave it."""
    st = path.stat()
    with path.open("r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns


def unsampled_offset(size: int) -> int:
    """An offset the cheap check does not read."""
    covered = [(o, o + integrity.BLOCK_BYTES) for o in integrity._sample_offsets(size)]
    for start, end in zip(covered, covered[1:]):
        if end[0] - start[1] > 16:
            return (start[1] + end[0]) // 2
    raise AssertionError("file too small: the cheap check covers all of it")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("LENSMAP_CACHE", str(root))
    return root


# --------------------------------------------------------------------------- devices


def test_device_names_this_machine_does_not_have_are_clear_errors(monkeypatch):
    assert validate_device("cpu") == "cpu" and validate_device(None) == "cpu"
    assert validate_device(torch.device("cpu")) == "cpu"
    with pytest.raises(DeviceError, match="'gpu0' is not a device name.*cuda:0.*this machine has: cpu"):
        validate_device("gpu0")
    with pytest.raises(DeviceError, match="'meta' holds no weights"):
        validate_device("meta")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="'cuda' needs a CUDA GPU.*this machine has: cpu.*device: cpu"):
        validate_device("cuda")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="'mps' .* not available"):
        validate_device("mps")
    with pytest.raises(DeviceError, match="device_map entry 'model.layers.0'.*needs a CUDA GPU"):
        validate_device("cpu", {"model.embed_tokens": "cpu", "model.layers.0": 0})
    assert validate_device("cpu", "auto") == "cpu"
    assert validate_device("cpu", {"model": "cpu", "lm_head": "disk"}) == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert available_devices()[:2] == ["cpu", "cuda:0"]
    assert validate_device("cuda:0") == "cuda:0"
    with pytest.raises(DeviceError, match="'cuda:3' does not exist: there is 1 GPU .*cuda:0"):
        validate_device("cuda:3")
    assert issubclass(DeviceError, LensmapError)


def test_load_model_checks_the_device_before_loading(tmp_path, monkeypatch):
    save_tiny(tmp_path / "m")
    called = []
    monkeypatch.setattr(loading, "load_directory", lambda *a, **k: called.append(1))
    for device in ("gpu0", "cuda", "cuda:3"):
        with pytest.raises(DeviceError):
            load_model(tmp_path / "m", device=device)
    assert called == []


# --------------------------------------------------------------------------- zoo integrity


@pytest.fixture
def big_zoo(tmp_path, cache, monkeypatch):
    """A two-chunk zoo entry of 3 MB (larger than the cheap check's sample)."""
    pkg = tmp_path / "site" / "fake_big_chunks"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    gen = torch.Generator().manual_seed(0)
    parts = [b"GGUF" + torch.randint(0, 256, (1_500_000,), generator=gen, dtype=torch.uint8).numpy().tobytes(),
             torch.randint(0, 256, (1_500_000,), generator=gen, dtype=torch.uint8).numpy().tobytes()]
    for i, part in enumerate(parts):
        (pkg / "data" / f"p{i}.bin").write_bytes(part)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    whole = b"".join(parts)
    entry = ZooEntry("big-fake", "test", "qwen2", 2, ("fake-big-chunks==1.0",),
                     (("fake_big_chunks", "data/p0.bin"), ("fake_big_chunks", "data/p1.bin")),
                     len(whole), hashlib.sha256(whole).hexdigest())
    monkeypatch.setitem(zoo.ZOO, entry.name, entry)
    return entry


def test_flipped_byte_in_the_joined_zoo_file_is_caught_by_the_full_check(big_zoo):
    path = zoo.zoo_gguf_path("big-fake")
    record = json.loads((path.parent / f"{path.name}.verified").read_text())["files"][path.name]
    assert record["sha256"] == big_zoo.sha256 and record["size"] == big_zoo.size
    assert zoo.zoo_gguf_path("big-fake", verify="full") == path
    flip_byte(path, unsampled_offset(path.stat().st_size))
    # the cheap check reads size, mtime and 16 sampled blocks: this flip is outside them
    assert zoo.zoo_gguf_path("big-fake") == path
    with pytest.raises(IntegrityError, match=r"(?s)big-fake.*damaged: its sha256 is .*rm '.*big-fake.gguf'"):
        zoo.zoo_gguf_path("big-fake", verify=True)
    with pytest.raises(IntegrityError):
        load_model("big-fake", verify="full")
    assert issubclass(IntegrityError, ModelLoadError)


def test_cheap_zoo_check_catches_header_damage_truncation_and_rewrites(big_zoo):
    path = zoo.zoo_gguf_path("big-fake")
    data = path.read_bytes()
    flip_byte(path, 2)  # the header block is always sampled
    with pytest.raises(IntegrityError, match="sampled by the quick check"):
        zoo.zoo_gguf_path("big-fake")
    path.write_bytes(data[:-10])
    with pytest.raises(IntegrityError, match="bytes"):
        zoo.zoo_gguf_path("big-fake")
    path.write_bytes(data)  # same content, new mtime: hashed fully once, record refreshed
    assert zoo.zoo_gguf_path("big-fake") == path
    stamp = json.loads((path.parent / f"{path.name}.verified").read_text())["files"][path.name]
    assert stamp["mtime_ns"] == path.stat().st_mtime_ns
    changed = bytearray(data)
    changed[len(data) // 2] ^= 1
    path.write_bytes(bytes(changed))  # any write moves the mtime, so the full hash catches it
    with pytest.raises(IntegrityError, match="sha256"):
        zoo.zoo_gguf_path("big-fake")


def test_a_stamp_of_an_older_lensmap_is_upgraded_without_rejoining(big_zoo):
    path = zoo.zoo_gguf_path("big-fake")
    stamp = path.parent / f"{path.name}.verified"
    st = path.stat()
    stamp.write_text(f"{big_zoo.sha256} {st.st_size} {st.st_mtime_ns}\n")  # the old size + mtime stamp
    inode = st.st_ino
    assert zoo.zoo_gguf_path("big-fake") == path
    assert path.stat().st_ino == inode and json.loads(stamp.read_text())["format"] == "lensmap-integrity"


# --------------------------------------------------------------------------- converted checkpoint


def fake_conversion(monkeypatch, arch: str = "qwen2", **config):
    """Make ``_convert_gguf`` produce a tiny model instead of dequantizing a real GGUF."""
    import transformers

    real_tokenizer, real_model = transformers.AutoTokenizer, transformers.AutoModelForCausalLM

    class FakeTokenizer:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            if "gguf_file" not in kwargs:  # loading the converted checkpoint: the real thing
                return real_tokenizer.from_pretrained(*args, **kwargs)
            return small_tokenizer()

    class FakeModel:
        @staticmethod
        def from_pretrained(*args, **kwargs):
            if "gguf_file" not in kwargs:
                return real_model.from_pretrained(*args, **kwargs)
            return tiny_model(arch, **config)

        from_config = staticmethod(real_model.from_config)

    monkeypatch.setattr(transformers, "AutoTokenizer", FakeTokenizer)
    monkeypatch.setattr(transformers, "AutoModelForCausalLM", FakeModel)


def test_flipped_byte_in_the_converted_checkpoint_is_caught_by_the_full_check(tmp_path, cache, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF fake")
    # a wide MLP makes the checkpoint (~5 MB) larger than the cheap check's 1 MiB sample
    with monkeypatch.context() as m:
        fake_conversion(m, intermediate_size=4096)
        handle = load_model(gguf, dtype="float32")
    assert handle.info["verified"] == "full (just converted)"
    converted = gguf_module.gguf_cache_dir(gguf)
    record = json.loads((converted / gguf_module.CHECKPOINT_RECORD).read_text())
    assert set(record["files"]) >= {"model.safetensors", "config.json", "tokenizer.json"}
    weights = converted / "model.safetensors"
    assert record["files"]["model.safetensors"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert load_model(gguf, dtype="float32").info["verified"].startswith("cheap (")
    flip_byte(weights, unsampled_offset(weights.stat().st_size))
    load_model(gguf, dtype="float32", self_check=False)  # the cheap check does not see it (documented)
    with pytest.raises(IntegrityError, match=rf"(?s){weights.name} is damaged: its sha256 .*rm -r '{converted}'"):
        load_model(gguf, dtype="float32", verify="full")
    with pytest.raises(IntegrityError):
        load_tokenizer(gguf, verify=True)
    flip_byte(weights, 3)  # the safetensors header block is always sampled
    with pytest.raises(IntegrityError, match="sampled"):
        load_model(gguf, dtype="float32")


def test_an_edited_config_in_the_cache_is_caught(tmp_path, cache, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF fake")
    with monkeypatch.context() as m:
        fake_conversion(m)
        load_model(gguf, dtype="float32")
    config = gguf_module.gguf_cache_dir(gguf) / "config.json"
    time.sleep(0.01)
    config.write_text(config.read_text().replace('"hidden_size": 32', '"hidden_size": 48'))
    with pytest.raises(IntegrityError, match="config.json is damaged"):
        load_model(gguf, dtype="float32")


def test_a_checkpoint_without_a_record_is_recorded_once(tmp_path, cache, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF fake")
    with monkeypatch.context() as m:
        fake_conversion(m)
        load_model(gguf, dtype="float32")
    record = gguf_module.gguf_cache_dir(gguf) / gguf_module.CHECKPOINT_RECORD
    record.unlink()  # as an older lensmap left it
    assert load_model(gguf, dtype="float32").info["verified"] == "full (checksums recorded now)"
    assert record.is_file() and load_model(gguf, dtype="float32").info["verified"].startswith("cheap")


# --------------------------------------------------------------------------- GGUF conversion temporaries

CONVERT_AND_HANG = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import safetensors.torch, transformers
    sys.path.insert(0, sys.argv[3])
    from test_safety_models import small_tokenizer, tiny_model

    class Tok:
        @staticmethod
        def from_pretrained(*a, **k):
            return small_tokenizer()

    class Model:
        @staticmethod
        def from_pretrained(*a, **k):
            return tiny_model("qwen2")

    def save_and_hang(model, path):
        Path(path).write_bytes(b"x" * 1_000_000)  # half a checkpoint on disk
        print("ready", flush=True)
        time.sleep(60)

    transformers.AutoTokenizer, transformers.AutoModelForCausalLM = Tok, Model
    safetensors.torch.save_model = save_and_hang
    from lensmap.errors import Terminated
    from lensmap.models.loading import load_model
    try:
        load_model(sys.argv[1], dtype="float32")
    except Terminated as error:
        print("terminated", error.signal_name, flush=True)
        sys.exit(error.exit_code)
""")


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_killing_the_gguf_conversion_leaves_no_temporary_directory(tmp_path, signame):
    import signal

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF fake")
    script = tmp_path / "convert.py"
    script.write_text(CONVERT_AND_HANG)
    env = dict(os.environ, LENSMAP_CACHE=str(tmp_path / "cache"), PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, str(script), str(gguf), "unused", str(REPO / "tests")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
        converted = tmp_path / "cache" / "converted"
        assert [p for p in converted.iterdir() if "lensmap-tmp" in p.name]  # the half-written temporary
        proc.send_signal(getattr(signal, signame))
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert f"terminated {signame}" in out, err
    assert proc.returncode == 128 + getattr(signal, signame)
    assert list(converted.iterdir()) == []


def test_stale_conversion_temporaries_are_swept_at_the_next_conversion(tmp_path, cache, monkeypatch):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF fake")
    converted = cache / "converted"
    converted.mkdir(parents=True)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    killed = converted / f".m-0123456789abcdef.lensmap-tmp-{dead.pid}-abcd1234"
    legacy = converted / ".m-0123456789abcdef.k2j4h5g6"  # an older lensmap's temporary (no pid)
    live = converted / f".other-0123456789abcdef.lensmap-tmp-{os.getpid()}-zzzz"
    for d in (killed, legacy, live):
        d.mkdir()
        (d / "model.safetensors").write_bytes(b"half")
    old = time.time() - 2 * 3600
    os.utime(legacy, (old, old))
    with monkeypatch.context() as m:
        fake_conversion(m)
        load_model(gguf, dtype="float32")
    assert not killed.exists() and not legacy.exists() and live.exists()


# --------------------------------------------------------------------------- broken model files


@pytest.fixture
def model_dir(tmp_path) -> Path:
    return save_tiny(tmp_path / "m")


def test_truncated_and_corrupt_safetensors_are_clear_errors(model_dir):
    weights = model_dir / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match=r"model.safetensors is truncated or corrupt.*save the model directory"):
        load_model(model_dir, dtype="float32")
    corrupt = bytearray(data)
    corrupt[10:20] = b"xxxxxxxxxx"
    weights.write_bytes(bytes(corrupt))
    with pytest.raises(ModelLoadError, match="model.safetensors is truncated or corrupt"):
        load_model(model_dir, dtype="float32")
    weights.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="truncated or corrupt"):
        load_model(model_dir, dtype="float32")
    weights.unlink()
    with pytest.raises(ModelLoadError, match="has no weights"):
        load_model(model_dir, dtype="float32")


def test_an_edited_config_is_named_as_the_problem(model_dir):
    config_path = model_dir / "config.json"
    original = json.loads(config_path.read_text())
    config_path.write_text(json.dumps(original | {"hidden_size": 48}))
    with pytest.raises(ModelLoadError, match=r"do not fit its config.json \(.*\[257, 32\] in the file, \[257, 48\]"):
        load_model(model_dir, dtype="float32")
    config_path.write_text(json.dumps(original | {"num_hidden_layers": 5}))
    with pytest.raises(ModelLoadError, match="config file .*config.json is inconsistent.*num_hidden_layers"):
        load_model(model_dir, dtype="float32")
    fewer = {k: v for k, v in original.items() if k != "layer_types"} | {"num_hidden_layers": 2}
    config_path.write_text(json.dumps(fewer))
    with pytest.raises(ModelLoadError, match="do not belong to the config"):
        load_model(model_dir, dtype="float32")
    more = fewer | {"num_hidden_layers": 4}
    config_path.write_text(json.dumps(more))
    with pytest.raises(ModelLoadError, match="not in the file .* would be random"):
        load_model(model_dir, dtype="float32")


def test_a_truncated_config_is_reported_as_the_config(model_dir):
    config_path = model_dir / "config.json"
    text = config_path.read_text()
    config_path.write_text(text[: len(text) // 2])
    for load in (lambda: load_model(model_dir, dtype="float32"), lambda: load_tokenizer(model_dir)):
        with pytest.raises(ModelLoadError, match=r"config file .*config.json is broken .*line \d+") as info:
            load()
        assert "tokenizer" not in str(info.value)


def test_a_directory_without_tokenizer_files_fails_before_any_vocabulary_map(tmp_path, cache):
    directory = save_tiny(tmp_path / "m", tokenizer=False)
    with pytest.raises(ModelLoadError, match="found no tokenizer in .*tokenizer.json.*save_pretrained"):
        load_model(directory, dtype="float32")
    with pytest.raises(ModelLoadError, match="found no tokenizer"):
        load_tokenizer(directory)
    assert not (cache / "vocab").exists()


def test_vocabulary_map_refuses_an_empty_tokenizer(tmp_path, cache):
    from transformers import AutoTokenizer

    from lensmap.languages.vocab_map import build_vocabulary_map

    directory = save_tiny(tmp_path / "m", tokenizer=False)
    empty = AutoTokenizer.from_pretrained(directory, local_files_only=True)  # transformers 5 builds an empty one
    assert len(empty) <= 5
    with pytest.raises(ModelLoadError, match="tokenizer .* is empty or broken .*no ordinary tokens"):
        build_vocabulary_map(empty, ["en", "fr"], vocab_size=257, progress=False)
    assert not (cache / "vocab").exists()


def test_paths_that_do_not_exist_are_not_hub_ids(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    for spec in ("models/nope", "./x", "../x", "~/nope-model", "a/b/c", "weights.safetensors", "my model/x"):
        with pytest.raises(ModelLoadError, match="does not exist"):
            load_model(spec)
    assert loading.resolve_model_source("Qwen/Qwen2.5-0.5B") == ("hub", "Qwen/Qwen2.5-0.5B")


# --------------------------------------------------------------------------- offline


class NetworkCalls(list):
    """Fail and record every DNS lookup or socket connection."""

    def install(self, monkeypatch) -> "NetworkCalls":
        def refuse(*args, **kwargs):
            self.append(args[:1])
            raise OSError("network disabled in tests")

        monkeypatch.setattr(socket, "getaddrinfo", refuse)
        monkeypatch.setattr(socket.socket, "connect", lambda self_, *a: refuse(*a))
        return self


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """A local Hugging Face hub cache holding the tiny model ``lensmap-test/tiny``."""
    from huggingface_hub import constants

    root = tmp_path / "hub"
    snapshot = root / "models--lensmap-test--tiny" / "snapshots" / ("0" * 40)
    save_tiny(snapshot)
    (root / "models--lensmap-test--tiny" / "refs").mkdir()
    (root / "models--lensmap-test--tiny" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(root))
    monkeypatch.delenv("LENSMAP_ALLOW_DOWNLOAD", raising=False)
    for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(flag, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    return root


def test_hub_ids_load_from_the_local_cache_without_any_network_call(hub_cache, monkeypatch):
    calls = NetworkCalls().install(monkeypatch)
    handle = load_model("lensmap-test/tiny", dtype="float32")
    assert handle.info["source"] == "hub" and handle.n_layers == 3
    assert len(load_tokenizer("lensmap-test/tiny")) == 257
    assert calls == []


def test_a_missing_hub_id_is_not_downloaded_unless_asked(hub_cache, monkeypatch):
    calls = NetworkCalls().install(monkeypatch)
    for load in (lambda: load_model("lensmap-test/missing"), lambda: load_tokenizer("lensmap-test/missing")):
        with pytest.raises(ModelLoadError, match="not in the local Hugging Face cache.*LENSMAP_ALLOW_DOWNLOAD=1"):
            load()
    assert calls == []
    # asking for it explicitly (argument or environment) goes to the hub, and a failure is clear
    tried = []

    def hub_refuses(repo_id, **kwargs):
        tried.append((repo_id, kwargs.get("local_files_only", False)))
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", hub_refuses)
    with pytest.raises(ModelLoadError, match="could not be downloaded .*couldn't connect"):
        load_model("lensmap-test/missing", allow_download=True)
    monkeypatch.setenv("LENSMAP_ALLOW_DOWNLOAD", "1")
    with pytest.raises(ModelLoadError, match="could not be downloaded"):
        load_tokenizer("lensmap-test/missing")
    assert tried == [("lensmap-test/missing", False)] * 2


def test_set_offline_mode_sets_the_hub_flags(monkeypatch):
    import huggingface_hub.constants as constants

    from lensmap.models.offline import OFFLINE_FLAGS, set_offline_mode

    for flag in OFFLINE_FLAGS:
        monkeypatch.delenv(flag, raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("LENSMAP_ALLOW_DOWNLOAD", "1")
    assert set_offline_mode() is False and "HF_HUB_OFFLINE" not in os.environ
    monkeypatch.delenv("LENSMAP_ALLOW_DOWNLOAD")
    assert set_offline_mode() is True
    assert all(os.environ[flag] == "1" for flag in OFFLINE_FLAGS)
    assert constants.HF_HUB_OFFLINE is True


def test_set_offline_mode_before_import_keeps_datasets_off_the_network(tmp_path):
    """In a fresh process: the flags are set before ``import datasets``, so a cache miss makes no DNS lookup."""
    script = textwrap.dedent("""
        import socket, sys
        calls = []
        real = socket.getaddrinfo
        def spy(*a, **k):
            calls.append(a[0])
            raise OSError("network disabled in tests")
        socket.getaddrinfo = spy
        from lensmap.models.offline import set_offline_mode
        set_offline_mode()
        import datasets
        try:
            datasets.load_dataset("lensmap-test/not-cached-anywhere", split="test")
        except Exception as error:
            pass
        print("lookups", len(calls))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("LENSMAP_ALLOW_DOWNLOAD", "HF_HUB_OFFLINE",
                                                            "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(PYTHONPATH=str(REPO), HF_HOME=str(tmp_path / "hf"))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert "lookups 0" in out.stdout, out.stderr[-2000:]


def test_offline_mode_is_scoped(monkeypatch):
    import huggingface_hub.constants as constants

    from lensmap.models.offline import OFFLINE_FLAGS, offline_mode

    for flag in OFFLINE_FLAGS:
        monkeypatch.delenv(flag, raising=False)
    monkeypatch.delenv("LENSMAP_ALLOW_DOWNLOAD", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with offline_mode() as switched:
        assert switched and os.environ["HF_DATASETS_OFFLINE"] == "1" and constants.HF_HUB_OFFLINE is True
    assert "HF_DATASETS_OFFLINE" not in os.environ and constants.HF_HUB_OFFLINE is False
    with offline_mode(allow_download=True) as switched:
        assert not switched and "HF_HUB_OFFLINE" not in os.environ
