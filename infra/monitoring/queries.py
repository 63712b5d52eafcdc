"""The PromQL of the dashboard and of the alerts, written once.

Every query reads what the app's /metrics exports (inference.monitoring.monitor and
inference.serving.metrics) under the labels Prometheus adds when it scrapes through the
ServiceMonitor (``namespace``): one stack's app, whatever else the Prometheus scrapes.
Each returns series as soon as the app has been scraped a few times, so a test can check
every one against a real Prometheus (tests/infra/monitoring).
"""

from __future__ import annotations

from dataclasses import dataclass

RATE_WINDOW = "5m"


@dataclass(frozen=True)
class Queries:
    namespace: str

    @property
    def _in(self) -> str:
        return f'namespace="{self.namespace}"'

    def drift_detected(self) -> str:
        return f"max by (model, version) (trainstack_drift_detected{{{self._in}}})"

    def drift_in_a_row(self) -> str:
        return f"max by (model, version) (trainstack_drift_windows_in_a_row{{{self._in}}})"

    def estimated_accuracy(self) -> str:
        return f"max by (model, version) (trainstack_estimated_accuracy{{{self._in}}})"

    def test_accuracy(self) -> str:
        return f"max by (model, version) (trainstack_test_accuracy{{{self._in}}})"

    def accuracy_gap(self) -> str:
        """Test accuracy minus the estimated one: how much worse than on the test split."""
        return f"{self.test_accuracy()} - {self.estimated_accuracy()}"

    def p_values(self) -> str:
        return f"min by (feature) (trainstack_drift_p_value{{{self._in}}})"

    def confidence(self) -> str:
        return (f"sum by (le) (rate(trainstack_prediction_confidence_bucket{{{self._in}}}"
                f"[{RATE_WINDOW}]))")

    def requests(self) -> str:
        return (f"sum by (status) (rate(trainstack_http_requests_total{{{self._in},"
                f'endpoint="/predict"}}[{RATE_WINDOW}]))')

    def error_ratio(self) -> str:
        """5xx answers over all answers; 0 (not absent) while there are none."""
        every = f"rate(trainstack_http_requests_total{{{self._in}}}[{RATE_WINDOW}])"
        errors = (f'rate(trainstack_http_requests_total{{{self._in},status=~"5.."}}'
                  f"[{RATE_WINDOW}])")
        return f"sum({errors} or {every} * 0) / sum({every})"

    def latency(self, quantile: float) -> str:
        return (f"histogram_quantile({quantile}, sum by (le) (rate("
                f'trainstack_http_request_duration_seconds_bucket{{{self._in},'
                f'endpoint="/predict"}}[{RATE_WINDOW}])))')

    def model_loaded(self) -> str:
        return f"min(trainstack_model_loaded{{{self._in}}})"

    def training_failed(self) -> str:
        return f"max by (model) (trainstack_training_failed{{{self._in}}})"

    def dropped(self) -> str:
        return (f"sum by (what) (rate(trainstack_monitoring_dropped_total{{{self._in}}}"
                f"[{RATE_WINDOW}]))")
