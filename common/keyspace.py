"""Every Redis key name in the system, defined once.

Keys that one script or transaction touches share the hash tag ``{u:<user_id>}`` so they live in
one Redis Cluster slot. ``prefix`` namespaces a deployment (or a test run) inside a shared Redis.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keyspace:
    prefix: str = ""

    @staticmethod
    def user_tag(user_id: str) -> str:
        return "{u:" + user_id + "}"

    # -- rate limiting (the seed's ``rate_limit:*`` prefix) ------------------------------------
    def rate_limit(self, user_id: str) -> str:
        return f"{self.prefix}rate_limit:{self.user_tag(user_id)}"

    def rate_limit_org(self, org_id: str) -> str:
        return f"{self.prefix}rate_limit:{{o:{org_id}}}"

    # -- sessions --------------------------------------------------------------------------------
    def session_turns(self, user_id: str, session_id: str) -> str:
        """List of JSON-encoded turns, oldest first, capped by count and bytes."""
        return f"{self.prefix}session:{self.user_tag(user_id)}:{session_id}"

    def session_meta(self, user_id: str, session_id: str) -> str:
        """Hash: created_at, last_activity, turns, bytes, org_id, title, version, state, spilled."""
        return f"{self.prefix}session_meta:{self.user_tag(user_id)}:{session_id}"

    def session_index(self, user_id: str) -> str:
        """Sorted set of the user's session ids scored by last activity."""
        return f"{self.prefix}sessions:{self.user_tag(user_id)}"

    def session_spill(self, user_id: str, session_id: str) -> str:
        """Turns trimmed from the capped history, kept until the archiver has stored them."""
        return f"{self.prefix}session_spill:{self.user_tag(user_id)}:{session_id}"

    def session_archive(self, user_id: str) -> str:
        """Hash session_id -> JSON pointer to the archived object (key, counts, times)."""
        return f"{self.prefix}session_archive:{self.user_tag(user_id)}"

    def archive_synced(self, user_id: str) -> str:
        """Flag: this Redis has the user's archive pointers (the archive's index was consulted once
        since the user's data appeared here); absent after Redis lost its data."""
        return f"{self.prefix}archive_synced:{self.user_tag(user_id)}"

    def session_deleted(self, user_id: str, session_id: str) -> str:
        """Tombstone after DELETE, so an archiver already working on the session drops its object."""
        return f"{self.prefix}session_deleted:{self.user_tag(user_id)}:{session_id}"

    def sweeper_lock(self) -> str:
        """Held by the one archiver instance sweeping idle sessions at a time."""
        return f"{self.prefix}sweeper:lock"

    def session_activity(self) -> str:
        """Global sorted set ``<user_id>/<session_id>`` -> last activity, read by the idle sweeper."""
        return f"{self.prefix}sessions:activity"

    # -- requests and tokens ---------------------------------------------------------------------
    def cancelled(self, user_id: str, request_id: str) -> str:
        """Marker for a cancelled request, so a worker that picks it up later skips it. Scoped to
        the request's owner: a cancel can only ever stop that user's own request."""
        return f"{self.prefix}cancelled:{self.user_tag(user_id)}:{request_id}"

    def chat_record(self, user_id: str, request_id: str) -> str:
        """Hash: one chat request's outcome (state, generation, text, chunk offsets, final reply),
        committed once; answers a resumed stream after the generation ended. Under the owner's
        hash tag, so it is committed in one script with the session's turns. See common/exchanges.py."""
        return f"{self.prefix}chat:{self.user_tag(user_id)}:{request_id}"

    def revoked_jti(self, user_id: str, jti: str) -> str:
        """Denylisted access token; under the user's hash tag so the gateway's admission script
        checks it, the disabled flag and the rate limit in one round trip."""
        return f"{self.prefix}revoked_jti:{self.user_tag(user_id)}:{jti}"

    def disabled_user(self, user_id: str) -> str:
        return f"{self.prefix}disabled_user:{self.user_tag(user_id)}"

    def revoked_sid(self, user_id: str, sid: str) -> str:
        """Every access token of one login (claim ``sid``, its refresh family) is refused; set by
        logout and refresh-token reuse, kept for an access-token lifetime. See common/revocation.py."""
        return f"{self.prefix}revoked_sid:{self.user_tag(user_id)}:{sid}"

    def token_generation(self, user_id: str) -> str:
        """Integer, no TTL: access tokens whose claim ``gen`` is lower are refused (logout/all,
        password change, disable). Refresh families are stamped with it too."""
        return f"{self.prefix}token_generation:{self.user_tag(user_id)}"

    def models_available(self) -> str:
        """Sorted set model name -> last time a worker saw a healthy node serving it."""
        return f"{self.prefix}models:available"

    def job(self, user_id: str, job_id: str) -> str:
        """Hash of an async job: status, response, usage, timestamps (expires)."""
        return f"{self.prefix}job:{self.user_tag(user_id)}:{job_id}"

    def pattern(self) -> str:
        """Glob matching every key of this namespace (for tests and tooling)."""
        return f"{self.prefix}*"

    # -- auth service: refresh tokens, login failures ---------------------------------------------
    def refresh_family(self, user_id: str, family_id: str) -> str:
        """Hash of one refresh-token family (one login): current token hash and used hashes."""
        return f"{self.prefix}auth:refresh:{self.user_tag(user_id)}:{family_id}"

    def refresh_families(self, user_id: str) -> str:
        """Set of the user's refresh family ids, so all can be revoked at once."""
        return f"{self.prefix}auth:refresh_families:{self.user_tag(user_id)}"

    def login_failures_user(self, username_lower: str) -> str:
        """Counter of failed logins for a username within the failure window."""
        return f"{self.prefix}auth:login_failures:user:{username_lower}"

    def login_failures_ip(self, client_ip: str) -> str:
        """Counter of failed logins from one client address within the failure window."""
        return f"{self.prefix}auth:login_failures:ip:{client_ip}"

    def login_failures_pair(self, username_lower: str, client_ip: str) -> str:
        """Hash {n, until}: failed logins for one username from one address, and the end of the
        exponential back-off they earned (auth/bruteforce.py)."""
        return f"{self.prefix}auth:login_failures:pair:{username_lower}:{client_ip}"

    def login_known_addresses(self, username_lower: str) -> str:
        """Sorted set address -> last successful login: addresses exempt from the username's
        failure ceiling, so an attack elsewhere cannot lock the owner out."""
        return f"{self.prefix}auth:login_known:{username_lower}"

    def registrations_ip(self, client_ip: str) -> str:
        """Counter of registration attempts from one client address within its window."""
        return f"{self.prefix}auth:registrations:ip:{client_ip}"

    def quota_exhausted(self) -> str:
        """JSON list of the organizations whose monthly token quota is used up (written by the
        usage ledger every few seconds, with a TTL: a stopped ledger enforces nothing)."""
        return f"{self.prefix}quota:exhausted"
