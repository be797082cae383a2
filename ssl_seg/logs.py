"""Console output: library modules log through `logging`; the command lines show it with `configure_logging`."""

from __future__ import annotations

import logging
import sys

PROJECT_LOGGERS = ("ssl_seg", "gan_aug")  # the project's packages, by name (ssl_seg never imports gan_aug)


class ConsoleHandler(logging.Handler):
    """Messages as plain lines: INFO to stdout, WARNING and above to stderr (the streams of the moment, flushed)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # logging's rule: a failed write is reported, never raised
            self.handleError(record)


def configure_logging(level: int = logging.INFO) -> None:
    """Show the project's messages from `level` up on the console; calling it again changes nothing else."""
    for name in PROJECT_LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        if not any(isinstance(h, ConsoleHandler) for h in logger.handlers):
            logger.addHandler(ConsoleHandler())
