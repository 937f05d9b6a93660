"""moto in server mode with its state kept on disk: ``python -m local.durable_moto``.

moto keeps every queue, table and message in memory, so a crash of it used to lose them all.
This launcher serves moto's own WSGI application and keeps a snapshot of its backends (the
pickled service objects) in ``<state dir>/moto-state.pickle``:

- on start it restores the snapshot, if there is one, before it answers anything;
- a request that changes state is answered only once a snapshot that includes the change is
  on disk (group commit: concurrent changes share one snapshot), so whatever a caller was
  told happened survives a ``kill -9`` of moto;
- a snapshot is written whole to a temporary file and renamed over the last one (atomic:
  a crash mid-write leaves the previous snapshot), and only the services changed since the
  last one are pickled again;
- metric data and log events (``PutMetricData``, ``PutLogEvents``) are not waited for: they
  are saved within ``DEFERRED_S`` seconds (longer when pickling them takes long: at most
  1/``SAVE_SHARE`` of the time goes to it), and the last moment of them may be lost;
- CloudWatch and CloudWatch Logs, whose state grows all session long, have locks of their
  own: saving them never holds up a DynamoDB or SQS request (nothing else changes them, and
  their requests change nothing else);
- ``ReceiveMessage`` is not waited for either (a long poll must not hold the others up):
  a receive lost in a crash makes the message visible again sooner, as SQS's
  at-least-once delivery allows;
- SIGTERM or SIGINT write a last snapshot (flushed to the disk) and stop.

Why not moto's recorder (``MOTO_ENABLE_RECORDING``, ``/moto-api/recorder/replay-recording``)?
It replays the HTTP requests themselves, so replayed receives hand out new receipt handles,
the recorded ``DeleteMessage`` calls then name handles that no longer exist and fail, and
deleted messages come back; it also replays every read and never compacts.

Limits: the snapshot is pickle, so it is only read by the moto version that wrote it (a
different version refuses to start, naming both); it is trusted like code (only load state
written on this machine); CloudFormation's copies of the resources it created are pickled
with CloudFormation, apart from the services' own objects (moto looks resources up by name
when it updates them); a power loss or an OS crash may lose the snapshots written in the last
seconds before it (files are flushed to the disk on shutdown only).

    python -m local.durable_moto -H 127.0.0.1 -p 5000 --state-dir .local-state
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import importlib
import io
import json
import logging
import os
import pickle
import signal
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs

import moto
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from moto.core.base_backend import BackendDict
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

__all__ = [
    "DEFERRED_S",
    "STATE_FILE",
    "DurableApp",
    "MotoState",
    "StateError",
    "main",
    "request_kind",
]

STATE_FILE = "moto-state.pickle"
LOCK_FILE = "moto.lock"
_FORMAT = 1
# Changes nobody waits for (metrics, log events) are saved at least this often.
DEFERRED_S = 1.0
# How long a change may wait for its snapshot before the caller is told it failed.
SAVE_WAIT_S = 10.0
# Attempts at pickling a service while a lock-free request (a receive) changes it.
_PICKLE_ATTEMPTS = 5
# A service nobody waits for is saved at most once per SAVE_SHARE times its last pickling
# took: metric data grows all session, and saving it each second would soon take most of it.
SAVE_SHARE = 20

Key = tuple[str, str]  # (module of the backend class, BackendDict.service_name)
ALL = frozenset({"*"})

# Changes nobody waits for, and requests that run without the state lock.
DEFERRED_ACTIONS = frozenset({"PutMetricData", "PutLogEvents"})
# DynamoDB tables whose writes nobody waits for either (saved within a second, like metrics):
# the send budget's pacing state, written on every send. On AWS a conditional write takes
# milliseconds; here waiting for a snapshot of the whole DynamoDB backend would put one in
# every send's path. A crash of the local stack may lose its last second: the line then
# restarts a second early, and no request is lost (records and queues are still waited for).
DEFERRED_TABLE_MARKERS = ("-BudgetTable",)  # "<stack>-BudgetTable", as local names it
_DEFERRED_TABLE_WRITES = frozenset({"UpdateItem", "PutItem", "TransactWriteItems"})
UNLOCKED_ACTIONS = frozenset({"ReceiveMessage"})
# Actions that only read (the rest, and any action not recognised, count as changes).
_READ_PREFIXES = ("Get", "Describe", "List", "Query", "Scan", "BatchGet", "Head", "Lookup",
                  "Search", "Check", "Validate")
# KMS's cryptographic calls change nothing in moto; every sealed credential is decrypted with
# one, so they must not wait for a snapshot.
_READ_ACTIONS = frozenset({"Encrypt", "Decrypt", "GenerateDataKey",
                           "GenerateDataKeyWithoutPlaintext", "GenerateRandom"})
# Backends whose requests change other services too: everything is saved after them.
_TOUCHES_ALL = frozenset({"moto_api", "cloudformation", "sns", "iam", "sts"})
# Services that no other service's request changes and whose requests change no other
# service (moto runs no alarm actions, and nothing here subscribes to log groups): each has a
# lock of its own. Their state grows with every metric and log line.
SEPARATE = frozenset({"cloudwatch", "logs"})


class StateError(RuntimeError):
    """The saved state cannot be used (another moto version, unreadable, locked)."""


# -- which requests change what -------------------------------------------------------------
def _action(environ: dict[str, Any]) -> str | None:
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return str(target).rsplit(".", 1)[-1]
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if "Action" in query:
        return str(query["Action"][0])
    if str(environ.get("CONTENT_TYPE", "")).startswith("application/x-www-form-urlencoded"):
        body = _peek_body(environ)
        form = parse_qs((body or b"").decode("utf-8", "replace"))
        if "Action" in form:
            return str(form["Action"][0])
    return None


def _peek_body(environ: dict[str, Any]) -> bytes | None:
    """The request's body, left in place for moto to read again; ``None`` when unreadable."""
    if "wsgi.input" not in environ:
        return None
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return None
    body: bytes = environ["wsgi.input"].read(length)
    environ["wsgi.input"] = io.BytesIO(body)
    return body


def _only_deferred_tables(environ: dict[str, Any]) -> bool:
    """Does this DynamoDB request write only to tables of :data:`DEFERRED_TABLE_MARKERS`?
    (The body is read, and left for moto.)"""
    if not str(environ.get("HTTP_X_AMZ_TARGET", "")).startswith("DynamoDB_"):
        return False
    body = _peek_body(environ)
    if body is None:
        return False
    try:
        document = json.loads(body or b"{}")
    except ValueError:
        return False
    if not isinstance(document, dict):
        return False
    items = document.get("TransactItems")
    operations = [operation for entry in items if isinstance(entry, dict)
                  for operation in entry.values()] if isinstance(items, list) else [document]
    tables = [str(op.get("TableName", "")) if isinstance(op, dict) else "" for op in operations]
    return bool(tables) and all(
        any(marker in table for marker in DEFERRED_TABLE_MARKERS) for table in tables)


def request_kind(environ: dict[str, Any]) -> str:
    """``read``, ``write`` (answered once saved), ``deferred`` or ``unlocked``.

    >>> request_kind({"HTTP_X_AMZ_TARGET": "DynamoDB_20120810.PutItem"})
    'write'
    >>> request_kind({"HTTP_X_AMZ_TARGET": "AmazonSQS.ReceiveMessage"})
    'unlocked'
    >>> request_kind({"REQUEST_METHOD": "GET", "PATH_INFO": "/restapis"})
    'read'
    >>> request_kind({"HTTP_X_AMZ_TARGET": "TrentService.Decrypt"})
    'read'
    """
    action = _action(environ)
    if action is None:
        return "read" if environ.get("REQUEST_METHOD", "GET") in ("GET", "HEAD") else "write"
    if action in UNLOCKED_ACTIONS:
        return "unlocked"
    if action in DEFERRED_ACTIONS or (
            action in _DEFERRED_TABLE_WRITES and _only_deferred_tables(environ)):
        return "deferred"
    if action in _READ_ACTIONS or action.startswith(_READ_PREFIXES):
        return "read"
    return "write"


# -- pickling moto's backends ---------------------------------------------------------------
def _load_private_key(pem: bytes) -> Any:
    return serialization.load_pem_private_key(pem, password=None)


def _new_defaultdict(cls: type[defaultdict[Any, Any]], factory: Any) -> defaultdict[Any, Any]:
    """An empty instance of a defaultdict subclass, without calling its ``__init__``."""
    made = cls.__new__(cls)
    defaultdict.__init__(made, factory)
    return made


def _portable_factory(factory: Any) -> Any:
    """A picklable stand-in for a defaultdict's factory written as a lambda.

    moto writes some as ``defaultdict(lambda: defaultdict(dict))``; what the lambda makes
    tells what to use instead (a partial of defaultdict, or the made value's type).
    """
    name = str(getattr(factory, "__qualname__", ""))
    if factory is None or ("<lambda>" not in name and "<locals>" not in name):
        return factory
    sample = factory()
    if isinstance(sample, defaultdict):
        return functools.partial(defaultdict, _portable_factory(sample.default_factory))
    if type(sample)() == sample:
        return type(sample)
    raise pickle.PicklingError(f"defaultdict factory {name} cannot be saved")


_LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


class _BackendPickler(pickle.Pickler):
    """Pickles moto's objects; what cannot be pickled is rebuilt fresh or from its bytes."""

    def reducer_override(self, obj: Any) -> Any:
        # Locks and conditions guard in-memory work only: a restored backend gets new ones.
        if isinstance(obj, _LOCK_TYPES):
            return (type(obj), ())
        if isinstance(obj, threading.Condition):
            return (threading.Condition, ())
        if isinstance(obj, threading.Event):
            return (threading.Event, ())
        if isinstance(obj, defaultdict):
            factory = _portable_factory(obj.default_factory)
            if type(obj) is not defaultdict:
                # A subclass with its own __init__ (SSM's ParameterDict): defaultdict's own
                # reduce would call it with the factory alone.
                state = dict(vars(obj)) or None
                return (_new_defaultdict, (type(obj), factory), state, None, iter(obj.items()))
            if factory is not obj.default_factory:
                return (defaultdict, (factory,), None, None, iter(obj.items()))
        # KMS keys hold OpenSSL objects: kept as PEM.
        if isinstance(obj, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
            pem = obj.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            return (_load_private_key, (pem,))
        return NotImplemented


def _pickle(value: Any) -> bytes:
    buffer = io.BytesIO()
    _BackendPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(value)
    return buffer.getvalue()


def _key(backends: BackendDict[Any]) -> Key:
    return (str(backends.backend.__module__), str(backends.service_name))


def _live() -> dict[Key, BackendDict[Any]]:
    instances: list[BackendDict[Any]] = list(BackendDict._instances)  # type: ignore[misc]
    return {_key(backends): backends for backends in instances}


def _service_state(backends: BackendDict[Any]) -> dict[str, dict[str, Any]]:
    return {
        account: dict(regions.items()) for account, regions in list(backends.items())
    }


def _backend_dict(key: Key) -> BackendDict[Any]:
    module_name, service = key
    module = importlib.import_module(module_name)
    for value in vars(module).values():
        if isinstance(value, BackendDict) and value.service_name == service:
            return value
    # The backend class lives in a submodule; its BackendDict is in the package's models.
    for name in (module_name.rsplit(".", 1)[0] + ".models", module_name.rsplit(".", 1)[0]):
        with contextlib.suppress(ImportError):
            for value in vars(importlib.import_module(name)).values():
                if isinstance(value, BackendDict) and value.service_name == service:
                    return value
    raise StateError(f"moto has no backend {service} in {module_name}")


def summary(backends: dict[Key, Any]) -> str:
    """``sqs: 3 queues, 12 messages; dynamodb: 3 tables, 40 items; 9 other services``."""
    parts = []
    counted = set()
    for key, state in backends.items():
        regions = [backend for accounts in state.values() for backend in accounts.values()]
        if key[1] == "sqs":
            queues = [q for b in regions for q in getattr(b, "queues", {}).values()]
            messages = sum(len(getattr(q, "_messages", ())) for q in queues)
            parts.append(f"sqs: {len(queues)} queues, {messages} messages")
            counted.add(key)
        elif key[1] == "dynamodb":
            tables = [t for b in regions for t in getattr(b, "tables", {}).values()]
            items = sum(len(t) for t in tables)
            parts.append(f"dynamodb: {len(tables)} tables, {items} items")
            counted.add(key)
    others = len(set(backends) - counted)
    if others:
        parts.append(f"{others} other services")
    return "; ".join(parts) or "nothing"


# -- the saved state --------------------------------------------------------------------------
class MotoState:
    """moto's backends on disk: restore at start, snapshots with group commit after changes."""

    def __init__(
        self,
        state_dir: Path,
        *,
        deferred_s: float = DEFERRED_S,
        log: Callable[[str], None] = print,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = state_dir / STATE_FILE
        self.lock = threading.Lock()  # other services' requests, and pickling them
        self._separate = {name: threading.Lock() for name in sorted(SEPARATE)}
        self._deferred_s = deferred_s
        self._log = log
        self._clock = clock
        self._cond = threading.Condition()
        self._changes = 0  # number of the last change to wait for
        self._saved = 0  # changes up to this number are on disk
        self._failed = 0  # changes up to this number could not be saved
        self._dirty: set[str] = set()  # backend names changed since their last pickle
        self._deferred: dict[str, float] = {}  # backend name -> when it first changed
        self._pickle_s: dict[str, float] = {}  # service name -> how long its last pickle took
        self._blobs: dict[Key, bytes] = {}
        self._verified: set[Key] = set()
        self.snapshots = 0

    # restore ---------------------------------------------------------------------------
    def restore(self) -> str | None:
        """Load the snapshot into moto's backends; a summary, or None when there is none."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            document = pickle.loads(raw)  # noqa: S301 - our own file in our own state dir
        except Exception as error:
            raise StateError(
                f"{self.path} cannot be read ({type(error).__name__}: {error})"
            ) from error
        if document.get("format") != _FORMAT or document.get("moto") != moto.__version__:
            raise StateError(
                f"{self.path} was written by moto {document.get('moto')} (format "
                f"{document.get('format')}); this is moto {moto.__version__}"
            )
        restored = {}
        for key, blob in document["services"].items():
            try:
                state = pickle.loads(blob)  # noqa: S301 - as above
            except Exception as error:
                raise StateError(
                    f"{self.path}: {key[1]} cannot be restored ({type(error).__name__}: {error})"
                ) from error
            backends = _backend_dict(key)
            for account, regions in state.items():
                account_backends = backends[account]
                for region, backend in regions.items():
                    dict.__setitem__(account_backends, region, backend)
            self._blobs[key] = blob
            self._verified.add(key)
            restored[key] = state
        saved_at = datetime.fromtimestamp(document["saved_at"], UTC).isoformat(timespec="seconds")
        return f"{summary(restored)} (saved {saved_at})"

    # changes ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def locked(self, backend: str) -> Iterator[None]:
        """Hold what a request to ``backend`` needs: its own lock for a separate service,
        every lock for one that changes others (or an unknown one), else the shared lock."""
        own = self._separate.get(backend)
        if own is not None:
            with own:
                yield
            return
        with contextlib.ExitStack() as held:
            held.enter_context(self.lock)
            if backend in _TOUCHES_ALL or backend == "?":
                for lock in self._separate.values():  # always in this order: no deadlock
                    held.enter_context(lock)
            yield

    def changed(self, backend: str, deferred: bool) -> int:
        """Note a change to ``backend`` (call holding :meth:`locked` for it); its number to wait
        for."""
        with self._cond:
            if deferred:
                self._deferred.setdefault(backend, self._clock())
                self._cond.notify_all()
                return 0
            self._changes += 1
            self._dirty.add(backend)
            self._cond.notify_all()
            return self._changes

    def wait_saved(self, change: int, timeout_s: float = SAVE_WAIT_S) -> bool:
        """Block until change number ``change`` is on disk; False if it could not be saved."""
        with self._cond:
            self._cond.wait_for(
                lambda: self._saved >= change or self._failed >= change, timeout=timeout_s
            )
            return self._saved >= change

    # snapshots -------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Write snapshots until ``stop``: at once for changes, within a second for metrics."""
        while not stop.is_set():
            with self._cond:
                self._cond.wait_for(
                    lambda: stop.is_set() or bool(self._dirty or self._due()),
                    timeout=self._deferred_s,
                )
                if stop.is_set() or not (self._dirty or self._due()):
                    continue
            self.snapshot()

    def _due(self) -> set[str]:
        """The services with changes nobody waits for that should be saved now."""
        now = self._clock()
        return {
            name for name, since in self._deferred.items()
            if now - since >= max(self._deferred_s, SAVE_SHARE * self._pickle_s.get(name, 0.0))
        }

    def snapshot(self, *, everything: bool = False, flush: bool = False) -> bool:
        """Pickle what changed, each service under the lock its requests hold, and write the
        file (atomically). Changes counted up to the moment the shared lock is taken are in
        it: the separate services are pickled after that moment."""
        change = 0
        try:
            with self.lock:
                with self._cond:
                    change = self._changes
                    names = set(self._dirty)
                    due = set(self._deferred) if everything else self._due()
                    names |= due
                    for name in due:
                        del self._deferred[name]
                    self._dirty.clear()
                whole = self._pickle_changed(names, everything, None)
            for name, lock in self._separate.items():
                if whole or name in names:
                    with lock:
                        self._pickle_changed(names, True, name)
            self._write(dict(self._blobs), flush)
        except Exception as error:
            with self._cond:
                self._failed = max(self._failed, change)
                self._cond.notify_all()
            self._log(
                f"moto state: snapshot failed, changes not saved: {type(error).__name__}: {error}"
            )
            return False
        with self._cond:
            self._saved = max(self._saved, change)
            self._cond.notify_all()
        self.snapshots += 1
        return True

    def _pickle_changed(self, names: set[str], everything: bool, separate: str | None) -> bool:
        """Pickle the changed services among the shared ones (``separate`` None) or that one
        separate service; whether every service had to be (a change that touches them all)."""
        live = _live()
        known = {key[1] for key in live}
        whole = everything or bool(names & _TOUCHES_ALL) or bool(names - known)
        for key, backends in live.items():
            if not self._in_pass(key[1], separate):
                continue
            if not whole and key in self._blobs and key[1] not in names:
                continue
            started = time.perf_counter()
            for attempt in range(_PICKLE_ATTEMPTS):
                try:
                    blob = _pickle(_service_state(backends))
                    break
                except RuntimeError:  # a lock-free receive changed it while it was pickled
                    if attempt == _PICKLE_ATTEMPTS - 1:
                        raise
            if key not in self._verified:
                # A service's first snapshot is read back once: a type that pickles but
                # cannot be rebuilt must fail now, not when moto is restarted.
                pickle.loads(blob)  # noqa: S301 - bytes we just made
                self._verified.add(key)
            self._blobs[key] = blob
            self._pickle_s[key[1]] = time.perf_counter() - started
        for key in set(self._blobs) - set(live):
            if self._in_pass(key[1], separate):
                del self._blobs[key]  # reset: the service is empty now
        return whole

    def _in_pass(self, name: str, separate: str | None) -> bool:
        """Is service ``name`` pickled in the pass for ``separate`` (None: the shared one)?"""
        return name == separate if separate else name not in self._separate

    def _write(self, blobs: dict[Key, bytes], flush: bool) -> None:
        document = {
            "format": _FORMAT,
            "moto": moto.__version__,
            "saved_at": time.time(),
            "services": blobs,
        }
        temporary = self.path.with_name(self.path.name + ".tmp")
        with temporary.open("wb") as handle:
            pickle.dump(document, handle, protocol=pickle.HIGHEST_PROTOCOL)
            if flush:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(temporary, self.path)
        if flush:
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)


# -- the WSGI wrapper -------------------------------------------------------------------------
class DurableApp:
    """moto's WSGI application, answering a change only once it is saved."""

    def __init__(self, app: Any, state: MotoState, save_wait_s: float = SAVE_WAIT_S) -> None:
        self._app = app
        self._state = state
        self._save_wait_s = save_wait_s

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        kind = request_kind(environ)
        if kind == "unlocked":
            return self._app(environ, start_response)  # type: ignore[no-any-return]
        captured: list[Any] = []
        body: list[bytes] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured[:] = [status, headers]
            return body.append

        change = 0
        backend = str(getattr(self._app.get_application(environ), "service", "?"))
        with self._state.locked(backend):
            result = self._app(environ, capture)
            try:
                body.extend(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            if kind != "read":
                change = self._state.changed(backend, deferred=kind == "deferred")
        if change and not self._state.wait_saved(change, self._save_wait_s):
            message = b'{"__type":"ServiceUnavailable","message":"moto could not save its state"}'
            start_response("503 Service Unavailable", [
                ("Content-Type", "application/x-amz-json-1.0"),
                ("Content-Length", str(len(message))),
            ])
            return [message]
        start_response(*captured)
        return body


# -- the process ------------------------------------------------------------------------------
@contextlib.contextmanager
def _locked(state_dir: Path) -> Iterator[IO[str]]:
    """Only one moto at a time may own a state directory."""
    handle = (state_dir / LOCK_FILE).open("a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StateError(f"another moto is using {state_dir}") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield handle
    finally:
        handle.close()


def _watch_parent(
    parent_pid: int,
    stop: threading.Event,
    shut_down: Callable[[int, object], None],
    log: Callable[[str], None],
) -> None:
    """Once a second until ``stop``: if ``parent_pid`` is no longer our parent (it died and
    we were handed to another), stop as on SIGTERM, saving the state first.

    Polled rather than Linux's parent-death signal, which follows the thread that started the
    child: moto restarted by the runtime's watchdog thread would be stopped with that thread.
    """
    while not stop.wait(1.0):
        if os.getppid() != parent_pid:
            log(f"moto state: make run (pid {parent_pid}) is gone: saving and stopping")
            shut_down(int(signal.SIGTERM), None)
            return


def list_moto_modules_once() -> None:
    """moto's dispatcher lists its own package directory (a stat of each of its hundreds of
    entries) for every request, twice, under its one lock; that listing cannot change while
    moto runs, so it is made once."""
    from moto import backends  # noqa: PLC0415 - patched only in the server process

    listing = tuple(backends.list_of_moto_modules())

    def listed() -> Iterable[str]:
        return listing

    backends.list_of_moto_modules = listed


def main(argv: list[str] | None = None) -> int:
    """Serve moto on ``host:port`` with its state in ``--state-dir``."""
    parser = argparse.ArgumentParser(description="moto with its state kept on disk")
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--parent-pid", type=int, default=None,
                        help="save and stop once this process is no longer our parent")
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per request otherwise
    os.environ.setdefault("MOTO_PORT", str(args.port))

    def log(line: str) -> None:
        print(line, flush=True)

    args.state_dir.mkdir(parents=True, exist_ok=True)
    try:
        with _locked(args.state_dir):
            state = MotoState(args.state_dir, log=log)
            restored = state.restore()
            log(
                f"moto state: restored {restored} from {state.path}" if restored else
                f"moto state: none in {args.state_dir}, starting empty"
            )
            list_moto_modules_once()
            app = DurableApp(DomainDispatcherApplication(create_backend_app), state)
            server = make_server(
                args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler
            )
            stop = threading.Event()
            writer = threading.Thread(target=state.run, args=(stop,), name="moto-state")
            writer.start()

            def shut_down(signum: int, frame: object) -> None:
                threading.Thread(target=server.shutdown, name="moto-shutdown").start()

            signal.signal(signal.SIGTERM, shut_down)
            signal.signal(signal.SIGINT, shut_down)
            if args.parent_pid is not None:
                threading.Thread(
                    target=_watch_parent, args=(args.parent_pid, stop, shut_down, log),
                    name="moto-parent", daemon=True,
                ).start()
            try:
                server.serve_forever()
            finally:
                stop.set()
                writer.join(timeout=10)
                if state.snapshot(everything=True, flush=True):
                    log(f"moto state: saved to {state.path}")
    except StateError as error:
        print(f"moto state: {error}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    # Run from the imported module, not from __main__: the snapshot refers to this module's
    # helpers (_load_private_key, _new_defaultdict) by name, and must name them the same way
    # whoever reads it.
    from local.durable_moto import main as _main

    raise SystemExit(_main())
