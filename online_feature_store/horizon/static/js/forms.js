// Accessible form fields and API error display.
//
// Every input that maps to a request field carries data-loc: the dotted path of the field in the request
// body ("payload.features.0.default"). A 422 answer's `loc` (["body", "payload", "features", 0, "default"])
// is matched against it, longest prefix first, and the message is shown next to that field (linked with
// aria-describedby, the field marked aria-invalid). What matches no field goes to the page banner.

import { ApiError } from "./api.js";
import { h, replace, uid } from "./dom.js";

/** What Horizon asks of a new password (the server checks it and says what is wrong). */
export const PASSWORD_RULES =
  "At least 12 characters, not containing the user name, and not easy to guess (a few unrelated words will do).";

/**
 * A labelled field: {label, loc, type, value, required, help, options: [[value, text]], list, attrs}.
 * type "select" | "textarea" | "checkbox" | any input type. Returns the wrapper; `.input` is the control.
 */
export function field({ label, loc, type = "text", value, required, help, options, list, attrs = {} }) {
  const id = uid("field");
  const errorId = `${id}-error`;
  const helpId = help ? `${id}-help` : null;
  const describedBy = [helpId, errorId].filter(Boolean).join(" ");
  const common = { id, "aria-describedby": describedBy, required, dataset: loc ? { loc } : undefined, ...attrs };
  let input;
  if (type === "select") {
    input = h(
      "select",
      common,
      (options || []).map(([v, text]) => h("option", { value: v, selected: String(v) === String(value ?? "") }, text)),
    );
  } else if (type === "textarea") {
    input = h("textarea", { ...common, rows: attrs.rows || 3 });
    input.value = value ?? "";
  } else if (type === "checkbox") {
    input = h("input", { ...common, type, checked: Boolean(value) });
  } else {
    input = h("input", { ...common, type, value: value ?? "", list });
  }
  // the asterisk sits outside the <label> so it is not part of the field's accessible name ("required"
  // is announced from the input's own attribute)
  const labelText = h("label", { for: id }, label);
  const labelEl = required ? h("span", { class: "label-line" }, labelText, h("span", { class: "req", "aria-hidden": "true" }, " *")) : labelText;
  const wrapper = h(
    "div",
    { class: `field field-${type}` },
    type === "checkbox" ? [input, labelEl] : [labelEl, input],
    help ? h("p", { class: "help", id: helpId }, help) : null,
    h("p", { class: "field-error", id: errorId }),
  );
  wrapper.input = input;
  return wrapper;
}

/** A group of fields with its own error slot (for errors about a whole list or row). */
export function group(legend, loc, ...children) {
  const errorId = uid("group-error");
  const fs = h(
    "fieldset",
    { class: "group", "aria-describedby": errorId, dataset: loc ? { loc } : undefined },
    h("legend", {}, legend),
    children,
    h("p", { class: "field-error", id: errorId }),
  );
  return fs;
}

// Looked up inside the form, so errors can be placed before the form is attached to the page.
function errorSlot(form, el) {
  const ids = (el.getAttribute("aria-describedby") || "").split(/\s+/);
  for (const id of ids) {
    const slot = id && form.querySelector(`#${CSS.escape(id)}`);
    if (slot && slot.classList.contains("field-error")) return slot;
  }
  return null;
}

/** Removes the messages of a previous submission. */
export function clearErrors(form) {
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  for (const slot of form.querySelectorAll(".field-error")) slot.replaceChildren();
}

function locPath(loc) {
  const parts = loc.map(String);
  // FastAPI prefixes the source of the value; the form's data-loc paths start inside the body.
  if (["body", "query", "path"].includes(parts[0])) parts.shift();
  // A body that is a union tagged by "kind" (change requests) gets the tag in its loc:
  // ["body", "create_feature_group", "payload", ...]. The form's paths do not have it.
  if (parts.length > 1 && /^[a-z_]+$/.test(parts[0]) && ["payload", "description"].includes(parts[1])) parts.shift();
  return parts;
}

// pydantic's wording for the common cases, in the words of the form
const FRIENDLY = {
  missing: () => "This field is required.",
  string_pattern_mismatch: () => "Not a valid name: use letters, digits and _ . - only.",
  extra_forbidden: () => "This field is not expected here.",
};

function friendly(item) {
  const make = FRIENDLY[item.type];
  return make ? make(item) : item.msg;
}

function findTarget(form, parts) {
  for (let n = parts.length; n > 0; n -= 1) {
    const path = parts.slice(0, n).join(".");
    const el = form.querySelector(`[data-loc="${CSS.escape(path)}"]`);
    if (el) return el;
  }
  return null;
}

/**
 * Shows `err` on `form`: field errors next to their fields, everything else in the banner.
 * Focuses the first invalid field so keyboard and screen-reader users land on it.
 */
export function showErrors(form, err, banner) {
  clearErrors(form);
  if (!(err instanceof ApiError)) {
    banner.error(String(err && err.message ? err.message : err));
    return;
  }
  const items = err.fieldErrors;
  if (!items.length) {
    banner.error(err.message, err.status);
    return;
  }
  const unplaced = [];
  let first = null;
  for (const item of items) {
    const parts = locPath(item.loc);
    const target = findTarget(form, parts);
    const slot = target && errorSlot(form, target);
    if (!slot) {
      // problems with the request as a whole (loc ["body"] or ["body", "payload"]) need no location
      const where = parts.length > 1 ? `${parts.join(".")}: ` : "";
      unplaced.push(`${where}${friendly(item)}`);
      continue;
    }
    target.setAttribute("aria-invalid", "true");
    slot.append(h("span", {}, friendly(item)));
    first = first || target;
  }
  if (unplaced.length) banner.error(unplaced.join("\n"), err.status);
  else banner.error("Please correct the highlighted fields.", err.status);
  if (first && typeof first.focus === "function") {
    const focusable = first.matches("fieldset") ? first.querySelector("input, select, textarea, button") : first;
    (focusable || first).focus();
  }
}

/** Puts a field-level message on the field with data-loc `loc` (client-side checks). */
export function fieldError(form, loc, message) {
  const target = form.querySelector(`[data-loc="${CSS.escape(loc)}"]`);
  const slot = target && errorSlot(form, target);
  if (!slot) return false;
  target.setAttribute("aria-invalid", "true");
  replace(slot, message);
  target.focus();
  return true;
}

/**
 * Runs `action` for a form submission with the submit button disabled and aria-busy set, shows errors
 * with showErrors. Resolves to the action's result, or undefined when it failed.
 */
export async function submitting(form, banner, action) {
  // buttons that were already disabled (nothing to submit) stay disabled afterwards
  const buttons = [...form.querySelectorAll("button")].filter((b) => !b.disabled);
  buttons.forEach((b) => (b.disabled = true));
  form.setAttribute("aria-busy", "true");
  banner.clear();
  clearErrors(form);
  try {
    return await action();
  } catch (err) {
    showErrors(form, err, banner);
    return undefined;
  } finally {
    form.removeAttribute("aria-busy");
    buttons.forEach((b) => (b.disabled = false));
  }
}
