"""The ``director-link`` command: doctor, run, call, watch, cancel, chat, convert, validate, params, serve, batch,
demo.

Exit codes: 0 done, 2 bad input, 3 cannot connect, 4 job failed, 5 timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from . import batch, demo, errors, studio
from ._console import (
    CONNECT_WAIT,
    EXIT_BAD_INPUT,
    EXIT_CONNECT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_TIMEOUT,
)
from ._console import Printer as _Printer
from ._console import drive as _drive
from ._console import parse_value as _parse_value
from ._console import run_on as _run_on
from ._console import wait_connected as _wait_connected
from ._native import DEFAULT_SCAN_HOSTS, GradioCall, Hub, Workflow

DEFAULT_PORTS = (8188, 8189, 8190)


def _parse_sets(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise errors.WorkflowError(
                f"--set {pair!r}: write it as SELECTOR=VALUE, e.g. --set 3.seed=7", "invalid_parameter"
            )
        params[key.strip()] = _parse_value(value)
    return params


_MARKS = {"none": " - ", "unknown": "?? "}


def _print_finding(r: dict) -> None:
    mark = _MARKS.get(r["kind"], "OK ")
    latency = f"  ({r['latency_ms']:.0f} ms)" if r.get("latency_ms") is not None else ""
    print(f"  {mark} {r['url']:<28} {r['kind']:<9} {r['summary']}{latency}")


_SETTLED = ("disconnected", "reconnecting", "circuit_open", "closed")


def _doctor_pools(args) -> int:
    """``doctor --pool NAME=URL1,URL2``: connect the pool, then say how each of its servers is."""
    with Hub(output_dir=args.out) as hub:
        for spec in args.pool:
            name, sep, urls = spec.partition("=")
            servers = [u.strip() for u in urls.split(",") if u.strip()]
            if not sep or not name.strip() or not servers:
                print(f"--pool {spec!r}: write it as NAME=URL1,URL2", file=sys.stderr)
                return EXIT_BAD_INPUT
            try:
                hub.add_pool(name.strip(), servers)
            except (errors.InvalidUrlError, errors.DuplicateServiceError) as e:
                print(f"--pool {spec!r}: {e}", file=sys.stderr)
                return EXIT_BAD_INPUT
        # Until every server answers (node list fetched) or has failed once, bounded by --timeout.
        deadline = time.monotonic() + max(args.timeout, 0.5)
        while time.monotonic() < deadline:
            pools = hub.snapshot()["pools"]
            servers = [s for p in pools for s in p["servers"]]
            # A server not tried yet is "disconnected" without a reason.
            if all(s["usable"] or s["wrong_kind"] or (s["state"] in _SETTLED and s["reason"]) for s in servers):
                break
            time.sleep(0.05)
        pools = hub.snapshot()["pools"]
    if args.json:
        print(json.dumps({"pools": pools}))
        return EXIT_OK
    for p in pools:
        print(f"Pool {p['name']}: {p['state']} (at most {p['capacity']} job(s) in flight per server)")
        for s in p["servers"]:
            mark = "OK " if s["usable"] else "?? " if s["wrong_kind"] else " - "
            nodes = f"{s['node_count']} nodes" if s["node_count"] is not None else "node list not fetched"
            why = f"  ({s['reason']})" if s["reason"] and not s["usable"] else ""
            print(f"  {mark} {s['url']:<28} {s['state']:<12} {nodes}, queue {s['queue_remaining'] or 0}{why}")
        for d in p["inventory_differences"]:
            print(f"  differs: {d['server']} lacks {d['lacks_count']} node(s): {', '.join(d['lacks_nodes'][:8])}")
        for problem in p["problems"]:
            print(f"  problem: {problem}")
    return EXIT_OK


def cmd_doctor(args) -> int:
    if args.pool:
        return _doctor_pools(args)
    explicit = bool(args.server)
    # None: the default scan (127.0.0.1, and [::1] where WanGP may listen).
    hosts = list(args.server or []) if explicit else ([*DEFAULT_SCAN_HOSTS, *args.host] if args.host else None)
    with Hub(output_dir=args.out) as hub:
        started = time.monotonic()
        results = hub.discover(hosts, args.timeout, mdns=args.mdns)
        took = time.monotonic() - started
    if args.json:
        print(json.dumps({"results": results, "seconds": took}))
        return EXIT_OK
    where = "the given address(es)" if explicit else ", ".join(hosts or ["127.0.0.1 (+ [::1] for WanGP)"])
    print(f"Director Link doctor — probed {len(results)} address(es) on {where} in {took:.2f} s")
    silent = 0
    for r in results:
        if r["kind"] == "none" and not explicit:
            silent += 1
            continue
        _print_finding(r)
    if silent:
        print(f"   -  {silent} other known port(s): nothing there")
    if not any(r["kind"] == "comfyui" for r in results):
        print(
            "\nNo ComfyUI answered. Start one with `python main.py` in your ComfyUI folder (it listens on "
            "127.0.0.1:8188), or try `director-link demo`, which uses the built-in simulator."
        )
    return EXIT_OK


def cmd_chat(args) -> int:
    """Streams an answer from an OpenAI-compatible server (LiteLLM, Ollama, ...) to stdout."""
    messages: list[dict[str, str]] = []
    if args.system:
        messages.append({"role": "system", "content": args.system})
    messages.append({"role": "user", "content": " ".join(args.prompt)})
    options: dict[str, Any] = {}
    if args.temperature is not None:
        options["temperature"] = args.temperature
    if args.max_tokens is not None:
        options["max_tokens"] = args.max_tokens
    with Hub() as hub:
        name = hub.add_service("openai", args.server, token=args.key)
        job = hub.chat(name, messages, model=args.model, stream=not args.no_stream, **options)
        deadline = None if args.timeout is None else time.monotonic() + args.timeout
        while True:
            if deadline is not None and time.monotonic() > deadline:
                job.cancel()
                print(f"\nerror [timeout]: no complete answer within {args.timeout:.0f} s", file=sys.stderr)
                return EXIT_TIMEOUT
            hub.wait_for_events(0.2)
            for ev in hub.poll():
                if ev.job != job.id:
                    continue
                if ev.type == "text_delta":
                    sys.stdout.write(ev.text)
                    sys.stdout.flush()
                elif ev.type == "job_completed":
                    sys.stdout.write("\n")
                    usage = ev.ui.get("usage") or {}
                    if args.verbose and usage:
                        print(f"[{ev.ui.get('model')}: {usage.get('total_tokens', '?')} tokens]", file=sys.stderr)
                    return EXIT_OK
                elif ev.type == "job_failed":
                    print(f"\nerror [{ev.code}]: {ev.message}", file=sys.stderr)
                    return EXIT_CONNECT if ev.code == "connection_failed" else EXIT_FAILED
                elif ev.type == "job_cancelled":
                    return EXIT_FAILED


def cmd_run(args) -> int:
    printer = _Printer(args.json)
    try:
        workflow = _workflow(args.workflow)
        params = _parse_sets(args.set or [])
        with Hub(output_dir=args.out) as hub:
            return _run_on(hub, args.server, workflow, params, args, printer)
    except (errors.WorkflowError, errors.InvalidUrlError, errors.UnknownServiceError) as e:
        printer.line(f"error [{e.code}]: {e}")
        if args.json:
            print(json.dumps({"type": "error", "code": e.code, "message": str(e)}))
        return EXIT_BAD_INPUT


def _call_inputs(values: list[str]) -> list[Any]:
    """`call` arguments: JSON when they parse, else strings; `@FILE` uploads that file."""
    out: list[Any] = []
    for text in values:
        if text.startswith("@") and len(text) > 1:
            path = Path(text[1:]).expanduser()
            if not path.is_file():
                raise errors.WorkflowError(f"argument {text!r}: no such file", "invalid_parameter")
            out.append({"path": str(path.resolve())})
        else:
            out.append(_parse_value(text))
    return out


def _plain_values(value: Any) -> bool:
    return not (isinstance(value, dict) and ("local_path" in value or "path" in value or "is_file" in value))


def cmd_call(args) -> int:
    """Calls an endpoint of a Gradio app (Wan2GP, RVC, AudioLDM, ...) and saves its files into --out."""
    printer = _Printer(args.json)
    try:
        inputs = _call_inputs(args.args)
        target = args.api_name
        call = (
            GradioCall(fn_index=int(target), inputs=inputs) if target.isdigit() else GradioCall(target, inputs=inputs)
        )
        token = args.token or os.environ.get("DIRECTOR_LINK_TOKEN")
        with Hub(output_dir=args.out) as hub:
            name = hub.add_service(args.kind, args.url, name="app", token=token)
            if not _wait_connected(hub, name, printer, args.connect_timeout):
                snap = next(s for s in hub.snapshot()["services"] if s["name"] == name)
                printer.line(f"cannot connect to {args.url}: {snap.get('last_error') or 'no answer'}")
                return EXIT_CONNECT
            job = hub.submit(name, call, tag=args.tag)
            code = _drive(hub, job, printer, args.timeout, args.url)
            info = job.info() or {}
            data = (info.get("ui") or {}).get("data") if code == EXIT_OK else None
            for i, value in enumerate(data or []):
                if _plain_values(value):
                    printer.line(f"  output {i}: {json.dumps(value, default=str)[:2000]}")
            return code
    except (errors.WorkflowError, errors.InvalidUrlError, errors.UnknownServiceError, ValueError) as e:
        code_name = getattr(e, "code", "invalid_parameter")
        printer.line(f"error [{code_name}]: {e}")
        if args.json:
            print(json.dumps({"type": "error", "code": code_name, "message": str(e)}))
        return EXIT_BAD_INPUT


def cmd_watch(args) -> int:
    printer = _Printer(args.json)
    try:
        with Hub(output_dir=args.out) as hub:
            name = hub.add_service("comfyui", args.server, name="server")
            deadline = None if args.duration is None else time.monotonic() + args.duration
            while deadline is None or time.monotonic() < deadline:
                hub.wait_for_events(0.5)
                for ev in hub.poll():
                    printer.event(ev)
            snap = next(s for s in hub.snapshot()["services"] if s["name"] == name)
            if args.json:
                print(json.dumps({"type": "link_metrics", **snap}, default=str))
            else:
                print(_metrics_line(snap))
    except KeyboardInterrupt:
        return EXIT_OK
    except errors.InvalidUrlError as e:
        print(f"error [{e.code}]: {e}")
        return EXIT_BAD_INPUT
    return EXIT_OK


def _ms(latency: dict) -> str:
    if not latency.get("samples"):
        return "n/a"
    return f"p50 {latency['p50_ms']:.1f} ms / p99 {latency['p99_ms']:.1f} ms"


def _metrics_line(snap: dict) -> str:
    """One line of link health, as `watch` ends with."""
    return (
        f"{snap['name']}: {snap['state']}, queue {snap['queue_remaining']}, up {snap['uptime_percent']:.0f}%, "
        f"ping {_ms(snap['latency'])}, http {_ms(snap['http_latency'])}, {snap['messages_received']} messages, "
        f"{snap['reconnects']} reconnects, {snap['drops']} drops"
        + (f", last error: {snap['last_error']}" if snap["last_error"] else "")
    )


def cmd_cancel(args) -> int:
    try:
        with Hub() as hub:
            name = hub.add_service("comfyui", args.server, name="server")
            outcome = hub.cancel_remote(name, args.job_id)
    except errors.InvalidUrlError as e:
        print(f"error [{e.code}]: {e}")
        return EXIT_BAD_INPUT
    except errors.ServiceError as e:
        print(f"cannot reach the server: {e}")
        return EXIT_CONNECT
    print(
        {
            "removed": f"removed {args.job_id} from the queue",
            "interrupting": f"interrupting {args.job_id}",
            "not_on_server": f"{args.job_id} is neither queued nor running",
        }[outcome]
    )
    return EXIT_OK


def _object_info(args) -> dict | None:
    """The node list for convert/validate/params: --object-info FILE, or fetched from --server."""
    source = getattr(args, "object_info", None)
    if source:
        if Path(source).is_file():
            return source
        args.server = source
    if getattr(args, "server", None):
        with Hub() as hub:
            name = hub.add_service("comfyui", args.server, name="server")
            return hub.object_info(name)
    return None


def _workflow(path: str) -> Workflow:
    if not Path(path).exists():
        raise errors.WorkflowError(f"no workflow file at {path}", "invalid_workflow")
    return Workflow.load(path)


def cmd_convert(args) -> int:
    wf = _workflow(args.workflow)
    info = _object_info(args)
    if wf.format == "ui":
        if info is None:
            print("error: converting a UI-format workflow needs the node list: pass --object-info FILE or --server URL")
            return EXIT_BAD_INPUT
        wf = wf.convert(info)
    for warning in wf.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    text = json.dumps(wf.to_dict(), indent=2)
    if args.output:
        Path(args.output).write_text(text + "\n", encoding="utf-8")
        print(f"wrote {args.output} ({len(wf.to_dict())} nodes)")
    else:
        print(text)
    return EXIT_OK


def cmd_validate(args) -> int:
    wf = _workflow(args.workflow)
    info = _object_info(args)
    if info is None:
        print("error: validating needs the node list: pass --server URL or --object-info FILE")
        return EXIT_BAD_INPUT
    if wf.format == "ui":
        wf = wf.convert(info)
    problems = wf.validate(info)
    if args.json:
        print(json.dumps({"problems": problems, "warnings": wf.warnings}))
    for p in problems if not args.json else []:
        where = f"node {p['node_id']} ({p['class_type']})" if p["node_id"] else "workflow"
        what = f" input {p['input']}" if p["input"] else ""
        hint = f" — {p['suggestion']}" if p["suggestion"] else ""
        print(f"{p['severity'].upper():7} {where}{what}: [{p['code']}] {p['message']}{hint}")
    errors_found = [p for p in problems if p["severity"] == "error"]
    if not args.json:
        print("valid" if not errors_found else f"{len(errors_found)} error(s)")
    return EXIT_OK if not errors_found else EXIT_BAD_INPUT


def cmd_params(args) -> int:
    wf = _workflow(args.workflow)
    info = _object_info(args)
    if wf.format == "ui":
        if info is None:
            print("error: a UI-format workflow needs the node list: pass --object-info FILE or --server URL")
            return EXIT_BAD_INPUT
        wf = wf.convert(info)
    params = wf.parameters(info)
    if args.json:
        print(json.dumps(params))
        return EXIT_OK
    print(f"{'selector':<28} {'type':<8} {'value':<32} range / options")
    for p in params:
        if p["options"]:
            extra = ", ".join(map(str, p["options"][:6])) + (" …" if len(p["options"]) > 6 else "")
        elif p["min"] is not None or p["max"] is not None:
            extra = f"{p['min']} … {p['max']}"
        else:
            extra = ""
        value = json.dumps(p["value"])
        value = value if len(value) <= 32 else value[:29] + "..."
        title = f"  ({p['title']})" if p["title"] else ""
        print(f"{p['selector']:<28} {p['input_type']:<8} {value:<32} {extra}{title}")
    return EXIT_OK


def cmd_demo(args) -> int:
    return demo.run(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="director-link", description="Run ComfyUI workflows from scripts and farms.")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("doctor", help="find local servers and say how they are")
    d.add_argument(
        "--server", action="append", help="only check this address (repeatable; a bare host = all known ports)"
    )
    d.add_argument("--host", action="append", help="scan this host's known ports too (repeatable)")
    d.add_argument(
        "--pool",
        action="append",
        metavar="NAME=URL1,URL2",
        help="check a pool of ComfyUI servers instead: each server's state and node list (repeatable)",
    )
    d.add_argument("--timeout", type=float, default=2.0)
    d.add_argument(
        "--mdns",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="also listen this long for servers announced over mDNS/DNS-SD (off by default: multicast)",
    )
    d.add_argument("--json", action="store_true")
    d.add_argument("--out", default=None, help=argparse.SUPPRESS)
    d.set_defaults(func=cmd_doctor)

    r = sub.add_parser("run", help="run a workflow (API format JSON) and download its results")
    r.add_argument("workflow")
    r.add_argument("--server", default="127.0.0.1:8188")
    r.add_argument(
        "--set",
        action="append",
        metavar="SELECTOR=VALUE",
        help="e.g. --set 3.seed=7 or --set positive.text='a fox'; a value @FILE uploads that image (repeatable)",
    )
    r.add_argument("--out", default="director-link-output", help="output directory")
    r.add_argument("--tag", default=None, help="label for the job (names the output sub-folder)")
    r.add_argument("--json", action="store_true", help="one JSON line per event")
    r.add_argument("--timeout", type=float, default=None, help="seconds to wait for the job")
    r.add_argument("--connect-timeout", type=float, default=CONNECT_WAIT)
    r.set_defaults(func=cmd_run)

    g = sub.add_parser("call", help="call an endpoint of a Gradio app (Wan2GP, RVC, AudioLDM) and save its files")
    g.add_argument("kind", choices=["gradio", "wan2gp", "wangp", "rvc", "audioldm"], help="the kind of app")
    g.add_argument("url", help="the app, e.g. 127.0.0.1:7860")
    g.add_argument("api_name", help="the endpoint, e.g. /generate_video (a number is taken as the fn_index)")
    g.add_argument("args", nargs="*", help="one per input: JSON when it parses, else a string; @FILE uploads a file")
    g.add_argument(
        "--token", default=None, help="user:password for an app launched with auth= (or $DIRECTOR_LINK_TOKEN)"
    )
    g.add_argument("--out", default="director-link-output", help="output directory")
    g.add_argument("--tag", default=None, help="label for the job (names the output sub-folder)")
    g.add_argument("--json", action="store_true", help="one JSON line per event")
    g.add_argument("--timeout", type=float, default=None, help="seconds to wait for the job")
    g.add_argument("--connect-timeout", type=float, default=CONNECT_WAIT)
    g.set_defaults(func=cmd_call)

    w = sub.add_parser("watch", help="show a server's events")
    w.add_argument("--server", default="127.0.0.1:8188")
    w.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    w.add_argument("--json", action="store_true")
    w.add_argument("--out", default=None, help=argparse.SUPPRESS)
    w.set_defaults(func=cmd_watch)

    c = sub.add_parser("cancel", help="cancel one job by id (never touches other jobs)")
    c.add_argument("job_id")
    c.add_argument("--server", default="127.0.0.1:8188")
    c.set_defaults(func=cmd_cancel)

    ch = sub.add_parser("chat", help="ask an OpenAI-compatible server (LiteLLM, Ollama, ...) and stream the answer")
    ch.add_argument("prompt", nargs="+", help='e.g. "write a shot list for a foggy harbour"')
    ch.add_argument("--server", default="127.0.0.1:4000", help="the server (a URL ending in /v1 works too)")
    ch.add_argument("--model", default=None, help="default: the server's first listed model")
    ch.add_argument("--key", default=None, help="API key (default: $DIRECTOR_LINK_OPENAI_KEY)")
    ch.add_argument("--system", default=None, help="a system message")
    ch.add_argument("--temperature", type=float, default=None)
    ch.add_argument("--max-tokens", type=int, default=None)
    ch.add_argument("--no-stream", action="store_true", help="ask for the whole answer at once")
    ch.add_argument("--timeout", type=float, default=None, help="seconds to wait for the answer")
    ch.add_argument("-v", "--verbose", action="store_true", help="print the token usage to stderr")
    ch.set_defaults(func=cmd_chat)

    cv = sub.add_parser("convert", help="convert a UI-format workflow to the API format, like ComfyUI's frontend")
    cv.add_argument("workflow")
    cv.add_argument("-o", "--output", help="write here instead of printing")
    cv.add_argument("--object-info", help="the node list: a .json(.gz) file or a server URL")
    cv.add_argument("--server", default=None, help="fetch the node list from this ComfyUI")
    cv.set_defaults(func=cmd_convert)

    v = sub.add_parser("validate", help="check a workflow against a server's node list before running it")
    v.add_argument("workflow")
    v.add_argument("--server", default=None)
    v.add_argument("--object-info", help="the node list as a .json(.gz) file instead of a server")
    v.add_argument("--json", action="store_true")
    v.set_defaults(func=cmd_validate)

    pa = sub.add_parser("params", help="list a workflow's settable inputs (selectors for --set)")
    pa.add_argument("workflow")
    pa.add_argument("--server", default=None)
    pa.add_argument("--object-info", help="the node list as a .json(.gz) file instead of a server")
    pa.add_argument("--json", action="store_true")
    pa.set_defaults(func=cmd_params)

    studio.add_parser(sub)
    batch.add_parser(sub)

    m = sub.add_parser("demo", help="run a workflow with live progress (local ComfyUI, else the simulator)")
    demo.add_arguments(m)
    m.set_defaults(func=cmd_demo)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except errors.DirectorLinkError as e:
        print(f"error [{e.code}]: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
