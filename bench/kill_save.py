"""kill -9 a training process that saves a checkpoint every step, again and again.

Each round starts `python -m core train --checkpoint-every 1 --keep-checkpoints 3`
(round 1 fresh, later rounds --resume from the newest file the last round left), waits
for it to save a new checkpoint, then sends SIGKILL: in odd rounds after a random
moment, in even rounds as soon as a save's temp file appears (mid-save). After each
kill it checks that every file under a final name (step_<N>.safetensors) loads and
validates, so the newest one can be resumed, and counts the temp files
(.step_<N>.safetensors.<random>.tmp) the kill left behind.

Those temps are removed by the next start only once they are older than
core.io.checkpoint.STALE_TEMP_S (a fresh one may belong to a save in progress), so before
each restart the bench ages the leftovers (sets their mtime an hour back) and checks,
after the next kill, that the restarted process removed them on its first save.

    python bench/kill_save.py [--rounds 20] [--hidden 256]
"""
from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from core.io.checkpoint import load_checkpoint  # noqa: E402
from core.io.schema import CheckpointError  # noqa: E402

FINAL = "step_*.safetensors"
TEMPS = ".step_*.tmp"


def newest(folder: Path) -> Path | None:
    files = sorted(folder.glob(FINAL), key=lambda p: int(p.name[5:].split(".")[0]))
    return files[-1] if files else None


def one_round(folder: Path, resume: Path | None, hidden: int, rng: random.Random,
              mid_save: bool) -> dict:
    cmd = [sys.executable, "-m", "core", "train", "--steps", "100000000", "--eval-every", "0",
           "--checkpoint-every", "1", "--keep-checkpoints", "3", "--out", str(folder)]
    cmd += ["--resume", str(resume)] if resume else [
        "--data", "ring8", "--set", f"g_hidden=[{hidden},{hidden}]",
        "--set", f"d_hidden=[{hidden}]"]
    before = newest(folder)
    started = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "GANLAB_TORCH_THREADS": "1"})
    while time.time() - started < 120:   # until it has saved a checkpoint of its own
        if proc.poll() is not None:
            raise SystemExit(f"train exited early ({proc.returncode}): "
                             f"{proc.stderr.read().decode()[-500:]}")
        latest = newest(folder)
        if latest is not None and latest != before and latest.stat().st_mtime >= started:
            break
        time.sleep(0.02)
    if mid_save:   # as soon as a temp file exists: between its creation and os.replace
        deadline = time.time() + 30
        while not any(folder.glob(TEMPS)) and time.time() < deadline:
            time.sleep(0.0005)
    else:
        time.sleep(rng.uniform(0.0, 0.4))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    finals, bad = sorted(folder.glob(FINAL)), []
    for path in finals:
        try:
            load_checkpoint(path)
        except CheckpointError as exc:
            bad.append(f"{path.name}: {exc}")
    latest = newest(folder)
    return {"finals": len(finals), "bad": bad, "latest": latest,
            "temps": sorted(folder.glob(TEMPS))}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--hidden", type=int, default=256,
                    help="layer width: bigger files, so more kills land mid-save")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    t0 = time.perf_counter()
    unloadable, kept, aged, kill_temps = 0, 0, [], 0
    print(f"{'kill':>4} {'when':>8} {'newest file':>24} {'KB':>6} {'final files':>11} "
          f"{'unloadable':>10} {'temps left':>10} {'aged temps removed':>18}")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "run"
        resume = None
        for i in range(1, args.rounds + 1):
            r = one_round(folder, resume, args.hidden, rng, mid_save=i % 2 == 0)
            removed = sum(not p.exists() for p in aged)
            kept += len(aged) - removed
            unloadable += len(r["bad"]) + (r["latest"] is None)
            kill_temps += len(r["temps"])
            size = r["latest"].stat().st_size // 1024 if r["latest"] else 0
            name = r["latest"].name if r["latest"] else "-"
            print(f"{i:>4} {'mid-save' if i % 2 == 0 else 'random':>8} {name:>24} {size:>6} "
                  f"{r['finals']:>11} {len(r['bad']):>10} {len(r['temps']):>10} "
                  f"{removed:>11} of {len(aged):<4}")
            for line in r["bad"]:
                print(f"     unloadable: {line}")
            # age what this kill left, so the next start sweeps it (see the docstring)
            old = time.time() - 3600
            for p in r["temps"]:
                os.utime(p, (old, old))
            aged = r["temps"]
            resume = r["latest"]
        leftover = sorted(folder.glob(TEMPS))
    print(f"{args.rounds} kills in {time.perf_counter() - t0:.0f} s; final-name files that "
          f"failed to load: {unloadable}; temp files left by kills: {kill_temps}, of which "
          f"the next start did not remove: {kept} (the last kill's {len(leftover)} are left "
          "for a next start)")
    return 1 if unloadable or kept else 0


if __name__ == "__main__":
    sys.exit(main())
