"""A link that reproduces a run (as TensorFlow Playground keeps its state in the URL):
the run's whole config, seed included, compressed into one query parameter. Opening it
on the Train page offers that run, checked like any config; a bad or hostile value gets
the config's own message and starts nothing."""
from __future__ import annotations

import base64
import json
import zlib
from urllib.parse import urlsplit

import streamlit as st

from core.base.validate import ConfigError
from core.engine.config import TrainConfig
from ui.text import code, plain

PARAM = "config"
MAX_TOKEN = 8_000        # characters; a full config is well under 1,000
MAX_JSON = 64_000        # bytes once inflated (a zip bomb stops here)


def token(cfg: TrainConfig) -> str:
    raw = json.dumps(cfg.to_dict(), separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(zlib.compress(raw, 9)).decode().rstrip("=")


def config_of(text: str) -> TrainConfig:
    """The config a token holds; ConfigError (one line, saying what is wrong) if none."""
    if not isinstance(text, str) or not text or len(text) > MAX_TOKEN:
        raise ConfigError(f"the link's config is {len(text or ''):,} characters long; a "
                          f"shared config has 1 to {MAX_TOKEN:,}")
    try:
        packed = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        inflate = zlib.decompressobj()
        raw = inflate.decompress(packed, MAX_JSON)
        if inflate.unconsumed_tail:
            raise ValueError(f"it inflates past {MAX_JSON:,} bytes")
        settings = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, zlib.error, RecursionError) as exc:
        raise ConfigError(f"the link's config cannot be read ({str(exc)[:80]}); copy the "
                          "link again from the run's page") from None
    return TrainConfig.from_dict(settings)


def _no_constant(name: str):
    raise ValueError(f"{name} is not allowed")


def link(cfg: TrainConfig) -> str:
    """This server's Train page with the run's config in the URL."""
    here = urlsplit(st.context.url or "")
    base = f"{here.scheme}://{here.netloc}" if here.netloc else ""
    return f"{base}/?{PARAM}={token(cfg)}"


def copy_button(cfg: TrainConfig, where=st) -> None:
    with where.popover("Copy link", icon=":material/link:",
                       help="A link that opens the Train page ready to start this run "
                            "again: every setting and the seed"):
        st.code(link(cfg), language=None, wrap_lines=True)
        st.caption("Same seed and settings = the same run on CPU.")


def offer(start) -> None:
    """On the Train page without a run: the run a link carries, with one click to start
    it (start(cfg)); a link that is not valid says why."""
    text = st.query_params.get(PARAM)
    if not text:
        return
    try:
        cfg = config_of(text)
    except ConfigError as exc:
        st.error(plain(f"This link does not hold a valid run: {exc}"), icon=":material/error:")
        return
    with st.container(border=True, key="shared_run"):
        length = f"{cfg.steps:,} steps" if cfg.steps else "until stopped"
        st.markdown(f"**A shared run**: {code(cfg.data)}, rule {code(cfg.rule)}, seed "
                    f"{cfg.seed}, batch {cfg.batch_size}, G lr {cfg.g_opt.lr:g}, {length}")
        if st.button("Start this run", type="primary", key="btn_start_shared"):
            del st.query_params[PARAM]
            start(cfg)
            st.rerun()
