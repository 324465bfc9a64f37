// Sign in and create an account. The first account created becomes an admin; later ones are viewers
// until an admin gives them a role.

import { ApiError, api, saveSession } from "../api.js";
import { h } from "../dom.js";
import { field, fieldError, submitting } from "../forms.js";

async function signIn(username, password, navigate) {
  const s = await api.login(username, password);
  saveSession({ token: s.token, expires_at: s.expires_at, username: s.username, role: s.role });
  navigate("#/discover");
}

export async function render({ root, banner, navigate }) {
  const loginUser = field({ label: "Username", loc: "username", required: true, attrs: { autocomplete: "username", name: "username" } });
  const loginPass = field({
    label: "Password",
    loc: "password",
    type: "password",
    required: true,
    attrs: { autocomplete: "current-password", name: "password" },
  });
  const loginForm = h(
    "form",
    { class: "card", id: "login-form", "aria-labelledby": "login-heading", novalidate: true },
    h("h2", { id: "login-heading" }, "Sign in"),
    loginUser,
    loginPass,
    h("button", { type: "submit", class: "primary" }, "Sign in"),
  );
  loginForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    submitting(loginForm, banner, () => signIn(loginUser.input.value.trim(), loginPass.input.value, navigate));
  });

  const regUser = field({
    label: "Username",
    loc: "username",
    required: true,
    attrs: { autocomplete: "username", name: "new-username" },
  });
  const regPass = field({
    label: "Password",
    loc: "password",
    type: "password",
    required: true,
    help: "At least 8 characters. The first account becomes an admin; later accounts start as viewers.",
    attrs: { autocomplete: "new-password", name: "new-password" },
  });
  const regForm = h(
    "form",
    { class: "card", id: "register-form", "aria-labelledby": "register-heading", novalidate: true },
    h("h2", { id: "register-heading" }, "Create an account"),
    regUser,
    regPass,
    h("button", { type: "submit", class: "secondary" }, "Create account"),
  );
  regForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    submitting(regForm, banner, async () => {
      const username = regUser.input.value.trim();
      const password = regPass.input.value;
      try {
        await api.register(username, password);
      } catch (err) {
        // a taken username is a 409, not a validation error, but it belongs next to the field all the same
        if (err instanceof ApiError && err.status === 409) {
          fieldError(regForm, "username", err.message);
          return;
        }
        throw err;
      }
      await signIn(username, password, navigate);
    });
  });

  root.append(
    h("h1", {}, "TruffleBox"),
    h("p", { class: "lead" }, "Discover, register and try the features of your online feature store."),
    h("div", { class: "columns" }, loginForm, regForm),
  );
}
