"""The anthropic backend's engine options (`AnthropicOptions`)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from chainette.engines import EngineOptions

DEFAULT_KEY_ENV = "ANTHROPIC_API_KEY"
StructuredOutput = Literal["json_schema", "tool"]


class AnthropicOptions(EngineOptions):
    """Options of the anthropic backend."""

    key_env: ClassVar[str | None] = DEFAULT_KEY_ENV
    cache_neutral: ClassVar[frozenset[str]] = EngineOptions.cache_neutral | {"prompt_cache"}
    same_error_advice: ClassVar[str] = (
        "Check that the model takes structured output (structured_output='json_schema' needs Claude Sonnet 4.5, Opus 4.5, "
        "Haiku 4.5 or later; structured_output='tool' works on every model)."
    )

    max_concurrency: int = Field(32, ge=1, description="Requests in flight at once for this engine.")
    max_tokens: int = Field(
        4096, ge=1, description="The answer's token limit when the step's sampling sets no max_tokens (the API requires one)."
    )
    structured_output: StructuredOutput = Field(
        "json_schema",
        description="json_schema (output_config.format, the SDK's transform of the model's schema) or tool (one tool "
        "taking the schema as its input, its use forced; for models without JSON outputs).",
    )
    prompt_cache: bool = Field(
        True,
        description="Mark the system prompt for Anthropic's prompt cache (5-minute) when it is long enough to be cached and "
        "was sent before (a prompt shared by a step's rows).",
    )
    thinking_budget: int | None = Field(
        None, ge=1024, description="Extended thinking with this budget of tokens (None: off); must be below the token limit."
    )

    @model_validator(mode="after")
    def _tool_use_takes_no_thinking(self) -> AnthropicOptions:
        if self.thinking_budget is not None and self.structured_output == "tool":
            raise ValueError(
                "thinking_budget cannot be combined with structured_output='tool': Anthropic's extended thinking does not allow "
                "forcing a tool. Use structured_output='json_schema', or turn thinking off"
            )
        return self
