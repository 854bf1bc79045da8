"""Checks on what the daemon leaves behind: no secret in any output, memory that does not
grow, files within their bounds."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.soak.checks.core import MB, Violation

__all__ = [
    "FileBounds",
    "Fit",
    "check_file_bounds",
    "find_secrets",
    "fit_rss",
    "judge_rss",
    "redact",
]

# --------------------------------------------------------------------------- secrets


_JWT = re.compile(rb"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{16,}")


def find_secrets(data: bytes, secrets: Mapping[str, bytes]) -> list[str]:
    """What in ``data`` is a secret: the names of the ``secrets`` it contains (never their
    values) and one entry per JWT-shaped string (a token: no output may carry one)."""
    found = [name for name, value in secrets.items() if value and value in data]
    found += [f"a JWT at byte {m.start()}" for m in _JWT.finditer(data)]
    return found


def redact(text: str, secrets: Mapping[str, bytes]) -> str:
    """``text`` with every secret and JWT-shaped string replaced by its name, for printing
    (a violation may quote the very log line that leaked a key)."""
    for name, value in sorted(secrets.items(), key=lambda kv: -len(kv[1])):
        if value:
            text = text.replace(value.decode(errors="replace"), f"[{name}]")
    return _JWT.sub(b"[a JWT]", text.encode(errors="replace")).decode(errors="replace")


# --------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class Fit:
    """A least-squares line through memory samples: slope and the span it was fitted on."""

    slope_bytes_per_second: float
    seconds: float
    samples: int
    first_bytes: int
    last_bytes: int

    @property
    def mb_per_10_minutes(self) -> float:
        return self.slope_bytes_per_second * 600 / MB


def fit_rss(samples: Sequence[tuple[float, int]], *, warmup_seconds: float) -> Fit | None:
    """The slope of RSS over time after the first ``warmup_seconds`` of ``samples`` (one
    process's (time, bytes), in time order); ``None`` with fewer than 3 samples left."""
    if not samples:
        return None
    start = samples[0][0] + warmup_seconds
    kept = [(t, b) for t, b in samples if t >= start]
    if len(kept) < 3:
        return None
    n = len(kept)
    mean_t = sum(t for t, _ in kept) / n
    mean_b = sum(b for _, b in kept) / n
    var = sum((t - mean_t) ** 2 for t, _ in kept)
    if var == 0:
        return None
    cov = sum((t - mean_t) * (b - mean_b) for t, b in kept)
    return Fit(cov / var, kept[-1][0] - kept[0][0], n, kept[0][1], kept[-1][1])


def judge_rss(
    fit: Fit | None, *, limit_mb_per_10_minutes: float, min_seconds: float
) -> tuple[str, list[Violation]]:
    """The verdict on a fit: judged only over at least ``min_seconds`` (a shorter window's
    slope is mostly noise: a garbage collection or one large scrape moves it by megabytes)."""
    if fit is None:
        return "not measured (too few samples after the warm-up)", []
    slope = fit.mb_per_10_minutes
    if fit.seconds < min_seconds:
        return (
            f"not judged: fitted on {fit.seconds:.0f} s, the bound is judged on >= "
            f"{min_seconds:.0f} s",
            [],
        )
    if slope >= limit_mb_per_10_minutes:
        return f"FAIL (>= {limit_mb_per_10_minutes:g} MB / 10 min)", [
            Violation(
                None,
                "rss slope",
                f"RSS grew {slope:.2f} MB / 10 min over {fit.seconds:.0f} s after the warm-up "
                f"(bound {limit_mb_per_10_minutes:g})",
            )
        ]
    return f"ok (< {limit_mb_per_10_minutes:g} MB / 10 min)", []


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class FileBounds:
    """The bounds the daemon was configured with (``None``: not configured / not supported)."""

    audit_max_bytes: int | None = None
    audit_keep: int | None = None


_ROTATED = re.compile(r"^audit\.jsonl\.(\d+)$")


def check_file_bounds(
    sizes: Mapping[str, int], bounds: FileBounds, *, longest_line: int
) -> list[Violation]:
    """``sizes``: the largest size seen per file name of ``state.dir``. Each audit file stays
    within ``audit_max_bytes`` plus one line (a line is never split), and there are at most
    ``audit_keep`` rotated files."""
    out: list[Violation] = []
    if bounds.audit_max_bytes is not None:
        limit = bounds.audit_max_bytes + longest_line
        for name, size in sorted(sizes.items()):
            if (name == "audit.jsonl" or _ROTATED.match(name)) and size > limit:
                out.append(
                    Violation(
                        None,
                        "file size",
                        f"{name} reached {size:,} bytes: over state.audit_max_bytes "
                        f"{bounds.audit_max_bytes:,} + one line ({longest_line:,})",
                    )
                )
    if bounds.audit_keep is not None:
        rotated = sorted(name for name in sizes if _ROTATED.match(name))
        numbers = [int(m.group(1)) for name in rotated if (m := _ROTATED.match(name))]
        if len(rotated) > bounds.audit_keep or any(n > bounds.audit_keep for n in numbers):
            out.append(
                Violation(
                    None,
                    "file size",
                    f"{len(rotated)} rotated audit files ({', '.join(rotated)}): "
                    f"state.audit_keep is {bounds.audit_keep}",
                )
            )
    return out
