"""The rlhf rule: exact KL, the anchor, the reward rising, checkpoints, the CLI."""
from __future__ import annotations

import pytest
import torch

from core.__main__ import main
from core.checkpoint import load_checkpoint, to_bytes
from core.config import ConfigError, TrainConfig, preset
from core.data import load_by_name
from core.oracles import make_oracle
from core.reward_model import train_reward_model
from core.rules.rlhf import exact_kl
from core.trainer import Trainer


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
    trainer = fine_tune(ring, estimator=estimator)
    scores = [trainer.step()["rm_score"] for _ in range(100)]
    assert sum(scores[-20:]) / 20 > sum(scores[:3]) / 3 + 0.5, (scores[:5], scores[-5:])
    assert trainer.log.latest()["kl"] > 0


def test_a_huge_kl_weight_keeps_g_at_the_reference(ring):
    trainer = fine_tune(ring, kl=1e4, estimator="pathwise")
    start = trainer.nets.g_flat.detach().clone()
    for _ in range(30):
        values = trainer.step()
    moved = (trainer.nets.g_flat.detach() - start).abs().max()
    free = fine_tune(ring, kl=0.0, estimator="pathwise")
    for _ in range(30):
        free.step()
    moved_free = (free.nets.g_flat.detach() - start).abs().max()
    assert values["kl"] < 1e-2 and moved < moved_free


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


def test_rlhf_needs_a_reward_model_and_the_cli_takes_one(ring, capsys):
    with pytest.raises(ConfigError, match="rlhf rule needs a reward model"):
        TrainConfig(data="ring8", rule="rlhf")
    ckpt = ring["root"] / "base.pt"
    ckpt.write_bytes(to_bytes(ring["state"]))
    out = ring["root"] / "cli"
    assert main(["train", "--resume", str(ckpt), "--rule", "rlhf", "--reward-model", ring["rm"],
                 "--kl", "0.02", "--steps", "220", "--out", str(out)]) == 0
    state = load_checkpoint(out / "step_220.safetensors")
    assert state["config"]["rlhf"]["kl"] == 0.02 and state["rule"] == "rlhf"
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
    assert list(frame.step) == [220, 240, 260]
    assert (frame.q_sqrt_kl > 0).all()
    from core.evaluate import EVAL_SAMPLES, eval_noise
    oracle = make_oracle("upper", trainer.data)
    with torch.no_grad():
        start = float(oracle.utility(trainer.run.G_ref(eval_noise(EVAL_SAMPLES, 2))).mean())
    assert frame.q_gold.iloc[-1] > start / oracle.scale     # the true preference improved
    fig = charts.overoptimisation_figure(
        {"": trainer.log.decimated(list(charts.OVEROPT), charts.MAX_POINTS)})
    assert [t.name for t in fig.data] == [charts.metric_title("q_rm"),
                                          charts.metric_title("q_gold")]
    assert "gold peak" in fig.layout.annotations[0].text
