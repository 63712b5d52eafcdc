"""Entry point: logging, run the command, turn known failures into one clear line."""

from __future__ import annotations

import logging
import os
import sys


def main() -> int:
    rank = os.environ.get("RANK", "0")
    logging.basicConfig(level=os.environ.get("TRAINSTACK_LOG_LEVEL", "INFO"),
                        format=f"%(asctime)s %(levelname)s [rank {rank}] %(name)s: %(message)s")
    log = logging.getLogger("trainer")
    from trainer import cli
    from trainer.contract.errors import CONFIG_EXIT, ConfigError, TrainstackError
    from trainer.run import distributed, stopping

    stopping.install()
    try:
        cli.main()
        return 0
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    except ConfigError as e:  # a restart would fail the same way: say so in the status
        log.error("%s", e)
        return CONFIG_EXIT
    except TrainstackError as e:  # the user's to fix: one clear line, no traceback
        log.error("%s", e)
        return 1
    except Exception as e:
        if stopping.interrupted():  # e.g. a peer stopped first and broke a collective
            log.error("interrupted (%s)", type(e).__name__)
            return 130
        log.error("unexpected %s (traceback follows): %s", type(e).__name__, e)
        raise
    finally:
        distributed.cleanup()


if __name__ == "__main__":
    sys.exit(main())
