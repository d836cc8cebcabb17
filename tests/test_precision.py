"""Precision: which CPUs count as bf16-native, what `native` resolves to, and what each stage computes in."""

from __future__ import annotations

import pytest
import torch

from rftt import precision
from rftt.models import load_model
from rftt.precision import autocast, cpu_has_native_bf16, device_problem, resolve_device, uses_bf16, weights_dtype

FLAGS_WITHOUT_BF16 = "fpu vme sse sse2 avx avx2 avx512f avx512bw"


@pytest.fixture
def cpu_flags(tmp_path, monkeypatch):
    """Point the flag reader at a written /proc/cpuinfo; returns the writer."""
    monkeypatch.setattr(precision.platform, "system", lambda: "Linux")

    def write(flags: str) -> None:
        info = tmp_path / "cpuinfo"
        info.write_text(f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
        monkeypatch.setattr(precision, "CPU_INFO", info)
        cpu_has_native_bf16.cache_clear()

    yield write
    cpu_has_native_bf16.cache_clear()


@pytest.mark.parametrize("flags, native", [(FLAGS_WITHOUT_BF16, False), (FLAGS_WITHOUT_BF16 + " avx512_bf16", True),
                                           (FLAGS_WITHOUT_BF16 + " amx_tile amx_bf16", True)])
def test_a_cpu_is_bf16_native_only_with_bf16_instructions(cpu_flags, flags, native):
    cpu_flags(flags)
    assert cpu_has_native_bf16() is native
    assert uses_bf16("native", "cpu") is native
    assert weights_dtype("native", "cpu") == (torch.bfloat16 if native else torch.float32)
    assert uses_bf16("bf16", "cpu") and not uses_bf16("fp32", "cpu")


def test_the_environment_switch_turns_a_bf16_cpu_into_an_fp32_one(cpu_flags, monkeypatch):
    monkeypatch.setenv(precision.NATIVE_BF16_SWITCH, "0")
    cpu_flags(FLAGS_WITHOUT_BF16 + " avx512_bf16")
    assert not cpu_has_native_bf16()
    assert weights_dtype("native", "cpu") == torch.float32 and uses_bf16("bf16", "cpu")


def test_without_a_cpuinfo_file_nothing_is_native(monkeypatch, tmp_path):
    monkeypatch.setattr(precision, "CPU_INFO", tmp_path / "absent")
    cpu_has_native_bf16.cache_clear()
    try:
        assert not cpu_has_native_bf16()
    finally:
        cpu_has_native_bf16.cache_clear()


def test_explicit_precisions_and_their_torch_names_give_their_dtype_and_unknown_ones_are_named():
    assert weights_dtype("fp16", "cpu") == weights_dtype("float16", "cpu") == torch.float16
    assert weights_dtype("bf16", "cpu") == weights_dtype("bfloat16", "cpu") == torch.bfloat16
    assert weights_dtype("auto", "cpu") == "auto"
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        uses_bf16("fp8", "cpu")


def test_autocast_runs_linear_layers_in_bf16_only_when_precision_resolves_to_bf16(cpu_flags):
    layer, inputs = torch.nn.Linear(4, 4), torch.randn(2, 4)
    cpu_flags(FLAGS_WITHOUT_BF16)
    with autocast("native", "cpu"):
        assert layer(inputs).dtype == torch.float32
    with autocast("bf16", "cpu"):
        assert layer(inputs).dtype == torch.bfloat16
    assert layer.weight.dtype == torch.float32


@pytest.mark.parametrize("flags, dtype", [(FLAGS_WITHOUT_BF16, torch.float32),
                                          (FLAGS_WITHOUT_BF16 + " avx512_bf16", torch.bfloat16)])
def test_a_model_loaded_with_native_dtype_follows_the_hardware(cpu_flags, tmp_path, tiny_model, tiny_tokenizer,
                                                               flags, dtype):
    tiny_model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    cpu_flags(flags)
    model, _ = load_model(str(tmp_path), dtype="native", device="cpu")
    assert model.dtype == dtype


@pytest.mark.parametrize("flags, setting, bf16", [(FLAGS_WITHOUT_BF16, "native", False),
                                                  (FLAGS_WITHOUT_BF16 + " avx512_bf16", "native", True),
                                                  (FLAGS_WITHOUT_BF16, "bf16", True),
                                                  (FLAGS_WITHOUT_BF16 + " avx512_bf16", "fp32", False)])
def test_sft_trains_in_mixed_bf16_where_its_precision_resolves_to_it(cpu_flags, tmp_path, flags, setting, bf16):
    from rftt.train.sft import SFTConfig, _training_arguments

    cpu_flags(flags)
    arguments = _training_arguments(SFTConfig(precision=setting, device="cpu"), tmp_path, steps_per_epoch=4,
                                    has_dev=False)
    assert arguments.bf16 is bf16


def test_an_unknown_precision_in_a_recipe_names_its_key():
    from rftt.config import ConfigError, load_config
    from rftt.train.rl import RLConfig

    with pytest.raises(ConfigError, match="precision"):
        load_config(RLConfig, None, ["precision=fp8"])


@pytest.mark.parametrize("stored, computes", [(torch.float32, "fp32"), (torch.bfloat16, "bf16")])
def test_training_in_auto_precision_computes_as_the_checkpoint_is_stored(tmp_path, tiny_model, tiny_tokenizer,
                                                                         stored, computes):
    from rftt.config import configured_training_precision
    from rftt.train.sft import SFTConfig, _training_arguments

    tiny_model.to(stored).save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    assert configured_training_precision("config.precision", "auto", str(tmp_path)) == computes
    assert configured_training_precision("config.precision", "fp32", str(tmp_path)) == "fp32"
    arguments = _training_arguments(SFTConfig(precision=computes, device="cpu"), tmp_path / "run", steps_per_epoch=4,
                                    has_dev=False)
    assert arguments.bf16 is (computes == "bf16")
    with pytest.raises(ValueError, match="depends on the checkpoint"):
        uses_bf16("auto", "cpu")


def test_fp16_is_refused_for_training_naming_the_key_and_taken_for_generation(tmp_path, tiny_model, tiny_tokenizer):
    from rftt.config import ConfigError, load_config
    from rftt.train.rl import RLConfig, RLTrainer

    tiny_model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    config = load_config(RLConfig, overrides=[f"model={tmp_path}", "precision=fp16", f"output_dir={tmp_path / 'rl'}"])
    with pytest.raises(ConfigError, match="config.precision: precision 'fp16' is for generation"):
        RLTrainer(config)
    model, _ = load_model(str(tmp_path), dtype="fp16")
    assert model.dtype == torch.float16


def test_the_dtype_setting_of_generation_stages_loads_as_precision(tmp_path):
    from rftt.config import load_config
    from rftt.evaluate import EvalConfig
    from rftt.search.runner import SearchRunConfig
    from rftt.train.rl import RLConfig
    from rftt.train.sft import SFTConfig

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("dtype: bfloat16\n")
    for config_class in (EvalConfig, SearchRunConfig):
        with pytest.warns(FutureWarning, match="dtype is now precision"):
            assert load_config(config_class, recipe).precision == "bf16"
    recipe.write_text("precision: bfloat16\n")
    for config_class in (SFTConfig, RLConfig):
        with pytest.warns(FutureWarning, match="precision: bfloat16 is now bf16"):
            assert load_config(config_class, recipe).precision == "bf16"
    assert load_config(EvalConfig, overrides=["precision=native"]).precision == "native"


HAS_GPU = torch.cuda.is_available()


def test_auto_is_the_gpu_when_there_is_one_else_the_cpu():
    assert resolve_device("auto") == torch.device("cuda" if HAS_GPU else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "CPU", "", "cuda:-1", 0])
def test_a_device_name_of_another_form_is_refused_listing_the_forms(name):
    assert "is not one of auto, cpu, cuda, cuda:N" in device_problem(name)
    with pytest.raises(ValueError, match="auto, cpu, cuda, cuda:N"):
        resolve_device(name)


@pytest.mark.skipif(HAS_GPU, reason="a machine without a GPU")
def test_a_gpu_named_on_a_machine_without_one_is_refused_saying_so():
    for name in ("cuda", "cuda:0"):
        assert "no CUDA GPU" in device_problem(name)


@pytest.mark.skipif(not HAS_GPU, reason="needs a GPU")
def test_a_gpu_beyond_the_machines_is_refused_with_the_count():
    assert f"has {torch.cuda.device_count()} GPU(s)" in device_problem(f"cuda:{torch.cuda.device_count()}")
    assert resolve_device("cuda:0") == torch.device("cuda", 0)


def test_every_stage_names_its_bad_device_setting(tmp_path):
    from rftt.config import ConfigError, load_config
    from rftt.evaluate import EvalConfig, evaluate
    from rftt.search.runner import SearchRunConfig, run_search
    from rftt.train.rl import RLConfig, RLTrainer
    from rftt.train.sft import SFTConfig, run_sft

    stages = [(EvalConfig, evaluate), (SearchRunConfig, run_search), (SFTConfig, run_sft), (RLConfig, RLTrainer)]
    for config_class, run in stages:
        config = load_config(config_class, overrides=["device=gpu0", f"output_dir={tmp_path / config_class.__name__}"])
        with pytest.raises(ConfigError, match="config.device: 'gpu0' is not one of auto, cpu, cuda, cuda:N"):
            run(config)


def test_a_model_loads_on_the_device_it_is_given_and_native_follows_that_device(cpu_flags, tmp_path, tiny_model,
                                                                             tiny_tokenizer):
    tiny_model.save_pretrained(tmp_path)
    tiny_tokenizer.save_pretrained(tmp_path)
    cpu_flags(FLAGS_WITHOUT_BF16)
    device = resolve_device("auto")
    model, _ = load_model(str(tmp_path), dtype="native", device=device)
    assert next(model.parameters()).device.type == device.type
    assert model.dtype == (torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32)
