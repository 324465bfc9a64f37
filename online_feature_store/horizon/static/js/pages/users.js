// User management (admins): everyone's role. #/users

import { api, saveSession, session } from "../api.js";
import { h, when } from "../dom.js";
import { field, submitting } from "../forms.js";

const ROLES = ["viewer", "editor", "admin"];

export async function render({ root, banner, announce, navigate }) {
  const users = await api.users();
  const me = session();
  const rows = users.map((u) => {
    const role = field({
      label: `Role of ${u.username}`,
      type: "select",
      loc: "role",
      value: u.role,
      options: ROLES.map((r) => [r, r]),
    });
    role.querySelector("label").classList.add("visually-hidden");
    const save = h("button", { type: "submit", class: "secondary", "aria-label": `Save role for ${u.username}` }, "Save");
    const form = h("form", { class: "role-form", novalidate: true }, role, save);
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      submitting(form, banner, async () => {
        const updated = await api.setRole(u.username, role.input.value);
        announce(`${updated.username} is now ${updated.role}.`);
        banner.notice(`${updated.username} is now ${updated.role}.`);
        if (updated.username === me.username && updated.role !== me.role) {
          // an admin who gave up the role loses this page: follow the server's view of the session
          saveSession({ ...me, role: updated.role });
          navigate("#/discover");
        }
      });
    });
    return h(
      "tr",
      { dataset: { username: u.username } },
      h("th", { scope: "row" }, u.username, u.username === me.username ? h("span", { class: "muted" }, " (you)") : null),
      h("td", {}, form),
      h("td", {}, h("time", { datetime: u.created_at }, when(u.created_at))),
    );
  });
  root.append(
    h("h1", {}, "Users"),
    h("p", { class: "muted" }, "Viewers browse; editors also request changes; admins approve requests and manage users."),
    h(
      "table",
      { class: "users" },
      h("caption", {}, "Accounts and roles"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "User"), h("th", { scope: "col" }, "Role"), h("th", { scope: "col" }, "Since"))),
      h("tbody", {}, rows),
    ),
  );
}
