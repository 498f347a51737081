"""Every kustomize overlay rendered once per test session, as `kubectl kustomize` prints it."""

from __future__ import annotations

import functools
import pathlib
import shutil
import subprocess
from typing import Any

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())

Manifest = dict[str, Any]


@functools.cache
def render(directory: pathlib.Path) -> tuple[Manifest, ...]:
    """The objects `kubectl kustomize DIRECTORY` renders (offline; no cluster involved)."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail(
            "kubectl is not on PATH: it is part of the machine image (kubectl 1.32 with "
            "kustomize) and these tests render deploy/k8s with it"
        )
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if done.returncode != 0:
        pytest.fail(f"kubectl kustomize {directory.relative_to(ROOT)} failed:\n{done.stderr}")
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


@pytest.fixture(params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def manifests(overlay: str) -> tuple[Manifest, ...]:
    return render(K8S / "overlays" / overlay)
