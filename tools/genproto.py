"""Generates Python code, type stubs and the descriptor set from protos/.

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

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROTO_ROOT = ROOT / "protos"
GEN_ROOT = ROOT / "gen"
DESCRIPTOR_NAME = "pixelshop.binpb"
# The Envoy ConfigMap is built by kustomize, which only reads files below its own folder.
DESCRIPTOR_COPIES = (ROOT / "deploy" / "k8s" / "base" / "gateway" / DESCRIPTOR_NAME,)


def googleapis_include() -> pathlib.Path:
    """Folder holding google/api/*.proto from googleapis-common-protos."""
    import google.api.annotations_pb2 as annotations

    return pathlib.Path(annotations.__file__).resolve().parents[2]


def proto_files() -> list[str]:
    return sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))


def generate(out: pathlib.Path) -> None:
    """Writes generated Python packages and the descriptor set into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    files = proto_files()
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{googleapis_include()}",
        f"-I{pathlib.Path(protoc.__file__).parent / '_proto'}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        "--include_imports",
        "--include_source_info",
        f"--descriptor_set_out={out / DESCRIPTOR_NAME}",
        *files,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
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
