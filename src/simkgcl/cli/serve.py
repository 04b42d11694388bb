"""`recommend`, `export` and `serve`: answers from a finished run's artifact."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from simkgcl.cli.options import add_json_option, positive_int
from simkgcl.errors import ConfigError
from simkgcl.serving.limits import ServingLimits

# `simkgcl serve` options that fill ServingLimits (defaults are the dataclass's own).
_LIMIT_OPTIONS = (
    ("--max-batch-users", "max_batch_users", "most users in one POST /v1/recommendations; 422 "
                                             "above"),
    ("--max-results", "max_results", "most rows in one reply, users x k; 422 above"),
    ("--max-body-bytes", "max_body_bytes", "largest request body; 413 above"),
    ("--max-concurrent", "max_concurrent", "requests scoring at once in worker threads; the "
                                           "others wait"),
)


def _port(text: str) -> int:
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"a port is at most 65535, got {value}")
    return value


def _add_index_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--index", choices=["exact", "hnsw", "ivf"], default="exact",
                        help="top-k by exact scoring of every item (default), or an approximate "
                             "faiss index for large catalogues (pip install 'simkgcl[ann]'); "
                             "seen items stay excluded exactly")
    parser.add_argument("--index-effort", type=positive_int, metavar="N",
                        help="efSearch (hnsw, default 256) or nprobe (ivf, default nlist/8): "
                             "higher is slower with better recall (BENCHMARKS.md)")


def _require_index(kind: str) -> None:
    """An approximate index needs faiss: say so before loading anything."""
    if kind != "exact":
        from simkgcl.serving.index import import_faiss

        import_faiss()


def register(sub: argparse._SubParsersAction) -> None:
    rec = sub.add_parser("recommend", help="top-k items for one user",
                         description="Print the top-k items (original ids) for one user, or "
                                     "for a new user given as a list of items (fold-in).")
    rec.add_argument("run_dir", metavar="RUN_DIR", help="a finished run folder (or its artifact/)")
    who = rec.add_mutually_exclusive_group(required=True)
    who.add_argument("--user", metavar="TOKEN", help="original user id")
    who.add_argument("--items", metavar="I1,I2,...",
                     help="item ids of a user the model never saw (comma-separated): fold-in")
    rec.add_argument("--k", type=positive_int, default=20, help="how many items (default 20)")
    rec.add_argument("--include-seen", action="store_true",
                     help="also rank the user's training items (left out by default)")
    rec.add_argument("--explain", action="store_true",
                     help="with each item, the KG paths to the user's history items")
    rec.add_argument("--max-paths", type=positive_int, default=3, metavar="N",
                     help="KG paths per item with --explain (default 3)")
    add_json_option(rec, "the items")
    rec.set_defaults(func=cmd_recommend)

    why = sub.add_parser("explain", help="KG paths between an item and a user's history",
                         description="Why this item for this user? The knowledge-graph paths "
                                     "(up to two entities long) between the item and the user's "
                                     "training items, most relevant history item first.")
    why.add_argument("run_dir", metavar="RUN_DIR")
    why.add_argument("--user", required=True, metavar="TOKEN", help="original user id")
    why.add_argument("--item", required=True, metavar="TOKEN", help="original item id")
    why.add_argument("--max-paths", type=positive_int, default=3, metavar="N",
                     help="most paths shown (default 3)")
    add_json_option(why, "the explanation")
    why.set_defaults(func=cmd_explain)

    exp = sub.add_parser("export", help="top-k for every user to CSV or Parquet",
                         description="Write top-k for every (or each listed) user in long format "
                                     "(user, rank, item, score), streamed in user batches.")
    exp.add_argument("run_dir", metavar="RUN_DIR")
    exp.add_argument("--out", required=True, metavar="FILE", help="output .csv or .parquet")
    exp.add_argument("--k", type=positive_int, default=20, help="items per user (default 20)")
    exp.add_argument("--users", metavar="FILE",
                     help="text file with one user token per line (default: every user)")
    exp.add_argument("--batch-size", type=positive_int, default=1024, metavar="N",
                     help="users scored at once; memory is about N x n_items x 4 bytes "
                          "(default 1024)")
    exp.add_argument("--include-seen", action="store_true",
                     help="also rank users' training items (left out by default)")
    _add_index_option(exp)
    exp.set_defaults(func=cmd_export)

    srv = sub.add_parser("serve", help="HTTP recommendation service (FastAPI)",
                         description="Serve recommendations over HTTP; OpenAPI docs at /docs.")
    srv.add_argument("run_dir", metavar="RUN_DIR")
    srv.add_argument("--host", default="127.0.0.1",
                     help="interface to listen on (default 127.0.0.1: this machine only)")
    srv.add_argument("--port", type=_port, default=8000, help="default 8000")
    for flag, field, text in _LIMIT_OPTIONS:
        default = getattr(ServingLimits, field)
        srv.add_argument(flag, type=positive_int, default=default, metavar="N",
                         help=f"{text} (default {default})")
    _add_index_option(srv)
    srv.add_argument("--log-level", default="info",
                     choices=["critical", "error", "warning", "info", "debug"])
    srv.set_defaults(func=cmd_serve)


def cmd_recommend(args: argparse.Namespace) -> int:
    from simkgcl.serving.recommend import RecommendationService

    service = RecommendationService.from_run_dir(args.run_dir)
    if args.items is not None:
        return _recommend_for_items(service, args)
    items = service.recommend(args.user, args.k, include_seen=args.include_seen)
    history = service.artifact.seen_items(service.user_id(args.user)).numpy()
    explained = _explanations(service, history, items, args)
    if args.json:
        rows = explained or [s.as_dict() for s in items]
        json.dump({"user": args.user, "k": args.k, "include_seen": args.include_seen,
                   "items": rows}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    _print_items(items, explained)
    if len(items) < args.k:
        print(f"(only {len(items)} unseen items for user {args.user})", file=sys.stderr)
    return 0


def _recommend_for_items(service: Any, args: argparse.Namespace) -> int:
    tokens = [t.strip() for t in args.items.split(",") if t.strip()]
    user, items = service.recommend_for_items(tokens, args.k,
                                              include_given=args.include_seen)
    explained = _explanations(service, user.item_ids, items, args)
    if user.unknown:
        print(f"warning: {len(user.unknown)} unknown items ignored: "
              f"{', '.join(user.unknown[:5])}{' ...' if len(user.unknown) > 5 else ''}",
              file=sys.stderr)
    if args.json:
        json.dump({"items_given": len(tokens), "items_known": len(user.item_ids),
                   "unknown_items": user.unknown, "fold_in": user.method, "k": args.k,
                   "include_seen": args.include_seen,
                   "items": explained or [s.as_dict() for s in items]}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    print(f"(new user from {len(user.item_ids)} known items, fold-in: {user.method})",
          file=sys.stderr)
    _print_items(items, explained)
    return 0


def _explanations(service: Any, history: Any, items: list[Any],
                  args: argparse.Namespace) -> list[dict[str, Any]] | None:
    """Items with their KG explanations (``--explain``), else None."""
    if not args.explain:
        return None
    from simkgcl.serving.explain import explained_items

    ids = [service.item_id(s.item) for s in items]
    return explained_items(service.explainer, history, items, ids, args.max_paths)


def _print_explanation(explanation: dict[str, Any], indent: str = "      ") -> None:
    if not explanation["explained"]:
        print(f"{indent}({explanation['note']})")
    for path in explanation["paths"]:
        print(f"{indent}{path['text']}  [relevance {path['relevance']:.3f}]")


def cmd_explain(args: argparse.Namespace) -> int:
    from simkgcl.serving.recommend import RecommendationService

    service = RecommendationService.from_run_dir(args.run_dir)
    explanation = service.explain(args.user, args.item, args.max_paths).as_dict()
    if args.json:
        json.dump({"user": args.user, **explanation}, sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    print(f"item {args.item} for user {args.user}:")
    _print_explanation(explanation, indent="  ")
    return 0


def _print_items(items: list[Any], explained: list[dict[str, Any]] | None = None) -> None:
    width = max([len("item")] + [len(s.item) for s in items])
    print(f"{'rank':>4}  {'item':<{width}}  score")
    for row, s in enumerate(items):
        print(f"{s.rank:>4}  {s.item:<{width}}  {s.score:.6g}")
        if explained is not None:
            _print_explanation(explained[row]["explanation"])


class _Terminated(BaseException):
    """Raised by the SIGTERM handler so that clean-up code runs (not an ``Exception``: nothing
    may swallow it)."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Turn SIGTERM into :class:`_Terminated` while the block runs (main thread only).

    By default SIGTERM ends the process at once, leaving the export's temporary file behind;
    raised as an exception it unwinds through ``atomic_output``, which removes it.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        raise _Terminated(signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def cmd_export(args: argparse.Namespace) -> int:
    from simkgcl.serving.export import export_recommendations, output_format, read_user_list
    from simkgcl.serving.recommend import RecommendationService

    output_format(args.out)  # refuse a bad extension or target before loading anything
    _require_index(args.index)
    service = RecommendationService.from_run_dir(args.run_dir, index=args.index,
                                                 effort=args.index_effort)
    user_ids = read_user_list(args.users, service) if args.users else None
    try:
        with _sigterm_raises():
            summary = export_recommendations(service, args.out, k=args.k, user_ids=user_ids,
                                             batch_size=args.batch_size,
                                             include_seen=args.include_seen)
    except _Terminated:
        print(f"error: export stopped by SIGTERM; {args.out} left as it was", file=sys.stderr)
        return 128 + signal.SIGTERM
    note = (f"; {summary.short_users} users had fewer than {summary.k} unseen items"
            if summary.short_users else "")
    print(f"wrote {summary.n_rows} rows ({summary.n_users} users, k={summary.k}) to "
          f"{summary.path} [{summary.format}]{note}", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from simkgcl.serving.app import require_serving_deps, serve
    from simkgcl.serving.recommend import RecommendationService

    require_serving_deps()
    if not Path(args.run_dir).exists():
        raise ConfigError(f"{args.run_dir}: no such run folder")
    _require_index(args.index)
    service = RecommendationService.from_run_dir(args.run_dir, index=args.index,
                                                 effort=args.index_effort)
    art = service.artifact
    print(f"serving {art.model} on {art.dataset} ({service.n_users} users, {service.n_items} "
          f"items, index {args.index}) at http://{args.host}:{args.port} (docs: /docs)",
          file=sys.stderr)
    limits = ServingLimits(**{field: getattr(args, field) for _, field, _ in _LIMIT_OPTIONS})
    serve(service, host=args.host, port=args.port, log_level=args.log_level, limits=limits)
    return 0
