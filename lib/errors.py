"""The errors twinformers raises on bad input, in one hierarchy (see docs/errors.md).

Each subclasses the built-in exception that code written for Hugging Face already catches (`ValueError` for a
bad value, `OSError` for a bad file), so `except ValueError` keeps working, and `except TwinformersError` catches
every one of them. Messages name the file, key, shape or argument at fault.
"""

from __future__ import annotations

__all__ = ["TwinformersError", "ConfigError", "CheckpointError", "InputError"]


class TwinformersError(Exception):
    """Base of every error twinformers raises about its input."""


class ConfigError(TwinformersError, ValueError):
    """A configuration value has the wrong type or range, or disagrees with another field; the message names the
    key, the value and (when read from disk) the file."""


class CheckpointError(TwinformersError, OSError):
    """A checkpoint or tokenizer file is missing, malformed or inconsistent, or a directory cannot be written; the
    message names the path."""


class InputError(TwinformersError, ValueError):
    """A model, generation or save argument has the wrong shape, dtype or value (token ids out of range, an empty
    sequence, a mask of the wrong shape, a save directory that is a file); the message names the argument."""
