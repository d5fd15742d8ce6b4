"""The layers in front of FastAPI: the error guard's 500 (server/errors.py)."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from statekeeper.server.errors import ErrorGuard


def _call(app: ErrorGuard) -> httpx.Response:
    async def call() -> httpx.Response:
        # The exception is re-raised after the answer, for the server to log: the
        # transport is told to keep the answer instead.
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            return await client.get("/state/team/a.tfstate")

    return asyncio.run(call())


def test_an_unexpected_error_before_the_answer_is_a_500_in_the_one_error_shape(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise KeyError("a bug")

    response = _call(ErrorGuard(broken))
    assert response.status_code == 500
    assert response.json()["error"] == "internal"
    assert "a bug" not in response.text  # no traceback, no detail
    assert "unexpected error on GET /state/team/a.tfstate" in caplog.text


def test_an_error_after_the_answer_started_is_not_answered_twice() -> None:
    async def cut(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise KeyError("a bug")

    response = _call(ErrorGuard(cut))
    assert response.status_code == 200
    assert response.content == b"part"
