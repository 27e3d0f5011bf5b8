"""The shape of inference requests, checked at the edge. Only the fields the gateway reads or
OpenAI defines are checked; every other field passes through to the engine untouched."""

from __future__ import annotations

from types import MappingProxyType
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

from gateway.http.errors import GatewayError

__all__ = [
    "MAX_OUTPUT_TOKENS",
    "ChatRequest",
    "CompletionRequest",
    "InferenceRequest",
    "ResponsesChatRequest",
    "ServiceTier",
    "check_request",
]

# Bounds at the edge for every integer that reaches money, SQL or Lua: far above any real engine's context
# (an engine refuses what does not fit its own), far below where 128 choices of it at any price stop being
# exact in a double (Redis' Lua) or in a 64-bit column.
MAX_OUTPUT_TOKENS = 2**31 - 1
_Prob = Annotated[float, Field(ge=0, le=2)]
_Penalty = Annotated[float, Field(ge=-2, le=2)]
_OutputTokens = Annotated[int, Field(ge=1, le=MAX_OUTPUT_TOKENS)]


def _tiers_by_model(value: object) -> object:
    if value is None or value in ("auto", "default"):
        return value
    raise PydanticCustomError(
        "unsupported_value",
        "tiergate's tiers are chosen by the model id (its suffix: `:fast`, `:deliberate`, ... as /v1/models"
        " lists them) or the `x-tiergate-tier` header, and a request's priority by its key; service_tier"
        " takes 'auto' or 'default' only",
    )


# OpenAI's processing tiers (flex, scale, priority): tiergate's tiers are chosen by model id, so only the
# values that ask for nothing in particular are served, and the field is sent to no engine (vLLM takes none)
ServiceTier = Annotated[Literal["auto", "default"] | None, BeforeValidator(_tiers_by_model)]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)


class StreamOptions(_Open):
    include_usage: bool | None = None


class Message(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None


class InferenceRequest(_Open):
    model: str = Field(min_length=1)
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: _OutputTokens | None = None
    n: int | None = Field(None, ge=1, le=128)
    temperature: _Prob | None = None
    top_p: float | None = Field(None, ge=0, le=1)
    presence_penalty: _Penalty | None = None
    frequency_penalty: _Penalty | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    user: str | None = None
    # an OpenAI chat field; on completions too, as a tier hint (the engine ignores it there)
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    service_tier: ServiceTier = None  # not passed on (gateway.inference.handler)

    @property
    def streaming(self) -> bool:
        return self.stream is True

    @property
    def wants_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage is True

    # What the engine will honour, for reservations: the bound on each choice's output and the number of
    # choices it generates. Money and limits are reserved from these, never from a field the engine ignores.
    @property
    def output_field(self) -> str:
        """The field that bounds each choice's output on this endpoint."""
        return "max_tokens"

    @property
    def output_limit(self) -> int | None:
        """The bound the client set on each choice's output; None: it set none."""
        return self.max_tokens

    @property
    def output_param(self) -> str:
        """The parameter that carried `output_limit`, for an error that names it."""
        field = self.output_field if getattr(self, self.output_field, None) is not None else "max_tokens"
        return self.param(field)

    def param(self, field: str) -> str:
        """The name the client gave `field`, for an error that names it (another API's request, translated
        to this one, names some fields otherwise)."""
        return field

    @property
    def default_output(self) -> int | None:
        """The bound OpenAI's API applies when the client sets none; None: up to the model's context."""
        return None

    @property
    def choices(self) -> int:
        """How many choices the engine generates (and reports in its usage)."""
        return self.n or 1


class ChatRequest(InferenceRequest):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: _OutputTokens | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)

    @property
    def output_field(self) -> str:
        return "max_completion_tokens"

    @property
    def output_limit(self) -> int | None:
        # vLLM's rule (and TensorRT-LLM's alias order): max_completion_tokens wins when both are given
        return self.max_completion_tokens or self.max_tokens


# the chat fields a Responses request sets under names of its own (gateway.responses.request.chat_body)
_RESPONSES_NAMES = MappingProxyType(
    {
        "max_completion_tokens": "max_output_tokens",
        "reasoning_effort": "reasoning.effort",
        "response_format": "text.format",
    }
)


class ResponsesChatRequest(ChatRequest):
    """A Responses API request, translated to the chat completion the engines serve
    (`gateway.responses.request`): its errors name the Responses parameters the client set."""

    def param(self, field: str) -> str:
        return _RESPONSES_NAMES.get(field, field)


class CompletionRequest(InferenceRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = None
    logprobs: int | None = Field(None, ge=0, le=20)
    best_of: int | None = Field(None, ge=1, le=128)
    # a chat field the engines ignore on this endpoint: refused, so that nobody believes it bounds anything
    max_completion_tokens: None = None

    @field_validator("max_completion_tokens", mode="before")
    @classmethod
    def _chat_only(cls, value: object) -> None:
        if value is None:
            return
        raise PydanticCustomError(
            "extra_forbidden",
            "/v1/completions does not take max_completion_tokens (a chat completions parameter); bound the"
            " output with max_tokens",
        )

    @property
    def default_output(self) -> int:
        return 16  # OpenAI's and vLLM's default on this endpoint

    @property
    def choices(self) -> int:
        # n choices for each prompt of a batch (a list of strings, or of token-id lists); an engine that
        # takes best_of (TensorRT-LLM) generates that many and keeps n
        prompt = self.prompt
        prompts = len(prompt) if isinstance(prompt, list) and prompt and not isinstance(prompt[0], int) else 1
        return max(self.n or 1, self.best_of or 1) * prompts


R = TypeVar("R", bound=BaseModel)

_CODES = {
    "missing": "missing_required_parameter",
    "extra_forbidden": "unknown_parameter",
    "unsupported_value": "unsupported_value",
}


def check_request(shape: type[R], data: dict[str, Any]) -> R:
    """Validate `data` against `shape`; a failure is a 400 naming the parameter, OpenAI-style."""
    try:
        return shape.model_validate(data)
    except ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        param = _param(error["loc"])
        kind = error["type"]
        if kind == "missing":
            message = f"Missing required parameter: '{param}'."
        else:
            message = f"Invalid value for '{param}': {error['msg']}."
        code = _CODES.get(kind, "invalid_type" if kind.endswith("_type") else "invalid_value")
        raise GatewayError(400, message, param=param, code=code) from None


def _param(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in (
            "str",
            "list[dict[str,any]]",
            "list[str]",
            "list[int]",
            "list[list[int]]",
            "int",
            "float",
        ):
            continue  # pydantic names the union member it tried; the client only cares about the field
        else:
            text += f".{part}" if text else part
    return text
