// The audit log (admins): every request and decision, newest first, filtered by actor or request.
// #/audit?actor=<user>&request_id=<id>&limit=<n>

import { api } from "../api.js";
import { h, when } from "../dom.js";
import { field, showErrors, submitting } from "../forms.js";

export async function render({ root, query, banner, navigate }) {
  const filters = {
    actor: query.get("actor") || "",
    request_id: query.get("request_id") || "",
    limit: query.get("limit") || "200",
  };
  let entries = [];
  let failure = null;
  try {
    entries = await api.audit(filters);
  } catch (err) {
    // a bad filter is shown next to its field below, with the form still usable
    failure = err;
  }
  const actor = field({ label: "Actor", loc: "actor", value: filters.actor, attrs: { autocomplete: "off" } });
  const requestId = field({ label: "Request id", type: "number", loc: "request_id", value: filters.request_id, attrs: { min: 1 } });
  const limit = field({ label: "At most", type: "number", loc: "limit", value: filters.limit, attrs: { min: 1 } });
  const form = h(
    "form",
    { class: "filters", novalidate: true, "aria-label": "Filter the audit log" },
    actor,
    requestId,
    limit,
    h("button", { type: "submit", class: "secondary" }, "Filter"),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    submitting(form, banner, async () => {
      const params = new URLSearchParams();
      for (const [name, f] of [["actor", actor], ["request_id", requestId], ["limit", limit]]) {
        if (f.input.value.trim()) params.set(name, f.input.value.trim());
      }
      navigate(`#/audit?${params}`);
    });
  });
  if (failure) showErrors(form, failure, banner);
  root.append(
    h("h1", {}, "Audit log"),
    form,
    entries.length
      ? h(
          "table",
          { class: "audit-table" },
          h("caption", {}, `${entries.length} entr${entries.length === 1 ? "y" : "ies"}, newest first`),
          h("thead", {}, h("tr", {}, ["When", "Actor", "Action", "Request", "Detail"].map((t) => h("th", { scope: "col" }, t)))),
          h(
            "tbody",
            {},
            entries.map((e) =>
              h(
                "tr",
                {},
                h("td", {}, h("time", { datetime: e.at }, when(e.at))),
                h("td", {}, e.actor),
                h("td", {}, e.action),
                h("td", {}, e.request_id == null ? "" : h("a", { href: `#/audit?request_id=${e.request_id}` }, `#${e.request_id}`)),
                h("td", {}, e.detail),
              ),
            ),
          ),
        )
      : h("p", { class: "muted" }, "No entries match."),
  );
}
