// The signed-in user's account: change one's password (an admin-made account starts with a password
// the admin chose). #/account

import { api, session } from "../api.js";
import { h } from "../dom.js";
import { PASSWORD_RULES, field, submitting } from "../forms.js";

export async function render({ root, banner, announce }) {
  const me = session();
  const current = field({
    label: "Current password",
    loc: "current_password",
    type: "password",
    required: true,
    attrs: { autocomplete: "current-password" },
  });
  const next = field({
    label: "New password",
    loc: "new_password",
    type: "password",
    required: true,
    help: PASSWORD_RULES,
    attrs: { autocomplete: "new-password" },
  });
  const form = h(
    "form",
    { class: "card", id: "password-form", "aria-labelledby": "password-heading", novalidate: true },
    h("h2", { id: "password-heading" }, "Change your password"),
    current,
    next,
    h("button", { type: "submit", class: "primary" }, "Change password"),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    submitting(form, banner, async () => {
      await api.changePassword(current.input.value, next.input.value);
      current.input.value = "";
      next.input.value = "";
      announce("Your password was changed.");
      banner.notice("Your password was changed.");
    });
  });
  root.append(
    h("h1", {}, "Account"),
    h("p", {}, "Signed in as ", h("strong", {}, me.username), ` (${me.role}).`),
    form,
  );
}
