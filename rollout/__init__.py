"""Progressive delivery of LLM model versions behind Envoy AI Gateway.

Packages, with imports pointing inward:
  gateway/      the AIGatewayClient port, its pydantic models, and the Kubernetes adapter
  policy/       rollout policy schema and loading
  analysis/     metric queries (Prometheus adapter) and pure verdicts
  controller/   the pure rollout state machine, the reconciler and the scheduler loop
  localcluster/ launchers for a local etcd + kube-apiserver and Prometheus (tests, demo)
"""

__version__ = "0.1.0"
