"""Where the time of workload (a) goes: pyinstrument call trees for both channels_neffos layers.

    python -m benchmarks.profile            # profile (a) and (a, alternating 2 processes)
    python -m benchmarks.profile --quick    # tiny sizes: a smoke run
    python -m benchmarks.profile --docs     # also copy the text trees into docs/benchmarks/

Each profile is one run of the workload under pyinstrument's statistical profiler (the sender,
both layers' broker clients and the receiver share one event loop, as in the benchmark). The
call trees are written as text (``profile_*.txt``) and HTML (``profile_*.html``) next to
``results.json``. Timings under a profiler are slower than in the benchmark; read the shares.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
from pathlib import Path

from pyinstrument import Profiler

from channels_neffos.testing.brokers import NatsServer, RedisServer

from . import workloads
from .subjects import NEFFOS_NATS, NEFFOS_REDIS, layer_subjects

REPO = Path(__file__).resolve().parent.parent


def profile_workloads(count: int, out: Path, interval: float = 0.0001) -> list[Path]:
    """Profile (a) for both layers, single channel and alternating; return the text files."""
    written = []
    with RedisServer() as redis_server, NatsServer() as nats_server:
        subjects = {s.name: s for s in layer_subjects(redis_server.url, nats_server.url)}
        for name, slug in ((NEFFOS_REDIS, "redis"), (NEFFOS_NATS, "nats")):
            spec = subjects[name].spec
            for channels, suffix in ((1, ""), (2, "_alternating")):
                profiler = Profiler(interval=interval, async_mode="disabled")
                with profiler:  # alternating: each channel in a receiving process of its own
                    rate = asyncio.run(
                        workloads.send_receive_rate(
                            spec, count, channels=channels, receivers=channels
                        )
                    )
                stem = f"profile_a_{slug}{suffix}"
                text = profiler.output_text(unicode=True, color=False, show_all=False)
                header = (
                    f"(a) {name}, {channels} channel(s) in {channels} receiving process(es), "
                    f"{count:,} messages: {rate:,.0f}/s under the profiler\n"
                )
                (out / f"{stem}.txt").write_text(header + text)
                (out / f"{stem}.html").write_text(profiler.output_html())
                written.append(out / f"{stem}.txt")
                print(header + text, flush=True)
    return written


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--docs", action="store_true", help="copy the text trees into docs/")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    written = profile_workloads(300 if args.quick else 20_000, args.out)
    if args.docs:
        for path in written:
            shutil.copy(path, REPO / "docs" / "benchmarks" / path.name)
    return written


if __name__ == "__main__":
    main()
