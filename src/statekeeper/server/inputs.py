"""The base of every JSON request body the API takes: text only, known fields only.

Python's JSON decoder turns an unpaired ``\\ud800``-style escape into a string
that cannot be encoded: stored, logged or echoed, it fails with a 500. Every
input model refuses one up front, so a body gets a 422 naming the field.

A field the model does not know is refused too: ignored, a misspelt
``"dryrun": true`` (or a ``dry_run`` sent to a route that has none) would do
for real what the caller asked only to see.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from statekeeper.terraform import gojson

__all__ = ["JsonIn"]


class JsonIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _text_only(cls, data: Any) -> Any:
        if not gojson.is_text(data):
            raise ValueError(
                "a string holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff "
                "escape), which is not text"
            )
        return data
