// Discovery: entities → feature groups → features, with search, all versions, TTLs and cache settings.
// #/discover, #/discover/<entity>, #/discover/<entity>/<fg>?version=<n>

import { api, hasRole } from "../api.js";
import { h, replace, show, ttl, uid } from "../dom.js";
import { isString, isVector } from "../editors.js";

const enc = encodeURIComponent;
const entityHref = (e) => `#/discover/${enc(e)}`;
const fgHref = (e, fg) => `#/discover/${enc(e)}/${enc(fg)}`;

function table(caption, headers, rows, { empty = "None yet." } = {}) {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  // in a box that scrolls sideways when the table cannot fit (the page itself never does)
  return h(
    "div",
    { class: "table-scroll" },
    h(
      "table",
      {},
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, headers.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c, i) => (i === 0 ? h("th", { scope: "row" }, c) : h("td", {}, c)))))),
    ),
  );
}

function cachePolicy(cache) {
  const tier = (t) => {
    if (!t || !t.enabled) return "off";
    return `on, TTL ${ttl(t.ttl_seconds)}, jitter ${t.jitter_percent ?? 0}%`;
  };
  return h(
    "dl",
    { class: "pairs" },
    h("dt", {}, "In-process cache"),
    h("dd", {}, tier(cache && cache.in_process)),
    h("dt", {}, "Distributed cache"),
    h("dd", {}, tier(cache && cache.distributed)),
  );
}

const yesNo = (b) => (b ? "yes" : "no");

// string lengths mean something for string types only, vector lengths for vector types only
const lengthHeaders = (dtype) => [isString(dtype) ? "String length" : null, isVector(dtype) ? "Vector length" : null].filter(Boolean);
const lengths = (dtype, f) =>
  [isString(dtype) ? show(f.string_length) : null, isVector(dtype) ? show(f.vector_length) : null].filter((x) => x !== null);

function searchBox(results) {
  const inputId = uid("search");
  const input = h("input", { id: inputId, type: "search", name: "q", autocomplete: "off", placeholder: "entity, feature group or feature" });
  const form = h(
    "form",
    { role: "search", class: "search", "aria-label": "Search the registry" },
    h("label", { for: inputId }, "Search"),
    input,
    h("button", { type: "submit", class: "secondary" }, "Search"),
  );
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const q = input.value.trim();
    if (!q) {
      replace(results);
      return;
    }
    replace(results, h("p", { class: "muted" }, "Searching…"));
    try {
      const hits = await api.search(q);
      replace(
        results,
        h("h2", {}, `Results for “${q}”`),
        hits.length
          ? h(
              "ul",
              { class: "hits" },
              hits.map((hit) => {
                if (hit.kind === "entity") return h("li", {}, h("a", { href: entityHref(hit.entity) }, hit.entity), " entity");
                const fgLink = h("a", { href: fgHref(hit.entity, hit.feature_group) }, `${hit.entity} / ${hit.feature_group}`);
                if (hit.kind === "feature_group") return h("li", {}, fgLink, " feature group");
                return h("li", {}, h("code", {}, hit.feature), " feature in ", fgLink);
              }),
            )
          : h("p", {}, "Nothing matches."),
      );
    } catch (err) {
      replace(results, h("p", { class: "error-text" }, err.message));
    }
  });
  return form;
}

function entityList(entities, current) {
  return h(
    "nav",
    { class: "entity-list", "aria-label": "Entities" },
    h("h2", {}, "Entities"),
    entities.length
      ? h(
          "ul",
          {},
          entities.map((e) =>
            h(
              "li",
              {},
              h("a", { href: entityHref(e.label), "aria-current": e.label === current ? "page" : false }, e.label),
              h("span", { class: "muted" }, ` ${e.feature_groups.length} FG${e.feature_groups.length === 1 ? "" : "s"}`),
            ),
          ),
        )
      : h("p", { class: "muted" }, "No entities registered yet."),
  );
}

async function overview() {
  const [stores, callers] = await Promise.all([api.stores(), api.callers()]);
  return [
    h("h2", {}, "Stores"),
    table(
      "Stores feature groups live in",
      ["Id", "Kind", "Settings"],
      stores.map((s) => [s.id, s.kind, Object.entries(s.settings || {}).map(([k, v]) => `${k}=${v}`).join(", ")]),
      { empty: "No stores registered yet." },
    ),
    h("h2", {}, "Callers"),
    table("Clients and jobs allowed to call the serving API", ["Id", "Role"], callers.map((c) => [c.id, c.role]), {
      empty: "No callers registered yet.",
    }),
    hasRole("editor") ? h("p", {}, h("a", { href: "#/new" }, "Request a new entity, feature group, store or caller")) : null,
  ];
}

async function entityDetail(label) {
  const e = await api.entity(label);
  return [
    h("h2", {}, `Entity ${e.label}`),
    table("Keys, in order", ["Key label", "Stored column"], e.keys.map((k) => [k.label, k.column])),
    h("h3", {}, "Cache policy"),
    cachePolicy(e.cache),
    h("h3", {}, "Feature groups"),
    table(
      `Feature groups of ${e.label}`,
      ["Label", "Id", "Type", "TTL", "Store", "In-process cache", "Distributed cache", "Active version", "Features"],
      e.feature_groups.map((fg) => [
        h("a", { href: fgHref(e.label, fg.label) }, fg.label),
        fg.id,
        fg.data_type,
        ttl(fg.ttl_seconds),
        fg.store || "",
        yesNo(fg.in_process_cache),
        yesNo(fg.distributed_cache),
        fg.active_version,
        fg.features.length,
      ]),
      { empty: "No feature groups yet." },
    ),
  ];
}

async function fgDetail(entity, label, query, navigate) {
  const fg = await api.featureGroup(entity, label);
  const versions = Object.keys(fg.versions || {}).sort((a, b) => Number(a) - Number(b));
  const chosen = query.get("version") && fg.versions[query.get("version")] ? query.get("version") : String(fg.active_version);
  const features = (fg.versions && fg.versions[chosen]) || fg.features;
  const selectId = uid("version");
  const select = h(
    "select",
    { id: selectId },
    versions.map((v) => h("option", { value: v, selected: v === chosen }, v === String(fg.active_version) ? `${v} (active)` : v)),
  );
  select.addEventListener("change", () => navigate(`${fgHref(entity, label)}?version=${enc(select.value)}`));
  return [
    h("p", { class: "crumbs" }, h("a", { href: entityHref(entity) }, entity), " / ", fg.label),
    h("h2", {}, `Feature group ${entity} / ${fg.label}`),
    h(
      "dl",
      { class: "pairs" },
      h("dt", {}, "Id"),
      h("dd", {}, fg.id),
      h("dt", {}, "Data type"),
      h("dd", {}, fg.data_type),
      h("dt", {}, "TTL"),
      h("dd", {}, ttl(fg.ttl_seconds)),
      h("dt", {}, "Store"),
      h("dd", {}, fg.store || ""),
      h("dt", {}, "In-process cache"),
      h("dd", {}, yesNo(fg.in_process_cache)),
      h("dt", {}, "Distributed cache"),
      h("dd", {}, yesNo(fg.distributed_cache)),
      h("dt", {}, "Active version"),
      h("dd", {}, fg.active_version),
    ),
    h("div", { class: "inline-field" }, h("label", { for: selectId }, "Version"), select),
    table(
      `Features of version ${chosen}`,
      ["Label", "Default", ...lengthHeaders(fg.data_type)],
      features.map((f) => [f.label, h("code", {}, show(f.default)), ...lengths(fg.data_type, f)]),
      { empty: "No features." },
    ),
    hasRole("editor")
      ? h(
          "p",
          { class: "actions" },
          h("a", { href: `#/new/add_features?entity=${enc(entity)}&fg=${enc(fg.label)}` }, "Add features"),
          h("a", { href: `#/new/edit_features?entity=${enc(entity)}&fg=${enc(fg.label)}` }, "Edit features"),
          h("a", { href: `#/new/delete_features?entity=${enc(entity)}&fg=${enc(fg.label)}` }, "Delete features"),
          h("a", { href: `#/new/update_feature_group?entity=${enc(entity)}&fg=${enc(fg.label)}` }, "Change TTL or caching"),
        )
      : null,
  ];
}

export async function render({ root, params, query, navigate }) {
  const [entityLabel, fgLabel] = params;
  const [registry, entities] = await Promise.all([api.registry(), api.entities()]);
  const results = h("section", { class: "results", "aria-live": "polite" });
  let detail;
  if (entityLabel && fgLabel) detail = await fgDetail(entityLabel, fgLabel, query, navigate);
  else if (entityLabel) detail = await entityDetail(entityLabel);
  else detail = await overview();
  root.append(
    h("h1", {}, "Discover"),
    h("p", { class: "muted" }, `Registry revision ${registry.revision}`),
    searchBox(results),
    results,
    h("div", { class: "split" }, entityList(entities, entityLabel), h("section", { class: "detail", "aria-label": "Details" }, detail)),
  );
}
