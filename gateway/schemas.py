"""The shape of inference requests, checked at the edge. Only the fields the gateway reads or
OpenAI defines are checked; every other field passes through to the engine untouched."""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import GatewayError

__all__ = ["ChatRequest", "CompletionRequest", "InferenceRequest", "check_request"]

_Prob = Annotated[float, Field(ge=0, le=2)]
_Penalty = Annotated[float, Field(ge=-2, le=2)]


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
    max_tokens: int | None = Field(None, ge=1)
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

    @property
    def streaming(self) -> bool:
        return self.stream is True

    @property
    def wants_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage is True


class ChatRequest(InferenceRequest):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)


class CompletionRequest(InferenceRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = None
    logprobs: int | None = Field(None, ge=0, le=20)


R = TypeVar("R", bound="InferenceRequest")

_CODES = {"missing": "missing_required_parameter", "extra_forbidden": "unknown_parameter"}


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
