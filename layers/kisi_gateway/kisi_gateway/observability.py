"""Logging for every handler, set up in one place.

Powertools' structured JSON :class:`Logger` for the handler, and the library's own logger
(``kisi_gateway``) routed through the same configuration, so one log line per event carries
the Lambda context whichever module wrote it.
"""

from __future__ import annotations

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers


def lambda_logger() -> Logger:
    """The handler's logger, with ``kisi_gateway``'s loggers sharing its configuration."""
    logger = Logger()
    copy_config_to_registered_loggers(source_logger=logger, include={"kisi_gateway"})
    return logger
