// The Hubbub portal: Overview (with charts), a page per hub (status and settings editor), Keys,
// the live trace and the Audit log, drawn from the admin API with the session cookie;
// state-changing requests carry the session's CSRF token. No library: the DOM is built with
// `el()`, the charts are SVG made with `svgEl()`, and every style lives in app.css (the page's
// Content-Security-Policy allows no inline styles or scripts).
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
  if (!response.ok) {
    const error = new Error((body && body.message) || `HTTP ${response.status}`);
    error.status = response.status;
    error.code = body && body.code;
    throw error;
  }
  return body;
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "class") node.className = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const child of children.flat(Infinity)) {
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
      await route();
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
      ? el("div", { class: "table-wrap" }, el("table", { class: "wide" },
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

async function showKeys(view) {
  const [keys, stale, policy, past] = await Promise.all([
    api("/admin/keys"), api("/admin/keys/stale-callers"), api("/admin/keys/policy").catch(() => null),
    api("/admin/history").catch(() => null),
  ]);
  if (!view.current()) return;
  banner(keys);
  const endpoint = keys.primaryConnectionString.split(";")[0].replace("Endpoint=", "");
  view.render(
    el("h1", {}, "Keys"),
    el("p", { class: "muted" }, "Both keys are valid at the same time. Rotate one while the other keeps your apps working."),
    el("section", { class: "card" }, el("div", { class: "field" }, el("label", {}, "Endpoint"), el("span", { class: "secret mono", id: "endpoint" }, endpoint))),
    el("div", { class: "grid" }, keyCard(keys, "primary"), keyCard(keys, "secondary")),
    keyUseCard(past),
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

async function showAudit(view) {
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
  view.render(
    el("h1", {}, "Audit log"),
    el("p", { class: "muted" }, "Every key event, newest first. The log is append-only."),
    el("section", { class: "card table-wrap" }, el("h2", {}, "Notices"),
      notices.length === 0
        ? el("p", { class: "muted", id: "no-notices" }, "No notices. Configure [notifications] to send them by email or webhook.")
        : el("table", { id: "notices", class: "wide" },
          el("thead", {}, el("tr", {}, ...["Created", "Kind", "Channel", "Subject", "Delivery"].map((h) => el("th", {}, h)))),
          el("tbody", {}, noticeRows),
        ),
    ),
    el("section", { class: "card table-wrap" }, el("table", { id: "audit", class: "wide" },
      el("thead", {}, el("tr", {}, ...["Time", "Event", "Key", "Version", "Actor", "Source", "Detail"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows),
    )),
  );
}


// ---- formatting ----

function hubHref(name) {
  return `#/hubs/${encodeURIComponent(name)}`;
}

function count(n) {
  return Number(n || 0).toLocaleString();
}

function byteSize(n) {
  const v = Number(n || 0);
  if (v < 1024) return `${v} B`;
  if (v < 1024 * 1024) return `${(v / 1024).toFixed(1)} KiB`;
  if (v < 1024 * 1024 * 1024) return `${(v / (1024 * 1024)).toFixed(1)} MiB`;
  return `${(v / (1024 * 1024 * 1024)).toFixed(1)} GiB`;
}

function two(n) {
  return String(n).padStart(2, "0");
}

/** Local wall-clock time with milliseconds, for the trace. */
function clockTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  return `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, "0")}`;
}

/** HH:MM, or HH:MM:SS when the span shown is under three minutes. */
function timeLabel(ms, spanMs = Infinity) {
  const d = new Date(ms);
  const base = `${two(d.getHours())}:${two(d.getMinutes())}`;
  return spanMs < 180_000 ? `${base}:${two(d.getSeconds())}` : base;
}

function fmtValue(v) {
  const n = Number(v) || 0;
  return n.toLocaleString(undefined, { maximumFractionDigits: n >= 100 ? 0 : n >= 10 ? 1 : 2 });
}

/** Replace a container's content, giving focus back to the link that had it (refreshes). */
function keepFocus(container, replace) {
  const active = document.activeElement;
  const href = active && container.contains(active) ? active.getAttribute("href") : null;
  replace();
  if (href) {
    const again = [...container.querySelectorAll("a[href]")].find((a) => a.getAttribute("href") === href);
    if (again) again.focus();
  }
}

function labelled(text, control, hint) {
  return el("div", { class: "field" }, el("label", { for: control.id }, text), control,
    hint ? el("p", { class: "hint muted", id: `${control.id}-hint` }, hint) : null);
}

// ---- charts: inline SVG, no library ----

const SVG_NS = "http://www.w3.org/2000/svg";

function svgEl(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v !== undefined && v !== null) node.setAttribute(k, v);
  }
  for (const child of children.flat(Infinity)) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** The smallest of 1, 2, 2.5, 5 × 10^n at or above `value` (1 for nothing). */
function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value * (1 - 1e-9)) return step * power;
  return 10 * power;
}

/**
 * A line chart: `points` have `at` (RFC 3339), oldest first; each of `series` is
 * { name, label, value(point) }. One `polyline.series.series-<name>` per series (its
 * `data-points` is the number of points), a dot on the latest value, a max label and time
 * labels; the SVG scales with its container (viewBox; width 100% in app.css). Screen readers
 * get the aria-label (the latest values) and a visually hidden table of the latest points.
 */
function lineChart({ id, title, points, series, empty = "No data yet." }) {
  const W = 520, H = 200, L = 46, R = 14, T = 12, B = 26;
  const times = points.map((p) => new Date(p.at).getTime());
  const values = series.map((s) => points.map((p) => Number(s.value(p)) || 0));
  const max = niceMax(Math.max(0, ...values.flat()));
  const t1 = times.length ? times[times.length - 1] : Date.now();
  const t0 = times.length > 1 ? times[0] : t1 - 60_000;
  const span = t1 - t0 || 1;
  const x = (t) => L + ((W - L - R) * (t - t0)) / span;
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const latest = series.map((s, i) => `${s.label} ${fmtValue(values[i][values[i].length - 1] ?? 0)}`).join(", ");
  const label = points.length
    ? `${title}, ${timeLabel(t0, span)} to ${timeLabel(t1, span)}. Latest: ${latest}. Scale up to ${fmtValue(max)}.`
    : `${title}: ${empty}`;
  const grid = [0, 0.5, 1].map((f) => [
    svgEl("line", { class: f === 0 ? "axis" : "grid", x1: L, x2: W - R, y1: y(max * f), y2: y(max * f) }),
    svgEl("text", { class: "tick", x: L - 6, y: y(max * f) + 4, "text-anchor": "end" }, fmtValue(max * f)),
  ]);
  const ticks = points.length > 1
    ? [[t0, "start"], [(t0 + t1) / 2, "middle"], [t1, "end"]]
    : points.length ? [[t1, "end"]] : [];
  const svg = svgEl("svg", { class: "chart-svg", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label },
    svgEl("title", {}, title),
    grid,
    svgEl("line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }),
    ticks.map(([t, anchor]) => svgEl("text", { class: "tick time", x: x(t), y: H - 6, "text-anchor": anchor }, timeLabel(t, span))),
    // Drawn last series first, so that the first (the main one) is on top where lines meet.
    series.map((s, i) => svgEl("polyline", {
      class: `series series-${s.name}`,
      "data-points": points.length,
      points: values[i].map((v, j) => `${x(times[j]).toFixed(1)},${y(v).toFixed(1)}`).join(" "),
    })).reverse(),
    points.length
      ? series.map((s, i) => svgEl("circle", { class: `dot series-${s.name}`, r: 3, cx: x(t1).toFixed(1), cy: y(values[i][values[i].length - 1]).toFixed(1) })).reverse()
      : svgEl("text", { class: "empty", x: (L + W - R) / 2, y: (T + H - B) / 2, "text-anchor": "middle" }, empty),
  );
  const recent = points.slice(-10);
  const first = points.length - recent.length;
  // (Wrapped: a table itself is not clipped by overflow, and would widen the page.)
  const table = el("div", { class: "visually-hidden" }, el("table", {},
    el("caption", {}, `${title}: the latest ${recent.length} points`),
    el("thead", {}, el("tr", {}, el("th", {}, "Time"), series.map((s) => el("th", {}, s.label)))),
    el("tbody", {}, recent.map((_, j) => el("tr", {},
      el("td", {}, timeLabel(times[first + j], 0)),
      series.map((_s, i) => el("td", {}, fmtValue(values[i][first + j]))),
    ))),
  ));
  const legend = series.length > 1
    ? el("ul", { class: "legend" }, series.map((s) => el("li", {}, el("span", { class: `swatch series-${s.name}` }), s.label)))
    : null;
  return el("figure", { class: "chart", id }, svg, legend, table);
}

function noHistory() {
  return el("p", { class: "muted" }, "No history is available from this server.");
}

function keyUseCard(past) {
  return el("section", { class: "card", id: "key-use" },
    el("h2", {}, "Key use per minute (last hour)"),
    el("p", { class: "muted" }, "REST requests and client connections authenticated by each key. A retiring value is a regenerated key's previous value, accepted during its grace period."),
    past
      ? lineChart({
        id: "chart-key-use",
        title: "Key use per minute",
        points: past.keyUse || [],
        series: [
          { name: "primary", label: "Primary", value: (p) => p.primary },
          { name: "secondary", label: "Secondary", value: (p) => p.secondary },
          { name: "primaryRetiring", label: "Primary (retiring value)", value: (p) => p.primaryRetiring },
          { name: "secondaryRetiring", label: "Secondary (retiring value)", value: (p) => p.secondaryRetiring },
        ],
      })
      : noHistory(),
  );
}

// ---- Overview ----

function hubsTable(hubs) {
  return el("table", { id: "hubs" },
    el("thead", {}, el("tr", {}, el("th", {}, "Hub"), el("th", {}, "Connections"), el("th", {}, "Event handlers"))),
    el("tbody", {}, hubs.length
      ? hubs.map((h) => el("tr", { "data-hub": h.name },
        el("td", {}, el("a", { href: hubHref(h.name), class: "hub-link" }, h.name)),
        el("td", {}, count(h.connections)), el("td", {}, h.eventHandlers)))
      : el("tr", {}, el("td", { colspan: "3", class: "muted" }, "No hub has connections or settings yet."))),
  );
}

async function showOverview(view) {
  page.setAttribute("aria-live", "off"); // refreshed every 10 s: not announced each time
  const stats = el("div", { class: "grid" });
  const charts = el("div", { class: "grid charts" });
  const hubs = el("div", { class: "table-wrap" });
  const updated = el("p", { class: "muted small", id: "overview-updated" });
  const hubInput = el("input", { id: "open-hub-name", name: "hub", autocomplete: "off", spellcheck: "false", placeholder: "chat" });
  const openHub = el("form", {
    class: "inline-form", id: "open-hub",
    onsubmit: (e) => {
      e.preventDefault();
      const name = hubInput.value.trim();
      if (name) location.hash = hubHref(name);
      else hubInput.focus();
    },
  }, el("label", { for: "open-hub-name" }, "Open hub"), hubInput, el("button", { type: "submit" }, "Open"));

  async function load() {
    const [overview, keys, past] = await Promise.all([
      api("/admin/overview"), api("/admin/keys"), api("/admin/history").catch(() => null),
    ]);
    if (!view.current()) return;
    banner(keys);
    stats.replaceChildren(
      el("section", { class: "card" }, el("h2", {}, "Live connections"), el("div", { class: "stat", id: "connections" }, overview.connections)),
      el("section", { class: "card" }, el("h2", {}, "Messages per second"), el("div", { class: "stat", id: "rate" }, overview.messagesPerSecond.toFixed(1))),
      el("section", { class: "card" }, el("h2", {}, "Keys"), el("p", {}, `Primary: ${STATUS_TEXT[keys.primary.status]}`), el("p", {}, `Secondary: ${STATUS_TEXT[keys.secondary.status]}`)),
    );
    const traffic = past ? past.traffic || [] : [];
    // A point counts what happened since the previous one (`at` is its interval's end); the last
    // interval is still in progress, so each rate divides by the point's own span (at least 1 s).
    const interval = past && past.intervalSeconds > 0 ? past.intervalSeconds : 10;
    const spans = new Map(traffic.map((p, i) => {
      const since = i > 0 ? (new Date(p.at) - new Date(traffic[i - 1].at)) / 1000 : interval;
      return [p, Math.max(Number.isFinite(since) ? since : interval, 1)];
    }));
    charts.replaceChildren(
      el("section", { class: "card" }, el("h2", {}, "Connections (last hour)"), past
        ? lineChart({
          id: "chart-connections", title: "Connections", points: traffic,
          series: [{ name: "connections", label: "Connections", value: (p) => p.connections }],
        })
        : noHistory()),
      el("section", { class: "card" }, el("h2", {}, "Messages per second (last hour)"), past
        ? lineChart({
          id: "chart-messages", title: "Messages per second", points: traffic,
          series: [
            { name: "received", label: "Received", value: (p) => p.messagesReceived / spans.get(p) },
            { name: "delivered", label: "Delivered", value: (p) => p.messagesDelivered / spans.get(p) },
          ],
        })
        : noHistory()),
    );
    keepFocus(hubs, () => hubs.replaceChildren(hubsTable(overview.hubs)));
    updated.textContent = `Updated at ${new Date().toLocaleTimeString()}; refreshed every 10 s while shown.`;
  }

  await load();
  view.render(
    el("h1", {}, "Overview"),
    stats,
    charts,
    el("section", { class: "card" }, el("h2", {}, "Hubs"), openHub, hubs),
    updated,
  );
  const timer = setInterval(() => {
    load().catch((e) => { updated.textContent = `Could not refresh: ${e.message}`; });
  }, 10_000);
  view.onLeave(() => clearInterval(timer));
}

// ---- A hub: status, event handlers, settings editor ----

const SYSTEM_EVENTS = ["connect", "connected", "disconnected", "joined", "left"];

async function showHub(view, name) {
  const status = await api(`/admin/hubs/${encodeURIComponent(name)}/status`);
  if (!view.current()) return;
  const traffic = status.traffic || {};
  const groups = status.groups || [];
  const handlers = status.eventHandlers || [];
  const stat = (label, id, value) => el("div", {}, el("b", {}, label), el("span", { id }, value));
  view.render(
    el("p", { class: "crumbs" }, el("a", { href: "#/overview" }, "Overview"), " / hub"),
    el("h1", { id: "hub-name" }, status.name),
    el("p", {}, el("a", { href: `#/trace?hub=${encodeURIComponent(status.name)}`, id: "trace-hub-link" }, "Live trace of this hub")),
    el("section", { class: "card", id: "hub-status" },
      el("h2", {}, "Now"),
      el("div", { class: "meta" },
        stat("Connections", "hub-connections", count(status.connections)),
        stat("Users", "hub-users", count(status.users)),
        stat("Messages received", "hub-received", count(traffic.messagesReceived)),
        stat("Messages delivered", "hub-delivered", count(traffic.messagesDelivered)),
        stat("Bytes received", "hub-bytes-received", byteSize(traffic.bytesReceived)),
        stat("Bytes sent", "hub-bytes-sent", byteSize(traffic.bytesSent)),
      ),
    ),
    el("div", { class: "grid" },
      el("section", { class: "card" },
        el("h2", {}, "Largest groups"),
        groups.length
          ? el("div", { class: "table-wrap" }, el("table", { id: "groups" },
            el("thead", {}, el("tr", {}, el("th", {}, "Group"), el("th", {}, "Connections"))),
            el("tbody", {}, groups.map((g) => el("tr", { "data-group": g.name }, el("td", {}, g.name), el("td", {}, count(g.connections)))))))
          : el("p", { class: "muted", id: "no-groups" }, "No groups.")),
      el("section", { class: "card" },
        el("h2", {}, "Event handler status"),
        handlers.length
          ? el("div", { class: "table-wrap" }, el("table", { id: "handler-status" },
            el("thead", {}, el("tr", {}, el("th", {}, "URL template"), el("th", {}, "Status"))),
            el("tbody", {}, handlers.map((h) => el("tr", { "data-status": h.problem ? "problem" : "ok" },
              el("td", { class: "mono break" }, h.urlTemplate),
              el("td", {}, h.problem
                ? [el("span", { class: "badge bad" }, "Failing"), el("div", { class: "problem" }, `${h.problem.reason} (${ago(h.problem.at)})`)]
                : el("span", { class: "badge" }, "OK")),
            )))))
          : el("p", { class: "muted", id: "no-handlers" }, "No event handlers: no app server is called for this hub.")),
    ),
    settingsEditor(status.name, status.settings, () => route()),
  );
}

/** The hub settings form; Save sends PUT /admin/hubs/{hub}, the server validates. */
function settingsEditor(hub, settings, reload) {
  const current = settings || {};
  const list = el("div", { class: "handlers", id: "handlers" });
  const none = el("p", { class: "muted", id: "handlers-empty" }, "No event handlers.");
  const error = el("p", { class: "error", id: "hub-settings-error", role: "alert" });
  let serial = 0;

  function renumber() {
    const all = [...list.querySelectorAll(":scope > fieldset.handler")];
    all.forEach((fs, i) => {
      fs.querySelector(":scope > legend").textContent = `Event handler ${i + 1}`;
      fs.querySelector(".remove-handler").setAttribute("aria-label", `Remove event handler ${i + 1}`);
      const up = fs.querySelector(".move-up");
      up.setAttribute("aria-label", `Move event handler ${i + 1} up`);
      up.disabled = i === 0;
    });
    none.hidden = all.length > 0;
  }

  function handlerFieldset(h) {
    const n = ++serial;
    const url = el("input", {
      id: `handler-${n}-url`, name: "urlTemplate", class: "mono", value: h.urlTemplate || "",
      placeholder: "https://app.example.com/eventhandler/{event}", autocomplete: "off", spellcheck: "false",
      "aria-describedby": `handler-${n}-url-hint`,
    });
    const pattern = el("input", {
      id: `handler-${n}-pattern`, name: "userEventPattern", value: h.userEventPattern ?? "",
      placeholder: "*", autocomplete: "off", spellcheck: "false", "aria-describedby": `handler-${n}-pattern-hint`,
    });
    const wanted = (h.systemEvents || []).map((e) => String(e).toLowerCase());
    const fs = el("fieldset", { class: "handler" },
      el("legend", {}, "Event handler"),
      labelled("URL template", url, "http:// or https://; {hub} and {event} may appear in the path or query."),
      labelled("User event pattern", pattern, "* for every user event, one name, names separated by commas, or empty for none."),
      el("fieldset", { class: "checks" },
        el("legend", {}, "System events"),
        SYSTEM_EVENTS.map((ev) => el("label", { class: "check" },
          el("input", { type: "checkbox", name: "systemEvents", value: ev, checked: wanted.includes(ev) ? "" : null }), ev))),
      el("div", { class: "handler-actions" },
        el("button", { type: "button", class: "move-up", onclick: (e) => {
          const prev = fs.previousElementSibling;
          if (prev) list.insertBefore(fs, prev);
          renumber();
          e.currentTarget.focus();
        } }, "Move up"),
        el("button", { type: "button", class: "remove-handler", onclick: () => {
          fs.remove();
          renumber();
          add.focus();
        } }, "Remove"),
      ),
    );
    fs.original = h; // fields this form does not edit are sent back as they were
    return fs;
  }

  for (const h of current.eventHandlers || []) list.append(handlerFieldset(h));
  const add = el("button", { type: "button", id: "add-handler", onclick: () => {
    const fs = handlerFieldset({ userEventPattern: "*", systemEvents: [] });
    list.append(fs);
    renumber();
    fs.querySelector('input[name="urlTemplate"]').focus();
  } }, "Add event handler");

  const policy = el("select", { id: "anonymous-policy", name: "anonymousConnectPolicy", "aria-describedby": "anonymous-policy-hint" },
    el("option", { value: "deny" }, "Deny"), el("option", { value: "allow" }, "Allow"));
  policy.value = String(current.anonymousConnectPolicy || "deny").toLowerCase();
  const keepAlive = el("input", {
    id: "keep-alive", name: "webSocketKeepAliveIntervalInSeconds", inputmode: "numeric", autocomplete: "off",
    value: current.webSocketKeepAliveIntervalInSeconds ?? "", placeholder: "default", "aria-describedby": "keep-alive-hint",
  });
  const save = el("button", { type: "submit", class: "primary", id: "save-settings" }, "Save");

  function collect() {
    const eventHandlers = [...list.querySelectorAll(":scope > fieldset.handler")].map((fs) => {
      const h = { ...fs.original };
      h.urlTemplate = fs.querySelector('input[name="urlTemplate"]').value.trim();
      const p = fs.querySelector('input[name="userEventPattern"]').value.trim();
      if (p) h.userEventPattern = p;
      else delete h.userEventPattern;
      h.systemEvents = [...fs.querySelectorAll('input[name="systemEvents"]:checked')].map((c) => c.value);
      return h;
    });
    const body = { ...current, eventHandlers, anonymousConnectPolicy: policy.value };
    const secs = keepAlive.value.trim();
    if (secs === "") delete body.webSocketKeepAliveIntervalInSeconds;
    else if (/^\d+$/.test(secs)) body.webSocketKeepAliveIntervalInSeconds = Number(secs);
    else throw new Error("The keep-alive interval must be a whole number of seconds.");
    return body;
  }

  const form = el("form", {
    id: "hub-settings", novalidate: "", "aria-describedby": "hub-settings-error",
    onsubmit: async (e) => {
      e.preventDefault();
      error.textContent = "";
      let body;
      try {
        body = collect();
      } catch (err) {
        error.textContent = err.message;
        return;
      }
      save.disabled = true;
      try {
        await api(`/admin/hubs/${encodeURIComponent(hub)}`, { method: "PUT", body: JSON.stringify(body) });
        toast("Saved");
        await reload();
      } catch (err) {
        // The input stays as typed so that it can be corrected.
        error.textContent = `Not saved: ${err.message}`;
        save.disabled = false;
      }
    },
  },
  list, none, el("p", {}, add),
  el("div", { class: "grid compact" },
    labelled("Anonymous connections", policy, "Allow: clients may connect without an access token."),
    labelled("Keep-alive interval (seconds)", keepAlive, "1 to 120; empty for the server's default."),
  ),
  error,
  el("div", { class: "actions" }, save),
  );
  renumber();
  return el("section", { class: "card", id: "settings" },
    el("h2", {}, "Settings"),
    el("p", { class: "muted" }, settings
      ? "The first event handler that takes an event gets it. Changes apply to the next event, without a restart."
      : "This hub has no settings yet: saving creates them."),
    form,
  );
}

// ---- Live trace ----

const TRACE_MAX_ROWS = 1000;
const TRACE_CATEGORIES = [
  ["", "All"], ["connection", "Connections"], ["message", "Messages"], ["rest", "REST calls"],
  ["eventHandler", "Event handler calls"], ["auth", "Authentication failures"],
];
const EVENT_LABEL = {
  connectionOpened: "connection opened", connectionClosed: "connection closed", rest: "REST call",
  message: "message", eventHandler: "event handler", authFailure: "auth failure", dropped: "dropped",
};

function ms(v) {
  return typeof v === "number" ? `${v < 10 ? v.toFixed(1) : Math.round(v)} ms` : "";
}

function traceDetail(e) {
  switch (e.event) {
    case "connectionOpened":
      return [
        e.protocol ? `protocol ${e.protocol}` : "simple WebSocket client",
        e.keySlot === "salt" ? "generated token" : e.keySlot ? `${e.keySlot} key` : "anonymous",
      ].join(" · ");
    case "connectionClosed":
      return [
        `closed by ${e.by}`,
        e.cause && e.cause !== e.by ? `cause ${e.cause}` : null,
        e.code !== null && e.code !== undefined ? `code ${e.code}` : null,
        e.reason ? `reason: ${e.reason}` : "no reason",
      ].filter(Boolean).join(" · ");
    case "rest":
      return `${e.method} ${e.path} → ${e.status} · ${ms(e.ms)}`;
    case "message":
      return [
        `to ${e.target}${e.name ? ` ${e.name}` : ""}`, e.dataType, byteSize(e.bytes),
        `delivered here to ${e.deliveredHere}`,
      ].join(" · ");
    case "eventHandler":
      return `${e.name} → ${e.status ?? `error: ${e.error}`} · ${ms(e.ms)}`;
    case "authFailure":
      return `${e.kind}: ${e.reason}`;
    default:
      return e.reason || "";
  }
}

function traceFailed(e) {
  return e.event === "authFailure" || e.event === "dropped" || (e.event === "rest" && e.status >= 400)
    || (e.event === "eventHandler" && (e.error || e.status >= 400));
}

/** The hub of an event: its own, or a REST call's from its path. */
function traceHub(e) {
  if (e.hub) return e.hub;
  const m = e.event === "rest" && /^\/api\/hubs\/([^/]+)/.exec(e.path || "");
  return m ? decodeURIComponent(m[1]) : "";
}

async function showTrace(view, params) {
  page.setAttribute("aria-live", "off"); // the table changes all the time; the status line is the live region
  const filter = {};
  const input = (key, label) => {
    const node = el("input", { id: `trace-${key}`, name: key, value: params.get(key) || "", autocomplete: "off", spellcheck: "false" });
    filter[key] = node;
    return labelled(label, node);
  };
  const category = el("select", { id: "trace-category", name: "category", onchange: () => connect() },
    TRACE_CATEGORIES.map(([value, text]) => el("option", { value }, text)));
  category.value = params.get("category") || "";
  filter.category = category;

  const status = el("p", { id: "trace-status", class: "trace-status", role: "status", "data-state": "connecting" }, "Connecting…");
  const reconnect = el("button", { type: "button", id: "trace-reconnect", hidden: "", onclick: () => connect() }, "Reconnect");
  const tally = el("span", { id: "trace-count", class: "muted" }, "0 events");
  const pause = el("button", { type: "button", id: "trace-pause", "aria-pressed": "false", onclick: () => setPaused(!paused) }, "Pause");
  const tbody = el("tbody");
  const emptyRow = el("p", { class: "muted", id: "trace-empty" }, "Waiting for events… Connect a client or call the REST API.");

  // Shown events, oldest first (the table shows them newest first). While paused, new events are
  // held (up to TRACE_MAX_ROWS, the oldest held ones dropped beyond) and shown on Resume.
  let shown = [];
  let held = [];
  let heldDropped = 0;
  let paused = false;
  let pending = [];
  let frame = 0;
  let source = null;
  let lastDropped = null;

  function setStatus(state, text) {
    status.dataset.state = state;
    status.textContent = text;
    reconnect.hidden = state !== "closed";
  }

  function updateTally() {
    tally.textContent = paused
      ? `${shown.length} shown · paused, ${held.length + heldDropped} new held`
      : `${shown.length} event${shown.length === 1 ? "" : "s"}`;
    emptyRow.hidden = shown.length > 0;
  }

  function connectionCell(e) {
    const id = e.connectionId || e.fromConnectionId;
    return el("td", { class: "mono" },
      id ? el("button", {
        type: "button", class: "link conn", title: "Show only this connection",
        onclick: () => { filter.connectionId.value = id; connect(); },
      }, e.fromConnectionId && !e.connectionId ? `from ${id}` : id) : null,
      e.userId ? el("div", { class: "muted" }, `user ${e.userId}`) : null);
  }

  function row(e) {
    const hub = traceHub(e);
    const id = e.connectionId || e.fromConnectionId;
    return el("tr", { "data-event": e.event, "data-connection-id": id || null, class: traceFailed(e) ? "row-bad" : null },
      el("td", { class: "mono nowrap", title: e.time || e.at || "" }, clockTime(e.time || e.at)),
      el("td", { class: "nowrap" }, el("span", { class: `event-tag ev-${e.event}` }, EVENT_LABEL[e.event] || e.event)),
      el("td", {}, hub ? el("a", { href: hubHref(hub) }, hub) : ""),
      connectionCell(e),
      el("td", { class: "detail" }, traceDetail(e)));
  }

  function flush() {
    frame = 0;
    if (!pending.length) return;
    const rows = document.createDocumentFragment();
    for (let i = pending.length - 1; i >= 0; i--) rows.append(row(pending[i]));
    tbody.prepend(rows);
    shown = shown.concat(pending);
    pending = [];
    while (tbody.childElementCount > TRACE_MAX_ROWS) tbody.lastElementChild.remove();
    if (shown.length > TRACE_MAX_ROWS) shown = shown.slice(shown.length - TRACE_MAX_ROWS);
    updateTally();
  }

  function add(e) {
    if (paused) {
      held.push(e);
      if (held.length > TRACE_MAX_ROWS) { held.shift(); heldDropped += 1; }
      updateTally();
      return;
    }
    pending.push(e);
    if (pending.length > TRACE_MAX_ROWS) pending.shift();
    if (!frame) frame = requestAnimationFrame(flush);
  }

  function setPaused(value) {
    paused = value;
    pause.textContent = paused ? "Resume" : "Pause";
    pause.setAttribute("aria-pressed", String(paused));
    if (!paused) {
      const release = held;
      held = [];
      heldDropped = 0;
      for (const e of release) add(e);
    }
    updateTally();
  }

  function query() {
    const q = new URLSearchParams();
    for (const [key, node] of Object.entries(filter)) {
      const v = node.value.trim();
      if (v) q.set(key, v);
    }
    return q.toString();
  }

  function describe() {
    const parts = [];
    for (const [key, text] of [["hub", "hub"], ["connectionId", "connection"], ["userId", "user"]]) {
      const v = filter[key].value.trim();
      if (v) parts.push(`${text} ${v}`);
    }
    if (category.value) parts.push(category.selectedOptions[0].textContent.toLowerCase());
    return parts.length ? parts.join(", ") : "all events";
  }

  /** Why the stream was refused: EventSource does not say, one plain request does. */
  async function explainClosed(url, es) {
    const abort = new AbortController();
    let reason;
    try {
      const response = await fetch(url, { credentials: "same-origin", signal: abort.signal });
      if (response.status === 401) {
        location.reload();
        return;
      }
      if (response.ok) {
        abort.abort();
        reason = "the stream ended";
      } else {
        const body = await response.json().catch(() => null);
        reason = (body && body.message) || `HTTP ${response.status}`;
        if (body && body.code === "TooManyListeners") reason = `too many listeners (${reason})`;
      }
    } catch {
      reason = "the server cannot be reached";
    }
    if (source === es) setStatus("closed", `Stream closed: ${reason}.`);
  }

  function connect() {
    if (source) source.close();
    const q = query();
    history.replaceState(null, "", `#/trace${q ? `?${q}` : ""}`);
    const url = `/admin/trace${q ? `?${q}` : ""}`;
    const es = new EventSource(url);
    source = es;
    lastDropped = null;
    setStatus("connecting", "Connecting…");
    es.onopen = () => {
      if (source === es) setStatus("open", `Connected: ${describe()}.`);
    };
    es.onmessage = (m) => {
      let e;
      try {
        e = JSON.parse(m.data);
      } catch {
        return;
      }
      if (e.event === "dropped") {
        // The server ends a stream that fell behind; EventSource reconnects by itself.
        lastDropped = e.reason || "this listener fell behind";
        setStatus("reconnecting", `Fell behind (${lastDropped}); reconnecting…`);
      }
      add(e);
    };
    es.onerror = () => {
      if (source !== es) return;
      if (es.readyState === EventSource.CLOSED) {
        setStatus("closed", "Stream closed.");
        explainClosed(url, es);
      } else {
        setStatus("reconnecting", lastDropped ? `Fell behind (${lastDropped}); reconnecting…` : "Reconnecting…");
      }
    };
  }

  function exportEvents() {
    if (!shown.length) {
      toast("No events to export");
      return;
    }
    const blob = new Blob(shown.map((e) => `${JSON.stringify(e)}\n`), { type: "application/x-ndjson" });
    const href = URL.createObjectURL(blob);
    const stamp = new Date().toISOString().replace(/[:.]/g, "-");
    const link = el("a", { href, download: `hubbub-trace-${stamp}.jsonl`, class: "visually-hidden" }, "download");
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(href), 30_000);
  }

  view.render(
    el("h1", {}, "Live trace"),
    el("p", { class: "muted" }, "What this server does as it happens: connections, messages, REST calls, event handler calls and refused tokens. Never a payload, a token or a key."),
    el("section", { class: "card" },
      el("form", { class: "filters", id: "trace-filters", onsubmit: (e) => { e.preventDefault(); connect(); } },
        input("hub", "Hub"), input("connectionId", "Connection id"), input("userId", "User id"),
        labelled("Category", category),
        el("div", { class: "field" }, el("button", { type: "submit", class: "primary" }, "Apply filters"))),
      el("div", { class: "toolbar" },
        status, reconnect,
        el("span", { class: "spacer" }),
        tally, pause,
        el("button", { type: "button", id: "trace-clear", onclick: () => {
          shown = [];
          pending = [];
          tbody.replaceChildren();
          updateTally();
        } }, "Clear"),
        el("button", { type: "button", id: "trace-export", onclick: exportEvents }, "Export"),
      ),
    ),
    el("section", { class: "card table-wrap" },
      el("table", { id: "trace", class: "wide" },
        el("caption", { class: "visually-hidden" }, "Trace events, newest first"),
        el("thead", {}, el("tr", {}, ...["Time", "Event", "Hub", "Connection / user", "Detail"].map((h) => el("th", { scope: "col" }, h)))),
        tbody),
      emptyRow,
    ),
  );
  updateTally();
  connect();
  view.onLeave(() => {
    if (source) source.close();
    source = null;
    if (frame) cancelAnimationFrame(frame);
  });
}

// ---- routing ----

const pages = { keys: showKeys, audit: showAudit, overview: showOverview };
let currentView = null;

/** A page being shown: `render` only while it is still the current one; `onLeave` cleanups. */
function newView() {
  if (currentView) currentView.leave();
  const cleanups = [];
  const view = {
    current: () => currentView === view,
    render: (...children) => {
      if (currentView === view) page.replaceChildren(...children);
    },
    onLeave: (fn) => {
      if (currentView === view) cleanups.push(fn);
      else fn();
    },
    leave: () => {
      for (const fn of cleanups.splice(0)) {
        try { fn(); } catch { /* keep leaving */ }
      }
    },
  };
  currentView = view;
  return view;
}

function parseHash() {
  const raw = location.hash.replace(/^#\/?/, "");
  const cut = raw.indexOf("?");
  const path = cut < 0 ? raw : raw.slice(0, cut);
  const parts = path.split("/").filter(Boolean).map((p) => {
    try { return decodeURIComponent(p); } catch { return p; }
  });
  return { name: parts[0] || "keys", rest: parts.slice(1), params: new URLSearchParams(cut < 0 ? "" : raw.slice(cut + 1)) };
}

async function route() {
  const { name, rest, params } = parseHash();
  const view = newView();
  page.setAttribute("aria-live", "polite");
  const section = name === "hubs" ? "overview" : name;
  for (const a of document.querySelectorAll("header nav a")) {
    const active = a.dataset.page === section;
    a.classList.toggle("active", active);
    if (active) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  try {
    if (name === "hubs" && rest[0]) await showHub(view, rest[0]);
    else if (name === "trace") await showTrace(view, params);
    else await (pages[name] || showKeys)(view);
  } catch (e) {
    view.render(el("p", { class: "error" }, `Could not load this page: ${e.message}`));
  }
}

document.getElementById("sign-out").addEventListener("click", async () => {
  await fetch("/portal/logout", { method: "POST", headers: { "X-CSRF-Token": csrf }, credentials: "same-origin" });
  location.href = "/portal";
});
window.addEventListener("hashchange", route);
route();
