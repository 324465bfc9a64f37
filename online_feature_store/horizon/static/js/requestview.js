// One change request shown as a card: what it changes (the plan lines), who asked, the decision, and
// its audit history (loaded when opened). Shared by the approval queue and "My requests".

import { api } from "./api.js";
import { h, replace, when } from "./dom.js";

// APPLYING: an approval was interrupted between the registry and Horizon's database; approving again
// finishes it (after a minute) without applying the change twice
export const STATES = ["PENDING", "APPLYING", "APPROVED", "REJECTED", "CANCELLED"];

const KIND_NAMES = {
  create_store: "new store",
  create_entity: "new entity",
  update_entity: "entity cache policy",
  create_feature_group: "new feature group",
  update_feature_group: "feature group settings",
  add_features: "add features",
  edit_features: "edit features",
  delete_features: "delete features",
  create_caller: "new client / job",
};

/** What a request is about, in a few words: "new feature group user/activity". */
export function subject(req) {
  const p = req.payload || {};
  const fg = p.feature_group || (req.kind.includes("feature_group") ? p.label : null);
  let what = p.entity ? (fg ? `${p.entity}/${fg}` : p.entity) : p.label || p.id || "";
  if (req.kind === "update_entity") what = p.label;
  return `${KIND_NAMES[req.kind] || req.kind} ${what || ""}`.trim();
}

function history(req) {
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  const details = h("details", { class: "history" }, h("summary", {}, "History"), body);
  let loaded = false;
  details.addEventListener("toggle", async () => {
    if (!details.open || loaded) return;
    loaded = true;
    try {
      const entries = await api.audit({ request_id: req.id });
      replace(
        body,
        entries.length
          ? h(
              "ol",
              { class: "audit" },
              entries.map((e) => h("li", {}, h("time", { datetime: e.at }, when(e.at)), ` ${e.actor} ${e.action}`, e.detail ? ` — ${typeof e.detail === "string" ? e.detail : JSON.stringify(e.detail)}` : "")),
            )
          : h("p", { class: "muted" }, "No entries."),
      );
    } catch (err) {
      loaded = false;
      replace(body, h("p", { class: "error-text" }, err.message));
    }
  });
  return details;
}

/** The card of `req`; `actions` (a node or null) is placed at the bottom. */
export function requestCard(req, actions = null) {
  const headingId = `req-${req.id}-heading`;
  return h(
    "article",
    { class: "card request", id: `request-${req.id}`, "aria-labelledby": headingId, dataset: { state: req.state, kind: req.kind } },
    h(
      "header",
      {},
      h("h2", { id: headingId }, `#${req.id} ${subject(req)}`),
      h("span", { class: `state state-${req.state}` }, req.state),
    ),
    h(
      "p",
      { class: "meta" },
      `${req.kind} · asked by ${req.author} · `,
      h("time", { datetime: req.created_at }, when(req.created_at)),
    ),
    req.description ? h("blockquote", {}, req.description) : null,
    h("h3", {}, "Changes"),
    req.diff && req.diff.length
      ? h("pre", { class: "diff", "aria-label": `Changes of request ${req.id}` }, req.diff.map((line) => h("span", { class: diffClass(line) }, line, "\n")))
      : h("p", { class: "muted" }, "No registry change (already applied or nothing to do)."),
    h("details", {}, h("summary", {}, "Request payload"), h("pre", { class: "payload" }, JSON.stringify(req.payload, null, 2))),
    req.decided_by
      ? h(
          "p",
          { class: "decision" },
          `${req.state.toLowerCase()} by ${req.decided_by} · `,
          h("time", { datetime: req.decided_at }, when(req.decided_at)),
          req.revision !== null && req.revision !== undefined ? ` · registry revision ${req.revision}` : "",
          req.reason ? [h("br"), `Reason: ${req.reason}`] : null,
        )
      : null,
    history(req),
    actions,
  );
}

function diffClass(line) {
  const t = line.trimStart();
  if (t.startsWith("+")) return "add";
  if (t.startsWith("-")) return "del";
  if (t.startsWith("~")) return "chg";
  return "";
}

/** A labelled state filter; calls onChange(state) with "" for all states. */
export function stateFilter(value, onChange) {
  const id = "state-filter";
  const select = h(
    "select",
    { id },
    h("option", { value: "", selected: !value }, "All states"),
    STATES.map((s) => h("option", { value: s, selected: s === value }, s.toLowerCase())),
  );
  select.addEventListener("change", () => onChange(select.value));
  return h("div", { class: "inline-field" }, h("label", { for: id }, "State"), select);
}
