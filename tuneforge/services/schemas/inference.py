"""Request bodies of the inference APIs, as the official clients send them: OCI's
`GenerativeAiInferenceClient` (chat, generateText: camelCase, discriminated by `apiFormat`,
`runtimeType` and `servingType`) and the `openai` SDK (snake_case). Strict types, bounded strings
and lists, so nothing unbounded is parsed; features the serving engine does not have (tools,
documents, images, log-probs) are refused by name rather than silently ignored."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, model_validator

from tuneforge.services.schemas.resources import Int32, Name, OciModel

MAX_TEXT = 1_000_000  # characters in one message; the context limit refuses long prompts long before
Text = Annotated[str, Field(max_length=MAX_TEXT)]
Number = StrictFloat | StrictInt
# Sampling bounds, checked here so an error names the field as the API spells it. OpenAI documents
# temperature 0-2, top_p 0-1 and penalties -2..2. OCI's SDK documents top_p 0-1 (0 disables it, as 1
# does) and top_k (-1 or 0 disable it; Cohere: up to 500), and no bound for temperature or the
# penalties: TuneForge takes OpenAI's there (the same engine answers both APIs).
Temperature = Annotated[Number, Field(ge=0, le=2)]
TopP = Annotated[Number, Field(ge=0, le=1)]
Penalty = Annotated[Number, Field(ge=-2, le=2)]
Stops = Annotated[list[Annotated[str, Field(min_length=1, max_length=1000)]], Field(max_length=16)]
UNSUPPORTED = (
    "tools",
    "toolResults",
    "toolChoice",
    "documents",
    "responseFormat",
    "logProbs",
    "logitBias",
    "prediction",
    "webSearchOptions",
    "isSearchQueriesOnly",
    "citationQuality",
)


class _Request(OciModel):
    """Unknown fields are kept so that the features TuneForge lacks can be named in the error."""

    model_config = ConfigDict(alias_generator=OciModel.model_config["alias_generator"], populate_by_name=True, extra="allow")

    @model_validator(mode="after")
    def _refuse_unsupported(self):
        for name in UNSUPPORTED:
            if (self.model_extra or {}).get(name) not in (None, [], {}):
                raise ValueError(f"{name} is not supported by TuneForge's serving engine")
        return self


# ---- OCI serving modes ----------------------------------------------------------------------


class DedicatedServingMode(OciModel):
    serving_type: Literal["DEDICATED"]
    endpoint_id: Name


class OnDemandServingMode(OciModel):
    serving_type: Literal["ON_DEMAND"]
    model_id: Name


ServingMode = Annotated[DedicatedServingMode | OnDemandServingMode, Field(discriminator="serving_type")]


# ---- OCI chat -------------------------------------------------------------------------------


class TextContent(OciModel):
    type: Literal["TEXT"]
    text: Text


class GenericMessage(OciModel):
    role: Literal["SYSTEM", "USER", "ASSISTANT", "DEVELOPER"]
    content: Annotated[list[TextContent], Field(max_length=64)] = []


class StreamOptions(OciModel):
    is_include_usage: StrictBool | None = None


class GenericChatRequest(_Request):
    api_format: Literal["GENERIC"]
    messages: Annotated[list[GenericMessage], Field(min_length=1, max_length=1000)]
    is_stream: StrictBool = False
    stream_options: StreamOptions | None = None
    num_generations: Annotated[StrictInt, Field(ge=1, le=8)] | None = None
    seed: Int32 | None = None
    is_echo: StrictBool | None = None
    top_k: Annotated[StrictInt, Field(ge=-1, le=1000)] | None = None
    top_p: TopP | None = None
    temperature: Temperature | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    stop: Stops | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)] | None = None
    max_completion_tokens: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)] | None = None


class CohereMessage(OciModel):
    role: Literal["USER", "CHATBOT", "SYSTEM"]
    message: Text


class CohereChatRequest(_Request):
    api_format: Literal["COHERE"]
    message: Text
    chat_history: Annotated[list[CohereMessage], Field(max_length=1000)] | None = None
    preamble_override: Text | None = None
    is_stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)] | None = None
    temperature: Temperature | None = None
    top_k: Annotated[StrictInt, Field(ge=0, le=500)] | None = None
    top_p: TopP | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    stop_sequences: Stops | None = None
    seed: Int32 | None = None
    is_echo: StrictBool | None = None
    is_raw_prompting: StrictBool | None = None


ChatRequest = Annotated[GenericChatRequest | CohereChatRequest, Field(discriminator="api_format")]


class ChatDetails(OciModel):
    compartment_id: Name
    serving_mode: ServingMode
    chat_request: ChatRequest


# ---- OCI generateText (the older text-generation API) ----------------------------------------


class CohereLlmInferenceRequest(_Request):
    runtime_type: Literal["COHERE"]
    prompt: Text
    is_stream: StrictBool = False
    num_generations: Annotated[StrictInt, Field(ge=1, le=5)] | None = None
    is_echo: StrictBool | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)] | None = None
    temperature: Temperature | None = None
    top_k: Annotated[StrictInt, Field(ge=0, le=500)] | None = None
    top_p: TopP | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    stop_sequences: Stops | None = None


class LlamaLlmInferenceRequest(_Request):
    runtime_type: Literal["LLAMA"]
    prompt: Text
    is_stream: StrictBool = False
    num_generations: Annotated[StrictInt, Field(ge=1, le=5)] | None = None
    is_echo: StrictBool | None = None
    top_k: Annotated[StrictInt, Field(ge=-1, le=1000)] | None = None
    top_p: TopP | None = None
    temperature: Temperature | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    stop: Stops | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)] | None = None


InferenceRequest = Annotated[CohereLlmInferenceRequest | LlamaLlmInferenceRequest, Field(discriminator="runtime_type")]


class GenerateTextDetails(OciModel):
    compartment_id: Name
    serving_mode: ServingMode
    inference_request: InferenceRequest


# ---- OpenAI ---------------------------------------------------------------------------------


class _OpenAIRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _refuse_unsupported(self):
        for name in (
            "tools",
            "tool_choice",
            "functions",
            "function_call",
            "logprobs",
            "logit_bias",
            "response_format",
            "prediction",
        ):
            value = (self.model_extra or {}).get(name)
            if value not in (None, False, [], {}):
                raise ValueError(f"{name} is not supported by TuneForge's serving engine")
        return self


class OpenAIContentPart(BaseModel):
    type: Literal["text"]
    text: Text


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: Text | Annotated[list[OpenAIContentPart], Field(max_length=64)]
    name: Annotated[str, Field(max_length=255)] | None = None


class OpenAIStreamOptions(BaseModel):
    include_usage: StrictBool | None = None


class ChatCompletionRequest(_OpenAIRequest):
    model: Name
    messages: Annotated[list[OpenAIMessage], Field(min_length=1, max_length=1000)]
    max_tokens: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)] | None = None
    max_completion_tokens: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)] | None = None
    temperature: Temperature | None = None
    top_p: TopP | None = None
    n: Annotated[StrictInt, Field(ge=1, le=8)] | None = None
    stop: Annotated[str, Field(min_length=1, max_length=1000)] | Stops | None = None
    stream: StrictBool | None = None
    stream_options: OpenAIStreamOptions | None = None
    seed: Int32 | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    user: Annotated[str, Field(max_length=256)] | None = None


class CompletionRequest(_OpenAIRequest):
    model: Name
    prompt: Text | Annotated[list[Text], Field(min_length=1, max_length=16)]
    max_tokens: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)] | None = 16  # OpenAI's default for completions
    temperature: Temperature | None = None
    top_p: TopP | None = None
    n: Annotated[StrictInt, Field(ge=1, le=8)] | None = None
    stop: Annotated[str, Field(min_length=1, max_length=1000)] | Stops | None = None
    stream: StrictBool | None = None
    stream_options: OpenAIStreamOptions | None = None
    seed: Int32 | None = None
    frequency_penalty: Penalty | None = None
    presence_penalty: Penalty | None = None
    echo: StrictBool | None = None
    user: Annotated[str, Field(max_length=256)] | None = None


def content_text(content: Any) -> str:
    """An OpenAI message's content as text (a string, or text parts joined)."""
    return content if isinstance(content, str) else "".join(part.text for part in content)
