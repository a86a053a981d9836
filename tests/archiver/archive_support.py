"""Helpers for the archiver tests: a chat through the gateway and the archive bucket's objects."""

from __future__ import annotations

import gzip
import json
from typing import Any

import aioboto3
from helpers import auth_header


async def s3_objects(base_env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Every object of the test's bucket, decoded: key -> archived session."""
    session = aioboto3.Session()
    async with session.client(
        "s3",
        endpoint_url=base_env["S3_ENDPOINT_URL"],
        region_name="us-east-1",
        aws_access_key_id=base_env["S3_ACCESS_KEY_ID"],
        aws_secret_access_key=base_env["S3_SECRET_ACCESS_KEY"],
    ) as s3:
        try:
            listing = await s3.list_objects_v2(Bucket=base_env["S3_BUCKET"])
        except s3.exceptions.NoSuchBucket:
            return {}
        objects = {}
        for entry in listing.get("Contents", []):
            body = await (await s3.get_object(Bucket=base_env["S3_BUCKET"], Key=entry["Key"]))["Body"].read()
            objects[entry["Key"]] = json.loads(gzip.decompress(body))
        return objects


async def chat(gateway: Any, token: str, session_id: str, prompt: str) -> dict[str, Any]:
    """One non-streamed chat in ``session_id``; fails the test unless it is answered."""
    response = await gateway.post(
        "/chat",
        json={"session_id": session_id, "prompt": prompt, "stream": False},
        headers=auth_header(token),
    )
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    return body
