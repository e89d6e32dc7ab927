"""What a benchmark produces: `Figure` rows, their statistics, the table and the machine info.

Pure formatting and arithmetic; the measuring lives in the other bench modules.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Figure:
    """One line of the table. `passed` is None for a line shown for reference only."""

    key: str
    name: str
    value: float | None
    unit: str
    target: str
    passed: bool | None
    floor: float | None = None
    ratio: float | None = None
    extra: dict[str, float] = field(default_factory=dict)
    note: str = ""
    floor_label: str = ""  # what the floor is, a few words for the README's table


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile, q in [0, 100]."""
    data = sorted(values)
    if not data:
        return float("nan")
    pos = (len(data) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(data) - 1)
    return data[low] + (data[high] - data[low]) * (pos - low)


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def failed(key: str, name: str, target: str, exc: BaseException) -> Figure:
    """The row for a figure that could not be measured: shown, never fatal."""
    return Figure(key, name, None, "", target, None, note=f"error: {exc.__class__.__name__}: {exc}")


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "msg/s":
        return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.1f} {unit}"
    if unit == "%":
        return f"{value:.2f} %"
    return f"{value:.1f} {unit}" if value >= 10 else f"{value:.2f} {unit}"


def _extra(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.4g}"


def _result(passed: bool | None, value: float | None) -> str:
    if value is None:
        return "ERROR"
    if passed is None:
        return "info"
    return "PASS" if passed else "FAIL"


def table(figures: Sequence[Figure]) -> str:
    head = ("figure", "measured", "floor", "ratio", "SPEC target", "result")
    rows = [
        (
            f.name,
            _num(f.value, f.unit),
            _num(f.floor, f.unit),
            "-" if f.ratio is None else f"{f.ratio:.3f}x",
            f.target,
            _result(f.passed, f.value),
        )
        for f in figures
    ]
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]
    line = "  ".join("-" * w for w in widths)

    def fmt(row: Sequence[str]) -> str:
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        cells[-1] = row[-1].ljust(widths[-1])
        cells[-2] = row[-2].ljust(widths[-2])
        return "  ".join(cells).rstrip()

    out = [fmt(head), line, *(fmt(r) for r in rows), line]
    for f in figures:
        bits = [f"{k}={_extra(v)}" for k, v in f.extra.items()]
        if f.note:
            bits.append(f.note)
        if bits:
            out.append(f"  {f.key}: " + ", ".join(bits))
    return "\n".join(out)


def markdown(figures: Sequence[Figure]) -> str:
    """The table as the README shows it: one row per figure, the floor named."""
    out = [
        "| figure | measured | floor | ratio | SPEC target | result |",
        "|---|---|---|---|---|---|",
    ]
    for f in figures:
        floor = _num(f.floor, f.unit)
        if f.floor is not None and f.floor_label:
            floor = f"{floor} ({f.floor_label})"
        ratio = "-" if f.ratio is None else f"{f.ratio:.2f}×"
        target = f.target.replace("<=", "≤").replace(">=", "≥")
        cells = [f.name.strip(), _num(f.value, f.unit), floor, ratio, target]
        cells.append(_result(f.passed, f.value))
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(out)


def _bwrap_version() -> str:
    try:
        done = subprocess.run(["bwrap", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unavailable ({exc})"
    return done.stdout.strip() or done.stderr.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def load_average() -> str:
    """1, 5 and 15 minute load: other work on the machine skews every figure."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine() -> dict[str, str]:
    return {
        "cpus": str(os.cpu_count()),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "interpreter": sys.executable,
        "bwrap": _bwrap_version(),
        "load": load_average(),
    }


def write_json(path: Path, info: dict[str, str], figures: Sequence[Figure], quick: bool) -> None:
    doc: dict[str, Any] = {
        "machine": info,
        "quick": quick,
        "figures": [asdict(f) for f in figures],
    }
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
