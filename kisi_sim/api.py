"""Kisi's endpoints: :class:`KisiApi`, its identity endpoints :class:`LoginApi`, and the
routing table :func:`api_routes`.

An endpoint takes a parsed :class:`ApiCall` (authenticated, unless its :class:`Route` is
``public``) and returns a :class:`~kisi_sim.responses.SimResponse`; the gates in front of it
(auth, rate limits, faults) live in :mod:`kisi_sim.simulator`. To serve a new Kisi route, add
a method to :class:`KisiApi` and one :class:`Route` line to :func:`api_routes`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from kisi_sim.identity import Account, LoginBook, looks_like_email
from kisi_sim.responses import (
    SimResponse,
    collection_range,
    json_response,
    kisi_error,
    no_content,
)
from kisi_sim.store import COLLECTIONS, CollectionSpec, JsonObject, SimStore

__all__ = [
    "UNMATCHED_ROUTE",
    "ApiCall",
    "InvalidParamError",
    "KisiApi",
    "LoginApi",
    "Route",
    "RouteMatch",
    "Router",
    "api_routes",
]

MAX_OFFSET: Final = 20_000  # Kisi: "offset at most 20,000"
UNMATCHED_ROUTE: Final = "<unmatched>"
UPLOAD_HOST: Final = "https://uploads.kisi-sim.invalid"
SIM_ORGANIZATION: Final[Mapping[str, object]] = {
    "id": 1,
    "name": "Kisi Simulator",
    "domain": "kisi-sim",
}
LOGIN_PAGE: Final = (10, 250)  # Kisi: GET /logins pages 10 by default, at most 250


def _is_present(value: object) -> bool:
    return value is not None and str(value).strip() != ""


VALIDATIONS: Final[Mapping[str, tuple[Callable[[object], bool], str]]] = {
    "name": (_is_present, "can't be blank"),
    "email": (looks_like_email, "can't be blank or invalid"),  # Kisi's own wording
    "role_id": (_is_present, "can't be blank"),
}


# --------------------------------------------------------------------------- Kisi endpoints


class InvalidParamError(ValueError):
    """A query parameter Kisi would reject with 400; the message names it."""


@dataclass(frozen=True)
class ApiCall:
    """A parsed call handed to an endpoint; on a public route an anonymous caller's
    ``user_id`` and ``login_id`` are 0 (real ids start at 1)."""

    user_id: int
    login_id: int
    params: Mapping[str, str]
    query: Mapping[str, list[str]]
    body: Any
    stamp: str


def _query_int(query: Mapping[str, list[str]], name: str, default: int, low: int, high: int) -> int:
    values = query.get(name)
    if not values:
        return default
    raw = values[-1].strip()
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidParamError(f"{name} must be an integer between {low} and {high}")
    return int(raw)


def page_window(query: Mapping[str, list[str]], spec: CollectionSpec) -> tuple[int, int]:
    """``(offset, limit)`` from the query, within Kisi's bounds for the collection."""
    offset = _query_int(query, "offset", 0, 0, MAX_OFFSET)
    limit = _query_int(query, "limit", spec.default_limit, 1, spec.max_limit)
    return offset, limit


def wrapped_attributes(body: object, wrapper: str) -> JsonObject:
    """``body[wrapper]`` when it is an object, else ``{}``.

    Kisi reads ``params.fetch(:lock, {})``-style: a missing wrapper is an empty change, so a
    create fails validation (422) and an update changes nothing (204).
    """
    inner = body.get(wrapper) if isinstance(body, dict) else None
    return dict(inner) if isinstance(inner, dict) else {}


def validation_errors(
    spec: CollectionSpec, attrs: Mapping[str, Any], *, creating: bool
) -> dict[str, list[str]]:
    """Kisi's 422 ``errors`` object; empty when the attributes are acceptable."""
    check, message = VALIDATIONS[spec.required]
    if (creating or spec.required in attrs) and not check(attrs.get(spec.required)):
        return {spec.required: [message]}
    return {}


def permitted(attrs: Mapping[str, Any], spec: CollectionSpec) -> JsonObject:
    return {name: attrs[name] for name in spec.writable if name in attrs}


def row_id(call: ApiCall) -> int:
    """The ``{id}`` of the path; a non-numeric id simply matches no row (Kisi: 403)."""
    raw = call.params.get("id", "")
    return int(raw) if raw.isdigit() else -1


class KisiApi:
    """The endpoints: each takes an :class:`ApiCall` and returns a :class:`SimResponse`."""

    def __init__(self, store: SimStore, logins: LoginApi) -> None:
        self._store = store
        self.logins = logins

    def list_items(self, name: str, call: ApiCall) -> SimResponse:
        offset, limit = page_window(call.query, COLLECTIONS[name])
        rows, total = self._store.page(name, offset, limit)
        return json_response(
            200, rows, [("X-Collection-Range", collection_range(offset, limit, total))]
        )

    def create_item(self, name: str, call: ApiCall) -> SimResponse:
        spec = COLLECTIONS[name]
        attrs = wrapped_attributes(call.body, spec.singular)
        errors = validation_errors(spec, attrs, creating=True)
        if errors:
            return json_response(422, {"errors": errors})
        return json_response(200, self._store.create(name, permitted(attrs, spec), call.stamp))

    def show_item(self, name: str, call: ApiCall) -> SimResponse:
        row = self._store.get(name, row_id(call))
        return kisi_error("not_found_id") if row is None else json_response(200, row)

    def update_item(self, name: str, call: ApiCall) -> SimResponse:
        spec = COLLECTIONS[name]
        if self._store.get(name, row_id(call)) is None:
            return kisi_error("not_found_id")
        attrs = wrapped_attributes(call.body, spec.singular)
        errors = validation_errors(spec, attrs, creating=False)
        if errors:
            return json_response(422, {"errors": errors})
        return self._changed(name, call, permitted(attrs, spec))

    def delete_item(self, name: str, call: ApiCall) -> SimResponse:
        found = self._store.delete(name, row_id(call))
        return no_content() if found else kisi_error("not_found_id")

    def unlock(self, call: ApiCall) -> SimResponse:
        if not self._store.update(
            "locks", row_id(call), {"last_unlocked_at": call.stamp}, call.stamp
        ):
            return kisi_error("not_found_id")
        return json_response(200, {"message": "Unlocked!"})

    def lock_down(self, call: ApiCall) -> SimResponse:
        return self._changed("locks", call, {"locked_down": True})

    def cancel_lockdown(self, call: ApiCall) -> SimResponse:
        return self._changed("locks", call, {"locked_down": False})

    def show_login(self, call: ApiCall) -> SimResponse:
        return json_response(200, {"id": call.login_id, "user_id": call.user_id})

    def show_current_user(self, call: ApiCall) -> SimResponse:
        row = self._store.get("users", call.user_id)
        return kisi_error("not_found_id") if row is None else json_response(200, row)

    def list_organizations(self, call: ApiCall) -> SimResponse:
        """The organizations of the caller: one. Kisi's Python client probes this on start."""
        return json_response(200, [dict(SIM_ORGANIZATION)], [("X-Collection-Range", "0-0/1")])

    def create_event_set(self, call: ApiCall) -> SimResponse:
        row = self._store.create(
            "event_sets", wrapped_attributes(call.body, "event_set"), call.stamp
        )
        return json_response(200, {"id": row["id"]})

    def create_signed_upload_url(self, call: ApiCall) -> SimResponse:
        row = self._store.create("signed_upload_urls", {}, call.stamp)
        return json_response(200, {"id": row["id"], "url": f"{UPLOAD_HOST}/{row['id']}"})

    def _changed(self, name: str, call: ApiCall, attrs: Mapping[str, Any]) -> SimResponse:
        found = self._store.update(name, row_id(call), attrs, call.stamp)
        return no_content() if found else kisi_error("not_found_id")


def _string_field(attrs: Mapping[str, Any], name: str) -> str | None:
    value = attrs.get(name)
    return value if isinstance(value, str) else None


class LoginApi:
    """Kisi's identity endpoints: sign in with e-mail and password, list and delete logins."""

    def __init__(self, book: LoginBook, accounts: Mapping[str, Account]) -> None:
        self._book = book
        self._accounts = dict(accounts)

    def sign_in(self, call: ApiCall) -> SimResponse:
        """``POST /logins`` ``{"login": {...}, "user": {"email", "password", ...}}``: no key
        needed; 200 with a new login's ``secret``, or 401 ``afc516`` for a wrong e-mail or
        password. The ``domain`` and 2FA fields are accepted and not checked."""
        body = call.body if isinstance(call.body, dict) else {}
        user, login = body.get("user"), body.get("login", {})
        if not isinstance(user, dict):
            raise InvalidParamError("user must be an object with email and password")
        if not isinstance(login, dict):
            raise InvalidParamError("login must be an object")
        login_type = login.get("type", "device")
        if login_type not in ("api", "device"):
            raise InvalidParamError("login.type must be api or device")
        expire = login.get("expire", True)
        if not isinstance(expire, bool):
            raise InvalidParamError("login.expire must be true or false")
        email, password = _string_field(user, "email"), _string_field(user, "password")
        account = self._accounts.get((email or "").strip().lower())
        if account is None or password is None or password != account.password:
            return kisi_error("wrong_credentials")
        created, secret = self._book.create(
            account.user_id,
            login_type=login_type,
            name=_string_field(login, "name"),
            expire=expire,
        )
        return json_response(200, {**created.view(), "secret": secret})

    def list_logins(self, call: ApiCall) -> SimResponse:
        """``GET /logins``: the caller's user's logins, paginated, never a secret."""
        default_limit, max_limit = LOGIN_PAGE
        offset = _query_int(call.query, "offset", 0, 0, MAX_OFFSET)
        limit = _query_int(call.query, "limit", default_limit, 1, max_limit)
        logins = self._book.of_user(call.user_id)
        page = [login.view() for login in logins[offset : offset + limit]]
        return json_response(
            200, page, [("X-Collection-Range", collection_range(offset, limit, len(logins)))]
        )

    def sign_out(self, call: ApiCall) -> SimResponse:
        """``DELETE /login``: the login that sent it is deleted, whatever its scheme."""
        self._book.delete([call.login_id])
        return no_content()

    def sign_out_elsewhere(self, call: ApiCall) -> SimResponse:
        """``DELETE /login/elsewhere``: every other login of the user is deleted."""
        others = [lg.id for lg in self._book.of_user(call.user_id) if lg.id != call.login_id]
        self._book.delete(others)
        return no_content()

    def delete_login(self, call: ApiCall) -> SimResponse:
        """``DELETE /logins/{id}``: 404 for no such login, 403 for another user's."""
        login = self._book.get(row_id(call))
        if login is None:
            return kisi_error("login_not_found")
        if login.user_id != call.user_id:
            return kisi_error("not_found_id")
        self._book.delete([login.id])
        return no_content()


@dataclass(frozen=True)
class Route:
    """One endpoint: method, path template (``{id}`` segments) and its action."""

    method: str
    template: str
    action: Callable[[ApiCall], SimResponse]
    public: bool = False  # Kisi declares no security: no key needed (POST /logins)


def api_routes(api: KisiApi) -> tuple[Route, ...]:
    """The routing table: every endpoint the simulator serves, in one place."""
    collection_routes = [
        route
        for name in COLLECTIONS
        for route in (
            Route("GET", f"/{name}", functools.partial(api.list_items, name)),
            Route("POST", f"/{name}", functools.partial(api.create_item, name)),
            Route("GET", f"/{name}/{{id}}", functools.partial(api.show_item, name)),
            Route("PATCH", f"/{name}/{{id}}", functools.partial(api.update_item, name)),
            Route("PUT", f"/{name}/{{id}}", functools.partial(api.update_item, name)),
            Route("DELETE", f"/{name}/{{id}}", functools.partial(api.delete_item, name)),
        )
    ]
    return (
        *collection_routes,
        Route("POST", "/locks/{id}/unlock", api.unlock),
        Route("POST", "/locks/{id}/lock_down", api.lock_down),
        Route("POST", "/locks/{id}/cancel_lockdown", api.cancel_lockdown),
        Route("GET", "/login", api.show_login),
        Route("GET", "/user", api.show_current_user),
        Route("POST", "/event_sets", api.create_event_set),
        Route("POST", "/signed_upload_urls", api.create_signed_upload_url),
        Route("GET", "/organizations", api.list_organizations),
        Route("POST", "/logins", api.logins.sign_in, public=True),
        Route("GET", "/logins", api.logins.list_logins),
        Route("DELETE", "/logins/{id}", api.logins.delete_login),
        Route("DELETE", "/login", api.logins.sign_out),
        Route("DELETE", "/login/elsewhere", api.logins.sign_out_elsewhere),
    )


@dataclass(frozen=True)
class RouteMatch:
    """What a path matched: no template (404), a template without this method (405), a route."""

    template: str | None
    route: Route | None
    params: Mapping[str, str]

    @property
    def name(self) -> str:
        return self.template or UNMATCHED_ROUTE


def _template_pattern(template: str) -> re.Pattern[str]:
    segments = [
        f"(?P<{s[1:-1]}>[^/]+)" if s.startswith("{") else re.escape(s) for s in template.split("/")
    ]
    return re.compile("/".join(segments))


class Router:
    """Matches a method and path against the routing table (pure, no state)."""

    def __init__(self, routes: Sequence[Route]) -> None:
        templates = dict.fromkeys(route.template for route in routes)
        self._patterns = [(_template_pattern(t), t) for t in templates]
        self._routes = {(route.method, route.template): route for route in routes}

    def match(self, method: str, path: str) -> RouteMatch:
        path = path.rstrip("/") or "/"
        for pattern, template in self._patterns:
            found = pattern.fullmatch(path)
            if found:
                return RouteMatch(template, self._routes.get((method, template)), found.groupdict())
        return RouteMatch(None, None, {})
