// The Horizon REST API (/api/v1, see docs/trufflebox.md) and the session kept in sessionStorage.

const SESSION_KEY = "trufflebox.session";
const BASE = "api/v1";

/** An error answered by the API: `status` is the HTTP status, `detail` the body's "detail". */
export class ApiError extends Error {
  constructor(status, detail) {
    super(describe(status, detail));
    this.name = "ApiError";
    this.status = status;
    this.detail = detail;
  }

  /** FastAPI-style validation items [{loc, msg, type}], or [] when this is not one. */
  get fieldErrors() {
    if (this.status !== 422 || !Array.isArray(this.detail)) return [];
    return this.detail.filter((d) => d && Array.isArray(d.loc));
  }
}

function describe(status, detail) {
  if (typeof detail === "string" && detail) return detail;
  if (Array.isArray(detail)) {
    return detail.map((d) => (d && d.msg ? `${(d.loc || []).join(".")}: ${d.msg}` : JSON.stringify(d))).join("; ");
  }
  if (detail && typeof detail === "object") return JSON.stringify(detail);
  if (status === 0) return "Horizon cannot be reached (is `ofs horizon` running?)";
  return `HTTP ${status}`;
}

/** {token, expires_at, username, role, can_try, try_entities} or null when signed out or expired. */
export function session() {
  let s = null;
  try {
    s = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
  } catch {
    s = null;
  }
  if (!s || !s.token) return null;
  if (s.expires_at && Date.parse(s.expires_at) <= Date.now()) {
    sessionStorage.removeItem(SESSION_KEY);
    return null;
  }
  return s;
}

export function saveSession(s) {
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(s));
}

export function clearSession() {
  sessionStorage.removeItem(SESSION_KEY);
}

const RANK = { viewer: 0, editor: 1, admin: 2 };

/** True when the signed-in user's role is at least `role` (viewer < editor < admin). */
export function hasRole(role) {
  const s = session();
  return Boolean(s) && (RANK[s.role] ?? -1) >= RANK[role];
}

// Called with the error when a request is answered 401: the app signs out and shows the login page.
let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) {
  onUnauthorized = fn;
}

/**
 * Calls the API. Resolves to the parsed JSON body (null for 204), rejects with an ApiError.
 * `query` values that are null, undefined or "" are left out.
 */
export async function request(method, path, { body, query, auth = true } = {}) {
  let url = `${BASE}${path}`;
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) {
      if (v !== null && v !== undefined && v !== "") params.set(k, String(v));
    }
    const qs = params.toString();
    if (qs) url += `?${qs}`;
  }
  const headers = { Accept: "application/json" };
  const s = session();
  if (auth && s) headers.Authorization = `Bearer ${s.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch {
    throw new ApiError(0, null);
  }
  const text = await response.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { detail: text };
    }
  }
  if (!response.ok) {
    const detail = data && typeof data === "object" && "detail" in data ? data.detail : text || response.statusText;
    const err = new ApiError(response.status, detail);
    if (response.status === 401 && auth && s) onUnauthorized(err);
    throw err;
  }
  return data;
}

const enc = encodeURIComponent;

/** One function per endpoint of the contract. */
export const api = {
  registration: () => request("GET", "/auth/registration", { auth: false }),
  register: (username, password) =>
    request("POST", "/auth/register", { body: { username, password }, auth: false }),
  login: (username, password) => request("POST", "/auth/login", { body: { username, password }, auth: false }),
  logout: () => request("POST", "/auth/logout"),
  me: () => request("GET", "/auth/me"),
  changePassword: (current_password, new_password) =>
    request("POST", "/auth/password", { body: { current_password, new_password } }),
  users: () => request("GET", "/users"),
  createUser: (username, password, role) => request("POST", "/users", { body: { username, password, role } }),
  setRole: (username, role) => request("PATCH", `/users/${enc(username)}`, { body: { role } }),

  registry: () => request("GET", "/registry"),
  stores: () => request("GET", "/stores"),
  entities: (q) => request("GET", "/entities", { query: { q } }),
  entity: (label) => request("GET", `/entities/${enc(label)}`),
  featureGroup: (entity, fg) => request("GET", `/entities/${enc(entity)}/feature-groups/${enc(fg)}`),
  callers: () => request("GET", "/callers"),
  search: (q) => request("GET", "/search", { query: { q } }),
  dataTypes: () => request("GET", "/data-types"),

  createRequest: (kind, payload, description) =>
    request("POST", "/requests", { body: { kind, payload, description } }),
  requests: (query) => request("GET", "/requests", { query }),
  requestById: (id) => request("GET", `/requests/${enc(id)}`),
  approve: (id) => request("POST", `/requests/${enc(id)}/approve`),
  reject: (id, reason) => request("POST", `/requests/${enc(id)}/reject`, { body: { reason } }),
  cancel: (id) => request("POST", `/requests/${enc(id)}/cancel`),
  audit: (query) => request("GET", "/audit", { query }),

  tryRetrieve: (body) => request("POST", "/try/retrieve", { body }),
};
