"""Notifications of rollout transitions: Slack, Microsoft Teams and a generic JSON webhook.

`spec` is the configuration (in policies and in the controller's settings), `payloads` the
messages (pure), `sender` the adapter of the controller's Notifier port (a bounded queue
drained by a worker thread: delivery never blocks a tick).
"""
