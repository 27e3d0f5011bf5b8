"""Request bodies the simulator understands. Like vLLM it ignores fields it does not use, so any
OpenAI or vLLM extra (temperature, top_k, ...) is accepted."""

from __future__ import annotations

from typing import Any, Literal, TypeVar, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from engines.simulator.errors import SimulatorError

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "CompletionRequest",
    "ContentPart",
    "FunctionDefinition",
    "NamedToolChoice",
    "ResponseFormat",
    "StreamOptions",
    "StructuredOutputs",
    "TokenizeRequest",
    "ToolCallIn",
    "ToolParam",
    "parse",
]


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class StreamOptions(_Lenient):
    include_usage: bool | None = False
    continuous_usage_stats: bool | None = False  # vLLM's: every chunk carries its choice's usage so far


class ContentPart(_Lenient):
    type: str = "text"
    text: str | None = None


class FunctionCallIn(_Lenient):
    name: str
    arguments: str | dict[str, Any] = ""


class ToolCallIn(_Lenient):
    """A call in an assistant message of the conversation (the client sends the model's calls back)."""

    id: str | None = None
    type: str = "function"
    function: FunctionCallIn


class ChatMessage(_Lenient):
    role: str  # "tool" messages (results, with their tool_call_id) are rendered like any other
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCallIn] | None = None

    def text(self) -> str:
        if self.content is None or isinstance(self.content, str):
            return self.content or ""
        # Only text parts count; images and audio are outside what the simulator models.
        return "".join(part.text or "" for part in self.content if part.type == "text")


class _Generation(_Lenient):
    model: str | None = None  # vLLM serves its first model name when none is given
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    n: int = Field(1, ge=1, le=128)
    max_tokens: int | None = Field(None, ge=1)
    seed: int | None = None
    stop: str | list[str] | None = None
    ignore_eos: bool = False
    priority: int = 0  # vLLM's, under --scheduling-policy priority: lower is scheduled first

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)

    @property
    def continuous_usage(self) -> bool:
        """vLLM's `continuous_usage_stats`, which counts only with `include_usage`."""
        return self.include_usage and bool(self.stream_options and self.stream_options.continuous_usage_stats)

    def stop_strings(self) -> tuple[str, ...]:
        if not self.stop:
            return ()
        stops = [self.stop] if isinstance(self.stop, str) else self.stop
        return tuple(s for s in stops if s)


class FunctionDefinition(_Lenient):
    name: str = Field(min_length=1)
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON schema; none means no arguments


class ToolParam(_Lenient):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class _FunctionName(_Lenient):
    name: str = Field(min_length=1)


class NamedToolChoice(_Lenient):
    type: Literal["function"] = "function"
    function: _FunctionName


class JsonSchemaFormat(_Lenient):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormat(_Lenient):
    type: str  # "text", "json_object", "json_schema" (vLLM's structural tags are accepted, not honoured)
    json_schema: JsonSchemaFormat | None = None


class StructuredOutputs(_Lenient):
    """vLLM's own field; `json` and `json_object` are honoured, `choice` too (regex and grammar are not)."""

    json_: dict[str, Any] | str | None = Field(None, alias="json")
    json_object: bool | None = None
    choice: list[str] | None = None


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class ChatRequest(_Generation):
    messages: list[ChatMessage] = Field(min_length=1)
    tools: list[ToolParam] | None = None
    tool_choice: ToolChoice | None = None  # vLLM: "auto" when tools are given, else "none"
    parallel_tool_calls: bool | None = True
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = None
    logprobs: bool | None = False
    top_logprobs: int | None = 0
    max_completion_tokens: int | None = Field(None, ge=1)
    thinking_token_budget: int | None = Field(None, ge=0)
    chat_template_kwargs: dict[str, Any] | None = None
    continue_final_message: bool = False
    add_generation_prompt: bool = True

    def check(self) -> None:
        """vLLM's request validation of the fields beyond plain generation, with its messages."""
        if self.tools == []:
            raise SimulatorError(
                400,
                "`tools` must not be an empty array. "
                "Either provide at least one tool or omit the field entirely.",
                param="tools",
            )
        choice = self.tool_choice
        if choice is not None and choice != "none":
            if self.tools is None:
                raise SimulatorError(
                    400, "When using `tool_choice`, `tools` must be set.", param="tool_choice"
                )
            if isinstance(choice, NamedToolChoice) and all(
                tool.function.name != choice.function.name for tool in self.tools
            ):
                raise SimulatorError(
                    400,
                    "The tool specified in `tool_choice` does not match any of the specified `tools`",
                    param="tool_choice",
                )
            so = self.structured_outputs
            if isinstance(choice, NamedToolChoice) and so is not None and (so.json_ or so.choice):
                raise SimulatorError(
                    400, "You can only either use constraints for structured outputs or tools, not both."
                )
        rf = self.response_format
        if rf is not None and rf.type == "json_schema" and rf.json_schema is None:
            raise SimulatorError(
                400,
                "When response_format type is 'json_schema', the 'json_schema' field must be provided.",
                param="response_format",
            )
        top = self.top_logprobs
        if top is not None and top != 0:
            if top < -1:
                raise SimulatorError(
                    400, "`top_logprobs` must be a positive value or -1.", param="top_logprobs"
                )
            if not self.logprobs:
                raise SimulatorError(
                    400, "when using `top_logprobs`, `logprobs` must be set to true.", param="top_logprobs"
                )
            check_logprobs_count(top)

    @property
    def tool_choice_used(self) -> ToolChoice:
        """The effective tool choice: vLLM's default is "auto" with tools (also for an explicit null)."""
        if self.tool_choice is None:
            return "auto" if self.tools else "none"
        return self.tool_choice

    @property
    def token_cap(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    @property
    def enable_thinking(self) -> bool:
        kwargs = self.chat_template_kwargs or {}
        return kwargs.get("enable_thinking", True) is not False


class CompletionRequest(_Generation):
    # One prompt, a batch of prompts, or either as token ids (as vLLM accepts).
    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = None

    def check(self) -> None:
        if self.logprobs is not None:
            if self.logprobs < -1:
                raise SimulatorError(400, "`logprobs` must be a positive value or -1.", param="logprobs")
            check_logprobs_count(self.logprobs)

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if p and isinstance(p[0], int):
            return [p]  # one tokenized prompt
        return list(cast("list[str] | list[list[int]]", p))  # a batch


MAX_LOGPROBS = 20  # vLLM's default --max-logprobs
VOCAB_SIZE = 151936  # the served model's vocabulary (Qwen's config), what a request for -1 (all) asks


def check_logprobs_count(count: int) -> None:
    """vLLM's bound on the logprobs a request may ask per token (-1 asks the whole vocabulary)."""
    wanted = VOCAB_SIZE if count == -1 else count
    if wanted > MAX_LOGPROBS:
        raise SimulatorError(
            400,
            f"Requested sample logprobs of {wanted}, which is greater than max allowed: {MAX_LOGPROBS}",
            param="logprobs",
        )


class TokenizeRequest(_Lenient):
    model: str | None = None
    prompt: str | None = None
    messages: list[ChatMessage] | None = None
    tools: list[ToolParam] | None = None
    add_generation_prompt: bool = True
    continue_final_message: bool = False


_Body = TypeVar("_Body", bound=BaseModel)


def parse(model: type[_Body], body: bytes) -> _Body:
    """Validate a JSON body; malformed or invalid bodies are a 400 as in vLLM."""
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"])
        message = f"{where}: {first['msg']}" if where else first["msg"]
        raise SimulatorError(400, message) from None
