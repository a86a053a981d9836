"""Whether a signed, unexpired access token is still honoured: the one rule gateway and auth share.

An access token is refused when

- its user is disabled (``disabled_user``): 403 ``user_disabled``;
- it was revoked by itself (``revoked_jti``: the token used for ``/logout``), with its login
  (``revoked_sid``: ``/logout``, refresh-token reuse) or with every token of its user
  (``token_generation``: ``/logout/all``, a password change, an admin disable): 401
  ``token_revoked``.

Why a generation counter and not "tokens issued before T are invalid": every token carries the
user's generation at issue time (claim ``gen``, absent = 0) and is refused once the stored
generation is higher. A counter has no same-second ambiguity (``iat`` has 1 s resolution, so a
login right after ``/logout/all`` would share the revocation's second) and no dependence on the
clocks of several auth instances and Redis nodes agreeing. The counter never expires: it is one
small key per user who ever revoked everything, like the user record itself.

Every key carries the user's ``{u:<user_id>}`` hash tag, so the check runs inside one script in
one Redis Cluster slot: the gateway embeds :data:`LUA_TOKEN_STATUS` in its admission script (one
round trip per request), the auth service runs it through :class:`TokenRevocation`.
"""

from __future__ import annotations

from common.keyspace import Keyspace
from common.redis import RedisClient

__all__ = [
    "ACTIVE",
    "DISABLED",
    "LUA_TOKEN_STATUS",
    "REVOCATION_MARGIN_SECONDS",
    "REVOKED",
    "TokenRevocation",
    "status_keys",
]

ACTIVE, DISABLED, REVOKED = 0, 2, 3
# Added to an access token's lifetime for how long a login's revocation is kept: covers verifier
# leeway and clock differences between the auth hosts and the gateways.
REVOCATION_MARGIN_SECONDS = 60

# A Lua function for scripts that embed the check. Arguments: key names (nil = not checked) in
# the order of :func:`status_keys`, then the token's generation. Disabled is answered first: it is
# the more useful answer for a client, and a disable also revokes every token.
LUA_TOKEN_STATUS = """
local function token_status(disabled, jti, sid, generation, token_generation)
  if disabled and redis.call('EXISTS', disabled) == 1 then return 2 end
  if jti and redis.call('EXISTS', jti) == 1 then return 3 end
  if sid and redis.call('EXISTS', sid) == 1 then return 3 end
  -- A negative token generation (API keys) is not checked: keys are revoked one by one.
  if generation and (tonumber(token_generation) or 0) >= 0 then
    local current = tonumber(redis.call('GET', generation) or '0') or 0
    if current > (tonumber(token_generation) or 0) then return 3 end
  end
  return 0
end
"""

# KEYS: as status_keys; ARGV[1] the token's generation.
_STATUS = LUA_TOKEN_STATUS + "return token_status(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1])\n"


def status_keys(keys: Keyspace, user_id: str, jti: str, sid: str) -> list[str]:
    """The keys :data:`LUA_TOKEN_STATUS` reads, in its argument order (all in one slot)."""
    return [
        keys.disabled_user(user_id),
        keys.revoked_jti(user_id, jti),
        keys.revoked_sid(user_id, sid),
        keys.token_generation(user_id),
    ]


class TokenRevocation:
    """Revoke access tokens (auth service) and check a token against the revocations.

    ``login_ttl`` is how long a login's revocation must outlive its newest access token: the
    access-token lifetime plus leeway (:data:`REVOCATION_MARGIN_SECONDS` is added).
    """

    def __init__(self, redis: RedisClient, keys: Keyspace, *, login_ttl: int) -> None:
        self.redis = redis
        self.keys = keys
        self.login_ttl = login_ttl
        self._status = redis.register_script(_STATUS)

    async def status(self, user_id: str, jti: str, sid: str, generation: int) -> int:
        """:data:`ACTIVE`, :data:`DISABLED` or :data:`REVOKED`, in one round trip."""
        keys = status_keys(self.keys, user_id, jti, sid)
        return int(await self._status(keys=keys, args=[generation]))

    async def generation(self, user_id: str) -> int:
        """The user's current token generation; new tokens (and refresh families) carry it."""
        raw = await self.redis.get(self.keys.token_generation(user_id))
        return int(raw) if raw is not None else 0

    async def revoke_token(self, user_id: str, jti: str, ttl: int) -> None:
        """Denylist one access token for ``ttl`` seconds (its remaining lifetime)."""
        if ttl > 0:
            await self.redis.set(self.keys.revoked_jti(user_id, jti), "1", ex=ttl)

    async def revoke_login(self, user_id: str, sid: str) -> None:
        """Refuse every access token issued under login ``sid`` (a refresh-token family)."""
        if sid:
            ttl = self.login_ttl + REVOCATION_MARGIN_SECONDS
            await self.redis.set(self.keys.revoked_sid(user_id, sid), "1", ex=ttl)

    async def revoke_user(self, user_id: str) -> int:
        """Refuse every access token of the user issued so far; returns the new generation."""
        return int(await self.redis.incr(self.keys.token_generation(user_id)))
