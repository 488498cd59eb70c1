"""Response models of the dashboard's endpoints (``/v1/whoami``, ``/v1/throughput``)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field


class WhoAmI(BaseModel):
    role: Literal["read", "admin"] = Field(description="what the token presented may do")


class ThroughputBucket(BaseModel):
    at: datetime = Field(description="start of the minute")
    files: int = Field(description="files done in that minute")
    bytes: int = Field(description="bytes of the files done in that minute")


class ThroughputSeries(BaseModel):
    bucket_s: int = Field(default=60, description="width of a bucket, seconds")
    items: list[ThroughputBucket] = Field(description="one bucket per minute, oldest first, the current minute last")
