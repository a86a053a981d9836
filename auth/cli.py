"""Command line: ``python -m auth`` serves; ``python -m auth create-admin`` creates a platform
admin; ``python -m auth create-organization`` creates an organization; ``python -m auth migrate``
applies the database migrations (the service also applies them at start-up).

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

from auth.accounts import Directory, create_account, organization_named
from auth.app import close_redis, create_app
from auth.database import migrate, open_pool
from auth.invitations import InvitationStore
from auth.organizations import Organization, OrganizationStore
from auth.passwords import PasswordHasher
from auth.settings import AuthSettings
from auth.users import User, UserStore
from common.http import ApiError
from common.keyspace import Keyspace
from common.logging import configure_logging
from common.redis import create_redis
from common.runtime import forever, launch, serving
from common.settings import Env, SettingsError

__all__ = ["create_admin", "create_organization", "main"]

PASSWORD_ENV = "AUTH_BOOTSTRAP_ADMIN_PASSWORD"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m auth", description="enterprise chat auth service")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="serve the HTTP API (the default)")
    admin = commands.add_parser("create-admin", help="create a user with the admin role")
    admin.add_argument("--username", required=True)
    admin.add_argument("--email", required=True)
    admin.add_argument("--organization", required=True)
    org = commands.add_parser("create-organization", help="create an organization")
    org.add_argument("--name", required=True)
    org.add_argument("--allowed-domain", action="append", default=[], dest="allowed_domains")
    org.add_argument("--monthly-token-quota", type=int, default=None)
    commands.add_parser("migrate", help="apply the database migrations")
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
    """Create a platform admin directly in the database (the account rules of ``POST /register``);
    the organization is joined, or created when missing."""
    common = settings.common
    await migrate(settings.database_url)
    pool = await open_pool(settings.database_url, max_size=2)
    redis = create_redis(common.redis_url, cluster=common.redis_cluster, max_connections=8)
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bcrypt")
    try:
        hasher = PasswordHasher(
            rounds=settings.bcrypt_rounds,
            executor=executor,
            slots=1,
            queue_timeout=settings.hash_queue_timeout,
        )
        directory = Directory(
            pool=pool,
            users=UserStore(pool, redis, Keyspace(common.key_prefix)),
            organizations=OrganizationStore(pool),
            invitations=InvitationStore(pool),
        )
        return await create_account(
            directory,
            hasher,
            username=username,
            email=email,
            organization=organization,
            password=password,
            role="admin",
        )
    finally:
        executor.shutdown(wait=True)
        await close_redis(redis)
        await pool.close()


async def create_organization(
    settings: AuthSettings,
    *,
    name: str,
    allowed_domains: Sequence[str] = (),
    monthly_token_quota: int | None = None,
) -> Organization:
    """Create (or find) an organization and set its allowed domains and quota."""
    await migrate(settings.database_url)
    pool = await open_pool(settings.database_url, max_size=2)
    try:
        organizations = OrganizationStore(pool)
        org = await organization_named(organizations, name)
        updated = await organizations.update(
            org.organization_id,
            allowed_domains=[d.lower() for d in allowed_domains] or None,
            monthly_token_quota=monthly_token_quota,
        )
        return updated or org
    finally:
        await pool.close()


def _run_create_organization(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    settings = _settings_for_cli(environ)
    configure_logging(service="auth-cli", level="warning", json=settings.common.log_json)
    try:
        org = uvloop.run(
            create_organization(
                settings,
                name=args.name,
                allowed_domains=args.allowed_domains,
                monthly_token_quota=args.monthly_token_quota,
            )
        )
    except ApiError as exc:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
        return 1
    print(msgspec.json.encode(org.public()).decode())
    return 0


def _run_migrate(environ: Mapping[str, str]) -> int:
    settings = _settings_for_cli(environ)
    configure_logging(service="auth-cli", level="info", json=settings.common.log_json)
    uvloop.run(migrate(settings.database_url))
    return 0


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
        if args.command == "create-organization":
            return _run_create_organization(args, env)
        if args.command == "migrate":
            return _run_migrate(env)
        return _serve(env)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
