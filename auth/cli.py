"""Command line: ``python -m auth`` serves; ``python -m auth create-admin`` creates an admin.

``create-admin`` reads the password from ``AUTH_BOOTSTRAP_ADMIN_PASSWORD`` when set, otherwise
from stdin (prompted twice on a terminal, the first line when piped); there is no default.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import msgspec
import uvloop

from auth.accounts import create_account
from auth.app import close_redis, create_app
from auth.passwords import PasswordHasher
from auth.settings import AuthSettings
from auth.users import User, UserStore
from common.http import ApiError
from common.keyspace import Keyspace
from common.logging import configure_logging
from common.redis import create_redis
from common.runtime import forever, launch, serving
from common.settings import Env, SettingsError

__all__ = ["create_admin", "main"]

PASSWORD_ENV = "AUTH_BOOTSTRAP_ADMIN_PASSWORD"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m auth", description="enterprise chat auth service")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve the HTTP API (the default)")
    admin = commands.add_parser("create-admin", help="create a user with the admin role")
    admin.add_argument("--username", required=True)
    admin.add_argument("--email", required=True)
    admin.add_argument("--organization", required=True)
    return parser


def _read_password(environ: Mapping[str, str]) -> str:
    from_env = Env(environ).optional(PASSWORD_ENV)
    if from_env is not None:
        return from_env
    if sys.stdin.isatty():
        first = getpass.getpass("admin password: ")
        if getpass.getpass("repeat: ") != first:
            raise ApiError(400, "password_mismatch", "the passwords differ")
        return first
    line = sys.stdin.readline()
    password = line[:-1] if line.endswith("\n") else line
    if not password:
        raise ApiError(400, "weak_password", f"no password on stdin and {PASSWORD_ENV} is not set")
    return password


async def create_admin(
    settings: AuthSettings, *, username: str, email: str, organization: str, password: str
) -> User:
    """Create an admin account directly in Redis (same rules as ``POST /register``)."""
    common = settings.common
    redis = create_redis(common.redis_url, cluster=common.redis_cluster, max_connections=8)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bcrypt")
    try:
        hasher = PasswordHasher(
            rounds=settings.bcrypt_rounds,
            executor=executor,
            slots=1,
            queue_timeout=settings.hash_queue_timeout,
        )
        return await create_account(
            UserStore(redis, Keyspace(common.key_prefix)),
            hasher,
            username=username,
            email=email,
            organization=organization,
            password=password,
            role="admin",
            join_organization=True,  # an operator may add an admin to an existing organization
        )
    finally:
        executor.shutdown(wait=True)
        await close_redis(redis)


def _settings_for_cli(environ: Mapping[str, str]) -> AuthSettings:
    # The bootstrap variables describe the start-up admin; the command takes its own arguments.
    return AuthSettings.from_env(
        {k: v for k, v in environ.items() if not k.startswith("AUTH_BOOTSTRAP_ADMIN_")}
    )


def _run_create_admin(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = _settings_for_cli(environ)
    configure_logging(service="auth-cli", level="warning", json=settings.common.log_json)
    try:
        password = _read_password(environ)
        user = uvloop.run(
            create_admin(
                settings,
                username=args.username,
                email=args.email,
                organization=args.organization,
                password=password,
            )
        )
    except ApiError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    print(msgspec.json.encode(user.public()).decode())
    return 0


async def _serve_until_signalled(settings: AuthSettings) -> None:
    async with serving(
        create_app(settings),
        settings.host,
        settings.port,
        read_timeout=settings.common.http_read_timeout,
        handler_cancellation=True,
    ):
        await forever()


def _serve(environ: Mapping[str, str]) -> int:
    launch(AuthSettings.from_env(environ), _serve_until_signalled)
    return 0


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = _parser().parse_args(argv)
    env = os.environ if environ is None else environ
    try:
        if args.command == "create-admin":
            return _run_create_admin(args, env)
        return _serve(env)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
