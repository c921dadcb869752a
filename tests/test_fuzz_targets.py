"""The atheris fuzz targets in ``fuzz/``, in CI: corpus replay and a short coverage-guided run.

* **Replay** — every file of ``fuzz/corpus/<target>/`` (real messages from ``make_corpus.py``,
  and ``regress-*`` inputs that once crashed a target) goes through that target's
  ``TestOneInput`` in this process: a regression test of every crash found so far.
* **Short fuzz run** — each target runs under atheris/libFuzzer in a subprocess for a few
  seconds, all three at once, starting from the committed corpus (new inputs go to a temporary
  directory, never into the committed one). A crash fails the test with the crashing input
  (libFuzzer writes it under ``-artifact_prefix``, a temporary directory) and the output tail.
* The runner itself is checked against a target that crashes on purpose, so a harness that
  could never report a crash does not pass silently.

Only atheris features present since 2.x are used (``Setup``, ``Fuzz``,
``instrument_imports(include=...)`` and plain libFuzzer flags), so tox on Python 3.11 with the
atheris 3.0.0 wheel runs the same.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]
FUZZ = REPO / "fuzz"
CORPUS = FUZZ / "corpus"
TARGETS = ("envelope", "protocol", "process")
#: Seconds each target fuzzes; they run side by side, so the whole run takes about this long.
FUZZ_SECONDS = 8
#: libFuzzer's random seed: each run tries a prefix of the same input sequence, so what CI finds
#: a rerun finds again (``FUZZ_SEED=random`` for a new sequence when exploring by hand).
FUZZ_SEED = os.environ.get("FUZZ_SEED", "20261123")
#: libFuzzer's per-input limit: an input that takes longer is a hang, reported as a crash.
INPUT_TIMEOUT_SECONDS = 5


def load_target(name: str) -> ModuleType:
    if str(FUZZ) not in sys.path:
        sys.path.insert(0, str(FUZZ))
    return importlib.import_module(f"fuzz_{name}")


def corpus_files() -> list[tuple[str, Path]]:
    return [(t, f) for t in TARGETS for f in sorted((CORPUS / t).iterdir()) if f.is_file()]


def test_every_target_has_a_seed_corpus_with_its_regressions() -> None:
    for target in TARGETS:
        names = [f.name for f in (CORPUS / target).iterdir()]
        assert len(names) >= 10, f"{target}: run fuzz/make_corpus.py"
    assert any(n.startswith("regress-") for n in os.listdir(CORPUS / "process"))
    assert any(n.startswith("regress-") for n in os.listdir(CORPUS / "envelope"))


@pytest.mark.parametrize(
    ("target", "path"), corpus_files(), ids=[f"{t}/{f.name}" for t, f in corpus_files()]
)
def test_corpus_replays_without_a_crash(target: str, path: Path) -> None:
    load_target(target).TestOneInput(path.read_bytes())


def _fuzz_command(script: Path, work: Path, seeds: Path, artifacts: Path, *flags: str) -> list[str]:
    return [
        sys.executable,
        str(script),
        str(work),  # libFuzzer adds new inputs to the first directory only
        str(seeds),
        f"-artifact_prefix={artifacts}{os.sep}",
        f"-timeout={INPUT_TIMEOUT_SECONDS}",
        "-rss_limit_mb=2048",
        *([] if FUZZ_SEED == "random" else [f"-seed={FUZZ_SEED}"]),
        *flags,
    ]


class FuzzRun:
    def __init__(self, name: str, command: list[str], artifacts: Path) -> None:
        self.name = name
        self.artifacts = artifacts
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(FUZZ)])},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self.output = ""

    def wait(self, timeout: float) -> int:
        try:
            out, _ = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            out, _ = self.process.communicate()
            self.output = out.decode(errors="replace")
            pytest.fail(f"fuzz target {self.name} did not stop:\n{self.output[-3000:]}")
        self.output = out.decode(errors="replace")
        return self.process.returncode

    def report(self) -> str:
        crashes = sorted(self.artifacts.glob("*"))
        shown = "\n".join(f"{c.name}: {c.read_bytes()[:2000]!r}" for c in crashes)
        lines = [line for line in self.output.splitlines() if "Instrumenting" not in line]
        return (
            f"fuzz target {self.name} exited with {self.process.returncode}\n"
            f"crash input(s) (replay: python fuzz/fuzz_{self.name}.py <file>):\n{shown or 'none'}"
            "\n--- output tail\n" + "\n".join(lines[-60:])
        )


@pytest.fixture(scope="module")
def fuzz_runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, FuzzRun]]:
    """Every target fuzzing for FUZZ_SECONDS, side by side."""
    runs = {}
    for name in TARGETS:
        base = tmp_path_factory.mktemp(f"fuzz-{name}")
        (base / "work").mkdir()
        (base / "artifacts").mkdir()
        command = _fuzz_command(
            FUZZ / f"fuzz_{name}.py",
            base / "work",
            CORPUS / name,
            base / "artifacts",
            f"-max_total_time={FUZZ_SECONDS}",
        )
        runs[name] = FuzzRun(name, command, base / "artifacts")
    try:
        for run in runs.values():
            run.wait(timeout=FUZZ_SECONDS + 60)
        yield runs
    finally:
        for run in runs.values():
            if run.process.poll() is None:
                run.process.kill()
                run.process.wait()


@pytest.mark.parametrize("name", TARGETS)
def test_a_short_fuzz_run_finds_no_crash(fuzz_runs: dict[str, FuzzRun], name: str) -> None:
    run = fuzz_runs[name]
    assert run.process.returncode == 0 and not list(run.artifacts.glob("*")), run.report()
    assert "Done" in run.output, run.report()  # libFuzzer's last line: it really ran


CRASHING_TARGET = """
import sys
import atheris

def TestOneInput(data):
    if data.startswith(b"boom"):
        raise RuntimeError("crashed on purpose")

atheris.Setup(sys.argv, TestOneInput)
atheris.Fuzz()
"""


def test_the_runner_reports_a_crash_with_its_input(tmp_path: Path) -> None:
    script = tmp_path / "fuzz_crashing.py"
    script.write_text(CRASHING_TARGET)
    seeds, work, artifacts = tmp_path / "seeds", tmp_path / "work", tmp_path / "artifacts"
    for directory in (seeds, work, artifacts):
        directory.mkdir()
    (seeds / "seed").write_bytes(b"boom!")
    run = FuzzRun("crashing", _fuzz_command(script, work, seeds, artifacts, "-runs=100"), artifacts)
    assert run.wait(timeout=60) != 0
    report = run.report()
    assert "crash-" in report and "b'boom!'" in report, report
    assert "crashed on purpose" in report, report


def test_targets_tolerate_only_documented_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """A target must not swallow an unexpected exception type: that is what a crash is."""
    targets = [load_target(name).TestOneInput for name in ("envelope", "process")]
    for target in targets:
        target(b"\xc1")  # garbage: a documented drop, no crash
    from channels_neffos import envelope

    def broken(data: bytes) -> list[envelope.Envelope]:
        raise KeyError("an undocumented error")

    monkeypatch.setattr(envelope, "decode_frame", broken)
    for target in targets:
        with pytest.raises(KeyError):
            target(b"\xc1")
