"""Pure translation between the models and Kubernetes manifests (plain JSON-shaped dicts).

This module is the boundary: dicts go in and out of the API client, models everywhere else.
Nothing here does I/O or imports the kubernetes package.

Laws (tested with hypothesis):
- For every valid model x with its namespace set, parse(build(x)) == x. A model whose namespace
  is None comes back with the default namespace the builder used.
- A route's rate limit lives in a separate BackendTrafficPolicy, so the route law reads
  parse_route_manifest(build_route_manifest(r), rate_limit=parse_rate_limit_policy_manifest(
  build_rate_limit_policy_manifest(r.name, ns, r.rate_limit, ...)).config) == r.
- Parsing never raises anything but MalformedObjectError (or its subclass
  UnsupportedObjectError) for a bad object, naming the object and the field path.

Round-trip details:
- The builders add `managed-by: model-registry` to the caller's labels (in a new dict); the
  models never hold it (see models.py), so parsing drops it. Use `is_managed()` on the raw object
  to check ownership.
- Variant tags are not a CRD field: the route builder stores them in the annotation
  `rollout.model-registry.io/variants` as a JSON object {backend name: tag}, omitted when no
  backend has a tag. Other annotations belong to whoever set them and are not modelled.
- CRD defaults the API server fills in (weight 1, priority 0, header match type Exact,
  modelsOwnedBy, parentRef group/kind) parse to the same model as the manifest we built.
- Fields the models do not represent but that do not change what the models say (timeouts,
  header/body mutations, hostnames, Backend tls/appProtocols, ...) are ignored on parse; do not
  replace whole objects built from a parsed model if others may have set such fields: patch.
- Structures the models cannot represent (several rules, other matches, InferencePool refs,
  unix endpoints, extra rate-limit rules, ...) raise UnsupportedObjectError.

Layout (one concept per module; this package re-exports the public names):
- `_common`: the Manifest/JSONPatch types, our labels and metadata, `is_managed`;
- `_parse`: the path-tracking reader of raw objects (`_Node`) every parser uses;
- `route`, `service_backend`, `backend`, `rate_limit`: build/parse per kind;
- `_patch`: JSON Pointer, rule selection and annotation operations shared by the patches;
- `weights`: the weight patch; `snapshot`: RouteSnapshot parsing.
"""

# Not public, but reached as `manifests.AI_GATEWAY_ROUTE` by tests: an explicit re-export.
from rollout.gateway.constants import AI_GATEWAY_ROUTE as AI_GATEWAY_ROUTE
from rollout.gateway.manifests._common import JSONPatch, Manifest, is_managed
from rollout.gateway.manifests.backend import build_backend_manifest, parse_backend_manifest
from rollout.gateway.manifests.rate_limit import (
    build_rate_limit_policy_manifest,
    parse_rate_limit_policy_manifest,
    rate_limit_policy_name,
)
from rollout.gateway.manifests.route import (
    build_route_manifest,
    parse_route_manifest,
    parse_route_status,
)
from rollout.gateway.manifests.service_backend import (
    build_service_backend_manifest,
    parse_service_backend_manifest,
)
from rollout.gateway.manifests.snapshot import parse_route_snapshot
from rollout.gateway.manifests.weights import weight_patch_operations

__all__ = [
    "JSONPatch",
    "Manifest",
    "build_backend_manifest",
    "build_rate_limit_policy_manifest",
    "build_route_manifest",
    "build_service_backend_manifest",
    "is_managed",
    "parse_backend_manifest",
    "parse_rate_limit_policy_manifest",
    "parse_route_manifest",
    "parse_route_snapshot",
    "parse_route_status",
    "parse_service_backend_manifest",
    "rate_limit_policy_name",
    "weight_patch_operations",
]
