"""``python -m trainer.launch [torchrun's arguments]``: torchrun for ``make demo``, with a
short ending.

torchrun itself answers Ctrl-C with a ~30-line traceback and a failed worker with a
"Root Cause" report, after the workers have already said what happened in one line each
(trainer.__main__). This runs the same launcher (torch.distributed.run) and ends with one
line instead: interrupted (and how to resume), or which rank failed. A TrainJob's pods
run it too: torchrun exits 1 whatever its worker's status, and this exits with a worker's
configuration error status (trainer.contract.errors.CONFIGURATION_EXITS), which the
TrainJob's runtime fails the job on at once instead of restarting it.
"""

from __future__ import annotations

import logging
import signal
import sys

from trainer.contract.errors import CONFIGURATION_EXITS

log = logging.getLogger("trainer.launch")

RESUME_HINT = ("run the same command again (`make demo` with the same knobs) to resume "
               "from the last epoch's checkpoint")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: "
                                                   "%(message)s")
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    # The launcher's own warnings while it stops the workers repeat what they said; its
    # loggers set their own levels at import, so each is quietened here, after it.
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.ERROR)
    try:
        run(parse_args(sys.argv[1:] if argv is None else argv))
        return 0
    except SignalException as e:
        if e.sigval == signal.SIGTERM:  # a pod deleted: preempted, drained, replaced
            log.error("training stopped by SIGTERM: the ranks stopped after one step and "
                      "rank 0 checkpointed there (trainer.run.stopping); the job resumes there")
            return 128 + signal.SIGTERM
        log.error("training interrupted; %s", RESUME_HINT)
        return 130
    except KeyboardInterrupt:
        log.error("training interrupted; %s", RESUME_HINT)
        return 130
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        log.error("training failed: rank %d exited with code %s (its error is above)", rank,
                  failure.exitcode)
        return failure.exitcode if failure.exitcode in CONFIGURATION_EXITS else 1


if __name__ == "__main__":
    sys.exit(main())
