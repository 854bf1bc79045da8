"""exposition: the per-app families write exactly what prometheus_client would write.

Metrics.render writes the platform values and the poll-error counters itself (it is the
difference between a 2 s and a 0.2 s scrape at 10,000 apps). Here random fleets are rendered
both ways, in both formats, and must match byte for byte; so every test that reads the
registry (tests/export/test_metrics.py) also holds for what /metrics serves.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest
from prometheus_client.parser import text_string_to_metric_families

from duixwatch.core import models
from duixwatch.export import apps as per_app
from duixwatch.export import exposition, metrics
from duixwatch.export.exposition import Registry
from tests.fakes import FakeClock

OPENMETRICS_ACCEPT = "application/openmetrics-text; version=1.0.0; charset=utf-8"
NOW = FakeClock().now()

app_names = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12
)
# ages straddle the bucket bounds exactly (60 s, 300 s ...) and the future (clock skew)
ages = st.one_of(
    st.sampled_from([-5.0, 0.0, 59.999999, 60.0, 60.000001, 300.0, 86_400.0, 90_000.0]),
    st.floats(min_value=-100, max_value=200_000, allow_nan=False),
)


def at(age: float | None) -> datetime | None:
    return None if age is None else NOW - timedelta(seconds=age)


sessions_st = st.lists(
    st.builds(
        lambda sid, started, seen: models.Session(
            sid, started_at=at(started), first_seen_at=at(seen)
        ),
        st.one_of(st.none(), st.text(min_size=1, max_size=5)),
        st.one_of(st.none(), ages),
        st.one_of(st.none(), ages),
    ),
    max_size=30,
)


@st.composite
def snapshots(draw: st.DrawFn) -> list[models.AppSnapshot]:
    names = draw(st.lists(app_names, unique=True, max_size=8))
    out = []
    for name in names:
        fetched = draw(st.one_of(st.none(), st.floats(min_value=0, max_value=100)))
        failed = draw(st.booleans())
        listed = draw(st.booleans())
        out.append(
            models.AppSnapshot(
                app=name,
                app_id="1700",
                poll_interval_seconds=draw(st.sampled_from([1.0, 15.0, 4096.0, 0.5])),
                fetched_at=at(fetched),
                concurrency=None
                if fetched is None
                else models.Concurrency(
                    corp_id="c",
                    total_concurrent_number=draw(st.integers(0, 10**7)),
                    user_concurrent_number=draw(st.integers(0, 5000)),
                ),
                sessions=models.SessionList(tuple(draw(sessions_st)), shape="s")
                if listed and fetched is not None
                else None,
                error=models.PollError("server", "x", at=NOW) if failed else None,
                consecutive_failures=draw(st.integers(0, 5000)),
            )
        )
    return out


def library_text(collector: object, openmetrics: bool) -> str:
    registry = CollectorRegistry()
    registry.register(collector)  # type: ignore[arg-type]
    if openmetrics:
        return openmetrics_latest(registry).decode().removesuffix("# EOF\n")
    return generate_latest(registry).decode()


@settings(max_examples=150, deadline=None)
@given(snapshots(), st.booleans())
def test_platform_values_are_written_as_prometheus_client_writes_them(
    fleet: list[models.AppSnapshot], openmetrics: bool
) -> None:
    clock = FakeClock()
    collector = per_app.SnapshotCollector(lambda: fleet, clock=clock)
    assert b"".join(collector.exposition(openmetrics)).decode() == library_text(
        collector, openmetrics
    )


@settings(max_examples=60, deadline=None)
@given(
    st.lists(app_names, unique=True, max_size=6),
    st.lists(st.tuples(st.integers(0, 7), st.sampled_from(["auth", "internal", "timeout"]))),
    st.booleans(),
)
def test_poll_error_counts_are_written_as_prometheus_client_writes_them(
    apps: list[str], failures: list[tuple[int, str]], openmetrics: bool
) -> None:
    counter = per_app.PollErrorCounter()
    counter.set_apps(apps)
    for index, reason in failures:
        counter.inc(apps[index % len(apps)] if apps else "undeclared", reason)
    assert b"".join(counter.exposition(openmetrics)).decode() == library_text(counter, openmetrics)


def test_render_is_the_whole_registry_and_a_valid_exposition() -> None:
    clock = FakeClock()
    fleet = [
        models.AppSnapshot(
            app='say "hi"\\',
            app_id="1",
            poll_interval_seconds=15,
            fetched_at=clock.now(),
            concurrency=models.Concurrency("c", 3, 2),
            sessions=models.SessionList(
                (models.Session("a", started_at=clock.now() - timedelta(seconds=61)),), "s"
            ),
        )
    ]
    registry = Registry()
    m = metrics.Metrics(registry, snapshots=lambda: fleet, clock=clock, version="9")
    m.set_apps([fleet[0].app])
    m.poll_failed(fleet[0].app, "timeout")
    text, content_type = m.render(None)
    om, om_type = m.render(OPENMETRICS_ACCEPT)
    assert content_type.startswith("text/plain")
    assert om_type.startswith("application/openmetrics-text")
    assert om.endswith(b"# EOF\n")
    assert om.count(b"# EOF") == 1
    # the same families as the registry, in the same order (process values differ by the call)
    rendered = [f.name for f in text_string_to_metric_families(text.decode())]
    library = [f.name for f in text_string_to_metric_families(generate_latest(registry).decode())]
    assert rendered == library
    assert b'duixwatch_poll_errors_total{app="say \\"hi\\"\\\\",reason="timeout"} 1.0\n' in text
    assert b'duix_app_session_age_seconds_bucket{app="say \\"hi\\"\\\\",le="300.0"} 1.0\n' in text


def test_numbers_are_written_like_floatToGoString() -> None:
    from prometheus_client.utils import floatToGoString

    for value in (0, 1, 4095, 4096, 1e6, 12345678.0, 0.5, 1.7e9 + 0.25, -3, float("inf"), 2.0):
        assert exposition.number(value) == floatToGoString(value)


@settings(max_examples=200, deadline=None)
@given(sessions_st, st.integers(-(10**9), 10**9))
def test_session_list_ages_agree_with_each_sessions_age(
    items: list[models.Session], shift_us: int
) -> None:
    """The scrape's closed forms equal the per-session definition (counts and oldest exactly)."""
    listing = models.SessionList(tuple(items), shape="s")
    now = NOW + timedelta(microseconds=shift_us)
    known = [a for s in items if (a := s.age_seconds(now)) is not None]
    bounds = per_app.SESSION_AGE_BUCKETS
    summary = listing.ages(models.epoch_us(now), [int(b * 1_000_000) for b in bounds])
    assert summary.counts == (*(sum(1 for a in known if a <= b) for b in bounds), len(known))
    assert summary.oldest_seconds == (max(known) if known else None)
    assert summary.sum_seconds == pytest.approx(sum(known), abs=1e-6 * (len(known) + 1))
    # the counts hold until counts_valid_until_us, and change one microsecond later
    until = summary.counts_valid_until_us
    bounds_us = [int(b * 1_000_000) for b in bounds]
    if until < 2**62:
        assert listing.ages(until, bounds_us).counts[:-1] == summary.counts[:-1]
        assert listing.ages(until + 1, bounds_us).counts != summary.counts
    else:
        later = models.epoch_us(now) + 10**12
        assert listing.ages(later, bounds_us).counts == summary.counts


@settings(max_examples=100, deadline=None)
@given(st.lists(sessions_st, min_size=1, max_size=4), st.lists(st.integers(0, 10**8), max_size=8))
def test_kept_bucket_counts_equal_fresh_ones_as_time_passes(
    listings: list[list[models.Session]], steps_us: list[int]
) -> None:
    """The collector keeps counts between scrapes; at every later scrape they are right."""
    fleet = [
        models.AppSnapshot(
            app=f"app-{i}",
            app_id=str(i),
            poll_interval_seconds=100_000,  # fresh throughout
            fetched_at=NOW,
            concurrency=models.Concurrency("c", 1, 1),
            sessions=models.SessionList(tuple(items), shape="s"),
        )
        for i, items in enumerate(listings)
    ]
    clock = FakeClock()
    kept = per_app.SnapshotCollector(lambda: fleet, clock=clock)
    for step in steps_us:
        clock.advance(step / 1_000_000)
        fresh = per_app.SnapshotCollector(lambda: fleet, clock=clock)
        assert kept.exposition(False) == fresh.exposition(False)
