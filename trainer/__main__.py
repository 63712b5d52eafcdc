"""Entry point: logging, run the command, turn known failures into one clear line."""

from __future__ import annotations

import logging
import os
import sys


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Failures caused by input or environment: reported in one line, no traceback."""
    from trainer.config import ConfigError
    from trainer.storage import StoreError

    errors: list[type[BaseException]] = [ConfigError, StoreError]
    try:
        from trainer.cifar import DatasetError

        errors.append(DatasetError)
    except ImportError:
        pass
    try:
        from trainer import ingest

        errors += [v for k, v in vars(ingest).items()
                   if k.endswith("Error") and isinstance(v, type) and issubclass(v, Exception)]
    except ImportError:
        pass
    return tuple(errors)


def main() -> int:
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=os.environ.get("TRAINSTACK_LOG_LEVEL", "INFO"),
                        format=f"%(asctime)s %(levelname)s [rank {rank}] %(name)s: %(message)s")
    log = logging.getLogger("trainer")
    from trainer import cli, distributed

    try:
        cli.main()
        return 0
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except Exception as e:
        if isinstance(e, _expected_errors()):
            log.error("%s", e)
            return 1
        log.error("unexpected %s (traceback follows): %s", type(e).__name__, e)
        raise
    finally:
        distributed.cleanup()


if __name__ == "__main__":
    sys.exit(main())
