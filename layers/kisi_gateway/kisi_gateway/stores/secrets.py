"""Service logins from Secrets Manager: one secret per tenant, read through Powertools' cache.

A secret holds the Kisi key itself, or JSON with an ``api_key`` field. :class:`ServiceKeys`
keeps the last key that could be read for each secret, so a Secrets Manager hiccup (or, under
``make run``, a restarted embedded AWS) never stops sends with a key that worked, and re-reads
a secret at once (``refresh``) when Kisi says its key stopped working: a rotated key is in use
within seconds, not at the end of the cache's five minutes.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from kisi_gateway.stores.ports import SecretUnavailableError

LOG = logging.getLogger("kisi_gateway")
SECRET_MAX_AGE_S = 300  # re-read every 5 minutes at the latest, so a rotated key is picked up
REFRESH_EVERY_S = 5.0  # a forced re-read (a paused key) at most this often per secret


class SecretFormatError(ValueError):
    """A secret that holds no usable Kisi key; the message never contains the value."""


def key_from_secret(text: str) -> str:
    """The Kisi key in a secret's text: the text itself, or JSON's ``api_key``.

    >>> key_from_secret('{"api_key": "abc"}')
    'abc'
    """
    if text.lstrip().startswith("{"):
        try:
            doc: Any = json.loads(text)
        except ValueError as exc:
            raise SecretFormatError("the Kisi key secret is not valid JSON") from exc
        key = doc.get("api_key") if isinstance(doc, dict) else None
        if not isinstance(key, str) or not key:
            raise SecretFormatError("the Kisi key secret has no api_key field")
        return key
    if not text.strip():
        raise SecretFormatError("the Kisi key secret is empty")
    return text.strip()


def powertools_secret(secret_id: str, refresh: bool) -> str:
    """A secret's text through Powertools' cache (``refresh``: skip the cache)."""
    from aws_lambda_powertools.utilities import parameters  # noqa: PLC0415 - first use

    value = parameters.get_secret(secret_id, max_age=SECRET_MAX_AGE_S, force_fetch=refresh)
    return value.decode() if isinstance(value, bytes) else str(value)


def read_api_key(secret_id: str, source: Callable[[str, bool], str] = powertools_secret) -> str:
    """The Kisi key in ``secret_id`` now; raises on any failure."""
    return key_from_secret(source(secret_id, False))


class ServiceKeys:
    """The current key of each tenant's service login, the last good one on failure."""

    def __init__(
        self,
        source: Callable[[str, bool], str] = powertools_secret,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._source = source
        self._clock = clock
        self._last: dict[str, str] = {}
        self._refreshed: dict[str, float] = {}
        self._lock = threading.Lock()

    def current(self, secret_id: str) -> str:
        """The key now (through the cache); raises only if it never could be read."""
        return self._read(secret_id, refresh=False)

    def refresh(self, secret_id: str, now: float) -> bool:
        """Re-read ``secret_id`` past the cache, at most every few seconds; did the key change?"""
        with self._lock:
            if now - self._refreshed.get(secret_id, -REFRESH_EVERY_S) < REFRESH_EVERY_S:
                return False
            self._refreshed[secret_id] = now
            before = self._last.get(secret_id)
        return self._read(secret_id, refresh=True) != before

    def _read(self, secret_id: str, *, refresh: bool) -> str:
        try:
            key = key_from_secret(self._source(secret_id, refresh))
        except Exception as exc:  # any failure: keep the key that worked, if there is one
            with self._lock:
                last = self._last.get(secret_id)
            if last is None:
                code = exc.args[0] if isinstance(exc, SecretFormatError) else type(exc).__name__
                raise SecretUnavailableError(f"{secret_id}: {code}") from exc
            LOG.warning("could not re-read a Kisi key; using the last one",
                        extra={"error": type(exc).__name__})
            return last
        with self._lock:
            self._last[secret_id] = key
        return key
