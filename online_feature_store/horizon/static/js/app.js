// TruffleBox: the single-page shell. Hash routes (#/discover/user/activity) so the static file server
// needs no fallback rule; each page is a module exporting render(ctx).

import { api, clearSession, hasRole, saveSession, session, setUnauthorizedHandler } from "./api.js";
import { h, replace } from "./dom.js";

const ROUTES = {
  login: { module: "./pages/login.js", title: "Sign in", public: true },
  discover: { module: "./pages/discover.js", title: "Discover", nav: "Discover", role: "viewer" },
  new: { module: "./pages/register.js", title: "Request a change", nav: "Request a change", role: "editor" },
  requests: { module: "./pages/requests.js", title: "My requests", nav: "My requests", role: "editor" },
  approvals: { module: "./pages/approvals.js", title: "Approvals", nav: "Approvals", role: "admin" },
  users: { module: "./pages/users.js", title: "Users", nav: "Users", role: "admin" },
  audit: { module: "./pages/audit.js", title: "Audit log", nav: "Audit log", role: "admin" },
  // try-it reads real feature values: only for the roles (and entities) Horizon's try_role allows
  try: { module: "./pages/try.js", title: "Try it", nav: "Try it", role: "viewer", allowed: (s) => Boolean(s.can_try) },
  account: { module: "./pages/account.js", title: "Account", role: "viewer" },
};

const main = document.getElementById("main");
const nav = document.getElementById("nav");
const account = document.getElementById("account");
const bannerEl = document.getElementById("banner");
const statusEl = document.getElementById("status");

/** The page-wide message area: errors are announced assertively, notices politely. */
const banner = {
  error(message, status) {
    replace(
      bannerEl,
      h("strong", {}, status ? `Error ${status}: ` : "Error: "),
      h("span", { class: "banner-text" }, message),
      h("button", { type: "button", class: "link", "aria-label": "Dismiss message", onclick: () => banner.clear() }, "×"),
    );
    bannerEl.className = "banner banner-error";
    bannerEl.hidden = false;
  },
  notice(message) {
    replace(bannerEl, h("span", { class: "banner-text" }, message));
    bannerEl.className = "banner banner-notice";
    bannerEl.hidden = false;
  },
  clear() {
    bannerEl.hidden = true;
    bannerEl.replaceChildren();
  },
};

/** Announces `message` to screen readers without moving focus. */
function announce(message) {
  statusEl.textContent = "";
  // a new text node in a live region is what gets announced; the delay makes repeats audible
  setTimeout(() => {
    statusEl.textContent = message;
  }, 50);
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, qs] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { name: parts[0] || "", params: parts.slice(1), query: new URLSearchParams(qs || "") };
}

export function navigate(hash) {
  if (location.hash === hash) render();
  else location.hash = hash;
}

let pendingNotice = null;

function signOutLocally(notice) {
  clearSession();
  pendingNotice = notice;
  navigate("#/login");
}

setUnauthorizedHandler(() => signOutLocally("Your session has ended. Please sign in again."));

async function logout() {
  try {
    await api.logout();
  } catch {
    // the token is dropped locally whatever the server says: an expired token cannot log out either
  }
  signOutLocally("You are signed out.");
}

function renderChrome(current) {
  const s = session();
  nav.hidden = !s;
  account.hidden = !s;
  if (!s) {
    nav.replaceChildren();
    account.replaceChildren();
    return;
  }
  const links = Object.entries(ROUTES)
    .filter(([, r]) => r.nav && hasRole(r.role) && (!r.allowed || r.allowed(s)))
    .map(([name, r]) =>
      h("a", { href: `#/${name}`, "aria-current": name === current ? "page" : false }, r.nav),
    );
  replace(nav, h("ul", {}, links.map((a) => h("li", {}, a))));
  replace(
    account,
    h("a", { class: "who", href: "#/account", title: "Your account" }, s.username, " ", h("span", { class: `role role-${s.role}` }, s.role)),
    h("button", { type: "button", class: "secondary", id: "logout", onclick: logout }, "Sign out"),
  );
}

let renderSeq = 0;

async function render() {
  const seq = ++renderSeq;
  const route = parseHash();
  const s = session();
  let name = route.name;
  if (!ROUTES[name]) name = s ? "discover" : "login";
  let spec = ROUTES[name];
  if (!spec.public && !s) {
    name = "login";
    spec = ROUTES.login;
  }
  if (name === "login" && s) {
    navigate("#/discover");
    return;
  }
  banner.clear();
  if (pendingNotice) {
    banner.notice(pendingNotice);
    pendingNotice = null;
  }
  renderChrome(name);
  document.title = `${spec.title} · TruffleBox`;
  if (spec.role && !hasRole(spec.role)) {
    replace(
      main,
      h("h1", { tabindex: "-1" }, spec.title),
      h("p", {}, `This page needs the ${spec.role} role; you are ${s.role}. An admin can change your role.`),
    );
    main.querySelector("h1").focus();
    return;
  }
  if (spec.allowed && !spec.allowed(s)) {
    replace(
      main,
      h("h1", { tabindex: "-1" }, spec.title),
      h("p", {}, "This page is not open to your role; Horizon's settings (try_role, try_entities) decide who may use it."),
    );
    main.querySelector("h1").focus();
    return;
  }
  replace(main, h("p", { class: "muted" }, "Loading…"));
  main.setAttribute("aria-busy", "true");
  try {
    const page = await import(spec.module);
    if (seq !== renderSeq) return;
    const container = h("div", { class: `page page-${name}` });
    await page.render({ root: container, params: route.params, query: route.query, banner, announce, navigate });
    if (seq !== renderSeq) return;
    replace(main, container);
    const heading = container.querySelector("h1");
    if (heading) {
      heading.setAttribute("tabindex", "-1");
      // move focus to the new page's heading so screen readers announce the page change
      heading.focus({ preventScroll: true });
    }
  } catch (err) {
    if (seq !== renderSeq) return;
    replace(main, h("h1", { tabindex: "-1" }, spec.title), h("p", {}, "This page could not be loaded."));
    banner.error(err && err.message ? err.message : String(err), err && err.status);
  } finally {
    if (seq === renderSeq) main.removeAttribute("aria-busy");
  }
}

/** The role may have changed since sign-in (an admin promoted this user): refresh it once on load. */
async function refreshSession() {
  const s = session();
  if (!s) return;
  try {
    const me = await api.me();
    saveSession({ ...s, role: me.role, can_try: me.can_try, try_entities: me.try_entities });
  } catch {
    // a 401 already signed the tab out; anything else leaves the stored session as it is
  }
}

window.addEventListener("hashchange", render);
refreshSession().then(render);
