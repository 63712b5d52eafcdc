"""``trainstack_training_failed{model}``: 1 while the newest run of a model name the app
serves (or watches) stopped with an error, from the runs' progress records.

A collector, read at each scrape through the progress board's cache: a failed run that is
restarted (the job's retry) reports again and the gauge goes back to 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class TrainingStates(Collector):
    def __init__(self, board: Any):
        self.board = board

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("trainstack_training_failed", "1 while the newest run of "
                                   "the model stopped with an error", labels=["model"])
        newest = self.board.newest()
        names = set(newest) | {self.board.registry.current.name} if (
            self.board.registry.current is not None) else set(newest)
        for name in sorted(names):
            record = newest.get(name)
            family.add_metric([name], 1.0 if record is not None and record.state == "failed"
                              else 0.0)
        yield family


def register(registry: CollectorRegistry, board: Any) -> None:
    registry.register(TrainingStates(board))
