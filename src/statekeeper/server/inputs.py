"""What the API takes: the base of every JSON request body, and the input rules the
OpenAPI document states.

Python's JSON decoder turns an unpaired ``\\ud800``-style escape into a string
that cannot be encoded: stored, logged or echoed, it fails with a 500. Every
input model refuses one up front, so a body gets a 422 naming the field.

A field the model does not know is refused too: ignored, a misspelt
``"dryrun": true`` (or a ``dry_run`` sent to a route that has none) would do
for real what the caller asked only to see.

A state name, a glob, a prefix, a duration, a token name, a grant and a version
ref are checked where they are read (``StateName``, ``parse_glob``…), the same
for the CLI, the API and the UI. The types below publish those rules in the
OpenAPI document (patterns built from the checks' own constants, see
:mod:`statekeeper.patterns`) without a second check: a client or a fuzzer learns
what the server takes, and a value breaking a rule is still refused by the rule's
own check, in its words.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, GetJsonSchemaHandler, model_validator
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from statekeeper.events import Action
from statekeeper.security.caller import RESERVED_ACTORS
from statekeeper.security.grants import GRANT_PATTERN
from statekeeper.security.policy import Permission
from statekeeper.security.tokens import TOKEN_NAME_PATTERN
from statekeeper.state.globs import GLOB_PATTERN, PREFIX_PATTERN
from statekeeper.state.inspection import VERSION_REF_PATTERN
from statekeeper.terraform import gojson
from statekeeper.terraform.names import MAX_NAME_BYTES, NAME_PATTERN, NAME_RULES
from statekeeper.times import (
    DURATION_GRAMMAR,
    DURATION_PATTERN,
    MAX_DURATION_DAYS,
    POSITIVE_DURATION_PATTERN,
)

__all__ = [
    "AuditActionIn",
    "Documented",
    "DurationIn",
    "GrantIn",
    "JsonIn",
    "LifetimeIn",
    "PrefixIn",
    "StateGlobIn",
    "StateNameIn",
    "TokenNameIn",
    "VersionRefIn",
]


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


class Documented:
    """JSON Schema keywords of a rule another check enforces, for the document only.

    ``Field(pattern=…)`` would have pydantic check the rule a second time, first, in
    its own words ("String should match pattern '^(?:…'") instead of the rule's
    ("the state name 'a//b' has an empty, '.' or '..' segment; a state name is…").
    """

    def __init__(self, **keywords: object) -> None:
        self.keywords = keywords

    def __get_pydantic_json_schema__(
        self, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        schema = handler(core_schema)
        schema.update(self.keywords)
        return schema


StateNameIn = Annotated[
    str,
    Documented(
        pattern=NAME_PATTERN,
        maxLength=MAX_NAME_BYTES,  # in bytes; the pattern allows only ASCII
        description=f"{NAME_RULES} (docs/cli.md#state-names, docs/security.md#reserved-names)",
    ),
]
StateGlobIn = Annotated[
    str,
    Documented(
        pattern=GLOB_PATTERN,
        description="A state glob: a state name in which * matches within one segment, "
        "? one character and ** any number of whole segments (team/**, */prod.tfstate); "
        "no [...] classes, no '/' at the end (docs/security.md#state-globs)",
    ),
]
PrefixIn = Annotated[
    str,
    Documented(
        pattern=PREFIX_PATTERN,
        description="The literal start of state names, not a glob: one holding *, ? or [ "
        "is refused (docs/api.md#routes, docs/cli.md#prefixes)",
    ),
]
DurationIn = Annotated[
    str,
    Documented(
        pattern=DURATION_PATTERN,
        description=f"A duration: {DURATION_GRAMMAR}; at most {MAX_DURATION_DAYS} days "
        "(docs/configuration.md#durations)",
    ),
]
LifetimeIn = Annotated[
    str,
    Documented(
        pattern=POSITIVE_DURATION_PATTERN,
        description=f"A token's lifetime, longer than 0s: {DURATION_GRAMMAR}; at most "
        f"{MAX_DURATION_DAYS} days (docs/configuration.md#durations)",
    ),
]
TokenNameIn = Annotated[
    str,
    Documented(
        pattern=TOKEN_NAME_PATTERN,
        description="1-64 letters, digits and '._-', starting with a letter or digit, and "
        "none of the names the audit trail gives callers that are no token ("
        + ", ".join(sorted(RESERVED_ACTORS))
        + ", in any case) (docs/security.md#api-tokens)",
    ),
]
GrantIn = Annotated[
    str,
    Documented(
        pattern=GRANT_PATTERN,
        description="A grant, PATTERN:PERMISSION: a state glob, then one of "
        + ", ".join(p.name.lower() for p in Permission)
        + ", e.g. team/app/*:write or **:admin (docs/security.md#permissions-and-grants)",
    ),
]
VersionRefIn = Annotated[
    str,
    Documented(
        pattern=VERSION_REF_PATTERN,
        description="A version: its ID as the history lists it, serial:N (N as the history "
        "prints it: no sign, blank space or leading zero) or current (docs/cli.md#versions)",
    ),
]
AuditActionIn = Annotated[
    str,
    Documented(
        enum=[a.value for a in Action],
        description="An event's action (docs/security.md#audit-trail)",
    ),
]
