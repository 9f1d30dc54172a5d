"""The two bases of every payload: strict requests, tolerant replies."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Payload(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Reply(BaseModel):
    """What a migration answers (results, progress, plans). Unknown fields are ignored,
    so a client older than the worker still reads a reply with fields added since."""

    model_config = ConfigDict(frozen=True, extra="ignore")
