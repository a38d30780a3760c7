/*
 * hearth web console. Every byte of data comes from hearthd's API with the key
 * the user typed (sessionStorage, this tab only). Data is put into the page
 * with textContent and DOM nodes only, never as HTML, so function names and
 * logs cannot inject markup or script; the CSP forbids inline script anyway.
 */
'use strict';

const S = window.sessionStorage;
const $ = (id) => document.getElementById(id);
let me = null;          // {admin, tenant}
let usagePlot = null;

/* Builds an element; strings become text nodes, never markup. */
function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') e.className = v;
    else if (k === 'style') e.style.cssText = v;   // CSSOM: allowed by the CSP, unlike a style attribute
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined) continue;
    e.appendChild(typeof k === 'object' ? k : document.createTextNode(String(k)));
  }
  return e;
}

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/* Calls hearthd (same origin). A 401 ends the session with the reason shown. */
async function api(method, path, body) {
  const h = { Authorization: 'Bearer ' + S.getItem('hearth.key') };
  const t = S.getItem('hearth.tenant');
  if (me && me.admin && t) h['X-Hearth-Tenant'] = t;
  if (body !== undefined) h['Content-Type'] = 'application/json';
  let r;
  try {
    r = await fetch(path, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (e) {
    throw new ApiError(0, 'Unreachable', 'hearthd did not answer: ' + e.message);
  }
  let j = null;
  try { j = await r.json(); } catch (e) { /* not JSON */ }
  if (!r.ok) {
    const code = j && j.error ? j.error.code : 'HTTP' + r.status;
    const msg = j && j.error ? j.error.message : r.statusText;
    throw new ApiError(r.status, code, msg);
  }
  return j;
}

function showError(e) {
  if (e instanceof ApiError && e.status === 401) {
    signOut('hearthd refused the key (401 ' + e.code + '): ' + e.message +
            '. Check the key and sign in again.');
    return;
  }
  const p = $('error');
  p.hidden = false;
  p.textContent = e instanceof ApiError ? `${e.status} ${e.code}: ${e.message}` : String(e);
}

function signOut(reason) {
  S.removeItem('hearth.key');
  S.removeItem('hearth.tenant');
  me = null;
  $('nav').hidden = true;
  $('logout').hidden = true;
  $('tenant-pick').hidden = true;
  $('who').textContent = '';
  $('page').replaceChildren();
  $('error').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = reason || '';
}

async function signIn(key) {
  S.setItem('hearth.key', key);
  try {
    me = await api('GET', '/v1/console/whoami');
  } catch (e) {
    const msg = e instanceof ApiError && e.status === 401 ?
      'Wrong key: hearthd answered 401 Unauthorized (' + e.message + ').' :
      'Cannot sign in: ' + e.message;
    signOut(msg);
    return;
  }
  $('login').hidden = true;
  $('nav').hidden = false;
  $('logout').hidden = false;
  $('nav-host').hidden = !me.admin;
  $('who').textContent = me.admin ? 'admin' : 'tenant ' + me.tenant;
  if (me.admin) await loadTenants();
  if (!location.hash) location.hash = '#functions';
  render();
}

async function loadTenants() {
  const sel = $('tenant-select');
  const j = await api('GET', '/v1/tenants');
  sel.replaceChildren(...j.tenants.map((t) => el('option', { value: t.name }, t.name)));
  let cur = S.getItem('hearth.tenant');
  if (!j.tenants.some((t) => t.name === cur)) cur = j.tenants.length ? j.tenants[0].name : '';
  if (cur) S.setItem('hearth.tenant', cur); else S.removeItem('hearth.tenant');
  sel.value = cur;
  $('tenant-pick').hidden = false;
}

function table(cols, rows) {
  return el('table', {},
    el('thead', {}, el('tr', {}, cols.map((c) => el('th', {}, c[0])))),
    el('tbody', {}, rows.map((r) => el('tr', {}, cols.map((c) => {
      const v = c[1](r);
      return el('td', typeof v === 'number' ? { class: 'num' } : {}, v);
    })))));
}

function needTenant() {
  if (me.admin && !S.getItem('hearth.tenant')) {
    $('page').replaceChildren(el('p', {}, 'No tenant yet: create one with hearthctl tenant create NAME.'));
    return true;
  }
  return false;
}

const fmtTime = (us) => new Date(us / 1000).toISOString().replace('T', ' ').slice(0, 19);
const dash = (v) => (v === null || v === undefined ? '-' : v);

/* MB-ms -> GB-s with six decimals, truncated like hearthd (1 GB-s = 1,024,000 MB-ms). */
function gbs(mbms) {
  const whole = Math.floor(mbms / 1024000);
  const frac = Math.floor(((mbms % 1024000) * 1000000) / 1024000);
  return whole + '.' + String(frac).padStart(6, '0');
}

const pages = {
  async functions() {
    if (needTenant()) return;
    const j = await api('GET', '/v1/console/functions');
    $('page').replaceChildren(el('h1', {}, 'Functions'),
      j.functions.length === 0 ? el('p', {}, 'No functions yet: deploy one with hearthctl deploy.') :
        table([
          ['name', (f) => f.name], ['versions', (f) => f.versions], ['latest', (f) => f.latest_version],
          ['memory MB', (f) => f.memory_mb], ['timeout ms', (f) => f.timeout_ms],
          ['engine', (f) => f.engine], ['reserved', (f) => f.reserved],
          ['provisioned', (f) => f.provisioned], ['VMs', (f) => f.vms],
          ['warm idle', (f) => f.warm_idle], ['booting', (f) => f.booting],
          ['saved', (f) => f.saved],
          ['snapshot', (f) => (f.snapshot_versions.length ? 'v' + f.snapshot_versions.join(', v') : 'none')],
        ], j.functions));
  },

  async invocations() {
    if (needTenant()) return;
    const j = await api('GET', '/v1/console/invocations?limit=50');
    const rows = j.invocations;
    const body = el('tbody', {});
    for (const r of rows) {
      const logs = el('pre', { class: 'logs' });
      logs.textContent = r.logs || '(no logs)';
      const logRow = el('tr', { class: 'logrow' }, el('td', { colspan: '13' }, logs));
      logRow.hidden = true;
      const btn = el('button', { onclick: () => { logRow.hidden = !logRow.hidden; } }, 'logs');
      const cold = r.cold ? 'cold: ' + (r.cold_path || 'boot') : 'warm';
      body.append(el('tr', { class: 'inv', 'data-request-id': r.request_id },
        el('td', {}, fmtTime(r.start_us)), el('td', {}, r.function), el('td', { class: 'num' }, r.version),
        el('td', { class: r.status === 'Success' ? 'ok' : 'bad' }, r.status),
        el('td', { class: 'num' }, (r.duration_us / 1000).toFixed(3)),
        el('td', { class: 'num' }, r.billed_ms), el('td', { class: 'num' }, r.memory_mb),
        el('td', { class: 'cold' }, cold), el('td', { class: 'num boot' }, r.cold ? dash(r.boot_ms) : '-'),
        el('td', { class: 'num init' }, r.cold ? dash(r.init_ms) : '-'),
        el('td', {}, r.kind), el('td', { class: 'muted' }, r.request_id), el('td', {}, btn)), logRow);
    }
    $('page').replaceChildren(el('h1', {}, 'Invocations'),
      el('p', { class: 'muted' }, 'The 50 most recent, newest first. A cold start shows its path (boot a VM, or restore a snapshot clone or a saved VM) and how long that and the function\'s init took.'),
      rows.length === 0 ? el('p', {}, 'No invocations yet.') :
        el('table', {}, el('thead', {}, el('tr', {}, ['time (UTC)', 'function', 'version', 'status',
          'duration ms', 'billed ms', 'memory MB', 'start', 'boot/restore ms', 'init ms', 'kind',
          'request id', ''].map((h) => el('th', {}, h)))), body));
  },

  async usage() {
    if (needTenant()) return;
    const now = Math.floor(Date.now() / 1000);
    const from = Math.floor(now / 3600) * 3600 - 47 * 3600;
    const [u, l] = await Promise.all([
      api('GET', `/v1/usage?group_by=hour&from=${from}`),
      api('GET', '/v1/console/limits')]);
    const hours = [], sums = new Map();
    for (let h = from; h <= now; h += 3600) { hours.push(h); sums.set(h, 0); }
    let total = 0, inv = 0;
    for (const r of u.usage) {
      sums.set(r.hour_start, (sums.get(r.hour_start) || 0) + r.mb_ms);
      total += r.mb_ms;
      inv += r.invocations;
    }
    const ys = hours.map((h) => sums.get(h) / 1024000);
    const chart = el('div', { id: 'usage-chart', 'data-total-mb-ms': String(total) });
    const used = l.period.used_mb_ms, budget = l.budget_mb_ms;
    const pct = budget > 0 ? Math.min(100, (100 * used) / budget) : 0;
    $('page').replaceChildren(el('h1', {}, 'Usage'),
      el('div', { class: 'cards' },
        el('div', { class: 'card' }, 'GB-s, last 48 h', el('b', { id: 'usage-total' }, gbs(total))),
        el('div', { class: 'card' }, 'invocations, last 48 h', el('b', {}, inv)),
        el('div', { class: 'card' }, 'budget this month',
          el('b', { id: 'budget-used' }, budget > 0 ? `${l.period.used_gb_s} of ${l.budget_gb_s} GB-s` :
            `${l.period.used_gb_s} GB-s (no budget)`),
          budget > 0 ? el('div', { class: 'meter', title: pct.toFixed(1) + '%' },
            el('div', { style: `width:${pct.toFixed(1)}%` })) : null)),
      el('h2', {}, 'GB-s per hour'), chart);
    if (usagePlot) usagePlot.destroy();
    usagePlot = new uPlot({
      width: Math.min(1000, document.body.clientWidth - 60), height: 300,
      scales: { x: { time: true } },
      series: [{}, { label: 'GB-s', stroke: '#d9541e', fill: 'rgba(217,84,30,0.25)',
        paths: uPlot.paths.bars({ size: [0.8, 40] }), points: { show: false },
        value: (u, v) => (v === null ? '-' : v.toFixed(6)) }],
      axes: [{}, { label: 'GB-s', size: 70 }],
    }, [hours, ys], chart);
  },

  async limits() {
    if (needTenant()) return;
    const l = await api('GET', '/v1/console/limits');
    const fields = [['max_concurrency', 'concurrent invocations'], ['max_memory_mb', 'memory of running invocations (MB)'],
      ['rate_per_s', 'invocations per second'], ['burst', 'burst'], ['max_functions', 'functions'],
      ['max_package_bytes', 'package bytes'], ['max_code_bytes', 'code storage bytes (all versions\' images)'],
      ['budget_gb_s', 'GB-s budget per month']];
    const val = (k) => (k === 'budget_gb_s' ? l.budget_gb_s : l[k]);
    const head = [el('h1', {}, 'Limits of ' + l.tenant),
      el('p', { class: 'muted' }, '0 = no limit. Used this month: ' + l.period.used_gb_s + ' GB-s. Code storage used: ' +
        l.code_bytes_used + ' bytes.')];
    if (!me.admin) {
      $('page').replaceChildren(...head, table([['limit', (f) => f[1]], ['value', (f) => String(val(f[0]))]], fields),
        el('p', { class: 'muted' }, 'Limits are set by the operator (admin key).'));
      return;
    }
    const msg = el('p', { id: 'limits-msg', role: 'status' });
    const form = el('form', { class: 'limits', id: 'limits-form' },
      fields.map(([k, label]) => el('label', {}, el('input', { name: k, value: String(val(k)), inputmode: 'numeric' }), ' ', label)),
      el('button', { type: 'submit' }, 'Save'), msg);
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const body = {};
      for (const [k] of fields) {
        const s = form.elements[k].value.trim();
        if (k === 'budget_gb_s') {
          if (s === l.budget_gb_s) continue;          // unchanged (shown with decimals)
          if (!/^\d+$/.test(s)) { msg.className = 'error'; msg.textContent = 'budget_gb_s must be a whole number of GB-s'; return; }
        } else if (!/^\d+$/.test(s)) { msg.className = 'error'; msg.textContent = k + ' must be a non-negative integer'; return; }
        body[k] = Number(s);
      }
      try {
        await api('PUT', '/v1/tenants/' + encodeURIComponent(l.tenant) + '/limits', body);
        msg.className = 'ok';
        msg.textContent = 'Saved: effective now.';
      } catch (e) {
        msg.className = 'error';
        msg.textContent = e instanceof ApiError ? `${e.status} ${e.code}: ${e.message}` : String(e);
      }
    });
    $('page').replaceChildren(...head, form);
  },

  async host() {
    if (!me.admin) { $('page').replaceChildren(el('p', { class: 'error' }, 'The host page needs the admin key.')); return; }
    const h = await api('GET', '/v1/console/host');
    let metrics = '';
    try { metrics = await (await fetch('/metrics')).text(); } catch (e) { /* shown as '-' */ }
    const m = (name) => {
      const r = metrics.split('\n').find((l) => l.startsWith(name + ' '));
      return r ? Number(r.split(' ')[1]) : '-';
    };
    const mib = (kb) => (kb < 0 ? '-' : Math.round(kb / 1024) + ' MiB');
    $('page').replaceChildren(el('h1', {}, 'Host'),
      el('div', { class: 'cards' },
        el('div', { class: 'card' }, 'engine', el('b', {}, h.engine + (h.engine_clones ? ' (clones snapshots)' : ''))),
        el('div', { class: 'card' }, 'VMs / capacity', el('b', {}, `${h.vms.total} / ${h.capacity_vms}`)),
        el('div', { class: 'card' }, 'memory available', el('b', {}, `${mib(h.memory_kb.available)} of ${mib(h.memory_kb.total)}`)),
        el('div', { class: 'card' }, 'snapshots', el('b', {}, h.snapshots))),
      el('h2', {}, 'VMs by state'),
      table([['state', (r) => r[0]], ['VMs', (r) => r[1]]],
        [['warm idle', h.vms.warm_idle], ['busy', Math.max(0, h.vms.total - h.vms.warm_idle - h.vms.booting)],
          ['booting', h.vms.booting], ['saved to disk', h.vms.saved], ['invocations queued', h.vms.queued]]),
      el('h2', {}, 'hearth-vmm pool (builtin engine)'),
      table([['figure', (r) => r[0]], ['value', (r) => r[1]]],
        ['idle', 'starting', 'hits_total', 'misses_total', 'discarded_total'].map((k) => [k, m('hearth_vmm_pool_' + k)])),
      el('h2', {}, 'Warm pools by function'),
      h.pools.length === 0 ? el('p', {}, 'No functions.') : table([
        ['tenant', (p) => p.tenant], ['function', (p) => p.function], ['latest', (p) => p.latest_version],
        ['memory MB', (p) => p.memory_mb], ['VMs', (p) => p.vms], ['warm idle', (p) => p.warm_idle],
        ['booting', (p) => p.booting], ['queued', (p) => p.queued], ['saved', (p) => p.saved],
        ['snapshot', (p) => (p.snapshot_versions.length ? 'v' + p.snapshot_versions.join(', v') : 'none')]], h.pools));
  },
};

async function render() {
  if (!me) return;
  const page = (location.hash || '#functions').slice(1);
  for (const a of document.querySelectorAll('#nav a')) a.classList.toggle('active', a.dataset.page === page);
  $('error').hidden = true;
  const fn = Object.prototype.hasOwnProperty.call(pages, page) ? pages[page] : null;
  if (!fn) { $('page').replaceChildren(el('p', { class: 'error' }, 'No such page.')); return; }
  document.body.dataset.page = page;
  document.body.dataset.ready = '';
  try {
    await fn();
  } catch (e) {
    showError(e);
  }
  document.body.dataset.ready = page;
}

window.addEventListener('hashchange', render);
document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const k = $('key').value.trim();
    $('key').value = '';
    if (!k) { $('login-error').textContent = 'Enter an API key.'; return; }
    signIn(k);
  });
  $('logout').addEventListener('click', () => signOut('Signed out.'));
  $('tenant-select').addEventListener('change', (ev) => {
    S.setItem('hearth.tenant', ev.target.value);
    render();
  });
  if (S.getItem('hearth.key')) signIn(S.getItem('hearth.key'));
  else signOut('');
});
