"""``skynet``: the picture for someone on the host, and the admin actions.

``skynet status`` reads the database directly (``SKYNET_DATABASE_URL``) through the same
queries as ``/v1/status`` and ``/v1/transfers`` — no API token needed, and it works while the
API is down; with ``SKYNET_AMQP_URL`` it adds queue depths. ``skynet requeue-dead``,
``skynet rescan`` and ``skynet retry`` talk to the broker (``SKYNET_AMQP_URL``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from urllib.parse import urlsplit

from skynet.api import queries
from skynet.api.broker import QueueMonitor, dead_letters
from skynet.api.db import Database
from skynet.api.models import Status, Transfer
from skynet.common import admin
from skynet.common.errors import SkynetError
from skynet.common.messages import SOURCE_PATTERN


def _env(name: str, required: bool = True) -> str | None:
    value = os.environ.get(name) or None
    if required and value is None:
        raise SystemExit(f"skynet: {name} is not set")
    return value


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def _shown(text: str | None) -> str:
    """``text`` safe for a terminal: a control character in a file name (a newline, an escape
    sequence, which the watcher refuses but whose failure is listed) is shown escaped, never
    sent to the terminal as it is."""
    if text is None:
        return ""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def render(st: Status, transfers: list[Transfer]) -> str:
    lines = [f"skynet status at {st.generated_at:%Y-%m-%d %H:%M:%S} UTC", ""]
    if not st.notifier_alive:
        seen = f"since {st.notifier_seen_at:%Y-%m-%d %H:%M:%S} UTC" if st.notifier_seen_at else "ever"
        lines += [
            f"! no notifier is storing events ({seen}): what follows is as of then, workers included;",
            "  the events wait in the skynet.events queue until a notifier runs",
            "",
        ]
    lines.append(f"files: {st.files_total}")
    for state, n in sorted(st.files.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {state:<10} {n:>10}")
    for source, states in sorted(st.sources.items()):
        lines.append(f"  [{source}] " + ", ".join(f"{s} {n}" for s, n in sorted(states.items())))
    d = st.done_last_minute
    lines.append(f"last minute: {d.files} files, {_human(d.bytes)}")
    if st.oldest_pending:
        o = st.oldest_pending
        lines.append(f"oldest pending: {o.source}:{_shown(o.path)} ({o.state}, {o.age_s:.0f}s)")
    for c in st.target_conflicts:
        lines += [
            f"! sources {_shown(c.sources[0])} and {_shown(c.sources[1])} send to the same place"
            f" ({_shown(c.targets[0])}, {_shown(c.targets[1])}): they overwrite each other's files, and in"
            " mirror mode a full rescan of one deletes the other's; give each source its own target",
            "",
        ]
    for doubled in st.watcher_conflicts:
        names = ", ".join(_shown(n) for n in doubled.watchers)
        lines += [
            f"! source {_shown(doubled.source)} has {len(doubled.watchers)} watchers ({names}):"
            " one watcher per source; each sends actions for its own folder to the uploaders of both",
            "",
        ]
    lines.append(f"workers alive: {st.workers_alive}")
    for w in st.workers_impeded:
        since = f" (since {w.since:%H:%M:%S} UTC)" if w.since else ""
        lines.append(f"  ! {_shown(w.worker)} ({w.role}, {w.source}){since}: {_shown(w.condition)}")
    if st.queues is not None:
        lines.append(f"queues (dead letters: {st.dead_letters}):")
        for name, depth in sorted(st.queues.items()):
            lines.append(f"  {name:<32} {'-' if depth is None else depth:>8}")
    elif st.broker_error:
        lines.append(f"queues: {st.broker_error}")
    lines.append(f"active transfers: {len(transfers)}")
    for t in transfers[:50]:
        pct = f"{t.percent:5.1f}%" if t.percent is not None else "    ?"
        eta = f"eta {t.eta_s:.0f}s" if t.eta_s is not None else ""
        lines.append(f"  {pct} {t.source}:{_shown(t.path)} {_human(t.bytes_done)} {eta} {_shown(t.worker)}".rstrip())
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    url = _env("SKYNET_DATABASE_URL")
    assert url is not None
    if urlsplit(url).scheme not in ("postgres", "postgresql"):
        raise SystemExit("skynet: SKYNET_DATABASE_URL must be a postgresql:// URL")
    db = Database(url, pool_size=1)
    try:
        st = db.run(queries.status, source=args.source)
        transfers = db.run(queries.active_transfers, source=args.source)
    finally:
        db.close()
    amqp = _env("SKYNET_AMQP_URL", required=False)
    if amqp:
        depths, error = QueueMonitor(amqp, 0).depths([args.source] if args.source else st.sources)
        update = {"queues": depths, "broker_error": error, "dead_letters": dead_letters(depths) if depths else None}
        st = st.model_copy(update=update)
    if args.json:
        out = {"status": st.model_dump(mode="json"), "transfers": [t.model_dump(mode="json") for t in transfers]}
        print(json.dumps(out, indent=2))
    else:
        print(render(st, transfers))
    return 0


def cmd_requeue(args: argparse.Namespace) -> int:
    moved = admin.requeue_dead(str(_env("SKYNET_AMQP_URL")), args.source, args.limit)
    print(f"requeued {moved} dead messages of {args.source}")
    return 0


def cmd_rescan(args: argparse.Namespace) -> int:
    admin.request_rescan(str(_env("SKYNET_AMQP_URL")), args.source, full=args.full)
    kind = "full rescan (every file checked on the remote)" if args.full else "rescan"
    print(f"{kind} requested for {args.source}")
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    admin.release_held(str(_env("SKYNET_AMQP_URL")), args.source)
    print(f"release of held deletes requested for {args.source}")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    action = admin.retry_path(str(_env("SKYNET_AMQP_URL")), args.source, args.path)
    print(f"retry of {args.path} requested (action {action})")
    return 0


def _source(value: str) -> str:
    import re

    if not re.match(SOURCE_PATTERN, value):
        raise argparse.ArgumentTypeError(f"invalid source name {value!r}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skynet", description="skynet: status and admin actions")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("status", help="files per state, throughput, queues and active transfers")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--source", type=_source, default=None, help="only this source")
    s.set_defaults(fn=cmd_status)
    r = sub.add_parser("requeue-dead", help="move a source's dead-letter messages back to work")
    r.add_argument("--source", required=True, type=_source)
    r.add_argument("--limit", type=int, default=None)
    r.set_defaults(fn=cmd_requeue)
    c = sub.add_parser("rescan", help="ask the watcher of a source to rescan its folder")
    c.add_argument("--source", required=True, type=_source)
    c.add_argument(
        "--full",
        action="store_true",
        help="also check every file already sent against the remote (one stat / HEAD each) and send what is"
        " missing or different there: for a remote changed or emptied behind skynet's back",
    )
    c.set_defaults(fn=cmd_rescan)
    h = sub.add_parser("release-held", help="apply the deletes a watcher's safety rules held back")
    h.add_argument("--source", required=True, type=_source)
    h.set_defaults(fn=cmd_release)
    t = sub.add_parser("retry", help="upload one file again now")
    t.add_argument("--source", required=True, type=_source)
    t.add_argument("--path", required=True)
    t.set_defaults(fn=cmd_retry)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.fn(args)
        return code
    except SkynetError as exc:
        print(f"skynet: {exc.reason}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
