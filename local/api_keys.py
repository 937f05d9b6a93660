"""Which ``x-api-key`` values the local API accepts, as API Gateway decides it.

A REST API method with ``apiKeyRequired`` accepts a key that exists, is enabled and belongs to
a usage plan of the API's stage. Keys are added, disabled and deleted at any time, without a
redeploy (``create_api_key`` + ``create_usage_plan_key``), so :class:`UsagePlanKeys` looks a
presented key up in the embedded AWS's API Gateway when it is presented, and remembers the
answer for a few seconds. The key ``make run`` was started with (``GATEWAY_API_KEY``) is
always accepted, also while the embedded AWS is down.

    keys = UsagePlanKeys(aws_client("apigateway", endpoint), ttl_s=3)
    keys.configure(plan_ids=["abc123"], static={"local-dev-key": "keyid"})
    keys.key_id("some-callers-key")   # its key id, or None
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

__all__ = [
    "DEFAULT_TTL_S",
    "ApiKeyCheck",
    "KeyLookupError",
    "StaticKeys",
    "UsagePlanKeys",
]

# How long an answer (yes or no) is kept: a key added or disabled works within this many
# seconds; in between, nothing asks the embedded AWS again.
DEFAULT_TTL_S = 3.0
# While the embedded AWS does not answer, a remembered answer is used for this long after it
# expired, rather than refusing a caller who was accepted seconds ago.
DEFAULT_STALE_S = 60.0
# Presented values remembered at most (a caller trying random keys must not grow memory).
_CACHE_LIMIT = 1024
# GetApiKeys pages (API Gateway's maximum page size is 500).
_PAGE = 500
_PAGES = 100


class KeyLookupError(RuntimeError):
    """The embedded AWS could not say whether a key is valid, and nothing recent is known."""


class ApiKeyCheck(Protocol):
    """What the local API asks: the key id of a presented ``x-api-key``, or None."""

    def key_id(self, presented: str) -> str | None: ...


class StaticKeys:
    """A fixed mapping of key values to key ids (tests, and a stack without usage plans)."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._keys = dict(keys)

    def key_id(self, presented: str) -> str | None:
        return self._keys.get(presented)


class UsagePlanKeys:
    """Enabled API keys of the stack's usage plans, looked up when presented, cached briefly."""

    def __init__(
        self,
        apigateway: Any,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        stale_s: float = DEFAULT_STALE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._apigateway = apigateway
        self._ttl_s = ttl_s
        self._stale_s = stale_s
        self._clock = clock
        self._plan_ids: tuple[str, ...] = ()
        self._static: dict[str, str] = {}
        self._cache: OrderedDict[str, tuple[str | None, float]] = OrderedDict()
        self._lock = threading.Lock()

    def configure(self, plan_ids: Iterable[str], static: Mapping[str, str]) -> None:
        """The stack's usage plans and the always-accepted keys; forgets what was cached."""
        with self._lock:
            self._plan_ids = tuple(plan_ids)
            self._static = dict(static)
            self._cache.clear()

    def key_id(self, presented: str) -> str | None:
        """The id of the key with this value if API Gateway would accept it, else None.

        Raises :class:`KeyLookupError` when the embedded AWS does not answer and nothing
        was known about this value within the last ``ttl_s + stale_s`` seconds.
        """
        with self._lock:
            if presented in self._static:
                return self._static[presented]
            cached = self._cache.get(presented)
            plan_ids = self._plan_ids
        now = self._clock()
        if cached is not None and now - cached[1] < self._ttl_s:
            return cached[0]
        try:
            found = self._look_up(presented, plan_ids)
        except (BotoCoreError, ClientError) as error:
            if cached is not None and now - cached[1] < self._ttl_s + self._stale_s:
                return cached[0]
            raise KeyLookupError(f"API key lookup failed: {type(error).__name__}") from error
        with self._lock:
            self._cache[presented] = (found, now)
            self._cache.move_to_end(presented)
            while len(self._cache) > _CACHE_LIMIT:
                self._cache.popitem(last=False)
        return found

    def _look_up(self, presented: str, plan_ids: tuple[str, ...]) -> str | None:
        key = self._find(presented)
        if key is None or not key.get("enabled"):
            return None
        key_id = str(key["id"])
        for plan_id in plan_ids:
            try:
                self._apigateway.get_usage_plan_key(usagePlanId=plan_id, keyId=key_id)
            except ClientError as error:
                if error.response["Error"]["Code"] == "NotFoundException":
                    continue  # not in this plan
                raise
            return key_id
        return None

    def _find(self, presented: str) -> dict[str, Any] | None:
        request: dict[str, Any] = {"includeValues": True, "limit": _PAGE}
        for _ in range(_PAGES):
            page = self._apigateway.get_api_keys(**request)
            for key in page.get("items") or []:
                if key.get("value") == presented:
                    return dict(key)
            position = page.get("position")
            if not position:
                return None
            request["position"] = position
        return None
