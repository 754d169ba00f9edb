// The Hubbub portal: Overview, Keys and Audit log, drawn from the admin API with the session
// cookie; state-changing requests carry the session's CSRF token.
"use strict";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const page = document.getElementById("page");

async function api(path, options = {}) {
  const response = await fetch(path, {
    credentials: "same-origin",
    ...options,
    headers: { "X-CSRF-Token": csrf, "Content-Type": "application/json", ...(options.headers || {}) },
  });
  if (response.status === 401) {
    location.reload();
    throw new Error("signed out");
  }
  const text = await response.text();
  const body = text ? JSON.parse(text) : null;
  if (!response.ok) throw new Error((body && body.message) || `HTTP ${response.status}`);
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function toast(text) {
  const t = document.getElementById("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 2000);
}

function when(iso) {
  if (!iso) return "never";
  const d = new Date(iso);
  return d.toLocaleString();
}

function ago(iso) {
  if (!iso) return "never";
  const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  if (s < 60) return `${Math.max(s, 0)} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

const STATUS_TEXT = { ok: "OK", dueSoon: "Due soon", due: "Due", rotationRequired: "Rotation required", disabled: "Disabled" };

function banner(keys) {
  const b = document.getElementById("banner");
  const lines = [];
  let bad = false;
  for (const slot of ["primary", "secondary"]) {
    const s = keys[slot];
    const name = slot[0].toUpperCase() + slot.slice(1);
    if (s.status === "disabled") {
      bad = true;
      lines.push(`${name} key no longer authenticates: it had to be rotated by ${when(s.rotation.deadline)} (${s.rotation.reason}). Regenerate it to restore it.`);
    } else if (s.rotation) {
      lines.push(`${name} key must be rotated by ${when(s.rotation.deadline)}: ${s.rotation.reason}`);
    } else if (s.status === "due" || s.status === "dueSoon") {
      lines.push(`${name} key is due for rotation by ${when(s.dueAt)} (key age policy).`);
    }
  }
  b.replaceChildren(...lines.map((l) => el("p", {}, l)));
  b.className = bad ? "bad" : "";
  b.hidden = lines.length === 0;
}

function secretField(label, value, field, slot) {
  const shown = el("span", { class: "secret mono", "data-field": field, "data-slot": slot }, "•".repeat(24));
  let revealed = false;
  const reveal = el("button", { class: "reveal", type: "button", onclick: () => {
    revealed = !revealed;
    shown.textContent = revealed ? value : "•".repeat(24);
    reveal.textContent = revealed ? "Hide" : "Reveal";
  } }, "Reveal");
  const copy = el("button", { class: `copy copy-${field}`, type: "button", onclick: async () => {
    await navigator.clipboard.writeText(value);
    toast(`${label} copied`);
  } }, "Copy");
  return el("div", { class: "field" }, el("label", {}, label), el("div", { class: "secret-row" }, shown, reveal, copy));
}

function keyCard(keys, slot) {
  const s = keys[slot];
  const name = slot[0].toUpperCase() + slot.slice(1);
  const usage = s.usage || {};
  return el("section", { class: "card key-card", "data-slot": slot },
    el("h2", {}, `${name} key`, el("span", { class: `badge ${s.status}` }, STATUS_TEXT[s.status] || s.status)),
    secretField(`${name} key`, keys[`${slot}Key`], "key", slot),
    secretField(`${name} connection string`, keys[`${slot}ConnectionString`], "connectionString", slot),
    el("div", { class: "meta" },
      el("div", {}, el("b", {}, "Created"), `${s.ageDays} days ago`),
      el("div", {}, el("b", {}, "Version"), s.version),
      el("div", {}, el("b", {}, "Last used"), ago(s.lastUsedAt)),
      el("div", { "data-usage": slot }, el("b", {}, "Last hour"), `${usage.restRequestsLastHour || 0} REST · ${usage.clientConnectionsLastHour || 0} conn.`),
      el("div", {}, el("b", {}, "Total"), `${usage.restRequests || 0} REST · ${usage.clientConnections || 0} conn.`),
      s.dueAt ? el("div", {}, el("b", {}, "Due"), when(s.dueAt)) : null,
    ),
    s.retiring && s.retiring.length ? el("p", { class: "muted retiring", "data-slot": slot }, `The previous value is still accepted until ${when(s.retiring[0].until)} (retiring); retiring value last used ${ago(s.retiringLastUsedAt)}.`) : null,
    el("button", { class: "danger regenerate", "data-slot": slot, type: "button", onclick: () => confirmRegenerate(keys, slot) }, `Regenerate ${slot} key`),
  );
}

function confirmRegenerate(keys, slot) {
  const other = slot === "primary" ? "secondary" : "primary";
  const s = keys[slot];
  const usage = s.usage || {};
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-title").textContent = `Regenerate the ${slot} key?`;
  document.getElementById("confirm-text").textContent =
    `The current ${slot} key and its connection string stop working at once: REST calls and new client connections signed with it will be refused. ` +
    `Connected clients stay connected. Apps using the ${other} key are not affected.`;
  document.getElementById("confirm-usage").textContent =
    `In the last 15 minutes this key authenticated ${usage.usesLast15Minutes || 0} requests and connections; last used ${ago(s.lastUsedAt)}.`;
  dialog.returnValue = "";
  dialog.onclose = async () => {
    if (dialog.returnValue !== "ok") return;
    try {
      await api("/admin/keys/regenerate", { method: "POST", body: JSON.stringify({ keyType: slot }) });
      toast(`New ${slot} key created`);
      await showKeys();
    } catch (e) {
      toast(`Not regenerated: ${e.message}`);
    }
  };
  dialog.showModal();
}

function staleCallersCard(callers) {
  const rows = callers.map((c) => el("tr", { "data-kind": c.kind },
    el("td", {}, `${c.keyType} v${c.version}`), el("td", {}, c.kind), el("td", {}, c.hub),
    el("td", { class: "mono" }, c.sourceAddress), el("td", {}, c.userAgent), el("td", {}, c.count),
    el("td", {}, ago(c.lastSeenAt)),
  ));
  return el("section", { class: "card", id: "stale-callers" },
    el("h2", {}, "Still using an old key"),
    callers.length
      ? el("div", { class: "table-wrap" }, el("table", {},
          el("thead", {}, el("tr", {}, ...["Key", "Kind", "Hub", "Source", "User agent", "Count", "Last seen"].map((h) => el("th", {}, h)))),
          el("tbody", {}, ...rows)))
      : el("p", { class: "muted" }, "No app has used a regenerated key value."),
  );
}

function sinkText(sink) {
  if (sink.kind === "file") return `file ${sink.path}`;
  if (sink.kind === "exec") return `command ${sink.command}`;
  return `webhook ${sink.url}`;
}

function policyCard(policy) {
  if (!policy) {
    return el("section", { class: "card", id: "policy" },
      el("h2", {}, "Rotation policy"),
      el("p", { class: "muted" }, "No rotation policy. Set one to rotate the keys with no human step:"),
      el("p", { class: "mono" }, "hubbub key policy set --every 30d --sink-file <path>"));
  }
  const days = (s) => (s % 86400 === 0 ? `${s / 86400} days` : s % 3600 === 0 ? `${s / 3600} h` : `${s} s`);
  const outcome = policy.lastOutcome;
  return el("section", { class: "card", id: "policy" },
    el("h2", {}, "Rotation policy"),
    el("div", { class: "meta" },
      el("div", {}, el("b", {}, "Active key"), el("span", { id: "policy-active" }, policy.activeKeyType)),
      el("div", {}, el("b", {}, "Every"), days(policy.everySeconds)),
      el("div", {}, el("b", {}, "Next step"), el("span", { id: "policy-next" }, when(policy.nextStepAt))),
      policy.onlyIfIdleSeconds ? el("div", {}, el("b", {}, "Only if idle"), `${policy.onlyIfIdleSeconds / 60} min`) : null,
      el("div", {}, el("b", {}, "Sinks"), el("span", { id: "policy-in-step" }, policy.inStep ? "hold the active key" : "not updated yet")),
    ),
    policy.sinks.length ? el("ul", { class: "sinks" }, ...policy.sinks.map((s) => el("li", { class: "mono" }, sinkText(s)))) : null,
    outcome ? el("p", { class: "muted", id: "policy-outcome" }, `Last: ${outcome.result} ${ago(outcome.at)}: ${outcome.detail}`) : null,
  );
}

async function showKeys() {
  const [keys, stale, policy] = await Promise.all([
    api("/admin/keys"), api("/admin/keys/stale-callers"), api("/admin/keys/policy").catch(() => null),
  ]);
  banner(keys);
  const endpoint = keys.primaryConnectionString.split(";")[0].replace("Endpoint=", "");
  page.replaceChildren(
    el("h1", {}, "Keys"),
    el("p", { class: "muted" }, "Both keys are valid at the same time. Rotate one while the other keeps your apps working."),
    el("section", { class: "card" }, el("div", { class: "field" }, el("label", {}, "Endpoint"), el("span", { class: "secret mono", id: "endpoint" }, endpoint))),
    el("div", { class: "grid" }, keyCard(keys, "primary"), keyCard(keys, "secondary")),
    staleCallersCard(stale.value),
    policyCard(policy),
    el("section", { class: "card" },
      el("h2", {}, "Rotate a key without downtime"),
      el("ol", { class: "runbook" },
        el("li", {}, "Move every app to the secondary connection string and restart them."),
        el("li", {}, "Regenerate the primary key. Apps on the secondary key do not notice."),
        el("li", {}, "Move every app to the new primary connection string and restart them."),
        el("li", {}, "Regenerate the secondary key."),
      ),
    ),
  );
}

async function showAudit() {
  const [audit, notices] = await Promise.all([api("/admin/audit?limit=500"), api("/admin/notices")]);
  const noticeRows = notices.map((n) => el("tr", {},
    el("td", {}, when(n.createdAt)), el("td", {}, n.kind), el("td", {}, n.channel), el("td", {}, n.subject),
    el("td", {}, n.status === "sent" ? `sent ${when(n.sentAt)}` : `${n.status} (${n.attempts} attempts${n.lastError ? `: ${n.lastError}` : ""})`),
  ));
  const rows = audit.value.slice().reverse().map((e) => el("tr", {},
    el("td", {}, when(e.at)), el("td", {}, e.event), el("td", {}, e.slot || ""),
    el("td", {}, e.oldVersion !== undefined || e.newVersion !== undefined ? `${e.oldVersion ?? ""} → ${e.newVersion ?? ""}` : ""),
    el("td", {}, e.actor), el("td", {}, e.source || ""), el("td", {}, e.detail || ""),
  ));
  page.replaceChildren(
    el("h1", {}, "Audit log"),
    el("p", { class: "muted" }, "Every key event, newest first. The log is append-only."),
    el("section", { class: "card table-wrap" }, el("h2", {}, "Notices"),
      notices.length === 0
        ? el("p", { class: "muted", id: "no-notices" }, "No notices. Configure [notifications] to send them by email or webhook.")
        : el("table", { id: "notices" },
          el("thead", {}, el("tr", {}, ...["Created", "Kind", "Channel", "Subject", "Delivery"].map((h) => el("th", {}, h)))),
          el("tbody", {}, noticeRows),
        ),
    ),
    el("section", { class: "card table-wrap" }, el("table", { id: "audit" },
      el("thead", {}, el("tr", {}, ...["Time", "Event", "Key", "Version", "Actor", "Source", "Detail"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows),
    )),
  );
}

async function showOverview() {
  const [overview, keys] = await Promise.all([api("/admin/overview"), api("/admin/keys")]);
  banner(keys);
  page.replaceChildren(
    el("h1", {}, "Overview"),
    el("div", { class: "grid" },
      el("section", { class: "card" }, el("h2", {}, "Live connections"), el("div", { class: "stat", id: "connections" }, overview.connections)),
      el("section", { class: "card" }, el("h2", {}, "Messages per second"), el("div", { class: "stat", id: "rate" }, overview.messagesPerSecond.toFixed(1))),
      el("section", { class: "card" }, el("h2", {}, "Keys"), el("p", {}, `Primary: ${STATUS_TEXT[keys.primary.status]}`), el("p", {}, `Secondary: ${STATUS_TEXT[keys.secondary.status]}`)),
    ),
    el("section", { class: "card table-wrap" }, el("h2", {}, "Hubs"), el("table", { id: "hubs" },
      el("thead", {}, el("tr", {}, el("th", {}, "Hub"), el("th", {}, "Connections"), el("th", {}, "Event handlers"))),
      el("tbody", {}, overview.hubs.map((h) => el("tr", {}, el("td", {}, h.name), el("td", {}, h.connections), el("td", {}, h.eventHandlers)))),
    )),
  );
}

const pages = { keys: showKeys, audit: showAudit, overview: showOverview };

async function route() {
  const name = (location.hash.replace("#/", "") || "keys").split("?")[0];
  const show = pages[name] || showKeys;
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.dataset.page === name);
  try {
    await show();
  } catch (e) {
    page.replaceChildren(el("p", { class: "error" }, `Could not load this page: ${e.message}`));
  }
}

document.getElementById("sign-out").addEventListener("click", async () => {
  await fetch("/portal/logout", { method: "POST", headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" });
  location.href = "/portal";
});
window.addEventListener("hashchange", route);
route();
