// Change requests: one form per kind. Nothing changes the registry directly: a submitted form becomes a
// PENDING request that an admin approves (#/approvals). #/new, #/new/<kind>?entity=<e>&fg=<fg>

import { api } from "../api.js";
import { h, replace, show } from "../dom.js";
import { field, fieldError, group, submitting } from "../forms.js";
import { cacheEditor, compact, featureRows, isString, isVector, keyRows, parseCount, parseDefault, settingRows } from "../editors.js";

const STORE_SETTINGS = {
  sqlite: ["path", "busy_timeout", "purge_interval"],
  redis: ["url", "cluster_nodes", "pool_size", "connect_timeout", "socket_timeout", "retries"],
  scylla: ["hosts", "port", "keyspace", "replication_factor", "consistency", "local_dc", "connect_timeout", "request_timeout"],
};

const KINDS = {
  create_store: { title: "New store", blurb: "Where feature groups keep their data: SQLite, Redis or ScyllaDB.", build: storeForm },
  create_entity: { title: "New entity", blurb: "Something features describe (a user, an item), with its keys.", build: entityForm },
  update_entity: { title: "Entity cache policy", blurb: "In-process and distributed cache settings of an entity.", build: entityCacheForm },
  create_feature_group: { title: "New feature group", blurb: "Features of one type, stored and served together.", build: fgForm },
  update_feature_group: { title: "Feature group TTL and caching", blurb: "Change how long rows live and whether they are cached.", build: fgUpdateForm },
  add_features: { title: "Add features", blurb: "Adds features to a feature group (a new version).", build: addFeaturesForm },
  edit_features: { title: "Edit features", blurb: "Change defaults and string lengths.", build: editFeaturesForm },
  delete_features: { title: "Delete features", blurb: "Removes features from a feature group (a new version).", build: deleteFeaturesForm },
  create_caller: { title: "New client or job", blurb: "A reader client or writer job with its own token.", build: callerForm },
};

function menu() {
  return h(
    "ul",
    { class: "menu" },
    Object.entries(KINDS).map(([kind, k]) =>
      h("li", {}, h("a", { href: `#/new/${kind}`, class: "menu-item" }, h("strong", {}, k.title), h("span", {}, k.blurb))),
    ),
  );
}

/** An entity select and, when `withFg`, a dependent feature-group select; `onChange()` after each change. */
async function entityPicker(query, { withFg = false, onChange = () => {} } = {}) {
  const entities = await api.entities();
  const labels = entities.map((e) => e.label);
  const initial = labels.includes(query.get("entity")) ? query.get("entity") : labels[0] || "";
  const entity = field({
    label: "Entity",
    type: "select",
    loc: "payload.entity",
    required: true,
    value: initial,
    options: labels.map((l) => [l, l]),
  });
  const fg = withFg ? field({ label: "Feature group", type: "select", loc: "payload.feature_group", required: true }) : null;
  async function fillFgs(preferred) {
    if (!fg) return;
    const e = entities.find((x) => x.label === entity.input.value);
    const fgs = e ? e.feature_groups : [];
    fg.input.replaceChildren(...fgs.map((l) => h("option", { value: l, selected: l === preferred }, l)));
  }
  await fillFgs(query.get("fg"));
  entity.input.addEventListener("change", async () => {
    await fillFgs(null);
    await onChange();
  });
  if (fg) fg.input.addEventListener("change", () => onChange());
  return { entity, fg, empty: !labels.length };
}

function noEntities() {
  return h("p", {}, "No entity is registered yet. ", h("a", { href: "#/new/create_entity" }, "Request a new entity"), " first (and have it approved).");
}

function storeForm() {
  const id = field({ label: "Store id", loc: "payload.id", required: true, attrs: { autocomplete: "off" } });
  const kind = field({ label: "Kind", type: "select", loc: "payload.kind", value: "sqlite", options: Object.keys(STORE_SETTINGS).map((k) => [k, k]) });
  const settings = settingRows("payload.settings", STORE_SETTINGS.sqlite);
  settings.addRow("path", "");
  kind.input.addEventListener("change", () => settings.setSuggestions(STORE_SETTINGS[kind.input.value] || []));
  return {
    fields: [id, kind, settings.el],
    payload: () => ({ id: id.input.value.trim(), kind: kind.input.value, settings: settings.value() }),
  };
}

function entityForm() {
  const label = field({ label: "Entity label", loc: "payload.label", required: true, attrs: { autocomplete: "off" } });
  const keys = keyRows("payload.keys");
  const useCache = field({ label: "Set a cache policy now", type: "checkbox" });
  const cache = cacheEditor("payload.cache");
  cache.el.hidden = true;
  useCache.input.addEventListener("change", () => {
    cache.el.hidden = !useCache.input.checked;
  });
  return {
    fields: [label, keys.el, useCache, cache.el],
    payload: () =>
      compact({ label: label.input.value.trim(), keys: keys.value(), cache: useCache.input.checked ? cache.value() : undefined }),
  };
}

async function entityCacheForm({ query }) {
  const holder = h("div");
  let cache;
  const picker = await entityPicker(query, {
    onChange: async () => {
      const e = await api.entity(picker.entity.input.value);
      cache = cacheEditor("payload.cache", e.cache);
      replace(holder, cache.el);
    },
  });
  if (picker.empty) return { fields: [noEntities()], disabled: true };
  const e = await api.entity(picker.entity.input.value);
  cache = cacheEditor("payload.cache", e.cache);
  holder.append(cache.el);
  return {
    fields: [picker.entity, holder],
    payload: () => ({ label: picker.entity.input.value, cache: cache.value() }),
    locAliases: { "payload.label": "payload.entity" },
  };
}

async function fgForm({ query }) {
  const [types, stores, picker] = await Promise.all([api.dataTypes(), api.stores(), entityPicker(query)]);
  if (picker.empty) return { fields: [noEntities()], disabled: true };
  const label = field({ label: "Feature group label", loc: "payload.label", required: true, attrs: { autocomplete: "off" } });
  const dtype = field({
    label: "Data type",
    type: "select",
    loc: "payload.data_type",
    value: types.includes("fp32") ? "fp32" : types[0],
    options: types.map((t) => [t, t]),
    help: "Embeddings: bf16vector (bfloat16, half of fp32's bytes) or q8vector (int8 with one scale per vector, 4 + n bytes); both are this project's types, unknown to reference clients (docs/embeddings.md)",
  });
  const ttlF = field({
    label: "TTL (seconds)",
    type: "number",
    loc: "payload.ttl_seconds",
    value: 0,
    help: "0: rows never expire",
    attrs: { min: 0 },
  });
  const storeList = `stores-${Date.now()}`;
  const store = field({
    label: "Store",
    loc: "payload.store",
    required: true,
    value: stores.length ? stores[0].id : "",
    list: storeList,
    help: stores.length ? "A registered store (or one whose request is pending)" : "No store is registered yet: request one first",
    attrs: { autocomplete: "off" },
  });
  const inProc = field({ label: "Cache in process", type: "checkbox", loc: "payload.in_process_cache" });
  const dist = field({ label: "Cache in the distributed cache", type: "checkbox", loc: "payload.distributed_cache" });
  const features = featureRows("payload.features", () => dtype.input.value, { initial: 1 });
  dtype.input.addEventListener("change", features.typeChanged);
  return {
    fields: [
      picker.entity,
      label,
      dtype,
      ttlF,
      store,
      h("datalist", { id: storeList }, stores.map((s) => h("option", { value: s.id }, `${s.id} (${s.kind})`))),
      inProc,
      dist,
      features.el,
    ],
    payload: () => ({
      entity: picker.entity.input.value,
      label: label.input.value.trim(),
      data_type: dtype.input.value,
      ttl_seconds: parseCount(ttlF.input.value) ?? 0,
      store: store.input.value.trim(),
      in_process_cache: inProc.input.checked,
      distributed_cache: dist.input.checked,
      features: features.value(),
    }),
  };
}

/** Loads the chosen FG into `holder` with `build(fg)` whenever the entity or FG changes. */
async function withFeatureGroup(query, build) {
  const holder = h("div", { class: "fg-part" });
  let current = null;
  const load = async () => {
    const fgLabel = picker.fg.input.value;
    if (!fgLabel) {
      current = null;
      replace(holder, h("p", { class: "muted" }, "This entity has no feature groups yet."));
      return;
    }
    const fg = await api.featureGroup(picker.entity.input.value, fgLabel);
    current = build(fg);
    replace(holder, current.fields);
  };
  const picker = await entityPicker(query, { withFg: true, onChange: load });
  if (picker.empty) return { fields: [noEntities()], disabled: true };
  await load();
  return {
    fields: [picker.entity, picker.fg, holder],
    payload: () => ({
      entity: picker.entity.input.value,
      feature_group: picker.fg.input.value,
      ...(current ? current.payload() : {}),
    }),
  };
}

async function fgUpdateForm({ query }) {
  const form = await withFeatureGroup(query, (fg) => {
    const ttlF = field({ label: "TTL (seconds)", type: "number", loc: "payload.ttl_seconds", value: fg.ttl_seconds, help: "0: never expire", attrs: { min: 0 } });
    const inProc = field({ label: "Cache in process", type: "checkbox", loc: "payload.in_process_cache", value: fg.in_process_cache });
    const dist = field({ label: "Cache in the distributed cache", type: "checkbox", loc: "payload.distributed_cache", value: fg.distributed_cache });
    return {
      fields: [ttlF, inProc, dist],
      payload: () => ({
        ttl_seconds: parseCount(ttlF.input.value) ?? 0,
        in_process_cache: inProc.input.checked,
        distributed_cache: dist.input.checked,
      }),
    };
  });
  if (form.disabled) return form;
  // update_feature_group names its FG "label", the other FG kinds "feature_group"
  return {
    ...form,
    payload: () => {
      const { feature_group: fgLabel, ...rest } = form.payload();
      return { ...rest, label: fgLabel };
    },
    locAliases: { "payload.label": "payload.feature_group" },
  };
}

async function addFeaturesForm({ query }) {
  return withFeatureGroup(query, (fg) => {
    const rows = featureRows("payload.features", () => fg.data_type, { initial: 1 });
    return {
      fields: [h("p", { class: "muted" }, `Type ${fg.data_type}; active version ${fg.active_version}, the new features make version ${fg.active_version + 1}.`), rows.el],
      payload: () => ({ features: rows.value() }),
    };
  });
}

async function editFeaturesForm({ query }) {
  return withFeatureGroup(query, (fg) => {
    const rows = fg.features.map((f, i) => {
      const def = field({ label: `Default of ${f.label}`, value: show(f.default), loc: `payload.features.${i}.default`, attrs: { autocomplete: "off" } });
      const slen = isString(fg.data_type)
        ? field({ label: `String length of ${f.label}`, type: "number", value: f.string_length, loc: `payload.features.${i}.string_length`, attrs: { min: 0, max: 65535 } })
        : null;
      const vlen = isVector(fg.data_type) ? h("p", { class: "muted" }, `Vector length ${f.vector_length} (fixed: a new length is a new feature group)`) : null;
      return { f, def, slen, el: h("fieldset", { class: "row", dataset: { loc: `payload.features.${i}` } }, h("legend", {}, f.label), def, slen, vlen) };
    });
    return {
      fields: [h("p", { class: "muted" }, "Only the values you change are sent."), rows.map((r) => r.el)],
      payload: () => ({
        features: rows
          .map(({ f, def, slen }) => {
            const changed = { label: f.label };
            if (def.input.value !== show(f.default)) changed.default = parseDefault(def.input.value, fg.data_type);
            if (slen && slen.input.value !== show(f.string_length)) changed.string_length = parseCount(slen.input.value);
            return compact(changed);
          })
          .filter((c) => Object.keys(c).length > 1),
      }),
    };
  });
}

async function deleteFeaturesForm({ query }) {
  return withFeatureGroup(query, (fg) => {
    const boxes = fg.features.map((f) => field({ label: f.label, type: "checkbox", attrs: { value: f.label } }));
    return {
      fields: [group("Features to delete", "payload.labels", boxes)],
      payload: () => ({ labels: boxes.filter((b) => b.input.checked).map((b) => b.input.value) }),
    };
  });
}

function callerForm() {
  const id = field({ label: "Caller id", loc: "payload.id", required: true, attrs: { autocomplete: "off" } });
  const role = field({
    label: "Role",
    type: "select",
    loc: "payload.role",
    value: "reader",
    options: [
      ["reader", "reader: a client that retrieves features"],
      ["writer", "writer: a job that persists features"],
      ["readwriter", "readwriter: one credential that does both (reference clients; prefer separate callers)"],
    ],
  });
  return { fields: [id, role], payload: () => ({ id: id.input.value.trim(), role: role.input.value }) };
}

function tokenPanel(token) {
  const out = h("output", { class: "token", id: "created-token" }, token);
  const copy = h("button", {
    type: "button",
    class: "secondary",
    onclick: async () => {
      try {
        await navigator.clipboard.writeText(token);
        copy.textContent = "Copied";
      } catch {
        // no clipboard permission: select the token so the user can copy it by hand
        getSelection().selectAllChildren(out);
      }
    },
  }, "Copy token");
  return h(
    "section",
    { class: "token-panel", "aria-labelledby": "token-heading" },
    h("h2", { id: "token-heading" }, "Token"),
    h("p", { class: "warning" }, "This is the only time the token is shown; Horizon keeps only its hash. Store it now."),
    out,
    copy,
  );
}

function result(req, kind, navigate) {
  return h(
    "section",
    { class: "card result", id: "request-result", "aria-labelledby": "result-heading" },
    h("h2", { id: "result-heading" }, `Request #${req.id} submitted`),
    h("p", {}, `State: `, h("span", { class: `state state-${req.state}` }, req.state), ". An admin has to approve it before it changes the registry."),
    req.diff && req.diff.length ? [h("h3", {}, "What it changes"), h("pre", { class: "diff" }, req.diff.join("\n"))] : null,
    req.token ? tokenPanel(req.token) : null,
    h(
      "p",
      { class: "actions" },
      h("a", { href: "#/requests" }, "My requests"),
      h("button", { type: "button", class: "secondary", onclick: () => navigate(`#/new/${kind}?again=${Date.now()}`) }, "Submit another"),
    ),
  );
}

export async function render({ root, params, query, banner, announce, navigate }) {
  const kind = params[0];
  const spec = KINDS[kind];
  if (!spec) {
    root.append(h("h1", {}, "Request a change"), h("p", {}, "What do you want to register or change?"), menu());
    return;
  }
  const built = await spec.build({ query });
  const description = field({
    label: "Why (shown to the approver)",
    type: "textarea",
    loc: "description",
    attrs: { rows: 2 },
  });
  const form = h(
    "form",
    { class: "card", id: `form-${kind}`, novalidate: true, "aria-labelledby": "page-heading" },
    h("p", { class: "muted" }, spec.blurb),
    built.fields,
    built.disabled ? null : [description, h("button", { type: "submit", class: "primary" }, "Submit request")],
  );
  const resultHolder = h("div");
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    submitting(form, banner, async () => {
      const payload = built.payload();
      if (kind === "delete_features" && !payload.labels.length) {
        fieldError(form, "payload.labels", "Choose at least one feature.");
        return;
      }
      if (kind === "edit_features" && !payload.features.length) {
        banner.error("Nothing changed: edit a default or a length first.");
        return;
      }
      let req;
      try {
        req = await api.createRequest(kind, payload, description.input.value.trim());
      } catch (err) {
        // a few kinds show a field under another name than the payload's (the FG select is "label")
        for (const item of err.fieldErrors || []) {
          const path = item.loc.slice(1).join(".");
          for (const [from, to] of Object.entries(built.locAliases || {})) {
            if (path === from) item.loc = ["body", ...to.split(".")];
          }
        }
        throw err;
      }
      form.hidden = true;
      replace(resultHolder, result(req, kind, navigate));
      resultHolder.querySelector("h2").setAttribute("tabindex", "-1");
      resultHolder.querySelector("h2").focus();
      announce(`Request ${req.id} submitted and waiting for approval.`);
    });
  });
  root.append(
    h("p", { class: "crumbs" }, h("a", { href: "#/new" }, "Request a change"), " / ", spec.title),
    h("h1", { id: "page-heading" }, spec.title),
    form,
    resultHolder,
  );
}
