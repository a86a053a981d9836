// The HTTP client of the page: sign-in state and every call to the platform (same origin).
//
// Token storage: the access token lives only in this module's closure (never in storage, never in
// a global), so script that manages to run in the page cannot read it from window or
// localStorage. The refresh token is kept in sessionStorage (this tab only, gone when the tab
// closes) so a reload does not sign the user out; it rotates on every use and the auth service
// revokes the whole login when a used one comes back (reuse detection). See README "Chat page".

const REFRESH_KEY = "enterprise-chat.refresh";
const REFRESH_MARGIN_S = 30; // refresh this long before the access token expires

/** An error answer of the API, or a network failure (status 0). */
export class ApiProblem extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

function retryAfterOf(response) {
  const raw = response.headers.get("Retry-After");
  if (raw === null) return null;
  const seconds = Number.parseInt(raw, 10);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const date = Date.parse(raw);
  return Number.isFinite(date) ? Math.max(0, Math.ceil((date - Date.now()) / 1000)) : null;
}

/** The JSON error shape (native or OpenAI's) of a failed response, as an ApiProblem. */
export async function problemOf(response) {
  let code = "http_" + response.status;
  let message = response.statusText || "request failed";
  try {
    const body = await response.json();
    if (body && typeof body.error === "string") {
      code = body.error;
      message = body.message || message;
    } else if (body && body.error && typeof body.error === "object") {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch {
    // not JSON (a proxy's page): keep the status
  }
  return new ApiProblem(response.status, code, message, retryAfterOf(response));
}

function claimsOf(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const bytes = Uint8Array.from(atob(part), (c) => c.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return {};
  }
}

/**
 * The API client. `onSignedOut(reason)` is called when the sign-in ends without the user asking
 * (the refresh token expired or was revoked): reason "expired".
 */
export function createApi({ onSignedOut }) {
  let access = null;
  let user = null;
  let timer = null;
  let refreshing = null;

  function store(tokens) {
    access = tokens.access_token;
    const claims = claimsOf(access);
    user = { username: claims.username || "", organization: claims.org || "", role: claims.role || "" };
    sessionStorage.setItem(REFRESH_KEY, tokens.refresh_token);
    clearTimeout(timer);
    const delay = Math.max(5, (tokens.expires_in || 60) - REFRESH_MARGIN_S) * 1000;
    timer = setTimeout(() => {
      refresh().catch(() => {});
    }, delay);
  }

  function forget() {
    access = null;
    user = null;
    clearTimeout(timer);
    sessionStorage.removeItem(REFRESH_KEY);
  }

  async function post(path, body) {
    let response;
    try {
      response = await fetch(path, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
        credentials: "omit",
      });
    } catch {
      throw new ApiProblem(0, "network", "the service cannot be reached; check your connection");
    }
    if (!response.ok) throw await problemOf(response);
    return response.status === 204 ? null : response.json();
  }

  /** Rotate the refresh token; one at a time (concurrent callers share the same attempt). */
  function refresh() {
    if (refreshing) return refreshing;
    const token = sessionStorage.getItem(REFRESH_KEY);
    if (!token) return Promise.reject(new ApiProblem(401, "signed_out", "not signed in"));
    refreshing = post("/refresh", { refresh_token: token })
      .then((tokens) => {
        store(tokens);
      })
      .catch((problem) => {
        if (problem.status === 401 || problem.status === 403) {
          forget();
          onSignedOut("expired");
        }
        throw problem;
      })
      .finally(() => {
        refreshing = null;
      });
    return refreshing;
  }

  /**
   * fetch() with the access token; a 401 for an expired token refreshes once and retries.
   * Resolves to the Response when it is 2xx, else throws an ApiProblem.
   */
  async function call(path, { method = "GET", body, signal, headers = {} } = {}) {
    for (let attempt = 0; ; attempt++) {
      if (!access) await refresh();
      const init = {
        method,
        signal,
        credentials: "omit",
        headers: { ...headers, Authorization: "Bearer " + access },
      };
      if (body !== undefined) {
        init.headers["Content-Type"] = "application/json";
        init.body = JSON.stringify(body);
      }
      let response;
      try {
        response = await fetch(path, init);
      } catch (error) {
        if (signal && signal.aborted) throw error;
        throw new ApiProblem(0, "network", "the service cannot be reached; check your connection");
      }
      if (response.ok) return response;
      const problem = await problemOf(response);
      const stale = ["token_expired", "token_revoked", "invalid_token"].includes(problem.code);
      if (response.status === 401 && stale && attempt === 0) {
        access = null; // refresh() next round; it signs out when the refresh token is dead too
        continue;
      }
      if (response.status === 401) {
        forget();
        onSignedOut("expired");
      }
      throw problem;
    }
  }

  async function json(path, options) {
    const response = await call(path, options);
    return response.status === 204 ? null : response.json();
  }

  return {
    get user() {
      return user;
    },
    get signedIn() {
      return access !== null;
    },
    hasStoredLogin: () => sessionStorage.getItem(REFRESH_KEY) !== null,
    async login(username, password) {
      store(await post("/login", { username, password }));
    },
    async register(fields) {
      await post("/register", fields);
      store(await post("/login", { username: fields.username, password: fields.password }));
    },
    resume: () => refresh(),
    async logout() {
      try {
        if (access) await fetch("/logout", { method: "POST", headers: { Authorization: "Bearer " + access } });
      } finally {
        forget();
      }
    },
    call,
    json,
  };
}
