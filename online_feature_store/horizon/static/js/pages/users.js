// User management (admins): add a user with a role and a first password, change everyone's role.
// Nobody else can make an account (self-registration is off unless Horizon is configured otherwise).
// #/users

import { ApiError, api, saveSession, session } from "../api.js";
import { h, when } from "../dom.js";
import { PASSWORD_RULES, field, fieldError, submitting } from "../forms.js";

const ROLES = ["viewer", "editor", "admin"];

function addUserForm(banner, announce, navigate) {
  const username = field({ label: "New user's name", loc: "username", required: true, attrs: { autocomplete: "off" } });
  const role = field({ label: "Their role", type: "select", loc: "role", value: "viewer", options: ROLES.map((r) => [r, r]) });
  const password = field({
    label: "First password",
    loc: "password",
    type: "password",
    required: true,
    help: `${PASSWORD_RULES} Give it to them safely; they change it on their Account page.`,
    attrs: { autocomplete: "new-password" },
  });
  const form = h(
    "form",
    { class: "card", id: "add-user-form", "aria-labelledby": "add-user-heading", novalidate: true },
    h("h2", { id: "add-user-heading" }, "Add a user"),
    h("div", { class: "row row-inline" }, username, role),
    password,
    h("button", { type: "submit", class: "primary" }, "Add user"),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    submitting(form, banner, async () => {
      let created;
      try {
        created = await api.createUser(username.input.value.trim(), password.input.value, role.input.value);
      } catch (err) {
        // a taken name (in any case) is a 409: said next to the field
        if (err instanceof ApiError && err.status === 409) {
          fieldError(form, "username", err.message);
          return;
        }
        throw err;
      }
      const message = `${created.username} was added as ${created.role}.`;
      announce(message);
      navigate("#/users");
      banner.notice(message);
    });
  });
  return form;
}

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
    addUserForm(banner, announce, navigate),
    h(
      "table",
      { class: "users" },
      h("caption", {}, "Accounts and roles"),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "User"), h("th", { scope: "col" }, "Role"), h("th", { scope: "col" }, "Since"))),
      h("tbody", {}, rows),
    ),
  );
}
