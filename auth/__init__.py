"""The auth service (port 8001): register, login, refresh, logout, JWKS and user administration."""
