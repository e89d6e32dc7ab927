"""`python -m bench [--quick] [--json PATH] [--markdown]`: every SPEC section 11 figure, a table.

A figure that cannot be measured is shown as ERROR with the reason; the exit code is 0
whatever the numbers are, because this is a measurement, not a test.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fake_anthropic import FakeAnthropic

from bench.agent import COLD_NAME, MEMORY_NAME, MEMORY_TARGET_MIB, cold_start
from bench.core import LATENCY_TARGET_MS, pipeline
from bench.idle import IDLE_TARGET_PCT, idle_cpu
from bench.ingest import INGEST_TARGET, ingest
from bench.load import TARGETS, load
from bench.proxy_translate import FULL as TRANSLATE_FULL
from bench.proxy_translate import NAME as TRANSLATE_NAME
from bench.proxy_translate import QUICK as TRANSLATE_QUICK
from bench.proxy_translate import proxy_translate
from bench.report import Figure, failed, load_average, machine, markdown, table, write_json
from bench.spawn import COLD_TARGET, SPAWN_TARGET, sandbox_spawn


@dataclass(frozen=True)
class Plan:
    """Repetitions per figure."""

    spawn: int
    cold: int  # agent launches, each after its floor; the idle memory is read after each
    anthropic: int  # runs of `import anthropic` on the host, a reference for the cold start
    follow_ups: int
    replies: int
    ingest_s: float
    ingest_max: int
    idle_s: float
    load: int  # messages per level of the load figure
    translate: int  # requests through the proxy (and straight to the fake) per provider


FULL = Plan(30, 10, 3, 20, 50, 5.0, 20_000, 10.0, 100, TRANSLATE_FULL)
QUICK = Plan(10, 3, 1, 8, 15, 2.0, 5_000, 5.0, 30, TRANSLATE_QUICK)


def _measure(key: str, name: str, target: str, fn: Callable[[], list[Figure]]) -> list[Figure]:
    print(f"measuring {name} ...", file=sys.stderr, flush=True)
    start = time.monotonic()
    try:
        out = fn()
    except Exception as exc:  # a broken figure is reported, the others still run
        logging.getLogger("bench").debug("figure %s failed", key, exc_info=True)
        out = [failed(key, name, target, exc)]
    print(f"  done in {time.monotonic() - start:.1f}s", file=sys.stderr, flush=True)
    return out


def run(plan: Plan, fake: FakeAnthropic) -> list[Figure]:
    lat = f"p50 <= {LATENCY_TARGET_MS:g} ms"
    figures: list[Figure] = []
    figures += _measure(
        "spawn",
        "sandbox spawn",
        f"<= {SPAWN_TARGET:g}x floor",
        lambda: [sandbox_spawn(plan.spawn)],
    )
    cold = _measure(
        "cold_start",
        COLD_NAME,
        f"<= {COLD_TARGET:g}x floor",
        lambda: cold_start(fake, plan.cold, plan.anthropic),
    )
    if len(cold) == 1:  # both figures come from the same launches; an error sinks both
        why = Exception("not measured: the agent launches failed")
        cold.append(failed("idle_rss", MEMORY_NAME, f"<= {MEMORY_TARGET_MIB:g} MiB", why))
    figures += cold
    pipe = _measure(
        "follow_up",
        "warm follow-up: stored -> agent request",
        lat,
        lambda: pipeline(fake, plan.follow_ups, plan.replies),
    )
    if len(pipe) == 1:  # both figures come from one Core; an error sinks both
        pipe.append(
            failed(
                "reply",
                "reply: outbound file -> channel send",
                lat,
                Exception("not measured: the pipeline failed before the reply figure"),
            )
        )
    figures += pipe
    figures += _measure(
        "ingest",
        "inbound ingest",
        f">= {INGEST_TARGET:,.0f} msg/s",
        lambda: ingest(plan.ingest_s, plan.ingest_max),
    )
    figures += _measure(
        "idle_cpu",
        "daemon idle CPU",
        f"<= {IDLE_TARGET_PCT:g} %",
        lambda: [idle_cpu(plan.idle_s, fake.base_url)],
    )
    figures += _measure(
        "proxy_translate",
        TRANSLATE_NAME,
        "reference",
        lambda: proxy_translate(plan.translate),
    )
    figures += _measure(
        "load",
        "load: msg/s at 1, 5 and 20 groups",
        "; ".join(f"{g} groups {t.text()}" for g, t in TARGETS.items()),
        lambda: load(fake, plan.load),
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer repetitions")
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    p.add_argument("--markdown", action="store_true", help="also print the README's table")
    p.add_argument("-v", "--verbose", action="store_true", help="show the project's warnings")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.CRITICAL,
        format="%(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("aiosqlite", "watchfiles", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    info = machine()
    print("nanoclaw benchmarks" + (" (quick)" if args.quick else ""))
    for key, value in info.items():
        print(f"  {key:<12} {value}")
    print(flush=True)
    with FakeAnthropic() as fake:
        figures = run(QUICK if args.quick else FULL, fake)
    info["load_at_end"] = load_average()
    print()
    print(table(figures))
    print(f"load average at start {info['load']}, at end {info['load_at_end']}")
    if args.markdown:
        print()
        print(markdown(figures))
    if args.json is not None:
        write_json(args.json, info, figures, args.quick)
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
