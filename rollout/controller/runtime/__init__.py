"""The Kubernetes adapters of the controller's ports (`rollout.controller.ports`).

- `KubeEventRecorder` (EventRecorder): core/v1 Events about an AIGatewayRoute, deduplicated.
- `KubeLeaseElector` (LeaderElector): client-go style leader election on a coordination/v1 Lease.
- `KubeRouteWatcher` (RouteWatcher): LIST + WATCH of AIGatewayRoutes, reconnecting after errors.

Each adapter sends its requests through the official client's HTTP layer (`rollout.kubeapi`,
or the raw pool for the streaming watch) and never lets a transient API failure escape as an
exception from its long-running loop.
"""

from rollout.controller.runtime.kube_events import KubeEventRecorder
from rollout.controller.runtime.kube_lease import KubeLeaseElector
from rollout.controller.runtime.kube_watch import KubeRouteWatcher

__all__ = ["KubeEventRecorder", "KubeLeaseElector", "KubeRouteWatcher"]
