"""`python -m core feedback simulate` (an oracle judges a generator's samples into the
preference store) and `reward train` (a reward model fitted on that store)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from core.cli.args import _Parser, load_checkpoint
from core.cli.checks import (
    UsageError,
    as_float,
    as_int,
    as_seed,
    check_out_dir,
    check_out_file,
    one_line,
    short,
)
from core.data.datasets import DATASETS


def cmd_feedback_simulate(args: argparse.Namespace) -> int:
    from core.feedback.loop import simulate
    from core.feedback.oracles import make_oracle
    from core.feedback.preferences import PreferenceStore, default_path
    from core.quality.offline import generator_from_state

    if not 1 <= args.pairs <= 100_000:
        raise UsageError(f"--pairs {args.pairs}: use between 1 and 100000")
    if not 0 <= args.noise <= 100:
        raise UsageError(f"--noise {args.noise}: use 0 (always the better sample) to 100")
    if not 0 <= args.repeats <= 0.5:
        raise UsageError(f"--repeats {args.repeats}: use a share from 0 to 0.5")
    state = load_checkpoint(args.source)
    if state.get("kind") == "arena":
        raise UsageError(f"{args.source} is an arena checkpoint; extract an arm first")
    G, data = generator_from_state(state, ema=args.ema)
    oracle = make_oracle(args.oracle, data)
    store = PreferenceStore(args.db or default_path())
    try:
        n = simulate(store, G, data, oracle, n=args.pairs, noise=args.noise, seed=args.seed,
                     step=int(state["step"]), k=args.best_of, criterion=args.criterion,
                     judge=args.judge, repeats=args.repeats)
        print(f"stored {n} judgements by oracle:{args.oracle} of {data.name} samples in "
              f"{store.path} ({store.count()} in all)")
    finally:
        store.close()
    return 0


def _existing_store(db_arg: str | None):
    from core.feedback.preferences import PreferenceStore, default_path

    db = Path(db_arg or default_path())
    if not db.exists():   # opening would create an empty database only to refuse it
        raise UsageError(f"{db}: no preference database there yet: judge on the Feedback "
                         "page or run python -m core feedback simulate")
    return PreferenceStore(db)


def cmd_feedback_export(args: argparse.Namespace) -> int:
    from core.feedback.export import export

    out = check_out_file("--out", args.out)
    store = _existing_store(args.db)
    try:
        skipped: list[str] = []
        data = _data_of(store, args.data, skipped)
        rows, card = export(store, out, data, args.criterion)
    finally:
        store.close()
    _warn_skipped(skipped)
    print(f"wrote {out}: {rows} pairs of {data} (TRL and Pick-a-Pic columns), card {card}")
    return 0


def cmd_feedback_import(args: argparse.Namespace) -> int:
    from core.feedback.export import DatasetFileError, import_into
    from core.feedback.preferences import PreferenceStore, default_path

    store = PreferenceStore(args.db or default_path())
    try:
        n = import_into(store, args.file)
    except DatasetFileError as exc:
        raise UsageError(one_line(exc)) from None
    finally:
        store.close()
    print(f"imported {n} judgements from {args.file} into {store.path}")
    return 0


def _data_of(store, wanted: str | None, skipped: list[str], judge: str | None = None) -> str:
    """The data set asked for, or the only known one judged. Damaged rows, and rows
    naming a data set this lab does not have, are left out and added to `skipped`."""
    rows = store.judgements(judge=judge, skipped=skipped)
    skipped += [f"row {j.id}: data {short(j.data)!r} is not a known data set"
                for j in rows if j.data not in DATASETS]
    names = sorted({j.data for j in rows if j.data in DATASETS})
    if wanted is None and len(names) != 1:
        raise UsageError(_with_skipped(
            f"{store.path} holds judgements of {', '.join(names)}; choose one with --data"
            if names else f"{store.path} holds no usable judgements: judge on the "
            "Feedback page or run python -m core feedback simulate", skipped))
    return wanted or names[0]


def cmd_feedback_stats(args: argparse.Namespace) -> int:
    import torch

    from core.data.datasets import load_by_name
    from core.feedback.agreement import judge_stats, kappas
    from core.feedback.loop import from_display
    from core.feedback.oracles import make_oracle

    store = _existing_store(args.db)
    try:
        skipped: list[str] = []
        data = _data_of(store, args.data, skipped)
        criterion = _one_criterion(store, data, args.criterion)
        rows = store.judgements(data=data, criterion=criterion)
    finally:
        store.close()
    _warn_skipped(skipped)
    prob_left = None
    if args.oracle:
        dataset = load_by_name(data)
        oracle = make_oracle(args.oracle, dataset)

        def prob_left(pairs):
            shown = [from_display(j.samples, dataset) for j in pairs]
            left, right = torch.stack([x[0] for x in shown]), torch.stack([x[1] for x in shown])
            return oracle.prob_left(left, right, 0.0).numpy()
    print(f"{data}" + (f", criterion {short(criterion)!r}" if criterion else "")
          + f": {len(rows)} judgements")
    print(f"{'judge':30s} {'judgements':>10s} {'pairs':>6s} {'repeats':>7s} "
          f"{'self-agree':>10s} {'vs oracle':>9s}")
    for s in judge_stats(rows, prob_left):
        print(f"{short(s.judge):30s} {s.judgements:>10d} {s.pairs:>6d} {s.repeats:>7d} "
              f"{_pct(s.self_agreement):>10s} {_pct(s.oracle_agreement):>9s}")
    for a, b, kappa, shared in kappas(rows):
        print(f"Cohen's kappa {short(a)} vs {short(b)}: {kappa:.2f} on {shared} shared pairs")
    return 0


def _warn_skipped(skipped: list[str]) -> None:
    from core.feedback.preferences import skipped_line

    if skipped:
        print(f"warning: {skipped_line(skipped)}", file=sys.stderr)


def _pct(share: float) -> str:
    return "-" if share != share else f"{100 * share:.0f}%"


def _one_criterion(store, data: str, wanted: str | None) -> str | None:
    """One model, one criterion: the one asked for, or the only one judged."""
    judged = store.criteria(data)
    if wanted is not None:
        if wanted not in judged:
            raise UsageError(f"no judgements of {data} under the criterion {short(wanted)!r}; "
                             f"judged: {', '.join(repr(short(c)) for c in judged) or 'none'}")
        return wanted
    if len(judged) > 1:
        raise UsageError(f"{data} was judged under {len(judged)} criteria "
                         f"({', '.join(repr(short(c)) for c in judged)}); a reward model "
                         "learns one: choose it with --criterion")
    return None


def _unreliable(store, data: str, criterion: str | None, bar: float | None) -> tuple:
    """Judges below a self-agreement bar (on at least 5 repeats): left out, and said."""
    from core.feedback.agreement import judge_stats, unreliable

    if bar is None:
        return ()
    if not 0 <= bar <= 1:
        raise UsageError(f"--min-self-agreement {bar}: use a share from 0 to 1")
    rows = store.judgements(data=data, criterion=criterion)
    gone = tuple(unreliable(judge_stats(rows), bar))
    if gone:
        print(f"left out (self-agreement below {100 * bar:.0f}%): "
              f"{', '.join(short(g) for g in gone)}", file=sys.stderr)
    return gone


def cmd_reward_train(args: argparse.Namespace) -> int:
    from core.data.datasets import load_by_name
    from core.engine.config import ConfigError
    from core.feedback.loop import train_from_store
    from core.feedback.reward_model import RewardModelError, new_file, verdict

    out = check_out_file("--out", args.out)
    try:
        new_file(out)
    except RewardModelError as exc:
        raise UsageError(str(exc)) from None
    store = _existing_store(args.db)
    skipped: list[str] = []   # damaged rows the store left out, reported below
    try:
        data = load_by_name(_data_of(store, args.data, skipped, args.judge))
        criterion = _one_criterion(store, data.name, args.criterion)
        exclude = _unreliable(store, data.name, criterion, args.min_self_agreement)
        model = train_from_store(store, data, judge=args.judge, skipped=skipped,
                                 criterion=criterion, exclude=exclude,
                                 features=args.features, seed=args.seed)
    except ConfigError as exc:   # e.g. too few pairs once the damaged rows are left out
        raise UsageError(_with_skipped(one_line(exc), skipped)) from None
    finally:
        store.close()
    _warn_skipped(skipped)
    path = model.save(out)
    good, summary = verdict(model.metrics)
    print(f"wrote {path}: features {model.metrics['features']}, {summary}",
          file=sys.stdout if good else sys.stderr)
    return 0


def _with_skipped(message: str, skipped: list[str]) -> str:
    """An error that also names the damaged rows left out, which may be its cause."""
    from core.feedback.preferences import skipped_line

    return f"{message}; {skipped_line(skipped)}" if skipped else message


def cmd_judges(args: argparse.Namespace) -> int:
    from core.data.datasets import load_by_name
    from core.quality.judges import JUDGES, get_judge

    data = load_by_name(args.data)
    if not data.is_image or data.labels is None:
        raise UsageError(f"{args.data}: judges classify labelled images; use mnist5k or "
                         "another labelled image set")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)   # noqa: E731
    print(f"{'judge':<8} {'held-out accuracy':>18}  kind")
    for name in JUDGES:
        judge = get_judge(name, data, log=log)
        print(f"{name:<8} {judge.accuracy:>17.1f}%  {JUDGES.entry(name).help}")
    return 0


def add_judges(sub: argparse._SubParsersAction) -> None:
    """Register `judges`."""
    judges = sub.add_parser("judges", help="the judges of other kinds and their accuracy on "
                            "held-out real images (trained once and cached)")
    judges.add_argument("--data", default="mnist5k", choices=list(DATASETS))
    judges.set_defaults(func=cmd_judges)


ROUND_RULES = ("latent", "rlhf")   # the rules that fine-tune on a reward model


def cmd_rlhf_rounds(args: argparse.Namespace) -> int:
    from core.engine.trainer import Trainer
    from core.feedback.oracles import make_oracle
    from core.feedback.preferences import PreferenceStore
    from core.feedback.rounds import run_rounds

    for flag, value, low, high in (("--rounds", args.rounds, 1, 100),
                                   ("--pairs-per-round", args.pairs_per_round, 10, 100_000),
                                   ("--steps-per-round", args.steps_per_round, 1, 10**7)):
        if not low <= value <= high:
            raise UsageError(f"{flag} {value}: use between {low} and {high}")
    out = check_out_dir("--out", args.out)
    state = load_checkpoint(args.source)
    if state.get("kind") == "arena":
        raise UsageError(f"{args.source} is an arena checkpoint; extract an arm first")
    store = PreferenceStore(args.db or out / "preferences.sqlite")
    try:
        # the rule starts after round 0's judgements, once it has a reward model
        trainer = Trainer.from_checkpoint(state, run_dir=out)
        oracle = make_oracle(args.oracle, trainer.data)
        results = run_rounds(trainer, args.rule, store, oracle, rounds=args.rounds,
                             pairs_per_round=args.pairs_per_round,
                             steps_per_round=args.steps_per_round, out=out, noise=args.noise,
                             features=args.features, seed=args.seed,
                             log=lambda msg: print(msg, flush=True))
    finally:
        store.close()
    print(f"{trainer.data.name}: {len(results)} rounds, last checkpoint "
          f"{out / f'round{len(results) - 1}.safetensors'}")
    return 0


def add_rounds(sub: argparse._SubParsersAction) -> None:
    """Register `rlhf-rounds`."""
    rounds = sub.add_parser("rlhf-rounds", help="judge, fit a reward model, fine-tune, and "
                            "judge the fine-tuned samples again, for several rounds")
    rounds.add_argument("--from", dest="source", required=True, help="a run checkpoint")
    rounds.add_argument("--oracle", required=True, help="who judges: e.g. digit:7@panel, thick")
    rounds.add_argument("--rule", choices=ROUND_RULES, default="latent",
                        help="latent: steer G's noise (G frozen); rlhf: fine-tune G's pixels")
    rounds.add_argument("--rounds", type=as_int, default=3)
    rounds.add_argument("--pairs-per-round", type=as_int, default=150)
    rounds.add_argument("--steps-per-round", type=as_int, default=1000)
    rounds.add_argument("--noise", type=as_float, default=0.0,
                        help="the oracle's Bradley-Terry temperature (0 = exact)")
    rounds.add_argument("--features", help="reward-model features (default: the data's first)")
    rounds.add_argument("--db", help="preference database (default OUT/preferences.sqlite)")
    rounds.add_argument("--seed", type=as_seed, default=0)
    rounds.add_argument("--out", required=True, help="folder for reward models and checkpoints")
    rounds.set_defaults(func=cmd_rlhf_rounds)


def add_feedback(sub: argparse._SubParsersAction) -> None:
    """Register `feedback` and its subcommands."""
    feedback = sub.add_parser("feedback", help="preference judgements (see the Feedback page)")
    fsub = feedback.add_subparsers(dest="feedback_command", required=True, parser_class=_Parser)
    sim = fsub.add_parser("simulate", help="let a synthetic oracle judge a generator's samples")
    sim.add_argument("--from", dest="source", required=True, help="a run checkpoint")
    sim.add_argument("--oracle", required=True,
                     help="thick, centred, digit:K (images); upper, angle:DEG (2-D)")
    sim.add_argument("--pairs", type=as_int, default=400, help="comparisons to judge (400)")
    sim.add_argument("--noise", type=as_float, default=0.0,
                     help="Bradley-Terry temperature in units of the oracle's spread on real "
                          "data: 0 = always the better sample")
    sim.add_argument("--best-of", type=as_int, choices=[2, 4], default=2,
                     help="2: pairs; 4: pick the best of 4 (3 pairs per judgement)")
    sim.add_argument("--db", help="preference database (default checkpoints/preferences.sqlite)")
    sim.add_argument("--seed", type=as_seed, default=0)
    sim.add_argument("--criterion", help="the question judged, stored with each pair "
                     "(default: the oracle's name)")
    sim.add_argument("--judge", help="the judge's name stored (default: oracle:<oracle>)")
    sim.add_argument("--repeats", type=as_float, default=0.0, help="share of pairs shown "
                     "again later with the sides swapped (consistency checks), 0 to 0.5")
    sim.add_argument("--ema", action="store_true", help="judge G's EMA weights")
    sim.set_defaults(func=cmd_feedback_simulate)
    stats = fsub.add_parser("stats", help="annotation quality per judge: self-agreement on "
                            "repeated pairs, agreement with an oracle, Cohen's kappa")
    stats.add_argument("--db", help="preference database (default "
                       "checkpoints/preferences.sqlite)")
    stats.add_argument("--data", choices=list(DATASETS), help="data set (needed if several)")
    stats.add_argument("--criterion", help="criterion (needed if several)")
    stats.add_argument("--oracle", help="an oracle standing for the truth, e.g. digit:7@panel")
    stats.set_defaults(func=cmd_feedback_stats)
    exp = fsub.add_parser("export", help="write judged pairs as Parquet (TRL and Pick-a-Pic "
                          "columns, loadable by datasets.load_dataset) with a dataset card")
    exp.add_argument("--db", help="preference database (default checkpoints/preferences.sqlite)")
    exp.add_argument("--out", required=True, help="the .parquet file to write")
    exp.add_argument("--data", choices=list(DATASETS), help="data set (needed if several)")
    exp.add_argument("--criterion", help="only pairs judged under this criterion")
    exp.set_defaults(func=cmd_feedback_export)
    imp = fsub.add_parser("import", help="add the judgements of a file written by export")
    imp.add_argument("file", help="a .parquet file written by feedback export")
    imp.add_argument("--db", help="preference database (default checkpoints/preferences.sqlite)")
    imp.set_defaults(func=cmd_feedback_import)


def add_reward(sub: argparse._SubParsersAction) -> None:
    """Register `reward` and its subcommands."""
    reward = sub.add_parser("reward", help="reward models learnt from preferences")
    rsub = reward.add_subparsers(dest="reward_command", required=True, parser_class=_Parser)
    rtrain = rsub.add_parser("train", help="fit a Bradley-Terry ensemble on a preference store")
    rtrain.add_argument("--db", help="preference database (default checkpoints/preferences.sqlite)")
    rtrain.add_argument("--out", required=True, help="reward model file to write (.pt); "
                        "never an existing file (a run may be using it)")
    rtrain.add_argument("--data", choices=list(DATASETS), help="data set of the judgements")
    rtrain.add_argument("--judge", help="only this judge's judgements (e.g. oracle:thick)")
    rtrain.add_argument("--features", help="frozen features: multi (images, default), "
                        "robust (the adversarially trained judge's), classifier+pixels, "
                        "classifier, pixels; raw (2-D)")
    rtrain.add_argument("--criterion", help="only judgements under this criterion (needed "
                        "when the data set was judged under several)")
    rtrain.add_argument("--min-self-agreement", type=as_float, help="leave out judges whose "
                        "self-agreement on repeated pairs (5 or more) is below this share")
    rtrain.add_argument("--seed", type=as_seed, default=0)
    rtrain.set_defaults(func=cmd_reward_train)
