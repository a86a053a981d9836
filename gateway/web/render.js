// Model output is untrusted: Markdown is rendered by marked, then sanitized by DOMPurify before it
// touches the DOM. The page's CSP (Trusted Types) lets only DOMPurify's policy write HTML, so an
// innerHTML with anything else throws instead of running.
import { Marked } from "./marked.esm.js";
import DOMPurify from "./purify.es.mjs";

const markdown = new Marked({ gfm: true, breaks: true, async: false });

const PURIFY = {
  RETURN_TRUSTED_TYPE: true,
  FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select", "iframe", "object", "embed"],
  FORBID_ATTR: ["style", "srcset"],
  // Links and images: web, mail and in-page only (no javascript:, data: links, custom schemes).
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:|#)/i,
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A" && node.hasAttribute("href")) {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer nofollow");
  }
  if (node.nodeType === 1 && /^(P|LI|H[1-6]|BLOCKQUOTE|TD|TH)$/.test(node.tagName)) {
    node.setAttribute("dir", "auto");
  }
});

function copyButton(pre) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "copy";
  button.textContent = "Copy";
  button.setAttribute("aria-label", "Copy code");
  button.addEventListener("click", async () => {
    const code = pre.querySelector("code") || pre;
    try {
      await navigator.clipboard.writeText(code.textContent);
      button.textContent = "Copied";
    } catch {
      button.textContent = "Copy failed";
    }
    setTimeout(() => {
      button.textContent = "Copy";
    }, 1500);
  });
  return button;
}

/** Render `text` (Markdown from the model) into `element`, sanitized, with copy buttons. */
export function renderMarkdown(element, text) {
  element.innerHTML = DOMPurify.sanitize(markdown.parse(text), PURIFY);
  for (const pre of element.querySelectorAll("pre")) {
    const wrapper = document.createElement("div");
    wrapper.className = "code-block";
    pre.replaceWith(wrapper);
    pre.tabIndex = 0; // scrollable region: reachable by keyboard
    wrapper.append(copyButton(pre), pre);
  }
}
