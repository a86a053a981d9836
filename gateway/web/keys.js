// The API-keys panel: the signed-in user's personal keys (GET/POST /me/api-keys, DELETE
// /me/api-keys/{key_id}, answered by the auth service through the front door).
//
// A new key's secret is shown once: it is in the answer to the POST only (the service keeps a
// hash), it stays in the read-only box until the user closes that box or the panel, and it is
// never put in storage or in the list (which shows the prefix).
import { ApiProblem } from "./api.js";

const $ = (id) => document.getElementById(id);

function formatTime(seconds) {
  if (!seconds) return "";
  return new Date(seconds * 1000).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function stateOf(key, now) {
  if (key.revoked_at) return "revoked";
  if (key.expires_at && key.expires_at * 1000 <= now) return "expired";
  return "active";
}

const STATE_LABEL = { active: "Active", revoked: "Revoked", expired: "Expired" };

function fact(label, value) {
  const group = document.createElement("div");
  const term = document.createElement("dt");
  term.textContent = label;
  const detail = document.createElement("dd");
  if (value instanceof Node) detail.append(value);
  else detail.textContent = value;
  group.append(term, detail);
  return group;
}

/** The panel, wired to `api` (api.js); `explain(problem)` gives the page's sentence for an error. */
export function createKeysPanel(api, explain) {
  const dialog = $("keys-dialog");
  let opener = null;

  function message(problem) {
    const text = explain(problem).text;
    return typeof text === "function" ? text(problem.retryAfter ?? 60) : text;
  }

  function keyItem(key, now) {
    const state = stateOf(key, now);
    const item = document.createElement("li");
    item.className = "key";
    item.dataset.keyId = key.key_id;
    item.dataset.state = state;
    const titleId = `key-title-${key.key_id}`;
    const head = document.createElement("div");
    head.className = "key-head";
    const name = document.createElement("span");
    name.className = "key-name";
    name.id = titleId;
    name.dir = "auto";
    name.textContent = key.name;
    const badge = document.createElement("span");
    badge.className = "key-state";
    badge.textContent = STATE_LABEL[state];
    head.append(name, badge);

    const prefix = document.createElement("code");
    prefix.textContent = key.prefix + "…";
    const facts = document.createElement("dl");
    facts.className = "key-facts";
    const ends =
      state === "revoked"
        ? fact("Revoked", formatTime(key.revoked_at))
        : fact("Expires", key.expires_at ? formatTime(key.expires_at) : "Never");
    facts.append(
      fact("Prefix", prefix),
      fact("Scopes", key.scopes.join(", ")),
      fact("Created", formatTime(key.created_at)),
      ends,
      fact("Last used", key.last_used_at ? formatTime(key.last_used_at) : "Never"),
    );
    item.append(head, facts);
    if (state !== "revoked") item.append(revokeControls(key, titleId));
    return item;
  }

  /** Revoke, then a confirmation in place (Yes / Cancel): nothing is revoked by one stray click. */
  function revokeControls(key, titleId) {
    const actions = document.createElement("div");
    actions.className = "key-actions";
    const revoke = document.createElement("button");
    revoke.type = "button";
    revoke.className = "small danger-text";
    revoke.textContent = "Revoke";
    revoke.setAttribute("aria-describedby", titleId);

    const confirm = document.createElement("div");
    confirm.className = "key-confirm";
    confirm.setAttribute("role", "group");
    confirm.setAttribute("aria-labelledby", `${titleId}-question`);
    confirm.hidden = true;
    const question = document.createElement("span");
    question.id = `${titleId}-question`;
    question.textContent = `Revoke “${key.name}”? Programs using it stop working at once.`;
    const yes = document.createElement("button");
    yes.type = "button";
    yes.className = "small danger";
    yes.textContent = "Yes, revoke";
    const no = document.createElement("button");
    no.type = "button";
    no.className = "small";
    no.textContent = "Cancel";
    confirm.append(question, yes, no);

    revoke.addEventListener("click", () => {
      revoke.hidden = true;
      confirm.hidden = false;
      no.focus();
    });
    no.addEventListener("click", () => {
      confirm.hidden = true;
      revoke.hidden = false;
      revoke.focus();
    });
    yes.addEventListener("click", async () => {
      yes.disabled = no.disabled = true;
      try {
        await api.call(`/me/api-keys/${encodeURIComponent(key.key_id)}`, { method: "DELETE" });
        $("keys-status").textContent = `Key “${key.name}” revoked.`;
      } catch (problem) {
        if (problem.status === 404) $("keys-status").textContent = `Key “${key.name}” no longer exists.`;
        else {
          $("keys-status").textContent = `The key could not be revoked: ${message(problem)}`;
          yes.disabled = no.disabled = false;
          return;
        }
      }
      await load();
      $("key-name").focus();
    });
    actions.append(revoke, confirm);
    return actions;
  }

  async function load() {
    let keys;
    try {
      ({ api_keys: keys } = await api.json("/me/api-keys"));
    } catch (problem) {
      if (problem.status !== 401) $("keys-status").textContent = `Your keys could not be loaded: ${message(problem)}`;
      return;
    }
    const now = Date.now();
    // Newest first; revoked ones last (kept for the record: when, and what they were called).
    keys.sort((a, b) => (a.revoked_at ? 1 : 0) - (b.revoked_at ? 1 : 0) || b.created_at - a.created_at);
    $("keys").replaceChildren(...keys.map((key) => keyItem(key, now)));
    $("keys-empty").hidden = keys.length > 0;
  }

  function showSecret(name, secret) {
    $("key-secret-name").textContent = name;
    $("key-secret-value").value = secret;
    $("key-copy-status").textContent = "";
    $("key-secret").hidden = false;
    $("key-secret-value").focus();
    $("key-secret-value").select();
  }

  function forgetSecret() {
    $("key-secret-value").value = "";
    $("key-secret-name").textContent = "";
    $("key-copy-status").textContent = "";
    $("key-secret").hidden = true;
  }

  $("key-copy").addEventListener("click", async () => {
    const box = $("key-secret-value");
    try {
      await navigator.clipboard.writeText(box.value);
      $("key-copy-status").textContent = "Copied to the clipboard.";
    } catch {
      // No clipboard access (a plain-HTTP origin other than localhost, or refused): select it.
      box.focus();
      box.select();
      $("key-copy-status").textContent = "Copying is blocked here: the key is selected, press Ctrl+C (⌘C).";
    }
  });
  $("key-secret-done").addEventListener("click", () => {
    forgetSecret();
    $("key-name").focus();
  });

  $("key-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("key-error");
    error.textContent = "";
    const name = $("key-name").value.trim();
    const scopes = [...document.querySelectorAll('#key-form input[name="scope"]:checked')].map((box) => box.value);
    if (!name) {
      error.textContent = "Give the key a name, so you know later what uses it.";
      $("key-name").focus();
      return;
    }
    if (!scopes.length) {
      error.textContent = "Choose at least one thing the key may do.";
      return;
    }
    const body = { name, scopes };
    const expiry = $("key-expiry").value;
    if (expiry) body.expires_in = Number(expiry);
    const submit = $("key-create");
    submit.disabled = true;
    try {
      const created = await api.json("/me/api-keys", { method: "POST", body });
      if (!created || typeof created.api_key !== "string") {
        throw new ApiProblem(502, "bad_answer", "the service answered without a key");
      }
      $("key-name").value = "";
      showSecret(created.name, created.api_key);
      $("keys-status").textContent = `Key “${created.name}” created.`;
      await load();
    } catch (problem) {
      if (problem.status !== 401) error.textContent = message(problem);
    } finally {
      submit.disabled = false;
    }
  });

  $("keys-close").addEventListener("click", () => dialog.close());
  // Closing the panel (the × button, Escape) forgets a secret still on screen.
  dialog.addEventListener("close", () => {
    forgetSecret();
    $("key-error").textContent = "";
    $("keys-status").textContent = "";
    if (opener && opener.isConnected) opener.focus();
  });

  return {
    async open(from) {
      opener = from;
      forgetSecret();
      dialog.showModal();
      $("key-name").focus();
      await load();
    },
    close() {
      if (dialog.open) dialog.close();
    },
  };
}
