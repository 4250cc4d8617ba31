"""Wire models of the HTTP API (pydantic): what a client sends and gets back. They also make the
OpenAPI document at /docs. Responses are built as dicts by `mmsent.codes.prediction_to_json` (the
CLI's JSON) and documented here, not re-validated per request.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MEDIA = ("image", "audio")  # inputs of bytes: a file part, `<m>_base64` or `<m>_url` (fetched)
INPUTS = ("text", *(f"{m}_{how}" for m in MEDIA for how in ("url", "base64")), "tabular")


class PostIn(BaseModel):
    """One post. A medium's `<m>_url` and `<m>_base64` exclude each other; some input is given."""

    model_config = ConfigDict(extra="forbid")

    id: str | int | None = Field(None, description="echoed back in the prediction")
    text: str | None = Field(None, description="the post's text (longer texts are read in windows)")
    image_url: str | None = Field(
        None, max_length=4096, description="http(s):// URL of an image (s3:// where enabled)"
    )
    image_base64: str | None = Field(
        None, description="image bytes (JPEG, PNG, ...) in base64; a data: URL prefix is allowed"
    )
    audio_url: str | None = Field(
        None, max_length=4096, description="http(s):// URL of an audio clip (s3:// where enabled)"
    )
    audio_base64: str | None = Field(
        None,
        description="audio bytes (WAV, FLAC, OGG, MP3) in base64; a data: URL prefix is allowed",
    )
    tabular: dict[str, Any] | None = Field(
        None, description="column -> value (a number or a category) of the model's tabular columns"
    )

    @field_validator("id", "image_url", "audio_url")
    @classmethod
    def _unicode(cls, value):
        # a lone surrogate ("\ud800" in the JSON) cannot be fetched or echoed back as UTF-8
        if isinstance(value, str) and not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("must be valid Unicode (no lone surrogates)") from None
        return value

    @model_validator(mode="after")
    def _one_of_each_medium_and_some_input(self) -> PostIn:
        for m in MEDIA:
            if getattr(self, f"{m}_url") is not None and getattr(self, f"{m}_base64") is not None:
                raise ValueError(f"give {m}_url or {m}_base64, not both")
        if all(getattr(self, k) is None for k in INPUTS):
            raise ValueError(f"a post needs one of {', '.join(INPUTS)}")
        return self


class ModelRef(BaseModel):
    name: str
    version: str


class Prediction(BaseModel):
    id: str | int | None = Field(None, description="present when the request gave one")
    label: str | None
    scores: dict[str, float | None] = Field(description="probability of every label")
    confidence: float | None
    modalities_used: list[str]
    fusion_weights: dict[str, float | None] | None = Field(
        description="weight the fusion head gave each modality (None for heads without weights)"
    )
    status: dict[str, str] = Field(description="per modality: ok, missing, unused or an error")
    error: str | None
    model: ModelRef


class Predictions(BaseModel):
    predictions: list[Prediction] = Field(description="one per post, in request order")


class ErrorDetail(BaseModel):
    index: int | None = Field(None, description="the post, for a list request")
    field: str | None = None
    code: str
    message: str | None = None


class ErrorInfo(BaseModel):
    code: str = Field(description="a stable code from mmsent.codes")
    message: str
    details: list[ErrorDetail] = []


class ErrorBody(BaseModel):
    error: ErrorInfo


class Health(BaseModel):
    status: str
    model: ModelRef


class ModelCard(BaseModel):
    name: str
    version: str
    labels: list[str]
    modalities: list[str]
    description: str
    card: dict[str, Any] = Field(
        description="training data, metrics and limits from the checkpoint"
    )
    batching: dict[str, Any] = Field(description="the model deployment's live user_config")
    limits: dict[str, Any] = Field(description="request limits of this API")


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        401: "missing or wrong bearer token (when auth is on)",
        413: "body, an image (bytes or pixels), an audio clip or the request's media over a cap",
        422: "malformed JSON or fields, too many posts, an unusable post (per-post `details`)",
        503: "overloaded or the model unavailable: retry after `Retry-After` seconds",
    }.items()
}
