"""Same-run A/B of two versions of channels_neffos: is a change at least as fast as before?

    python -m benchmarks.ab --base 66c848c               # layers: python -m benchmarks
    python -m benchmarks.ab --base 66c848c --e2e         # WebSocket clients: benchmarks.e2e --quick
    python -m benchmarks.ab --base 66c848c --e2e --full  # ... at full size (200 clients each)
    python -m benchmarks.ab --base 66c848c --rounds 5 --out /tmp/ab

``--base`` is a git revision (checked out into a temporary worktree) or a directory holding
another checkout. Both versions run on this machine, in this run, with this virtualenv: round
after round they take turns (A B, then B A, ...), each run a fresh ``python -m benchmarks``
(or ``benchmarks.e2e``) with that checkout first on ``sys.path``, so the machine's slow spells
fall on both. Every throughput row of channels_neffos (messages, deliveries or asks per second)
is reported as the median over the rounds of each version and their ratio, head / base, and as
the ratio of the best rounds: on a machine shared with others a slow spell only ever takes
throughput away, so the best round is what the code can do, and the median what it did. A row
whose two ratios are both under ``--floor`` (0.95) is marked. Absolute numbers mean nothing
across machines or runs; the ratios are the result, and every round's numbers are kept in
``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
#: The layers of ours in the layer benchmark (benchmarks.subjects).
OURS = ("channels_neffos Redis", "channels_neffos NATS")
#: Our subjects in the end-to-end benchmark (benchmarks.e2e.subjects).
OURS_E2E = "neffos-redis,neffos-nats,ns-redis,ns-nats"


def throughput_rows(results: dict[str, Any], *, e2e: bool) -> dict[str, float]:
    """``{row: value}`` of every per-second number of our subjects in one run's results."""
    rows: dict[str, float] = {}

    def walk(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key not in ("samples", "meta", "targets", "errors"):
                    walk(value, (*path, str(key)))
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            name = "/".join(path)
            per_second = path[-1].endswith("_per_s") or path[0] in ("a_send_receive", "e_ask")
            if e2e:  # the burst is a throughput; the paced phase runs at a set rate
                per_second = path[-2:] == ("burst", "deliveries_per_s")
            if per_second and (e2e or any(ours in name for ours in OURS)):
                rows[name] = float(node)

    walk(results, ())
    return rows


def run_once(tree: Path, out: Path, *, e2e: bool, full: bool = False) -> dict[str, float]:
    """One benchmark run of the checkout ``tree``; its throughput rows."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    if e2e:
        command = [sys.executable, "-m", "benchmarks.e2e", "--out", str(out)]
        command += ["--subjects", OURS_E2E] + ([] if full else ["--quick"])
    else:
        only = ",".join(OURS)
        command = [sys.executable, "-m", "benchmarks", "--only", only, "--out", str(out)]
    subprocess.run(command, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    found = sorted(out.rglob("results.json"))
    if not found:
        raise RuntimeError(f"no results.json under {out}")
    results = json.loads(found[-1].read_text())
    if results.get("errors"):  # a failed case has no number: a ratio would hide it
        raise RuntimeError(f"the run of {tree} failed: {results['errors']}")
    return throughput_rows(results, e2e=e2e)


def base_tree(base: str, scratch: Path) -> Path:
    """A directory holding the base version: ``base`` itself, or a worktree of that revision."""
    if Path(base).is_dir():
        return Path(base).resolve()
    tree = scratch / "base"
    subprocess.run(
        ["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), base],
        check=True,
        capture_output=True,
    )
    # The WebSocket clients' npm packages are not in git: borrow this checkout's.
    node_modules = REPO / "testproject" / "node_modules"
    if node_modules.is_dir():
        (tree / "testproject" / "node_modules").symlink_to(node_modules)
    return tree


Row = tuple[str, float, float, float, float, bool]


def compare(rounds: list[dict[str, dict[str, float]]], floor: float) -> list[Row]:
    """(row, base median, head median, ratio of medians, ratio of the best rounds, below the
    floor) for the rows both versions have."""
    table = []
    rows = sorted(set.intersection(*(set(r["base"]) & set(r["head"]) for r in rounds)))
    for row in rows:
        base = [r["base"][row] for r in rounds]
        head = [r["head"][row] for r in rounds]
        median = statistics.median(head) / statistics.median(base)
        best = max(head) / max(base)
        table.append(
            (
                row,
                statistics.median(base),
                statistics.median(head),
                median,
                best,
                max(median, best) < floor,
            )
        )
    return table


def main(argv: list[str] | None = None) -> list[Row]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--base", required=True, help="a git revision, or a checkout directory")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each version (default 3)")
    parser.add_argument("--e2e", action="store_true", help="benchmarks.e2e --quick instead")
    parser.add_argument("--full", action="store_true", help="with --e2e: full size, not --quick")
    parser.add_argument("--floor", type=float, default=0.95, help="the ratio to stay above")
    parser.add_argument("--out", type=Path, help="keep every run's results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="neffos-ab-") as scratch_name:
        scratch = Path(scratch_name)
        out = args.out or scratch / "runs"
        trees = {"base": base_tree(args.base, scratch), "head": REPO}
        rounds: list[dict[str, dict[str, float]]] = []
        try:
            for index in range(args.rounds):
                order = ("base", "head") if index % 2 == 0 else ("head", "base")
                results = {}
                for version in order:
                    where = out / f"round{index}-{version}"
                    print(f"round {index + 1}/{args.rounds}: {version}", flush=True)
                    results[version] = run_once(trees[version], where, e2e=args.e2e, full=args.full)
                rounds.append(results)
        finally:
            if trees["base"].is_relative_to(scratch):
                subprocess.run(
                    ["git", "-C", str(REPO), "worktree", "remove", "--force", str(trees["base"])],
                    check=False,
                    capture_output=True,
                )
    table = compare(rounds, args.floor)
    if not table:
        raise SystemExit("the two versions have no throughput row in common")
    width = max(len(row) for row, *_ in table)
    print(f"\n{'row':<{width}}  {'base':>10}  {'head':>10}  median  best")
    for row, base, head, median, best, below in table:
        mark = "  < floor" if below else ""
        print(f"{row:<{width}}  {base:>10,.0f}  {head:>10,.0f}  {median:6.2f}  {best:4.2f}{mark}")
    below = [row for row, *_, low in table if low]
    print(f"\n{len(table)} rows, {len(below)} below {args.floor}: " + (", ".join(below) or "none"))
    return table


if __name__ == "__main__":
    main()
