// Tiny DOM builder. Every value from the API reaches the page as a text node or an attribute set
// through the DOM, never through innerHTML, so registry labels cannot inject markup.

/**
 * Builds an element.
 * h("button", {type: "button", onclick: fn, class: "primary"}, "Save")
 * Attributes: `class`, `for`, `on<event>` (a function), `dataset` (an object), booleans (set when true),
 * anything else through setAttribute. Children: strings, numbers, nodes, arrays; null/false are skipped.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (name === "value" && "value" in el) {
      el.value = value;
    } else if (name === "checked" || name === "selected") {
      el[name] = Boolean(value);
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces the children of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

let nextId = 0;
/** A page-unique id with a readable prefix (labels and aria-describedby need ids). */
export function uid(prefix = "f") {
  nextId += 1;
  return `${prefix}-${nextId}`;
}

/** "2026-11-26T12:00:00Z" → the reader's local date and time; empty for null. */
export function when(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

/** A TTL in seconds as people read it: 0 → "never", 86400 → "1 d". */
export function ttl(seconds) {
  const s = Number(seconds);
  if (!s) return "never";
  const units = [["d", 86400], ["h", 3600], ["min", 60]];
  for (const [unit, size] of units) {
    if (s % size === 0) return `${s / size} ${unit}`;
  }
  return `${s} s`;
}

/** A value shown in a table cell: JSON for lists and objects, "" for null. */
export function show(value) {
  if (value === null || value === undefined) return "";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/**
 * `text` with a line-break opportunity after each of `after`'s characters, as children for h(). Registry
 * labels have no spaces: "user_clicks_30d" wraps as "user_ / clicks_ / 30d" rather than mid-word; a decoded
 * vector ("0.5:1:2") is broken after its separators with `after` = ":".
 */
export function breakable(text, after = "_.-") {
  const escaped = after.replace(/[\\\]^-]/g, "\\$&");
  return String(text)
    .split(new RegExp(`(?<=[${escaped}])`))
    .flatMap((part, i) => (i ? [h("wbr"), part] : [part]));
}
