"""``cimtwin serve``."""

from __future__ import annotations

import typer

from cimtwin.settings import get_settings


def serve(
    host: str = typer.Option(None, help="address to bind (default CIMTWIN_HOST or 127.0.0.1)"),
    port: int = typer.Option(None, help="port (default CIMTWIN_PORT or 8000)"),
    workers: int = typer.Option(1, min=1, help="worker processes"),
    reload: bool = typer.Option(False, help="reload on code change (development)"),
    access_log: bool | None = typer.Option(
        None,
        "--access-log/--no-access-log",
        help="log every request (default CIMTWIN_ACCESS_LOG or on); off behind a proxy that "
        "logs them already",
    ),
) -> None:
    """Serve the API (OpenAPI docs at /docs)."""
    import uvicorn

    from cimtwin.api.header_deadline import PROTOCOL

    s = get_settings()
    uvicorn.run(
        "cimtwin.api.app:create_app",
        factory=True,
        host=host or s.host,
        port=port or s.port,
        workers=workers,
        reload=reload,
        access_log=s.access_log if access_log is None else access_log,
        http=PROTOCOL,  # uvicorn's httptools protocol with a deadline for request headers
    )
