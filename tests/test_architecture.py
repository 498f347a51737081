"""Architecture invariants, checked on the source tree."""

from __future__ import annotations

import ast
import pathlib

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


def test_protobuf_stays_in_the_api_layer() -> None:
    """service.py, repository.py and models.py hold domain logic and SQL, never _pb2 types."""
    offenders = []
    for service in SERVICES:
        for name in ("service.py", "repository.py", "models.py"):
            path = ROOT / "services" / service / name
            if not path.exists():
                continue
            for module in _imports(path):
                if (
                    module.startswith("pixelshop.")
                    or module == "grpc"
                    or module.startswith("grpc.")
                ):
                    offenders.append(f"{path.relative_to(ROOT)} imports {module}")
    assert not offenders


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
