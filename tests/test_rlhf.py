"""The rlhf rule: exact KL, the anchor, the reward rising, checkpoints, the CLI."""
from __future__ import annotations

import math

import pytest
import torch

from core.cli.main import main
from core.data.datasets import load_by_name
from core.engine.config import ConfigError, TrainConfig, preset
from core.engine.fine_tune import R1_OFF, fine_tune_config
from core.engine.rules.latent import latent_kl, recover_map
from core.engine.rules.rlhf import exact_kl, sigma_of
from core.engine.trainer import Trainer
from core.feedback.oracles import make_oracle
from core.feedback.reward_model import train_reward_model
from core.io.checkpoint import load_checkpoint, to_bytes
from core.io.schema import config_of


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    """A ring8 reward model for 'prefer the upper half' and a briefly trained G."""
    root = tmp_path_factory.mktemp("rlhf")
    data = load_by_name("ring8")
    oracle = make_oracle("upper", data)
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(len(data.x), (600,), generator=gen)
    a, b = data.x[idx[:300]], data.x[idx[300:]]
    rm = train_reward_model(a, b, oracle.prob_left(a, b, 0.0), data).save(root / "rm.pt")
    base = Trainer(preset("recommended", data="ring8", eval_every=0, batch_size=64))
    for _ in range(200):
        base.step()
    return {"rm": str(rm), "state": load_checkpoint(to_bytes(base.state_dict())),
            "root": root}


def fine_tune(ring, **options) -> Trainer:
    return Trainer.from_checkpoint(ring["state"], rule="rlhf", **{
        "rlhf.reward_model": ring["rm"], **{f"rlhf.{k}": v for k, v in options.items()}})


def test_exact_kl_matches_a_monte_carlo_estimate():
    gen = torch.Generator().manual_seed(0)
    mu, mu_ref, sigma = torch.randn(3, 5, generator=gen), torch.randn(3, 5, generator=gen), 0.7
    x = mu.unsqueeze(1) + sigma * torch.randn(3, 200_000, 5, generator=gen)
    log_ratio = (-((x - mu.unsqueeze(1)) ** 2) + (x - mu_ref.unsqueeze(1)) ** 2).sum(2) / (
        2 * sigma ** 2)
    torch.testing.assert_close(log_ratio.mean(1), exact_kl(mu, mu_ref, sigma), rtol=0.02,
                               atol=0.05)


@pytest.mark.parametrize("estimator", ["reinforce", "pathwise"])
def test_the_preference_reward_rises_on_ring8(ring, estimator):
    trainer = fine_tune(ring, estimator=estimator)   # with both brakes on, as by default
    scores = [trainer.step()["rm_score"] for _ in range(200)]
    assert sum(scores[-20:]) / 20 > sum(scores[:3]) / 3 + 0.15, (scores[:5], scores[-5:])
    assert trainer.log.latest()["kl"] > 0


def test_a_huge_kl_weight_keeps_g_at_the_reference(ring):
    trainer = fine_tune(ring, kl_weight=1e4, estimator="pathwise")
    start = trainer.nets.g_flat.detach().clone()
    for _ in range(30):
        values = trainer.step()
    moved = (trainer.nets.g_flat.detach() - start).abs().max()
    free = fine_tune(ring, kl_weight=0.0, estimator="pathwise")
    for _ in range(30):
        free.step()
    moved_free = (free.nets.g_flat.detach() - start).abs().max()
    sigma = sigma_of(trainer.cfg.options(), is_2d=True)
    shift = (2 * sigma ** 2 * values["kl"]) ** 0.5   # rms distance of G(z) from G_ref(z)
    assert shift < 0.01 and moved < moved_free        # 0.01: the width of a ring8 mode


def test_rlhf_round_trips_through_a_checkpoint_with_its_reference(ring, tmp_path):
    trainer = fine_tune(ring)
    for _ in range(5):
        trainer.step()
    state = load_checkpoint(trainer.save_checkpoint(tmp_path / "ft.pt"))
    assert "generator_ref" in state and state["rule_start"] == 200
    again = Trainer(trainer.cfg)
    again.load_state_dict(state)
    for module_a, module_b in ((again.run.G_ref, trainer.run.G_ref),
                               (again.nets.G, trainer.nets.G)):
        for p, q in zip(module_a.parameters(), module_b.parameters()):
            assert torch.equal(p, q)
    assert again.step()["kl"] == pytest.approx(trainer.step()["kl"], rel=1e-5)



def test_a_fine_tune_with_another_rule_gets_that_rules_options_of_today(ring):
    # a checkpoint saved by an older version holds that version's rlhf defaults
    old = {**ring["state"], "config": {**ring["state"]["config"],
                                       "rlhf": {"kl": 0.01, "estimator": "reinforce"}}}
    trainer = Trainer.from_checkpoint(old, rule="rlhf", **{"rlhf.reward_model": ring["rm"]})
    opts = trainer.cfg.options()
    assert (opts.kl_weight, opts.estimator, opts.reward_model) == (-1, "pathwise", ring["rm"])
    state = load_checkpoint(to_bytes(trainer.state_dict()))
    state["config"]["rlhf"]["kl_weight"] = 0.05           # its own rule's options: kept
    assert Trainer.from_checkpoint(state, rule="rlhf").cfg.options().kl_weight == 0.05


def test_a_fine_tune_whose_reward_reads_d_runs_without_r1(ring):
    cfg = config_of(ring["state"])
    assert cfg.r1 > 0, "the 2-D preset has R1"
    tuned, note = fine_tune_config(cfg, ["bce", "reinforce", "rlhf", "latent"])
    assert tuned.r1 == 0 and note == R1_OFF, "rlhf's realism (auto 0.3 on 2-D) reads D"
    assert fine_tune_config(cfg, ["bce", "reinforce"]) == (cfg, None)
    no_realism = cfg.replace(rule="rlhf", **{"rlhf.realism": 0.0})   # its own rule's options
    assert fine_tune_config(no_realism, ["rlhf"]) == (no_realism, None)
    # the CLI's and the Checkpoints page's way: Trainer.from_checkpoint with a rule
    trainer = fine_tune(ring)
    assert trainer.cfg.r1 == 0 and R1_OFF in [t for _, t in trainer.log.events]
    assert Trainer.from_checkpoint(ring["state"], rule="rlhf", r1=0.2, **{
        "rlhf.reward_model": ring["rm"]}).cfg.r1 == 0.2, "an r1 asked for is the user's"


def test_rlhf_rounds_on_ring8_run_the_fine_tune_without_r1(ring, tmp_path):
    from core.io.checkpoint import save_checkpoint

    ckpt = save_checkpoint(ring["state"], tmp_path / "g.safetensors")
    out = tmp_path / "rounds"
    assert main(["rlhf-rounds", "--from", str(ckpt), "--oracle", "upper", "--rule", "rlhf",
                 "--rounds", "1", "--pairs-per-round", "20", "--steps-per-round", "2",
                 "--out", str(out)]) == 0
    final = load_checkpoint(out / "round0.safetensors")
    assert final["config"]["r1"] == 0 and final["rule"] == "rlhf"
    assert R1_OFF in [text for _, text in final["metrics"]["events"]]


def test_a_config_saved_with_the_old_name_kl_loads_as_kl_weight(ring):
    raw = {**ring["state"]["config"], "rule": "rlhf",
           "rlhf": {"kl": 0.03, "reward_model": ring["rm"]}}
    assert TrainConfig.from_dict(raw).options().kl_weight == 0.03

def test_rlhf_needs_a_reward_model_and_the_cli_takes_one(ring, capsys):
    TrainConfig(data="ring8", rule="rlhf")   # a config (or a checkpoint) reads without one
    with pytest.raises(ConfigError, match="rlhf rule needs a reward model"):
        Trainer(TrainConfig(data="ring8", rule="rlhf"))   # training needs it
    ckpt = ring["root"] / "base.pt"
    ckpt.write_bytes(to_bytes(ring["state"]))
    out = ring["root"] / "cli"
    assert main(["train", "--resume", str(ckpt), "--rule", "rlhf", "--reward-model", ring["rm"],
                 "--kl", "0.02", "--steps", "220", "--out", str(out)]) == 0
    state = load_checkpoint(out / "step_220.safetensors")
    assert state["config"]["rlhf"]["kl_weight"] == 0.02 and state["rule"] == "rlhf"
    assert main(["compare", "--data", "ring8", "--rules", f"bce,rlhf:reward_model={ring['rm']}",
                 "--steps", "20", "--eval-every", "0", "--out", str(ring["root"] / "cmp")]) == 0
    assert "rlhf" in (ring["root"] / "cmp" / "summary.md").read_text()


def test_quality_evaluations_log_proxy_gold_and_kl_for_the_panel(ring):
    from ui import charts

    trainer = fine_tune(ring, gold_oracle="upper")
    trainer.run.cfg = trainer.cfg.replace(eval_every=20)
    for _ in range(60):
        trainer.step_once()
    frame = trainer.log.to_frame().dropna(subset=["q_gold"])
    assert list(frame.step) == [200, 220, 240, 260]   # the start (the origin), each evaluation
    assert frame.q_sqrt_kl.iloc[0] == 0 and (frame.q_sqrt_kl.iloc[1:] > 0).all()
    from core.quality.evaluate import EVAL_SAMPLES, eval_noise
    oracle = make_oracle("upper", trainer.data)
    with torch.no_grad():
        start = float(oracle.utility(trainer.run.G_ref(eval_noise(EVAL_SAMPLES, 2))).mean())
    assert frame.q_gold.iloc[0] == pytest.approx(start / oracle.scale, rel=1e-5)
    assert frame.q_gold.iloc[-1] > start / oracle.scale     # the true preference improved
    assert not frame[["q_modes", "q_high_quality"]].isna().any().any()  # the start's too
    fig = charts.overoptimisation_figure(
        {"": trainer.log.decimated(list(charts.OVEROPT), charts.MAX_POINTS)})
    assert [t.name for t in fig.data] == [charts.metric_title("q_rm"),
                                          charts.metric_title("q_gold")]
    assert "gold peak" in fig.layout.annotations[0].text



def test_the_weights_at_the_gold_peak_are_kept_and_the_cli_saves_them(ring):
    # G starts bunched at the top of the ring; realism spreads it along the ring, so a
    # gold oracle for "straight up" peaks at the first evaluation and then falls
    trainer = fine_tune(ring, gold_oracle="angle:90")
    trainer.run.cfg = trainer.cfg.replace(eval_every=20)
    weights = {}
    for _ in range(60):
        trainer.step_once()
        weights[trainer.step_count] = trainer.nets.g_flat.detach().clone()
    gold = trainer.log.to_frame().dropna(subset=["q_gold"]).set_index("step").q_gold
    peak = int(gold.idxmax())
    assert trainer.best_step == peak < 260, gold.to_dict()
    state = load_checkpoint(to_bytes(trainer.best_state()))
    assert state["step"] == peak and max(state["metrics"]["columns"]["step"]) == peak
    assert max(s["step"] for s in state["snapshots"]) <= peak
    resumed = Trainer.from_checkpoint(state)
    assert torch.equal(resumed.nets.g_flat.detach(), weights[peak])
    assert fine_tune(ring).best_state() is None          # no gold oracle, no peak kept

    ckpt, out = ring["root"] / "peak-base.pt", ring["root"] / "peak"
    ckpt.write_bytes(to_bytes(ring["state"]))
    assert main(["train", "--resume", str(ckpt), "--rule", "rlhf", "--reward-model", ring["rm"],
                 "--set", "rlhf.gold_oracle=angle:90", "--eval-every", "20", "--steps", "260",
                 "--out", str(out)]) == 0
    saved = list(out.glob("gold_peak_step_*.safetensors"))
    assert len(saved) == 1 and load_checkpoint(saved[0])["step"] < 260


def test_a_gold_peak_at_the_start_points_back_to_the_checkpoint_it_started_from(ring, capsys):
    trainer = fine_tune(ring)
    trainer.step()
    with trainer.lock:
        trainer.run.keep_if_best(1.0, at_start=True)
        trainer.run.keep_if_best(0.5)                 # lower: not kept
    assert trainer.best_step == 200 and trainer.best_state() is None
    said = trainer.save_best(ring["root"] / "unused")
    assert "the best score came where the rule started (step 200)" in said
    assert not (ring["root"] / "unused").exists()
    with trainer.lock:
        trainer.run.keep_if_best(2.0)                 # higher: its weights are kept
    assert trainer.best_step == 201 and trainer.best_state()["step"] == 201

# -- the over-optimisation panel (ui/overopt_view.py) ------------------------------------
def _table(evals: dict[int, tuple[float, float | None]]) -> dict:
    """{step: (sqrt_kl, gold or None)} -> an evaluation table."""
    return {s: {"q_sqrt_kl": kl, **({"q_gold": g} if g is not None else {})}
            for s, (kl, g) in evals.items()}


def test_the_filmstrip_frames_span_the_fine_tune_and_hold_the_gold_peak():
    from ui.overopt_view import choose_frames, gold_peak

    snaps = range(0, 3100, 100)          # before the fine-tune (start 1000) and after it
    table = _table({1500: (1.0, 0.2), 2000: (2.0, 0.9), 2500: (3.0, 0.5), 3000: (4.0, 0.1)})
    assert gold_peak(table) == 2000
    frames = choose_frames(snaps, table, start=1000, n=8)
    steps = [f.step for f in frames]
    assert len(frames) == 8 and steps == sorted(steps)
    assert steps[0] == 1000 and steps[-1] == 3000       # start of the fine-tune .. latest eval
    assert [f.step for f in frames if f.suggested] == [2000]
    by_step = {f.step: f for f in frames}
    assert by_step[1000].sqrt_kl == 0.0 and by_step[1000].exact   # G is its own reference
    assert by_step[3000].sqrt_kl == 4.0 and by_step[3000].exact
    for f in frames:                      # between evaluations: interpolated, marked so
        assert f.exact == (f.step in (1000, 1500, 2000, 2500, 3000))
    assert by_step[2000].sqrt_kl == 2.0

    # the peak falls between the evenly spaced picks: it replaces the nearest one
    frames = choose_frames(range(1000, 3001, 100), table, start=1000, n=3)
    assert [f.step for f in frames] == [1000, 2000, 3000]
    frames = choose_frames(range(1000, 3001, 100), _table({1500: (1, 0.0), 1700: (2, 0.8),
                                                           3000: (3, 0.1)}), 1000, n=3)
    assert [(f.step, f.suggested) for f in frames] == [(1000, False), (1700, True),
                                                        (3000, False)]
    # no snapshot at the peak step: the nearest one; ties in gold: the earliest (less KL)
    assert gold_peak(_table({100: (1, 0.5), 200: (2, 0.5)})) == 100
    frames = choose_frames([0, 50, 300], _table({120: (1, 0.9), 300: (2, 0.1)}), 0)
    assert [f.step for f in frames if f.suggested] == [50]


def test_without_a_gold_oracle_no_frame_is_suggested_and_few_snapshots_are_all_shown():
    import numpy as np

    from ui.overopt_view import choose_frames, evaluation_table, gold_peak

    data = {"step:q_sqrt_kl": np.array([100, 300, 500], np.float32),
            "q_sqrt_kl": np.array([9.0, 1.0, np.nan], np.float32),
            "step:q_rm": np.array([300], np.float32), "q_rm": np.array([2.0], np.float32),
            "n": np.array(600)}
    table = evaluation_table(data, start=200)       # before the fine-tune: not its own
    assert table == {300: {"q_sqrt_kl": 1.0, "q_rm": 2.0}}
    assert gold_peak(table) is None
    frames = choose_frames([100, 200, 250, 300, 400], table, start=200)
    assert [(f.step, f.suggested) for f in frames] == [(200, False), (250, False),
                                                        (300, False)]
    assert frames[1].sqrt_kl == pytest.approx(0.5) and not frames[1].exact
    assert choose_frames([100], table, start=200) == []


def test_a_filmstrip_frame_is_the_first_row_of_the_snapshot_grid():
    import io

    import numpy as np
    from PIL import Image

    from core.engine.samples import grid_png
    from ui.overopt_view import first_row_png, scatter_png

    images = torch.linspace(-1, 1, 16).view(16, 1).expand(16, 36)   # 16 flat 6x6 images
    row = Image.open(io.BytesIO(first_row_png(grid_png(images, (1, 6, 6)), (6, 6), k=5,
                                              zoom=2)))
    assert row.size == ((2 + 5 * 8) * 2, (6 + 4) * 2)
    tile = Image.open(io.BytesIO(scatter_png(np.zeros((4, 2)), (-1, 1, -1, 1), None, 40)))
    assert tile.size == (40, 40) and tile.getpixel((20, 20)) != (255, 255, 255)


@pytest.fixture
def app_registry(tmp_path, monkeypatch):
    from pathlib import Path

    from ui.runs import registry
    monkeypatch.setenv("GANLAB_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    registry().clear()
    yield registry()
    registry().clear()


def _panel_app(trainer):
    from pathlib import Path

    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "app.py"),
                           default_timeout=60)
    at.query_params["run"] = trainer.run_id
    return at.run()


@pytest.mark.parametrize("gold", ["upper", ""])
def test_the_train_page_shows_the_over_optimisation_panel(ring, app_registry, gold):
    trainer = fine_tune(ring, gold_oracle=gold)
    trainer.run.cfg = trainer.cfg.replace(eval_every=20, sample_every=20)
    for _ in range(60):
        trainer.step_once()
    app_registry.add(trainer)
    at = _panel_app(trainer)
    assert not at.exception, at.exception
    keys = [c.proto.id.split("-")[-1] for c in at.get("plotly_chart")]
    assert "chart_overopt" in keys and "chart_overopt_side" in keys
    markdown = [m.value for m in at.markdown]
    captions = [c.value for c in at.caption]
    assert any(c.startswith("step 200 · √KL 0") for c in captions)   # the start frame
    assert any(c.startswith("step 260 · √KL ") for c in captions)    # the latest eval
    info = " ".join(i.value for i in at.info)
    downloads = [d.proto.label for d in at.get("download_button")]
    assert any("gold-peak checkpoint" in d for d in downloads) == bool(gold)
    if gold:
        assert f"Download the gold-peak checkpoint (step {trainer.best_step:,})" in downloads
        assert sum("suggested checkpoint (gold peak)" in m for m in markdown + captions) == 1
        assert any(c.startswith("Gold peak at step") for c in captions)
        assert "cannot be known" not in info
    else:
        assert not any("suggested checkpoint" in m for m in markdown + captions)
        assert "cannot be known" in info and "blind test" in info
    # a refresh without a new evaluation reuses the built panel
    built = at.session_state[f"overopt_{trainer.run_id}"]
    at.run()
    assert at.session_state[f"overopt_{trainer.run_id}"] is built


def test_the_compare_page_draws_one_over_optimisation_line_per_rlhf_arm(ring, monkeypatch,
                                                                       tmp_path):
    import json
    from pathlib import Path

    from streamlit.testing.v1 import AppTest

    from core.engine.arena import Arena
    from ui.compare_view import registry

    root = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("GANLAB_CHECKPOINT_DIR", str(tmp_path / "checkpoints"))
    monkeypatch.chdir(root)
    cfg = TrainConfig.from_dict(ring["state"]["config"]).replace(
        eval_every=10, **{"rlhf.reward_model": ring["rm"], "rlhf.gold_oracle": "upper"})
    arena = Arena(cfg, ["bce", "rlhf"], init_state=ring["state"])
    for _ in range(20):
        arena.step_once()
    registry().clear()
    registry().add(arena)
    try:
        at = AppTest.from_file(str(root / "views" / "compare.py"), default_timeout=60)
        at.query_params["arena"] = arena.run_id
        at.run()
        assert not at.exception, at.exception
        (chart,) = [c for c in at.get("plotly_chart")
                    if c.proto.id.endswith("-cmp_chart_overopt")]
        names = [t["name"] for t in json.loads(chart.proto.spec)["data"]]
        assert names == ["rlhf · reward model score (proxy) ↑", "rlhf · gold oracle score ↑"]
    finally:
        registry().clear()


# -- the latent-space rule (core/engine/rules/latent.py) ----------------------------------
def steer(ring, **options) -> Trainer:
    return Trainer.from_checkpoint(ring["state"], rule="latent", **{
        "latent.reward_model": ring["rm"], **{f"latent.{k}": v for k, v in options.items()}})


def test_the_latent_kl_is_exact():
    gen = torch.Generator().manual_seed(0)
    A, b = torch.eye(3) + 0.3 * torch.randn(3, 3, generator=gen), torch.randn(3, generator=gen)
    p = torch.distributions.MultivariateNormal(b, scale_tril=torch.linalg.cholesky(A @ A.T))
    q = torch.distributions.MultivariateNormal(torch.zeros(3), torch.eye(3))
    assert float(latent_kl(A, b)) == pytest.approx(float(torch.distributions.kl_divergence(p, q)),
                                                   rel=1e-5)
    assert float(latent_kl(torch.eye(3), torch.zeros(3))) == pytest.approx(0.0, abs=1e-6)


def test_the_latent_rule_moves_only_the_map_and_raises_the_reward(ring):
    trainer = steer(ring, lr=0.01)
    before = [p.detach().clone() for p in trainer.nets.G.parameters()]
    scores = [trainer.step()["rm_score"] for _ in range(150)]
    after = list(trainer.nets.G.parameters())
    assert not torch.equal(before[0], after[0])                  # the first layer moved
    assert all(torch.equal(p, q) for p, q in zip(before[2:], after[2:]))   # the rest is G
    assert sum(scores[-20:]) / 20 > sum(scores[:3]) / 3 + 0.15, (scores[:5], scores[-5:])
    # the map written into G is the one a frozen G_ref draws with
    A, b = recover_map(trainer.nets.G, trainer.run.G_ref)
    z = torch.randn(8, A.shape[0])
    with torch.no_grad():
        assert torch.allclose(trainer.nets.G(z), trainer.run.G_ref(z @ A.T + b), atol=1e-4)


def test_a_latent_fine_tune_resumes_with_its_map(ring):
    trainer = steer(ring, lr=0.01)
    for _ in range(10):
        trainer.step()
    resumed = Trainer.from_checkpoint(load_checkpoint(to_bytes(trainer.state_dict())))
    assert resumed.cfg.rule == "latent"
    z = torch.randn(8, resumed.cfg.latent_dim)
    with torch.no_grad():
        assert torch.equal(resumed.nets.G(z), trainer.nets.G(z))
    values = resumed.step()
    assert values["kl"] > 0 and math.isfinite(values["rm_score"])


@pytest.mark.parametrize("bad, message", [
    ({"theta": torch.zeros(10_000)}, "more than a map of the 2-dimensional latent space"),
    ({"theta": torch.full((20,), float("nan"))}, "rule_state/theta"),
    ({"theta": torch.zeros(2, 10)}, "must have 1 dimension"),
    ({f"k{i}": torch.zeros(1) for i in range(9)}, "at most 8 tensors"),
])
def test_a_crafted_rule_state_is_refused_by_name(ring, bad, message):
    from core.io.schema import CheckpointError

    trainer = steer(ring, lr=0.01)
    trainer.step()
    state = trainer.state_dict()
    assert set(state["rule_state"]) == {"theta", "m", "v", "t"}
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(to_bytes({**state, "rule_state": bad}))


@pytest.mark.parametrize("rule", ["rlhf", "latent"])
def test_a_reward_model_of_another_data_set_is_refused(ring, rule):
    with pytest.raises(ConfigError, match=f"{rule}.reward_model '.*rm.pt' was trained on "
                                          "ring8 samples, but this run is on mnist5k"):
        Trainer(TrainConfig(data="mnist5k").replace(rule=rule,
                                                    **{f"{rule}.reward_model": ring["rm"]}))


def test_a_fine_tune_checkpoint_stays_readable_after_its_reward_model_moves(ring, tmp_path,
                                                                          capsys):
    rm = tmp_path / "rm.pt"
    rm.write_bytes(open(ring["rm"], "rb").read())
    trainer = Trainer.from_checkpoint(ring["state"], rule="rlhf",
                                      **{"rlhf.reward_model": str(rm)})
    trainer.step()
    path = trainer.save_checkpoint(tmp_path / "ft.safetensors")
    rm.rename(tmp_path / "moved.pt")
    assert load_checkpoint(path)["rule"] == "rlhf"
    assert main(["info", str(path)]) == 0 and main(["eval", str(path)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(path), "--steps", "500", "--out",
                 str(tmp_path / "go")]) == 2   # training on needs the file: one line
    assert "rlhf.reward_model" in capsys.readouterr().err
