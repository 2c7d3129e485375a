"""Feed hostile and broken checkpoint files to every CLI command that reads one.

The corpus: a valid run and arena checkpoint in the new (.safetensors) and old (.pt)
formats as controls, then files cut at many points, single bytes flipped all over a
valid file, random and foreign bytes, crafted safetensors headers and metadata (with
a correct checksum, so they reach the decoder), old .pt files holding a pickled
callable or crafted tensors (zero-stride views, short optimiser state, NaN, ...).
Each goes through `info`, `eval`, `sample`, `extract` and `train --resume` in this
process (core.cli.main.main), with an alarm per call to catch hangs, and is counted:

  clear   exit 2 with one line "error: ..." and no traceback (what a bad file must get)
  ok      exit 0 (only the controls should; also a usage error on a loadable file, e.g.
          extract of a run, counts as ok when the file itself was accepted)
  trace   a traceback printed or an exception out of main()
  other   any other exit status (1 = internal error) or more than one line
  hang    still running after --timeout seconds
  files   files left behind by a call that was refused

    python bench/fuzz_checkpoints.py [--flips 60] [--cuts 30] [--timeout 60]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import pickle
import random
import signal
import struct
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("GANLAB_TORCH_THREADS", "1")

import torch  # noqa: E402
from helpers import put  # noqa: E402  (tests/helpers.py)

from core.cli.main import main  # noqa: E402
from core.engine.config import preset  # noqa: E402
from core.io.checkpoint import to_bytes, to_pt_bytes  # noqa: E402
from core.io.format import pack  # noqa: E402

TINY = dict(g_hidden=[8, 8], d_hidden=[8], batch_size=32, sample_every=2, eval_every=0,
            max_snapshots=10, device="cpu")


def _states():
    from core.engine.arena import Arena
    from core.engine.trainer import Trainer

    torch.set_num_threads(1)
    t = Trainer(preset("recommended", data="ring8", **TINY))
    a = Arena(preset("recommended", data="ring8", **TINY), ["bce", "reinforce"])
    for _ in range(3):
        t.step()
        a.step()
    return t.state_dict(), a.state_dict()


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/ganlab_fuzz_pwned",))


def _header_file(header: dict, data: bytes = b"", length: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def _doc(state) -> str:
    return json.dumps({"format": "ganlab-checkpoint", "state": state})


def corpus(run: dict, arena: dict, flips: int, cuts: int, seed: int = 0) -> dict:
    """name -> (bytes, expected: "ok" or "clear")."""
    rng = random.Random(seed)
    good, good_arena = to_bytes(run), to_bytes(arena, "arena")
    old, old_arena = to_pt_bytes(run), to_pt_bytes(arena, "arena")
    out = {"control/new_run": (good, "ok"), "control/new_arena": (good_arena, "ok"),
           "control/old_run": (old, "ok"), "control/old_arena": (old_arena, "ok")}
    for i in range(cuts):   # 0 %, ..., just short of the whole file
        n = len(good) * i // cuts
        out[f"cut/new_{100 * i // cuts}%"] = (good[:n], "clear")
    for frac in (0.1, 0.5, 0.99):
        out[f"cut/old_{frac:.0%}"] = (old[:int(len(old) * frac)], "clear")
    for _ in range(flips):   # one byte changed anywhere: header, metadata or data
        where = rng.randrange(len(good))
        buf = bytearray(good)
        buf[where] ^= 1 << rng.randrange(8)
        out[f"flip/new_byte_{where}"] = (bytes(buf), "clear")
    from PIL import Image
    png = io.BytesIO()
    Image.new("L", (4, 4)).save(png, format="PNG")
    out.update({
        "foreign/empty": (b"", "clear"),
        "foreign/random_4k": (bytes(rng.randrange(256) for _ in range(4096)), "clear"),
        "foreign/png_renamed": (png.getvalue(), "clear"),
        "foreign/text": (b"not a checkpoint\n", "clear"),
        "foreign/zip_header_random": (b"PK\x03\x04" + os.urandom(2048), "clear"),
        "foreign/plain_safetensors": (pack_plain(), "clear"),
        "header/length_2^63": (struct.pack("<Q", 2**63) + b"{}", "clear"),
        "header/length_past_end": (_header_file({}, length=10**9), "clear"),
        "header/not_json": (struct.pack("<Q", 9) + b"{not json", "clear"),
        "header/deep": (struct.pack("<Q", 200_001) + b"{" + b"[" * 100_000 + b"]" * 100_000,
                        "clear"),
        "header/entry_not_tensor": (_header_file({"a": 1}), "clear"),
        "header/dtype_Q99": (_header_file({"a": {"dtype": "Q99", "shape": [1],
                                                 "data_offsets": [0, 1]}}, b"\0"), "clear"),
        "header/offsets_2^42": (_header_file({"a": {"dtype": "F32", "shape": [2**40],
                                                    "data_offsets": [0, 2**42]}}, b"\0" * 8),
                                "clear"),
        "header/overlap": (_header_file({
            "a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
            "b": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}, b"\0" * 4), "clear"),
        "meta/not_json": (pack("{x", {"a": torch.zeros(2)}), "clear"),
        "meta/deep": (pack('{"format":"ganlab-checkpoint","state":' + "[" * 100_000
                           + "]" * 100_000 + "}", {"a": torch.zeros(2)}), "clear"),
        "meta/huge_int": (pack('{"format":"ganlab-checkpoint","state":' + "9" * 5000 + "}",
                               {"a": torch.zeros(2)}), "clear"),
        "meta/unmapped_tensor": (pack(_doc({}), {"stowaway": torch.zeros(2)}), "clear"),
        "meta/missing_tensor": (pack(_doc({"x": {"$t": "nope"}}), {"a": torch.zeros(2)}),
                                "clear"),
        "meta/tensor_twice": (pack(_doc({"x": {"$t": "a"}, "y": {"$t": "a"}}),
                                   {"a": torch.zeros(2)}), "clear"),
        "meta/unknown_tag": (pack(_doc({"x": {"$p": "os.system"}}), {}), "clear"),
        "meta/complex_weights": (to_bytes(put(run, ("generator", "layers.0.weight"),
                                               torch.zeros(8, 2, dtype=torch.complex64))),
                                 "clear"),
        "meta/huge_fixed_z": (to_bytes(put(run, ("fixed_z",), torch.zeros(10**6, 2))),
                              "clear"),
        "meta/nan_weights": (to_bytes(put(run, ("generator", "layers.0.bias"),
                                           torch.full((8,), float("nan")))), "clear"),
        "meta/schema_1_in_new_format": (pack_state(run, schema_version=1), "clear"),
        "meta/arena_arm_int": (to_bytes(put(arena, ("arms", "bce"), 3), "arena"), "clear"),
        "old/pickled_callable": (_torch_save(dict(run, schema_version=1, x=Evil())), "clear"),
        "old/bare_pickle_callable": (pickle.dumps({"x": Evil()}), "clear"),
        "old/zero_stride_exp_avg": (to_pt_bytes(put(
            run, ("g_optimizer", "state", 0, "exp_avg"), torch.zeros(1).expand(114))), "clear"),
        "old/overlapping_weight": (to_pt_bytes(put(
            run, ("generator", "layers.0.weight"), torch.zeros(9).as_strided((8, 2), (1, 1)))),
            "clear"),
        "old/short_exp_avg": (to_pt_bytes(put(run, ("g_optimizer", "state", 0, "exp_avg"),
                                               torch.zeros(10))), "clear"),
        "old/step_nan": (to_pt_bytes(put(run, ("step",), float("nan"))), "clear"),
        "old/sparse_weight": (to_pt_bytes(put(run, ("generator", "layers.0.weight"),
                                               torch.zeros(8, 2).to_sparse())), "clear"),
        "old/foreign_torch_file": (_torch_save({"weights": torch.zeros(3)}), "clear"),
        "old/schema_2_in_old_format": (_torch_save(dict(run, schema_version=2)), "clear"),
    })
    return out


def pack_plain() -> bytes:
    from safetensors.torch import save
    return save({"w": torch.zeros(4)})


def pack_state(state: dict, **header) -> bytes:
    from core.io import format as ckpt_format
    payload = ckpt_format.decode(to_bytes(state))
    payload.update(header)
    return ckpt_format.encode(payload)


def _torch_save(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


class Hang(Exception):
    pass


def _on_alarm(*_):
    raise Hang()


def commands(path: Path, work: Path) -> dict:
    return {
        "info": ["info", str(path)],
        "eval": ["eval", str(path), "--n", "200"],
        "sample": ["sample", str(path), "--n", "4", "--out", str(work / "s.png")],
        "extract": ["extract", str(path), "--arm", "bce", "--out", str(work / "arm.safetensors")],
        "train --resume": ["train", "--resume", str(path), "--steps", "5", "--eval-every", "0",
                           "--out", str(work / "resumed")],
    }


def _files(folder: Path) -> set:
    return {p for p in folder.rglob("*")}


def run_one(argv: list, timeout: int) -> tuple[str, str]:
    err, out = io.StringIO(), io.StringIO()
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(timeout)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = main(argv)
    except Hang:
        return "hang", "timed out"
    except BaseException as exc:   # noqa: BLE001 - counting is the point
        return "trace", f"{type(exc).__name__}: {exc}"[:200]
    finally:
        signal.alarm(0)
    text = err.getvalue()
    lines = [ln for ln in text.strip().splitlines() if not ln.startswith("note: ")]
    if "Traceback" in text:
        return "trace", text.strip().splitlines()[-1][:200]
    if rc == 0:
        return "ok", ""
    if rc == 2 and len(lines) == 1 and lines[0].startswith("error:"):
        return "clear", lines[0]
    return "other", f"rc {rc}: {text.strip()[:200]}"


def _kind(msg: str, limit: int = 60) -> str:
    """The message without "error: <path>"."""
    text = msg.split("input.safetensors", 1)[-1].lstrip(": ")
    return text[:limit]


def main_bench() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flips", type=int, default=60)
    ap.add_argument("--cuts", type=int, default=30)
    ap.add_argument("--timeout", type=int, default=60)
    ap.add_argument("--show", type=int, default=6, help="example messages to print")
    args = ap.parse_args()
    t0 = time.perf_counter()
    run, arena = _states()
    files = corpus(run, arena, args.flips, args.cuts)
    names = list(commands(Path("x"), Path("y")))
    table = {c: Counter() for c in names}
    wrong, examples = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for i, (case, (data, expect)) in enumerate(files.items()):
            src = tmp / f"case_{i}"
            src.mkdir()
            path = src / "input.safetensors"
            path.write_bytes(data)
            for cmd, argv in commands(path, src).items():
                before = _files(src)
                verdict, detail = run_one(argv, args.timeout)
                table[cmd]["tried"] += 1
                table[cmd][verdict] += 1
                created = _files(src) - before
                if verdict != "ok" and created:
                    table[cmd]["files"] += len(created)
                # a control may be refused by a command it does not suit (extract of a
                # run, sample of an arena): clear, but the file itself loaded
                if expect == "clear" and verdict == "ok":
                    wrong.append((case, cmd, "accepted"))
                elif verdict not in ("ok", "clear"):
                    wrong.append((case, cmd, f"{verdict}: {detail}"))
                if verdict == "clear" and expect == "clear" and cmd == "info":
                    examples.setdefault(case.split("/")[0], []).append((case, detail))
    pwned = Path("/tmp/ganlab_fuzz_pwned").exists()
    cols = ["tried", "clear", "ok", "trace", "other", "hang", "files"]
    print(f"{len(files)} inputs ({sum(e == 'ok' for _, e in files.values())} valid controls) "
          f"x {len(names)} commands, {time.perf_counter() - t0:.0f} s")
    print(f"{'command':<16}" + "".join(f"{c:>8}" for c in cols))
    for cmd in names:
        print(f"{cmd:<16}" + "".join(f"{table[cmd][c]:>8}" for c in cols))
    total = sum(table.values(), Counter())
    print(f"{'all':<16}" + "".join(f"{total[c]:>8}" for c in cols))
    print(f"pickled code ran: {'YES' if pwned else 'no'}")
    print(f"unexpected outcomes: {len(wrong)}")
    for case, cmd, what in wrong[:20]:
        print(f"  {case} / {cmd}: {what}")
    flips = Counter(_kind(msg) for case, msg in examples.get("flip", []))
    print("the flipped-byte files were refused as: " + "; ".join(
        f"{n} {kind!r}" for kind, n in flips.most_common()))
    print("example messages (info):")
    for group in examples.values():
        for case, msg in group[len(group) // 2:len(group) // 2 + 1]:
            print(f"  {case}: {_kind(msg, 150)}")
    return 1 if wrong or pwned or total["hang"] else 0


if __name__ == "__main__":
    sys.exit(main_bench())
