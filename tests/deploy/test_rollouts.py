"""A rollout cuts no request (ADR 0024): the gateway pod drains Envoy before Kubernetes
stops it, and every pod's grace period outlasts the longest call it may be serving.

Every bound is derived from gateway/edge.py's timeouts and the Envoy config the pod
actually mounts, never typed here: a longer route timeout fails these tests until the
manifests follow. Each check is a function returning its problems, run on the rendered
overlays and on copies made too short, so a check that cannot fail would show.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from typing import Any

import pytest
import yaml

from gateway.edge import EDGE
from runtime.config import ServiceSettings
from tests.deploy.conftest import K8S, Manifest
from tests.deploy.test_kubernetes_manifests import grpc_services, named
from tools import envoy_config

DRAIN_HOOK = K8S / "base" / "gateway" / "drain.sh"
# A terminating pod leaves the Service's endpoints at once, but kube-proxy, the load
# balancer's health checks and Envoy's DNS refresh of the headless Services (5 s) follow
# a few seconds later: requests may still arrive meanwhile.
ENDPOINT_REMOVAL_SECONDS = 10
# After its drain or grace period a process still closes connections and pools.
EXIT_SECONDS = 10
_PACKAGE = re.compile(r"^pixelshop\.([a-z][a-z0-9_]*)\.v[0-9]+\.")


def _seconds(duration: str) -> float:
    assert duration.endswith("s"), duration
    return float(duration[:-1])


def envoy_config_of(manifests: Iterable[Manifest]) -> dict[str, Any]:
    """The envoy.yaml the gateway pods mount (its ConfigMap, as this overlay renders it)."""
    (config_map,) = [
        m
        for m in manifests
        if m["kind"] == "ConfigMap" and m["metadata"]["name"].startswith("gateway-envoy")
    ]
    loaded: dict[str, Any] = yaml.safe_load(config_map["data"]["envoy.yaml"])
    return loaded


def public_listener(config: dict[str, Any]) -> dict[str, Any]:
    (listener,) = [x for x in config["static_resources"]["listeners"] if x["name"] == "http"]
    return listener


def route_timeouts(config: dict[str, Any]) -> dict[str, float]:
    """Per upstream cluster, the longest route timeout Envoy enforces on its calls."""
    (chain,) = public_listener(config)["filter_chains"]
    (manager,) = chain["filters"]
    (host,) = manager["typed_config"]["route_config"]["virtual_hosts"]
    longest: dict[str, float] = {}
    for route in host["routes"]:
        action = route.get("route", {})
        if "timeout" in action:
            cluster = action["cluster"]
            longest[cluster] = max(longest.get(cluster, 0.0), _seconds(action["timeout"]))
    return longest


def edge_longest_timeout(upstream: str) -> float:
    """The longest deadline gateway/edge.py gives any call to `upstream`."""
    own = [
        seconds
        for method, seconds in EDGE.method_timeout_seconds.items()
        if (match := _PACKAGE.match(method)) and match.group(1) == upstream
    ]
    return max([EDGE.timeout(upstream), *own])


def _options(words: list[str]) -> dict[str, str]:
    assert len(words) % 2 == 0, words
    return dict(zip(words[::2], words[1::2], strict=True))


def _envoy(deployment: Manifest) -> dict[str, Any]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    assert container["name"] == "envoy"
    return container


def gateway_drain_problems(deployment: Manifest, config: dict[str, Any]) -> list[str]:
    """What keeps the gateway pod from draining every request before Envoy stops."""
    problems = []
    container = _envoy(deployment)
    command = container["lifecycle"]["preStop"].get("exec", {}).get("command", [])
    script = f"{envoy_config.CONFIG_DIR}/drain.sh"
    if command[:2] != ["/bin/bash", script]:
        return [f"the preStop hook is {command or container['lifecycle']['preStop']}, not {script}"]
    hook = _options(command[2:])
    admin = config["admin"]["address"]["socket_address"]
    if hook.get("--admin") != f"{admin['address']}:{admin['port_value']}":
        problems.append(f"the hook asks {hook.get('--admin')}, Envoy's admin is {admin}")
    prefix = public_listener(config)["filter_chains"][0]["filters"][0]["typed_config"][
        "stat_prefix"
    ]
    if hook.get("--stat") != f"http.{prefix}.downstream_rq_active":
        problems.append(f"the hook waits on {hook.get('--stat')}, not the public listener's")
    minimum = int(hook.get("--min-seconds", "10"))
    if minimum < ENDPOINT_REMOVAL_SECONDS:
        problems.append(f"the hook may return after {minimum} s, before the endpoint is gone")
    # A request that arrives while the endpoint's removal spreads, sends its headers
    # within their timeout and then waits for the slowest route.
    longest = max(route_timeouts(config).values())
    needed = minimum + EDGE.timeouts.request_headers + longest
    deadline = int(hook["--deadline-seconds"])
    if deadline < needed:
        problems.append(
            f"the hook gives up after {deadline} s; a {longest:g} s route needs {needed:g} s"
        )
    args = _options(container["args"][container["args"].index("--drain-strategy") :][:4])
    if args.get("--drain-strategy") != "immediate":
        problems.append(f"--drain-strategy {args.get('--drain-strategy')}, not immediate")
    # The listener must accept (and close) whatever still arrives for as long as the hook
    # waits; at the end of the drain time Envoy stops it.
    if int(args.get("--drain-time-s", "0")) < deadline:
        problems.append(f"--drain-time-s {args.get('--drain-time-s')} ends before the hook")
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    if grace < deadline + EXIT_SECONDS:
        problems.append(f"grace period {grace} s; the hook alone may take {deadline} s")
    return problems


def service_grace_problems(
    deployment: Manifest, config_maps: dict[str, Manifest], config: dict[str, Any]
) -> list[str]:
    """What lets a stopping service pod cut a call the gateway still waits for."""
    name = deployment["metadata"]["name"]
    spec = deployment["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]]["data"])
    # Unset, the service keeps runtime/config.py's default.
    variable = f"PIXELSHOP_{name.upper()}_SHUTDOWN_GRACE_SECONDS"
    shutdown_grace = float(env.get(variable, ServiceSettings.shutdown_grace_seconds))
    longest = route_timeouts(config)[name]
    problems = []
    if shutdown_grace < longest:
        problems.append(
            f"{name}: {variable} is {shutdown_grace:g} s, its calls may take {longest:g} s"
        )
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    needed = pre_stop + shutdown_grace + EXIT_SECONDS
    grace = spec["terminationGracePeriodSeconds"]
    if grace < needed:
        problems.append(f"{name}: grace period {grace} s, its shutdown needs {needed:g} s")
    return problems


def test_envoy_enforces_the_edge_tables_longest_timeouts(
    manifests: tuple[Manifest, ...],
) -> None:
    """The bounds below are taken from the config Envoy runs; it says what edge.py says."""
    enforced = route_timeouts(envoy_config_of(manifests))
    assert enforced == {name: edge_longest_timeout(name) for name in envoy_config.UPSTREAMS}
    assert max(enforced.values()) == EDGE.timeout(
        "projects", "pixelshop.projects.v1.ProjectService.Reapply"
    )


def test_gateway_drains_envoy_before_it_stops(manifests: tuple[Manifest, ...]) -> None:
    deployment = named(manifests, "Deployment")["gateway"]
    assert gateway_drain_problems(deployment, envoy_config_of(manifests)) == []


def test_gateway_drain_check_fails_when_the_pod_stops_too_soon(
    manifests: tuple[Manifest, ...],
) -> None:
    deployment = named(manifests, "Deployment")["gateway"]
    config = envoy_config_of(manifests)
    longest = max(route_timeouts(config).values())

    def changed(**values: Any) -> Manifest:
        copied = copy.deepcopy(deployment)
        container = _envoy(copied)
        command = container["lifecycle"]["preStop"]["exec"]["command"]
        for option, value in values.items():
            if option == "grace":
                copied["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = value
            else:
                words = command if option != "--drain-time-s" else container["args"]
                words[words.index(option) + 1] = str(value)
        return copied

    def problems(candidate: Manifest, with_config: dict[str, Any] = config) -> str:
        return "\n".join(gateway_drain_problems(candidate, with_config))

    assert "gives up after" in problems(changed(**{"--deadline-seconds": int(longest)}))
    assert "before the endpoint" in problems(changed(**{"--min-seconds": 0}))
    assert "ends before the hook" in problems(changed(**{"--drain-time-s": 30}))
    assert "grace period" in problems(changed(grace=200))
    assert "not the public listener" in problems(changed(**{"--stat": "server.total_connections"}))
    # The old hook: a fixed sleep, no drain.
    slept = copy.deepcopy(deployment)
    _envoy(slept)["lifecycle"]["preStop"] = {"sleep": {"seconds": 10}}
    assert "not /etc/envoy/drain.sh" in problems(slept)
    # A longer route in the edge table (and so in envoy.yaml) outgrows today's manifests.
    longer = copy.deepcopy(config)
    (chain,) = public_listener(longer)["filter_chains"]
    (host,) = chain["filters"][0]["typed_config"]["route_config"]["virtual_hosts"]
    for route in host["routes"]:
        if route.get("route", {}).get("timeout"):
            route["route"]["timeout"] = f"{longest * 2:g}s"
    assert "gives up after" in problems(deployment, longer)


def test_gateway_runs_the_committed_drain_hook_in_an_image_with_bash(
    manifests: tuple[Manifest, ...],
) -> None:
    deployment = named(manifests, "Deployment")["gateway"]
    spec = deployment["spec"]["template"]["spec"]
    container = _envoy(deployment)
    # The distroless image has no shell: the exec hook would fail and Envoy would stop
    # with requests in flight, as before ADR 0024.
    assert container["image"].startswith("envoyproxy/envoy:v"), container["image"]
    assert "distroless" not in container["image"]
    # Envoy is PID 1: the hook's messages go to its stderr, SIGTERM reaches it directly.
    assert container["command"] == ["/usr/local/bin/envoy"]
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == envoy_config.CONFIG_DIR)
    volume = next(v for v in spec["volumes"] if v["name"] == mount["name"])
    config_map = named(manifests, "ConfigMap")[volume["configMap"]["name"]]
    assert config_map["data"]["drain.sh"] == DRAIN_HOOK.read_text()


def test_only_the_public_listener_drains(manifests: tuple[Manifest, ...]) -> None:
    """`drain_listeners?inboundonly` acts on INBOUND listeners alone: without the mark the
    hook would drain nothing; on the ops listener it would close the probes' port."""
    listeners = envoy_config_of(manifests)["static_resources"]["listeners"]
    inbound = [x for x in listeners if x.get("traffic_direction") == "INBOUND"]
    assert [x["name"] for x in inbound] == ["http"]
    assert inbound[0]["address"]["socket_address"]["port_value"] == envoy_config.LISTENER_PORT


def test_services_finish_their_longest_call_before_they_stop(
    manifests: tuple[Manifest, ...],
) -> None:
    config = envoy_config_of(manifests)
    config_maps = named(manifests, "ConfigMap")
    services = grpc_services(manifests)
    assert set(services) == set(envoy_config.UPSTREAMS)
    problems = [
        problem
        for deployment in services.values()
        for problem in service_grace_problems(deployment, config_maps, config)
    ]
    assert problems == []


@pytest.mark.parametrize(
    ("variable", "grace", "expected"),
    [
        # Before ADR 0024: 5 s for calls the gateway waits 900 s for.
        ("5", 60, "PIXELSHOP_PROJECTS_SHUTDOWN_GRACE_SECONDS is 5 s"),
        (None, 930, "PIXELSHOP_PROJECTS_SHUTDOWN_GRACE_SECONDS is 5 s"),
        ("900", 60, "grace period 60 s"),
    ],
    ids=["short-grace", "default-grace", "short-termination"],
)
def test_service_grace_check_fails_when_a_reapply_would_be_cut(
    manifests: tuple[Manifest, ...], variable: str | None, grace: int, expected: str
) -> None:
    config_maps = copy.deepcopy(named(manifests, "ConfigMap"))
    deployment = copy.deepcopy(grpc_services(manifests)["projects"])
    deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = grace
    for source in deployment["spec"]["template"]["spec"]["containers"][0]["envFrom"]:
        data = config_maps[source["configMapRef"]["name"]]["data"]
        data.pop("PIXELSHOP_PROJECTS_SHUTDOWN_GRACE_SECONDS", None)
        if variable is not None and source["configMapRef"]["name"].startswith("projects"):
            data["PIXELSHOP_PROJECTS_SHUTDOWN_GRACE_SECONDS"] = variable
    problems = service_grace_problems(deployment, config_maps, envoy_config_of(manifests))
    assert any(expected in problem for problem in problems), problems
