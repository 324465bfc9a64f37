// Sign in; and, only while Horizon allows it, create an account: the first account (nobody has one yet)
// becomes the admin, who then adds everyone else on the Users page. With self-registration turned on
// (allow_self_registration) anyone may create an account, which starts as a viewer.

import { ApiError, api, saveSession, session } from "../api.js";
import { h } from "../dom.js";
import { PASSWORD_RULES, field, fieldError, submitting } from "../forms.js";

async function signIn(username, password, navigate) {
  const s = await api.login(username, password);
  saveSession({ token: s.token, expires_at: s.expires_at, username: s.username, role: s.role });
  try {
    const me = await api.me();
    saveSession({ ...session(), role: me.role, can_try: me.can_try, try_entities: me.try_entities });
  } catch {
    // the session works; only the try-it link stays hidden until the next load
  }
  navigate("#/discover");
}

function registerForm(registration, banner, navigate) {
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
    help: PASSWORD_RULES,
    attrs: { autocomplete: "new-password", name: "new-password" },
  });
  const first = registration.first_admin;
  const regForm = h(
    "form",
    { class: "card", id: "register-form", "aria-labelledby": "register-heading", novalidate: true },
    h("h2", { id: "register-heading" }, first ? "Create the first account" : "Create an account"),
    h(
      "p",
      { class: "muted" },
      first
        ? "Nobody has an account yet: this one becomes the admin, who then adds everyone else."
        : "New accounts start as viewers until an admin changes their role.",
    ),
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
  return regForm;
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

  const registration = await api.registration();
  const side = registration.open
    ? registerForm(registration, banner, navigate)
    : h(
        "section",
        { class: "card", id: "no-account", "aria-labelledby": "no-account-heading" },
        h("h2", { id: "no-account-heading" }, "No account yet?"),
        h("p", {}, "Ask an admin of TruffleBox: admins add users and choose their role on the Users page."),
      );

  root.append(
    h("h1", {}, "TruffleBox"),
    h("p", { class: "lead" }, "Discover, register and try the features of your online feature store."),
    h("div", { class: "columns" }, loginForm, side),
  );
}
