"""Preferences as a dataset other tools read: Parquet in the field's conventions.

One row per compared pair (a best-of-4 click gives 3), with both conventions' columns:
- TRL (preference trainers): `prompt` (the criterion), `chosen`, `rejected`, `tie`;
- Pick-a-Pic: `caption`, `jpg_0`, `jpg_1`, `label_0`, `label_1` (0.5 / 0.5 for a tie);
and the provenance: `judge`, `source` (person or oracle), `time`, `generator`
(fingerprint), `step`, `round`, `data`, `z_0`, `z_1`, and where the pair sits in its
judgement (`judgement`, `k`, `choice`, `index_0`, `index_1`), which makes the import
exact. Images are PNG ({"bytes", "path"}, declared as Image features so that
`datasets.load_dataset("parquet", ...)` decodes them); 2-D points are lists of floats.
A dataset card (README.md) is written beside the file.
"""
from __future__ import annotations

import io
import json
import warnings
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from core.base.files import write_atomic
from core.feedback.preferences import Judgement, PreferenceStore, PreferenceStoreError

MAX_FILE_BYTES = 512 * 2**20     # far above 100,000 digit pairs
MAX_ROWS = 1_000_000
MAX_SIDE = 1024                  # pixels per side of one imported sample image
IMAGE_COLUMNS = ("chosen", "rejected", "jpg_0", "jpg_1")
PROVENANCE = ("judge", "source", "time", "generator", "step", "round", "data", "judgement",
              "k", "choice", "index_0", "index_1", "z_0", "z_1")
COLUMNS = ("prompt", "chosen", "rejected", "tie", "caption", "jpg_0", "jpg_1", "label_0",
           "label_1", *PROVENANCE)


class DatasetFileError(ValueError):
    """The file is not a preference dataset this lab can import; the message says why."""


def _png(pixels: np.ndarray) -> dict:
    image = Image.fromarray(pixels if pixels.ndim == 2 else pixels.transpose(1, 2, 0))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def _cell(sample: np.ndarray):
    return _png(sample) if sample.dtype == np.uint8 else [float(v) for v in sample]


def rows_of(j: Judgement) -> list[dict]:
    """The pairs of one judgement as dataset rows (none for a skip)."""
    out = []
    for i, k, p in j.pairs():
        # jpg_0 is sample i (the left one of a pair, the best one of best-of-k)
        chosen, rejected = (i, k) if p >= 0.5 else (k, i)
        out.append({
            "prompt": j.criterion, "chosen": _cell(j.samples[chosen]),
            "rejected": _cell(j.samples[rejected]), "tie": p == 0.5,
            "caption": j.criterion, "jpg_0": _cell(j.samples[i]), "jpg_1": _cell(j.samples[k]),
            "label_0": float(p), "label_1": float(1 - p),
            "judge": j.judge, "source": "oracle" if j.judge.startswith("oracle:") else "person",
            "time": float(j.time), "generator": j.generator, "step": int(j.step),
            "round": int(j.round), "data": j.data, "judgement": int(j.id),
            "k": int(len(j.samples)), "choice": j.choice, "index_0": int(i), "index_1": int(k),
            "z_0": [float(v) for v in j.z[i]], "z_1": [float(v) for v in j.z[k]]})
    return out


def _schema(is_image: bool) -> pa.Schema:
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    sample = image if is_image else pa.list_(pa.float32())
    types = {"prompt": pa.string(), "tie": pa.bool_(), "caption": pa.string(),
             "label_0": pa.float32(), "label_1": pa.float32(), "judge": pa.string(),
             "source": pa.string(), "time": pa.float64(), "generator": pa.string(),
             "step": pa.int64(), "round": pa.int64(), "data": pa.string(),
             "judgement": pa.int64(), "k": pa.int64(), "choice": pa.string(),
             "index_0": pa.int64(), "index_1": pa.int64(), "z_0": pa.list_(pa.float32()),
             "z_1": pa.list_(pa.float32()), **{c: sample for c in IMAGE_COLUMNS}}
    features = {c: {"_type": "Image"} for c in IMAGE_COLUMNS} if is_image else {}
    # the Hugging Face `datasets` library reads column types from this metadata
    meta = {b"huggingface": json.dumps({"info": {"features": {
        **{c: _feature(types[c]) for c in COLUMNS if c not in features}, **features}}}).encode()}
    return pa.schema([(c, types[c]) for c in COLUMNS], metadata=meta)


def _feature(t: pa.DataType) -> dict:
    if pa.types.is_list(t):
        return {"feature": _feature(t.value_type), "_type": "Sequence"}
    name = {pa.string(): "string", pa.bool_(): "bool", pa.float32(): "float32",
            pa.float64(): "float64", pa.int64(): "int64"}[t]
    return {"dtype": name, "_type": "Value"}


def to_parquet(store: PreferenceStore, data: str, criterion: str | None = None,
               skipped: list[str] | None = None) -> tuple[bytes, list[dict]]:
    """One data set's judged pairs (of one criterion, if given) as Parquet bytes, and
    the rows written; damaged rows are left out and described in `skipped`."""
    judgements = store.judgements(data=data, criterion=criterion, skipped=skipped)
    rows = [row for j in judgements for row in rows_of(j)]
    if not rows:
        raise PreferenceStoreError(f"no judged pairs of {data}"
                                   + (f" under {criterion!r}" if criterion else "")
                                   + ": nothing to export")
    is_image = isinstance(rows[0]["chosen"], dict)
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=_schema(is_image)), buf)
    return buf.getvalue(), rows


def export(store: PreferenceStore, path: str | Path, data: str,
           criterion: str | None = None, skipped: list[str] | None = None) -> tuple[int, Path]:
    """Write the Parquet file and its card (README.md beside it). Returns (pair rows
    written, card path)."""
    raw, rows = to_parquet(store, data, criterion, skipped)
    path = Path(path)
    write_atomic(raw, path)
    card = _card_path(path)
    write_atomic(dataset_card(rows, path.name).encode(), card)
    return len(rows), card


CARD_MARK = "(GAN RL Lab)"


def _card_path(path: Path) -> Path:
    """README.md beside the file (a dataset repository's card), unless a README that
    is not one of ours is already there: then <name>.README.md."""
    card = path.with_name("README.md")
    if card.exists() and CARD_MARK not in card.read_text(errors="replace")[:2000]:
        return path.with_name(f"{path.stem}.README.md")
    return card


def dataset_card(rows: list[dict], file_name: str) -> str:
    """A README in the Hugging Face dataset-card layout: what was judged, by whom, how."""
    criteria = sorted({r["prompt"] for r in rows})
    judges = defaultdict(int)
    for r in rows:
        judges[r["judge"]] += 1
    when = [datetime.fromtimestamp(r["time"], timezone.utc).date().isoformat() for r in rows]
    lines = [
        "---", f"configs:\n- config_name: default\n  data_files: {file_name}",
        "task_categories:\n- image-classification" if isinstance(rows[0]["chosen"], dict)
        else "task_categories:\n- tabular-classification", "---", "",
        f"# Pairwise preferences on {rows[0]['data']} samples {CARD_MARK}", "",
        f"{len(rows):,} compared pairs from {len({r['judgement'] for r in rows}):,} judgements, "
        f"{min(when)} to {max(when)}.", "",
        "## Criterion", "", *[f"- {c!r}" if c else "- (none recorded)" for c in criteria], "",
        "## Judges", "", *[f"- {j}: {n:,} pairs" for j, n in sorted(judges.items())], "",
        "## Columns", "",
        "- TRL: `prompt` (the criterion), `chosen`, `rejected`, `tie` (chosen is then the "
        "left sample).",
        "- Pick-a-Pic: `caption`, `jpg_0`, `jpg_1`, `label_0`, `label_1` (1/0, 0/1 or 0.5/0.5).",
        "- Provenance: `judge`, `source` (person or oracle), `time` (unix seconds), "
        "`generator` (weights fingerprint), `step`, `round` (feedback round), `data`, `z_0`, "
        "`z_1` (the generator's noise), and `judgement`, `k`, `choice`, `index_0`, `index_1` "
        "(where the pair sits in its click: a best-of-4 click gives 3 pairs).",
        "", "## Load", "", "```python", "from datasets import load_dataset",
        f'ds = load_dataset("parquet", data_files="{file_name}")["train"]', "```", "",
        "Import into a lab's preference database: "
        f"`python -m core feedback import {file_name}`.", ""]
    return "\n".join(lines)


# -- import -----------------------------------------------------------------------------------
def read_judgements(path: str | Path) -> list[Judgement]:
    """The judgements a file written by export() holds (bounded and checked: a clear
    DatasetFileError for anything else)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetFileError(f"{path} is not a file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise DatasetFileError(f"{path} is larger than {MAX_FILE_BYTES // 2**20} MB")
    try:
        parquet = pq.ParquetFile(path)
        missing = [c for c in COLUMNS if c not in parquet.schema_arrow.names]
        if missing:
            raise DatasetFileError(f"{path} lacks the column(s) {', '.join(missing)}: export "
                                   "it with GAN RL Lab (python -m core feedback export)")
        if parquet.metadata.num_rows > MAX_ROWS:
            raise DatasetFileError(f"{path} has {parquet.metadata.num_rows:,} rows; at most "
                                   f"{MAX_ROWS:,}")
        rows = parquet.read(columns=list(COLUMNS)).to_pylist()
    except DatasetFileError:
        raise
    except Exception as exc:   # not Parquet, damaged pages, wrong types
        raise DatasetFileError(f"{path} is not a readable Parquet file "
                               f"({type(exc).__name__}: {str(exc)[:120]})") from None
    groups: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        if not isinstance(r["judgement"], int):
            raise DatasetFileError(f"{path}: a row has judgement {r['judgement']!r}; each "
                                   "row names the click it comes from (an integer)")
        groups[r["judgement"]].append(r)
    return [_judgement(g, path) for _, g in sorted(groups.items())]


def _judgement(rows: list[dict], path: Path) -> Judgement:
    first = rows[0]
    where = f"{path}, judgement {first['judgement']}"
    try:
        k = int(first["k"])
        if not 2 <= k <= 4:
            raise ValueError(f"k = {k}")
        # a click's pairs: 1 for a pair, k - 1 for best-of-k, each sample placed once
        places = {(int(r["index_0"]), int(r["index_1"])) for r in rows}
        if len(rows) != (1 if k == 2 else k - 1) or len(places) != len(rows) or any(
                (r["k"], r["choice"]) != (first["k"], first["choice"]) for r in rows):
            raise ValueError(f"its {len(rows)} rows are not the pairs of one click of {k} "
                             "samples (is the judgement column intact?)")
        samples, z = [None] * k, [None] * k
        for r in rows:
            for side in (0, 1):
                i = int(r[f"index_{side}"])
                samples[i] = _sample(r[f"jpg_{side}"])
                z[i] = np.asarray(r[f"z_{side}"], dtype=np.float32)
        return Judgement(samples=np.stack(samples), z=np.stack(z), choice=first["choice"],
                         judge=first["judge"], generator=first["generator"],
                         step=int(first["step"]), data=first["data"], time=float(first["time"]),
                         round=int(first["round"]), criterion=first["prompt"] or "")
    except Exception as exc:
        raise DatasetFileError(f"{where}: {type(exc).__name__}: {str(exc)[:120]}") from None


def _sample(cell) -> np.ndarray:
    if isinstance(cell, dict):   # a PNG: its size is checked before it is decoded
        with warnings.catch_warnings():   # Pillow's bomb warning: an error here, one line
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(cell["bytes"]), formats=["PNG"])
        if max(image.size) > MAX_SIDE:
            raise ValueError(f"an image of {image.size[0]} x {image.size[1]} pixels")
        pixels = np.asarray(image)
        return pixels if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
    return np.asarray(cell, dtype=np.float32)


def import_into(store: PreferenceStore, path: str | Path) -> int:
    """Add a file's judgements to the store (checked like any click; one transaction)."""
    judgements = read_judgements(path)
    store.add_many(judgements)
    return len(judgements)
