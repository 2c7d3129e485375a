"""Feed hostile and broken data roots, config/flag values and other input files to the
CLI, in this process.

Three corpora, all built in a temp folder by this script:
  data roots   folders, zips and torchvision MNIST roots that are empty, missing, a file,
               truncated, renamed, bombs, links out, FIFOs, odd names, wrong magic, ...
               each through `train --data folder|mnist --data-root ROOT --steps 2`
  flags        every subcommand's flags with bad values (negative, zero, huge, NaN, inf,
               text, 2**64, empty, paths that are files, folders, /dev/null, /proc, too
               long), --config files (garbage bytes, 5000-digit ints, deep nesting, huge
               layer lists, unknown keys, wrong types), --set and --grid with bad values,
               GANLAB_TORCH_THREADS out of range
  files        reward-model paths for `train --rule rlhf --reward-model PATH` and
               `--set latent.reward_model=PATH` (/dev/zero, a FIFO, a folder, 100 MB of
               zeros, a truncated real model, a model of another data set, ...);
               preference databases for `reward train`, `feedback stats` and `feedback
               export` (not SQLite, another app's SQLite, rows edited with raw sqlite3
               UPDATEs, a database another connection holds with BEGIN EXCLUSIVE); Parquet
               files for `feedback import` (not Parquet, missing columns, a PNG bomb in an
               image cell, 10 million rows claimed, wrong types)
Each case runs core.cli.main.main with an alarm (a hang) and is counted:

  ok      exit 0 and the expected outputs written ("ok+skip": bad files skipped and
          named, counted with ok)
  clear   exit 2 with one line "error: ..." and no traceback
  trace   a traceback printed or an exception out of main()
  other   any other exit status (1 = internal error) or more than one line (a crash)
  silent  exit 0 although the input was bad (or the outputs are missing or empty, a
          damaged database row left out without a word, a refused import that left rows
          behind, a refused file that was written to)
  refused a clear error for an input that should have trained (a control, or a folder
          with some good images)
  hang    still running after --timeout seconds
  files   files left behind by a call that was refused

Memory: before each case the process's peak RSS is reset (/proc/self/clear_refs "5") and
its RSS noted; after it, the peak (VmHWM) above that is the case's memory cost (`import
torch` alone is ~500 MB, so only the growth counts); a case over --max-growth-mb (300)
is listed and fails the run. Without clear_refs the growth of the process's high-water
mark is shown instead (a lower bound).

    python bench/fuzz_inputs.py [--timeout 60] [--only data|flags|files] [--show 20]
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import resource
import signal
import sqlite3
import struct
import sys
import tempfile
import threading
import time
import zipfile
import zlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]
os.environ.setdefault("GANLAB_TORCH_THREADS", "1")

from peak_memory import Memory  # noqa: E402  (bench/peak_memory.py)

from core.cli.main import main  # noqa: E402


@dataclass
class Case:
    name: str
    argv: list
    expect: str                      # "ok", "skip" (ok, naming skipped files), "named" (ok,
                                     # naming the damaged rows left out), "clear", "any"
    outputs: tuple = ()              # files that must exist (non-empty) after exit 0
    env: dict = field(default_factory=dict)
    around: Callable | None = None   # a context manager held during the call (a lock)
    check: Callable | None = None    # check(verdict) -> what went wrong (silent), or None


# -- small file makers ----------------------------------------------------------------
def png_bytes(size=(28, 28), mode="L", color=128) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    img = Image.new(mode, size, color if mode != "P" else 3)
    img.save(buf, format="PNG")
    return buf.getvalue()


def jpg_bytes(size=(28, 28)) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 200, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def bomb_png_header(w=20000, h=20000) -> bytes:
    """A PNG that declares w x h pixels: header and a tiny IDAT only (nothing allocated)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _chunk(b"IEND", b""))


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def good_images(folder: Path, n=4, prefix="img") -> Path:
    for i in range(n):
        write(folder / f"{prefix}{i}.png", png_bytes(color=40 * i))
    return folder


def zip_with(path: Path, entries: dict, patch=None) -> Path:
    """A zip of name -> bytes; patch(bytearray) corrupts it in place."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    raw = bytearray(buf.getvalue())
    if patch:
        patch(raw)
    return write(path, bytes(raw))


def bad_crc(raw: bytearray) -> None:      # the first entry's CRC, local and central
    for sig, off in ((b"PK\x03\x04", 14), (b"PK\x01\x02", 16)):
        at = raw.find(sig)
        raw[at + off] ^= 0xFF


def unknown_method(raw: bytearray) -> None:   # compression method 99 (AES) + encrypted flag
    for sig, flag_off, method_off in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        at = raw.find(sig)
        raw[at + flag_off] |= 1
        raw[at + method_off:at + method_off + 2] = struct.pack("<H", 99)


def huge_declared(raw: bytearray) -> None:    # the central directory says 4 GB uncompressed
    at = raw.find(b"PK\x01\x02")
    raw[at + 24:at + 28] = struct.pack("<I", 0xFFFFFFF0)


def idx_images(n=8, rows=28, cols=28, magic=2051) -> bytes:
    return struct.pack(">IIII", magic, n, rows, cols) + bytes(n * rows * cols)


def idx_labels(n=8, magic=2049) -> bytes:
    return struct.pack(">II", magic, n) + bytes(i % 10 for i in range(n))


def mnist_root(root: Path, kind="MNIST", **parts: bytes) -> Path:
    """A torchvision root with the four raw files; parts replace some of them."""
    files = {"train-images-idx3-ubyte": idx_images(), "train-labels-idx1-ubyte": idx_labels(),
             "t10k-images-idx3-ubyte": idx_images(), "t10k-labels-idx1-ubyte": idx_labels()}
    for key, data in parts.items():
        files[key.replace("_", "-")] = data
    for name, data in files.items():
        if data is not None:
            write(root / kind / "raw" / name, data)
    return root


# -- the data-root corpus ---------------------------------------------------------------
def data_cases(tmp: Path) -> list[Case]:
    d = tmp / "roots"
    d.mkdir()
    out = lambda i: str(tmp / "runs" / f"data_{i}")  # noqa: E731
    roots: list[tuple[str, str, object, str]] = []   # (name, data, root, expect)

    def add(name, root, expect, data="folder"):
        roots.append((name, data, root, expect))

    add("control/folder_of_pngs", good_images(d / "good"), "ok")
    add("control/zip_of_pngs", zip_with(d / "good.zip", {f"a{i}.png": png_bytes() for i in range(3)}),
        "ok")
    add("control/mnist_idx_root", mnist_root(d / "mn_ok"), "ok", "mnist")
    add("empty_folder", (d / "empty").mkdir() or d / "empty", "clear")
    add("missing_path", d / "does_not_exist", "clear")
    add("a_plain_file", write(d / "plain.txt", b"hello"), "clear")
    add("empty_path_string", "", "clear")
    unreadable = good_images(d / "unreadable", 2)
    write(unreadable / "locked.png", png_bytes()).chmod(0)
    add("unreadable_file (root reads it anyway)", unreadable, "any")
    write(good_images(d / "renamed", 2) / "x.jpg", png_bytes())
    add("png_renamed_jpg", d / "renamed", "ok")
    trunc = good_images(d / "trunc", 2)
    write(trunc / "cut.png", png_bytes()[:40])
    add("truncated_png", trunc, "skip")
    bomb = good_images(d / "bomb", 2)
    write(bomb / "bomb.png", bomb_png_header())
    add("bomb_png_20000x20000", bomb, "skip")
    only_bomb = d / "only_bomb"
    write(only_bomb / "bomb.png", bomb_png_header())
    add("only_a_bomb", only_bomb, "clear")
    add("zip_bad_crc", zip_with(d / "crc.zip", {"a.png": png_bytes(), "b.png": png_bytes()},
                                bad_crc), "skip")
    add("zip_encrypted_unknown_method", zip_with(
        d / "enc.zip", {"a.png": png_bytes(), "b.png": png_bytes()}, unknown_method), "skip")
    add("zip_huge_declared_entry", zip_with(
        d / "huge.zip", {"a.png": png_bytes(), "b.png": png_bytes()}, huge_declared), "skip")
    add("zip_truncated", write(d / "cut.zip", (d / "good.zip").read_bytes()[:-30]), "clear")
    add("zip_empty", zip_with(d / "empty.zip", {}), "clear")
    add("zip_not_images", zip_with(d / "txt.zip", {"a.txt": b"x"}), "clear")
    outside = write(tmp / "outside" / "secret.png", png_bytes())
    link = good_images(d / "link_out", 2)
    (link / "leak.png").symlink_to(outside)
    add("symlink_to_file_outside", link, "skip")
    zero = good_images(d / "devzero", 2)
    (zero / "zero.png").symlink_to("/dev/zero")
    add("symlink_to_dev_zero", zero, "skip")
    fifo = good_images(d / "fifo", 2)
    os.mkfifo(fifo / "x.png")
    add("fifo_named_x.png", fifo, "skip")
    only_fifo = d / "only_fifo"
    only_fifo.mkdir()
    os.mkfifo(only_fifo / "x.png")
    add("only_a_fifo", only_fifo, "clear")
    add("fifo_as_root", (os.mkfifo(d / "root_fifo") or d / "root_fifo"), "clear")
    add("dev_zero_as_root", "/dev/zero", "clear")
    add("dev_null_as_root", "/dev/null", "clear")
    add("proc_as_root", "/proc/self", "clear")
    mixed = d / "mixed"
    for i, size in enumerate([(28, 28), (5, 300), (640, 480), (1, 1)]):
        write(mixed / f"m{i}.png", png_bytes(size))
    add("mixed_sizes", mixed, "ok")
    modes = d / "modes"
    for m in ("L", "RGB", "RGBA", "P", "1", "I;16", "LA"):
        write(modes / f"{m.replace(';', '_')}.png", png_bytes(mode=m))
    write(modes / "c.jpg", jpg_bytes())
    add("grey_rgb_rgba_palette_16bit", modes, "ok")
    add("one_image", good_images(d / "one", 1), "ok")
    nonimg = d / "nonimg"
    write(nonimg / "a.txt", b"text")
    write(nonimg / "b.csv", b"1,2")
    add("non_image_files_only", nonimg, "clear")
    deep = d / "deep"
    nest = deep.joinpath(*["n"] * 60)
    good_images(nest, 2)
    add("deep_nested_folders", deep, "ok")
    odd = d / "odd"
    for i, name in enumerate(["ünï cødé.png", "spaces  .png", "-leading.png", "日本.PNG",
                              "new\nline.png", ".hidden.png", "x" * 250 + ".png"]):
        write(odd / name, png_bytes(color=i * 20))
    add("unicode_and_odd_names", odd, "ok")
    loop = d / "loop"
    good_images(loop, 1)
    (loop / "self").symlink_to(loop)
    add("symlink_loop_folder", loop, "ok")
    add("zip_with_paths_and_dirs", zip_with(d / "paths.zip", {
        "../../evil.png": png_bytes(), "/abs.png": png_bytes(), "dir/": b"",
        "dir/a.png": png_bytes()}), "ok")
    write(good_images(d / "garbage", 2) / "g.png", os.urandom(2048))
    add("garbage_in_.png", d / "garbage", "skip")
    write(good_images(d / "zerob", 2) / "z.png", b"")
    add("zero_byte_png", d / "zerob", "skip")
    add("filesystem_root", "/", "clear")
    many = d / "many_files"
    for i in range(3000):
        write(many / f"{i}.txt", b"")
    add("3000_non_image_files", many, "clear")
    # torchvision MNIST roots
    add("mnist/empty_root", (d / "mn_empty").mkdir() or d / "mn_empty", "clear", "mnist")
    add("mnist/root_is_a_file", write(d / "mn_file", b"x"), "clear", "mnist")
    add("mnist/truncated_images", mnist_root(d / "mn_cut", train_images_idx3_ubyte=idx_images()[:100]),
        "clear", "mnist")
    add("mnist/wrong_magic", mnist_root(d / "mn_magic", train_images_idx3_ubyte=idx_images(magic=1234)),
        "clear", "mnist")
    add("mnist/empty_images_file", mnist_root(d / "mn_zero", train_images_idx3_ubyte=b""),
        "clear", "mnist")
    add("mnist/labels_count_differs", mnist_root(d / "mn_count", train_labels_idx1_ubyte=idx_labels(3)),
        "clear", "mnist")
    add("mnist/images_10x10", mnist_root(d / "mn_small",
                                         train_images_idx3_ubyte=idx_images(rows=10, cols=10)),
        "clear", "mnist")
    add("mnist/images_int32", mnist_root(d / "mn_i32", train_images_idx3_ubyte=struct.pack(
        ">IIII", 0x0C03, 8, 28, 28) + bytes(8 * 28 * 28 * 4)), "clear", "mnist")
    add("mnist/huge_declared_count", mnist_root(d / "mn_huge", train_images_idx3_ubyte=struct.pack(
        ">IIII", 2051, 2**31, 28, 28) + bytes(28 * 28)), "clear", "mnist")
    fifo_raw = mnist_root(d / "mn_fifo", train_images_idx3_ubyte=None)
    os.mkfifo(fifo_raw / "MNIST" / "raw" / "train-images-idx3-ubyte")
    add("mnist/fifo_as_images_file", fifo_raw, "clear", "mnist")
    add("mnist/missing_one_file", mnist_root(d / "mn_missing", t10k_labels_idx1_ubyte=None),
        "clear", "mnist")
    legacy = mnist_root(d / "mn_legacy")
    write(legacy / "MNIST" / "processed" / "training.pt", b"garbage")
    write(legacy / "MNIST" / "processed" / "test.pt", b"garbage")
    add("mnist/garbage_legacy_processed", legacy, "any", "mnist")
    add("fashion/wrong_magic", mnist_root(d / "fm_magic", "FashionMNIST",
                                          train_labels_idx1_ubyte=idx_labels(magic=7)),
        "clear", "fashion-mnist")

    cases = []
    for i, (name, data, root, expect) in enumerate(roots):
        argv = ["train", "--data", data, "--data-root", str(root), "--steps", "2",
                "--eval-every", "0", "--batch-size", "2", "--out", out(i)]
        outputs = tuple(f"{out(i)}/{f}" for f in ("metrics.csv", "config.json", "samples.png"))
        cases.append(Case(f"data/{name}", argv, expect, outputs))
    return cases


# -- the config / flag corpus -------------------------------------------------------------
INT_BAD = ["-1", "0", "abc", "", "1.5", "nan", "inf", str(2**64), "9" * 5000, "1e3"]
FLOAT_BAD = ["-1", "0", "nan", "inf", "-inf", "abc", "", "1e309", str(2**64)]


def _int_flags() -> dict:
    """flag -> values that are fine (everything else in INT_BAD must be refused)."""
    return {"--steps": set(), "--seed": {"0"}, "--batch-size": set(), "--sample-every": set(),
            "--checkpoint-every": {"0"}, "--keep-checkpoints": {"0"}, "--eval-every": {"0"}}


def _float_flags() -> dict:   # --kl -1 is documented: auto
    return {"--lr": set(), "--grad-clip": {"0"}, "--g-ema": {"0"}, "--kl": {"0", "-1"}}


def flag_cases(tmp: Path, ckpt: Path, arena: Path) -> list[Case]:
    runs = tmp / "runs"
    n = [0]

    def out() -> str:
        n[0] += 1
        return str(runs / f"flag_{n[0]}")

    ring = ["--data", "ring8", "--eval-every", "0"]
    cases: list[Case] = []

    def train(name, extra, expect, base=("--steps", "2"), env=None):
        o = out()
        argv = ["train", *ring, *base, *extra]
        if "--out" not in extra:
            argv += ["--out", o]
        outs = (f"{o}/metrics.csv", f"{o}/config.json") if "--out" not in extra else ()
        cases.append(Case(f"train/{name}", argv, expect, outs, env or {}))

    for flag, fine in _int_flags().items():
        base = ("--steps", "2") if flag != "--steps" else ()
        for v in INT_BAD:
            train(f"{flag} {v[:12]!r}", [flag, v], "any" if v in fine else "clear", base)
    for flag, fine in _float_flags().items():
        for v in FLOAT_BAD:
            train(f"{flag} {v[:12]!r}", [flag, v], "any" if v in fine else "clear")
    for flag, v in [("--data", "nope"), ("--preset", "nope"), ("--device", "tpu"),
                    ("--d-sees", "both"), ("--rule", "nope"), ("--rule", "")]:
        train(f"{flag} {v!r}", [flag, v], "clear")
    train("--device cuda (none here)", ["--device", "cuda"], "clear")
    train("--reward-model missing", ["--rule", "rlhf", "--reward-model", str(tmp / "no.pt")],
          "clear")
    train("--reward-model a folder", ["--rule", "rlhf", "--reward-model", str(tmp)], "clear")
    train("--reward-model /dev/zero", ["--rule", "rlhf", "--reward-model", "/dev/zero"], "clear")
    train("--reward-model garbage", ["--rule", "rlhf", "--reward-model",
                                     str(write(tmp / "rm.pt", os.urandom(999)))], "clear")
    train("--data-root on ring8 (unused)", ["--data-root", str(tmp / "nowhere")], "any")
    # --out paths
    afile = write(tmp / "a_file", b"keep")
    for name, path in [("a file", str(afile)), ("under a file", f"{afile}/x"),
                       ("/dev/null", "/dev/null"), ("/proc", "/proc/ganlab"), ("/sys", "/sys/x"),
                       ("empty", ""), ("blank", "  "), ("name 300 long", str(tmp / ("n" * 300))),
                       ("path 5000 long", str(tmp / "/".join(["p" * 200] * 25)))]:
        train(f"--out {name}", ["--out", path], "clear")
    # --set
    for item in ["=1", "x", "rule_options=1", "reinforce.sigma_start=nan",
                 "reinforce.sigma_start=NaN", "reinforce.sigma_start=abc",
                 "reinforce.sigma_start=Infinity", "reinforce.bogus=1", "bogus.x=1", "bogus=1",
                 "g_hidden=[]", "g_hidden=[1e9]", "g_hidden=[0]", "g_hidden=\"abc\"",
                 "g_hidden=" + json.dumps([8] * 100_000), "seed=-1", "steps=1e400",
                 "batch_size=true", "batch_size=2.5", "data=folder", "image_size=100000",
                 "latent_dim=0", "g_opt.lr=-1", "g_opt=1", "g_opt.bogus=1", "d_steps=1000",
                 "max_snapshots=1", "rule=rlhf", "reinforce.k=0", "reinforce.k=100000",
                 "reinforce.reward=bogus", "rlhf.kl_weight=-2", "ema_samples=2",
                 "steps=" + "9" * 5000, "x=" + "[" * 10_000 + "]" * 10_000, "=" * 3,
                 "g_hidden=" + json.dumps([4096] * 64)]:
        train(f"--set {item[:30]!r}", ["--set", item], "clear")
    # --config files
    configs = {
        "garbage_bytes": os.urandom(512), "empty": b"", "not_an_object": b"[1, 2]",
        "null": b"null", "5000_digit_int": b'{"steps": ' + b"9" * 5000 + b"}",
        "deep_nesting": b'{"a": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
        "huge_layer_list": json.dumps({"g_hidden": [8] * 200_000}).encode(),
        "wide_layers_many": json.dumps({"g_hidden": [4096] * 100, "steps": 2}).encode(),
        "unknown_keys": b'{"bogus": 1}', "wrong_type_steps": b'{"steps": "10"}',
        "wrong_type_layers": b'{"g_hidden": "abc"}', "wrong_type_opt": b'{"g_opt": [1]}',
        "wrong_type_rule_opts": b'{"reinforce": 3}', "rule_null": b'{"rule": null}',
        "nan_lr": b'{"g_opt": {"lr": NaN}}', "bom_utf8": b'\xef\xbb\xbf{"steps": 2}',
        "utf16": '{"steps": 2}'.encode("utf-16"), "rule_options_key": b'{"rule_options": []}',
        "data_root_number": b'{"data": "folder", "data_root": 5}',
        "huge_string": json.dumps({"data": "x" * 10**6}).encode(),
        "float_steps": b'{"steps": 2.0}', "bool_seed": b'{"seed": true}',
    }
    for name, data in configs.items():
        path = write(tmp / "configs" / f"{name}.json", data)
        train(f"--config {name}", ["--config", str(path)], "clear", base=())
    for name, path in [("a folder", str(tmp)), ("missing", str(tmp / "nope.json")),
                       ("/dev/null", "/dev/null"), ("/dev/zero", "/dev/zero")]:
        train(f"--config {name}", ["--config", path], "clear", base=())
    fifo = tmp / "config_fifo.json"
    os.mkfifo(fifo)
    train("--config a FIFO", ["--config", str(fifo)], "clear", base=())
    train("--config + --resume", ["--config", str(write(tmp / "ok.json", b"{}")),
                                  "--resume", str(ckpt)], "clear")
    # --resume
    train("--resume missing", ["--resume", str(tmp / "nope.safetensors")], "clear")
    train("--resume a folder", ["--resume", str(tmp)], "clear")
    train("--resume an arena", ["--resume", str(arena)], "clear")
    train("--resume --seed changed", ["--resume", str(ckpt), "--seed", "5"], "clear")
    train("--resume no --steps", ["--resume", str(ckpt)], "clear", base=())
    train("--resume --steps fewer than done", ["--resume", str(ckpt), "--steps", "1"], "any")
    # GANLAB_TORCH_THREADS
    for v in ["99999", "0", "-1", "abc", "", "1e3", "٣"]:
        train(f"GANLAB_TORCH_THREADS={v!r}", [], "clear", env={"GANLAB_TORCH_THREADS": v})
    # other subcommands. A file output is never a real device: a writer that replaces
    # its target atomically would replace /dev/null itself when run as root.
    fifo_out = tmp / "out_fifo"
    os.mkfifo(fifo_out)
    s = lambda *a: ["sample", str(ckpt), *a]  # noqa: E731

    def other(name, argv, expect, outputs=()):
        cases.append(Case(name, argv, expect, outputs))

    for v in INT_BAD:
        other(f"sample/--n {v[:12]!r}", s("--n", v, "--out", str(tmp / "s.png")), "clear")
        other(f"eval/--n {v[:12]!r}", ["eval", str(ckpt), "--n", v], "clear")
        other(f"sample/--seed {v[:12]!r}", s("--n", "4", "--seed", v, "--out",
                                             str(tmp / "s2.png")), "any" if v == "0" else "clear")
    for name, path in [("a folder", str(tmp)), ("trailing slash", f"{tmp}/x/"),
                       ("a FIFO", str(fifo_out)), ("/proc", "/proc/x.png"), ("empty", ""),
                       ("under a file", f"{afile}/s.png"), ("name 300 long", str(tmp / ("n" * 300)))]:
        other(f"sample/--out {name}", s("--n", "4", "--out", path), "clear")
    other("sample/arena", ["sample", str(arena), "--out", str(tmp / "a.png")], "clear")
    for v in FLOAT_BAD + ["51", "1e-300"]:
        other(f"animate/--fps {v[:12]!r}", ["animate", str(ckpt), "--fps", v, "--out",
                                            str(tmp / "a.gif")], "clear")
    for name, path in [("png", str(tmp / "a.png")), ("folder", str(tmp)), ("a FIFO", str(fifo_out))]:
        other(f"animate/--out {name}", ["animate", str(ckpt), "--out", path], "clear")
    other("animate/empty folder", ["animate", str((tmp / "emptyrun").mkdir() or tmp / "emptyrun"),
                                   "--out", str(tmp / "b.gif")], "clear")
    for name, argv in [("no --arm", ["extract", str(arena), "--out", str(tmp / "e.safetensors")]),
                       ("unknown arm", ["extract", str(arena), "--arm", "x", "--out",
                                        str(tmp / "e.safetensors")]),
                       ("empty arm", ["extract", str(arena), "--arm", "", "--out",
                                      str(tmp / "e.safetensors")]),
                       ("a run", ["extract", str(ckpt), "--arm", "bce", "--out",
                                  str(tmp / "e.safetensors")]),
                       ("--out folder", ["extract", str(arena), "--arm", "bce", "--out", str(tmp)]),
                       ("--out a FIFO", ["extract", str(arena), "--arm", "bce", "--out",
                                         str(fifo_out)])]:
        other(f"extract/{name}", argv, "clear")
    for name, path in [("missing", str(tmp / "none")), ("folder", str(tmp)),
                       ("/dev/zero", "/dev/zero"), ("empty", "")]:
        other(f"info/{name}", ["info", path], "clear")
    # compare / sweep (serial backend, ring8, 2 steps)
    cmp = lambda *a: ["compare", *ring, "--steps", "2", "--warmup-steps", "0",  # noqa: E731
                      "--backend", "serial", *a]
    for v in ["0", "-1", "101", str(2**64), "abc"]:
        other(f"compare/--seeds {v!r}", cmp("--seeds", v, "--out", out()), "clear")
    for v in ["bce", "bce,bogus", ",", "", "reinforce:sigma_start=nan", "reinforce:bogus=1",
              "bce,reinforce:sigma_start", "bce,reinforce:sigma_start=1e999", "bce:x=1,bce"]:
        other(f"compare/--rules {v!r}", cmp("--rules", v, "--out", out()), "clear")
    for v in ["-1", str(2**64), "abc", "1e3"]:
        other(f"compare/--warmup-steps {v!r}", cmp("--warmup-steps", v, "--out", out()), "clear")
    for v in ["0", "-1", "99999", "abc"]:
        other(f"compare/--workers {v!r}", ["compare", *ring, "--steps", "2", "--workers", v,
                                           "--out", out()], "clear")
    other("compare/--address without ray", cmp("--address", "auto", "--out", out()), "clear")
    other("compare/--backend bogus", ["compare", *ring, "--backend", "bogus", "--out", out()],
          "clear")
    other("compare/--seed max + seeds", cmp("--seed", str(2**31 - 1), "--seeds", "2", "--out",
                                            out()), "clear")
    sw = lambda *a: ["sweep", *ring, "--steps", "2", "--warmup-steps", "0", "--seeds", "1",  # noqa: E731
                     "--backend", "serial", *a]
    for v in ["lr=", "lr=abc", "bogus=1,2", "lr=nan", "=1", "lr", "lr=1,1", "lr=-1,1",
              "seed=" + ",".join(map(str, range(5000))), "lr=1e-3;lr=1e-4", ";", "g_hidden=[8],[0]",
              "lr=" + "9" * 5000, "steps=0,1"]:
        other(f"sweep/--grid {v[:24]!r}", sw("--grid", v, "--out", out()), "clear")
    other("sweep/--seeds 0", ["sweep", *ring, "--steps", "2", "--seeds", "0", "--out", out()],
          "clear")
    # feedback simulate / reward train
    db = str(tmp / "prefs.sqlite")
    fs = lambda *a: ["feedback", "simulate", "--from", str(ckpt), "--db", db, *a]  # noqa: E731
    for name, argv in [("--pairs 0", fs("--oracle", "upper", "--pairs", "0")),
                       ("--pairs huge", fs("--oracle", "upper", "--pairs", str(2**64))),
                       ("--noise nan", fs("--oracle", "upper", "--noise", "nan")),
                       ("--noise -1", fs("--oracle", "upper", "--noise", "-1")),
                       ("--noise inf", fs("--oracle", "upper", "--noise", "inf")),
                       ("--best-of 3", fs("--oracle", "upper", "--best-of", "3")),
                       ("--oracle bogus", fs("--oracle", "bogus")),
                       ("--oracle empty", fs("--oracle", "")),
                       ("--oracle angle:nan", fs("--oracle", "angle:nan")),
                       ("--oracle angle:abc", fs("--oracle", "angle:abc")),
                       ("--oracle thick on 2-D", fs("--oracle", "thick")),
                       ("--oracle digit:99 on 2-D", fs("--oracle", "digit:99")),
                       ("--from arena", ["feedback", "simulate", "--from", str(arena), "--db", db,
                                         "--oracle", "upper"])]:
        other(f"feedback/{name}", argv, "clear")
    for name, path in [("a folder", str(tmp)), ("a FIFO", str(fifo_out)),
                       ("garbage file", str(write(tmp / "g.sqlite", os.urandom(4096)))),
                       ("under a file", f"{afile}/p.sqlite"), ("/proc", "/proc/p.sqlite")]:
        other(f"feedback/--db {name}", fs("--oracle", "upper", "--pairs", "2", "--db", path),
              "clear")
    rt = lambda *a: ["reward", "train", *a]  # noqa: E731
    for name, argv in [("empty db", rt("--db", str(tmp / "new.sqlite"), "--out", str(tmp / "r.pt"))),
                       ("garbage db", rt("--db", str(tmp / "g.sqlite"), "--out", str(tmp / "r.pt"))),
                       ("--db folder", rt("--db", str(tmp), "--out", str(tmp / "r.pt"))),
                       ("--out folder", rt("--db", db, "--out", str(tmp))),
                       ("--out a FIFO", rt("--db", db, "--out", str(fifo_out))),
                       ("--features bogus", rt("--db", db, "--features", "bogus", "--out",
                                               str(tmp / "r.pt"))),
                       ("--judge nobody", rt("--db", db, "--judge", "nobody", "--out",
                                             str(tmp / "r.pt"))),
                       ("--data bogus", rt("--db", db, "--data", "bogus", "--out", str(tmp / "r.pt")))]:
        other(f"reward/{name}", argv, "clear")
    # the parser itself
    for name, argv in [("no command", []), ("unknown command", ["bogus"]),
                       ("--help-ish", ["train", "--out"]), ("unknown flag", ["info", "x", "--zz"])]:
        other(f"parser/{name}", argv, "clear")
    return cases


# -- the reward-model, preference-database and Parquet corpus ----------------------------------
class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/ganlab_fuzz_pwned",))


def _quiet(argv: list) -> None:
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        rc = main(argv)
    assert rc == 0, argv


def _make_feedback(tmp: Path, run: Path) -> dict:
    """The valid files the corpus spoils: a ring8 and a grid25 reward model (python -m
    core reward train on oracle judgements), the ring8 preference database, and Parquet
    exports of 2-D (ring8) and image (mnist5k) judgements."""
    f = tmp / "feedback"
    f.mkdir()
    ring_db, grid_db, image_db = f / "ring8.sqlite", f / "grid25.sqlite", f / "mnist5k.sqlite"
    _quiet(["feedback", "simulate", "--from", str(run), "--oracle", "upper", "--pairs", "120",
            "--db", str(ring_db)])
    _quiet(["reward", "train", "--db", str(ring_db), "--out", str(f / "rm_ring8.pt")])
    small = ["--steps", "2", "--eval-every", "0", "--sample-every", "2"]
    _quiet(["train", "--data", "grid25", *small, "--out", str(f / "grid25_run")])
    _quiet(["feedback", "simulate", "--from", str(next((f / "grid25_run").glob("*.safetensors"))),
            "--oracle", "upper", "--pairs", "120", "--db", str(grid_db)])
    _quiet(["reward", "train", "--db", str(grid_db), "--out", str(f / "rm_grid25.pt")])
    _quiet(["train", "--data", "mnist5k", *small, "--batch-size", "16", "--set", "g_hidden=[8]",
            "--set", "d_hidden=[8]", "--out", str(f / "image_run")])
    _quiet(["feedback", "simulate", "--from", str(next((f / "image_run").glob("*.safetensors"))),
            "--oracle", "thick", "--pairs", "6", "--best-of", "4", "--db", str(image_db)])
    _quiet(["feedback", "export", "--db", str(ring_db), "--out", str(f / "ring8" / "p.parquet")])
    _quiet(["feedback", "export", "--db", str(image_db), "--out", str(f / "image" / "p.parquet")])
    with sqlite3.connect(ring_db) as conn:   # everything in the main file: copies are whole
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return {"rm": f / "rm_ring8.pt", "rm_other": f / "rm_grid25.pt", "db": ring_db,
            "parquet_2d": f / "ring8" / "p.parquet", "parquet_image": f / "image" / "p.parquet"}


def _rows(db: Path) -> int:
    """Judgements in a closed database (immutable: no -wal / -shm files made)."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        return conn.execute("SELECT COUNT(*) FROM judgements").fetchone()[0]
    finally:
        conn.close()


def _pair_rows(path: Path) -> int:
    import pyarrow.parquet as pq
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except Exception:   # noqa: BLE001 - only for a message
        return -1


def _digest(path: Path) -> str:
    import hashlib
    return hashlib.sha256(path.read_bytes()).hexdigest()


@contextlib.contextmanager
def _locked(db: Path):
    """Another program holding the database's write lock (BEGIN EXCLUSIVE) meanwhile."""
    conn = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        conn.execute("ROLLBACK")
        conn.close()


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """(value, position after it) of an unsigned LEB128 varint."""
    shift = value = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _thrift_skip(buf: bytes, pos: int, kind: int) -> int:
    """Past one value of Thrift's compact protocol (what Parquet's footer is written in)."""
    if kind in (1, 2):            # a bool field: the value is in the field header
        return pos
    if kind == 3:
        return pos + 1
    if kind in (4, 5, 6):
        return _varint(buf, pos)[1]
    if kind == 7:
        return pos + 8
    if kind == 8:
        n, pos = _varint(buf, pos)
        return pos + n
    if kind in (9, 10):
        head = buf[pos]
        pos += 1
        n, elem = head >> 4, head & 0x0F
        if n == 15:
            n, pos = _varint(buf, pos)
        for _ in range(n):
            pos = pos + 1 if elem in (1, 2) else _thrift_skip(buf, pos, elem)
        return pos
    if kind == 11:
        n, pos = _varint(buf, pos)
        if n:
            kv = buf[pos]
            pos += 1
            for _ in range(n):
                pos = _thrift_skip(buf, _thrift_skip(buf, pos, kv >> 4), kv & 0x0F)
        return pos
    if kind == 12:
        for _fid, _kind, _start, end in _thrift_fields(buf, pos):
            pos = end
        return pos + 1            # the stop byte
    raise ValueError(f"thrift type {kind}")


def _thrift_fields(buf: bytes, pos: int):
    """(field id, type, value start, value end) of the struct at pos, up to its stop."""
    fid = 0
    while buf[pos]:
        head = buf[pos]
        pos += 1
        delta, kind = head >> 4, head & 0x0F
        if delta:
            fid += delta
        else:   # a full i16 field id, zigzag varint
            value, pos = _varint(buf, pos)
            fid = (value >> 1) ^ -(value & 1)
        end = _thrift_skip(buf, pos, kind)
        yield fid, kind, pos, end
        pos = end


def parquet_claiming_rows(raw: bytes, rows: int) -> bytes:
    """A Parquet file whose footer (FileMetaData.num_rows, field 3) claims `rows` rows
    while its pages hold what they held."""
    (n,) = struct.unpack("<I", raw[-8:-4])
    footer = raw[-8 - n:-8]
    for fid, kind, start, end in _thrift_fields(footer, 0):
        if fid == 3 and kind == 6:
            zz, value = (rows << 1) ^ (rows >> 63), b""
            while True:
                byte = zz & 0x7F
                zz >>= 7
                value += bytes([byte | (0x80 if zz else 0)])
                if not zz:
                    break
            new = footer[:start] + value + footer[end:]
            return raw[:-8 - n] + new + struct.pack("<I", len(new)) + b"PAR1"
    raise ValueError("no num_rows in the footer")


def parquet_of_nulls(path: Path, rows: int, chunk: int = 1_000_000) -> Path:
    """A real Parquet file in the export schema with `rows` rows, all null (small on disk:
    run-length encoded; written 1M rows at a time)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from core.feedback.export import _schema
    schema = _schema(False)
    block = pa.table({f.name: pa.nulls(chunk, type=f.type) for f in schema}, schema=schema)
    with pq.ParquetWriter(path, schema) as writer:
        for _ in range(rows // chunk):
            writer.write_table(block)
    return path


def parquet_changed(src: Path, dst: Path, **columns) -> Path:
    """A copy of an export with some columns replaced: name -> a function of the old
    column's Python values giving the new values (a pyarrow array, or a list), or None
    to drop the column."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(src)
    for name, change in columns.items():
        i = table.schema.get_field_index(name)
        if change is None:
            table = table.remove_column(i)
            continue
        new = change(table.column(name).to_pylist())
        table = table.set_column(i, name, new if isinstance(new, pa.Array) else pa.array(new))
    pq.write_table(table, dst)
    return dst


def _png_cell(png: bytes):
    def change(cells):
        return [{"bytes": png, "path": None}] + cells[1:]
    return change


def files_cases(tmp: Path, run: Path) -> list[Case]:
    """Reward-model paths for train (rlhf's --reward-model, latent's option), preference
    databases for reward train / feedback stats / feedback export, Parquet files for
    feedback import."""
    good = _make_feedback(tmp, run)
    d = tmp / "files"
    d.mkdir()
    n = [0]

    def out() -> Path:
        n[0] += 1
        return tmp / "runs" / f"file_{n[0]}"

    cases: list[Case] = []

    # reward-model paths: train --rule rlhf --reward-model PATH; --set latent.reward_model=PATH
    rm = good["rm"].read_bytes()
    fifo = d / "rm_fifo.pt"
    os.mkfifo(fifo)
    zero_link = d / "rm_link.pt"
    zero_link.symlink_to("/dev/zero")
    import torch
    evil = _torch_bytes({"x": Evil()})
    state = torch.load(good["rm"], weights_only=True)
    damaged = {"std_zero": {**state, "feat_std": torch.zeros_like(state["feat_std"])},
               "nan_head": {**state, "heads": [{k: torch.full_like(v, float("nan"))
                                                for k, v in h.items()} for h in state["heads"]]},
               "schema_99": {**state, "schema_version": 99}, "no_heads": {**state, "heads": []}}
    paths = {
        "control (a ring8 model)": (good["rm"], "ok"),
        "/dev/zero": ("/dev/zero", "clear"),
        "a FIFO (no writer)": (fifo, "clear"),
        "a symlink to /dev/zero": (zero_link, "clear"),
        "a directory": (d, "clear"),
        "100 MB of zeros": (write(d / "zeros100.pt", bytes(100 * 2**20)), "clear"),
        "64 MB - 1 of zeros (under the cap)": (write(d / "zeros64.pt", bytes(64 * 2**20 - 1)),
                                               "clear"),
        "empty file": (write(d / "empty.pt", b""), "clear"),
        "truncated real model": (write(d / "cut.pt", rm[:len(rm) // 2]), "clear"),
        "real model less 1 byte": (write(d / "cut1.pt", rm[:-1]), "clear"),
        "model of another data set (grid25)": (good["rm_other"], "clear"),
        "a run checkpoint": (run, "clear"),
        "a pickled callable": (write(d / "evil.pt", evil), "clear"),
        **{f"reward model {k}": (write(d / f"{k}.pt", _torch_bytes(v)), "clear")
           for k, v in damaged.items()},
    }
    base = ["--data", "ring8", "--steps", "2", "--eval-every", "0"]
    for name, (path, expect) in paths.items():
        for rule, flag in (("rlhf", ["--reward-model", str(path)]),
                           ("latent", ["--set", f"latent.reward_model={path}"])):
            o = out()
            cases.append(Case(f"rmodel/{rule} {name}", ["train", *base, "--rule", rule, *flag,
                                                          "--out", str(o)], expect,
                              (f"{o}/metrics.csv", f"{o}/config.json")))
    cases.append(Case("rmodel/latent -o latent.reward_model=PATH (no such flag)",
                      ["train", *base, "--rule", "latent", "-o",
                       f"latent.reward_model={good['rm']}", "--out", str(out())], "clear"))

    # preference databases: reward train, feedback stats, feedback export
    src = good["db"]

    def db(name, *sql, schema=None, journal=None) -> Path:
        """A copy of the ring8 database with raw sqlite3 statements applied."""
        path = d / f"{name}.sqlite"
        path.write_bytes(src.read_bytes())
        conn = sqlite3.connect(path, isolation_level=None)
        if schema:   # change the table's declared SQL itself (e.g. drop a NOT NULL)
            conn.execute("PRAGMA writable_schema=ON")
            conn.execute(schema)
            conn.execute("PRAGMA writable_schema=OFF")
            conn.close()
            conn = sqlite3.connect(path, isolation_level=None)
        if journal:
            conn.execute(f"PRAGMA journal_mode={journal}")
        for statement in sql:
            conn.execute(statement)
        conn.close()
        return path

    def foreign(name, *sql) -> Path:
        path = d / f"{name}.sqlite"
        conn = sqlite3.connect(path, isolation_level=None)
        for statement in sql:
            conn.execute(statement)
        conn.close()
        return path

    nan4 = struct.pack("<f", float("nan"))
    upd = "UPDATE judgements SET {} WHERE id = 7"
    no_null = ("UPDATE sqlite_master SET sql = replace(sql, 'criterion TEXT NOT NULL DEFAULT "
               "''''', 'criterion TEXT') WHERE name = 'judgements'")
    dbs = {   # name -> (path, expect, around, unchanged): unchanged = must not be written
        "control": (src, "ok", None, False),
        "not SQLite (random bytes)": (write(d / "random.sqlite", os.urandom(8192)), "clear",
                                      None, True),
        "not SQLite (text)": (write(d / "text.sqlite", b"id,choice\n1,left\n" * 50), "clear",
                              None, True),
        "SQLite of another app": (foreign("other_app", "CREATE TABLE users (id INTEGER, name TEXT)",
                                          "INSERT INTO users VALUES (1, 'a')",
                                          "PRAGMA journal_mode=WAL"), "clear", None, True),
        "SQLite of another app with our tables": (foreign(
            "other_app_ours", "CREATE TABLE judgements (id INTEGER)",
            "CREATE TABLE blind_tests (id INTEGER)"), "clear", None, True),
        "our app id, other tables": (foreign(
            "our_id", f"PRAGMA application_id={0x474C5046}", "PRAGMA user_version=4",
            "CREATE TABLE x (id INTEGER)"), "clear", None, True),
        "a newer schema (user_version 99)": (db("newer", "PRAGMA user_version=99"), "clear",
                                             None, True),
        "row: NaN in z": (db("nan_z", upd.format(f"z = X'{(nan4 * 200).hex()}'")), "named",
                          None, False),
        "row: NaN in the points": (db("nan_samples", upd.format(f"samples = X'{(nan4 * 4).hex()}'")),
                                   "named", None, False),
        "row: wrong blob size": (db("blob", upd.format("z = X'00000000'")), "named", None, False),
        "row: shape text garbage": (db("shape", upd.format("z_shape = '[[[[[['")), "named", None,
                                    False),
        "row: unknown choice": (db("choice", upd.format("choice = 'maybe'")), "named", None,
                                False),
        "row: k says 4": (db("k", upd.format("k = 4")), "named", None, False),
        "row: huge step (2**62)": (db("step", upd.format(f"step = {2**62}")), "named", None, False),
        "row: step as text": (db("step_text", upd.format("step = 'abc'")), "named", None, False),
        "row: unknown data set": (db("data", upd.format("data = 'mnist99'")), "named", None,
                                  False),
        "row: empty judge": (db("judge", upd.format("judge = ''")), "named", None, False),
        "row: NULL criterion": (db("null_criterion", upd.format("criterion = NULL"),
                                   schema=no_null), "named", None, False),
        "all rows damaged (NaN z)": (db("all_nan", f"UPDATE judgements SET z = X'{(nan4 * 200).hex()}'"),
                                     "clear", None, False),
        "locked (WAL; readers may go on)": (db("locked_wal"), "any", "lock", False),
        "locked (rollback journal)": (db("locked_delete", journal="DELETE"), "clear", "lock",
                                      False),
        "a FIFO": ((os.mkfifo(d / "db_fifo") or d / "db_fifo"), "clear", None, False),
        "/dev/zero": ("/dev/zero", "clear", None, False),
    }
    for name, (path, expect, around, unchanged) in dbs.items():
        path = Path(path)
        lock = (lambda p=path: _locked(p)) if around else None
        digest = _digest(path) if unchanged else None

        def untouched(verdict, p=path, h=digest):
            if h is not None and _digest(p) != h:
                return f"{p.name} was changed by a command that refused it"
            return None
        o = out()
        for cmd, argv, outputs in (
                ("reward train", ["reward", "train", "--db", str(path), "--out", f"{o}.pt"],
                 (f"{o}.pt",)),
                ("feedback stats", ["feedback", "stats", "--db", str(path)], ()),
                ("feedback export", ["feedback", "export", "--db", str(path), "--out",
                                     f"{o}/p.parquet"], (f"{o}/p.parquet",))):
            cases.append(Case(f"prefdb/{cmd}: {name}", argv, expect, outputs, around=lock,
                              check=untouched))

    # Parquet files: feedback import FILE --db (a copy of the ring8 database: a refused
    # import must leave its 120 rows as they were, all or nothing)
    p2d, pimg = good["parquet_2d"], good["parquet_image"]
    raw2d = p2d.read_bytes()
    grid = png_bytes((28, 28))
    bomb = _zeros_png(13_000, 13_000)
    jpeg = jpg_bytes((28, 28))
    pq_dir = d / "parquet"
    pq_dir.mkdir()
    pqs = {
        "control 2-D": (p2d, "ok"), "control images": (pimg, "ok"),
        "not Parquet (random)": (write(pq_dir / "random.parquet", os.urandom(4096)), "clear"),
        "not Parquet (a PNG)": (write(pq_dir / "png.parquet", grid), "clear"),
        "not Parquet (CSV)": (write(pq_dir / "csv.parquet", b"prompt,chosen\na,b\n"), "clear"),
        "empty file": (write(pq_dir / "empty.parquet", b""), "clear"),
        "PAR1 magic around garbage": (write(pq_dir / "magic.parquet",
                                            b"PAR1" + os.urandom(500) + b"PAR1"), "clear"),
        "truncated export": (write(pq_dir / "cut.parquet", raw2d[:len(raw2d) // 2]), "clear"),
        "footer length past the start": (write(pq_dir / "footer.parquet", raw2d[:-8] + struct.pack(
            "<I", 2**31) + b"PAR1"), "clear"),
        "a FIFO": ((os.mkfifo(pq_dir / "fifo.parquet") or pq_dir / "fifo.parquet"), "clear"),
        "/dev/zero": ("/dev/zero", "clear"),
        "a directory": (pq_dir, "clear"),
        "missing column choice": (parquet_changed(p2d, pq_dir / "no_choice.parquet", choice=None),
                                  "clear"),
        "TRL columns only": (parquet_changed(p2d, pq_dir / "trl.parquet", **{
            c: None for c in ("caption", "jpg_0", "jpg_1", "label_0", "label_1", "judge",
                              "source", "time", "generator", "step", "round", "data",
                              "judgement", "k", "choice", "index_0", "index_1", "z_0",
                              "z_1")}), "clear"),
        "PNG bomb (13,000 square) in an image cell": (parquet_changed(
            pimg, pq_dir / "bomb.parquet", jpg_0=_png_cell(bomb)), "clear"),
        "1,025 px wide PNG in an image cell": (parquet_changed(
            pimg, pq_dir / "wide.parquet", jpg_0=_png_cell(png_bytes((1025, 1)))), "clear"),
        "truncated PNG in an image cell": (parquet_changed(
            pimg, pq_dir / "cut_png.parquet", jpg_0=_png_cell(grid[:40])), "clear"),
        "JPEG in an image cell": (parquet_changed(pimg, pq_dir / "jpeg.parquet",
                                                  jpg_0=_png_cell(jpeg)), "clear"),
        "10 million rows (real, all null)": (parquet_of_nulls(pq_dir / "10M.parquet", 10_000_000),
                                             "clear"),
        "10 million rows claimed by the footer": (write(pq_dir / "claims.parquet",
                                                        parquet_claiming_rows(raw2d, 10_000_000)),
                                                  "clear"),
        "step as text": (parquet_changed(p2d, pq_dir / "step_text.parquet",
                                         step=lambda v: ["abc"] * len(v)), "clear"),
        "k as text": (parquet_changed(p2d, pq_dir / "k_text.parquet", k=lambda v: ["two"] * len(v)),
                      "clear"),
        "z_0 as text": (parquet_changed(p2d, pq_dir / "z_text.parquet",
                                        z_0=lambda v: [["a"] * len(z) for z in v]), "clear"),
        "z_0 NaN": (parquet_changed(p2d, pq_dir / "z_nan.parquet",
                                    z_0=lambda v: [[float("nan")] * len(z) for z in v]), "clear"),
        "choice as an integer": (parquet_changed(p2d, pq_dir / "choice_int.parquet",
                                                 choice=lambda v: [1] * len(v)), "clear"),
        "time as text": (parquet_changed(p2d, pq_dir / "time_text.parquet",
                                         time=lambda v: ["now"] * len(v)), "clear"),
        "jpg_0 as an integer": (parquet_changed(pimg, pq_dir / "jpg_int.parquet",
                                                jpg_0=lambda v: [7] * len(v)), "clear"),
        "index_0 out of range": (parquet_changed(p2d, pq_dir / "index.parquet",
                                                 index_0=lambda v: [7] * len(v)), "clear"),
        "judgement ids all null": (parquet_changed(
            p2d, pq_dir / "judgement_null.parquet",
            judgement=lambda v: __import__("pyarrow").nulls(len(v), "int64")), "clear"),
        "judgement ids all equal": (parquet_changed(p2d, pq_dir / "judgement_same.parquet",
                                                    judgement=lambda v: [1] * len(v)), "clear"),
    }
    target = good["db"]
    for name, (path, expect) in pqs.items():
        dest = d / f"import_{len(cases)}.sqlite"
        dest.write_bytes(target.read_bytes())
        want = None
        if expect == "ok":
            import pyarrow.parquet as pq
            want = 120 + len(set(pq.read_table(path, columns=["judgement"]).column(0).to_pylist()))

        def kept(verdict, db=dest, want=want, src=path):
            rows = _rows(db) if db.exists() else 120
            if verdict == "ok":
                return None if rows == want else f"the database has {rows} rows, not {want}"
            if verdict == "silent":   # exit 0 on a file that must be refused
                return (f"exit 0: added {rows - 120} judgement(s) from a file of "
                        f"{_pair_rows(src)} pair rows")
            return None if rows == 120 else f"a refused import left {rows - 120} rows behind"
        cases.append(Case(f"parquet/{name}", ["feedback", "import", str(path), "--db", str(dest)],
                          expect, check=kept))
    other = dbs["SQLite of another app"][0]
    before = _digest(other)
    cases.append(Case("parquet/control 2-D into another app's SQLite",
                      ["feedback", "import", str(p2d), "--db", str(other)], "clear",
                      check=lambda verdict: None if _digest(other) == before
                      else f"{other.name} was written to"))
    locked = d / "import_locked.sqlite"
    locked.write_bytes(target.read_bytes())
    cases.append(Case("parquet/control 2-D into a locked database",
                      ["feedback", "import", str(p2d), "--db", str(locked)], "clear",
                      around=lambda: _locked(locked)))
    return cases


def _torch_bytes(obj) -> bytes:
    import torch
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _zeros_png(width: int, height: int) -> bytes:
    """A valid all-zero grey PNG, compressed row by row (13,000 square: ~160 KB)."""
    z = zlib.compressobj(9)
    row = bytes(1 + width)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))


# -- running and counting -------------------------------------------------------------
class Hang(BaseException):   # not Exception: code under test must not swallow it
    pass


def _on_alarm(*_):
    raise Hang()


@contextlib.contextmanager
def _env(changes: dict):
    before = {k: os.environ.get(k) for k in changes}
    os.environ.update(changes)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _alarm_main_thread(timeout: float) -> threading.Timer:
    """SIGALRM sent to the main thread itself: alarm() may land on another thread, and
    then a main thread blocked in a system call (opening a FIFO) is never woken."""
    main_id = threading.main_thread().ident
    timer = threading.Timer(timeout, signal.pthread_kill, (main_id, signal.SIGALRM))
    timer.daemon = True
    timer.start()
    return timer


def run_case(case: Case, timeout: int) -> tuple[str, str]:
    verdict, detail = _run_case(case, timeout)
    if case.check is not None and verdict not in ("trace", "hang"):
        problem = case.check(verdict)
        if problem:
            return "silent", problem
    return verdict, detail


def _run_case(case: Case, timeout: int) -> tuple[str, str]:
    err, out = io.StringIO(), io.StringIO()
    signal.signal(signal.SIGALRM, _on_alarm)
    timer = _alarm_main_thread(timeout)
    try:
        with _env(case.env), contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            rc = main(case.argv)
    except Hang:
        return "hang", "timed out"
    except BaseException as exc:   # noqa: BLE001 - counting is the point
        return "trace", f"{type(exc).__name__}: {exc}"[:200]
    finally:
        timer.cancel()
    return classify(case, rc, err.getvalue(), out.getvalue())


def classify(case: Case, rc: int, text: str, stdout: str = "") -> tuple[str, str]:
    lines = [ln for ln in text.strip().splitlines()
             if not ln.startswith(("note: ", "skipped ", "["))]
    if "Traceback" in text:
        return "trace", text.strip().splitlines()[-1][:200]
    if rc == 0:
        missing = [o for o in case.outputs if not os.path.isfile(o) or not os.path.getsize(o)]
        if missing:
            return "silent", f"exit 0 but {Path(missing[0]).name} is missing or empty"
        if case.expect == "clear":
            return "silent", "exit 0 on a bad input"
        if case.expect == "skip" and "skipped " not in text:
            return "silent", "exit 0 without naming the skipped files"
        if case.expect == "named" and "damaged row" not in text + stdout:
            return "silent", ("exit 0 without naming the damaged row left out: "
                              + (stdout.strip() or text.strip()).splitlines()[0][:120])
        named = [ln for ln in text.splitlines() if "damaged row" in ln]
        if named:
            return "ok", named[0][:200]
        skipped = [ln for ln in text.splitlines() if ln.startswith("skipped ")]
        return "ok", skipped[0] if skipped else ""
    if rc == 2 and len(lines) == 1 and lines[0].startswith("error:"):
        if case.expect in ("ok", "skip", "named"):
            return "refused", lines[0][:200]
        return "clear", lines[0]
    return "other", f"rc {rc}: {text.strip()[-300:]}"


def _files(folder: Path) -> set:
    return set(folder.rglob("*"))


def _make_checkpoints(tmp: Path) -> tuple[Path, Path]:
    ckpt_dir = tmp / "ckpt"
    ring = ["--data", "ring8", "--steps", "4", "--eval-every", "0", "--sample-every", "2"]
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert main(["train", *ring, "--out", str(ckpt_dir)]) == 0
        assert main(["compare", *ring, "--warmup-steps", "0", "--backend", "serial",
                     "--out", str(tmp / "arena")]) == 0
    run = next(ckpt_dir.glob("*.safetensors"))
    arena = next((tmp / "arena").rglob("arena.safetensors"))
    return run, arena


COLS = ["tried", "ok", "clear", "trace", "other", "silent", "refused", "hang", "files"]


def main_bench() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--timeout", type=int, default=60)
    ap.add_argument("--only", choices=["data", "flags", "files"])
    ap.add_argument("--show", type=int, default=40, help="unexpected outcomes to print")
    ap.add_argument("--messages", action="store_true", help="print every clear message")
    ap.add_argument("--slow", type=float, default=5.0, help="name cases slower than this")
    ap.add_argument("--verbose", action="store_true", help="name each case as it starts")
    ap.add_argument("--max-growth-mb", type=float, default=300,
                    help="a case whose peak memory grows more than this is listed (and fails)")
    ap.add_argument("--max-memory-gb", type=float, default=10,
                    help="address-space limit: a case that reads /dev/zero or builds a huge "
                         "network fails with MemoryError (counted) instead of swapping")
    args = ap.parse_args()
    limit = int(args.max_memory_gb * 2**30)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    t0 = time.perf_counter()
    table: dict[str, Counter] = {}
    peak_mb: dict[str, float] = {}
    slowest: dict[str, float] = {}
    wrong, messages, slow, heavy = [], [], [], []
    memory = Memory()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "runs").mkdir()
        run, arena = _make_checkpoints(tmp)
        cases = []
        if args.only in (None, "data"):
            cases += data_cases(tmp)
        if args.only in (None, "flags"):
            cases += flag_cases(tmp, run, arena)
        if args.only in (None, "files"):
            built = time.perf_counter()
            cases += files_cases(tmp, run)
            print(f"(the files corpus took {time.perf_counter() - built:.0f} s to build)")
        for case in cases:
            group = case.name.split("/")[0]
            if args.verbose:
                print(f"... {case.name}", file=sys.__stderr__, flush=True)
            with case.around() if case.around else contextlib.nullcontext():
                before = _files(tmp)
                start_mem, start = memory.start(), time.perf_counter()
                verdict, detail = run_case(case, args.timeout)
                seconds, grown = time.perf_counter() - start, memory.growth_mb(start_mem)
                created = {p for p in _files(tmp) - before if p.is_file()}
            if seconds > args.slow:
                slow.append((case.name, seconds, verdict))
            if grown > args.max_growth_mb:
                heavy.append((case.name, grown))
            peak_mb[group] = max(peak_mb.get(group, 0.0), grown)
            slowest[group] = max(slowest.get(group, 0.0), seconds)
            row = table.setdefault(group, Counter())
            row["tried"] += 1
            row[verdict] += 1
            if verdict not in ("ok", "silent") and created:
                row["files"] += len(created)
                detail += f" (left {len(created)} file(s))"
            if verdict not in ("ok", "clear"):
                wrong.append((case.name, verdict, detail))
            if verdict in ("clear", "ok") and (args.messages or case.name.startswith(
                    ("data/", "rmodel/", "prefdb/", "parquet/"))):
                messages.append((case.name, f"{detail or 'ok'} [{seconds:.1f} s, "
                                            f"+{grown:.0f} MB]"))
        for p in tmp.rglob("*"):   # chmod 0 files: let the temp folder be removed
            with contextlib.suppress(OSError):
                if not p.is_symlink():
                    p.chmod(0o700)
    total = sum(table.values(), Counter())
    if not Path("/dev/null").is_char_device():
        print("WARNING: /dev/null is no longer a device: a case replaced it")
    what = "peak MB" if memory.exact else "hwm+ MB"
    print(f"{total['tried']} inputs, {time.perf_counter() - t0:.0f} s ({what}: the largest "
          f"growth of one case's peak resident memory; max s: its slowest case)")
    print(f"{'group':<10}" + "".join(f"{c:>8}" for c in COLS) + f"{what:>9}{'max s':>7}")
    for group, row in table.items():
        print(f"{group:<10}" + "".join(f"{row[c]:>8}" for c in COLS)
              + f"{peak_mb[group]:>9.0f}{slowest[group]:>7.1f}")
    print(f"{'all':<10}" + "".join(f"{total[c]:>8}" for c in COLS)
          + f"{max(peak_mb.values(), default=0):>9.0f}{max(slowest.values(), default=0):>7.1f}")
    print(f"process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB "
          f"(torch alone ~500 MB); memory per case measured "
          f"{'exactly (clear_refs)' if memory.exact else 'as high-water-mark growth only'}")
    print(f"pickled code ran: {'YES' if Path('/tmp/ganlab_fuzz_pwned').exists() else 'no'}")
    print(f"cases over +{args.max_growth_mb:g} MB: {len(heavy)}")
    for name, mb in heavy:
        print(f"  {name}: +{mb:.0f} MB")
    print(f"unexpected outcomes: {len(wrong)}")
    for name, verdict, detail in wrong[:args.show]:
        print(f"  {name}: {verdict}: {detail}")
    print(f"slower than {args.slow:g} s: " + (", ".join(
        f"{name} ({sec:.0f} s, {verdict})" for name, sec, verdict in slow) or "none"))
    print("data-root and file outcomes:")
    for name, detail in messages:
        print(f"  {name}: {detail[:200]}")
    pwned = Path("/tmp/ganlab_fuzz_pwned").exists()
    return 1 if wrong or heavy or pwned else 0


if __name__ == "__main__":
    sys.exit(main_bench())
