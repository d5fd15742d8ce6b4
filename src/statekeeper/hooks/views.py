"""The JSON shapes of webhooks, one model each: the API and ``statekeeper hooks --json``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from statekeeper.hooks.model import Subscription

__all__ = [
    "DeliveryList",
    "DeliveryView",
    "HookCreated",
    "HookList",
    "HookView",
    "Redelivered",
]


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class HookView(_View):
    """A subscription as listed: never its secret."""

    name: str
    url: str = Field(
        description="Where deliveries are POSTed; a user name or password in it (a hook "
        "stored before they were refused) shown as ***"
    )
    states: list[str] = Field(description="State globs the subscription covers")
    events: list[str] = Field(description="Event types delivered (state.written, lock.forced, …)")
    source: Literal["config", "command"] = Field(
        "command",
        description="config: from the config file's [[hooks]] (change it there); "
        "command: added by 'hooks add' or the API",
    )
    secret_source: str = Field(
        "stored",
        description="Where the signing secret is, never the secret itself: env VAR, "
        "file PATH or inline for a config file's hook (read by the processes that sign); "
        "stored for one added by command",
    )

    @classmethod
    def of(cls, sub: Subscription) -> HookView:
        return cls(
            name=sub.name,
            url=sub.shown_url,
            states=list(sub.states),
            events=list(sub.events),
            source="config" if sub.configured else "command",
            secret_source=sub.secret_source,
        )


class HookCreated(HookView):
    """A subscription just added with a generated secret: shown in this answer only."""

    secret: str | None = Field(None, description="The signing secret, when statekeeper made it")

    @classmethod
    def added(cls, sub: Subscription, *, show_secret: bool) -> HookCreated:
        return cls(**dict(HookView.of(sub)), secret=sub.secret if show_secret else None)


class HookList(_View):
    hooks: list[HookView]


class DeliveryView(_View):
    """One delivery attempt of the delivery log."""

    seq: int = Field(
        description="The attempt's place in the log, newest highest, the same at every "
        "listing: the row's number on SQLite, its time in microseconds on S3"
    )
    event_id: str
    hook: str
    type: str = Field(description="The event type delivered")
    attempt: int
    time: str = Field(description="RFC 3339, UTC")
    status: int | None = Field(description="The receiver's HTTP status; None: no answer")
    error: str | None
    duration_ms: float | None
    outcome: Literal["delivered", "retry", "dead"]

    @classmethod
    def of(cls, row: dict[str, Any]) -> DeliveryView:
        return cls.model_validate(row)


class DeliveryList(_View):
    deliveries: list[DeliveryView]


class Redelivered(_View):
    """Dead letters queued again."""

    hook: str
    events: list[str] = Field(
        description="The event IDs queued again, each delivered with the same CloudEvents id"
    )
