"""Writes gen/openapi.json, the OpenAPI 3.1 document of the HTTP API, from the descriptor set.

    python -m tools.openapi                    # gen/pixelshop.binpb -> gen/openapi.json
    python -m tools.openapi --check            # exits 1 when the committed file is stale

`make proto` runs it through tools/genproto.py; tests/test_generated_code.py fails when the
committed document is not what the descriptor set gives. gateway/openapi.py builds it.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Sequence

from gateway import openapi
from gateway.descriptors import DescriptorSet

ROOT = pathlib.Path(__file__).resolve().parents[1]
DESCRIPTOR_SET = ROOT / "gen" / "pixelshop.binpb"
OUTPUT = ROOT / "gen" / "openapi.json"


def render(descriptor_set: pathlib.Path) -> str:
    return openapi.dump(openapi.build(DescriptorSet.load(descriptor_set)))


def write(descriptor_set: pathlib.Path, output: pathlib.Path) -> None:
    output.write_text(render(descriptor_set))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--descriptor-set", type=pathlib.Path, default=DESCRIPTOR_SET)
    parser.add_argument("--output", type=pathlib.Path, default=OUTPUT)
    parser.add_argument("--check", action="store_true", help="exit 1 when OUTPUT is stale")
    options = parser.parse_args(argv)
    text = render(options.descriptor_set)
    if options.check:
        current = options.output.read_text() if options.output.exists() else ""
        if current != text:
            print(f"openapi: {options.output} is stale; run make proto", file=sys.stderr)
            return 1
        return 0
    options.output.write_text(text)
    print(f"openapi: wrote {options.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
