"""One error path for the CLI: every failure a user can cause is one `error: ...` line on
stderr and exit status 2; a bug is one `error: internal error: ...` line and exit 1;
Ctrl-C is exit 130; --debug shows the traceback. Called in-process through main([...])
(SIGTERM during train, a real process, is in test_cli.py with Ctrl-C). Also: outside values on the pages are
shown as text, never as markdown links or images."""
from __future__ import annotations

import json
import os
import signal
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import core.cli.checkpoints as checkpoints_cli
from core.cli.checks import UsageError
from core.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_error(rc: int, err: str, *fragments: str, code: int = 2) -> str:
    assert rc == code, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


RING = ("train", "--data", "ring8", "--steps", "2", "--eval-every", "0")


# -- output paths, checked before the run ------------------------------------------
def test_train_out_an_existing_file(tmp_path, capsys):
    target = tmp_path / "a_file"
    target.write_text("keep me")
    rc, _, err = run_cli(capsys, *RING, "--out", target)
    assert_one_error(rc, err, str(target), "not a directory")
    assert target.read_text() == "keep me"


@pytest.mark.parametrize("command", ["train", "compare"])
def test_out_empty_is_refused(command, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = RING if command == "train" else ("compare", "--data", "ring8", "--steps", "2")
    rc, _, err = run_cli(capsys, *args, "--out", "")
    assert_one_error(rc, err, "--out is empty")
    assert list(tmp_path.iterdir()) == []     # nothing written into the current folder


@pytest.mark.parametrize("out", ["/dev/null", "/dev/null/x"])
def test_out_under_the_null_device(out, capsys):
    rc, _, err = run_cli(capsys, *RING, "--out", out)
    assert_one_error(rc, err, "/dev/null", "not a directory")


def test_out_under_proc_and_a_name_too_long(tmp_path, capsys):
    rc, _, err = run_cli(capsys, *RING, "--out", "/proc/ganlab-run")
    assert_one_error(rc, err, "/proc")
    rc, _, err = run_cli(capsys, *RING, "--out", tmp_path / ("n" * 300))
    assert_one_error(rc, err, "longer than")


def test_compare_out_an_existing_file(tmp_path, capsys):
    target = tmp_path / "f"
    target.write_text("")
    rc, _, err = run_cli(capsys, "compare", "--data", "ring8", "--steps", "2", "--out", target)
    assert_one_error(rc, err, "not a directory")


@pytest.mark.parametrize("command", [["sample", "x.pt"], ["extract", "x.pt", "--arm", "a"]])
def test_sample_and_extract_out_a_directory_or_under_a_file(command, tmp_path, capsys):
    rc, _, err = run_cli(capsys, *command, "--out", tmp_path)
    assert_one_error(rc, err, "is a directory")
    rc, _, err = run_cli(capsys, *command, "--out", "/dev/null/x.png")
    assert_one_error(rc, err, "/dev/null is not a directory")
    rc, _, err = run_cli(capsys, *command, "--out", "")
    assert_one_error(rc, err, "--out is empty")


def test_an_os_error_while_writing_names_the_path(monkeypatch, capsys):
    def fails(args):
        raise PermissionError(13, "Permission denied", "/somewhere/run/metrics.csv")
    monkeypatch.setattr(checkpoints_cli, "cmd_info", fails)
    rc, _, err = run_cli(capsys, "info", "x.pt")
    assert_one_error(rc, err, "/somewhere/run/metrics.csv", "Permission denied")


# -- sizes ---------------------------------------------------------------------------
@pytest.mark.parametrize("n", ["0", "-1", str(10**9)])
def test_sample_n_out_of_range(n, tmp_path, capsys):
    rc, _, err = run_cli(capsys, "sample", tmp_path / "x.pt", "--n", n,
                         "--out", tmp_path / "s.png")
    assert_one_error(rc, err, f"--n {n}", "between 1 and 100000")
    assert not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("args", [
    [*RING, "--out", "{out}"],
    ["compare", "--data", "ring8", "--steps", "2", "--out", "{out}"],
    ["sample", "x.pt", "--out", "{out}/s.png"],
    ["feedback", "simulate", "--from", "x.pt", "--oracle", "upper"],
    ["reward", "train", "--out", "{out}/rm.pt"],
])
@pytest.mark.parametrize("seed", [str(2**64), "-1", str(2**31)])
def test_seed_out_of_range(args, seed, tmp_path, capsys):
    args = [a.replace("{out}", str(tmp_path / "o")) for a in args]
    rc, _, err = run_cli(capsys, *args, "--seed", seed)
    assert_one_error(rc, err, "--seed", "[0, 2147483647]")


def test_huge_numbers_on_the_command_line(tmp_path, capsys):
    rc, _, err = run_cli(capsys, *RING[:-4], "--steps", "9" * 5000, "--out", tmp_path / "o")
    assert_one_error(rc, err, "--steps")
    assert len(err) < 400
    rc, _, err = run_cli(capsys, *RING, "--set", "batch_size=" + "9" * 400,
                         "--out", tmp_path / "o")
    assert_one_error(rc, err, "--set batch_size", "too large")
    rc, _, err = run_cli(capsys, *RING, "--set", "batch_size=" + "9" * 5000,
                         "--out", tmp_path / "o")
    assert_one_error(rc, err, "--set batch_size")
    rc, _, err = run_cli(capsys, *RING, "--set", "g_hidden=" + "[" * 5000 + "]" * 5000,
                         "--out", tmp_path / "o")
    assert_one_error(rc, err, "--set g_hidden")


@pytest.mark.parametrize("name,content,message", [
    ("garbage", bytes(range(256)) * 4, "not a text file"),
    ("broken", b'{"seed": ', "not valid JSON"),
    ("deep", b"[" * 100_000 + b"]" * 100_000, "--config"),
    ("deep_object", b'{"g_hidden": ' + b"[" * 200 + b"]" * 200 + b"}", "nested more than"),
    ("huge_int", b'{"seed": ' + b"9" * 5000 + b"}", "--config"),
    ("big_int", b'{"batch_size": ' + b"9" * 1000 + b"}", "too large"),
    ("not_object", b"[1, 2]", "must be a JSON object"),
])
def test_bad_config_files(name, content, message, tmp_path, capsys):
    path = tmp_path / f"{name}.json"
    path.write_bytes(content)
    rc, _, err = run_cli(capsys, "train", "--config", path, "--steps", "2",
                         "--out", tmp_path / "o")
    assert_one_error(rc, err, message)
    assert len(err) < 500


# -- cases bench/fuzz_inputs.py found: each was a traceback, a hang or a crash ---------
def _mnist_root(tmp_path, part: str | None = None, data: bytes = b"") -> Path:
    from helpers import write_idx_mnist
    root = write_idx_mnist(tmp_path / "mnist", "MNIST", n=8)
    if part is not None:
        (root / "MNIST" / "raw" / part).write_bytes(data)
    return root


@pytest.mark.parametrize("part,data,message", [
    ("train-images-idx3-ubyte", struct.pack(">IIII", 1234, 8, 28, 28) + bytes(8 * 784),
     "AssertionError"),
    ("train-images-idx3-ubyte", b"", "cannot be used"),
    ("train-images-idx3-ubyte", struct.pack(">IIII", 0x803, 8, 10, 10) + bytes(800),
     "not uint8 28x28"),
    ("train-images-idx3-ubyte", struct.pack(">IIII", 0xC03, 8, 28, 28) + bytes(8 * 784 * 4),
     "torch.int32"),
    ("train-labels-idx1-ubyte", struct.pack(">II", 0x801, 3) + bytes(3), "labels of shape"),
])
def test_a_broken_mnist_root_is_one_line(part, data, message, tmp_path, capsys):
    root = _mnist_root(tmp_path, part, data)
    rc, _, err = run_cli(capsys, "train", "--data", "mnist", "--data-root", root, "--steps",
                         "2", "--eval-every", "0", "--out", tmp_path / "o")
    assert_one_error(rc, err, "mnist:", "replace them with the four unzipped IDX files", message)
    assert not (tmp_path / "o").exists()


def test_a_fifo_in_an_mnist_root_is_refused_without_reading_it(tmp_path, capsys):
    root = _mnist_root(tmp_path)
    raw = root / "MNIST" / "raw" / "train-images-idx3-ubyte"
    raw.unlink()
    os.mkfifo(raw)   # opening it would block forever
    rc, _, err = run_cli(capsys, "train", "--data", "mnist", "--data-root", root, "--steps",
                         "2", "--eval-every", "0", "--out", tmp_path / "o")
    assert_one_error(rc, err, "not a regular file")


def test_garbage_processed_mnist_files_are_one_line(tmp_path, capsys):
    root = _mnist_root(tmp_path)
    for name in ("training.pt", "test.pt"):   # torchvision's legacy cache, read first
        (root / "MNIST" / "processed").mkdir(exist_ok=True)
        (root / "MNIST" / "processed" / name).write_bytes(b"garbage")
    rc, _, err = run_cli(capsys, "train", "--data", "mnist", "--data-root", root, "--steps",
                         "2", "--eval-every", "0", "--out", tmp_path / "o")
    assert_one_error(rc, err, "cannot be used")
    assert len(err) < 600


@pytest.mark.parametrize("special", ["fifo", "/dev/zero"])
def test_a_fifo_or_device_as_config_or_checkpoint_is_not_read(special, tmp_path, capsys):
    path = special
    if special == "fifo":
        path = tmp_path / "fifo"
        os.mkfifo(path)
    rc, _, err = run_cli(capsys, "train", "--config", path, "--out", tmp_path / "o")
    assert_one_error(rc, err, "--config", "not a regular file")
    rc, _, err = run_cli(capsys, "info", path)
    assert_one_error(rc, err, "not a regular file")


@pytest.mark.parametrize("setting,message", [
    ("g_hidden=" + json.dumps([4096] * 16), "parameters; at most"),
    ("d_hidden=" + json.dumps([4096] * 3), "parameters; at most"),
    ("g_hidden=" + json.dumps([8] * 100_000), "at most 16 layer widths"),
])
def test_networks_too_big_to_train_are_refused_before_allocating(setting, message, tmp_path,
                                                                 capsys):
    rc, _, err = run_cli(capsys, *RING, "--set", setting, "--out", tmp_path / "o")
    assert_one_error(rc, err, message)
    assert len(err) < 400


def test_a_data_root_too_big_to_scan_is_refused(tmp_path, capsys, monkeypatch):
    import core.data.datasets
    monkeypatch.setattr(core.data.datasets, "MAX_SCANNED", 10)   # as --data-root / would be
    for i in range(12):
        (tmp_path / f"{i}.txt").write_text("")
    rc, _, err = run_cli(capsys, "train", "--data", "folder", "--data-root", tmp_path,
                         "--steps", "2", "--eval-every", "0", "--out", tmp_path / "o")
    assert_one_error(rc, err, "more than 10 files and folders", "folder of images")


@pytest.fixture(scope="module")
def ring_checkpoint(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ring")
    assert main([*RING, "--sample-every", "1", "--out", str(out)]) == 0
    return next(out.glob("*.safetensors"))


def test_animate_fps_too_small_for_a_gif(ring_checkpoint, tmp_path, capsys):
    rc, _, err = run_cli(capsys, "animate", ring_checkpoint, "--fps", "1e-300",
                         "--out", tmp_path / "a.gif")
    assert_one_error(rc, err, "--fps", "from 0.1 to 50")
    assert not (tmp_path / "a.gif").exists()


@pytest.mark.parametrize("oracle", ["angle:nan", "angle:inf"])
def test_an_oracle_angle_must_be_finite(oracle, ring_checkpoint, tmp_path, capsys):
    rc, _, err = run_cli(capsys, "feedback", "simulate", "--from", ring_checkpoint, "--oracle",
                         oracle, "--pairs", "2", "--db", tmp_path / "p.sqlite")
    assert_one_error(rc, err, oracle, "not a finite number")


def test_a_device_or_fifo_is_never_replaced_by_an_output(ring_checkpoint, tmp_path, capsys):
    # As root, an atomic save (temp file + os.replace) onto /dev/null replaced the device
    # itself; a FIFO stands in for it here.
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    rc, _, err = run_cli(capsys, "feedback", "simulate", "--from", ring_checkpoint, "--oracle",
                         "upper", "--pairs", "2", "--db", fifo)
    assert_one_error(rc, err, "not a regular file")
    rc, _, err = run_cli(capsys, "sample", ring_checkpoint, "--out", fifo)
    assert_one_error(rc, err, "--out", "not a regular file")
    assert fifo.is_fifo()


def test_torch_threads_must_be_ascii_digits(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("GANLAB_TORCH_THREADS", "\u0663")   # an Arabic-Indic 3
    rc, _, err = run_cli(capsys, *RING, "--out", tmp_path / "o")
    assert_one_error(rc, err, "GANLAB_TORCH_THREADS")


def test_refused_compare_and_reward_train_leave_no_files(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "compare", "--data", "ring8", "--steps", "2", "--backend",
                         "serial", "--rules", "bce,reinforce:sigma_start=1e999",
                         "--out", tmp_path / "cmp")
    assert_one_error(rc, err, "reinforce.sigma_start = inf")
    rc, _, err = run_cli(capsys, "reward", "train", "--db", tmp_path / "none.sqlite",
                         "--out", tmp_path / "rm.pt")
    assert_one_error(rc, err, "no preference database there yet")
    assert list(tmp_path.iterdir()) == []


def test_a_sweep_of_steps_0_would_never_end(tmp_path, capsys):
    rc, _, err = run_cli(capsys, "sweep", "--data", "ring8", "--steps", "2", "--seeds", "1",
                         "--backend", "serial", "--grid", "steps=0,1", "--out", tmp_path / "o")
    assert_one_error(rc, err, "--grid", "steps=0")


# -- --debug, bugs, Ctrl-C -----------------------------------------------------------
def test_debug_re_raises(tmp_path, capsys):
    target = tmp_path / "f"
    target.write_text("")
    with pytest.raises(UsageError, match="not a directory"):
        main(["--debug", *RING, "--out", str(target)])
    with pytest.raises(UsageError, match="invalid choice"):
        main(["--debug", "frobnicate"])


def test_an_internal_error_is_one_line_and_exit_1(monkeypatch, capsys):
    def buggy(args):
        raise ZeroDivisionError("division by zero\nsecond line")
    monkeypatch.setattr(checkpoints_cli, "cmd_info", buggy)
    rc, _, err = run_cli(capsys, "info", "x.pt")
    line = assert_one_error(rc, err, code=1)
    assert line == ("error: internal error: ZeroDivisionError: division by zero second line "
                    "(run with --debug for the traceback)")
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "info", "x.pt"])


def test_keyboard_interrupt_anywhere_exits_130(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt
    monkeypatch.setattr(checkpoints_cli, "cmd_info", interrupted)
    rc, _, err = run_cli(capsys, "info", "x.pt")
    assert rc == 130 and "Traceback" not in err
    assert err.strip() == "interrupted"


def test_signal_handlers_are_restored_after_train(tmp_path, capsys):
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    rc, _, err = run_cli(capsys, *RING, "--out", tmp_path / "r")
    assert rc == 0, err
    assert {sig: signal.getsignal(sig) for sig in before} == before


# -- fuzzing: random train argument lists --------------------------------------------
TEXT = st.text(max_size=12)
INTS = st.one_of(st.integers(-5, 5), st.integers(-2**70, 2**70))
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from([0.0, 1e-3, 0.5, 0.999, 1.0, -1.0, 1e308]))
VALUE_OPTIONS = {
    "--seed": INTS, "--batch-size": st.one_of(st.integers(-3, 300), INTS),
    "--lr": FLOATS, "--sample-every": INTS, "--checkpoint-every": st.integers(-2, 4),
    "--grad-clip": FLOATS, "--g-ema": FLOATS, "--kl": FLOATS,
    "--d-sees": st.sampled_from(["sample", "mean", "neither"]),
    "--rule": st.sampled_from(["bce", "reinforce", "rlhf", "nope"]),
    "--preset": st.sampled_from(["source", "recommended", "x"]),
    "--device": st.sampled_from(["cpu", "auto", "tpu"]),
    "--reward-model": TEXT, "--data-root": TEXT,
    "--set": st.builds(lambda k, v: f"{k}={v}",
                       st.sampled_from(["latent_dim", "d_steps", "g_hidden", "seed",
                                        "reinforce.sigma_start", "g_opt.beta1", "nope",
                                        "rlhf.kl_weight", "max_snapshots", "image_size"]),
                       st.one_of(TEXT, INTS.map(str), FLOATS.map(str),
                                 st.sampled_from(["[8, 8]", "[]", "{}", "true", "null"]))),
}


def _value_text(value) -> str:
    return str(value)


@st.composite
def train_args(draw, out: str):
    args = ["train", "--steps", str(draw(st.integers(1, 3))), "--eval-every", "0",
            "--data", draw(st.sampled_from(["ring8", "ring8", "grid25", "spiral", "fake"]))]
    flags = draw(st.lists(st.sampled_from(sorted(VALUE_OPTIONS)), max_size=5, unique=True))
    for flag in flags:
        args += [flag, _value_text(draw(VALUE_OPTIONS[flag]))]
    if draw(st.booleans()):
        args.append("--ema-samples")
    return args + ["--out", out]


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_fuzz_train_arguments(data, tmp_path, capsys):
    capsys.readouterr()
    args = data.draw(train_args(str(tmp_path / "fuzz")))
    rc = main(args)
    _, err = capsys.readouterr()
    assert rc in (0, 2), (args, err)
    assert "Traceback" not in err, (args, err)
    if rc == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), (args, err)


# -- pages: outside values are text, never markdown ---------------------------------
EVIL = "[x](http://evil.example)"
EVIL_IMAGE = "![x](http://evil.example/p.png)"


def test_plain_and_code_escape_links_images_and_backticks():
    from ui.text import code, plain

    for value in (EVIL, EVIL_IMAGE, "see http://evil.example or www.evil.example"):
        text = plain(value)
        assert "](" not in text and "://" not in text.replace("\\://", "")
        assert "www." not in text.replace("www\\.", "")
    assert plain("ring8-20261201-101234-ab12") == "ring8-20261201-101234-ab12"
    assert plain("# title\n- item") == "\\# title - item"
    assert code("ring8-20261201-101234-ab12") == "`ring8-20261201-101234-ab12`"
    assert code("a` [x](http://e)`b") == plain("a` [x](http://e)`b")
    assert "](" not in code(EVIL) and "`" not in code(EVIL)


def _bodies(at) -> list[str]:
    kinds = ("markdown", "caption", "warning", "error", "success", "info", "toast")
    return [el.value for kind in kinds for el in getattr(at, kind)]


def _assert_no_link(bodies: list[str]) -> None:
    for body in bodies:
        assert "[x](http" not in body and "](http" not in body, body


@pytest.mark.parametrize("page,key,word", [("views/train.py", "run", "Run"),
                                           ("views/compare.py", "arena", "Comparison")])
def test_query_parameter_is_shown_as_text(page, key, word, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("GANLAB_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.chdir(ROOT)
    at = AppTest.from_file(str(ROOT / page), default_timeout=60)
    at.query_params[key] = EVIL
    at.run()
    assert not at.exception
    warnings = [w.value for w in at.warning if word in w.value]
    assert warnings, _bodies(at)
    assert "\\[x\\]\\(http\\:\u2060//evil.example\\)" in warnings[0]   # shown as text
    _assert_no_link(_bodies(at))

    at = AppTest.from_file(str(ROOT / page), default_timeout=60)
    at.query_params[key] = "ab`" + EVIL_IMAGE + "`"     # a backtick would close a span
    at.run()
    bodies = _bodies(at)
    assert any("ab\\`\\!\\[x\\]" in b for b in bodies), bodies
    _assert_no_link(bodies)

    at = AppTest.from_file(str(ROOT / page), default_timeout=60)
    at.query_params[key] = "ring8-20261201-101234-ab12"    # a normal id: as before
    at.run()
    assert any(f"{word} `ring8-20261201-101234-ab12` is not running" in w.value
               for w in at.warning), _bodies(at)


@pytest.mark.parametrize("run_id,loads", [
    ("![x](p.png)`[y](javascript:alert)", True),
    (EVIL_IMAGE + "`" + EVIL, False),       # refused (a path separator): the error quotes it
])
def test_checkpoint_with_a_markdown_run_id_is_shown_as_text(run_id, loads, tmp_path,
                                                             monkeypatch):
    from streamlit.testing.v1 import AppTest

    from core.engine.config import preset
    from core.engine.trainer import Trainer
    from ui.text import plain

    root = tmp_path / "checkpoints"
    monkeypatch.setenv("GANLAB_CHECKPOINT_DIR", str(root))
    monkeypatch.chdir(ROOT)
    trainer = Trainer(preset("recommended", data="ring8", steps=2), run_id=run_id)
    trainer.save_checkpoint(root / "evil" / "step_0.pt")
    at = AppTest.from_file(str(ROOT / "views/checkpoints.py"), default_timeout=60).run()
    assert not at.exception
    bodies = _bodies(at)
    if loads:
        assert any(f"run {plain(run_id)} · step 0" in b for b in bodies), bodies
    else:
        assert any(plain(run_id) in e.value for e in at.error), bodies
    for body in bodies:
        assert "](" not in body and "![" not in body, body
