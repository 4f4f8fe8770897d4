class PrerequisiteError(RuntimeError):
    """Something the local control plane needs is missing; the message says what to do."""


class StartupError(RuntimeError):
    """A local component did not come up; the message carries its log tail."""
