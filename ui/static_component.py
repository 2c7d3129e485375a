"""Streamlit custom components (v2) whose script the app serves from static/.

The component's inline script only imports the module: Streamlit would otherwise
re-send a large inline script with every update. The version in the URL (a digest of
the file) makes a browser fetch a changed module.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import streamlit as st

STATIC = Path(__file__).resolve().parents[1] / "static"


def static_component(name: str, script: str):
    """The v2 component `name` drawn by static/<script>'s render(c)."""
    digest = hashlib.sha1((STATIC / script).read_bytes()).hexdigest()[:10]
    js = ("export default async function (c) {\n  const m = await import(new URL("
          f"'app/static/{script}?v={digest}', document.baseURI).href);\n"
          "  return m.render(c);\n}\n")
    return st.components.v2.component(name, js=js)
