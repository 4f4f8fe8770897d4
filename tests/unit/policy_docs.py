"""RolloutPolicy YAML documents for tests that need many similar policies."""

from __future__ import annotations

import textwrap

ERROR_RATE_ANALYSIS = "{interval: 1m, metrics: [{kind: error-rate, max: 0.05}]}"


def policy_doc(
    name: str,
    *,
    route: str | None = None,
    steps: str = "[10, 50]",
    analysis: str = ERROR_RATE_ANALYSIS,
) -> str:
    """One policy for route ns/`route` (default: `name`) with backends `name`-v1 and -v2,
    ending in a document separator so that documents can be joined."""
    return textwrap.dedent(f"""\
        apiVersion: rollout.model-registry.io/v1alpha1
        kind: RolloutPolicy
        metadata: {{name: {name}}}
        spec:
          route: {{namespace: ns, name: {route or name}}}
          stable: {{backend: {name}-v1, modelNameOverride: {name}-v1}}
          canary: {{backend: {name}-v2, modelNameOverride: {name}-v2}}
          steps: {steps}
          analysis: {analysis}
        ---
        """)
