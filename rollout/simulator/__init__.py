"""A data-plane SIMULATOR standing in for Envoy AI Gateway in the demo and end-to-end tests.

It is not a gateway and forwards no traffic. It exports the gateway's GenAI metrics with the
same names, labels and buckets (OpenTelemetry GenAI semantic conventions) so that the
controller's real Prometheus queries see what they would see in a cluster.
"""
