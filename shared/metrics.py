"""What one service process counts, in Prometheus terms.

Each RunningService has its own registry (not the library's global one), so several services
in one process (the tests, a benchmark) never mix their figures.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Commands answer in milliseconds unless the case is contended or NATS is slow.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
MAX_TYPES_HELD = 128  # event types whose series are held (the log has a few dozen; a bound all the same)


class Metrics:
    def __init__(self, service: str) -> None:
        self.service = service
        self.registry = r = CollectorRegistry()
        self.events_applied = Counter(
            "rethink_events_applied", "Events this service applied (projection and reactions), by type",
            ["service", "type"], registry=r)
        self.handler_failures = Counter(
            "rethink_event_handler_failures", "Failed attempts to apply an event (each is retried or parked)",
            ["service", "type", "transient"], registry=r)
        self.dead_lettered = Counter(
            "rethink_events_dead_lettered", "Events parked in the dead-letter stream", ["service"], registry=r)
        self.redeliveries = Counter(
            "rethink_event_redeliveries", "Events JetStream delivered more than once (after a crash or a nak), by type",
            ["service", "type"], registry=r)
        self.handler_seconds = Histogram(
            "rethink_event_handler_seconds", "Time to apply one event, retries included", ["service", "type"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.consumer_pending = Gauge(
            "rethink_consumer_pending", "Events in the stream this service's consumer has not yet received (lag)",
            ["service"], registry=r)
        self.last_applied_seq = Gauge(
            "rethink_last_applied_seq", "Stream sequence of the last event this process applied", ["service"],
            registry=r)
        self.command_seconds = Histogram(
            "rethink_command_seconds", "Time to answer a command or query, by name and reply status",
            ["service", "command", "status"], buckets=LATENCY_BUCKETS, registry=r)
        # The series every applied event touches, looked up once: ``labels()`` (a lock, a tuple of
        # label values, a dict) per event cost a service more than the counting itself.
        self._last_seq = self.last_applied_seq.labels(service)
        self._pending = self.consumer_pending.labels(service)
        self._by_type: dict[str, tuple[Any, Any]] = {}

    def applied(self, event_type: str, seq: int, pending: int, seconds: float, redelivered: bool) -> None:
        series = self._by_type.get(event_type)
        if series is None:
            series = (self.events_applied.labels(self.service, event_type),
                      self.handler_seconds.labels(self.service, event_type))
            if len(self._by_type) < MAX_TYPES_HELD:
                self._by_type[event_type] = series
        series[0].inc()
        series[1].observe(seconds)
        self._last_seq.set(seq)
        self._pending.set(pending)
        if redelivered:
            self.redeliveries.labels(self.service, event_type).inc()

    def failed(self, event_type: str, transient: bool) -> None:
        self.handler_failures.labels(self.service, event_type, str(transient).lower()).inc()

    def parked(self) -> None:
        self.dead_lettered.labels(self.service).inc()

    def command(self, name: str, status: str, seconds: float) -> None:
        self.command_seconds.labels(self.service, name, status).observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
