"""The config of a fine-tune: a pretrained run continued under other update rules."""
from __future__ import annotations

from core.engine.config import TrainConfig
from core.engine.rules import RULES

R1_OFF = "R1 off for the fine-tune: its realism reward reads log D at the data"


def drops_r1(cfg: TrainConfig, rules) -> bool:
    """Whether a fine-tune under `rules` (with cfg's options for them) runs without R1:
    when a rule's reward holds samples on the data through log D (rlhf's realism term).
    R1 flattens D exactly there, and on ring8 a fine-tune with the preset's R1 0.1 lost
    its modes (0.5% high quality at 10,000 steps, 92% without; bench/rlhf.py)."""
    return cfg.r1 > 0 and any(RULES[rule].reads_d_at_data(cfg.options(rule), cfg.is_2d)
                              for rule in rules)


def fine_tune_config(cfg: TrainConfig, rules) -> tuple[TrainConfig, str | None]:
    """(cfg with today's default options for `rules` and, where drops_r1, R1 off for
    every arm alike; a note for the log or None)."""
    names = [rule.split(":")[0] for rule in rules]
    cfg = cfg.fresh_options(*names)
    if drops_r1(cfg, names):
        return cfg.replace(r1=0.0), R1_OFF
    return cfg, None
