"""``duixwatch dialog check URL``: the dialog contract test an engineer runs before go-live.

It asks the backend the way DUIX does (:mod:`duixwatch.dialog.exchange`), prints one line per
rule (PASS / FAIL / WARN and why) and a summary with the timings against the budget, or the
whole report with ``-o json``. Exit 0 conformant, 1 not, 2 usage. Header values and the URL's
path and query are never printed (either may be the credential).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

from duixwatch.cli import output, runtime
from duixwatch.core.fields import header_name, header_value, redact_url
from duixwatch.dialog import contract
from duixwatch.dialog.exchange import Report, Target, check, new_client
from duixwatch.dialog.schema import DEFAULT_BUDGET_SECONDS, ClientTLS

__all__ = ["add_commands", "parse_header", "report_json"]


def parse_header(text: str) -> tuple[str, str]:
    """``Name: value`` (raises ValueError without quoting the value)."""
    name, colon, value = text.partition(":")
    name = name.strip()
    if not colon:
        raise ValueError("expected 'Name: value'")
    try:
        header_name(name)
        header_value(value)
    except ValueError:
        raise ValueError("not a valid 'Name: value' header") from None
    return name, value.strip()


def _headers(args: argparse.Namespace) -> dict[str, str]:
    lines: list[tuple[str, str]] = []
    for given in args.header or ():
        try:
            lines.append(parse_header(given))
        except ValueError as exc:
            raise runtime.UsageError(f"-H: {exc}") from None
    if args.headers_file is not None:
        path = Path(args.headers_file)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as exc:
            reason = getattr(exc, "strerror", None) or type(exc).__name__
            raise runtime.UsageError(f"--headers-file {path}: cannot read: {reason}") from None
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip() and not line.lstrip().startswith("#"):
                try:
                    lines.append(parse_header(line))
                except ValueError as exc:
                    raise runtime.UsageError(f"--headers-file {path}:{number}: {exc}") from None
    headers: dict[str, str] = {}
    for name, value in lines:
        if name.lower() in {n.lower() for n in headers}:
            raise runtime.UsageError(f"header {name!r} is given twice")
        headers[name] = value
    return headers


def _target(args: argparse.Namespace) -> Target:
    parts = urlsplit(args.url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise runtime.UsageError("URL must be an http:// or https:// URL with a host")
    if args.budget_seconds <= 0:
        raise runtime.UsageError("--budget-seconds must be above 0")
    timeout = args.timeout_seconds if args.timeout_seconds is not None else args.budget_seconds
    if timeout <= 0:
        raise runtime.UsageError("--timeout-seconds must be above 0")
    return Target(
        url=args.url,
        mode=args.mode,
        headers=_headers(args),
        sid=args.sid,
        dh_code=args.dh_code,
        conversation_id=args.conversation_id,
        budget_seconds=args.budget_seconds,
        timeout_seconds=timeout,
        server_name=args.server_name,
    )


def _verify(args: argparse.Namespace) -> Any:
    tls = ClientTLS(
        ca_file=args.ca_file,
        cert_file=args.cert_file,
        key_file=args.key_file,
        insecure_skip_verify=args.insecure_skip_verify,
    )
    if tls == ClientTLS():
        return True
    try:
        return tls.ssl_context()
    except OSError as exc:
        raise runtime.UsageError(f"TLS files: {exc.strerror or exc}") from None
    except ValueError as exc:  # ssl.SSLError is an OSError; pydantic's are ValueErrors
        raise runtime.UsageError(f"TLS options: {exc}") from None


def report_json(report: Report, target: Target) -> dict[str, Any]:
    """The report as ``-o json`` prints it."""
    first = report.asked[0] if report.asked else None
    timings = (
        {
            "first_byte_seconds": first.exchange.first_byte,
            "first_answer_seconds": first.outcome.first_answer,
            "total_seconds": first.outcome.total,
        }
        if first
        else {}
    )
    return {
        "url_host": redact_url(target.url),
        "conformant": report.conformant,
        "mode": _mode_used(report, target),
        "budget_seconds": target.budget_seconds,
        "failure_reason": report.failure_reason,
        "timings": timings,
        "questions": [
            {
                "question": a.question,
                "answer": a.outcome.answer,
                "chunks": a.outcome.chunks,
                "status": a.exchange.status,
                "failure_reason": a.failure_reason,
                "timings": {
                    "first_byte_seconds": a.exchange.first_byte,
                    "first_answer_seconds": a.outcome.first_answer,
                    "total_seconds": a.outcome.total,
                },
                "rules": [output.jsonable(r) for r in a.outcome.rules],
            }
            for a in report.asked
        ],
        "rules": [output.jsonable(r) for r in report.rules],
    }


def _mode_used(report: Report, target: Target) -> str:
    if target.mode != "auto" or not report.asked:
        return target.mode
    exchange = report.asked[0].exchange
    said = contract.mode_of(exchange.content_type)
    return said or ("stream" if exchange.framing else "json")


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}s"


def _print_text(report: Report, target: Target, out: TextIO) -> None:
    out.write(f"dialog check {redact_url(target.url)} (mode {_mode_used(report, target)})\n")
    many = len(report.asked) > 1
    for index, asked in enumerate(report.asked, 1):
        if many:
            out.write(f"question {index}: {asked.question!r}\n")
        for rule in asked.outcome.rules:
            out.write(f"{rule.verdict:<4}  {rule.rule}: {rule.detail}\n")
    for rule in report.strict:
        out.write(f"{rule.verdict:<4}  {rule.rule}: {rule.detail}\n")
    rules = report.rules
    counts = {v: sum(1 for r in rules if r.verdict == v) for v in ("PASS", "FAIL", "WARN")}
    for index, asked in enumerate(report.asked, 1):
        label = f"question {index}" if many else "timing"
        out.write(
            f"{label}: first byte {_seconds(asked.exchange.first_byte)}, first answer "
            f"{_seconds(asked.outcome.first_answer)}, end {_seconds(asked.outcome.total)} "
            f"(budget {target.budget_seconds:g}s)\n"
        )
    verdict = "CONFORMANT" if report.conformant else f"NOT CONFORMANT ({report.failure_reason})"
    out.write(
        f"{verdict}: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['WARN']} warnings\n"
    )


def _cmd_check(args: argparse.Namespace, out: TextIO) -> int:
    target = _target(args)
    verify = _verify(args)
    questions = args.question or ["Hello, what can you do?"]
    result: list[Report] = []

    async def main() -> None:
        async with new_client(verify=verify) as client:
            result.append(await check(client, target, questions, strict=args.strict))

    runtime.run(main)
    report = result[0]
    if args.output == "json":
        output.print_json(report_json(report, target), out)
    else:
        _print_text(report, target, out)
    return runtime.EXIT_OK if report.conformant else runtime.EXIT_FAILURE


def add_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """``dialog check``."""
    group = command("dialog", "check a third-party dialog backend against the DUIX contract")
    sub = group.add_subparsers(dest="dialog_command", required=True, metavar="SUBCOMMAND")
    p = sub.add_parser(
        "check",
        help="ask URL the way DUIX does and check the answer rule by rule",
        description="Ask URL the way DUIX does and check the answer rule by rule. "
        "Exit 0 conformant, 1 not conformant, 2 usage.",
    )
    p.add_argument("url", metavar="URL", help="the dialog backend's URL (never printed whole)")
    p.add_argument(
        "--mode",
        choices=("json", "stream", "auto"),
        default="auto",
        help="json (one envelope), stream ({answer, isEnd} chunks) or auto: by the "
        "response's Content-Type (default)",
    )
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")
    p.add_argument(
        "--budget-seconds",
        type=float,
        default=DEFAULT_BUDGET_SECONDS,
        help="DUIX's answer budget (default 20)",
    )
    p.add_argument(
        "--timeout-seconds", type=float, help="deadline of each request (default: the budget)"
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="also send requests missing each required field: each must get a 4xx",
    )
    p.add_argument(
        "-H",
        "--header",
        action="append",
        metavar="'NAME: VALUE'",
        help="a header to send (repeatable; values are never printed)",
    )
    p.add_argument("--headers-file", metavar="FILE", help="'Name: value' lines to send")
    p.add_argument(
        "--question",
        action="append",
        metavar="TEXT",
        help="a question to ask (repeatable: asked in turn, each with the earlier turns as "
        "dh-context)",
    )
    p.add_argument("--sid", default="duixwatch-probe", help="sent as sid")
    p.add_argument("--dh-code", default="duixwatch-probe", help="sent as dh-code")
    p.add_argument(
        "--conversation-id", default="duixwatch-probe", help="sent as dh-conversation-id"
    )
    p.add_argument("--ca-file", type=Path, help="CA bundle that verifies the backend")
    p.add_argument("--cert-file", type=Path, help="client certificate (mutual TLS)")
    p.add_argument("--key-file", type=Path, help="client certificate's key")
    p.add_argument("--server-name", help="the TLS server name, when not the URL's host")
    p.add_argument(
        "--insecure-skip-verify", action="store_true", help="do not verify the certificate"
    )
    p.set_defaults(run=_cmd_check, command="dialog check")
