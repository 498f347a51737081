"""Records every SQL statement the services issue, for `make bench-db` to replay at scale.

    python -m tools.hot_statements          # runs the service and e2e suites, recording

The root conftest.py calls `install` when PIXELSHOP_RECORD_STATEMENTS names a file: a
SQLAlchemy `before_cursor_execute` listener on every engine, and an observer of the
statements runtime.db's Readers run on the bare driver, keep each distinct statement
(normalized: an expanded `IN (...)` list counts once) issued from service or runtime code
(never from a test's own SQL), with one sample of its parameters, the function that
issued it and the schema it ran in (the connection's application_name). At exit the
process merges what it saw into the file. docs/hot-statements.json is committed and
regenerated with this module, so a new query is benchmarked without anyone listing it.
"""

from __future__ import annotations

import atexit
import base64
import datetime
import decimal
import json
import os
import pathlib
import re
import subprocess
import sys
import threading
import types
import uuid
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_FILE = ROOT / "docs" / "hot-statements.json"
ENVIRONMENT_VARIABLE = "PIXELSHOP_RECORD_STATEMENTS"

SKIPPED_PREFIXES = (
    "CREATE ",
    "ALTER ",
    "DROP ",
    "COMMENT ",
    "GRANT ",
    "REVOKE ",
    "SET ",
    "SAVEPOINT ",
    "RELEASE SAVEPOINT ",
    "ROLLBACK",
    "BEGIN",
    "COMMIT",
)
SERVICE_SCHEMAS = ("identity", "projects", "assets", "presets", "billing")
_EXPANDED_LIST = re.compile(r"\((\$\d+(?:::[\w\[\]]+)?)(?:, \$\d+(?:::[\w\[\]]+)?)+\)")
REDACTED = "(a PEM private key, redacted)"
_seen: dict[str, dict[str, Any]] = {}
_lock = threading.Lock()


def normalize(statement: str) -> str:
    """The statement with whitespace collapsed and expanded IN lists folded to one item."""
    text = " ".join(statement.split())
    return _EXPANDED_LIST.sub(lambda m: f"({m.group(1)}, ...)", text)


def encode(value: Any) -> Any:
    """A JSON form of a bind parameter that `decode` turns back into the same type."""
    if isinstance(value, str) and "PRIVATE KEY" in value:
        return REDACTED  # a test's signing key: never committed, even a throwaway one
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, uuid.UUID):
        return {"uuid": str(value)}
    if isinstance(value, datetime.datetime):
        return {"datetime": value.isoformat()}
    if isinstance(value, datetime.date):
        return {"date": value.isoformat()}
    if isinstance(value, datetime.timedelta):
        return {"seconds": value.total_seconds()}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, decimal.Decimal):
        return {"decimal": str(value)}
    if isinstance(value, list | tuple):
        return {"list": [encode(v) for v in value]}
    if isinstance(value, dict):
        return {"json": json.dumps(value, default=str)}
    return {"repr": repr(value)}


def decode(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    ((kind, raw),) = value.items()
    if kind == "uuid":
        return uuid.UUID(raw)
    if kind == "datetime":
        return datetime.datetime.fromisoformat(raw)
    if kind == "date":
        return datetime.date.fromisoformat(raw)
    if kind == "seconds":
        return datetime.timedelta(seconds=raw)
    if kind == "bytes":
        return base64.b64decode(raw)
    if kind == "decimal":
        return decimal.Decimal(raw)
    if kind == "list":
        return [decode(v) for v in raw]
    if kind == "json":
        return raw
    return raw


# Frames between a statement's issuer and the recorder: this module, and the Reader.
_PASSED_THROUGH = {"tools/hot_statements.py", "runtime/db.py"}


def _origin(frame: types.FrameType | None) -> str | None:
    """The first service or runtime frame (not a test) that led to the statement."""
    while frame is not None:
        path = pathlib.Path(frame.f_code.co_filename)
        try:
            relative = path.resolve().relative_to(ROOT)
        except ValueError:
            frame = frame.f_back
            continue
        parts = relative.parts
        if relative.as_posix() in _PASSED_THROUGH:
            frame = frame.f_back
            continue
        if parts and ("migrations" in parts or "migrations.py" in parts or parts[0] == "tools"):
            return None
        if parts and parts[0] in ("services", "runtime") and "tests" not in parts:
            return f"{relative.as_posix()}:{frame.f_code.co_name}"
        if parts and ("tests" in parts or parts[0] == "tests"):
            return None
        frame = frame.f_back
    return None


def _caller() -> str | None:
    """Where the statement came from. SQLAlchemy's asyncio layer runs the sync code in a
    greenlet, so the service's coroutine is found through the parent greenlet's frame."""
    origin = _origin(sys._getframe(1))
    if origin is not None:
        return origin
    try:
        import greenlet
    except ImportError:  # pragma: no cover - SQLAlchemy's asyncio support needs it
        return None
    current = greenlet.getcurrent()
    parent = current.parent
    while parent is not None:
        origin = _origin(parent.gr_frame)
        if origin is not None:
            return origin
        parent = parent.parent
    return None


def _schema(connection: Any) -> str:
    try:
        raw = connection.connection.dbapi_connection._connection
        name = str(raw.get_settings().application_name)
    except Exception:
        return ""
    return _schema_of_application(name)


def _schema_of_application(name: str) -> str:
    return name.removeprefix("pixelshop-") if name.startswith("pixelshop-") else ""


def _schema_named_in(text: str) -> str:
    match = re.search(rf"\b({'|'.join(SERVICE_SCHEMAS)})\.\w+", text)
    return match.group(1) if match else ""


def _record(
    connection: Any,
    cursor: Any,
    statement: str,
    parameters: Any,
    context: Any,
    executemany: bool,
) -> None:
    """SQLAlchemy's `before_cursor_execute` listener."""
    sample = parameters[0] if executemany and parameters else parameters
    _keep(statement, sample, lambda: _schema(connection))


def _record_read(statement: str, arguments: Any, application_name: str) -> None:
    """runtime.db's observer of the statements a Reader runs on the bare driver."""
    _keep(statement, arguments, lambda: _schema_of_application(application_name))


def _keep(statement: str, sample: Any, schema_of_connection: Any) -> None:
    text = " ".join(statement.split())
    upper = text.upper()
    if upper.startswith(SKIPPED_PREFIXES) or "alembic_version" in text or "pg_catalog" in text:
        return
    key = normalize(text)
    if key in _seen:
        return
    origin = _caller()
    if origin is None:
        return
    if isinstance(sample, dict):
        params: Any = {k: encode(v) for k, v in sample.items()}
    else:
        params = [encode(v) for v in (sample or ())]
    schema = schema_of_connection() or _schema_named_in(text)
    if schema not in SERVICE_SCHEMAS:
        return  # a test's own scratch schema (e.g. a follower's): nothing to replay
    with _lock:
        _seen.setdefault(
            key,
            {
                "key": key,
                "sql": text,
                "params": params,
                "origin": origin,
                "schema": schema,
            },
        )


def merge(path: pathlib.Path, found: dict[str, dict[str, Any]]) -> None:
    existing: dict[str, dict[str, Any]] = {}
    if path.exists():
        existing = {entry["key"]: entry for entry in json.loads(path.read_text())["statements"]}
    for key, entry in found.items():
        existing.setdefault(key, entry)
    entries = sorted(existing.values(), key=lambda e: (e["schema"], e["origin"], e["key"]))
    document = {
        "about": "Statements the services issued while their test suites ran "
        "(tools/hot_statements.py); replayed at scale by `make bench-db`.",
        "statements": entries,
    }
    path.write_text(json.dumps(document, indent=1, sort_keys=True) + "\n")


def install(path: str) -> None:
    """Starts recording (idempotent); the statements are merged into `path` at exit."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from runtime import db

    if event.contains(Engine, "before_cursor_execute", _record):
        return
    event.listen(Engine, "before_cursor_execute", _record)
    db.statement_observers.append(_record_read)
    atexit.register(lambda: merge(pathlib.Path(path), dict(_seen)))


def main(argv: list[str] | None = None) -> int:
    """Re-records docs/hot-statements.json from the service suites and the e2e suite."""
    import argparse

    from tools.provision import built_services

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=pathlib.Path, default=DEFAULT_FILE)
    parser.add_argument(
        "suites", nargs="*", help="test paths (default: every built service's tests and e2e)"
    )
    options = parser.parse_args(argv)
    suites = options.suites or [f"services/{s}" for s in built_services()] + ["tests/e2e"]
    scratch = options.output.with_suffix(".recording")
    scratch.unlink(missing_ok=True)
    environment = dict(os.environ, **{ENVIRONMENT_VARIABLE: str(scratch)})
    failed = []
    for suite in suites:
        print(f"recording statements while {suite} runs", file=sys.stderr)
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", suite],
            cwd=ROOT,
            env=environment,
            check=False,
        )
        if result.returncode not in (0, 5):
            failed.append(suite)
    if not scratch.exists():
        print("no statement was recorded", file=sys.stderr)
        return 1
    scratch.replace(options.output)
    count = len(json.loads(options.output.read_text())["statements"])
    print(f"wrote {count} statements to {options.output}", file=sys.stderr)
    if failed:
        print(f"suites that failed (statements still kept): {', '.join(failed)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
