"""``pretune portfolio build SEARCH... --output FILE``: a portfolio from a team's own finished searches, for
``search.portfolio=FILE`` (see ``pretune.search.portfolio``)."""

from __future__ import annotations

import argparse
import logging

log = logging.getLogger("pretune")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    b = sub.add_parser("build", help="learn a portfolio from finished searches on other tasks",
                       description="Learn a portfolio from finished searches, one per task: the configurations "
                                   "that together did best across them, in the order a search should try them.")
    b.add_argument("searches", nargs="+", metavar="SEARCH",
                   help="output folders of `pretune search` or `pretune run`, one per task")
    b.add_argument("--output", "-o", required=True, help="the portfolio file to write (JSON)")
    b.add_argument("--size", type=int, default=8, help="entries at most (default 8)")
    b.add_argument("--per-search", type=int, default=3, help="best trials of each search considered (default 3)")


def run(args: argparse.Namespace) -> int:
    from ..search import portfolio

    searches = [portfolio.read_search(s) for s in args.searches]
    entries, how = portfolio.from_searches(searches, size=args.size, per_search=args.per_search)
    how["command"] = " ".join(["pretune portfolio build", *args.searches, "--output", args.output,
                               "--size", str(args.size), "--per-search", str(args.per_search)])
    portfolio.write(args.output, entries, how)
    log.info("portfolio: %d entries from %d searches (%d candidates); mean normalised score of default + "
             "portfolio on those searches %.3f; written to %s", len(entries), len(searches), how["candidates"],
             how["mean_normalised_score"], args.output)
    return 0
