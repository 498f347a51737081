"""Generates Python code, type stubs, the descriptor set and OpenAPI from protos/.

One command (`make proto`) produces everything; the output is committed and
`tests/test_generated_code.py` fails when running this again would change it.
"""

from __future__ import annotations

import argparse
import pathlib
import shutil
import sys
import tempfile

from grpc_tools import protoc

from tools import openapi

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "protos"
GEN_ROOT = ROOT / "gen"
DESCRIPTOR_NAME = "pixelshop.binpb"
OPENAPI_NAME = "openapi.json"
# The Envoy ConfigMap is built by kustomize, which only reads files below its own folder.
DESCRIPTOR_COPIES = (ROOT / "deploy" / "k8s" / "base" / "gateway" / DESCRIPTOR_NAME,)


def googleapis_include() -> pathlib.Path:
    """Folder holding google/api/*.proto from googleapis-common-protos."""
    import google.api.annotations_pb2 as annotations

    return pathlib.Path(annotations.__file__).resolve().parents[2]


def proto_files() -> list[str]:
    return sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))


# Envoy's convert_grpc_status can only print the error details it finds in the descriptor
# set; our errors carry ErrorInfo, BadRequest and RetryInfo.
ERROR_DETAIL_PROTOS = ("google/rpc/status.proto", "google/rpc/error_details.proto")


def _protoc(*args: str) -> None:
    includes = [
        f"-I{PROTO_ROOT}",
        f"-I{googleapis_include()}",
        f"-I{pathlib.Path(protoc.__file__).parent / '_proto'}",
    ]
    if protoc.main(["grpc_tools.protoc", *includes, *args]) != 0:
        raise SystemExit("protoc failed")


def generate(out: pathlib.Path) -> None:
    """Writes generated Python packages and the descriptor set into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    files = proto_files()
    _protoc(f"--python_out={out}", f"--pyi_out={out}", f"--grpc_python_out={out}", *files)
    # A second run for the descriptor set, so no google/rpc Python lands in gen/.
    _protoc(
        "--include_imports",
        "--include_source_info",
        f"--descriptor_set_out={out / DESCRIPTOR_NAME}",
        *files,
        *ERROR_DETAIL_PROTOS,
    )
    # The HTTP API described for frontend developers (served at /openapi.json too).
    openapi.write(out / DESCRIPTOR_NAME, out / OPENAPI_NAME)
    for package in {pathlib.Path(f).parent for f in files}:
        for folder in [package, *package.parents][:-1]:
            (out / folder / "__init__.py").touch()
    (out / "pixelshop" / "__init__.py").write_text(
        '"""Generated from protos/ by tools/genproto.py. Do not edit."""\n'
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, default=GEN_ROOT, help="output folder")
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        staging = pathlib.Path(tmp) / "gen"
        generate(staging)
        if options.out.exists():
            shutil.rmtree(options.out)
        shutil.copytree(staging, options.out)
    if options.out == GEN_ROOT:
        for copy in DESCRIPTOR_COPIES:
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(GEN_ROOT / DESCRIPTOR_NAME, copy)
    print(f"generated {len(proto_files())} protos into {options.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
