// gangealing serve: paint on the average congealed image, propagate to every image, transfer points.
// Plain JS, no build step, nothing loaded from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { canvas: 256, set: null, images: [], path: null, busy: false, pending: false, version: 0 };

function status(text, isError = false) {
  const el = $("status");
  el.textContent = text;
  el.classList.toggle("error", isError);
}

async function api(url, options) {
  let res;
  try {
    res = await fetch(url, options);
  } catch (e) {
    throw new Error("the server cannot be reached");
  }
  let body = null;
  try { body = await res.json(); } catch (e) { /* not JSON */ }
  if (!res.ok) throw new Error((body && body.error) || `request failed (${res.status})`);
  return body;
}

function mode() { return document.querySelector("input[name=mode]:checked").value; }

// ---- painting -------------------------------------------------------------------------------

function canvasPoint(ev, canvas) {
  const r = canvas.getBoundingClientRect();
  return [(ev.clientX - r.left) * canvas.width / r.width, (ev.clientY - r.top) * canvas.height / r.height];
}

function drawPath(ctx, path) {
  ctx.clearRect(0, 0, ctx.canvas.width, ctx.canvas.height);
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.lineWidth = Number($("size").value);
  ctx.strokeStyle = $("eraser").checked ? "#ffffff" : $("color").value;
  ctx.fillStyle = ctx.strokeStyle;
  if (path.length === 1) {  // a click paints a dot
    ctx.beginPath();
    ctx.arc(path[0][0], path[0][1], ctx.lineWidth / 2, 0, 2 * Math.PI);
    ctx.fill();
    return;
  }
  ctx.beginPath();
  ctx.moveTo(path[0][0], path[0][1]);
  for (const [x, y] of path.slice(1)) ctx.lineTo(x, y);
  ctx.stroke();
}

function commitStroke() {
  // The stroke is drawn opaque on its own layer, then merged once with the chosen opacity, so a
  // stroke crossing itself does not get darker.
  const stroke = $("stroke"), edit = $("edit").getContext("2d");
  edit.save();
  edit.globalAlpha = Number($("opacity").value);
  edit.globalCompositeOperation = $("eraser").checked ? "destination-out" : "source-over";
  edit.drawImage(stroke, 0, 0);
  edit.restore();
  stroke.getContext("2d").clearRect(0, 0, stroke.width, stroke.height);
  propagate();
}

function setupPainting() {
  const stroke = $("stroke");
  const ctx = stroke.getContext("2d");
  stroke.addEventListener("pointerdown", (ev) => {
    if (mode() === "points") { pickAverage(ev); return; }
    stroke.setPointerCapture(ev.pointerId);
    state.path = [canvasPoint(ev, stroke)];
    stroke.style.opacity = $("eraser").checked ? 0.5 : $("opacity").value;
    drawPath(ctx, state.path);
  });
  stroke.addEventListener("pointermove", (ev) => {
    if (!state.path) return;
    state.path.push(canvasPoint(ev, stroke));
    drawPath(ctx, state.path);
  });
  const end = () => {
    if (!state.path) return;
    state.path = null;
    commitStroke();
  };
  stroke.addEventListener("pointerup", end);
  stroke.addEventListener("pointercancel", end);
}

// ---- images and propagation -------------------------------------------------------------------

function showImages(set, images) {
  state.set = set;
  state.images = images;
  const box = $("results");
  box.innerHTML = "";
  images.forEach((im, i) => {
    const fig = document.createElement("figure");
    fig.innerHTML = `<div class="frame"><div class="holder"><img class="result" data-index="${i}" alt="">` +
      `<div class="marker" hidden></div></div></div>` +
      `<figcaption><span></span><a download>PNG</a></figcaption>`;
    const img = fig.querySelector("img");
    img.src = im.url;
    img.alt = `result ${i}: ${im.name}`;
    img.addEventListener("click", (ev) => pickImage(ev, i));
    fig.querySelector("span").textContent = `${im.name} (${im.width}×${im.height})`;
    const a = fig.querySelector("a");
    a.href = im.url;
    a.download = `${im.name.replace(/\.[^.]*$/, "")}_edited.png`;
    box.appendChild(fig);
  });
  hideMarkers();
  propagate();
}

function editBlob() {
  return new Promise((resolve) => $("edit").toBlob(resolve, "image/png"));
}

async function propagate() {
  if (live.on) sendLiveEdit().catch((e) => status(`live: ${e.message}`, true));
  if (!state.set) return;
  if (state.busy) { state.pending = true; return; }  // one request at a time; the latest edit wins
  state.busy = true;
  status("propagating…");
  try {
    do {
      state.pending = false;
      const form = new FormData();
      form.append("set", state.set);
      form.append("edit", await editBlob(), "edit.png");
      const out = await api("/api/propagate", { method: "POST", body: form });
      const figs = $("results").querySelectorAll("figure");
      out.images.forEach((url, i) => {
        if (!figs[i]) return;
        figs[i].querySelector("img").src = url;
        figs[i].querySelector("a").href = url;
      });
    } while (state.pending);
    await Promise.all([...document.querySelectorAll("img.result")].map((im) => im.decode().catch(() => null)));
    state.version += 1;
    $("results").dataset.version = String(state.version);
    status(`${state.images.length} image(s) updated`);
  } catch (e) {
    status(e.message, true);
  } finally {
    state.busy = false;
  }
}

async function uploadImages(files) {
  if (!files.length) return;
  const form = new FormData();
  for (const f of files) form.append("images", f, f.name);
  status("uploading…");
  try {
    const out = await api("/api/images", { method: "POST", body: form });
    showImages(out.set, out.images);
  } catch (e) {
    status(e.message, true);
  }
}

async function loadDemo() {
  try {
    const out = await api("/api/sets/demo");
    showImages(out.set, out.images);
  } catch (e) {
    status(e.message, true);
  }
}

// ---- points ------------------------------------------------------------------------------------

function hideMarkers() {
  document.querySelectorAll(".marker").forEach((m) => { m.hidden = true; });
}

function placeMarker(marker, x, y, w, h) {
  marker.style.left = `${(100 * (x + 0.5)) / w}%`;
  marker.style.top = `${(100 * (y + 0.5)) / h}%`;
  marker.hidden = !(x > -0.5 && y > -0.5 && x < w - 0.5 && y < h - 0.5);
}

async function showPoints(source, x, y) {
  if (!state.set) { status("load images first", true); return; }
  try {
    const out = await api("/api/points", {
      method: "POST", headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ set: state.set, source, x, y }),
    });
    placeMarker($("average-marker"), out.average[0], out.average[1], state.canvas, state.canvas);
    const figs = $("results").querySelectorAll("figure");
    out.images.forEach(([px, py], i) => {
      const im = state.images[i];
      if (figs[i]) placeMarker(figs[i].querySelector(".marker"), px, py, im.width, im.height);
    });
    status(`point (${x.toFixed(1)}, ${y.toFixed(1)}) of ${source === "average" ? "the average" : "image " + source}`);
  } catch (e) {
    status(e.message, true);
  }
}

function pickAverage(ev) {
  const [x, y] = canvasPoint(ev, $("stroke"));
  showPoints("average", x - 0.5, y - 0.5);  // pixel centres at integers
}

function pickImage(ev, i) {
  if (mode() !== "points") { status('choose "pick points" to click on images'); return; }
  const img = ev.currentTarget, r = img.getBoundingClientRect(), im = state.images[i];
  const x = ((ev.clientX - r.left) * im.width) / r.width - 0.5;
  const y = ((ev.clientY - r.top) * im.height) / r.height - 0.5;
  showPoints(i, x, y);
}

// ---- files out and in --------------------------------------------------------------------------

function download(url, name) {
  const a = document.createElement("a");
  a.href = url;
  a.download = name;
  document.body.appendChild(a);
  a.click();
  a.remove();
}

async function loadEditFile(file) {
  if (!file) return;
  try {
    const bitmap = await createImageBitmap(file);
    const edit = $("edit"), ctx = edit.getContext("2d");
    ctx.clearRect(0, 0, edit.width, edit.height);
    ctx.drawImage(bitmap, 0, 0, edit.width, edit.height);
    propagate();
  } catch (e) {
    status(`${file.name}: not an image the browser can read`, true);
  }
}

// ---- live video -------------------------------------------------------------------------------
// Two frames are in flight at a time (each worker grabs its next frame when its previous one comes
// back), so the page's work overlaps the server's; a result older than one already drawn is dropped.
// docs/web.md says why the model runs on the server.

const LIVE_IN_FLIGHT = 2;
const live = {
  on: false, stream: null, id: Math.random().toString(36).slice(2), frames: 0, shown: [], backend: "",
  seq: 0, drawn: 0, run: 0,
  log: [],  // the last frames sent and shown (Blobs), for tests and debugging
};

async function sendLiveEdit() {
  const form = new FormData();
  form.append("edit", await editBlob(), "edit.png");
  const out = await api("/api/live/edit", { method: "POST", body: form });
  live.backend = out.backend;
}

function stopLive(message) {
  live.on = false;
  if (live.stream) live.stream.getTracks().forEach((t) => t.stop());
  live.stream = null;
  const video = $("live-video");
  video.pause();
  if (video.src) { URL.revokeObjectURL(video.src); video.removeAttribute("src"); }
  video.srcObject = null;
  $("live-stop").disabled = true;
  if (message) status(message, true);
}

async function startLive(kind, file) {
  stopLive();
  const video = $("live-video");
  try {
    if (kind === "camera") {
      if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) throw new Error("this browser gives no camera access here");
      live.stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
      video.srcObject = live.stream;
    } else {
      video.src = URL.createObjectURL(file);
    }
    await video.play();
  } catch (e) {
    stopLive(`live: ${kind === "camera" ? "no camera" : file.name + ": not a video the browser can play"} (${e.message || e.name})`);
    return;
  }
  status("live: preparing the model…");
  try {
    await sendLiveEdit();
  } catch (e) {
    stopLive(`live: ${e.message}`);
    return;
  }
  live.on = true;
  live.frames = 0;
  live.shown = [];
  live.run += 1;
  $("live-stop").disabled = false;
  status(`live: ${kind === "camera" ? "camera" : file.name} (model on the server, ${live.backend})`);
  for (let i = 0; i < LIVE_IN_FLIGHT; i++) liveLoop(live.run);
}

function grabFrame(video) {
  const side = Number($("live-size").value);
  const vw = video.videoWidth, vh = video.videoHeight;
  const scale = side / Math.max(vw, vh);
  const grab = document.createElement("canvas");
  grab.width = Math.max(1, Math.round(vw * scale));
  grab.height = Math.max(1, Math.round(vh * scale));
  grab.getContext("2d").drawImage(video, 0, 0, grab.width, grab.height);
  return new Promise((resolve) => grab.toBlob(resolve, "image/jpeg", 0.92));
}

async function liveLoop(run) {
  const video = $("live-video"), out = $("live-out"), stats = $("live-stats");
  while (live.on && live.run === run) {
    if (video.readyState < 2 || !video.videoWidth) { await new Promise((r) => setTimeout(r, 20)); continue; }
    const t0 = performance.now();
    const seq = ++live.seq;
    const sent = await grabFrame(video);
    let res;
    try {
      res = await fetch(`/api/live/frame?stream=${live.id}&smooth=${$("live-smooth").value}`,
        { method: "POST", body: sent, headers: { "Content-Type": "image/jpeg" } });
    } catch (e) {
      stopLive("live: the server cannot be reached");
      return;
    }
    if (!res.ok) {
      let msg = `request failed (${res.status})`;
      try { msg = (await res.json()).error || msg; } catch (e) { /* not JSON */ }
      stopLive(`live: ${msg}`);
      return;
    }
    const shown = await res.blob();
    const bitmap = await createImageBitmap(shown);
    if (!live.on || live.run !== run || seq < live.drawn) continue;  // stopped, or a newer frame is on screen
    live.drawn = seq;
    if (out.width !== bitmap.width || out.height !== bitmap.height) { out.width = bitmap.width; out.height = bitmap.height; }
    out.getContext("2d").drawImage(bitmap, 0, 0);
    const t1 = performance.now();
    live.shown.push(t1);
    while (live.shown.length && live.shown[0] < t1 - 2000) live.shown.shift();
    const fps = live.shown.length > 1 ? (1000 * (live.shown.length - 1)) / (t1 - live.shown[0]) : 0;
    const server = (res.headers.get("X-Server-Ms") || "").split(",").map(Number);
    live.log.push({ sent, shown, ms: t1 - t0, server });
    if (live.log.length > 16) live.log.shift();
    live.frames += 1;
    stats.dataset.frames = String(live.frames);
    stats.textContent = `${fps.toFixed(1)} fps · ${(t1 - t0).toFixed(1)} ms per frame in the page ` +
      `(server: model ${(server[1] || 0).toFixed(1)} ms, decode+encode ${((server[0] || 0) + (server[2] || 0)).toFixed(1)} ms; ` +
      `${res.headers.get("X-Backend") || "?"}) · ${bitmap.width}×${bitmap.height}`;
  }
}

// ---- start -------------------------------------------------------------------------------------

async function main() {
  let info;
  try {
    info = await api("/api/info");
  } catch (e) {
    status(e.message, true);
    return;
  }
  state.canvas = info.canvas;
  for (const id of ["edit", "stroke"]) { $(id).width = info.canvas; $(id).height = info.canvas; }
  setupPainting();
  for (const id of ["size", "opacity"]) {
    $(id).addEventListener("input", () => { $(`${id}-out`).textContent = $(id).value; });
  }
  document.querySelectorAll("input[name=mode]").forEach((r) => r.addEventListener("change", () => {
    document.body.classList.toggle("points", mode() === "points");
  }));
  $("clear").addEventListener("click", () => {
    $("edit").getContext("2d").clearRect(0, 0, info.canvas, info.canvas);
    propagate();
  });
  $("edit-file").addEventListener("change", (ev) => { loadEditFile(ev.target.files[0]); ev.target.value = ""; });
  $("images-file").addEventListener("change", (ev) => { uploadImages([...ev.target.files]); ev.target.value = ""; });
  $("demo").addEventListener("click", loadDemo);
  $("download-edit").addEventListener("click", () => download($("edit").toDataURL("image/png"), "edit.png"));
  $("download-all").addEventListener("click", () => {
    document.querySelectorAll("#results figure a").forEach((a) => download(a.href, a.download));
  });
  $("live-camera").addEventListener("click", () => startLive("camera"));
  $("live-file").addEventListener("change", (ev) => { if (ev.target.files[0]) startLive("file", ev.target.files[0]); ev.target.value = ""; });
  $("live-stop").addEventListener("click", () => { stopLive(); status("live: stopped"); });
  $("live-smooth").addEventListener("input", () => { $("live-smooth-out").textContent = $("live-smooth").value; });
  status(`ready: paint on the average image (${info.canvas}×${info.canvas}); up to ${info.max_images} images per upload`);
  if (info.demo) await loadDemo();
}

main();
