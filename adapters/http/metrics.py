"""`/metrics` in the Prometheus text format, with prometheus-client.

Request latency and this process's HTTP intake are counted as they happen; the
pipeline's figures (stored interactions, dead letters by code, relay and projector lag,
open alerts by level) are read from PostgreSQL at each scrape by a custom collector, so
every API process reports the same truth whichever role did the work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from adapters.stats import Stats

REGISTRY: Final = CollectorRegistry(auto_describe=True)
"""This process's registry (not the library's global one: nothing else lands in it)."""

REQUEST_SECONDS: Final = Histogram(
    "eventcrm_http_request_duration_seconds",
    "HTTP request latency by route template, method and status",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
    registry=REGISTRY,
)
INTERACTIONS: Final = Counter(
    "eventcrm_http_interactions",
    "Interactions received over HTTP by this process, by outcome",
    ["outcome"],
    registry=REGISTRY,
)


class PipelineCollector(Collector):
    """The store's figures at scrape time (see `adapters.stats.PipelineStats`)."""

    def __init__(self, collect_stats: Callable[[], Stats]) -> None:
        self._collect_stats = collect_stats

    def collect(self) -> Iterator[Metric]:
        stats = self._collect_stats()
        recorded = CounterMetricFamily(
            "eventcrm_interactions_recorded", "Interactions stored, by any path"
        )
        recorded.add_metric([], stats.interactions)
        yield recorded
        dead = CounterMetricFamily(
            "eventcrm_dead_letters", "Dead letters stored, by rejection code", labels=["code"]
        )
        for code, count in sorted(stats.dead_letters.items()):
            dead.add_metric([code], count)
        yield dead
        yield _gauge("eventcrm_relay_lag_events", "Stored events not yet relayed", stats.relay_lag)
        yield _gauge(
            "eventcrm_projector_lag_events",
            "Stored events not yet in the read models",
            stats.projector_lag,
        )
        alerts = GaugeMetricFamily(
            "eventcrm_open_alerts", "Open churn alerts by churn level", labels=["level"]
        )
        for level, count in sorted(stats.open_alerts.items()):
            alerts.add_metric([level], count)
        yield alerts

    def describe(self) -> Iterator[Metric]:
        return iter(())


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    gauge = GaugeMetricFamily(name, documentation)
    gauge.add_metric([], value)
    return gauge


def registry_with(collect_stats: Callable[[], Stats]) -> CollectorRegistry:
    """A registry with this process's metrics and the pipeline's, for one app."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Forward(REGISTRY))
    registry.register(PipelineCollector(collect_stats))
    return registry


class _Forward(Collector):
    def __init__(self, inner: CollectorRegistry) -> None:
        self._inner = inner

    def collect(self) -> Iterator[Metric]:
        yield from self._inner.collect()

    def describe(self) -> Iterator[Metric]:
        return iter(())
