"""The UI's forms: sign-in and sign-out, and the admin actions (force-unlock,
reap, rollback), each behind a confirmation page.

Every POST must carry the session's CSRF token. The actions call the same
operator methods as the API and the CLI, so they are audited the same way
and refused the same way to a caller without ``admin``.
"""

from __future__ import annotations

import time
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import RedirectResponse, Response

from statekeeper.errors import StatekeeperError, Unauthenticated
from statekeeper.events import Action, Event
from statekeeper.security.policy import Permission
from statekeeper.security.signouts import session_id
from statekeeper.security.tokens import hash_secret
from statekeeper.server.crosssite import cross_site_write
from statekeeper.server.ui.context import PAGE, Page, open_page
from statekeeper.server.ui.reading import plain
from statekeeper.server.ui.session import DIGEST_CHARS, Session, check_csrf, read_form
from statekeeper.state.rollback import already_current
from statekeeper.terraform.names import StateName

__all__ = ["router"]

router = APIRouter(include_in_schema=False)


def safe_next(target: str) -> str:
    """Only a path on this server (no scheme, no host, no ``//``) is followed after sign-in."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _refused_form(ui: Page, session: Session | None, form: dict[str, str]) -> Response | None:
    """The 403 page for a form that is not this session's, sent from this server's own
    pages; None when it is."""
    request = ui.request
    # A page of another origin on the same site (a sibling subdomain) is sent the
    # SameSite=Lax cookie, and may have set one of its own there (a session whose CSRF
    # token it knows, to sign its visitor in as someone else): the browser's word on
    # where the form came from is asked first, as of every other write.
    elsewhere = cross_site_write(request.method, request.scope["headers"])
    if elsewhere is not None:
        return ui.render("error.html", 403, title="Forbidden", message=elsewhere.message)
    if check_csrf(session, form):
        return None
    return ui.render(
        "error.html",
        403,
        title="Form expired",
        message="This form carried no valid CSRF token (it is older than your session, or it "
        "came from another site). Go back, reload the page and submit it again.",
    )


async def posted(ui: Page, request: Request) -> dict[str, str] | Response:
    """The form a signed-in caller posted, or the answer refusing it (sign-in, CSRF)."""
    if (redirect := ui.gate()) is not None:
        return redirect
    form = await read_form(request)
    if (refused := _refused_form(ui, ui.session, form)) is not None:
        return refused
    return form


@router.api_route("/ui/signin", methods=PAGE)
def signin_page(request: Request, next: str = "/") -> Response:
    ui = Page(request)
    if ui.authenticator.anonymous:
        return ui.keep(RedirectResponse(safe_next(next), status_code=303))
    return ui.render("signin.html", title="Sign in", next=safe_next(next), failure=None)


@router.post("/ui/signin")
async def signin(request: Request) -> Response:
    ui = await open_page(request)
    form = await read_form(request)
    target = safe_next(form.get("next", "/"))
    if (refused := _refused_form(ui, None if ui.fresh else ui.session, form)) is not None:
        return refused
    name, secret = form.get("token", "").strip(), form.get("secret", "").strip()
    try:
        caller = await run_in_threadpool(ui.authenticator.sign_in, name, secret, ui.remote)
    except Unauthenticated as exc:
        event = Event(
            action=Action.AUTHENTICATE,
            actor=name[:64] or "anonymous",
            outcome=exc.code,
            remote_addr=ui.remote,
            detail=f"web sign-in: {exc.message}",
        )
        await run_in_threadpool(ui.services.events.emit, event)
        return ui.render("signin.html", 401, title="Sign in", next=target, failure=exc.message)
    tokens = ui.services.tokens.store
    assert tokens is not None  # sign_in succeeded, so tokens exist
    record = tokens.get(caller.actor)
    digest = (record.sha256 if record else hash_secret(secret))[:DIGEST_CHARS]
    # A new CSRF token at sign-in: a token planted before it is of no use after.
    session = Session.fresh()
    session = Session(csrf=session.csrf, token=caller.actor, digest=digest)
    response = RedirectResponse(target, status_code=303)
    ui.codec.store(response, request, session)
    return response


@router.post("/ui/signout")
async def signout(request: Request) -> Response:
    ui = await open_page(request)
    form = await read_form(request)
    if (refused := _refused_form(ui, None if ui.fresh else ui.session, form)) is not None:
        return refused
    if ui.caller is not None and not ui.authenticator.anonymous:
        # The cookie is checked by its signature alone: recorded as ended, a copy of
        # it (another browser's, a stolen one) is no session either.
        session = ui.session
        until = time.time() + ui.codec.max_age
        if session.oidc is not None:
            until = min(until, session.oidc.until)
        await run_in_threadpool(ui.services.signouts.end, session_id(session.csrf), until)
    response = RedirectResponse("/ui/signin", status_code=303)
    ui.codec.clear(response)
    return response


@router.api_route("/ui/unlock/{name:path}", methods=PAGE)
def unlock_confirm(request: Request, name: str, id: str | None = None) -> Response:
    ui = Page(request)
    if (redirect := ui.gate()) is not None:
        return redirect
    try:
        state = StateName(name)
        if (
            refused := ui.refuse_unless(
                state, Permission.ADMIN, Action.FORCE_UNLOCK, "force-unlock"
            )
        ) is not None:
            return refused
        locks = [plain(lock) for lock in ui.operator.list_locks(ui.who(), name)]
    except StatekeeperError as exc:
        return ui.error(exc, state=name)
    held = [x for x in locks if x["name"] == name]
    # ``id``: one of several holders (plans sharing the lock); else the first listed.
    lock = next((x for x in held if id in (None, x["id"])), None)
    if lock is None and held:
        holder = held[0]
        return ui.render(
            "error.html",
            404,
            title="No such lock",
            message=f"No lock with ID {id} is held on {name} (it was released, or another "
            f"run took the lock since). It is locked now by "
            f"{holder['who'] or holder['actor'] or 'unknown'} for "
            f"{holder['operation'] or 'an unknown operation'}, lock ID {holder['id']}: see "
            "the locks page before removing that one.",
        )
    if lock is None:
        return ui.render(
            "error.html", 404, title="Not locked", message=f"{name} is not locked (any more)."
        )
    return ui.render("unlock.html", title=f"Force-unlock {name}", name=name, lock=lock)


@router.post("/ui/unlock/{name:path}")
async def unlock(request: Request, name: str) -> Response:
    ui = await open_page(request)
    form = await posted(ui, request)
    if isinstance(form, Response):
        return form
    caller, operator = ui.who(), ui.operator
    lock_id = form.get("id") or None
    try:
        released = await run_in_threadpool(
            lambda: plain(operator.unlock(caller, StateName(name), lock_id=lock_id, force=True))
        )
    except StatekeeperError as exc:
        return ui.error(exc)
    return ui.render("done.html", title="Unlocked", action="force-unlock", released=[released])


@router.post("/ui/reap")
async def reap(request: Request) -> Response:
    ui = await open_page(request)
    form = await posted(ui, request)
    if isinstance(form, Response):
        return form
    caller, operator = ui.who(), ui.operator
    dry_run = form.get("confirm") != "yes"
    try:
        released = await run_in_threadpool(
            lambda: [
                plain(r)
                for r in operator.reap(
                    caller,
                    older_than=form.get("older_than", "") or "2h",
                    prefix=form.get("prefix", ""),
                    dry_run=dry_run,
                )
            ]
        )
    except StatekeeperError as exc:
        return ui.error(exc)
    if dry_run:
        # A lock the caller may not remove would fail the reap it confirms: refused now.
        for r in released:
            held = StateName(r["name"])
            refused = ui.refuse_unless(held, Permission.ADMIN, Action.FORCE_UNLOCK, "force-unlock")
            if refused is not None:
                return refused
        return ui.render(
            "reap.html",
            title="Reap stale locks",
            released=released,
            older_than=form.get("older_than", "") or "2h",
            prefix=form.get("prefix", ""),
        )
    return ui.render("done.html", title="Reaped", action="reap", released=released)


@router.api_route("/ui/rollback/{name:path}", methods=PAGE)
def rollback_confirm(request: Request, name: str, to: str) -> Response:
    ui = Page(request)
    if (redirect := ui.gate()) is not None:
        return redirect
    try:
        state = StateName(name)
        if (
            refused := ui.refuse_unless(state, Permission.ADMIN, Action.ROLLBACK, "roll back")
        ) is not None:
            return refused
        # What the rollback will do: from the current version to the restored one.
        diff = ui.operator.diff(ui.who(), state, "current", to)
        if diff.from_ == diff.to:  # the rollback would refuse it: no button that can only fail
            raise already_current(state, diff.to)
    except StatekeeperError as exc:
        return ui.error(exc, state=name)
    return ui.render("rollback.html", title=f"Roll back {name}", name=name, to=to, diff=plain(diff))


@router.post("/ui/rollback/{name:path}")
async def rollback(request: Request, name: str) -> Response:
    ui = await open_page(request)
    form = await posted(ui, request)
    if isinstance(form, Response):
        return form
    caller, operator = ui.who(), ui.operator
    to = form.get("to", "")
    try:
        result = await run_in_threadpool(
            lambda: plain(operator.rollback(caller, StateName(name), to))
        )
    except StatekeeperError as exc:
        return ui.error(exc)
    query = urlencode({"rolled_back": result["restored_version"]})
    return RedirectResponse(f"/ui/state/{quote(name, safe='/:')}?{query}", status_code=303)
