"""Prometheus metrics of one server (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    """The counters and histograms at /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "research_requests", "Requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.running = Gauge("research_requests_running", "Requests in flight", registry=r)
        self.prompt_tokens = Counter("research_prompt_tokens", "Prompt tokens", registry=r)
        self.generation_tokens = Counter("research_generation_tokens", "Tokens the model generated", registry=r)
        self.retrieved_tokens = Counter("research_retrieved_tokens", "Result-block tokens fed back", registry=r)
        self.searches = Counter("research_searches", "Searches run", registry=r)
        self.notices = Counter(
            "research_protocol_notices",
            "Replies the protocol wrote itself: malformed or unknown tool calls (recall), invalid actions (search-r1)",
            registry=r,
        )
        self.retrieval_seconds = Histogram(
            "research_retrieval_seconds", "Latency of one search (embed + index)", buckets=_LATENCY, registry=r
        )
        self.search_overhead_seconds = Histogram(
            "research_search_overhead_seconds",
            "Server time per search beyond the index's own (embedding + query): queueing, formatting, tokenising",
            buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1),
            registry=r,
        )
        self.generation_seconds = Histogram(
            "research_generation_seconds", "Time a request spent generating", buckets=_LATENCY, registry=r
        )
        self.request_seconds = Histogram(
            "research_request_seconds", "End-to-end request latency", buckets=_LATENCY, registry=r
        )
        self.stored = Gauge(
            "research_stored_objects", "Stored responses by status, and conversations (read from the store)",
            ["kind", "status"], registry=r,
        )  # fmt: skip
        self.background = Gauge(
            "research_background_responses", "Background responses by status, all servers' (read from the store)",
            ["status"], registry=r,
        )  # fmt: skip
        self.background_running = Gauge(
            "research_background_running", "Background responses this server runs now", registry=r
        )

    def count_stored(self, counts: dict[str, dict[str, int]], running: int) -> None:
        """Set the stored objects' gauges from :meth:`~research.server.store.Store.counts`."""
        self.stored.clear()
        self.background.clear()
        for status, n in counts["responses"].items():
            self.stored.labels("response", status).set(n)
        self.stored.labels("conversation", "").set(counts["conversations"]["all"])
        for status, n in counts["background"].items():
            self.background.labels(status).set(n)
        self.background_running.set(running)

    def searched(self, seconds: float, index_seconds: float, retrieved_tokens: int, searches: int = 1) -> None:
        """Count a reply of the loop: its searches (run together: their time, the index's share of it), and its
        tokens."""
        self.retrieval_seconds.observe(seconds)
        self.search_overhead_seconds.observe(max(0.0, seconds - index_seconds))
        self.searches.inc(searches)
        self.retrieved_tokens.inc(retrieved_tokens)
