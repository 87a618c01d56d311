"""Checking a vLLM server the user runs: an engine's `endpoint=` must answer `GET /models` listing its model.

`check_endpoint` returns the engine's endpoint unchanged once the server lists the model requests will
name (`served_model_name`, else `model`), and raises EngineError saying what is wrong otherwise:
unreachable, a rejected key, not a model list, another model. Serve options (SERVE_OPTIONS) only
concern a server chainette starts, so setting them with an endpoint draws a warning. Shown URLs have
their credentials removed (`public_url`) and the key travels only in the Authorization header.
"""

from __future__ import annotations

import warnings

from chainette.engines import EngineConfig
from chainette.errors import EngineError
from chainette.http import bearer, join_url, list_models
from chainette.secrets import public_url
from chainette_vllm.options import API_KEY_ENV, SERVE_OPTIONS, VllmOptions


def check_endpoint(config: EngineConfig[VllmOptions]) -> str:
    """The engine's endpoint, once `GET {endpoint}/models` lists its model; EngineError saying what is wrong otherwise."""
    assert config.endpoint is not None
    ignored = sorted(SERVE_OPTIONS & config.options.model_fields_set)
    if ignored:
        warnings.warn(
            f"Engine '{config.name}': {', '.join(ignored)} only apply to a server chainette starts; ignored because endpoint= is set.",
            stacklevel=2,
        )
    shown = public_url(config.endpoint)
    advice = "Start the server (see docs/vllm.md), fix endpoint=, or leave endpoint out so that chainette starts vLLM itself."
    headers = bearer(config.resolve_api_key(default_env=API_KEY_ENV))
    served = list_models(config, headers, server="vLLM endpoint", advice=advice)
    if served is None:
        raise EngineError(
            f"Engine '{config.name}': {public_url(join_url(config.endpoint, '/models'))} answered without a model list; "
            "endpoint= must be a vLLM server's OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1.",
            kind="bad_endpoint",
        )
    wanted = config.options.served_model_name or config.model
    if wanted not in served:
        raise EngineError(
            f"Engine '{config.name}': the vLLM server at {shown} serves {', '.join(served) or 'no model'}, not '{wanted}'. "
            "Set model= (or served_model_name=) to the name it serves, or point endpoint= at the right server.",
            kind="not_found",
        )
    return config.endpoint
