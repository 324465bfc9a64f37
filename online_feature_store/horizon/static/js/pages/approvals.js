// The admin approval queue: filter by state, read what each request changes, approve or reject with a
// reason. #/approvals?state=PENDING (the default)

import { api, session } from "../api.js";
import { h, replace } from "../dom.js";
import { field, fieldError, submitting } from "../forms.js";
import { requestCard, stateFilter } from "../requestview.js";

function actions(req, banner, announce, onDecided) {
  if (req.state !== "PENDING" && req.state !== "APPLYING") return null;
  const me = session();
  const applying = req.state === "APPLYING";
  const approve = h(
    "button",
    { type: "button", class: "primary", "aria-label": `${applying ? "Finish approving" : "Approve"} request ${req.id}` },
    applying ? "Finish approval" : "Approve",
  );
  const reason = field({ label: `Reason for rejecting #${req.id}`, type: "textarea", loc: "reason", attrs: { rows: 2 } });
  const rejectForm = h(
    "form",
    { class: "reject", novalidate: true, "aria-label": `Reject request ${req.id}` },
    reason,
    h("button", { type: "submit", class: "danger" }, "Reject"),
  );
  const box = h(
    "div",
    { class: "decide" },
    req.author === me.username ? h("p", { class: "muted" }, "This is your own request: approving it needs a single-person setup.") : null,
    applying ? h("p", { class: "muted" }, "An approval of this request was interrupted: finishing it checks whether the registry already holds the change.") : null,
    h("div", { class: "approve" }, approve),
    applying ? null : rejectForm,
  );
  approve.addEventListener("click", () =>
    submitting(box, banner, async () => {
      const done = await api.approve(req.id);
      announce(`Request ${req.id} approved${done.revision != null ? `, registry revision ${done.revision}` : ""}.`);
      onDecided(done);
    }),
  );
  rejectForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    submitting(rejectForm, banner, async () => {
      const text = reason.input.value.trim();
      if (!text) {
        fieldError(rejectForm, "reason", "Say why, so the author can fix the request.");
        return;
      }
      const done = await api.reject(req.id, text);
      announce(`Request ${req.id} rejected.`);
      onDecided(done);
    });
  });
  return box;
}

export async function render({ root, query, banner, announce, navigate }) {
  const state = query.has("state") ? query.get("state") : "PENDING";
  const list = await api.requests({ state });
  const section = h("section", { class: "queue", "aria-label": "Requests" });

  function mount(req) {
    const card = requestCard(req, actions(req, banner, announce, (done) => {
      const fresh = mount(done);
      card.replaceWith(fresh);
      fresh.querySelector("h2").setAttribute("tabindex", "-1");
      fresh.querySelector("h2").focus();
    }));
    return card;
  }

  replace(section, list.length ? list.map(mount) : h("p", { class: "muted" }, `No ${state ? state.toLowerCase() : ""} requests.`));
  root.append(
    h("h1", {}, "Approvals"),
    h("p", { class: "muted" }, "Approving applies the whole request to the registry in one transaction, or nothing of it."),
    h(
      "div",
      { class: "toolbar" },
      stateFilter(state, (s) => navigate(`#/approvals?state=${encodeURIComponent(s)}`)),
      h("button", { type: "button", class: "secondary", onclick: () => navigate(location.hash) }, "Refresh"),
    ),
    section,
  );
}
