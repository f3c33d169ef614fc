// Answers as Markdown: parsed by marked, cleaned by DOMPurify, returned as DOM nodes.
//
// Model output and stored messages are untrusted. Raw HTML inside them is shown as the text
// it is (marked's own escaping), images become links (nothing remote loads), and whatever
// marked produces is sanitized before it reaches the page. No HTML string is ever assigned
// to the DOM: DOMPurify hands back a fragment.

import { Marked, Renderer } from "./vendor/marked.esm.js";
import DOMPurify from "./vendor/purify.es.mjs";

const asText = (renderer, text) =>
  Renderer.prototype.text.call(renderer, { type: "text", raw: text, text, escaped: false });

const marked = new Marked({
  gfm: true,
  breaks: false,
  renderer: {
    html({ text, block }) {
      const shown = asText(this, text);
      return block ? `<p>${shown}</p>` : shown;
    },
    image({ href, title, text }) {
      const label = `image: ${text || href}`;
      const tokens = [{ type: "text", raw: label, text: label, escaped: false }];
      return Renderer.prototype.link.call(this, { href, title, text: label, tokens });
    },
  },
});

const PURIFY = {
  USE_PROFILES: { html: true },
  FORBID_TAGS: ["img", "style", "form", "input", "button", "textarea", "select", "video",
    "audio", "picture", "source", "svg", "math", "iframe"],
  FORBID_ATTR: ["style", "class", "id", "srcset"],
  ALLOW_DATA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

// A DocumentFragment holding `source` rendered as sanitized Markdown.
export function renderMarkdown(source) {
  return DOMPurify.sanitize(marked.parse(source), PURIFY);
}
