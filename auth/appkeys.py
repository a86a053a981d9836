"""Typed keys for the auth app's shared state (set by ``create_app`` and its ``cleanup_ctx``)."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from auth.accounts import Directory
from auth.api_keys import ApiKeyStore
from auth.audit import AuditLog
from auth.bruteforce import LoginThrottle, RegistrationThrottle
from auth.metrics import AuthMetrics
from auth.passwords import PasswordHasher
from auth.refresh import RefreshTokenStore
from auth.settings import AuthSettings
from auth.tokens import TokenService
from auth.usage import UsageReader
from auth.users import UserStore
from common.keyspace import Keyspace
from common.redis import RedisClient
from common.revocation import TokenRevocation

__all__ = [
    "API_KEYS",
    "AUDIT",
    "DIRECTORY",
    "HASHER",
    "KEYS",
    "METRICS",
    "POOL",
    "REDIS",
    "REFRESH",
    "REGISTRATIONS",
    "REVOCATION",
    "SETTINGS",
    "THROTTLE",
    "TOKENS",
    "USAGE",
    "USERS",
]

SETTINGS = web.AppKey("settings", AuthSettings)
KEYS = web.AppKey("keyspace", Keyspace)
METRICS = web.AppKey("metrics", AuthMetrics)
TOKENS = web.AppKey("tokens", TokenService)
REDIS: web.AppKey[RedisClient] = web.AppKey("redis")
HASHER = web.AppKey("hasher", PasswordHasher)
USERS = web.AppKey("users", UserStore)
REFRESH = web.AppKey("refresh", RefreshTokenStore)
THROTTLE = web.AppKey("throttle", LoginThrottle)
REGISTRATIONS = web.AppKey("registrations", RegistrationThrottle)
REVOCATION = web.AppKey("revocation", TokenRevocation)
POOL: web.AppKey[asyncpg.Pool] = web.AppKey("pool")
DIRECTORY = web.AppKey("directory", Directory)
AUDIT = web.AppKey("audit", AuditLog)
API_KEYS = web.AppKey("api_keys", ApiKeyStore)
USAGE = web.AppKey("usage", UsageReader)
