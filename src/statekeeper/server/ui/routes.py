"""The UI's reading pages: states, one state, a diff, locks and the audit trail.

Every page reads through the operator and services with the signed-in
caller, so it shows exactly what the JSON API would answer that caller.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import FileResponse, Response

from statekeeper.errors import BadRequest, Forbidden, StatekeeperError
from statekeeper.events import OUTCOMES, Action
from statekeeper.security.audit import AuditFilter
from statekeeper.security.policy import Permission, require
from statekeeper.server.ui.context import PAGE, STATIC, Page
from statekeeper.server.ui.listing import SORTS, STALE_AFTER_SECONDS, arrange, fill_details
from statekeeper.server.ui.reading import plain, resources_of, timeline
from statekeeper.state.listing import Unaddressable
from statekeeper.terraform.names import StateName
from statekeeper.times import parse_rfc3339

__all__ = ["router"]

router = APIRouter(include_in_schema=False)

#: Versions shown on a state page before "older versions".
TIMELINE = 20


@router.api_route("/", methods=PAGE)
def states_page(
    request: Request,
    q: str = "",
    sort: str = "name",
    desc: bool = False,
    page: Annotated[int, Query(ge=1)] = 1,
) -> Response:
    ui = Page(request)
    if (redirect := ui.gate()) is not None:
        return redirect
    caller = ui.who()
    operator = ui.operator
    left_out = Unaddressable()
    try:
        shown = arrange(
            # On S3 from the index while it is fresh, else one listing of the bucket:
            # the page never waits for a catch-up.
            operator.summaries(caller, wait=False, unaddressable=left_out),
            query=q,
            sort=sort,
            descending=desc,
            page=page,
            workspace_prefix=ui.services.settings.workspace_key_prefix,
        )
    except StatekeeperError as exc:
        return ui.error(exc)
    rows_shown = [row for group in shown.groups for row in group.rows]
    try:
        facts = ui.services.inventory().facts([row["name"] for row in rows_shown])
    except StatekeeperError:
        facts = {}  # the index cannot catch up now (the store is down): read each state
    fill_details(operator, caller, rows_shown, facts)
    return ui.render(
        "states.html",
        title="States",
        page=shown,
        q=q,
        sort=sort,
        desc=desc,
        sorts=list(SORTS),
        stale_after=STALE_AFTER_SECONDS,
        left_out=left_out.warning(),
    )


@router.api_route("/ui/state/{name:path}", methods=PAGE)
def state_page(
    request: Request,
    name: str,
    version: str | None = None,
    reveal: str | None = None,
    rolled_back: str | None = None,
    restored: str | None = None,
    versions: Annotated[int, Query(ge=1, le=1000)] = TIMELINE,
) -> Response:
    ui = Page(request)
    if (redirect := ui.gate()) is not None:
        return redirect
    caller = ui.who()
    operator = ui.operator
    version = version or None
    history = None
    total = 0
    try:
        state = StateName(name)
        # One view, one read event: the version shown is read once for everything the
        # page says of it, and the timeline's reads of older versions (for its counts)
        # are part of this read, as a rollback's reads are part of the rollback.
        with ui.services.events.event(Action.READ, caller, state) as event:
            current = operator.inspector.read(state, caller, version)
            event.version, event.serial = current.version.version_id, current.version.serial
            shown = plain(operator.describe(state, current))
            if ui.may(state, Permission.READ):
                history, total = timeline(operator.inspector, state, caller, versions, current)
        resources = None if shown.get("encrypted") else resources_of(current.data)
    except StatekeeperError as exc:
        return ui.error(exc, state=name)
    revealed = None
    outputs = shown.get("outputs") or {}
    if reveal and reveal in outputs and outputs[reveal]["sensitive"]:
        # An explicit click by a caller who may read the state's outputs anyway.
        from statekeeper.state.diff import readable_document

        raw = readable_document(current.data).get("outputs", {}).get(reveal, {})
        revealed = (reveal, raw.get("value"))
    return ui.render(
        "state.html",
        title=name,
        name=name,
        shown=shown,
        resources=resources,
        outputs=outputs,
        revealed=revealed,
        history=history,
        total_versions=total,
        versions_shown=versions,
        selected=version,
        rolled_back=rolled_back,
        restored=restored,
        may_read=ui.may(state, Permission.READ),
        may_admin=ui.may(state, Permission.ADMIN),
    )


@router.api_route("/ui/diff/{name:path}", methods=PAGE)
def diff_page(
    request: Request,
    name: str,
    from_: Annotated[str | None, Query(alias="from")] = None,
    to: str | None = None,
) -> Response:
    ui = Page(request)
    if (redirect := ui.gate()) is not None:
        return redirect
    caller = ui.who()
    operator = ui.operator
    try:
        state = StateName(name)
        diff = plain(operator.diff(caller, state, from_ or None, to or None))
        versions = operator.inspector.versions(state, caller)
    except StatekeeperError as exc:
        return ui.error(exc, state=name)
    return ui.render("diff.html", title=f"Diff of {name}", name=name, diff=diff, versions=versions)


@router.api_route("/ui/locks", methods=PAGE)
def locks_page(request: Request, prefix: str = "") -> Response:
    ui = Page(request)
    if (redirect := ui.gate()) is not None:
        return redirect
    left_out = Unaddressable()
    try:
        held = ui.operator.list_locks(ui.who(), prefix, unaddressable=left_out)
    except StatekeeperError as exc:
        return ui.error(exc)
    locks = [plain(lock) for lock in held]
    for lock in locks:
        lock["may_force"] = ui.may(StateName(lock["name"]), Permission.ADMIN)
    return ui.render(
        "locks.html",
        title="Locks",
        locks=locks,
        prefix=prefix,
        stale_after=STALE_AFTER_SECONDS,
        left_out=left_out.warning("lock(s)"),
    )


def _time_filter(text: str, what: str) -> datetime | None:
    if not text.strip():
        return None
    try:
        return parse_rfc3339(text.strip())
    except ValueError as exc:
        raise BadRequest(f"{what} must be an RFC 3339 time, e.g. 2026-01-02T03:04:05Z") from exc


@router.api_route("/ui/audit", methods=PAGE)
def audit_page(
    request: Request,
    state: str = "",
    actor: str = "",
    action: str = "",
    outcome: str = "",
    since: str = "",
    until: str = "",
    limit: Annotated[int, Query(ge=1, le=10_000)] = 200,
) -> Response:
    ui = Page(request)
    if (redirect := ui.gate()) is not None:
        return redirect
    caller = ui.who()
    try:
        with ui.services.events.event(Action.AUDIT_READ, caller, record_success=False):
            require(ui.services.policy, caller, None, Permission.ADMIN, "read the audit trail of")
        start, end = _time_filter(since, "since"), _time_filter(until, "until")
        where = AuditFilter(
            state=state or None,
            actor=actor or None,
            action=action or None,
            outcome=outcome or None,
            since=start,
            until=end,
            limit=100_000,
        )
        events = ui.services.audit.query(where)
    except Forbidden as exc:
        return ui.render("error.html", 403, title="Forbidden", message=exc.message)
    except StatekeeperError as exc:
        return ui.error(exc)
    events = list(reversed(events))[:limit]  # newest first
    return ui.render(
        "audit.html",
        title="Audit trail",
        events=events,
        filters={
            "state": state,
            "actor": actor,
            "action": action,
            "outcome": outcome,
            "since": since,
            "until": until,
        },
        limit=limit,
        outcomes=OUTCOMES,
    )


@router.api_route("/api/docs", methods=PAGE)
def api_docs() -> Response:
    """Swagger UI from the package's own copy (swagger-ui-dist, see docs/ui.md): the
    page works on a server with no way out to a CDN."""
    page = get_swagger_ui_html(
        openapi_url="/api/v1/openapi.json",
        title="statekeeper API",
        swagger_js_url="/ui/static/swagger-ui-bundle.js",
        swagger_css_url="/ui/static/swagger-ui.css",
        swagger_favicon_url="/ui/static/swagger-favicon-32x32.png",
    )
    # The page runs script (Swagger UI's, and its inline start-up): no other site may
    # frame it, and nothing but this server's own may run in it.
    page.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' "
        "'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'"
    )
    return page


@router.api_route("/ui/static/{file}", methods=PAGE)
def static_file(request: Request, file: str) -> Response:
    path = (STATIC / file).resolve()
    if path.parent != STATIC.resolve() or not path.is_file():
        return Page(request).render(
            "error.html", 404, title="Not found", message=f"There is no file named {file} here."
        )
    return FileResponse(path, headers={"Cache-Control": "public, max-age=3600"})


@router.api_route("/favicon.ico", methods=PAGE)
def favicon() -> Response:
    """The icon browsers ask every server for, answered without credentials
    (``PUBLIC_PATHS``): a challenge there would be a failed request on every page."""
    return FileResponse(
        STATIC / "favicon.svg",
        media_type="image/svg+xml",
        headers={"Cache-Control": "public, max-age=86400"},
    )
