from __future__ import annotations

import asyncio

from runtime.metrics import Metrics


def test_prometheus_text_format() -> None:
    metrics = Metrics("demo")
    metrics.observe_rpc("/pkg.Svc/Get", "OK", 0.004)
    metrics.observe_rpc("/pkg.Svc/Get", "OK", 0.2)
    metrics.observe_rpc("/pkg.Svc/Get", "NOT_FOUND", 0.001)
    text = metrics.render()
    assert "# TYPE pixelshop_grpc_server_handled_total counter" in text
    assert 'pixelshop_grpc_server_handled_total{code="OK",method="/pkg.Svc/Get"} 2' in text
    assert (
        'pixelshop_grpc_server_handling_seconds_bucket{method="/pkg.Svc/Get",le="0.005"} 2' in text
    )
    assert 'pixelshop_grpc_server_handling_seconds_count{method="/pkg.Svc/Get"} 3' in text


async def test_served_over_http() -> None:
    metrics = Metrics("demo")
    metrics.increment("quota_denials_total", "Quota denials", metric="ai_edits")
    server = await metrics.serve("127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    response = await reader.read()
    writer.close()
    server.close()
    assert response.startswith(b"HTTP/1.1 200 OK")
    assert b'pixelshop_quota_denials_total{metric="ai_edits"} 1' in response


def test_a_gauge_says_the_current_value_and_can_be_dropped() -> None:
    metrics = Metrics("demo")
    metrics.set_gauge("events_parked", "Parked now", 3, source="identity", type="user.deleted")
    metrics.set_gauge("events_parked", "Parked now", 1, source="identity", type="user.deleted")
    text = metrics.render()
    assert "# TYPE pixelshop_events_parked gauge" in text
    assert 'pixelshop_events_parked{source="identity",type="user.deleted"} 1' in text
    metrics.clear_gauge("events_parked")
    assert "pixelshop_events_parked{" not in metrics.render()
