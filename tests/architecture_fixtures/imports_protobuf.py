"""Breaks "service.py, repository.py and models.py never import grpc or _pb2 types"
(checked as if this were a service's service.py)."""

import grpc
from pixelshop.assets.v1 import assets_pb2


def refuse() -> assets_pb2.Asset:
    raise grpc.RpcError()
