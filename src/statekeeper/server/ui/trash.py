"""The UI's soft delete: delete a state (behind a confirmation), list the trash, restore.

Like the other actions, each POST carries the session's CSRF token and calls
the same services as the API and the CLI (audited, refused without ``admin``).
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from statekeeper.errors import StatekeeperError
from statekeeper.events import Action
from statekeeper.security.policy import Permission
from statekeeper.server.ui.actions import posted
from statekeeper.server.ui.context import PAGE, Page, open_page
from statekeeper.state.history_views import TrashEntry
from statekeeper.terraform.names import StateName

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


@router.api_route("/ui/trash", methods=PAGE)
def trash_page(request: Request, restored: str = "") -> Response:
    ui = Page(request)
    if (redirect := ui.gate()) is not None:
        return redirect
    trash = ui.services.trash
    try:
        entries = [] if trash is None else trash.entries(ui.who())
    except StatekeeperError as exc:
        return ui.error(exc)
    rows = [TrashEntry.of(t).model_dump() for t in entries]
    for row in rows:
        # Restore needs admin on the state itself (a scoped admin's is enough).
        row["may_restore"] = ui.may(StateName(row["name"]), Permission.ADMIN)
    return ui.render("trash.html", title="Deleted states", entries=rows, restored=restored)


@router.api_route("/ui/delete/{name:path}", methods=PAGE)
def delete_confirm(request: Request, name: str) -> Response:
    ui = Page(request)
    if (redirect := ui.gate()) is not None:
        return redirect
    try:
        state = StateName(name)
    except StatekeeperError as exc:
        return ui.error(exc, state=name)
    if (refused := ui.refuse_unless(state, Permission.ADMIN, Action.DELETE, "delete")) is not None:
        return refused
    keep = ui.services.settings.history.trash
    return ui.render("delete.html", title=f"Delete {name}", name=name, keep=keep)


@router.post("/ui/delete/{name:path}")
async def delete(request: Request, name: str) -> Response:
    ui = await open_page(request)
    form = await posted(ui, request)
    if isinstance(form, Response):
        return form
    caller, states = ui.who(), ui.services.states
    try:
        await run_in_threadpool(lambda: states.delete(StateName(name), caller))
    except StatekeeperError as exc:
        return ui.error(exc)
    return RedirectResponse("/ui/trash", status_code=303)


@router.post("/ui/restore/{name:path}")
async def restore(request: Request, name: str) -> Response:
    ui = await open_page(request)
    form = await posted(ui, request)
    if isinstance(form, Response):
        return form
    caller, trash = ui.who(), ui.services.trash
    if trash is None:
        return ui.render("error.html", 501, title="No trash", message="This store keeps no trash.")
    try:
        await run_in_threadpool(lambda: trash.restore(StateName(name), caller))
    except StatekeeperError as exc:
        return ui.error(exc)
    query = urlencode({"restored": name})
    return RedirectResponse(f"/ui/state/{quote(name, safe='/:')}?{query}", status_code=303)
