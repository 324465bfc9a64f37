// Editors for the repeated parts of change-request forms: feature rows, entity keys, store settings,
// cache policies. Each returns {el, value()}; inputs carry data-loc paths so API errors land next to them.

import { h, uid } from "./dom.js";
import { field, group } from "./forms.js";

export const isVector = (dtype) => /vector/i.test(dtype || "");
export const isString = (dtype) => /string/i.test(dtype || "");

/**
 * A feature default as typed → the JSON value the registry expects. Empty → undefined (the type's zero).
 * String scalars are taken verbatim; other types are read as JSON (numbers, true/false, [lists]); a vector
 * may also be typed as "1, 2, 3". What cannot be read is sent as typed, so the API names the problem.
 */
export function parseDefault(text, dtype) {
  if (text === "") return undefined;
  if (isString(dtype) && !isVector(dtype)) return text;
  try {
    return JSON.parse(text);
  } catch {
    if (isVector(dtype) && text.includes(",")) {
      return text.split(",").map((part) => {
        const t = part.trim();
        if (isString(dtype)) return t;
        const n = Number(t);
        return t !== "" && !Number.isNaN(n) ? n : t;
      });
    }
    return text;
  }
}

/** "12" → 12; "" → undefined; anything else as typed (the API reports it). */
export function parseCount(text) {
  const t = String(text).trim();
  if (t === "") return undefined;
  return /^\d+$/.test(t) ? Number(t) : t;
}

/** Drops undefined members, so omitted fields are not sent at all. */
export function compact(obj) {
  return Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined));
}

/**
 * Rows of features: label, default, and a string or vector length when `dtype()` calls for one.
 * `loc` is the path of the list ("payload.features"). Call `typeChanged()` when the data type changes.
 */
export function featureRows(loc, dtype, { initial = 1 } = {}) {
  const list = h("ol", { class: "rows" });
  const rows = [];

  function renumber() {
    rows.forEach((row, i) => {
      row.legend.textContent = `Feature ${i + 1}`;
      row.label.input.dataset.loc = `${loc}.${i}.label`;
      row.def.input.dataset.loc = `${loc}.${i}.default`;
      row.slen.input.dataset.loc = `${loc}.${i}.string_length`;
      row.vlen.input.dataset.loc = `${loc}.${i}.vector_length`;
      row.fieldset.dataset.loc = `${loc}.${i}`;
      row.remove.setAttribute("aria-label", `Remove feature ${i + 1}`);
      row.remove.disabled = rows.length === 1;
    });
  }

  function typeChanged() {
    const t = dtype();
    for (const row of rows) {
      row.slen.hidden = !isString(t);
      row.vlen.hidden = !isVector(t);
    }
  }

  function addRow() {
    const label = field({ label: "Label", required: true, attrs: { autocomplete: "off", class: "feature-label" } });
    const def = field({
      label: "Default",
      help: "Empty: the type's zero. Vectors: [1, 2] or 1, 2.",
      attrs: { autocomplete: "off", class: "feature-default" },
    });
    const slen = field({ label: "String length", type: "number", help: "Default 255", attrs: { min: 0, max: 65535 } });
    const vlen = field({ label: "Vector length", type: "number", required: true, attrs: { min: 1 } });
    const legend = h("legend");
    const row = { label, def, slen, vlen, legend };
    row.remove = h("button", {
      type: "button",
      class: "link danger",
      onclick: () => {
        rows.splice(rows.indexOf(row), 1);
        row.el.remove();
        renumber();
        const next = rows[0];
        if (next) next.label.input.focus();
      },
    }, "Remove");
    const errorId = uid("row-error");
    // errors about the whole row go to the fieldset's own slot (it carries the row's loc)
    row.fieldset = h(
      "fieldset",
      { class: "row", "aria-describedby": errorId },
      legend, label, def, slen, vlen, row.remove,
      h("p", { class: "field-error", id: errorId }),
    );
    row.el = h("li", {}, row.fieldset);
    rows.push(row);
    list.append(row.el);
    renumber();
    typeChanged();
    return row;
  }

  for (let i = 0; i < initial; i += 1) addRow();
  const addButton = h("button", { type: "button", class: "secondary", onclick: () => addRow().label.input.focus() }, "Add feature");
  const el = group("Features", loc, list, addButton);

  function value() {
    const t = dtype();
    return rows.map((row) =>
      compact({
        label: row.label.input.value.trim(),
        default: parseDefault(row.def.input.value, t),
        string_length: isString(t) ? parseCount(row.slen.input.value) : undefined,
        vector_length: isVector(t) ? parseCount(row.vlen.input.value) : undefined,
      }),
    );
  }
  return { el, value, typeChanged, addRow, rows };
}

/** Ordered entity keys: a logical label and the stored column (defaults to the label). */
export function keyRows(loc) {
  const list = h("ol", { class: "rows" });
  const rows = [];
  function renumber() {
    rows.forEach((row, i) => {
      row.legend.textContent = `Key ${i + 1}`;
      row.label.input.dataset.loc = `${loc}.${i}.label`;
      row.column.input.dataset.loc = `${loc}.${i}.column`;
      row.remove.setAttribute("aria-label", `Remove key ${i + 1}`);
      row.remove.disabled = rows.length === 1;
    });
  }
  function addRow() {
    const label = field({ label: "Key label", required: true, help: "What clients send in keys_schema", attrs: { autocomplete: "off" } });
    const column = field({ label: "Stored column", help: "Empty: same as the label", attrs: { autocomplete: "off" } });
    const legend = h("legend");
    const row = { label, column, legend };
    row.remove = h("button", {
      type: "button",
      class: "link danger",
      onclick: () => {
        rows.splice(rows.indexOf(row), 1);
        row.el.remove();
        renumber();
      },
    }, "Remove");
    row.el = h("li", {}, h("fieldset", { class: "row" }, legend, label, column, row.remove));
    rows.push(row);
    list.append(row.el);
    renumber();
    return row;
  }
  addRow();
  const el = group("Keys (in order)", loc, list, h("button", { type: "button", class: "secondary", onclick: () => addRow().label.input.focus() }, "Add key"));
  const value = () =>
    rows.map((row) => {
      const label = row.label.input.value.trim();
      return { label, column: row.column.input.value.trim() || label };
    });
  return { el, value };
}

/** Store settings as name = value rows (every value is a string in the registry). */
export function settingRows(loc, suggestions) {
  const list = h("ol", { class: "rows" });
  const datalistId = uid("settings");
  const datalist = h("datalist", { id: datalistId });
  const rows = [];
  function setSuggestions(names) {
    datalist.replaceChildren(...names.map((n) => h("option", { value: n })));
  }
  function addRow(name = "", val = "") {
    const nameF = field({ label: "Setting", value: name, list: datalistId, attrs: { autocomplete: "off" } });
    const valueF = field({ label: "Value", value: val, attrs: { autocomplete: "off" } });
    const row = { nameF, valueF };
    const sync = () => {
      valueF.input.dataset.loc = `${loc}.${nameF.input.value.trim()}`;
    };
    nameF.input.addEventListener("input", sync);
    sync();
    row.el = h(
      "li",
      {},
      h("div", { class: "row row-inline" }, nameF, valueF, h("button", {
        type: "button",
        class: "link danger",
        "aria-label": "Remove setting",
        onclick: () => {
          rows.splice(rows.indexOf(row), 1);
          row.el.remove();
        },
      }, "Remove")),
    );
    rows.push(row);
    list.append(row.el);
    return row;
  }
  setSuggestions(suggestions);
  const el = group("Settings", loc, datalist, list, h("button", { type: "button", class: "secondary", onclick: () => addRow().nameF.input.focus() }, "Add setting"));
  const value = () =>
    Object.fromEntries(rows.map((r) => [r.nameF.input.value.trim(), r.valueF.input.value]).filter(([k]) => k));
  return { el, value, addRow, setSuggestions, rows };
}

/** One cache tier: enabled, TTL, jitter. */
function tierEditor(loc, title, tier = {}) {
  const enabled = field({ label: `Enable the ${title}`, type: "checkbox", value: tier.enabled, loc: `${loc}.enabled` });
  const ttlF = field({ label: "TTL (seconds)", type: "number", value: tier.ttl_seconds ?? 0, loc: `${loc}.ttl_seconds`, attrs: { min: 0 } });
  const jitter = field({
    label: "Jitter (%)",
    type: "number",
    value: tier.jitter_percent ?? 0,
    loc: `${loc}.jitter_percent`,
    attrs: { min: 0, max: 100 },
  });
  const el = group(title[0].toUpperCase() + title.slice(1), loc, enabled, ttlF, jitter);
  const value = () => ({
    enabled: enabled.input.checked,
    ttl_seconds: parseCount(ttlF.input.value) ?? 0,
    jitter_percent: parseCount(jitter.input.value) ?? 0,
  });
  return { el, value };
}

/** An entity's cache policy: {in_process: tier, distributed: tier}. */
export function cacheEditor(loc, cache = {}) {
  const inProcess = tierEditor(`${loc}.in_process`, "in-process cache", cache.in_process);
  const distributed = tierEditor(`${loc}.distributed`, "distributed cache", cache.distributed);
  const el = group("Cache policy", loc, inProcess.el, distributed.el);
  const value = () => ({ in_process: inProcess.value(), distributed: distributed.value() });
  return { el, value };
}
