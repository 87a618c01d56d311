"""The openai backend's engine options (`OpenAIOptions`) and what its modules share about them."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from chainette.engines import EngineConfig, EngineOptions
from chainette_openai.profiles import ProfileName, StructuredOutput, TokenLimit

DEFAULT_KEY_ENV = "OPENAI_API_KEY"


class OpenAIOptions(EngineOptions):
    """Options of the openai backend."""

    key_env: ClassVar[str | None] = DEFAULT_KEY_ENV
    cache_neutral: ClassVar[frozenset[str]] = EngineOptions.cache_neutral | {"organization", "project"}
    same_error_advice: ClassVar[str] = (
        "On an OpenAI-compatible server, set the engine's profile= to the server's preset (llama-cpp, ollama, tgi, ...) "
        "or to 'auto' to probe it."
    )

    max_concurrency: int = Field(32, ge=1, description="Requests in flight at once for this engine.")
    organization: str | None = Field(None, description="OpenAI organization id sent with every request (OpenAI-Organization).")
    project: str | None = Field(None, description="OpenAI project id sent with every request (OpenAI-Project).")
    api: Literal["responses", "chat"] | None = Field(
        None,
        description="'responses' (the Responses API) or 'chat' (Chat Completions). Default: responses on the OpenAI API, "
        "chat on a compatible server (endpoint=).",
    )
    profile: ProfileName | None = Field(
        None,
        description="How the server wants the schema and the token limit: openai, generic, vllm, sglang, lm-studio, ollama, "
        "llama-cpp, tgi, or auto (probe the server at start). Default: openai on the OpenAI API, generic on a compatible server.",
    )
    structured_output: StructuredOutput | None = Field(
        None,
        description="Overrides the profile: json_schema (response_format.json_schema), json_object (the schema in "
        "response_format.schema), json_object_value (in response_format.value), or prompt (the schema only in the prompt).",
    )
    token_limit: TokenLimit | None = Field(
        None, description="Overrides the profile: the field that carries max_tokens, max_completion_tokens or max_tokens."
    )
    strict: bool | None = Field(
        None, description="Overrides the profile: OpenAI's strict mode for json_schema (on with the openai profile, off otherwise)."
    )

    @model_validator(mode="after")
    def _responses_take_json_schema(self) -> OpenAIOptions:
        if self.api == "responses" and self.structured_output in ("json_object", "json_object_value"):
            raise ValueError(f"structured_output={self.structured_output!r} is a Chat Completions form: use api='chat' with it")
        return self


def api_of(config: EngineConfig[OpenAIOptions]) -> str:
    """The API an engine's requests use: its `api` option, else responses on the OpenAI API and chat on a compatible server."""
    return config.options.api or ("chat" if config.endpoint else "responses")
