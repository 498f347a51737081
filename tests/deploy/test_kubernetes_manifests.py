"""deploy/k8s: every overlay renders, validates offline, and keeps the deploy invariants.

SPEC section 4 (deploy): per gRPC service a Deployment with native gRPC probes, resources
and a locked-down securityContext; a headless Service; ServiceAccount, PDB, HPA and a
migration Job; NetworkPolicies that deny everything and then allow only the calls the
code makes; Envoy with its config and descriptor set in a ConfigMap; Secrets referenced,
never committed.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import yaml
from kubernetes_validate import validate
from kubernetes_validate.utils import ValidationError

from tests.deploy.conftest import K8S, ROOT, Manifest
from tools import envoy_config, provision

# The oldest Kubernetes we support: native gRPC probes are GA since 1.27, the preStop
# `sleep` action since 1.30 (beta, on by default).
KUBERNETES_VERSION = "1.30"
NAMESPACE = "pixelshop"
RUN_AS_USER = 10001
METRICS_PORT = 9090

# The calls the code makes (caller -> callees). identity calls nobody: the others follow
# its outbox (ListEvents) to purge a deleted user's data.
CALLS: Mapping[str, frozenset[str]] = {
    "gateway": frozenset({"identity", "projects", "assets", "presets", "billing"}),
    "identity": frozenset(),
    "projects": frozenset({"identity", "assets", "presets", "billing"}),
    "assets": frozenset({"identity", "billing"}),
    "presets": frozenset({"identity"}),
    "billing": frozenset({"identity"}),
}
# Services that reach the internet over HTTPS: S3, Gemini, Stripe.
EXTERNAL_HTTPS = frozenset({"assets", "projects", "billing"})
POSTGRES_PORT = 5432


def of_kind(manifests: Iterable[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def named(manifests: Iterable[Manifest], kind: str) -> dict[str, Manifest]:
    return {m["metadata"]["name"]: m for m in of_kind(manifests, kind)}


def grpc_services(manifests: Iterable[Manifest]) -> dict[str, Manifest]:
    """The gRPC service Deployments by name (identity, assets, ...)."""
    return {
        name: deployment
        for name, deployment in named(manifests, "Deployment").items()
        if deployment["metadata"]["labels"]["app.kubernetes.io/component"] == "grpc-service"
    }


def pod_specs(manifests: Iterable[Manifest]) -> Iterator[tuple[str, dict[str, Any]]]:
    for manifest in manifests:
        if manifest["kind"] in ("Deployment", "Job"):
            yield manifest["metadata"]["name"], manifest["spec"]["template"]["spec"]


def containers(manifests: Iterable[Manifest]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, spec in pod_specs(manifests):
        for container in [*spec.get("initContainers", []), *spec["containers"]]:
            yield f"{name}/{container['name']}", container


def test_every_object_validates_strictly(manifests: tuple[Manifest, ...]) -> None:
    problems = []
    for manifest in manifests:
        try:
            validate(manifest, KUBERNETES_VERSION, strict=True)
        except ValidationError as error:
            problems.append(f"{manifest['kind']}/{manifest['metadata']['name']}: {error.message}")
    assert not problems, "\n".join(problems)


def test_everything_lives_in_the_pixelshop_namespace(manifests: tuple[Manifest, ...]) -> None:
    assert named(manifests, "Namespace").keys() == {NAMESPACE}
    elsewhere = [
        f"{m['kind']}/{m['metadata']['name']}"
        for m in manifests
        if m["kind"] != "Namespace" and m["metadata"].get("namespace") != NAMESPACE
    ]
    assert not elsewhere


def test_no_secret_is_committed(manifests: tuple[Manifest, ...]) -> None:
    """Secrets are created by the operator (deploy/README.md) and only referenced here."""
    assert not of_kind(manifests, "Secret")
    # Not in files the overlays leave out either, nor generated from committed files.
    for path in sorted(K8S.rglob("*.y*ml")):
        for document in yaml.safe_load_all(path.read_text()):
            if isinstance(document, dict):
                where = path.relative_to(ROOT)
                assert document.get("kind") != "Secret", f"{where} holds a Secret"
                assert "secretGenerator" not in document, f"{where} generates a Secret"


def test_every_secret_reference_is_documented(manifests: tuple[Manifest, ...]) -> None:
    readme = (ROOT / "deploy" / "README.md").read_text()
    missing = set()
    for _, container in containers(manifests):
        for variable in container.get("env", []):
            reference = variable.get("valueFrom", {}).get("secretKeyRef")
            if reference:
                for text in (reference["name"], reference["key"]):
                    if f"`{text}`" not in readme:
                        missing.add(text)
        assert not any("secretRef" in source for source in container.get("envFrom", []))
    assert not missing, f"deploy/README.md does not list these Secrets or keys: {sorted(missing)}"


def test_every_image_is_pinned(manifests: tuple[Manifest, ...]) -> None:
    for name, container in containers(manifests):
        image: str = container["image"]
        reference = image.rsplit("/", 1)[-1]
        assert "@sha256:" in image or ":" in reference, f"{name}: {image} has no tag"
        assert not reference.endswith(":latest"), f"{name}: {image} is not pinned"
        assert container.get("imagePullPolicy") != "Always", name


def test_pods_run_locked_down(manifests: tuple[Manifest, ...]) -> None:
    for name, spec in pod_specs(manifests):
        assert spec.get("automountServiceAccountToken") is False, name
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] == RUN_AS_USER, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for container in spec["containers"]:
            where = f"{name}/{container['name']}"
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True, where
            assert context["runAsUser"] == RUN_AS_USER, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
            # The root file system is read-only: /tmp is the one writable place.
            mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]], where
            resources = container["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys(), where
            assert {"cpu", "memory"} <= resources["limits"].keys(), where


def test_grpc_services_have_native_grpc_probes(manifests: tuple[Manifest, ...]) -> None:
    services = grpc_services(manifests)
    assert services, "no gRPC service Deployment rendered"
    # runtime/server.py serves health for "" and the names the server registers; a probe
    # for any other name answers NOT_FOUND and the pod never becomes ready.
    public = envoy_config.public_services(envoy_config.DESCRIPTOR_SET)
    for name, deployment in services.items():
        spec = deployment["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        port = envoy_config.UPSTREAMS[name].port
        assert container["command"] == ["python", "-m", f"services.{name}"]
        assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
            "grpc": port,
            "metrics": METRICS_PORT,
        }
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == port, f"{name} {probe}"
        # Readiness asks for the service's own name, which it serves alongside "".
        own = {service.full_name for service in public if service.upstream == name}
        assert container["readinessProbe"]["grpc"]["service"] in own, f"{name}: not one of {own}"
        assert "replicas" not in deployment["spec"], f"{name}: the HPA owns the replica count"


def test_grpc_services_are_configured_for_a_pod(manifests: tuple[Manifest, ...]) -> None:
    """runtime/config.py reads PIXELSHOP_<SERVICE>_*: listen on every address, metrics on."""
    config_maps = named(manifests, "ConfigMap")
    for name, deployment in grpc_services(manifests).items():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        env: dict[str, str] = {}
        for source in container["envFrom"]:
            env.update(config_maps[source["configMapRef"]["name"]]["data"])
        prefix = f"PIXELSHOP_{name.upper()}_"
        # A pod listens on its own address, not on loopback.
        assert env[f"{prefix}HOST"] == "0.0.0.0"
        assert env[f"{prefix}PORT"] == str(envoy_config.UPSTREAMS[name].port)
        assert env[f"{prefix}METRICS_PORT"] == str(METRICS_PORT)
        for peer, upstream in envoy_config.UPSTREAMS.items():
            assert env[f"PIXELSHOP_{peer.upper()}_ADDR"] == (
                f"{upstream.address(peer)}:{upstream.port}"
            )
        secrets = {
            v["name"]: v["valueFrom"]["secretKeyRef"]
            for v in container["env"]
            if "secretKeyRef" in v.get("valueFrom", {})
        }
        assert {"PIXELSHOP_INTERNAL_SECRET", f"{prefix}DATABASE_URL"} <= secrets.keys()
        # Only what the process needs: never the admin URL of the migrations.
        assert "PIXELSHOP_DATABASE_URL" not in secrets


def test_grpc_services_are_headless(manifests: tuple[Manifest, ...]) -> None:
    services = named(manifests, "Service")
    for name in grpc_services(manifests):
        spec = services[name]["spec"]
        assert spec["clusterIP"] == "None", f"{name}: gRPC balances per call only when headless"
        ports = {p["name"]: p["port"] for p in spec["ports"]}
        assert ports == {"grpc": envoy_config.UPSTREAMS[name].port, "metrics": METRICS_PORT}


def test_every_service_has_its_companions(manifests: tuple[Manifest, ...]) -> None:
    accounts = named(manifests, "ServiceAccount")
    budgets = named(manifests, "PodDisruptionBudget")
    scalers = named(manifests, "HorizontalPodAutoscaler")
    jobs = named(manifests, "Job")
    for name, spec in pod_specs(manifests):
        account = accounts[spec["serviceAccountName"]]
        assert account["automountServiceAccountToken"] is False, name
    for name, deployment in named(manifests, "Deployment").items():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert budgets[name]["spec"]["selector"]["matchLabels"] == selector
        target = scalers[name]["spec"]["scaleTargetRef"]
        assert (target["kind"], target["name"]) == ("Deployment", name)
        assert scalers[name]["apiVersion"] == "autoscaling/v2"
    for name in grpc_services(manifests):
        job = jobs[f"{name}-migrate"]["spec"]
        (container,) = job["template"]["spec"]["containers"]
        assert container["command"] == ["python", "-m", "tools.provision", "--service", name]
        assert name in provision.ALL_SERVICES
        assert job["backoffLimit"] >= 1
        assert job["ttlSecondsAfterFinished"] > 0
        assert job["template"]["spec"]["restartPolicy"] == "Never"
        # Its own account and labels: `kubectl apply -l app.kubernetes.io/component=migration`
        # (deploy/README.md) must bring the Job and its account, nothing else.
        account = accounts[job["template"]["spec"]["serviceAccountName"]]
        assert account["metadata"]["labels"]["app.kubernetes.io/component"] == "migration"
        assert job["template"]["metadata"]["labels"]["app.kubernetes.io/component"] == "migration"
        variables = {v["name"] for v in container["env"]}
        assert variables == {"PIXELSHOP_DATABASE_URL", f"PIXELSHOP_{name.upper()}_DB_PASSWORD"}


def test_gateway_runs_envoy_from_the_generated_config(manifests: tuple[Manifest, ...]) -> None:
    deployment = named(manifests, "Deployment")["gateway"]
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    assert container["image"].startswith("envoyproxy/envoy:")
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert "tcpSocket" in container["livenessProbe"] or "httpGet" in container["livenessProbe"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": envoy_config.LISTENER_PORT, "ops": envoy_config.OPS_PORT}
    assert container["args"][:2] == ["--config-path", f"{envoy_config.CONFIG_DIR}/envoy.yaml"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == envoy_config.CONFIG_DIR)
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    config_map = named(manifests, "ConfigMap")[volume["configMap"]["name"]]
    # What Envoy reads is exactly what the generator wrote and `make proto` copied.
    gateway_dir = K8S / "base" / "gateway"
    assert config_map["data"]["envoy.yaml"] == (gateway_dir / "envoy.yaml").read_text()
    descriptor = config_map["binaryData"]["pixelshop.binpb"]
    assert base64.b64decode(descriptor) == envoy_config.DESCRIPTOR_SET.read_bytes()
    # Envoy sheds load at its heap bound; the kernel must not kill it before that.
    assert _bytes(container["resources"]["limits"]["memory"]) > envoy_config.MAX_HEAP_BYTES
    assert "clusterIP" not in named(manifests, "Service")["gateway"]["spec"]


def test_network_policies_deny_by_default(manifests: tuple[Manifest, ...]) -> None:
    policies = of_kind(manifests, "NetworkPolicy")
    deny = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {}
        and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert deny, "no default-deny NetworkPolicy"


def test_network_policies_allow_exactly_the_calls_the_code_makes(
    manifests: tuple[Manifest, ...],
) -> None:
    policies = of_kind(manifests, "NetworkPolicy")
    deployed = {
        name: d["spec"]["template"]["metadata"]["labels"]
        for name, d in named(manifests, "Deployment").items()
    }
    # Services not deployed yet (projects, billing) are still peers of the rules.
    pods = {
        name: deployed.get(name)
        or {"app.kubernetes.io/name": name, "app.kubernetes.io/component": "grpc-service"}
        for name in CALLS
    }
    ports = {name: envoy_config.UPSTREAMS[name].port for name in envoy_config.UPSTREAMS}
    for caller in deployed:
        allowed = {
            callee
            for callee in pods
            if callee != caller
            and callee in ports
            and _allows(policies, "Egress", pods[caller], pods[callee], ports[callee])
        }
        assert allowed == CALLS[caller], f"{caller} may call {sorted(allowed)}"
    for callee in deployed.keys() & ports.keys():
        allowed = {
            caller
            for caller in pods
            if caller != callee
            and _allows(policies, "Ingress", pods[callee], pods[caller], ports[callee])
        }
        expected = {caller for caller, callees in CALLS.items() if callee in callees}
        assert allowed == expected, f"{callee} accepts calls from {sorted(allowed)}"


def test_network_policies_open_the_outside_only_where_needed(
    manifests: tuple[Manifest, ...],
) -> None:
    policies = of_kind(manifests, "NetworkPolicy")
    for name, deployment in named(manifests, "Deployment").items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        external = _external_ports(policies, labels)
        expected = {POSTGRES_PORT} if name in envoy_config.UPSTREAMS else set()
        if name in EXTERNAL_HTTPS:
            expected.add(443)
        assert external == expected, f"{name} reaches outside addresses on {sorted(external)}"
    for name, job in named(manifests, "Job").items():
        labels = job["spec"]["template"]["metadata"]["labels"]
        assert _external_ports(policies, labels) == {POSTGRES_PORT}, name


def _external_ports(policies: list[Manifest], labels: Mapping[str, str]) -> set[int]:
    """Ports on which a pod may open connections to addresses outside the cluster."""
    ports: set[int] = set()
    for policy in _selecting(policies, "Egress", labels):
        for rule in policy["spec"].get("egress", []):
            peers = rule.get("to", [])
            assert peers, f"{policy['metadata']['name']}: an egress rule to everywhere"
            if any("ipBlock" in peer for peer in peers):
                ports.update(p["port"] for p in rule["ports"])
    return ports


def _selecting(policies: list[Manifest], kind: str, labels: Mapping[str, str]) -> list[Manifest]:
    return [
        p
        for p in policies
        if kind in p["spec"]["policyTypes"] and _matches(p["spec"]["podSelector"], labels)
    ]


def _allows(
    policies: list[Manifest],
    direction: str,
    pod: Mapping[str, str],
    peer: Mapping[str, str],
    port: int,
) -> bool:
    """Whether the policies selecting `pod` let it talk to `peer` (same namespace) on `port`."""
    key = "egress" if direction == "Egress" else "ingress"
    side = "to" if direction == "Egress" else "from"
    for policy in _selecting(policies, direction, pod):
        for rule in policy["spec"].get(key, []):
            rule_ports = {p["port"] for p in rule.get("ports", [])}
            if rule_ports and port not in rule_ports:
                continue
            peers = rule.get(side)
            if peers is None:
                return True  # from/to anywhere (the gateway's public port)
            for selector in peers:
                # Peers in this namespace only; DNS (kube-system) and ipBlocks are not pods here.
                same_namespace = "podSelector" in selector and "namespaceSelector" not in selector
                if same_namespace and _matches(selector["podSelector"], peer):
                    return True
    return False


def _matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Kubernetes label selector semantics (matchLabels and matchExpressions)."""
    for key, value in selector.get("matchLabels", {}).items():
        if labels.get(key) != value:
            return False
    for expression in selector.get("matchExpressions", []):
        key, operator = expression["key"], expression["operator"]
        values = expression.get("values", [])
        present = key in labels
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def _bytes(quantity: str) -> int:
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)
