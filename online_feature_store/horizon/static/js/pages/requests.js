// The signed-in user's own requests; pending ones can be cancelled. #/requests?state=

import { api } from "../api.js";
import { h, replace } from "../dom.js";
import { submitting } from "../forms.js";
import { requestCard, stateFilter } from "../requestview.js";

export async function render({ root, query, banner, announce, navigate }) {
  const state = query.get("state") || "";
  const list = await api.requests({ mine: true, state });
  const section = h("section", { class: "queue", "aria-label": "My requests" });

  function mount(req) {
    let actions = null;
    if (req.state === "PENDING") {
      const cancel = h("button", { type: "button", class: "danger", "aria-label": `Cancel request ${req.id}` }, "Cancel request");
      actions = h("div", { class: "decide" }, cancel);
      cancel.addEventListener("click", () =>
        submitting(actions, banner, async () => {
          const done = await api.cancel(req.id);
          announce(`Request ${req.id} cancelled.`);
          const fresh = mount(done);
          card.replaceWith(fresh);
          fresh.querySelector("h2").setAttribute("tabindex", "-1");
          fresh.querySelector("h2").focus();
        }),
      );
    }
    const card = requestCard(req, actions);
    return card;
  }

  replace(
    section,
    list.length ? list.map(mount) : h("p", { class: "muted" }, "No requests. ", h("a", { href: "#/new" }, "Request a change"), "."),
  );
  root.append(
    h("h1", {}, "My requests"),
    h(
      "div",
      { class: "toolbar" },
      stateFilter(state, (s) => navigate(`#/requests?state=${encodeURIComponent(s)}`)),
      h("button", { type: "button", class: "secondary", onclick: () => navigate(location.hash) }, "Refresh"),
    ),
    section,
  );
}
