// The chat page: sign-in, the conversation, the session list and the model picker.
import { createApi } from "./api.js";
import { createKeysPanel } from "./keys.js";
import { renderMarkdown } from "./render.js";
import { stopChat, streamChat } from "./stream.js";

const $ = (id) => document.getElementById(id);
const BUSY_RETRIES = 3;

const api = createApi({
  onSignedOut: (reason) => showSignIn(reason === "expired" ? "Your sign-in has expired. Please sign in again." : ""),
});

const state = {
  sessionId: null, // the open conversation; a new one gets its id with its first message
  controller: null, // the running answer's AbortController (Stop)
  requestId: null, // the running answer's server request id (X-Chat-Request-Id)
  lastPrompt: "",
};

// -- notices ------------------------------------------------------------------------------------
let noticeTimer = null;
function notify(text, { kind = "info", action = null, seconds = 0 } = {}) {
  clearInterval(noticeTimer);
  const box = $("notice");
  box.dataset.kind = kind;
  const button = $("notice-action");
  button.hidden = !action;
  if (action) {
    button.textContent = action.label;
    button.onclick = () => {
      hideNotice();
      action.run();
    };
  }
  const paint = (left) => {
    $("notice-text").textContent = typeof text === "function" ? text(left) : text;
  };
  paint(seconds);
  box.hidden = false;
  if (kind === "info" && !action) noticeTimer = setInterval(hideNotice, 6000); // errors stay until read
  if (seconds > 0 && typeof text === "function") {
    let left = seconds;
    noticeTimer = setInterval(() => {
      left -= 1;
      paint(left);
      if (left <= 0) clearInterval(noticeTimer);
    }, 1000);
  }
}
function hideNotice() {
  clearInterval(noticeTimer);
  $("notice").hidden = true;
}
$("notice-close").addEventListener("click", hideNotice);

/** A clear sentence for an API problem (429, 503, network ...). */
function explain(problem) {
  if (problem.status === 429) {
    const wait = problem.retryAfter ?? 60;
    return { text: (left) => `Too many requests. Please wait ${Math.max(left, 0)} s before sending again.`, seconds: wait };
  }
  if (problem.status === 503) return { text: "The service is busy right now. Please try again in a moment." };
  if (problem.status === 0) return { text: "Connection lost. Check your network and try again." };
  return { text: problem.message || "Something went wrong." };
}

const keysPanel = createKeysPanel(api, explain);
$("open-keys").addEventListener("click", (event) => keysPanel.open(event.currentTarget));

// -- views --------------------------------------------------------------------------------------
function showSignIn(message = "") {
  abortRunning();
  keysPanel.close();
  $("chat-view").hidden = true;
  $("signin-view").hidden = false;
  toggleRegister(false);
  $("signin-error").textContent = message;
}

async function showChat() {
  $("signin-view").hidden = true;
  $("chat-view").hidden = false;
  const user = api.user;
  $("whoami").textContent = user ? `${user.username} · ${user.organization}` : "";
  newSession();
  await Promise.all([loadModels(), loadSessions()]);
}

function toggleRegister(register) {
  $("signin-form").hidden = register;
  $("register-form").hidden = !register;
  $("show-register").hidden = register;
  $("show-signin").hidden = !register;
  (register ? $("register-username") : $("signin-username")).focus();
}
$("show-register").addEventListener("click", () => toggleRegister(true));
$("show-signin").addEventListener("click", () => toggleRegister(false));

async function submitting(button, work) {
  button.disabled = true;
  try {
    await work();
  } finally {
    button.disabled = false;
  }
}

$("signin-form").addEventListener("submit", (event) => {
  event.preventDefault();
  submitting($("signin-submit"), async () => {
    $("signin-error").textContent = "";
    try {
      await api.login($("signin-username").value.trim(), $("signin-password").value);
      $("signin-password").value = "";
      await showChat();
    } catch (problem) {
      $("signin-error").textContent =
        problem.status === 429
          ? `Too many attempts. Try again in ${problem.retryAfter ?? 60} s.`
          : problem.status === 401
            ? "Username or password is incorrect."
            : problem.message;
    }
  });
});

$("register-form").addEventListener("submit", (event) => {
  event.preventDefault();
  submitting($("register-submit"), async () => {
    $("register-error").textContent = "";
    const fields = {
      username: $("register-username").value.trim(),
      email: $("register-email").value.trim(),
      organization: $("register-organization").value.trim(),
      password: $("register-password").value,
    };
    try {
      await api.register(fields);
      await showChat();
    } catch (problem) {
      $("register-error").textContent = registrationRefusal(problem);
    }
  });
});

/** Why the auth service did not create the account, in words an employee can act on. */
function registrationRefusal(problem) {
  if (problem.code === "registration_closed") {
    return (
      "This email address cannot join here. Sign-up is open only to addresses of domains an " +
      "organization allows, or with an invitation: ask your administrator for one."
    );
  }
  if (problem.status === 404) return "Registration is not available here; ask your administrator for an account.";
  if (problem.status === 429) return `Too many registrations. Try again in ${problem.retryAfter ?? 60} s.`;
  return problem.message;
}

$("signout").addEventListener("click", async () => {
  abortRunning();
  await api.logout();
  $("messages").replaceChildren();
  $("sessions").replaceChildren();
  showSignIn("");
  notify("You are signed out.");
});

// -- models -------------------------------------------------------------------------------------
async function loadModels() {
  const select = $("model");
  try {
    const { data } = await api.json("/v1/models");
    const names = new Set(data.map((model) => model.id));
    // "llama3.2" and "llama3.2:latest" are one model: list it once, by its short name.
    const models = data.filter((model) => !(model.id.endsWith(":latest") && names.has(model.id.slice(0, -7))));
    const previous = select.value;
    select.replaceChildren(
      ...models.map((model) => {
        const option = document.createElement("option");
        option.value = option.textContent = model.id;
        return option;
      }),
    );
    if (models.some((model) => model.id === previous)) select.value = previous;
  } catch (problem) {
    notify(`Models could not be loaded: ${explain(problem).text}`, { kind: "warn" });
  }
}

// -- sessions -----------------------------------------------------------------------------------
function formatTime(seconds) {
  if (!seconds) return "";
  return new Date(seconds * 1000).toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" });
}

async function loadSessions({ quiet = false } = {}) {
  let sessions;
  try {
    ({ sessions } = await api.json("/sessions?limit=50"));
  } catch (problem) {
    if (problem.status !== 401 && !quiet) notify(`Conversations could not be loaded: ${explain(problem).text}`, { kind: "warn" });
    return;
  }
  sessions.sort((a, b) => (b.last_activity || 0) - (a.last_activity || 0));
  $("sessions-empty").hidden = sessions.length > 0;
  $("sessions").replaceChildren(...sessions.map(sessionItem));
}

function sessionItem(session) {
  const item = document.createElement("li");
  item.className = "session";
  item.dataset.sessionId = session.session_id;
  item.dataset.state = session.state;
  if (session.session_id === state.sessionId) item.setAttribute("aria-current", "true");
  const open = document.createElement("button");
  open.type = "button";
  open.className = "session-open";
  const title = document.createElement("span");
  title.className = "session-title";
  title.dir = "auto";
  title.textContent = session.title || "Untitled conversation";
  const meta = document.createElement("span");
  meta.className = "session-meta";
  meta.textContent = `${session.state} · ${formatTime(session.last_activity)}`;
  open.append(title, meta);
  open.addEventListener("click", () => openSession(session.session_id));
  const actions = document.createElement("span");
  actions.className = "session-actions";
  if (session.state === "active") {
    actions.append(actionButton("End", `End “${title.textContent}”`, () => endSession(session.session_id)));
  }
  const remove = actionButton("Delete", `Delete “${title.textContent}”`, () => {
    if (remove.dataset.armed) return deleteSession(session.session_id);
    remove.dataset.armed = "1";
    remove.textContent = "Confirm";
    setTimeout(() => {
      delete remove.dataset.armed;
      remove.textContent = "Delete";
    }, 4000);
  });
  remove.classList.add("danger-text");
  actions.append(remove);
  item.append(open, actions);
  return item;
}

function actionButton(label, description, run) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "small";
  button.textContent = label;
  button.setAttribute("aria-label", description);
  button.addEventListener("click", run);
  return button;
}

async function endSession(id) {
  try {
    await api.json(`/sessions/${encodeURIComponent(id)}/end`, { method: "POST" });
    notify("Conversation ended; it is being archived.");
  } catch (problem) {
    notify(explain(problem).text, { kind: "error" });
  }
  await loadSessions();
}

async function deleteSession(id) {
  try {
    await api.call(`/sessions/${encodeURIComponent(id)}`, { method: "DELETE" });
    if (state.sessionId === id) newSession();
    notify("Conversation deleted.");
  } catch (problem) {
    notify(explain(problem).text, { kind: "error" });
  }
  await loadSessions();
}

async function openSession(id) {
  abortRunning();
  closeSidebar();
  let session;
  try {
    session = await api.json(`/sessions/${encodeURIComponent(id)}`);
  } catch (problem) {
    notify(problem.status === 404 ? "That conversation no longer exists." : explain(problem).text, { kind: "error" });
    return;
  }
  state.sessionId = id;
  $("conversation-title").textContent = session.title || "Untitled conversation";
  $("conversation").dataset.sessionState = session.state;
  $("messages").replaceChildren();
  for (const turn of session.turns) addMessage(turn.role, turn.content, "done");
  for (const item of $("sessions").children) {
    if (item.dataset.sessionId === id) item.setAttribute("aria-current", "true");
    else item.removeAttribute("aria-current");
  }
  $("prompt").focus();
}

function newSession() {
  abortRunning();
  state.sessionId = null;
  $("conversation-title").textContent = "New chat";
  delete $("conversation").dataset.sessionState;
  $("messages").replaceChildren();
  for (const item of $("sessions").children) item.removeAttribute("aria-current");
  closeSidebar();
  $("prompt").focus();
}
$("new-session").addEventListener("click", newSession);
$("refresh-sessions").addEventListener("click", () => loadSessions());

// -- messages -----------------------------------------------------------------------------------
function addMessage(role, text, status) {
  const item = document.createElement("li");
  item.className = `message ${role}`;
  item.dataset.state = status;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "You" : "Assistant";
  const body = document.createElement("div");
  body.className = "body";
  body.dir = "auto";
  if (role === "assistant") renderMarkdown(body, text);
  else body.textContent = text;
  const note = document.createElement("p");
  note.className = "note";
  note.setAttribute("role", "status");
  item.append(who, body, note);
  $("messages").append(item);
  item.scrollIntoView({ block: "end" });
  return item;
}

function setNote(item, text) {
  item.querySelector(".note").textContent = text;
}

/** Stop the running answer (Stop, a new chat, another conversation, signing out). */
function abortRunning() {
  if (!state.controller) return;
  stopChat(api, state.requestId); // the model stops now, not after the resume grace period
  state.controller.abort();
}

function setRunning(running) {
  $("send").hidden = running;
  $("stop").hidden = !running;
  $("prompt").disabled = running;
  if (!running) $("prompt").focus();
}

$("stop").addEventListener("click", abortRunning);

async function send(prompt) {
  if (!prompt.trim() || state.controller) return;
  hideNotice();
  if (!state.sessionId) {
    state.sessionId = crypto.randomUUID();
    $("conversation-title").textContent = prompt.trim().split("\n")[0].slice(0, 80);
  }
  state.lastPrompt = prompt;
  addMessage("user", prompt, "done");
  const answer = addMessage("assistant", "", "waiting");
  const body = answer.querySelector(".body");
  const controller = new AbortController();
  state.controller = controller;
  setRunning(true);
  let text = "";
  let tokens = 0;
  let painted = false;
  const paint = () => {
    painted = false;
    renderMarkdown(body, text);
    answer.scrollIntoView({ block: "end" });
  };
  const request = { session_id: state.sessionId, prompt, model: $("model").value || undefined };
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        const result = await streamChat(api, request, controller.signal, {
          started(requestId) {
            state.requestId = requestId;
          },
          token(content) {
            text += content;
            tokens += 1;
            answer.dataset.state = "streaming";
            answer.dataset.tokens = String(tokens);
            if (!painted) {
              painted = true;
              requestAnimationFrame(paint);
            }
          },
          reconnecting(n) {
            setNote(answer, `Connection lost; reconnecting (${n})…`);
          },
        });
        paint();
        finish(answer, result, text);
        break;
      } catch (problem) {
        if (problem.name === "AbortError") throw problem;
        if (problem.status === 503 && attempt < BUSY_RETRIES) {
          const wait = problem.retryAfter ?? 2;
          notify((left) => `The service is busy; retrying in ${Math.max(left, 0)} s…`, { kind: "warn", seconds: wait });
          setNote(answer, "Busy; retrying…");
          await sleep(wait * 1000, controller.signal);
          continue;
        }
        throw problem;
      }
    }
  } catch (problem) {
    if (problem.name === "AbortError") {
      paint();
      answer.dataset.state = "stopped";
      setNote(answer, "Stopped.");
    } else {
      answer.dataset.state = "error";
      const { text: message, seconds } = explain(problem);
      setNote(answer, typeof message === "function" ? "Not sent: too many requests." : message);
      if (problem.status !== 401) notify(message, { kind: "error", seconds, action: retryAction(problem) });
    }
  } finally {
    state.controller = null;
    state.requestId = null;
    setRunning(false);
    loadSessions({ quiet: true }); // the answer's own message stays on screen
  }
}

function retryAction(problem) {
  return problem.status === 429 ? null : { label: "Retry", run: () => send(state.lastPrompt) };
}

function finish(answer, result, text) {
  if (result.outcome === "done") {
    answer.dataset.state = "done";
    hideNotice();
    setNote(answer, "");
    if (!text) setNote(answer, "(empty answer)");
    return;
  }
  if (result.outcome === "error") {
    answer.dataset.state = "error";
    setNote(answer, `The answer failed: ${result.error.message || result.error.error}`);
    return;
  }
  answer.dataset.state = "lost";
  setNote(answer, "Connection lost before the answer finished.");
  notify("Connection lost before the answer finished.", {
    kind: "error",
    action: { label: "Retry", run: () => send(state.lastPrompt) },
  });
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => {
      clearTimeout(timer);
      reject(new DOMException("stopped", "AbortError"));
    });
  });
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const prompt = $("prompt").value;
  if (!prompt.trim()) return;
  $("prompt").value = "";
  send(prompt);
});

$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});

// -- phone layout: the session list as a drawer ---------------------------------------------------
function closeSidebar() {
  document.body.classList.remove("sidebar-open");
  $("toggle-sidebar").setAttribute("aria-expanded", "false");
}
$("toggle-sidebar").addEventListener("click", () => {
  const open = document.body.classList.toggle("sidebar-open");
  $("toggle-sidebar").setAttribute("aria-expanded", String(open));
});
document.addEventListener("keydown", (event) => {
  if (event.key === "Escape") closeSidebar();
});

// -- start --------------------------------------------------------------------------------------
async function start() {
  if (api.hasStoredLogin()) {
    try {
      await api.resume();
      await showChat();
      return;
    } catch {
      // the stored login is gone: sign in again (onSignedOut already showed why)
      if (!$("signin-view").hidden) return;
    }
  }
  showSignIn();
}
start();
