"""The errors cellsynth raises for bad input and bad model files (imports nothing of ours)."""


class InputError(ValueError):
    """Input data that cellsynth refuses, with the reason and the fix in the message."""


class ModelFileError(RuntimeError):
    """A model directory that cannot be loaded, with the reason."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so every temporary output is cleaned up on the way out."""
