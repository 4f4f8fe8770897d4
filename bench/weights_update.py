"""update_traffic_weights against the seed's GET + full PUT, side by side on one API server.

Prints API requests per update and median/p95 latency of each approach, and their ratio.
Run: .venv/bin/python bench/weights_update.py [ITERATIONS]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client as k8s

from rollout import kubeapi
from rollout.config import AIGatewayConfig
from rollout.gateway import AIGatewayRoute, KubeAIGatewayClient, WeightedBackend, manifests
from rollout.localcluster import LocalControlPlane, default_crd_dirs

NAMESPACE = "bench"


class RequestCounter:
    def __init__(self, api: k8s.ApiClient) -> None:
        self.count = 0
        original = kubeapi.request

        def counting(client: k8s.ApiClient, *args: Any, **kwargs: Any) -> Any:
            if client is api:
                self.count += 1
            return original(client, *args, **kwargs)

        kubeapi.request = counting  # type: ignore[assignment]


def route(name: str) -> AIGatewayRoute:
    return AIGatewayRoute(
        name=name,
        model_name="llama-3-8b",
        backends=[
            WeightedBackend(name="llama-v1", weight=100, model_name_override="llama-v1"),
            WeightedBackend(name="llama-v2", weight=0, model_name_override="llama-v2"),
        ],
    )


def seed_update(api: k8s.ApiClient, name: str, canary: int, *, second_get: bool = True) -> None:
    """What the seed's UpdateTrafficWeights does: GetRoute, then UpdateRoute (GET + full PUT).

    With second_get=False: the plain GET + full PUT, the least a read-modify-write needs.
    """
    path = f"/apis/aigateway.envoyproxy.io/v1beta1/namespaces/{NAMESPACE}/aigatewayroutes/{name}"
    first = kubeapi.request(api, "GET", path)
    current = manifests.parse_route_manifest(first)
    backends = [
        WeightedBackend(
            name=b.name,
            weight=(canary if i else 100 - canary),
            model_name_override=b.model_name_override,
        )
        for i, b in enumerate(current.backends)
    ]
    desired = AIGatewayRoute(
        name=name, namespace=NAMESPACE, model_name=current.model_name, backends=backends
    )
    # The seed's UpdateRoute GETs again for the resourceVersion.
    existing = kubeapi.request(api, "GET", path) if second_get else first
    obj = manifests.build_route_manifest(
        desired,
        api_version="v1beta1",
        gateway_name="ai-gateway",
        gateway_namespace="envoy-gateway-system",
        default_namespace=NAMESPACE,
    )
    obj["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
    kubeapi.request(api, "PUT", path, body=obj)


def measure(label: str, counter: RequestCounter, n: int, update: Callable[[int], object]) -> float:
    latencies = []
    before = counter.count
    for i in range(n):
        t = time.perf_counter()
        update(i % 100)
        latencies.append(time.perf_counter() - t)
    per_update = (counter.count - before) / n
    median = statistics.median(latencies) * 1000
    p95 = statistics.quantiles(latencies, n=20)[18] * 1000
    print(
        f"{label:<32} {per_update:>5.2f} requests/update  median {median:6.2f} ms  "
        f"p95 {p95:6.2f} ms"
    )
    return median


def main(n: int) -> None:
    with LocalControlPlane(crd_dirs=default_crd_dirs()) as plane, plane.api_client() as api:
        kubeapi.request(api, "POST", "/api/v1/namespaces", body={"metadata": {"name": NAMESPACE}})
        counter = RequestCounter(api)
        gateway = KubeAIGatewayClient(
            api, AIGatewayConfig(enabled=True, default_namespace=NAMESPACE)
        )
        gateway.create_route(route("ours"))
        gateway.create_route(route("seed"))
        gateway.get_route(None, "ours")  # the controller reads the route every tick anyway
        for i in range(20):  # warm-up
            gateway.update_traffic_weights(None, "ours", {"llama-v1": 100 - i, "llama-v2": i})
            seed_update(api, "seed", i)
        print(f"{n} weight updates each, on kube-apiserver at {plane.url}")
        ours = measure(
            "update_traffic_weights (patch)",
            counter,
            n,
            lambda c: gateway.update_traffic_weights(
                None, "ours", {"llama-v1": 100 - c, "llama-v2": c}
            ),
        )
        plain = measure(
            "GET + full PUT", counter, n, lambda c: seed_update(api, "seed", c, second_get=False)
        )
        seed = measure(
            "seed as written (GET, GET, PUT)", counter, n, lambda c: seed_update(api, "seed", c)
        )
        print(
            f"median latency ratio: GET+PUT/ours {plain / ours:.2f}x, seed/ours {seed / ours:.2f}x"
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300)
