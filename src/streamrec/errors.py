"""The root of streamrec's exceptions. Each subpackage subclasses :class:`StreamrecError`."""


class StreamrecError(Exception):
    """Base class of every error streamrec raises on purpose.

    Messages say what was wrong and what to do about it.
    """


class ConfigError(StreamrecError):
    """A setting is missing or has a value that cannot work."""
