"""Prometheus metrics without a dependency: counters, gauges and histograms in the text format.

Each service exposes `GET /metrics` on its metrics port (PIXELSHOP_<SVC>_METRICS_PORT,
0 = off). Requests, latency and errors per method come from the interceptor; services
add their own (edit engine latency, quota denials) through `observe` and `increment`, and
gauges of a current state (events parked now) through `set_gauge`/`clear_gauge`.
"""

from __future__ import annotations

import asyncio
import bisect
from collections import defaultdict

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

Labels = tuple[tuple[str, str], ...]


def _labels(labels: Labels, extra: str = "") -> str:
    parts = [f'{key}="{value}"' for key, value in labels]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class Metrics:
    def __init__(self, service: str) -> None:
        self.service = service
        self._counters: dict[str, dict[Labels, float]] = defaultdict(lambda: defaultdict(float))
        self._gauges: dict[str, dict[Labels, float]] = defaultdict(dict)
        self._histograms: dict[str, dict[Labels, list[float]]] = defaultdict(dict)
        self._help: dict[str, tuple[str, str]] = {}
        # Label tuples of the per-RPC series, built once per (method, code): every call
        # records them.
        self._rpc_labels: dict[tuple[str, str], tuple[Labels, Labels]] = {}

    def increment(self, name: str, help_text: str, amount: float = 1, **labels: str) -> None:
        self._help.setdefault(name, ("counter", help_text))
        self._counters[name][tuple(sorted(labels.items()))] += amount

    def set_gauge(self, name: str, help_text: str, value: float, **labels: str) -> None:
        """Sets one series of a gauge: a value that says how things are now."""
        self._help.setdefault(name, ("gauge", help_text))
        self._gauges[name][tuple(sorted(labels.items()))] = value

    def clear_gauge(self, name: str) -> None:
        """Drops every series of a gauge (e.g. a replica that no longer knows the value)."""
        self._gauges.pop(name, None)

    def observe(self, name: str, help_text: str, value: float, **labels: str) -> None:
        self._help.setdefault(name, ("histogram", help_text))
        self._record(self._histograms[name], tuple(sorted(labels.items())), value)

    @staticmethod
    def _record(histogram: dict[Labels, list[float]], key: Labels, value: float) -> None:
        series = histogram.get(key)
        if series is None:
            # bucket counts, then sum and count
            series = histogram[key] = [0.0] * (len(LATENCY_BUCKETS) + 2)
        index = bisect.bisect_left(LATENCY_BUCKETS, value)
        if index < len(LATENCY_BUCKETS):
            series[index] += 1
        series[-2] += value
        series[-1] += 1

    def observe_rpc(self, method: str, code: str, seconds: float) -> None:
        labels = self._rpc_labels.get((method, code))
        if labels is None:
            self._help.setdefault("grpc_server_handled_total", ("counter", "RPCs completed"))
            self._help.setdefault("grpc_server_handling_seconds", ("histogram", "RPC latency"))
            labels = self._rpc_labels[(method, code)] = (
                (("code", code), ("method", method)),
                (("method", method),),
            )
        self._counters["grpc_server_handled_total"][labels[0]] += 1
        self._record(self._histograms["grpc_server_handling_seconds"], labels[1], seconds)

    def render(self) -> str:
        lines: list[str] = []
        for name, (kind, help_text) in sorted(self._help.items()):
            full = f"pixelshop_{name}"
            lines += [f"# HELP {full} {help_text}", f"# TYPE {full} {kind}"]
            if kind in ("counter", "gauge"):
                values = self._counters[name] if kind == "counter" else self._gauges.get(name, {})
                for labels, value in values.items():
                    lines.append(f"{full}{_labels(labels)} {value:g}")
                continue
            for labels, series in self._histograms[name].items():
                cumulative = 0.0
                for bound, count in zip(LATENCY_BUCKETS, series, strict=False):
                    cumulative += count
                    bucket = _labels(labels, f'le="{bound:g}"')
                    lines.append(f"{full}_bucket{bucket} {cumulative:g}")
                bucket = _labels(labels, 'le="+Inf"')
                lines.append(f"{full}_bucket{bucket} {series[-1]:g}")
                lines.append(f"{full}_sum{_labels(labels)} {series[-2]:g}")
                lines.append(f"{full}_count{_labels(labels)} {series[-1]:g}")
        return "\n".join(lines) + "\n"

    async def serve(self, host: str, port: int) -> asyncio.Server:
        """A minimal HTTP endpoint: every request gets the current metrics."""

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                await reader.readuntil(b"\r\n\r\n")
                body = self.render().encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                    + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
            except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
                pass
            finally:
                writer.close()

        return await asyncio.start_server(handle, host, port)
