"""Whether the application has set structlog up, decided from the configuration in effect.

Like the standard library's logging, which shows a library's warnings but not its info lines
until the application configures logging, openintent logs its info and debug lines only once
structlog is configured: unconfigured structlog prints everything to stdout.

``structlog.is_configured()`` cannot tell: it turns true on any ``configure()`` call and stays
true, even after ``structlog.testing.capture_logs()`` has put the defaults back. So the
configuration in effect is compared with structlog's built-in one instead.
"""

from __future__ import annotations

from typing import Any

import structlog

__all__ = ["logging_configured"]


def _builtin_defaults() -> tuple[list[Any], Any, Any] | None:
    """structlog's built-in processors, wrapper class and logger factory, if known."""
    config: Any = getattr(structlog, "_config", None)
    try:
        return (
            list(config._BUILTIN_DEFAULT_PROCESSORS),
            config._BUILTIN_DEFAULT_WRAPPER_CLASS,
            config._BUILTIN_DEFAULT_LOGGER_FACTORY,
        )
    except AttributeError:
        pass
    if structlog.is_configured():
        return None  # configured before openintent was imported: nothing to compare with
    # Not configured yet: what is in effect now is the built-in configuration.
    config_now = structlog.get_config()
    return (
        list(config_now["processors"]), config_now["wrapper_class"], config_now["logger_factory"]
    )


_DEFAULTS = _builtin_defaults()


def logging_configured() -> bool:
    """Whether structlog's configuration in effect differs from its built-in defaults."""
    if _DEFAULTS is None:
        return structlog.is_configured()
    processors, wrapper_class, logger_factory = _DEFAULTS
    config = structlog.get_config()
    return not (
        config["wrapper_class"] is wrapper_class
        and config["logger_factory"] is logger_factory
        and list(config["processors"]) == processors
    )
