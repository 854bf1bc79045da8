"""Operator commands on one APP, straight over the client: ``concurrency``, ``sessions``,
``stop-session``, ``close-all``, ``conversation``, ``avatar create|query`` and ``token``.

The APP is given by ``--app-id`` and one of ``--app-key-file``, ``--app-key-env`` or
``--app-key`` (or the ``DUIX_APP_ID`` / ``DUIX_APP_KEY`` environment variables). No appKey or
token is ever printed, except by ``token``, whose whole purpose is to print one for debugging
with curl.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import anyio
from pydantic import SecretStr

from duixwatch.cli import output, runtime, training
from duixwatch.config import DEFAULT_BASE_URL, DuixSettings
from duixwatch.core import documents, models
from duixwatch.core.clock import SystemClock
from duixwatch.duix import DuixClient
from duixwatch.duix.auth import mint_token
from duixwatch.export.status import format_age

__all__ = ["add_commands"]


def credentials(args: argparse.Namespace) -> models.AppCredentials:
    app_id = args.app_id or os.environ.get("DUIX_APP_ID")
    if not app_id:
        raise runtime.UsageError("no app id: pass --app-id or set DUIX_APP_ID")
    key: str | None
    if args.app_key_file:
        path = Path(args.app_key_file)
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise runtime.UsageError(f"--app-key-file {path}: {exc.strerror or exc}") from None
        source = f"--app-key-file {path}"
    elif args.app_key_env:
        key = os.environ.get(args.app_key_env)
        source = f"--app-key-env {args.app_key_env}"
        if key is None:
            raise runtime.UsageError(f"{source}: the variable is not set")
    elif args.app_key:
        key, source = args.app_key, "--app-key"
    else:
        key, source = os.environ.get("DUIX_APP_KEY") or None, "DUIX_APP_KEY"
        if key is None:
            raise runtime.UsageError(
                "no appKey: pass --app-key-file PATH or --app-key-env VAR, or set DUIX_APP_KEY"
            )
    if not key:
        raise runtime.UsageError(f"{source}: the appKey is empty")
    return models.AppCredentials(app_id=str(app_id), app_key=SecretStr(key))


def _duix_settings(args: argparse.Namespace) -> DuixSettings:
    values: dict[str, Any] = {"base_url": args.base_url}
    # With --wait, --timeout bounds the whole wait (the training), not each request.
    if args.timeout is not None and not getattr(args, "wait", False):
        values["request_timeout_seconds"] = args.timeout
    if args.timezone is not None:
        values["timezone"] = args.timezone
    try:
        return DuixSettings(**values)
    except ValueError as exc:
        raise runtime.UsageError(str(exc).splitlines()[-1] if str(exc) else "bad option") from None


def add_app_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("APP and platform")
    group.add_argument("--app-id", help="the APP's appId (default: $DUIX_APP_ID)")
    group.add_argument(
        "--app-key-file", metavar="PATH", help="read the appKey from this file (recommended)"
    )
    group.add_argument(
        "--app-key-env", metavar="VAR", help="read the appKey from this environment variable"
    )
    group.add_argument(
        "--app-key",
        metavar="KEY",
        help="the appKey itself (visible to other users in the process list; "
        "prefer --app-key-file; default: $DUIX_APP_KEY)",
    )
    group.add_argument(
        "--base-url",
        default=os.environ.get("DUIX_BASE_URL", DEFAULT_BASE_URL),
        help="platform URL (default: $DUIX_BASE_URL or %(default)s)",
    )
    group.add_argument(
        "--timeout",
        type=float,
        help="request timeout in seconds (default 10); with avatar --wait, the most to wait "
        "for the training (default 3600)",
    )
    group.add_argument(
        "--timezone", help="zone of zone-less session start times (default Asia/Shanghai)"
    )
    parser.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="output format"
    )


Handler = Callable[[argparse.Namespace, DuixClient, models.AppCredentials, TextIO], Awaitable[int]]


async def _cmd_concurrency(
    args: argparse.Namespace, client: DuixClient, app: models.AppCredentials, out: TextIO
) -> int:
    numbers = await client.concurrency(app)
    if args.output == "json":
        output.print_json({"app_id": app.app_id, **output.jsonable(numbers)}, out)
    else:
        output.print_table(
            ("APP ID", "CORP ID", "TOTAL CONCURRENT", "USER CONCURRENT"),
            [
                (
                    app.app_id,
                    numbers.corp_id,
                    numbers.total_concurrent_number,
                    numbers.user_concurrent_number,
                )
            ],
            out,
        )
    return runtime.EXIT_OK


async def _cmd_sessions(
    args: argparse.Namespace, client: DuixClient, app: models.AppCredentials, out: TextIO
) -> int:
    listing = await client.sessions(app)
    now = SystemClock().now()
    if args.output == "json":
        output.print_json(
            {
                "app_id": app.app_id,
                "count": len(listing),
                "total": listing.total,
                "shape": listing.shape,
                "sessions": [
                    {
                        "session_id": s.session_id,
                        "started_at": s.started_at.isoformat() if s.started_at else None,
                        "age_seconds": None if (a := s.age_seconds(now)) is None else round(a, 3),
                        "actionable": s.actionable,
                    }
                    for s in listing.sessions
                ],
            },
            out,
        )
        return runtime.EXIT_OK
    output.print_table(
        ("SESSION ID", "STARTED AT (UTC)", "AGE"),
        [
            (
                s.session_id or "(no id: never acted on)",
                s.started_at.isoformat() if s.started_at else "?",
                format_age(s.age_seconds(now)),
            )
            for s in listing.sessions
        ],
        out,
    )
    out.write(f"{len(listing)} session(s) in call; read as {listing.shape}\n")
    return runtime.EXIT_OK


async def _cmd_stop_session(
    args: argparse.Namespace, client: DuixClient, app: models.AppCredentials, out: TextIO
) -> int:
    result = await client.stop_session(app, args.session_id)
    if args.output == "json":
        output.print_json({"app_id": app.app_id, **output.jsonable(result)}, out)
    else:
        out.write(f"session {result.session_id}: {result.outcome.replace('_', ' ')}\n")
    return runtime.EXIT_OK


async def _cmd_close_all(
    args: argparse.Namespace, client: DuixClient, app: models.AppCredentials, out: TextIO
) -> int:
    if not args.yes:
        raise runtime.UsageError(
            "refusing to close every session of the APP without --yes (this ends every live call)"
        )
    result = await client.close_all(app)
    if args.output == "json":
        output.print_json({"app_id": result.app_id, "closed": True, "data": result.data}, out)
    else:
        out.write(f"app {result.app_id}: every session closed (platform answered {result.data})\n")
    return runtime.EXIT_OK


async def _cmd_conversation(
    args: argparse.Namespace, client: DuixClient, app: models.AppCredentials, out: TextIO
) -> int:
    conv = await client.conversation(app, args.conversation_id)
    if args.output == "json":
        output.print_json(conv.model_dump(by_alias=True, mode="json"), out)
        return runtime.EXIT_OK
    detail = conv.detail_dto
    background = detail.background_dto if detail else None
    rows = [
        ("id", conv.id),
        ("name", conv.conversation_name),
        ("language", conv.language),
        ("model", f"{detail.model_name} ({detail.model_id})" if detail else None),
        (
            "model type",
            {"0": "cloud", "1": "local"}.get(detail.model_id_type or "", "?") if detail else None,
        ),
        ("background", background.background_url if background else None),
        ("tts speaker", detail.tts_speaker if detail else None),
        ("scripts", len(conv.script_dto_list)),
    ]
    output.print_table(("FIELD", "VALUE"), rows, out)
    return runtime.EXIT_OK


async def _cmd_avatar_create(
    args: argparse.Namespace, client: DuixClient, app: models.AppCredentials, out: TextIO
) -> int:
    spec = documents.AvatarSpec(
        custom_type=1 if args.video_url else 2,
        avatar_name=args.name,
        gender=args.gender,
        profile=args.profile,
        template_video=args.video_url,
        cover_url=args.photo_url,
        audio_url=args.audio_url,
        tts_speaker=args.tts_speaker,
    )
    created = await client.create_avatar(app, spec)
    if args.wait:
        if args.output != "json":
            out.write(f"avatar {created.avatar_id}: training started\n")
        return await _wait(args, client, app, created.avatar_id, out)
    if args.output == "json":
        output.print_json(output.jsonable(created), out)
    else:
        out.write(f"avatar {created.avatar_id}: training started\n")
    return runtime.EXIT_OK


async def _wait(
    args: argparse.Namespace,
    client: DuixClient,
    app: models.AppCredentials,
    avatar_id: str,
    out: TextIO,
) -> int:
    """``--wait``: until the training ends (0 succeeded, 1 failed, 124 timed out)."""
    avatar, waited = await training.wait(
        client,
        app,
        avatar_id,
        clock=SystemClock(),
        timeout=args.timeout if args.timeout is not None else DEFAULT_WAIT_SECONDS,
        interval=args.interval,
        progress=training.progress_for(out, output=args.output),
    )
    code = (
        training.EXIT_TIMEOUT
        if avatar is None
        else (runtime.EXIT_OK if avatar.status == "success" else runtime.EXIT_FAILURE)
    )
    if args.output == "json":
        result: dict[str, Any] = {
            "avatar_id": avatar_id,
            "timed_out": avatar is None,
            "waited_seconds": round(waited, 3),
            "avatar": output.jsonable(avatar) if avatar is not None else None,
        }
        output.print_json(result, out)
    elif avatar is None:
        out.write(f"avatar {avatar_id}: still training after {format_age(waited)} (--timeout)\n")
    elif avatar.status == "success":
        default = (
            f"; default conversation {avatar.default_conversation_id}"
            if avatar.default_conversation_id
            else ""
        )
        out.write(f"avatar {avatar_id}: training succeeded after {format_age(waited)}{default}\n")
    else:
        out.write(
            f"avatar {avatar_id}: training failed after {format_age(waited)}: "
            f"{avatar.reason or 'the platform gave no reason'}\n"
        )
    return code


async def _cmd_avatar_query(
    args: argparse.Namespace, client: DuixClient, app: models.AppCredentials, out: TextIO
) -> int:
    if args.wait:
        return await _wait(args, client, app, args.avatar_id, out)
    avatar = await client.query_avatar(app, args.avatar_id)
    if args.output == "json":
        output.print_json(output.jsonable(avatar), out)
    else:
        output.print_table(
            ("AVATAR ID", "NAME", "STATUS", "DEFAULT CONVERSATION", "REASON"),
            [
                (
                    avatar.avatar_id,
                    avatar.name,
                    avatar.status,
                    avatar.default_conversation_id,
                    avatar.reason,
                )
            ],
            out,
        )
    return runtime.EXIT_OK


def _cmd_token(args: argparse.Namespace, out: TextIO) -> int:
    app = credentials(args)
    now = SystemClock().now()
    token = mint_token(app.app_id, app.app_key, now=now, ttl_seconds=args.ttl)
    if args.output == "json":
        expires = datetime.fromtimestamp(int(now.timestamp()) + args.ttl, tz=now.tzinfo)
        output.print_json(
            {
                "app_id": app.app_id,
                "token": token.get_secret_value(),
                "expires_at": expires.isoformat(),
            },
            out,
        )
    else:
        out.write(token.get_secret_value() + "\n")
    return runtime.EXIT_OK


def _run_client_command(handler: Handler, args: argparse.Namespace, out: TextIO) -> int:
    app = credentials(args)
    config = _duix_settings(args)

    async def go() -> int:
        async with DuixClient(config, clock=SystemClock()) as client:
            return await handler(args, client, app, out)

    return anyio.run(go)


def _with_client(handler: Handler) -> runtime.Run:
    """A command that runs ``handler`` with a client and the APP's credentials."""

    def run(args: argparse.Namespace, out: TextIO) -> int:
        return _run_client_command(handler, args, out)

    return run


#: ``--wait`` without ``--timeout`` waits at most this long.
DEFAULT_WAIT_SECONDS = 3600.0


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be above 0")
    return value


def _add_wait_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait until the training succeeds (exit 0) or fails (exit 1); --timeout then "
        "bounds the wait (default 3600 s; exit 124 when it passes)",
    )
    p.add_argument(
        "--interval",
        type=_positive,
        default=5.0,
        help="with --wait: seconds between two queries (default 5)",
    )


def add_commands(command: runtime.AddCommand) -> None:
    """Add this group's subcommands to the ``duixwatch`` grammar."""
    p = command("concurrency", "show the APP's live concurrency (getconcurrentNumber)")
    add_app_options(p)
    p.set_defaults(run=_with_client(_cmd_concurrency))

    p = command("sessions", "list the APP's in-call sessions with their ages (getconcurrentList)")
    add_app_options(p)
    p.set_defaults(run=_with_client(_cmd_sessions))

    p = command("stop-session", "close one session (sessionStop)")
    p.add_argument("session_id", metavar="UUID", help="the sessionId to close")
    add_app_options(p)
    p.set_defaults(run=_with_client(_cmd_stop_session))

    p = command(
        "close-all", "close EVERY session of the APP (distroyCallSessionsByAppId); needs --yes"
    )
    p.add_argument("--yes", action="store_true", help="confirm: end every session of the APP")
    add_app_options(p)
    p.set_defaults(run=_with_client(_cmd_close_all))

    p = command("conversation", "show a conversation's configuration (getConversationById)")
    p.add_argument("conversation_id", metavar="ID")
    add_app_options(p)
    p.set_defaults(run=_with_client(_cmd_conversation))

    avatar = command("avatar", "create an avatar or query its training status")
    avatar_sub = avatar.add_subparsers(dest="avatar_command", required=True, metavar="ACTION")
    p = avatar_sub.add_parser("create", help="start training an avatar (createAvatar)")
    p.add_argument("--name", required=True, help="avatar name")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--video-url", help="train with this video (mp4/MOV, 10 s to 1 min)")
    source.add_argument("--photo-url", help="train with this photo (jpg/png, up to 10 MB)")
    p.add_argument("--audio-url", help="voice sample")
    p.add_argument("--gender", choices=("male", "female", "other"))
    p.add_argument("--profile", help="profile; creates a default conversation after training")
    p.add_argument("--tts-speaker", help="voice")
    _add_wait_options(p)
    add_app_options(p)
    p.set_defaults(run=_with_client(_cmd_avatar_create))
    p = avatar_sub.add_parser("query", help="show an avatar's training status (queryAvatar)")
    p.add_argument("avatar_id", metavar="ID")
    _add_wait_options(p)
    add_app_options(p)
    p.set_defaults(run=_with_client(_cmd_avatar_query))

    p = command("token", "print a signed request token, for debugging with curl")
    p.add_argument(
        "--ttl", type=int, default=1800, help="lifetime in seconds (default %(default)s)"
    )
    add_app_options(p)
    p.set_defaults(run=_cmd_token)
