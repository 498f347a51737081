"""Architecture invariants, checked on the source tree."""

from __future__ import annotations

import ast
import pathlib
from collections.abc import Callable

from google.api import annotations_pb2
from google.protobuf import descriptor_pb2

from tools import genproto

ROOT = pathlib.Path(__file__).resolve().parents[1]
SERVICES = sorted(p.name for p in (ROOT / "services").iterdir() if (p / "__init__.py").exists())


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def test_a_service_never_imports_another_services_package() -> None:
    offenders = []
    for service in SERVICES:
        for path in (ROOT / "services" / service).rglob("*.py"):
            for module in _imports(path):
                parts = module.split(".")
                if parts[0] == "services" and len(parts) > 1 and parts[1] != service:
                    offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not offenders


def test_runtime_and_gateway_import_no_service() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for folder in ("runtime", "gateway")
        for path in (ROOT / folder).rglob("*.py")
        for module in _imports(path)
        if module.split(".")[0] == "services"
    ]
    assert not offenders


def protobuf_imports(path: pathlib.Path) -> list[str]:
    """Every import of generated code (`pixelshop.…`) or grpc in `path`."""
    return [
        f"{path.relative_to(ROOT)} imports {module}"
        for module in sorted(_imports(path))
        if module.startswith("pixelshop.") or module == "grpc" or module.startswith("grpc.")
    ]


def test_protobuf_stays_in_the_api_layer() -> None:
    """service.py, repository.py and models.py hold domain logic and SQL, never _pb2 types."""
    offenders = [
        hit
        for service in SERVICES
        for name in ("service.py", "repository.py", "models.py")
        if (ROOT / "services" / service / name).exists()
        for hit in protobuf_imports(ROOT / "services" / service / name)
    ]
    assert not offenders


def test_the_protobuf_rule_catches_a_violation() -> None:
    hits = protobuf_imports(ROOT / "tests" / "architecture_fixtures" / "imports_protobuf.py")
    assert len(hits) == 2  # grpc and a _pb2 module


# Where a unit of work may be opened (ADR 0011): the RPC boundary, workflows, and the
# composition root / CLI. Everything else receives a session.
UNIT_OF_WORK_MODULES = frozenset({"api.py", "workflows.py", "server.py", "__main__.py"})
# Calls that open a unit of work when used in `async with`.
_UNIT_OF_WORK_OPENERS = frozenset({"transaction", "transactions", "read", "begin", "unit_of_work"})
FIXTURES = ROOT / "tests" / "architecture_fixtures"


def _service_sources() -> list[pathlib.Path]:
    return [
        path
        for service in SERVICES
        for path in (ROOT / "services" / service).rglob("*.py")
        if "tests" not in path.relative_to(ROOT).parts and "migrations" not in path.parts
    ]


def offenders_in_services(
    rule: Callable[[pathlib.Path], list[str]], *, allowed_in: frozenset[str]
) -> list[str]:
    """What `rule` finds in every service module except those named in `allowed_in`."""
    return [hit for path in _service_sources() if path.name not in allowed_in for hit in rule(path)]


def method_calls(path: pathlib.Path, method: str) -> list[tuple[ast.Call, ast.Attribute, str]]:
    """Every `<something>.<method>(...)` call in the file: the call, its `.method`
    attribute and where it is ('path:line')."""
    tree = ast.parse(path.read_text(), filename=str(path))
    return [
        (node, node.func, f"{path.relative_to(ROOT)}:{node.lineno}")
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == method
    ]


def commit_calls(path: pathlib.Path) -> list[str]:
    """Every `<anything>.commit()` call without arguments (a session's or a connection's;
    a quota reservation's `commit(reservation_id)` is billing's verb) as 'path:line'."""
    return [where for call, _, where in method_calls(path, "commit") if not call.args]


def unit_of_work_openings(path: pathlib.Path) -> list[str]:
    """Every `async with x.transaction()` (or read(), begin(), a transactions factory)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.AsyncWith | ast.With):
            continue
        for item in node.items:
            call = item.context_expr
            if not isinstance(call, ast.Call):
                continue
            name = (
                call.func.attr
                if isinstance(call.func, ast.Attribute)
                else call.func.id
                if isinstance(call.func, ast.Name)
                else ""
            )
            if name in _UNIT_OF_WORK_OPENERS:
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_nobody_commits_outside_the_runtime() -> None:
    offenders = [hit for path in _service_sources() for hit in commit_calls(path)]
    offenders += [
        hit
        for folder in ("gateway", "tools")
        for path in (ROOT / folder).rglob("*.py")
        for hit in commit_calls(path)
    ]
    assert not offenders, "commit through database.transaction(), never by hand"


def test_the_commit_rule_catches_a_violation() -> None:
    assert commit_calls(FIXTURES / "commits_itself.py")


def test_units_of_work_open_only_at_the_boundary_or_in_workflows() -> None:
    offenders = offenders_in_services(unit_of_work_openings, allowed_in=UNIT_OF_WORK_MODULES)
    assert not offenders, "open transactions in api.py or workflows.py (ADR 0011)"


def test_the_unit_of_work_rule_catches_a_violation() -> None:
    hits = unit_of_work_openings(FIXTURES / "opens_its_own_transaction.py")
    assert len(hits) == 2  # database.transaction() and a transactions() factory


# Where SQL may be written (ARCHITECTURE.md): a service's repository.py holds every
# statement, models.py its tables. Elsewhere a session is only passed along (AsyncSession
# for typing) and database errors may be caught (sqlalchemy.exc).
SQL_MODULES = frozenset({"repository.py", "models.py"})
_SQL_FREE_IMPORTS = ("sqlalchemy.ext.asyncio", "sqlalchemy.exc")
# Session (and Reader) methods that run a statement.
_STATEMENT_RUNNERS = frozenset(
    {"execute", "exec_driver_sql", "scalar", "scalars", "fetch", "fetch_one", "fetchrow"}
)


def sql_outside_the_repository(path: pathlib.Path) -> list[str]:
    """Every statement builder imported (sqlalchemy's, or runtime.db.Query) and every
    statement run (`session.execute(...)` and the like) in `path`, as 'path:line'."""
    tree = ast.parse(path.read_text(), filename=str(path))
    where = path.relative_to(ROOT)
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
            if node.module == "runtime.db" and any(a.name == "Query" for a in node.names):
                hits.append(f"{where}:{node.lineno} imports runtime.db.Query")
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _STATEMENT_RUNNERS
        ):
            hits.append(f"{where}:{node.lineno} runs a statement (.{node.func.attr})")
            continue
        else:
            continue
        for module in modules:
            builds_sql = module == "sqlalchemy" or module.startswith("sqlalchemy.")
            if builds_sql and not module.startswith(_SQL_FREE_IMPORTS):
                hits.append(f"{where}:{node.lineno} imports {module}")
    return hits


def test_sql_stays_in_the_repository() -> None:
    offenders = offenders_in_services(sql_outside_the_repository, allowed_in=SQL_MODULES)
    assert not offenders, "statements belong in the service's repository.py"


def test_the_sql_rule_catches_a_violation() -> None:
    hits = sql_outside_the_repository(FIXTURES / "builds_sql_outside_the_repository.py")
    assert len(hits) == 2, hits  # the sqlalchemy import and the session.execute


def benchmark_code(path: pathlib.Path) -> list[str]:
    """A benchmark module (bench*.py, *benchmark*.py) or an import of tools' benchmarks."""
    hits = []
    if path.name.startswith("bench") or "benchmark" in path.name:
        hits.append(f"{path.relative_to(ROOT)} is a benchmark")
    for module in sorted(_imports(path)):
        if module.startswith(("tools.bench", "tools.ingest_benchmark")) or module == "tools":
            hits.append(f"{path.relative_to(ROOT)} imports {module}")
    return hits


def test_no_benchmark_code_inside_service_packages() -> None:
    offenders = [hit for path in _service_sources() for hit in benchmark_code(path)]
    assert not offenders, "benchmarks live in tools/ (make bench)"


def test_the_benchmark_rule_catches_a_violation() -> None:
    hits = benchmark_code(FIXTURES / "bench_inside_a_service.py")
    assert len(hits) == 2  # its name and its import


# The one wall clock (runtime/clock.py): everything else takes a `Clock` passed down.
CLOCK_MODULE = ROOT / "runtime" / "clock.py"


def wall_clock_reads(path: pathlib.Path) -> list[str]:
    """Every `<something>.now(...)`, `.utcnow()` or `.today()` call on a name or attribute
    spelled like a datetime (`datetime`, `dt`, `datetime.datetime`), as 'path:line'."""
    tree = ast.parse(path.read_text(), filename=str(path))
    hits = []
    for node in ast.walk(tree):
        if not (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in {"now", "utcnow", "today"}
        ):
            continue
        owner = node.func.value
        name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
        if name in {"datetime", "dt", "date"}:
            hits.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return hits


def test_time_comes_from_the_runtime_clock() -> None:
    runtime_sources = [
        path
        for path in (ROOT / "runtime").rglob("*.py")
        if "tests" not in path.relative_to(ROOT).parts and path != CLOCK_MODULE
    ]
    offenders = [
        hit for path in [*_service_sources(), *runtime_sources] for hit in wall_clock_reads(path)
    ]
    assert not offenders, "take a runtime.clock.Clock (default utc_now) instead"


def test_the_clock_rule_catches_a_violation() -> None:
    assert len(wall_clock_reads(FIXTURES / "reads_the_wall_clock.py")) == 2
    assert wall_clock_reads(CLOCK_MODULE)  # the one place that may


def own_event_loops(path: pathlib.Path) -> list[str]:
    """Every `asyncio.run(...)` call, as 'path:line': processes start through
    `runtime.loop.run`, on uvloop (ADR 0026)."""
    return [
        where
        for _, attribute, where in method_calls(path, "run")
        if isinstance(attribute.value, ast.Name) and attribute.value.id == "asyncio"
    ]


def test_services_and_the_gateway_run_on_the_runtime_loop() -> None:
    gateway = [p for p in (ROOT / "gateway").rglob("*.py") if "tests" not in p.parts]
    offenders = [hit for path in [*_service_sources(), *gateway] for hit in own_event_loops(path)]
    assert not offenders, "start a process with runtime.loop.run (uvloop), not asyncio.run"


def test_the_event_loop_rule_catches_a_violation() -> None:
    assert len(own_event_loops(FIXTURES / "runs_its_own_loop.py")) == 1


def _descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    data = (genproto.GEN_ROOT / genproto.DESCRIPTOR_NAME).read_bytes()
    return descriptor_pb2.FileDescriptorSet.FromString(data)


def test_public_rpcs_have_http_rules_and_internal_ones_none() -> None:
    problems = []
    for file in _descriptor_set().file:
        if not file.package.startswith("pixelshop."):
            continue
        for service in file.service:
            internal = service.name.endswith("InternalService")
            for method in service.method:
                has_rule = method.options.HasExtension(annotations_pb2.http)
                if internal and has_rule:
                    problems.append(f"{service.name}.{method.name} is internal but routed")
                if not internal and not has_rule:
                    problems.append(f"{service.name}.{method.name} has no google.api.http rule")
    assert not problems


def test_every_message_and_field_is_documented() -> None:
    undocumented = []
    for file in _descriptor_set().file:
        if not file.package.startswith("pixelshop."):
            continue
        documented = {
            tuple(location.path)
            for location in file.source_code_info.location
            if location.leading_comments.strip()
        }
        for m_index, message in enumerate(file.message_type):
            if (4, m_index) not in documented:
                undocumented.append(message.name)
            for f_index, field in enumerate(message.field):
                if (4, m_index, 2, f_index) not in documented:
                    undocumented.append(f"{message.name}.{field.name}")
    assert not undocumented
