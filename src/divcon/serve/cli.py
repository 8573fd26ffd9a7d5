"""The ``divcon serve`` command (registered on the main app by :mod:`divcon.cli`): run the server, or ``--check`` a
running one with the official ``openai`` client, the way an application would call it."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Optional

import typer

from divcon.console import console, err_console, fail

KEY_ENV = "DIVCON_SERVE_API_KEY"
CHECK_QUESTION = "A baker bakes 3 trays of 12 rolls and sells 20 of them. How many rolls are left?"
CHECK_TIMEOUT_S = 900.0  # one two-stage answer on CPU, behind whatever the server is already busy with


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # any other host name may resolve to a public address
        return False


def check(url: str, api_key: str | None) -> None:
    """List the models at ``url`` and ask the first one :data:`CHECK_QUESTION`; one error line when anything
    fails."""
    from openai import OpenAI, OpenAIError

    base = url.rstrip("/")
    base = base if base.endswith("/v1") else f"{base}/v1"
    # the key given for this server, never OPENAI_API_KEY: a real OpenAI key must not go to an arbitrary URL
    client = OpenAI(base_url=base, api_key=api_key or "none", max_retries=0, timeout=CHECK_TIMEOUT_S)
    try:
        names = [m.id for m in client.models.list()]
        if not names:
            fail(f"{base} serves no models")
        reply = client.chat.completions.create(model=names[0],
                                               messages=[{"role": "user", "content": CHECK_QUESTION}])
    except OpenAIError as e:
        fail(f"{base}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    console.print(f"models: {', '.join(names)}", highlight=False, soft_wrap=True)
    console.print(f"question to {names[0]}: {CHECK_QUESTION}", highlight=False, soft_wrap=True)
    console.print(f"answer: {reply.choices[0].message.content}", highlight=False, soft_wrap=True)


def serve(
    host: str = typer.Option("127.0.0.1", help="Address to bind; anything but loopback needs an API key."),
    port: int = typer.Option(8000, min=1, max=65535),
    config: Optional[Path] = typer.Option(None, help="Served models and limits (YAML; default: the teacher as "
                                                     "decomposer and solver, as divcon, divcon-math, "
                                                     "divcon-reading)."),
    api_key: Optional[str] = typer.Option(None, envvar=KEY_ENV, show_default=False,
                                          help=f"Require 'Authorization: Bearer <key>' (default: ${KEY_ENV}); with "
                                               "--check, the key sent."),
    check_url: Optional[str] = typer.Option(None, "--check", metavar="URL",
                                            help="Check a running server instead: list its models and ask one "
                                                 "question with the openai client."),
) -> None:
    """Serve pipelines as an OpenAI-compatible endpoint: /v1/chat/completions, /v1/models, /health."""
    from divcon.cli import USER_ERRORS

    api_key = api_key or None
    if check_url:
        check(check_url, api_key)
        return
    if not is_loopback(host) and not api_key:
        fail(f"refusing to serve on {host} without an API key: anyone who can reach it could spend your models; "
             f"set --api-key or ${KEY_ENV}, or bind 127.0.0.1")
    if config is not None and not config.is_file():
        fail(f"config not found: {config}")
    import uvicorn

    from divcon.serve.app import create_app
    from divcon.serve.config import load_config

    try:
        cfg = load_config(config)
        app = create_app(cfg, api_key)
    except USER_ERRORS as e:
        fail(str(e))
    err_console.print(f"serving {', '.join(cfg.models)} on http://{host}:{port}/v1", highlight=False, soft_wrap=True)
    uvicorn.run(app, host=host, port=port, log_level="info")  # SIGINT/SIGTERM: finish the requests in flight, exit
