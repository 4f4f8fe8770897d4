"""The web dashboard: every rollout, and a live page per rollout (weights and checks over
time, Events, the policy, and optionally the manual controls). `rollout dashboard` serves it
alone; the controller can mount it on its metrics port (ControllerSettings.dashboard_path)."""
