// yiplearn click-and-learn page: plain JavaScript, no build step, no external resources.
'use strict';

const COLORS = [[0, 0, 0], [255, 64, 64], [64, 160, 255], [255, 200, 0], [0, 200, 120], [200, 80, 255]];
const S = {
  state: null, image: null, pred: null, cls: 1, scale: 1, busy: false, shownIndex: null,
};
const $ = (id) => document.getElementById(id);
const canvas = $('canvas');
const ctx = canvas.getContext('2d');

function color(k) { return COLORS[k % COLORS.length]; }

function decodePred(p) {
  if (!p) return null;
  const bin = atob(p.data);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return { h: p.shape[0], w: p.shape[1], data: out };
}

function message(text) { $('message').textContent = text || ''; }

function setBusy(busy, text) {
  S.busy = busy;
  $('busy').hidden = !busy;
  $('busy').textContent = text || 'adapting…';
  document.body.dataset.busy = busy ? '1' : '0';
  for (const b of document.querySelectorAll('#actions button')) b.disabled = busy;
}

function draw() {
  const cur = S.state && S.state.current;
  if (!S.image || !cur) { ctx.clearRect(0, 0, canvas.width, canvas.height); return; }
  const h = S.image.naturalHeight, w = S.image.naturalWidth;
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(S.image, 0, 0, w * S.scale, h * S.scale);
  if (S.pred) {
    const alpha = Math.round(255 * $('opacity').value / 100);
    const off = document.createElement('canvas');
    off.width = S.pred.w; off.height = S.pred.h;
    const octx = off.getContext('2d');
    const img = octx.createImageData(S.pred.w, S.pred.h);
    for (let i = 0; i < S.pred.data.length; i++) {
      const k = S.pred.data[i];
      if (k === 0) continue;
      const c = color(k);
      img.data.set([c[0], c[1], c[2], alpha], 4 * i);
    }
    octx.putImageData(img, 0, 0);
    ctx.drawImage(off, 0, 0, w * S.scale, h * S.scale);
  }
  cur.clicks.forEach(([r, c, k], i) => {
    const x = (c + 0.5) * S.scale, y = (r + 0.5) * S.scale;
    const rad = Math.max(4, Math.min(9, S.scale * 1.5));
    ctx.beginPath(); ctx.arc(x, y, rad, 0, 2 * Math.PI);
    const col = k === 0 ? [255, 255, 255] : color(k);
    ctx.fillStyle = `rgb(${col})`; ctx.fill();
    ctx.lineWidth = 2; ctx.strokeStyle = k === 0 ? '#000' : '#fff'; ctx.stroke();
    ctx.fillStyle = k === 0 ? '#000' : '#fff'; ctx.font = 'bold 10px sans-serif';
    ctx.textAlign = 'center'; ctx.textBaseline = 'middle'; ctx.fillText(String(i + 1), x, y);
  });
}

function loadImage(index) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error('image ' + index + ' did not load'));
    img.src = '/api/image/' + index + '?v=' + Date.now();
  });
}

async function show(state) {
  S.state = state;
  const cur = state.current;
  if (cur && cur.index !== S.shownIndex) {
    S.image = await loadImage(cur.index);
    S.shownIndex = cur.index;
    const n = Math.max(S.image.naturalWidth, S.image.naturalHeight);
    S.scale = Math.max(1, Math.floor(512 / n));
    canvas.width = S.image.naturalWidth * S.scale;
    canvas.height = S.image.naturalHeight * S.scale;
    canvas.dataset.scale = String(S.scale);
  }
  if (cur && 'pred' in cur) S.pred = decodePred(cur.pred);
  if (!cur) { S.pred = null; S.image = null; S.shownIndex = null; }
  canvas.dataset.index = cur ? String(cur.index) : '';
  canvas.dataset.clicks = cur ? String(cur.clicks.length) : '0';
  renderPanel();
  draw();
}

function renderPanel() {
  const st = S.state;
  const cur = st.current;
  const done = st.images.filter((i) => i.status !== 'todo').length;
  $('status').textContent = cur
    ? `image ${cur.index + 1} of ${st.images.length} (${cur.name}) · ${cur.clicks.length} clicks · ${done} done`
      + (st.warming ? ` · compiling ${st.warming} functions` : '')
    : `all ${st.images.length} images done`;
  // classes
  const cl = $('classes');
  cl.textContent = '';
  st.classes.forEach((name, k) => {
    const b = document.createElement('button');
    b.textContent = `${k + 1} ${name}`;
    b.dataset.class = String(k);
    const c = k === 0 ? [255, 255, 255] : color(k);
    b.style.borderLeft = `12px solid rgb(${c})`;
    if (k === S.cls) b.classList.add('selected');
    b.onclick = () => { S.cls = k; renderPanel(); };
    cl.appendChild(b);
  });
  // methods
  const ms = $('methods');
  ms.textContent = '';
  const names = { frozen: 'frozen', pi: 'PI', pi_mi: 'PI + MI' };
  for (const m of st.methods) {
    const l = document.createElement('label');
    const r = document.createElement('input');
    r.type = 'radio'; r.name = 'method'; r.value = m; r.checked = m === st.method;
    r.onchange = () => act('method', { method: m });
    l.append(r, ' ' + (names[m] || m));
    ms.appendChild(l);
  }
  // images
  const ol = $('images');
  ol.textContent = '';
  for (const im of st.images) {
    const li = document.createElement('li');
    li.textContent = im.name;
    li.className = im.status + (cur && cur.index === im.index ? ' current' : '');
    if (im.status === 'todo') li.onclick = () => act('open', { index: im.index });
    ol.appendChild(li);
  }
  $('weights').textContent = Object.entries(st.weights)
    .map(([m, w]) => `${names[m] || m}: ${w.updates} updates`).join(' · ');
  $('weights').dataset.weights = JSON.stringify(st.weights);
  // rows
  const tb = document.querySelector('#rows tbody');
  tb.textContent = '';
  const fmt = (v) => (v === undefined || v === null ? '' : v.toFixed(3));
  for (const r of st.rows) {
    const tr = document.createElement('tr');
    const last = (a) => (a && a.length ? a[a.length - 1] : null);
    [r.name, names[r.method] || r.method, r.clicks, r.seconds.toFixed(1), fmt(last(r.dice)),
      fmt(last(r.frozen_dice))].forEach((v) => {
      const td = document.createElement('td'); td.textContent = v; tr.appendChild(td);
    });
    tb.appendChild(tr);
  }
  chart(cur ? cur.dice : [], cur ? cur.frozen_dice : [], st.rows);
}

function chart(dice, frozen, rows) {
  const svg = $('chart');
  const W = 300, H = 150, pad = 22;
  const n = Math.max(st_max(), dice.length, 2);
  function st_max() { return S.state ? S.state.max_clicks : 10; }
  const x = (i) => pad + (W - 2 * pad) * (i / Math.max(n - 1, 1));
  const y = (v) => H - pad - (H - 2 * pad) * v;
  const line = (a, c) => a.length
    ? `<polyline fill="none" stroke="${c}" stroke-width="2" points="${a.map((v, i) => `${x(i)},${y(v)}`).join(' ')}"/>`
      + a.map((v, i) => `<circle cx="${x(i)}" cy="${y(v)}" r="2.5" fill="${c}"/>`).join('')
    : '';
  const bars = rows.slice(-20).map((r, i, a) => {
    const bw = (W - 2 * pad) / Math.max(a.length, 1);
    const hgt = (H - 2 * pad) * 0.25 * Math.min(r.clicks / st_max(), 1);
    return `<rect x="${pad + i * bw + 1}" y="${H - pad - hgt}" width="${Math.max(bw - 2, 1)}" height="${hgt}" fill="#cfd8dc"><title>${r.name}: ${r.clicks} clicks, ${r.seconds.toFixed(1)} s</title></rect>`;
  }).join('');
  svg.innerHTML = `${bars}<line x1="${pad}" y1="${y(0)}" x2="${W - pad}" y2="${y(0)}" stroke="#999"/>`
    + `<line x1="${pad}" y1="${y(0)}" x2="${pad}" y2="${y(1)}" stroke="#999"/>`
    + `<text x="2" y="${y(1) + 4}" font-size="9">1</text><text x="2" y="${y(0) + 3}" font-size="9">0</text>`
    + `<text x="${W / 2}" y="${H - 4}" font-size="9" text-anchor="middle">click (bars: clicks per accepted image)</text>`
    + line(frozen, '#888') + line(dice, '#d81b60');
}

async function readError(r) {
  try { const e = await r.json(); return e.error || r.statusText; } catch (_) { return r.statusText; }
}

async function act(action, body) {
  if (S.busy) return;
  setBusy(true, action === 'accept' ? 'learning from this image…' : 'working…');
  message('');
  try {
    const r = await fetch('/api/' + action, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body || {}),
    });
    if (!r.ok) { message(await readError(r)); return; }
    await show(await r.json());
  } catch (e) { message(String(e)); } finally { setBusy(false); }
}

async function clickStream(action, body) {
  if (S.busy) return;
  setBusy(true, 'predicting…');
  message('');
  try {
    const r = await fetch('/api/' + action, {
      method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body || {}),
    });
    if (!r.ok) { message(await readError(r)); return; }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i); buf = buf.slice(i + 1);
        if (line.trim()) await onLine(JSON.parse(line));
      }
    }
  } catch (e) { message(String(e)); } finally { setBusy(false); }
}

async function onLine(msg) {
  if (msg.stage === 'first') {  // the pseudo-label, one forward pass: shown while the model adapts
    S.pred = decodePred(msg.pred);
    S.state.current.clicks = S.state.current.clicks.concat([msg.click.concat([false])]);
    setBusy(true, 'adapting…');
    draw();
  } else if (msg.stage === 'adapted') {
    await show(msg);
  } else if (msg.stage === 'error') {
    message(msg.error);
  }
}

canvas.addEventListener('contextmenu', (e) => e.preventDefault());
canvas.addEventListener('mousedown', (e) => {
  if (!S.state || !S.state.current || S.busy) return;
  if (e.button !== 0 && e.button !== 2) return;
  const rect = canvas.getBoundingClientRect();
  const col = Math.floor((e.clientX - rect.left) / S.scale);
  const row = Math.floor((e.clientY - rect.top) / S.scale);
  const label = e.button === 2 ? 0 : S.cls;
  clickStream('click', { row, col, label });
});
$('opacity').addEventListener('input', draw);
$('undo').onclick = () => act('undo');
$('reset').onclick = () => act('reset');
$('accept').onclick = () => act('accept');
$('skip').onclick = () => act('skip');
$('auto').onclick = () => clickStream('auto');
document.addEventListener('keydown', (e) => {
  if (e.target.tagName === 'INPUT' && e.target.type === 'range') return;
  const k = Number(e.key);
  if (S.state && Number.isInteger(k) && k >= 1 && k <= S.state.classes.length) { S.cls = k - 1; renderPanel(); }
  else if (e.key === 'u' || (e.key === 'z' && (e.ctrlKey || e.metaKey))) act('undo');
  else if (e.key === 'Enter') act('accept');
  else if (e.key === 's') act('skip');
  else if (e.key === 'a') clickStream('auto');
});

async function poll() {  // another client's request, or background compilation, shows as busy here
  if (!S.busy) {
    try {
      const r = await fetch('/api/state');
      if (r.ok) {
        const st = await r.json();
        const changed = !S.state || JSON.stringify(st.rows) !== JSON.stringify(S.state.rows)
          || (st.current && S.state.current && st.current.clicks.length !== S.state.current.clicks.length)
          || (!st.current) !== (!S.state.current) || (st.current && st.current.index !== S.shownIndex);
        $('busy').hidden = !st.busy;
        if (st.busy) $('busy').textContent = 'busy: another request is running';
        if (changed) await show(st); else { S.state.warming = st.warming; renderPanel(); }
      }
    } catch (_) { /* the server is restarting */ }
  }
  setTimeout(poll, 1500);
}

poll();
