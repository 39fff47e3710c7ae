"""Datasets from the Hugging Face Hub: ``hub:NAME[:CONFIG]:SPLIT``, read through the ``datasets`` package.

The split becomes the same ``Table`` a local file gives (rows numbered from 1, "row N"), so every
task's checks and one-line errors work unchanged: "hub:nyu-mll/glue:sst2:train, row 7, column
'sentence': empty text". With ``HF_HUB_OFFLINE=1`` (or ``HF_DATASETS_OFFLINE=1``) ``datasets``
answers from its cache only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Optional

from ..errors import DataError, require

if TYPE_CHECKING:
    from .readers import Table

PREFIX = "hub:"
FORM = "hub:NAME[:CONFIG]:SPLIT, e.g. hub:nyu-mll/glue:sst2:train or hub:imdb:train[:2000]"


def is_hub(source: Any) -> bool:
    return isinstance(source, str) and source.startswith(PREFIX)


class HubSource(NamedTuple):
    name: str
    config: Optional[str]
    split: str


def parse_hub(source: str) -> HubSource:
    """``hub:NAME[:CONFIG]:SPLIT`` into its parts; SPLIT may carry datasets' slicing (``train[:1000]``)."""
    head, bracket, rest = source[len(PREFIX):].partition("[")  # a slice may hold ':' itself
    parts = head.split(":")
    if len(parts) not in (2, 3) or not all(p.strip() for p in parts):
        raise DataError(f"{source}: a Hub dataset is named {FORM}")
    return HubSource(parts[0], parts[1] if len(parts) == 3 else None, parts[-1] + bracket + rest)


def _load_split(source: str, src: HubSource):
    datasets = require("datasets", "datasets", f"the Hub dataset {source}")
    try:
        return datasets.load_dataset(src.name, src.config, split=src.split)
    except ConnectionError:  # offline (or no network) and not in the cache
        config = f", {src.config!r}" if src.config else ""
        raise DataError(f"{source}: not in the datasets cache and cannot be downloaded here (offline); on a machine "
                        f"with network run python -c \"import datasets; datasets.load_dataset({src.name!r}{config})\" "
                        "and copy its cache (HF_DATASETS_CACHE), or save the split as a Parquet file and pass "
                        "that") from None
    except Exception as e:  # datasets raises ValueError, FileNotFoundError and its own classes for bad names
        detail = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise DataError(f"{source}: cannot load the Hub dataset ({type(e).__name__}: {detail}); "
                        f"the form is {FORM}") from None


def _column(ds, name: str) -> list[Any]:
    values = ds[name]
    feature = ds.features[name]
    if type(feature).__name__ == "ClassLabel":
        # Label names, as a local file would hold them; -1 is the Hub's "no label" (e.g. GLUE's test splits).
        return [feature.int2str(v) if v is not None and v >= 0 else None for v in values]
    inner = getattr(feature, "feature", None)  # a list of class labels per row: tags (conll2003's ner_tags)
    if type(inner).__name__ == "ClassLabel":
        return [None if row is None else [inner.int2str(v) for v in row] for row in values]
    return list(values)


def read_hub(source: str) -> Table:
    """Read a Hub dataset's split as a ``Table``. Raises ``DataError`` (or ``MissingExtra`` without ``datasets``)."""
    from .readers import Table  # readers imports this module; importing it back at call time keeps no cycle

    ds = _load_split(source, parse_hub(source))
    if ds.num_rows == 0:
        raise DataError(f"{source}: no data rows")
    cols = {name: _column(ds, name) for name in ds.column_names}
    return Table(source, cols, list(range(1, ds.num_rows + 1)), "row")
