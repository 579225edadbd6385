// framefleet's status page: the gateway's own /v1 API and /v1/ws events, nothing else.
// Every name from users or files is set as text (textContent), never parsed as HTML.
"use strict";

const UI = { "X-Framefleet-UI": "1" };
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const PAGE = 500;
const MAX_PAGES = 20;
const NODES_EVERY_MS = 5000;

const jobs = new Map(); // id -> the job's view, as GET /v1/jobs/{id} returns it
let nodes = [];
let socket = null;
let retryMs = 1000;
let nodesTimer = null;
let dirty = false;
let shownJob = null;

const $ = (id) => document.getElementById(id);

class ApiError extends Error {
  constructor(status, message, fields) {
    super(message);
    this.status = status;
    this.fields = fields || [];
  }
}

async function api(method, path, body) {
  const headers = { ...UI };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, {
    method,
    headers,
    credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = r.status === 204 ? null : await r.json().catch(() => null);
  if (r.status === 401 && path !== "/ui/session") {
    signedOut();
  }
  if (!r.ok) {
    const err = (data && data.error) || {};
    throw new ApiError(r.status, err.message || `HTTP ${r.status}`, err.fields);
  }
  return data;
}

// ---- elements, always with text -----------------------------------------------------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node && key !== "list") node[key] = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function fileName(path) {
  if (!path) return "";
  const cut = path.replace(/\/+$/, "").split("/");
  return cut[cut.length - 1];
}

function ago(seconds) {
  const s = Math.max(0, Date.now() / 1000 - seconds);
  if (s < 60) return `${Math.round(s)} s`;
  if (s < 3600) return `${Math.round(s / 60)} min`;
  return `${(s / 3600).toFixed(1)} h`;
}

function duration(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return `${Math.round(s)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

function where(job) {
  const p = job.placement;
  if (!p) return "";
  const gpu = p.gpu ? ` · GPU ${p.gpu.index} (${p.gpu.name})` : "";
  const done = job.forecast && job.forecast.finish_at ? ` · done ~${clock(job.forecast.finish_at)}` : "";
  return `${p.address || p.node_id}${gpu} · ${p.encoder || p.hardware}${done}`;
}

function clock(epochSeconds) {
  return new Date(epochSeconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function predicted(job) {
  // A queued job's predicted start and finish, from what the farm learned of its speeds.
  const f = job.forecast;
  if (!f || !f.finish_at) return "–";
  const on = f.node ? ` on ${f.node}` : "";
  return `~${clock(f.start_at)} → ~${clock(f.finish_at)}${on}`;
}

// ---- signing in ---------------------------------------------------------------------

function signedOut() {
  if (socket) {
    socket.onclose = null;
    socket.close();
    socket = null;
  }
  clearInterval(nodesTimer);
  stopPreview();
  $("app").hidden = true;
  $("sign-out").hidden = true;
  $("signin").hidden = false;
  $("conn").textContent = "signed out";
  $("token").focus();
}

async function signIn(event) {
  event.preventDefault();
  $("signin-error").textContent = "";
  const input = $("token");
  try {
    await api("POST", "/ui/session", { token: input.value });
  } catch (err) {
    $("signin-error").textContent = err.message;
    return;
  } finally {
    input.value = ""; // the token is not kept: the session cookie stands for it
  }
  await start();
}

async function signOut() {
  await api("DELETE", "/ui/session").catch(() => null);
  jobs.clear();
  signedOut();
}

// ---- data ---------------------------------------------------------------------------

async function loadJobs() {
  let cursor = 0;
  const seen = new Map();
  for (let page = 0; page < MAX_PAGES; page++) {
    const data = await api("GET", `/v1/jobs?limit=${PAGE}&cursor=${cursor}`);
    for (const job of data.jobs) seen.set(job.id, job);
    if (data.next_cursor === null) break;
    cursor = data.next_cursor;
  }
  jobs.clear();
  for (const [id, job] of seen) jobs.set(id, job);
  changed();
}

async function loadNodes() {
  try {
    nodes = await api("GET", "/v1/nodes");
    renderNodes();
    changed();
  } catch (err) {
    // While the gateway is away the socket's "reconnecting…" says it already.
    if (err.status !== 401 && socket) $("conn").textContent = `nodes: ${err.message}`;
  }
}

async function refetch(id) {
  try {
    jobs.set(id, await api("GET", `/v1/jobs/${encodeURIComponent(id)}`));
    changed();
  } catch (err) {
    if (err.status === 404) {
      jobs.delete(id);
      changed();
    }
  }
}

function onEvent(event) {
  if (event.type === "ready" || event.type === "subscribed") return;
  if (event.type === "gap") {
    loadJobs();
    return;
  }
  const job = jobs.get(event.job_id);
  if (!job) {
    refetch(event.job_id);
    return;
  }
  const statusChanged = job.status !== event.status;
  job.status = event.status;
  job.attempts = event.attempts;
  if (event.progress) job.progress = event.progress;
  if (event.forecast) job.forecast = event.forecast;
  if (event.reason) job.reason = event.reason;
  job.updated_at = event.time || job.updated_at;
  if (statusChanged) refetch(job.id); // placement, result, error: the whole job
  changed();
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(`${scheme}//${location.host}/v1/ws`);
  socket.onopen = () => {
    $("conn").textContent = "live";
    $("conn").className = "live";
    if (retryMs > 1000) loadJobs(); // back after a cut: catch up on what was missed
    retryMs = 1000;
  };
  socket.onmessage = (message) => onEvent(JSON.parse(message.data));
  socket.onclose = (closed) => {
    socket = null;
    if (closed.code === 4401) {
      signedOut();
      return;
    }
    $("conn").textContent = "reconnecting…";
    $("conn").className = "down";
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 10000);
  };
}

async function start() {
  $("signin").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  await Promise.all([loadJobs(), loadNodes()]);
  connect();
  clearInterval(nodesTimer);
  nodesTimer = setInterval(() => {
    loadNodes(); // one request for the whole farm
    changed(); // and the "waiting" and "ago" columns move on
  }, NODES_EVERY_MS);
}

// ---- actions ------------------------------------------------------------------------

async function act(button, method, path) {
  button.disabled = true;
  try {
    const job = await api(method, path);
    if (job) jobs.set(job.id, job);
    changed();
  } catch (err) {
    button.title = err.message;
    $("conn").textContent = err.message;
  } finally {
    button.disabled = false;
  }
}

const cancel = (job) => (e) => act(e.currentTarget, "DELETE", `/v1/jobs/${encodeURIComponent(job.id)}`);
const retry = (job) => (e) => act(e.currentTarget, "POST", `/v1/jobs/${encodeURIComponent(job.id)}/retry`);
const details = (job) => () => {
  shownJob = job.id;
  refetch(job.id);
  renderDetail();
  $("detail").hidden = false;
  $("detail").scrollIntoView({ block: "nearest" });
};

const FIELDS = ["input", "output", "codec", "quality", "speed", "hardware", "priority"];

async function submitJob(event) {
  event.preventDefault();
  for (const f of [...FIELDS, "form"]) $(`f-${f}-error`).textContent = "";
  $("f-ok").textContent = "";
  const body = {};
  for (const f of FIELDS) {
    const value = $(`f-${f}`).value.trim();
    if (value === "") continue;
    body[f] = f === "quality" || f === "priority" ? Number(value) : value;
  }
  try {
    const job = await api("POST", "/v1/jobs", body);
    jobs.set(job.id, job);
    changed();
    $("f-ok").textContent = `Submitted: job ${job.id} (${job.status}).`;
  } catch (err) {
    const fields = err.fields.length ? err.fields : [{ field: fieldOf(err.message, body), message: err.message }];
    for (const { field, message } of fields) {
      ($(`f-${field}-error`) || $("f-form-error")).textContent = message;
    }
  }
}

function fieldOf(message, body) {
  // The engine's one-line refusals name the path they refuse, or start with the field.
  const named = ["output", "input"].find((f) => body[f] && message.includes(body[f]));
  const first = message.split(/[\s:]/, 1)[0].toLowerCase();
  return named || (FIELDS.includes(first) ? first : "form");
}

// ---- rendering ----------------------------------------------------------------------

function changed() {
  if (dirty) return;
  dirty = true;
  requestAnimationFrame(() => {
    dirty = false;
    render();
  });
}

/** Keep one row per job in ``tbody``, in ``list``'s order, built once and updated in place
 * (so a button is never replaced under the pointer). */
function syncRows(tbody, list, build, update) {
  const rows = new Map([...tbody.children].map((row) => [row.dataset.id, row]));
  const wanted = new Set(list.map((job) => job.id));
  for (const [id, row] of rows) if (!wanted.has(id)) row.remove();
  let before = tbody.firstElementChild;
  for (const job of list) {
    let row = rows.get(job.id);
    if (!row) {
      row = build(job);
      row.dataset.id = job.id;
    }
    update(row, job);
    if (row !== before) tbody.insertBefore(row, before);
    else before = before.nextElementSibling;
  }
  tbody.closest("section").querySelector(".empty").hidden = list.length > 0;
}

function progressText(p) {
  if (!p) return "starting…";
  const parts = [p.percent === null || p.percent === undefined ? "–" : `${p.percent.toFixed(1)}%`];
  if (p.fps) parts.push(`${Math.round(p.fps)} fps`);
  if (p.speed) parts.push(`${p.speed.toFixed(2)}x`);
  if (p.eta_s !== null && p.eta_s !== undefined) parts.push(`ETA ${duration(p.eta_s)}`);
  return parts.join(" · ");
}

function nameCell(job) {
  return el("td", { className: "name" }, el("button", { type: "button", className: "link", text: fileName(job.input), title: job.input, onclick: details(job) }));
}

// Where a job writes: its output file, or its package's folder (a trailing "/"), or its
// kind for a job that writes nothing (two jobs of one input then still look apart).
function outputText(job) {
  if (!job.output) return job.spec.kind === "quality" ? `scored against ${fileName(job.spec.reference)}` : job.spec.kind;
  return job.spec.kind === "package" || job.spec.kind === "thumbnail" ? `${fileName(job.output)}/` : fileName(job.output);
}

function outputCell(job) {
  return el("td", { className: "output", text: outputText(job), title: job.output || "" });
}

function buildRunning(job) {
  const bar = el("progress", { max: 100, "aria-label": `progress of ${fileName(job.input)}` });
  return el("tr", {}, nameCell(job), outputCell(job), el("td", { className: "progress" }, bar, el("span", { className: "ptext" })), el("td", { className: "where" }), el("td", {}, el("button", { type: "button", className: "cancel", text: "Cancel", onclick: cancel(job) })));
}

function updateRunning(row, job) {
  const p = job.progress;
  const bar = row.querySelector("progress");
  if (p && p.percent !== null && p.percent !== undefined) bar.value = p.percent;
  else bar.removeAttribute("value");
  row.querySelector(".ptext").textContent = progressText(p);
  row.querySelector(".where").textContent = where(job);
}

function buildQueued(job) {
  return el("tr", {}, nameCell(job), outputCell(job), el("td", { className: "prio" }), el("td", { className: "age" }), el("td", { className: "eta" }), el("td", { className: "qstatus" }), el("td", {}, el("button", { type: "button", className: "cancel", text: "Cancel", onclick: cancel(job) })));
}

function updateQueued(row, job) {
  row.querySelector(".prio").textContent = job.spec.priority;
  row.querySelector(".age").textContent = ago(job.created_at);
  row.querySelector(".eta").textContent = predicted(job);
  row.querySelector(".qstatus").textContent = job.reason || (job.forecast && job.forecast.waits) || "waiting";
}

function buildFinished(job) {
  const actions = el("td", { className: "actions" });
  return el("tr", {}, nameCell(job), outputCell(job), el("td", { className: "status" }), el("td", { className: "reason" }), el("td", { className: "ended" }), actions);
}

function updateFinished(row, job) {
  const status = row.querySelector(".status");
  status.textContent = job.status;
  status.className = `status ${job.status}`;
  row.querySelector(".reason").textContent = job.error ? job.error.message || job.reason : job.reason || "";
  row.querySelector(".ended").textContent = job.finished_at ? `${ago(job.finished_at)} ago` : "";
  const actions = row.querySelector(".actions");
  const retryable = job.status !== "succeeded";
  if (retryable && !actions.firstChild) actions.append(el("button", { type: "button", className: "retry", text: "Retry", onclick: retry(job) }));
  if (!retryable && actions.firstChild) actions.replaceChildren();
}

function queueOrder(a, b) {
  return b.spec.priority - a.spec.priority || a.created_at - b.created_at;
}

function render() {
  const all = [...jobs.values()];
  const by = (status) => all.filter((job) => job.status === status);
  const running = by("running");
  const queued = by("queued").sort(queueOrder);
  const finished = all.filter((job) => TERMINAL.has(job.status)).sort((a, b) => (b.finished_at || b.updated_at) - (a.finished_at || a.updated_at)).slice(0, 200);
  for (const status of ["running", "queued", "succeeded", "failed", "cancelled"]) {
    $(`stat-${status}`).textContent = by(status).length;
  }
  $("stat-fps").textContent = Math.round(running.reduce((sum, job) => sum + ((job.progress && job.progress.fps) || 0), 0));
  const recent = all.filter((job) => TERMINAL.has(job.status) && job.finished_at > Date.now() / 1000 - 300);
  $("stat-rate").textContent = (recent.length / 5).toFixed(1);
  $("stat-nodes").textContent = nodes.filter((n) => n.ready).length;
  syncRows($("running-rows"), running, buildRunning, updateRunning);
  syncRows($("queue-rows"), queued, buildQueued, updateQueued);
  syncRows($("finished-rows"), finished, buildFinished, updateFinished);
  renderDetail();
}

function renderDetail() {
  const job = shownJob && jobs.get(shownJob);
  if (!job) return;
  $("detail-title").textContent = `Job ${job.id}`;
  const rows = [
    ["Input", job.input],
    ...inputRows(job.input_media),
    ["Output", job.output || ""],
    ["Status", job.status + (job.reason ? ` — ${job.reason}` : "")],
    ["Attempts", job.attempts],
    ["Placement", job.placement ? `${where(job)}: ${job.placement.reason || ""}` : "not placed"],
    ["Submitted", new Date(job.created_at * 1000).toLocaleString()],
    ["Started", job.started_at ? new Date(job.started_at * 1000).toLocaleString() : "–"],
    ["Finished", job.finished_at ? new Date(job.finished_at * 1000).toLocaleString() : "–"],
  ];
  if (job.error) rows.push(["Error", `${job.error.code}: ${job.error.message}`]);
  rows.push(...qualityRows(job.result));
  for (const note of job.notes || []) rows.push(["Note", note]);
  $("detail-fields").replaceChildren(...rows.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
  $("detail-result").textContent = job.result ? JSON.stringify(job.result, null, 2) : "–";
  syncPreview(job);
}

// The input's video as probed: its scan and how it was known, and its colour (the CLI's
// `framefleet probe` lines). Shown as text, like every row.
const HDR_TRANSFERS = { smpte2084: "PQ", "arib-std-b67": "HLG" };

function inputRows(media) {
  const video = media && media.video;
  if (!video) return [];
  const rows = [];
  if (video.scan) rows.push(["Scan", scanText(video.scan)]);
  if (video.colour) rows.push(["Colour", colourText(video.colour)]);
  return rows;
}

function scanText(scan) {
  const combed = scan.type === "interlaced" || scan.type === "telecined";
  const said = [scan.tagged ? `tagged ${scan.tagged}` : "not tagged"];
  const c = scan.idet;
  if (c) {
    const repeated = c.repeated_top + c.repeated_bottom;
    said.push(`idet TFF ${c.tff}, BFF ${c.bff}, progressive ${c.progressive}, undetermined ${c.undetermined}${repeated ? `, repeated fields ${repeated}` : ""}`);
  }
  return `${scan.type}${combed ? `, ${scan.top_first ? "top" : "bottom"} field first` : ""} (${said.join("; ")})`;
}

function colourText(colour) {
  const hdr = HDR_TRANSFERS[colour.transfer];
  if (!hdr) return `SDR${colour.primaries ? ` (${colour.primaries})` : ""}`;
  const extra = [];
  if (colour.mastering) extra.push(`mastered at ${colour.mastering.max_luminance} cd/m²`);
  if (colour.max_cll) extra.push(`MaxCLL ${colour.max_cll}, MaxFALL ${colour.max_fall || 0}`);
  for (const d of colour.dynamic || []) extra.push(d.replace("_", " "));
  return `HDR ${hdr} (${colour.primaries || "?"})${extra.length ? `: ${extra.join(", ")}` : ""}`;
}

// Scores (a quality job's, a scored or targeted transcode's), a search and a per-title ladder.
function qualityRows(result) {
  if (!result) return [];
  const rows = [];
  const metrics = result.metrics || (result.quality && result.quality.metrics) || {};
  for (const [name, m] of Object.entries(metrics)) {
    if (m && m.mean !== undefined) rows.push([name.toUpperCase(), `mean ${m.mean} · p1 ${m.p1} · min ${m.min} (${m.frames} frames)`]);
  }
  if (result.search) {
    const s = result.search;
    rows.push(["Search", `CRF ${s.crf} for ${s.target.metric.toUpperCase()} ${s.target.value}: predicted ${s.predicted}, measured ${s.measured ?? "–"} · ${s.probes.length} CRFs in ${s.rounds} round(s)`]);
  }
  for (const rung of (result.ladder && result.ladder.rungs) || []) {
    rows.push([`Rung ${rung.name}`, `${rung.kept ? "kept" : "dropped"}: CRF ${rung.crf}, score ${rung.score}, ~${rung.predicted_kbps} kb/s — ${rung.why}`]);
  }
  return rows;
}

function codecStates(gpu) {
  return Object.entries(gpu.nvenc || {}).map(([codec, cap]) => el("li", { className: `codec ${cap.state}`, title: cap.reason || "", text: `${codec}: ${cap.state}${cap.reason && cap.state === "failed" ? ` (${cap.reason})` : ""}` }));
}

function renderNodes() {
  const cards = nodes.map((n) => {
    const gpus = (n.gpus || []).map((g) => {
      const used = g.memory_used_mb !== null && g.memory_used_mb !== undefined ? `${(g.memory_used_mb / 1024).toFixed(1)} of ` : "";
      const util = g.utilization_gpu !== null && g.utilization_gpu !== undefined ? ` · ${g.utilization_gpu}% busy` : "";
      const cap = g.max_encoder_sessions ? `/${g.max_encoder_sessions}` : "";
      return el("li", { className: "gpu" },
        el("strong", { text: `GPU ${g.index}: ${g.name}` }),
        el("span", { text: ` ${used}${(g.memory_total_mb / 1024).toFixed(1)} GiB${util} · ${g.sessions}${cap} NVENC sessions (${g.source})` }),
        el("ul", { className: "codecs" }, ...codecStates(g)));
    });
    const state = n.ready ? "ready" : n.agent_error ? "agent error" : "starting";
    return el("article", { className: "card", "data-node": n.node_id },
      el("h3", { text: n.hostname || n.address }),
      el("p", { className: `state ${n.ready ? "ok" : "warn"}`, text: `${state}${n.agent_error ? `: ${n.agent_error}` : ""}` }),
      el("p", { text: `${n.address} · cores ${n.cpus_used} of ${n.cpus} in use · ${n.running_jobs.length} running` }),
      el("p", { className: "muted", text: n.ffmpeg ? `ffmpeg ${n.ffmpeg.version}` : `no ffmpeg: ${n.ffmpeg_error || "unknown"}` }),
      el("p", { className: "muted", "data-metrics": "", text: (n.metrics || []).length ? `scores ${n.metrics.join(", ")}${n.quality && n.ffmpeg && n.quality.path !== n.ffmpeg.path ? ` (with ffmpeg ${n.quality.version})` : ""}` : "scores nothing (no quality ffmpeg)" }),
      gpus.length ? el("ul", { className: "gpus" }, ...gpus) : el("p", { className: "muted", text: "no GPUs" }));
  });
  $("node-cards").replaceChildren(...cards);
}

// ---- a finished package, played -----------------------------------------------------
// The players are the gateway's own pinned copies (ui/vendor/), loaded when a package is
// first shown. They fetch the package from /v1/jobs/{id}/package/… with the session
// cookie (same origin), so no token is ever in a URL.

const ASSETS = "/ui/assets/";
const PLAYERS = { hls: "hls.min.js", dash: "dash.mediaplayer.min.js" };
const HLS_WORKER = `${ASSETS}hls.worker.js`; // a script of this origin, not a blob: (CSP)
const FORMAT_NAMES = { hls: "HLS", dash: "DASH" };
const scripts = new Map(); // src -> the promise of its loading
const preview = { jobId: null, format: null, player: null, wanted: "", playing: null, seq: 0 };

function loadScript(name) {
  const src = ASSETS + name;
  if (!scripts.has(src)) {
    scripts.set(src, new Promise((resolve, reject) => {
      const failed = () => {
        scripts.delete(src); // another try may load it
        reject(new Error(`the player ${name} could not be loaded`));
      };
      document.head.append(el("script", { src, onload: resolve, onerror: failed }));
    }));
  }
  return scripts.get(src);
}

/** A succeeded package job's playlists and video renditions, or null. */
function packageOf(job) {
  const result = job && job.kind === "package" && job.status === "succeeded" && job.result;
  if (!result || !result.playlists) return null;
  const formats = Object.keys(FORMAT_NAMES).filter((f) => result.playlists[f]);
  const videos = (result.renditions || []).filter((r) => r.kind === "video");
  return formats.length ? { playlists: result.playlists, formats, videos } : null;
}

function packageUrl(id, name) {
  return `/v1/jobs/${encodeURIComponent(id)}/package/${name.split("/").map(encodeURIComponent).join("/")}`;
}

function renditionLabel(r) {
  const kbps = r.peak_bps ? ` · ${Math.round(r.peak_bps / 1000)} kb/s` : "";
  return `${r.height}p ${r.codec || ""} (${r.width}×${r.height}${kbps})`;
}

function syncPreview(job) {
  const pkg = packageOf(job);
  if (!pkg) {
    stopPreview();
    return;
  }
  $("preview").hidden = false;
  if (preview.jobId === job.id) return;
  stopPreview();
  preview.jobId = job.id;
  preview.wanted = "";
  for (const radio of document.querySelectorAll("input[name='preview-format']")) {
    radio.disabled = !pkg.formats.includes(radio.value);
    radio.checked = radio.value === pkg.formats[0];
  }
  const options = pkg.videos.map((r) => el("option", { value: r.key, text: renditionLabel(r) }));
  $("preview-rendition").replaceChildren(el("option", { value: "", text: "auto (adaptive)" }), ...options);
  play(pkg.formats[0]);
}

function watchVideo(video) {
  video.addEventListener("resize", () => preview.playing && showNow());
}

/** The player stopped, and a new <video> in its element's place: a player leaves text
 * tracks on its element (dash.js's cannot be removed) that the next one would show too. */
function stopPlayer() {
  preview.seq++;
  if (preview.player) preview.player.destroy();
  preview.player = null;
  preview.playing = null;
  const old = $("preview-video");
  old.removeAttribute("src");
  old.load(); // lets go of the MediaSource and what it buffered
  const video = old.cloneNode(false);
  video.muted = old.muted;
  video.volume = old.volume;
  watchVideo(video);
  old.replaceWith(video);
}

function stopPreview() {
  if (preview.jobId === null) return;
  stopPlayer();
  preview.jobId = null;
  preview.format = null;
  $("preview").hidden = true;
  $("preview-now").textContent = "";
  $("preview-error").textContent = "";
}

function playerFailed(message) {
  $("preview-error").textContent = message;
  console.error(`framefleet preview: ${message}`);
}

async function play(format) {
  const was = $("preview-video");
  const resume = preview.player ? { at: was.currentTime, playing: !was.paused } : { at: 0, playing: false };
  stopPlayer();
  const video = $("preview-video");
  const seq = preview.seq;
  const id = preview.jobId;
  const pkg = packageOf(jobs.get(id));
  preview.format = format;
  $("preview-error").textContent = "";
  showNow(`loading ${FORMAT_NAMES[format]}…`);
  try {
    await loadScript(PLAYERS[format]);
  } catch (err) {
    if (seq === preview.seq) playerFailed(err.message);
    return;
  }
  if (seq !== preview.seq || !pkg) return; // another format or job was chosen meanwhile
  const url = packageUrl(id, pkg.playlists[format]);
  try {
    preview.player = format === "hls" ? startHls(video, url, resume.at) : startDash(video, url, resume.at);
  } catch (err) {
    playerFailed(`${FORMAT_NAMES[format]}: ${err.message}`);
    return;
  }
  if (preview.player && resume.playing) video.play().catch(() => null);
}

function showNow(text) {
  const now = $("preview-now");
  now.dataset.format = preview.format || "";
  now.dataset.rendition = preview.playing || "";
  if (text !== undefined) {
    now.textContent = text;
    return;
  }
  const video = $("preview-video");
  const size = video.videoHeight ? ` at ${video.videoWidth}×${video.videoHeight}` : "";
  const mode = preview.wanted ? "chosen" : "adaptive";
  now.textContent = `${FORMAT_NAMES[preview.format]}: showing ${preview.playing || "–"}${size} (${mode})`;
}

function rendered(key) {
  preview.playing = key;
  showNow();
}

/** The rendition a URL of the package belongs to: its folder (``v360h264/index.m3u8``). */
function keyOfUrl(url) {
  const parts = new URL(url, location.href).pathname.split("/");
  return decodeURIComponent(parts[parts.length - 2] || "");
}

function startHls(video, url, at) {
  if (!window.Hls || !Hls.isSupported()) {
    playerFailed("this browser cannot play HLS through Media Source Extensions");
    return null;
  }
  const hls = new Hls({ workerPath: HLS_WORKER, startPosition: at || -1 });
  const levelOf = (key) => hls.levels.findIndex((level) => keyOfUrl(level.url) === key);
  const choose = () => {
    hls.currentLevel = preview.wanted ? levelOf(preview.wanted) : -1; // -1: adaptive
    showNow();
  };
  hls.on(Hls.Events.MANIFEST_PARSED, choose);
  hls.on(Hls.Events.LEVEL_SWITCHED, (_, data) => rendered(keyOfUrl(hls.levels[data.level].url)));
  hls.on(Hls.Events.ERROR, (_, data) => {
    const what = `HLS ${data.type}: ${data.details}${data.reason ? ` (${data.reason})` : ""}${data.error ? `: ${data.error.message}` : ""}`;
    if (data.fatal) {
      playerFailed(what);
      hls.destroy();
      if (preview.player && preview.player.hls === hls) preview.player = null;
    } else {
      console.warn(`framefleet preview: ${what}`); // hls.js recovers from these itself
    }
  });
  hls.loadSource(url);
  hls.attachMedia(video);
  return { hls, choose, destroy: () => hls.destroy() };
}

function startDash(video, url, at) {
  if (!window.dashjs || !(window.MediaSource || window.ManagedMediaSource)) {
    playerFailed("this browser cannot play DASH through Media Source Extensions");
    return null;
  }
  const events = dashjs.MediaPlayer.events;
  const player = dashjs.MediaPlayer().create();
  const choose = () => {
    const chosen = Boolean(preview.wanted);
    player.updateSettings({ streaming: { abr: { autoSwitchBitrate: { video: !chosen } } } });
    if (chosen) player.setRepresentationForTypeById("video", preview.wanted, true); // replace what is buffered
    showNow();
  };
  player.updateSettings({
    debug: { logLevel: dashjs.Debug.LOG_LEVEL_WARNING },
    streaming: { abr: { autoSwitchBitrate: { video: !preview.wanted } } },
  });
  player.on(events.STREAM_INITIALIZED, choose);
  player.on(events.QUALITY_CHANGE_RENDERED, (e) => {
    if (e.mediaType === "video" && e.newRepresentation) rendered(e.newRepresentation.id);
  });
  player.on(events.ERROR, (e) => {
    const err = e.error || {};
    playerFailed(`DASH error ${err.code ?? ""}: ${err.message || "unknown"}`);
  });
  player.on(events.PLAYBACK_ERROR, (e) => playerFailed(`DASH playback: ${(e.error && e.error.message) || "media error"}`));
  player.initialize(video, url, false, at || 0);
  return { choose, destroy: () => player.reset() };
}

function chooseFormat(event) {
  if (event.target.checked && preview.jobId !== null && event.target.value !== preview.format) play(event.target.value);
}

function chooseRendition() {
  preview.wanted = $("preview-rendition").value;
  if (preview.player) preview.player.choose();
}

// ---- start --------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", async () => {
  $("signin-form").addEventListener("submit", signIn);
  $("sign-out").addEventListener("click", signOut);
  $("submit-form").addEventListener("submit", submitJob);
  $("detail-close").addEventListener("click", () => {
    shownJob = null;
    stopPreview();
    $("detail").hidden = true;
  });
  $("preview-format").addEventListener("change", chooseFormat);
  $("preview-rendition").addEventListener("change", chooseRendition);
  watchVideo($("preview-video"));
  const session = await api("GET", "/ui/session").catch(() => ({ signed_in: false }));
  if (session.signed_in) await start();
  else signedOut();
});
