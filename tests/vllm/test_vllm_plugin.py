"""The vllm plugin module: discovery, options model and its checks, server keys, sampling translation."""

from __future__ import annotations

import subprocess
import sys
import warnings

from pydantic import BaseModel
import pytest

from chainette import Chain, SamplingParams, Step, register_engine
from chainette.errors import ConfigError
from chainette.plugins import get_plugins
from chainette.sampling import UnsupportedSamplingWarning
from chainette_vllm import VllmOptions
from chainette_vllm.spec import serve_spec


class Text(BaseModel):
    text: str


def translate(config, sampling):
    return get_plugins().call("vllm", "translate_sampling", config=config, sampling=sampling)


def test_entry_point_registers_backend_with_alias():
    plugins = get_plugins()
    assert plugins.resolve("vllm_api") == "vllm"
    info = plugins.found["vllm"]
    assert info.error is None
    assert info.distribution == "chainette-vllm"
    assert info.aliases == ["vllm_api"]
    assert set(info.hooks) == {
        "backend_aliases",
        "check_input_media",
        "engine_options",
        "ensure_running",
        "make_client",
        "make_batch_client",
        "register_commands",
        "server_devices",
        "server_key",
        "stop_engine",
        "translate_sampling",
    }
    assert "vllm" in [listed.name for listed in plugins.all() if listed.error is None]


def test_loading_the_plugin_imports_no_http_or_cli_library():
    code = "import sys, chainette_vllm; bad = [m for m in ('httpx2', 'httpx', 'openai', 'vllm', 'typer', 'rich') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_options_defaults():
    config = register_engine("v", backend="vllm_api", model="m")
    assert config.backend == "vllm"
    assert isinstance(config.options, VllmOptions)
    assert config.options.max_concurrency == 256
    assert config.options.chat_template_kwargs is None
    assert config.options.include_reasoning is None
    assert config.options.timeout == 120.0


def test_options_are_set_and_validated():
    config = register_engine(
        "v", backend="vllm", model="m", chat_template_kwargs={"enable_thinking": False}, include_reasoning=True, max_concurrency=8
    )
    assert config.options.chat_template_kwargs == {"enable_thinking": False}
    assert config.options.include_reasoning is True
    assert config.options.max_concurrency == 8
    with pytest.raises(ConfigError, match="max_concurrency"):
        register_engine("v", backend="vllm", model="m", max_concurrency=0)


def test_option_typo_is_rejected_with_valid_options_listed():
    with pytest.raises(ConfigError) as info:
        register_engine("v", backend="vllm", model="m", chat_template_kwarg={"enable_thinking": False})
    message = str(info.value)
    assert "Did you mean 'chat_template_kwargs'?" in message
    assert f"Valid options: {', '.join(sorted(VllmOptions.model_fields))}." in message
    assert {"chat_template_kwargs", "include_reasoning", "port", "startup_timeout", "gpu_ids", "extra_env"} <= set(VllmOptions.model_fields)


def test_serve_option_defaults_and_checks():
    options = register_engine("v", backend="vllm", model="m").options
    assert (options.port, options.startup_timeout, options.enable_reasoning) == (None, 600.0, False)
    assert (options.extra_serve_flags, options.extra_env, options.gpu_ids) == ([], {}, None)
    assert register_engine("v", backend="vllm", model="m", gpu_ids="GPU-1a2b,GPU-3c4d").options.gpu_ids == "GPU-1a2b,GPU-3c4d"
    for bad in ({"gpu_ids": []}, {"gpu_ids": [-1]}, {"port": 0}, {"gpu_memory_utilization": 1.5}, {"startup_timeout": 0}):
        with pytest.raises(ConfigError, match=next(iter(bad))):
            register_engine("v", backend="vllm", model="m", **bad)


@pytest.mark.parametrize(
    ("flags", "flag", "advice"),
    [
        (["--dtype", "half"], "--dtype", "the option dtype="),
        (["--enforce-eager", "--max_model_len=4096"], "--max-model-len", "the option max_model_len="),
        (["-tp", "2"], "-tp", "the option tensor_parallel_size="),
        (["--port", "1"], "--port", "the option port="),
        (["--host=0.0.0.0"], "--host", "chainette binds the server to 127.0.0.1"),
        (["--api-key", "k"], "--api-key", "the engine's api_key= or api_key_env="),
        (["--enable-reasoning"], "--enable-reasoning", "vLLM removed it; use enable_reasoning=True or reasoning_parser="),
    ],
)
def test_extra_serve_flags_may_not_repeat_a_mapped_flag(flags, flag, advice):
    with pytest.raises(ConfigError) as info:
        register_engine("v", backend="vllm", model="m", extra_serve_flags=flags)
    message = str(info.value)
    assert message.startswith(f"Engine 'v': invalid option for backend 'vllm': extra_serve_flags: {flag} cannot be given here: ")
    assert advice in message


@pytest.mark.parametrize(("name", "instead"), [("VLLM_API_KEY", "api_key="), ("CUDA_VISIBLE_DEVICES", "gpu_ids=")])
def test_extra_env_may_not_set_what_an_option_sets(name, instead):
    with pytest.raises(ConfigError, match=f"extra_env: {name} cannot be set here: use .*{instead}"):
        register_engine("v", backend="vllm", model="m", extra_env={name: "x"})


@pytest.mark.parametrize(
    ("model", "parser"),
    [
        ("Qwen/Qwen3-8B", "qwen3"),
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-7B", "deepseek_r1"),
        ("ibm-granite/granite-3.2-8b-instruct", "granite"),
    ],
)
def test_enable_reasoning_picks_a_reasoning_parser(model, parser):
    flags = serve_spec(register_engine("v", backend="vllm", model=model, enable_reasoning=True)).flags
    assert flags == ("--reasoning-parser", parser)
    chosen = register_engine("v", backend="vllm", model=model, enable_reasoning=True, reasoning_parser="custom")
    assert serve_spec(chosen).flags == ("--reasoning-parser", "custom")


def test_enable_reasoning_on_an_unknown_model_asks_for_the_parser(tmp_path):
    register_engine("v", backend="vllm", model="meta-llama/Llama-3.1-8B-Instruct", enable_reasoning=True)
    chain = Chain(name="c", steps=[Step(id="s", input_model=Text, output_model=Text, engine_name="v", user_prompt="{{text}}")])
    with pytest.raises(ConfigError, match=r"Engine 'v': enable_reasoning=True, .* Set reasoning_parser="):
        chain.run([{"text": "a"}], output_dir=tmp_path / "run")


def key(**options) -> str | None:
    name = options.pop("name", "v")
    return get_plugins().call(
        "vllm", "server_key", config=register_engine(name, backend="vllm", model=options.pop("model", "m"), **options)
    )


def test_server_key_names_the_model_and_serve_options_only(monkeypatch):
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    base = key(dtype="half")
    assert base.startswith("vllm-")
    assert key(name="other", dtype="half", max_concurrency=3, timeout=5, startup_timeout=9, chat_template_kwargs={}) == base
    different = [
        key(dtype="half", model="m2"),
        key(dtype="bfloat16"),
        key(dtype="half", port=9001),
        key(dtype="half", gpu_ids=[1]),
        key(dtype="half", extra_serve_flags=["--enforce-eager"]),
        key(dtype="half", extra_env={"HF_HOME": "/x"}),
        key(dtype="half", api_key="k1"),
        key(dtype="half", api_key="k2"),
    ]
    assert len({base, *different}) == len(different) + 1
    assert key(endpoint="http://gpu-box:9000/v1") is None


def devices(**options) -> list[str] | None:
    return get_plugins().call("vllm", "server_devices", config=register_engine("v", backend="vllm", model="m", **options))


def test_server_devices_are_the_gpus_the_server_starts_on():
    assert devices(gpu_ids=[0, 1]) == ["cuda:0", "cuda:1"]
    assert devices(gpu_ids="2, 3") == ["cuda:2", "cuda:3"]
    assert devices(gpu_ids="1") == ["cuda:1"]
    assert devices() == ["cuda:*"]  # vLLM takes every GPU it sees
    assert devices(batch=True, gpu_ids=[4]) == ["cuda:4"]  # `vllm run-batch` holds them too
    assert devices(endpoint="http://gpu-box:9000/v1", gpu_ids=[0]) is None  # a server someone else runs


def test_every_sampling_field_maps_to_a_top_level_name_without_warning():
    config = register_engine("v", backend="vllm", model="m")
    sampling = SamplingParams(
        temperature=0.2,
        top_p=0.9,
        top_k=40,
        min_p=0.05,
        max_tokens=64,
        stop=["\n\n"],
        seed=7,
        presence_penalty=0.1,
        frequency_penalty=0.3,
        repetition_penalty=1.1,
        n=2,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        wire = translate(config, sampling)
    assert not [w for w in caught if issubclass(w.category, UnsupportedSamplingWarning)]
    expected = sampling.model_dump(exclude={"extra"})
    expected["max_completion_tokens"] = expected.pop("max_tokens")  # vLLM 0.33 deprecates max_tokens
    assert wire == expected


def test_unset_fields_are_not_sent_and_extra_is_merged_last():
    config = register_engine("v", backend="vllm", model="m")
    wire = translate(config, SamplingParams(temperature=0.5, extra={"temperature": 0.0, "min_tokens": 3, "priority": 1}))
    assert wire == {"temperature": 0.0, "min_tokens": 3, "priority": 1}
    assert translate(config, SamplingParams()) == {}


def test_guided_fields_in_extra_are_refused():
    config = register_engine("v", backend="vllm", model="m")
    with pytest.raises(ConfigError, match="guided_json, guided_regex"):
        translate(config, SamplingParams(extra={"guided_regex": "a+", "guided_json": {}, "top_k": 5}))
