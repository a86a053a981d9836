"""Helpers for the archiver tests: a chat through the gateway and the archive bucket's objects."""

from __future__ import annotations

import gzip
import json
from typing import Any

import aioboto3
from helpers import auth_header

from common.archive import INDEX_PREFIX


async def s3_objects(base_env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Every archived session of the test's bucket, decoded: key -> archived session."""
    stored = await s3_contents(base_env)
    return {
        key: json.loads(gzip.decompress(body))
        for key, body in stored.items()
        if not key.startswith(INDEX_PREFIX)
    }


async def s3_index(base_env: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The bucket's index entries, decoded: key -> pointer."""
    stored = await s3_contents(base_env)
    return {key: json.loads(body) for key, body in stored.items() if key.startswith(INDEX_PREFIX)}


async def s3_contents(base_env: dict[str, str]) -> dict[str, bytes]:
    """Every object of the test's bucket: key -> body."""
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
            objects[entry["Key"]] = body
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
