"""Writing large per-app metric families straight to exposition text, fast.

prometheus_client builds a ``Sample`` object per series and formats it with sorted, escaped
labels: about 5 µs a series. At 10,000 apps the platform values and the poll-error counters are
over 300,000 series, and that was a 1.7-2.1 s scrape (README, Performance). The collectors that
export per-app values therefore also implement :class:`TextCollector`: they write their lines
themselves, with each app's label escaped once and the common numbers formatted from a table.

What they write must be exactly what prometheus_client would write for the same samples:
the HELP/TYPE/UNIT lines come from prometheus_client itself (it encodes each family once,
empty), and ``tests/export/test_exposition.py`` compares the two byte for byte, in both formats.

One value that cannot be written (a number too large for a float, or not a number at all: a
bug wherever it came from) must not make ``/metrics`` fail for everything: :func:`render`
then writes the collector it came from again, through prometheus_client, without the samples
that cannot be written, and reports each to ``on_drop``. Until that happens it costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, cast, runtime_checkable

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder, generate_latest
from prometheus_client.openmetrics import exposition as _openmetrics
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = [
    "SMALL_MAX",
    "SMALL_NUMBERS",
    "SMALL_TEXT",
    "Family",
    "OnDrop",
    "Registry",
    "TextCollector",
    "escape_label_value",
    "go_number",
    "number",
    "render",
]

Kind = Literal["gauge", "counter", "gaugehistogram", "histogram"]

# The library's encoders, typed (they are untyped there).
_text_latest: Final = cast(Callable[[object], bytes], generate_latest)
_om_latest: Final = cast(Callable[[object], bytes], _openmetrics.generate_latest)
#: floatToGoString, with untyped arguments in the library; typed here.
go_number: Final = cast(Callable[[float], str], floatToGoString)

#: Small whole numbers have their text in :data:`SMALL_NUMBERS` (index = the number).
SMALL_MAX: Final = 4096
#: The text of the small whole numbers most values are (counts, sessions, bucket counts).
SMALL_NUMBERS: Final[tuple[str, ...]] = tuple(go_number(float(i)) for i in range(SMALL_MAX))


#: The same texts by value: ``1`` and ``1.0`` are one key (equal numbers hash alike).
SMALL_TEXT: Final[dict[float, str]] = dict(enumerate(SMALL_NUMBERS))


def number(value: float) -> str:
    """``value`` as prometheus_client writes it (``floatToGoString``), small whole numbers
    (ints or floats, never bools) from a table: one dictionary lookup on the hot path."""
    text = SMALL_TEXT.get(value)
    return text if text is not None else go_number(value)


def escape_label_value(value: str) -> str:
    """A label value escaped as both exposition formats require."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _One:
    """The registry-like object prometheus_client's encoders need, holding one family."""

    def __init__(self, metric: Metric) -> None:
        self._metric = metric

    def collect(self) -> Iterable[Metric]:
        return [self._metric]


@dataclass(frozen=True)
class Family:
    """One metric family's identity, and its header lines in each format."""

    name: str
    documentation: str
    kind: Kind
    labels: tuple[str, ...] = ("app",)
    unit: str = ""
    _headers: dict[bool, str] = field(default_factory=dict, compare=False, repr=False)

    def empty(self) -> Metric:
        """A prometheus_client family with this identity and no samples."""
        labels = list(self.labels)
        if self.kind == "gauge":
            return GaugeMetricFamily(self.name, self.documentation, labels=labels, unit=self.unit)
        if self.kind == "counter":
            return CounterMetricFamily(self.name, self.documentation, labels=labels, unit=self.unit)
        if self.kind == "histogram":
            return HistogramMetricFamily(
                self.name, self.documentation, labels=labels, unit=self.unit
            )
        return GaugeHistogramMetricFamily(
            self.name, self.documentation, labels=labels, unit=self.unit
        )

    def header(self, openmetrics: bool) -> str:
        """HELP/TYPE (and in OpenMetrics UNIT) lines, as prometheus_client writes them."""
        cached = self._headers.get(openmetrics)
        if cached is None:
            if openmetrics:
                text = _om_latest(_One(self.empty())).decode()
                cached = text.removesuffix("# EOF\n")
            else:
                cached = _text_latest(_One(self.empty())).decode()
            self._headers[openmetrics] = cached
        return cached

    def sub_header(self, suffix: str) -> str:
        """Text format only: the gauge a gauge histogram's ``_gcount``/``_gsum`` become."""
        doc = self.documentation.replace("\\", r"\\").replace("\n", r"\n")
        name = self.name + suffix
        return f"# HELP {name} {doc}\n# TYPE {name} gauge\n"


@runtime_checkable
class TextCollector(Protocol):
    """A collector that can write its own exposition text (both formats), as UTF-8 chunks."""

    def exposition(self, openmetrics: bool) -> list[bytes]: ...


class Registry(CollectorRegistry):
    """A ``CollectorRegistry`` that remembers its collectors in the order they came.

    Everything registered on it is exported on ``/metrics`` (:func:`render`): the collectors
    that write their own text through it, the rest through prometheus_client. Readers use it as
    any registry (``get_sample_value``).
    """

    def __init__(self) -> None:
        super().__init__()
        self._ordered: list[Collector] = []

    def register(self, collector: Collector) -> None:
        super().register(collector)
        self._ordered.append(collector)

    def unregister(self, collector: Collector) -> None:
        super().unregister(collector)
        self._ordered.remove(collector)

    def collectors(self) -> list[Collector]:
        """Every registered collector, in registration order."""
        return list(self._ordered)


class _Collected:
    """The registry-like object prometheus_client's encoders need, over some collectors."""

    def __init__(self, collectors: Sequence[Collector]) -> None:
        self._collectors = collectors

    def collect(self) -> Iterable[Metric]:
        for collector in self._collectors:
            yield from collector.collect()


#: Told the family name of every sample :func:`render` could not write and left out.
OnDrop = Callable[[str], None]

#: What writing a sample's value raises when it cannot be written (``float(10**400)``).
_UNWRITABLE = (OverflowError, TypeError, ValueError)


def _writable(value: object) -> bool:
    try:
        float(value)  # type: ignore[arg-type]
    except _UNWRITABLE:
        return False
    return True


class _Writable(_Collected):
    """:class:`_Collected` without the samples whose value cannot be written."""

    def __init__(self, collectors: Sequence[Collector], on_drop: OnDrop | None) -> None:
        super().__init__(collectors)
        self._on_drop = on_drop

    def collect(self) -> Iterable[Metric]:
        for metric in super().collect():
            kept = [s for s in metric.samples if _writable(s.value)]
            if len(kept) != len(metric.samples):
                if self._on_drop is not None:
                    for _ in range(len(metric.samples) - len(kept)):
                        self._on_drop(metric.name)
                metric.samples = kept
            yield metric


def render(
    registry: Registry, accept_header: str | None, *, on_drop: OnDrop | None = None
) -> tuple[list[bytes], str]:
    """Everything registered on ``registry`` as the ``/metrics`` body, in chunks.

    OpenMetrics when ``accept_header`` asks for ``application/openmetrics-text``, else the
    Prometheus text format 0.0.4. The collectors that write their own text come first (in the
    order they were registered), then all the others through prometheus_client's encoder. The
    body is left in chunks (one per family) so that it never needs a second, joined copy: at
    10,000 apps that copy is 18 MB. A sample that cannot be written is left out and reported
    to ``on_drop`` (module docstring).
    """
    encoder, content_type = choose_encoder(accept_header or "")
    openmetrics = content_type.startswith("application/openmetrics-text")
    collectors = registry.collectors()
    fast = [c for c in collectors if isinstance(c, TextCollector)]
    chunks: list[bytes] = []
    for collector in fast:
        try:
            chunks.extend(collector.exposition(openmetrics))
        except _UNWRITABLE:
            # The same text through prometheus_client, less what cannot be written; the
            # OpenMetrics encoder ends every call with EOF, which only the body's end has.
            text = encoder(_Writable([collector], on_drop))
            chunks.append(text.removesuffix(b"# EOF\n") if openmetrics else text)
    rest = [c for c in collectors if c not in fast]
    try:
        chunks.append(encoder(_Collected(rest)))
    except _UNWRITABLE:
        chunks.append(encoder(_Writable(rest, on_drop)))
    return chunks, content_type
