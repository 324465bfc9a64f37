// "Try it": retrieve features for some keys through the serving API (Horizon calls
// RetrieveDecodedResult) and show them decoded. #/try?entity=<e>

import { api, session } from "../api.js";
import { breakable, h, replace } from "../dom.js";
import { field, group, submitting } from "../forms.js";

function keyInputs(entity) {
  const list = h("ol", { class: "rows" });
  const rows = [];
  function addRow() {
    const i = rows.length;
    const inputs = entity.keys.map((k, c) =>
      field({ label: `${k.label} (key ${i + 1})`, loc: `keys.${i}.${c}`, required: true, attrs: { autocomplete: "off", class: "key-value" } }),
    );
    const row = { inputs, el: h("li", {}, h("div", { class: "row row-inline" }, inputs)) };
    rows.push(row);
    list.append(row.el);
    return row;
  }
  addRow();
  const el = group(
    "Keys",
    "keys",
    list,
    h("button", { type: "button", class: "secondary", onclick: () => addRow().inputs[0].input.focus() }, "Add key"),
  );
  const value = () => rows.map((r) => r.inputs.map((f) => f.input.value.trim())).filter((vals) => vals.some((v) => v !== ""));
  return { el, value };
}

function featurePicker(entity) {
  const groups = entity.feature_groups.map((fg, i) => {
    const boxes = fg.features.map((f) => field({ label: breakable(f.label), type: "checkbox", value: true, attrs: { value: f.label } }));
    const fs = h(
      "fieldset",
      { class: "group fg-pick", dataset: { loc: `feature_groups.${i}`, fg: fg.label } },
      h("legend", {}, breakable(fg.label), " ", h("span", { class: "dtype" }, `(${fg.data_type})`)),
      boxes,
    );
    return { fg, boxes, fs };
  });
  const value = () =>
    groups
      .map(({ fg, boxes }) => ({ label: fg.label, feature_labels: boxes.filter((b) => b.input.checked).map((b) => b.input.value) }))
      .filter((g) => g.feature_labels.length);
  const el = h("div", { class: "fg-picks" }, groups.map((g) => g.fs));
  return { el, value, empty: !groups.length };
}

// a cell's text in a box of bounded width (app.css), so that long labels and vectors wrap in their column
const cell = (...content) => h("span", { class: "cell" }, content);
// A vector is decoded as "v1:v2:…": broken after a separator, not inside a number. A very long one (thousands
// of values) wraps anywhere instead, rather than costing a DOM node per value.
const value = (text) => cell(text.length <= 2000 ? breakable(text, ":") : text);

function resultTable(res) {
  const headers = res.keys_schema.map((k) => cell(breakable(k)));
  const columns = [];
  for (const fs of res.feature_schemas) {
    for (const f of fs.features) {
      headers.push(cell(breakable(`${fs.feature_group_label}.${f.label}`)));
      columns.push(f.column_idx);
    }
  }
  const nKeys = res.keys_schema.length;
  const caption = `${res.rows.length} row${res.rows.length === 1 ? "" : "s"}, decoded by the serving API`;
  const table = h(
    "table",
    { class: "results-table", id: "try-results" },
    h("caption", {}, h("span", {}, caption)),
    h("thead", {}, h("tr", {}, headers.map((t, i) => h("th", { scope: "col", class: i < nKeys ? "key" : "" }, t)))),
    h(
      "tbody",
      {},
      res.rows.map((row) =>
        h(
          "tr",
          {},
          row.keys.map((k) => h("th", { scope: "row", class: "key" }, cell(k))),
          columns.map((idx) => h("td", {}, value(row.columns[idx] ?? ""))),
        ),
      ),
    ),
  );
  // a wide result scrolls sideways in this box (focusable, so the keyboard can scroll it too)
  return h("div", { class: "table-scroll", role: "region", tabindex: "0", "aria-label": `Results: ${caption}` }, table);
}

export async function render({ root, query, banner, announce, navigate }) {
  // only the entities try-it may read (Horizon's try_entities; null: every one)
  const allowed = session().try_entities;
  const entities = (await api.entities()).filter((e) => !Array.isArray(allowed) || allowed.includes(e.label));
  root.append(
    h("h1", {}, "Try it"),
    h("p", { class: "muted" }, "Reads features for some keys from the serving API, exactly as a model server would, and shows them decoded."),
  );
  if (!entities.length) {
    root.append(h("p", {}, Array.isArray(allowed) ? "No entity that try-it may read is registered yet." : "No entity is registered yet."));
    return;
  }
  const labels = entities.map((e) => e.label);
  const chosen = labels.includes(query.get("entity")) ? query.get("entity") : labels[0];
  const entitySel = field({ label: "Entity", type: "select", loc: "entity", value: chosen, options: labels.map((l) => [l, l]) });
  entitySel.input.addEventListener("change", () => navigate(`#/try?entity=${encodeURIComponent(entitySel.input.value)}`));
  const entity = await api.entity(chosen);
  const keys = keyInputs(entity);
  const picker = featurePicker(entity);
  const output = h("section", { class: "try-output", "aria-live": "polite", "aria-label": "Retrieved features" });
  const form = h(
    "form",
    { class: "card", id: "try-form", novalidate: true, "aria-label": "Retrieve features" },
    entitySel,
    keys.el,
    group("Features", "feature_groups", picker.empty ? h("p", { class: "muted" }, "This entity has no feature groups yet.") : picker.el),
    h("button", { type: "submit", class: "primary", disabled: picker.empty }, "Retrieve"),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    submitting(form, banner, async () => {
      const body = {
        entity: entity.label,
        keys_schema: entity.keys.map((k) => k.label),
        keys: keys.value(),
        feature_groups: picker.value(),
      };
      replace(output, h("p", { class: "muted" }, "Retrieving…"));
      try {
        const res = await api.tryRetrieve(body);
        replace(output, resultTable(res));
        announce(`${res.rows.length} row(s) retrieved.`);
      } catch (err) {
        output.replaceChildren();
        throw err;
      }
    });
  });
  root.append(form, output);
}
