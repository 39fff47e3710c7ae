"""Tags of token classification: their schemes, the entities they mark, and entity-level scores.

A tag is ``O`` or a prefix and an entity type, ``B-PER``. Three schemes are read as they are:

    IOB1   I-X inside an entity; B-X only where an X entity directly follows another X entity
    IOB2   B-X begins every entity, I-X continues it (the Hugging Face datasets' and seqeval's usual scheme)
    BIOES  B-X begins, I-X continues, E-X ends a longer entity; S-X is an entity of one word

Entities come from ``seqeval``: in its default mode (conlleval's rules, which read every scheme above) and in its
strict mode (each sequence read by the rules of its own scheme, so an I- tag its scheme does not allow where it
stands starts no entity). Tags without prefixes (part-of-speech tags, say) have no scheme: every word that is not
``O`` is an entity of one word, typed by its tag.
"""

from __future__ import annotations

from typing import Optional, Sequence

from ..metrics import PER_TYPE

OUTSIDE = "O"
PREFIXES = "BIES"  # B-, I-, E-, S-
ORDER = {"B": 0, "I": 1, "E": 2, "S": 3}  # the order of one type's tags in the label set


def split_tag(tag: str) -> tuple[str, str]:
    """(prefix, type): ``B-PER`` -> (B, PER); ``O`` -> (O, ""); a tag without a prefix -> ("", tag)."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    if len(tag) > 2 and tag[0] in PREFIXES and tag[1] == "-":
        return tag[0], tag[2:]
    return "", tag


def has_scheme(tags: Sequence[str]) -> bool:
    """Whether every tag is ``O`` or a prefixed entity tag (else the tags have no scheme)."""
    return all(split_tag(t)[0] for t in tags)


def label_order(names: set[str]) -> list[str]:
    """The label set in id order: O first, then each entity type's B, I, E, S tags; tags without a prefix last,
    sorted."""
    def key(name: str) -> tuple:
        prefix, kind = split_tag(name)
        if prefix == OUTSIDE:
            return (0, "", 0)
        return (1, kind, ORDER[prefix]) if prefix else (2, kind, 0)
    return sorted(names, key=key)


def detect_scheme(sequences: Sequence[Sequence[str]]) -> Optional[str]:
    """The scheme the sequences are written in, or None when their tags have no scheme.

    E- or S- tags mean BIOES. Otherwise each entity start is counted: one opened by B- after O or another type
    is IOB2's way, one opened by I- is IOB1's; the more frequent way wins (a few annotation slips do not change
    it), and IOB2 when there is no entity to tell by.
    """
    if not has_scheme({t for seq in sequences for t in seq}):
        return None
    b_starts = i_starts = 0
    for seq in sequences:
        prev_prefix, prev_kind = OUTSIDE, ""
        for tag in seq:
            prefix, kind = split_tag(tag)
            if prefix in "ES":
                return "BIOES"
            starts = not (prev_prefix in "BI" and prev_kind == kind)
            b_starts += prefix == "B" and starts
            i_starts += prefix == "I" and starts
            prev_prefix, prev_kind = prefix, kind
    return "IOB1" if i_starts > b_starts else "IOB2"


def first_invalid(seq: Sequence[str], scheme: str) -> Optional[tuple[int, str]]:
    """The index of the first tag ``scheme`` does not allow where it stands, and why; None when all are allowed."""
    prev_prefix, prev_kind = OUTSIDE, ""
    for k, tag in enumerate(seq):
        prefix, kind = split_tag(tag)
        continues = prev_prefix in "BI" and prev_kind == kind
        if not prefix or (prefix in "ES" and scheme != "BIOES"):
            return k, f"{scheme} has no tag {tag!r}"
        if scheme == "IOB1" and prefix == "B" and not continues:
            return k, f"IOB1 uses B-{kind} only right after another {kind} entity"
        if scheme != "IOB1" and prefix in "IE" and not continues:
            return k, f"{scheme} continues an entity with {prefix}-{kind} only after B-{kind} or I-{kind}"
        if scheme == "BIOES" and prev_prefix in "BI" and not (prefix in "IE" and kind == prev_kind):
            return k, f"BIOES ends {prev_prefix}-{prev_kind} with E-{prev_kind} before {tag!r}"
        prev_prefix, prev_kind = prefix, kind
    if scheme == "BIOES" and prev_prefix in "BI":
        return len(seq) - 1, f"BIOES ends an entity with E-{prev_kind}, not {prev_prefix}-{prev_kind}"
    return None


def spans(seq: Sequence[str], scheme: Optional[str]) -> list[tuple[str, int, int]]:
    """The entities of one sequence as (type, start, end), ``end`` exclusive, by seqeval's default rules."""
    if scheme is None:
        return [(tag, k, k + 1) for k, tag in enumerate(seq) if tag != OUTSIDE]
    from seqeval.metrics.sequence_labeling import get_entities

    return [(kind, start, end + 1) for kind, start, end in get_entities(list(seq))]


def _strict_entities(sequences: list[list[str]], scheme: str) -> set:
    from seqeval.scheme import IOB1, IOB2, IOBES, Entities

    cls = {"IOB1": IOB1, "IOB2": IOB2, "BIOES": IOBES}[scheme]
    return {e.to_tuple() for sent in Entities(sequences, cls).entities for e in sent}  # (sentence, type, start, end)


def _default_entities(sequences: list[list[str]], scheme: Optional[str]) -> set:
    return {(i, kind, start, end) for i, seq in enumerate(sequences) for kind, start, end in spans(seq, scheme)}


def _prf(true: set, pred: set) -> tuple[float, float, float]:
    tp = len(true & pred)
    p = tp / len(pred) if pred else 0.0
    r = tp / len(true) if true else 0.0
    return p, r, 2 * p * r / (p + r) if p + r else 0.0


def scores(gold: list[list[str]], pred: list[list[str]], scheme: Optional[str]) -> dict[str, float]:
    """Entity-level micro precision, recall and F1 in seqeval's default and strict modes, F1 per entity type
    (default mode, ``f1_<TYPE>``) and token accuracy.

    Args:
        gold: the gold tags, one list per sentence; read in the scheme they are written in.
        pred: the predicted tags, read in ``scheme`` (the model's).
        scheme: the model's scheme; None for tags without one.
    """
    true, found = _default_entities(gold, scheme), _default_entities(pred, scheme)
    p, r, f = _prf(true, found)
    out = {"f1": f, "precision": p, "recall": r}
    if scheme is not None:
        # an eval file may be written in another scheme than the training file (IOB1 CoNLL-2003, IOB2 from the Hub)
        sp, sr, sf = _prf(_strict_entities(gold, detect_scheme(gold) or scheme), _strict_entities(pred, scheme))
    else:
        sp, sr, sf = p, r, f
    out.update(strict_f1=sf, strict_precision=sp, strict_recall=sr)
    words = sum(len(seq) for seq in gold)
    out["accuracy"] = sum(a == b for g, q in zip(gold, pred) for a, b in zip(g, q)) / words if words else 0.0
    for kind in sorted({e[1] for e in true | found}):
        out[f"{PER_TYPE}{kind}"] = _prf({e for e in true if e[1] == kind}, {e for e in found if e[1] == kind})[2]
    return out
