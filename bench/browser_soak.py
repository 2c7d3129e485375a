"""Run the browser tests again and again with both cores busy, to find flaky waits.

    python bench/browser_soak.py                 # 10 runs, 2 spinning load processes
    python bench/browser_soak.py --runs 2        # a quick look
    python bench/browser_soak.py --no-load       # the same runs on an idle machine

Each run is a fresh `pytest` subprocess over the browser test files (FILES: every
tests/test_e2e*.py, the files whose tests use the `page` / `server` fixtures of
tests/conftest.py; AppTest tests run in-process and are not here). Meanwhile LOAD Python processes spin at
the same priority as the tests (the CI machine has 2 shared cores), started here and
killed at the end. CI=true is set, so a missing chromium fails instead of skipping.

Per run it prints pass or fail, the time, and the failing test ids; a failing test's
screenshot, page text and server log go to a folder it names (GANLAB_E2E_ARTIFACTS,
tests/browser.py save_artifacts), next to that run's pytest output. The last line
counts, e.g. "10/10 runs passed (11 tests each), both cores busy". Exit status 0 only
when every run passed.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted(str(f.relative_to(ROOT)) for f in (ROOT / "tests").glob("test_e2e*.py"))
LOAD = 2   # spinning processes: both cores of the CI machine


def start_load(n: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"],
                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
            for _ in range(n)]


def stop_load(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.kill()
    for proc in procs:
        proc.wait()


def run_once(index: int, out: Path, files: list[str]) -> tuple[bool, int, list[str], float]:
    """One pytest run: (passed, tests run, failing test ids, seconds)."""
    folder = out / f"run{index:02d}"
    folder.mkdir(parents=True)
    junit = folder / "junit.xml"
    env = {**os.environ, "CI": "true", "GANLAB_E2E_ARTIFACTS": str(folder / "artifacts")}
    start = time.monotonic()
    with open(folder / "pytest.log", "wb") as log:
        rc = subprocess.call([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                              "-q", "-rfE", f"--junitxml={junit}", *files],
                             cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - start
    tests, failing = 0, []
    if junit.exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            tests += 1
            if case.find("failure") is not None or case.find("error") is not None:
                path = case.get("classname", "").replace(".", "/") + ".py"
                failing.append(f"{path}::{case.get('name')}")
            elif case.find("skipped") is not None:
                failing.append(f"{case.get('classname')}::{case.get('name')} (skipped)")
    if rc != 0 and not failing:
        failing.append(f"pytest exited with {rc} (see {folder / 'pytest.log'})")
    return rc == 0 and not failing, tests, failing, seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=10, help="pytest runs in a row (10)")
    parser.add_argument("--no-load", action="store_true",
                        help="no spinning processes: the machine as it is")
    parser.add_argument("--out", type=Path, default=None,
                        help="folder for each run's pytest output and failure artifacts "
                             "(default: a new temporary folder)")
    parser.add_argument("files", nargs="*", default=FILES,
                        help="test files or ids (default: every browser test file)")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    out = args.out or Path(tempfile.mkdtemp(prefix="browser_soak-"))
    if out.exists() and any(out.glob("run*")):   # an earlier soak's runs would mix in
        parser.error(f"--out {out} holds an earlier soak's runs: name a new folder")
    out.mkdir(parents=True, exist_ok=True)
    load_note = "no background load" if args.no_load else "both cores busy"
    print(f"{args.runs} runs of {' '.join(args.files)}; {load_note} "
          f"({0 if args.no_load else LOAD} spinning processes on {os.cpu_count()} cores); "
          f"output in {out}", flush=True)

    # a SIGTERM ends the soak like Ctrl-C does: through the finally that stops the load
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load = [] if args.no_load else start_load(LOAD)
    passed, counts, times = 0, set(), []
    try:
        for i in range(1, args.runs + 1):
            ok, tests, failing, seconds = run_once(i, out, args.files)
            passed += ok
            counts.add(tests)
            times.append(seconds)
            print(f"run {i}/{args.runs}: {'PASS' if ok else 'FAIL'} ({tests} tests, "
                  f"{seconds:.0f} s)", flush=True)
            for test in failing:
                print(f"    {test}", flush=True)
            if not ok:
                print(f"    output: {out / f'run{i:02d}'}", flush=True)
    finally:
        stop_load(load)
    n = "/".join(str(c) for c in sorted(counts)) or "0"
    print(f"time per run: mean {sum(times) / len(times):.0f} s, min {min(times):.0f} s, "
          f"max {max(times):.0f} s")
    print(f"{passed}/{args.runs} runs passed ({n} tests each), {load_note}")
    return 0 if passed == args.runs else 1


if __name__ == "__main__":
    sys.exit(main())
