"""The extension points' contracts, over every registry: each rule trains on every kind
of data and round-trips a checkpoint, each data set draws, each reward scores, each
metric computes, and core/ has no import cycle. A new rule, data set, reward or metric
is tested here by registering it; a piece it lacks fails with a message naming it."""
from __future__ import annotations

import ast
import dataclasses
import math
from pathlib import Path

import pytest
import torch
from helpers import rule_changes, tiny_config

from core.base.options import Options, option
from core.base.registry import ContractError, Registry
from core.cli.main import make_parser
from core.data.datasets import DATASETS, load_by_name
from core.engine.metric_info import METRICS
from core.engine.rewards import REWARDS, params_of, score
from core.engine.rules import RULES
from core.engine.rules.base import REQUIRED_METRICS, Rule, check_rule
from core.engine.step import check_outputs
from core.engine.trainer import Trainer
from core.io.checkpoint import load_checkpoint
from core.quality.classifier import load_or_train_classifier
from core.quality.metrics import EvalSamples, compute_all

CORE = Path(__file__).parents[1] / "core"
KINDS = {"2-D points": "ring8", "images": "mnist5k"}   # one data set of each kind
OFFLINE = [n for n in DATASETS if DATASETS.entry(n).extra.get("needs_root") is None]


# -- the import graph -----------------------------------------------------------------
def core_import_graph() -> dict[str, set[str]]:
    """core's modules -> the core modules they import (module level and in functions)."""
    modules = {}
    for path in CORE.rglob("*.py"):
        parts = path.relative_to(CORE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {m: set() for m in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                           for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target != "core" and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_core_has_no_import_cycle():
    graph = core_import_graph()
    assert len(graph) > 30 and graph["core.engine.trainer"]   # the graph was really built
    assert cycles(graph) == [], "import cycles in core/: " + "; ".join(
        " <-> ".join(c) for c in cycles(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


# -- rules ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("rule", list(RULES))
def test_every_rule_trains_on_every_kind_of_data_and_resumes_exactly(rule, kind, tmp_path):
    data = KINDS[kind]
    cfg = tiny_config(data=data, rule=rule, **rule_changes(rule, load_by_name(data), tmp_path))
    trainer = Trainer(cfg, run_dir=tmp_path)
    before = trainer.nets.g_flat.detach().clone()
    for _ in range(3):
        values = trainer.step()
    assert set(REQUIRED_METRICS) <= set(values)
    assert all(math.isfinite(values[m]) for m in REQUIRED_METRICS)
    assert not torch.equal(before, trainer.nets.g_flat.detach())
    resumed = Trainer.from_checkpoint(load_checkpoint(trainer.save_checkpoint()))
    went_on, came_back = trainer.step(), resumed.step()
    for values in (went_on, came_back):
        values.pop("steps_per_s")   # wall-clock speed, the one thing that may differ
    assert came_back == pytest.approx(went_on, nan_ok=True)
    assert torch.equal(trainer.nets.g_flat, resumed.nets.g_flat)


@pytest.mark.parametrize("rule", list(RULES))
def test_every_rule_is_in_the_cli_and_its_options_are_settable(rule):
    parser = make_parser()
    args = parser.parse_args(["train", "--rule", rule, "--out", "x"])
    assert args.rule == rule
    options = RULES[rule].Options()
    assert isinstance(options, Options)
    for f in dataclasses.fields(options):
        assert f.metadata["label"], f"{rule}.{f.name} has no label for the form"


def test_a_rule_without_a_loss_or_with_bad_options_is_refused_at_registration():
    @dataclasses.dataclass(frozen=True)
    class Plain:                       # not an Options subclass
        lr: float = 1.0

    class NoLoss(Rule):
        pass

    class BadOptions(Rule):
        Options = Plain

        def loss(self, mu, extra, ctx):
            return mu.sum(), {}

    @dataclasses.dataclass(frozen=True)
    class Unbounded(Options):
        scale: float = option(1.0, "Scale")

    class NoBounds(BadOptions):
        Options = Unbounded

    rules = Registry("rule", required={"help": str}, check=check_rule)
    with pytest.raises(ContractError, match="rule 'x': it has no loss"):
        rules.register("x", NoLoss(), help="")
    with pytest.raises(ContractError, match="Plain' must subclass core.base.options.Options"):
        rules.register("x", BadOptions(), help="")
    with pytest.raises(ContractError, match="'scale' is a number without low= and high="):
        rules.register("x", NoBounds(), help="")
    with pytest.raises(ContractError, match="rule 'x': needs help="):
        rules.register("x", NoBounds())


@pytest.mark.parametrize("option", ["rlhf.kl_weight", "rlhf.realism"])
def test_an_auto_option_takes_its_auto_value_but_nothing_between_it_and_its_range(option):
    assert tiny_config(**{option: -1.0})
    with pytest.raises(ValueError, match=r"out of range; allowed: \[0, .*\] \(or -1 = auto\)"):
        tiny_config(**{option: -0.5})


def test_a_rule_that_returns_no_g_loss_is_named_on_its_first_step():
    with pytest.raises(ContractError, match="rule 'unregistered' returned no g_loss"):
        check_outputs("unregistered", False, {"reward_mean": 0.0})


def test_options_are_validated_from_their_metadata():
    @dataclasses.dataclass(frozen=True)
    class Opts(Options):
        k: int = option(2, "K", low=2, high=8)
        clip: float = option(1.0, "clip", low=0.0, high=5.0, low_open=True)
        weight: float = option(-1.0, "w", low=0.0, high=1.0, auto=(0.1, 0.2), auto_when=-1.0)
        reward: str = option("log_d", "reward", choices=REWARDS)
        on: bool = option(True, "on")

    Opts().validate("r.", None)
    for bad, message in [({"k": 9}, r"r.k = 9 is out of range; allowed: \[2, 8\]"),
                         ({"k": 2.5}, "r.k = 2.5 is not an integer"),
                         ({"clip": 0.0}, r"allowed: \(0, 5\]"),
                         ({"weight": 2.0}, r"\(or -1 = auto\)"),
                         ({"reward": "nope"}, "r.reward = 'nope' is not one of: " + ", ".join(REWARDS)),
                         ({"on": 1}, "r.on = 1 must be true or false")]:
        with pytest.raises(ValueError, match=message):
            dataclasses.replace(Opts(), **bad).validate("r.", None)


# -- data sets --------------------------------------------------------------------------
@pytest.mark.parametrize("name", OFFLINE)
def test_every_offline_data_set_draws_matches_its_shape_and_evaluates(name):
    data = load_by_name(name)
    entry = DATASETS.entry(name)
    assert tuple(data.x.shape[1:]) == (math.prod(entry.extra["shape"](28)),)
    assert entry.extra["is_2d"] == (not data.is_image)
    assert data.x.isfinite().all()
    x0, x1, y0, y1 = data.extent() if not data.is_image else (0, 1, 0, 1)
    assert x0 < x1 and y0 < y1
    trainer = Trainer(tiny_config(data=name, steps=2))
    trainer.step()
    assert trainer.take_snapshot().step == 1


def test_a_data_set_without_shape_or_is_2d_is_refused_with_its_name():
    data = Registry("data", required={"is_2d": bool, "shape": object})
    with pytest.raises(ContractError, match="data 'spiral': needs is_2d= \\(bool\\); needs shape="):
        data.register("spiral", lambda root, size: None)


def test_2d_data_without_modes_gets_an_extent_from_its_points():
    from core.data.datasets import DataSet
    points = torch.randn(1000, 2) * 3
    x0, x1, _, _ = DataSet("cloud", points, None, None).extent()
    assert -12 < x0 < -3 and 3 < x1 < 12


# -- rewards and metrics ----------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in REWARDS if n != "preference"])
def test_every_reward_scores_one_finite_value_per_row(name):
    trainer = Trainer(tiny_config(data="ring8"))
    from core.engine.step import StepContext
    ctx = StepContext(trainer.cfg, trainer.nets, 0, 0, torch.Generator())
    x = torch.randn(12, 2)
    r = score(name, x, ctx, trainer.cfg.options("reinforce")).reshape(-1)
    assert r.shape == (12,) and r.isfinite().all()


def test_a_reward_gets_its_parameters_from_the_rule_options():
    assert params_of("logit") == {"logit_clip": 5.0}
    trainer = Trainer(tiny_config(data="ring8", **{"reinforce.logit_clip": 0.25}))
    from core.engine.step import StepContext
    ctx = StepContext(trainer.cfg, trainer.nets, 0, 0, torch.Generator())
    r = score("logit", torch.randn(50, 2) * 10, ctx, trainer.cfg.options("reinforce"))
    assert float(r.detach().abs().max()) <= 0.25


def test_a_reward_with_parameters_without_defaults_is_refused():
    rewards = Registry("reward", check=REWARDS.check)
    with pytest.raises(ContractError, match="reward 'bad': its function must be reward"):
        rewards.register("bad", lambda x, ctx, weight: x.sum(1))


def test_a_quality_metric_without_its_compute_function_is_refused():
    metrics = Registry("metric", check=METRICS.check)
    with pytest.raises(ContractError, match="metric 'q_ink': a quality metric .* needs compute="):
        metrics.register("q_ink", kind="image", label="ink")


def test_a_rule_that_breaks_its_contract_is_a_clear_cli_error(monkeypatch, tmp_path, capsys):
    import core.engine.step as step
    monkeypatch.setattr(step, "_CHECKED", set())
    monkeypatch.setattr(step, "missing_outputs", lambda name, metrics: f"rule {name!r} returned no reward_mean")
    from core.cli.main import main
    assert main(["train", "--data", "ring8", "--steps", "2", "--out", str(tmp_path)]) == 2
    assert "error: rule 'bce' returned no reward_mean" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["toy", "image"])
def test_every_quality_metric_computes_from_its_registration(kind):
    names = METRICS.names(kind=kind)
    assert names and all(n.startswith("q_") for n in names)
    data = load_by_name("ring8" if kind == "toy" else "mnist5k")
    classifier = load_or_train_classifier(data) if kind == "image" else None
    values = compute_all(names, EvalSamples(data.x[:500], data, classifier))
    assert set(values) == set(names)
    assert all(math.isfinite(v) for v in values.values())
