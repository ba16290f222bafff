"""Placeholder."""

from __future__ import annotations

from .context import Context


class Fleet:
    def __init__(self, ctx: Context, *, as_json: bool) -> None:
        self.ctx = ctx

    async def download(self, worker: str, force: bool, skip_check: bool, follow: bool) -> int:
        raise NotImplementedError
