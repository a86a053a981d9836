// Server-sent events read from a fetch() body (EventSource cannot POST or send a bearer token).
// Follows the WHATWG parsing rules for the fields the platform sends: event, data, id; comment
// lines (": keep-alive") are skipped.

/** Yields {event, data, id} for every event of an SSE body (a ReadableStream of bytes). */
export async function* sseEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let event = "message";
  let data = [];
  let id = null;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let newline;
      while ((newline = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, newline);
        buffer = buffer.slice(newline + (buffer.startsWith("\r\n", newline) ? 2 : 1));
        if (line === "") {
          if (data.length) yield { event, data: data.join("\n"), id };
          event = "message";
          data = [];
          id = null;
          continue;
        }
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? "" : line.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "event") event = value;
        else if (field === "data") data.push(value);
        else if (field === "id") id = value;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

/**
 * Streams one chat answer: POST /chat, then, if the connection drops mid-answer, resumes it with
 * GET /chat/{request_id}/events and Last-Event-ID (RESUME_CONTRACT: the server's request id comes
 * in X-Chat-Request-Id, every event has an id). Calls handlers.token(text, seq) per token and
 * resolves with {outcome: "done" | "error" | "lost", ...}; handlers.started(requestId) first.
 * Aborting `signal` rejects with an AbortError. A disconnect alone leaves a resumable stream a
 * grace period on the server; the Stop button also sends DELETE /chat/{request_id} (stopChat).
 */
export async function streamChat(api, body, signal, handlers) {
  const response = await api.call("/chat", { method: "POST", body: { ...body, stream: true }, signal });
  const requestId = response.headers.get("X-Chat-Request-Id");
  handlers.started?.(requestId);
  let lastId = null;
  let current = response;
  for (let attempt = 0; ; attempt++) {
    try {
      for await (const message of current ? sseEvents(current.body) : []) {
        if (message.id !== null) lastId = message.id;
        const payload = JSON.parse(message.data);
        if (message.event === "token") handlers.token(payload.content, payload.seq);
        else if (message.event === "done") return { outcome: "done", done: payload };
        else if (message.event === "error") return { outcome: "error", error: payload };
      }
    } catch (error) {
      if (signal.aborted) throw error;
      // fall through: the connection broke mid-answer
    }
    if (signal.aborted) throw new DOMException("stopped", "AbortError");
    // The stream ended without done/error: the connection was lost. Resume where it stopped.
    if (!requestId || attempt >= 3) return { outcome: "lost", requestId, resumable: Boolean(requestId) };
    handlers.reconnecting?.(attempt + 1);
    await new Promise((resolve) => setTimeout(resolve, 500 * 2 ** attempt));
    try {
      const headers = lastId === null ? {} : { "Last-Event-ID": lastId };
      current = await api.call(`/chat/${encodeURIComponent(requestId)}/events`, { signal, headers });
    } catch (error) {
      if (signal.aborted) throw error;
      if (error.status === 0 && attempt < 2) {
        current = null; // still offline: try again
        continue;
      }
      return { outcome: "lost", requestId, resumable: false, problem: error };
    }
  }
}

/** Stop a generation now (the server would otherwise wait for a resume); best effort. */
export function stopChat(api, requestId) {
  if (!requestId) return Promise.resolve();
  return api.call(`/chat/${encodeURIComponent(requestId)}`, { method: "DELETE" }).catch(() => {});
}
