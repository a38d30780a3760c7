// Browser tests of hearthd's web console (label ui): a real hearthd (process
// engine) on a free port, functions deployed and invoked with hearthctl, pages
// driven in Debian's chromium by puppeteer-core. One case per run:
//   node ui_test.mjs CASE
// Exit 0 pass, 1 fail (the reason on stderr), 77 skip (chromium cannot run).
// Environment: HEARTHD, HEARTHCTL, EXAMPLES, FNS, NODE_MODULES, ARTIFACTS,
// CHROMIUM (default /usr/bin/chromium).
import { spawn, spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import assert from 'node:assert/strict';

const env = (k, d) => process.env[k] || d || (() => { throw new Error(`${k} is not set`); })();
const HEARTHD = env('HEARTHD'), HEARTHCTL = env('HEARTHCTL'), EXAMPLES = env('EXAMPLES');
const FNS = env('FNS'), ARTIFACTS = env('ARTIFACTS');
const CHROMIUM = env('CHROMIUM', '/usr/bin/chromium');

function skip(why) {
  console.log(`SKIP: ${why}`);
  process.exit(77);
}

let puppeteer;
try {
  puppeteer = createRequire(path.join(env('NODE_MODULES'), 'x.js'))('puppeteer-core');
} catch (e) {
  console.error(`FAIL: puppeteer-core is not installed in ${env('NODE_MODULES')} (the ui.npm_ci test installs it): ${e.message}`);
  process.exit(1);
}
if (!fs.existsSync(CHROMIUM)) skip(`no ${CHROMIUM} (apt-get install chromium; ci/setup does)`);

const freePort = () => new Promise((res, rej) => {
  const s = net.createServer();
  s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => res(p)); });
  s.on('error', rej);
});
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class Hearthd {
  async start() {
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hearth-ui-'));
    this.port = await freePort();
    this.base = `http://127.0.0.1:${this.port}`;
    const log = fs.openSync(path.join(this.dir, 'hearthd.log'), 'a');
    this.proc = spawn(HEARTHD, ['--config', 'none', '--state-dir', `${this.dir}/state`, '--run-dir', `${this.dir}/run`,
      '--socket', `${this.dir}/api.sock`, '--listen', `127.0.0.1:${this.port}`,
      '--engine', 'process', '--allow-unisolated', '--verbose',
      // Sanitizer builds link the agent dynamically; ci/test passes a static one.
      ...(process.env.HEARTH_TEST_AGENT ? ['--agent', process.env.HEARTH_TEST_AGENT] : [])],
    { stdio: ['ignore', log, log] });
    this.exited = null;
    this.proc.on('exit', (code, sig) => { this.exited = { code, sig }; });
    for (let i = 0; i < 200; i++) {
      if (this.exited) throw new Error(`hearthd exited at start: ${JSON.stringify(this.exited)}; log:\n${this.log()}`);
      try { if ((await fetch(`${this.base}/healthz`)).ok) break; } catch (e) { /* not yet */ }
      await sleep(50);
    }
    this.admin = fs.readFileSync(`${this.dir}/state/admin.key`, 'utf8').trim();
  }
  log() { try { return fs.readFileSync(path.join(this.dir, 'hearthd.log'), 'utf8'); } catch (e) { return ''; } }
  async stop() {
    if (!this.proc || this.exited) return;
    this.proc.kill('SIGTERM');
    for (let i = 0; i < 200 && !this.exited; i++) await sleep(50);
    if (!this.exited) { this.proc.kill('SIGKILL'); throw new Error('hearthd did not stop on SIGTERM'); }
    if (this.exited.code !== 0)
      throw new Error(`hearthd exited with ${JSON.stringify(this.exited)} on SIGTERM; log:\n${this.log().split('\n').slice(-40).join('\n')}`);
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
  async api(method, p, key, { tenant, body } = {}) {
    const h = { Authorization: `Bearer ${key}` };
    if (tenant) h['X-Hearth-Tenant'] = tenant;
    if (body !== undefined) h['Content-Type'] = 'application/json';
    const r = await fetch(this.base + p, { method, headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
    const text = await r.text();
    let json = null;
    try { json = JSON.parse(text); } catch (e) { /* not JSON */ }
    return { status: r.status, json, text, headers: r.headers };
  }
  async tenant(name) {
    const r = await this.api('POST', '/v1/tenants', this.admin, { body: { name } });
    assert.equal(r.status, 201, r.text);
    return r.json.api_key;
  }
  /* hearthctl against this hearthd; returns {status, stdout, stderr, headers}. */
  ctl(key, ...args) {
    const r = spawnSync(HEARTHCTL, ['--url', this.base, '--key', key, ...args], { encoding: 'utf8', timeout: 60000 });
    const headers = {};
    for (const l of (r.stderr || '').split('\n')) {
      const m = /^(X-Hearth-[A-Za-z-]+): (.*)$/.exec(l);
      if (m) headers[m[1]] = m[2];
    }
    return { status: r.status, stdout: r.stdout, stderr: r.stderr, headers };
  }
  deploy(key, name, dir, ...extra) {
    const r = this.ctl(key, ...extra, 'deploy', name, dir);
    assert.equal(r.status, 0, `hearthctl deploy ${name}: ${r.stderr}`);
  }
  invoke(key, name, data = '{}') {
    const r = this.ctl(key, '-v', 'invoke', name, '--data', data);
    assert.equal(r.status, 0, `hearthctl invoke ${name}: ${r.stderr}`);
    assert.ok(r.headers['X-Hearth-Request-Id'], `no request id from hearthctl -v: ${r.stderr}`);
    return r.headers;
  }
}

let browser;
async function openBrowser() {
  try {
    browser = await puppeteer.launch({
      executablePath: CHROMIUM, headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
    });
  } catch (e) {
    skip(`chromium (${CHROMIUM}) cannot start here: ${e.message.split('\n')[0]}`);
  }
}

/* A console tab; records console errors, page errors and every request's host. */
async function page(hd) {
  const p = await browser.newPage();
  await p.setViewport({ width: 1280, height: 800 });
  p.errors = [];
  p.hosts = new Set();
  p.on('pageerror', (e) => p.errors.push(String(e)));
  p.on('request', (r) => p.hosts.add(new URL(r.url()).host));
  await p.goto(`${hd.base}/ui/`, { waitUntil: 'load' });
  return p;
}
async function signIn(p, key) {
  await p.$eval('#login-error', (e) => { e.textContent = ''; });
  await p.evaluate(() => { document.body.dataset.ready = ''; });
  await p.type('#key', key);
  await Promise.all([p.click('#login-form button'), p.waitForFunction(
    () => !document.getElementById('login').hidden && document.getElementById('login-error').textContent ||
      document.body.dataset.ready, { timeout: 15000 })]);
}
async function goto(p, name) {
  await p.evaluate((n) => {
    document.body.dataset.ready = '';
    if (location.hash === '#' + n) window.dispatchEvent(new HashChangeEvent('hashchange'));
    else location.hash = '#' + n;
  }, name);
  await p.waitForFunction((n) => document.body.dataset.ready === n, { timeout: 15000 }, name);
  const err = await p.$eval('#error', (e) => (e.hidden ? '' : e.textContent));
  assert.equal(err, '', `page ${name} shows an error: ${err}`);
}
async function shot(p, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await p.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}
const text = (p, sel) => p.$eval(sel, (e) => e.textContent);
function onlyHearthd(p, hd) {
  assert.deepEqual([...p.hosts], [`127.0.0.1:${hd.port}`], 'the console called a host other than hearthd');
  assert.deepEqual(p.errors, [], 'script errors in the page');
}
function gbs(mbms) {
  const whole = Math.floor(mbms / 1024000);
  return `${whole}.${String(Math.floor(((mbms % 1024000) * 1000000) / 1024000)).padStart(6, '0')}`;
}

const cases = {
  /* The console's files and endpoints: headers, no key needed for files only, tenants fenced. */
  async static_and_api(hd) {
    const r = await fetch(`${hd.base}/ui/`);
    assert.equal(r.status, 200);
    const csp = r.headers.get('content-security-policy') || '';
    for (const d of ["default-src 'none'", "script-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"])
      assert.ok(csp.includes(d), `CSP lacks ${d}: ${csp}`);
    assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
    assert.ok(!(await r.text()).match(/<script>|\son[a-z]+=/i), 'index.html has inline script');
    assert.equal((await fetch(`${hd.base}/ui/uPlot.iife.min.js`)).status, 200);
    const redirect = await fetch(`${hd.base}/ui`, { redirect: 'manual' });
    assert.equal(redirect.status, 301);
    for (const bad of ['/ui/CMakeLists.txt', '/ui/app.js/x', '/ui/.%2fapp.js'])
      assert.equal((await fetch(hd.base + bad)).status, 404, bad);
    // A raw "../" (clients normalise it away, so sent by hand): never a file outside the table.
    const raw = await new Promise((res) => {
      const s = net.connect(hd.port, '127.0.0.1', () => s.end('GET /ui/../state/admin.key HTTP/1.0\r\n\r\n'));
      let d = '';
      s.on('data', (x) => { d += x; });
      s.on('end', () => res(d));
    });
    assert.match(raw, /^HTTP\/1\.[01] 404/, raw);
    assert.ok(!raw.includes(hd.admin));
    assert.equal((await hd.api('GET', '/v1/console/functions', 'nope')).status, 401);
    const a = await hd.tenant('alpha');
    await hd.tenant('beta');
    hd.deploy(hd.admin, 'beta-secret', path.join(EXAMPLES, 'hello'), '--tenant', 'beta');
    assert.equal((await hd.api('GET', '/v1/console/host', a)).status, 403);
    const f = await hd.api('GET', '/v1/console/functions', a, { tenant: 'beta' });
    assert.equal(f.status, 200);
    assert.deepEqual(f.json.functions, [], 'a tenant key with X-Hearth-Tenant saw another tenant');
    assert.equal((await hd.api('GET', '/v1/console/functions', hd.admin)).json.error.code, 'TenantRequired');
    assert.equal((await hd.api('GET', '/v1/console/invocations?limit=0', a)).status, 400);
    assert.equal((await hd.api('POST', '/v1/console/functions', a)).status, 405);
  },

  /* A tenant's key shows that tenant's functions and nothing of another's, whatever URL is typed. */
  async tenant_sees_only_itself(hd) {
    const a = await hd.tenant('alpha'), b = await hd.tenant('beta');
    hd.deploy(a, 'alpha-fn', path.join(EXAMPLES, 'hello'));
    hd.deploy(b, 'beta-secret', path.join(EXAMPLES, 'hello'));
    hd.invoke(b, 'beta-secret');
    const p = await page(hd);
    await signIn(p, a);
    assert.equal(await text(p, '#who'), 'tenant alpha');
    await goto(p, 'functions');
    const body = await text(p, '#page');
    assert.ok(body.includes('alpha-fn'), body);
    assert.ok(!body.includes('beta'), `alpha's console shows beta: ${body}`);
    assert.equal(await p.$eval('#nav-host', (e) => e.hidden), true);
    await shot(p, 'functions');
    await goto(p, 'invocations');
    assert.ok(!(await text(p, '#page')).includes('beta'));
    // Typed URLs and hand-made requests from the page: still alpha's data only.
    await p.evaluate(() => sessionStorage.setItem('hearth.tenant', 'beta'));
    await goto(p, 'functions');
    assert.ok(!(await text(p, '#page')).includes('beta'));
    await p.evaluate(() => { document.body.dataset.ready = ''; location.hash = '#host'; });
    await p.waitForFunction(() => document.body.dataset.ready === 'host');
    assert.match(await text(p, '#page'), /needs the admin key/);
    const st = await p.evaluate(async (k) => (await fetch('/v1/console/host', { headers: { Authorization: 'Bearer ' + k } })).status, a);
    assert.equal(st, 403);
    const usage = await p.evaluate(async (k) => (await fetch('/v1/usage?group_by=function', { headers: { Authorization: 'Bearer ' + k, 'X-Hearth-Tenant': 'beta' } })).text(), a);
    assert.ok(!usage.includes('beta'), usage);
    onlyHearthd(p, hd);
  },

  /* Deploy and invoke with hearthctl; the console lists the invocation with its cold-start breakdown. */
  async invocation_cold_start(hd) {
    const a = await hd.tenant('alpha');
    hd.deploy(a, 'hello', path.join(EXAMPLES, 'hello'));
    const cold = hd.invoke(a, 'hello', '{"n": 1}');
    const warm = hd.invoke(a, 'hello', '{"n": 2}');
    assert.equal(cold['X-Hearth-Cold-Start'], 'true');
    assert.equal(warm['X-Hearth-Cold-Start'], 'false');
    const p = await page(hd);
    await signIn(p, a);
    await goto(p, 'invocations');
    const row = async (id) => p.$eval(`tr.inv[data-request-id="${id}"]`, (tr) => [...tr.cells].map((c) => c.textContent));
    const c = await row(cold['X-Hearth-Request-Id']);
    const w = await row(warm['X-Hearth-Request-Id']);
    // time, function, version, status, duration, billed, memory, start, boot/restore, init, kind, id
    assert.equal(c[1], 'hello');
    assert.equal(c[3], 'Success');
    assert.equal(c[5], cold['X-Hearth-Billed-Duration-Ms']);
    assert.equal(c[7], `cold: ${cold['X-Hearth-Cold-Start-Path']}`);
    assert.equal(cold['X-Hearth-Cold-Start-Path'], 'boot'); // the process engine boots
    // The record keeps whole milliseconds; the headers have three decimals.
    const near = (shown, hdr) => assert.ok(hdr !== undefined && Math.abs(Number(shown) - Number(hdr)) < 1,
      `shown ${shown}, header ${hdr}`);
    near(c[8], cold['X-Hearth-Boot-Ms'] || cold['X-Hearth-Restore-Ms']);
    near(c[9], cold['X-Hearth-Init-Ms']);
    assert.equal(w[7], 'warm');
    assert.equal(w[8], '-');
    // newest first
    const ids = await p.$$eval('tr.inv', (t) => t.map((x) => x.dataset.requestId));
    assert.deepEqual(ids, [warm['X-Hearth-Request-Id'], cold['X-Hearth-Request-Id']]);
    await p.click(`tr.inv[data-request-id="${cold['X-Hearth-Request-Id']}"] button`);
    const logs = await p.$eval(`tr.inv[data-request-id="${cold['X-Hearth-Request-Id']}"] + tr pre`, (e) => e.textContent);
    assert.match(logs, /hello handler got 8 bytes/);
    await shot(p, 'invocations');
    // The functions page shows the warm VM those invocations left behind.
    await goto(p, 'functions');
    const cells = await p.$$eval('#page tbody tr td', (t) => t.map((x) => x.textContent));
    // name, versions, latest, memory, timeout, engine, reserved, provisioned, VMs, warm idle, booting, saved, snapshot
    assert.deepEqual(cells, ['hello', '1', '1', '128', '3000', 'auto', '0', '0', '1', '1', '0', '0', 'none']);
    onlyHearthd(p, hd);
  },

  /* The usage chart draws the tenant's GB-s per hour, and its total is what was billed. */
  async usage_chart(hd) {
    const a = await hd.tenant('alpha'), b = await hd.tenant('beta');
    hd.deploy(a, 'hello', path.join(EXAMPLES, 'hello'));
    hd.deploy(b, 'other', path.join(EXAMPLES, 'hello'));
    const lim = await hd.api('PUT', '/v1/tenants/alpha/limits', hd.admin, { body: { budget_gb_s: 10 } });
    assert.equal(lim.status, 200, lim.text);
    let want = 0;
    for (let i = 0; i < 5; i++) want += 128 * Number(hd.invoke(a, 'hello')['X-Hearth-Billed-Duration-Ms']);
    hd.invoke(b, 'other'); // must not count
    // /metrics: the largest share of a budget used (alpha's; beta has none), no tenant at 80%.
    const metrics = await (await fetch(`${hd.base}/metrics`)).text();
    const mv = (n) => Number((new RegExp(`^${n} (\\S+)$`, 'm').exec(metrics) || [])[1]);
    assert.ok(Math.abs(mv('hearth_budget_max_used_ratio') - want / (10 * 1024000)) < 2e-6, metrics);
    assert.equal(mv('hearth_budget_tenants_at_80_percent'), 0);
    const p = await page(hd);
    await signIn(p, a);
    await goto(p, 'usage');
    assert.equal(await text(p, '#usage-total'), gbs(want));
    assert.equal(await p.$eval('#usage-chart', (e) => e.dataset.totalMbMs), String(want));
    assert.match(await text(p, '#budget-used'), new RegExp(`^${gbs(want).replace('.', '\\.')} of 10\\.000000 GB-s$`));
    // uPlot drew: a canvas with painted pixels, and its series sums to the total.
    const painted = await p.$eval('#usage-chart canvas', (cv) => {
      const d = cv.getContext('2d').getImageData(0, 0, cv.width, cv.height).data;
      let n = 0;
      for (let i = 3; i < d.length; i += 4) if (d[i]) n++;
      return n;
    });
    assert.ok(painted > 1000, `the chart's canvas is blank (${painted} pixels)`);
    const sum = await p.$eval('#usage-chart', (e) => [...e.querySelectorAll('.u-legend')].length);
    assert.ok(sum >= 1, 'no uPlot legend');
    await shot(p, 'usage');
    onlyHearthd(p, hd);
  },

  /* Logs holding <script>, event handlers and closing tags are shown as text; nothing runs. */
  async script_in_logs_is_text(hd) {
    const a = await hd.tenant('alpha');
    hd.deploy(a, 'xss', path.join(FNS, 'xss'));
    const h = hd.invoke(a, 'xss');
    const p = await page(hd);
    const dialogs = [];
    p.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss(); });
    await signIn(p, a);
    await goto(p, 'invocations');
    await p.click(`tr.inv[data-request-id="${h['X-Hearth-Request-Id']}"] button`);
    const logs = await p.$eval(`tr.inv[data-request-id="${h['X-Hearth-Request-Id']}"] + tr pre`, (e) => e.textContent);
    assert.ok(logs.includes('<script>window.__pwned = "script";</script>'), logs);
    assert.ok(logs.includes('<img src=x onerror='), logs);
    await sleep(300);
    assert.equal(await p.evaluate(() => window.__pwned), undefined, 'script from the logs ran');
    assert.equal(await p.$('#injected'), null, 'markup from the logs was parsed');
    assert.equal(await p.$$eval('img', (x) => x.length), 0);
    assert.equal(await p.$$eval('script', (x) => x.length), 2);
    assert.deepEqual(dialogs, []);
    await shot(p, 'logs-as-text');
    onlyHearthd(p, hd);
  },

  /* A wrong key, and a key revoked while signed in, both end on a clear 401 message. */
  async wrong_key(hd) {
    const p = await page(hd);
    await signIn(p, 'hk_not-a-real-key');
    const msg = await text(p, '#login-error');
    assert.match(msg, /Wrong key/);
    assert.match(msg, /401/);
    assert.equal(await p.$eval('#nav', (e) => e.hidden), true);
    assert.equal(await p.evaluate(() => sessionStorage.getItem('hearth.key')), null);
    await shot(p, 'wrong-key');
    // A key revoked during the session: the next page says so and asks again.
    const a = await hd.tenant('alpha');
    await signIn(p, a);
    assert.equal(await text(p, '#who'), 'tenant alpha');
    const keys = await hd.api('GET', '/v1/tenants/alpha/keys', hd.admin);
    for (const k of keys.json.keys)
      assert.equal((await hd.api('DELETE', `/v1/tenants/alpha/keys/${k.key_id}`, hd.admin)).status, 200);
    await p.evaluate(() => { location.hash = '#usage'; });
    await p.waitForFunction(() => !document.getElementById('login').hidden, { timeout: 15000 });
    assert.match(await text(p, '#login-error'), /refused the key \(401/);
    onlyHearthd(p, hd);
  },

  /* The admin sets a tenant's rate limit in the console; the tenant's next burst gets 429. */
  async admin_limit_then_429(hd) {
    const a = await hd.tenant('alpha');
    await hd.tenant('beta');
    hd.deploy(a, 'hello', path.join(EXAMPLES, 'hello'));
    hd.invoke(a, 'hello');
    hd.invoke(a, 'hello');
    const p = await page(hd);
    await signIn(p, hd.admin);
    assert.equal(await text(p, '#who'), 'admin');
    await p.select('#tenant-select', 'alpha');
    await goto(p, 'host');
    const host = await text(p, '#page');
    assert.match(host, /process/);
    assert.match(host, /alpha.*hello/s);
    await shot(p, 'host');
    await goto(p, 'limits');
    assert.match(await text(p, '#page h1'), /Limits of alpha/);
    // Bad input first: hearthd refuses it and the page says why.
    const set = async (field, value) => {
      await p.$eval(`input[name=${field}]`, (e) => { e.value = ''; });
      await p.type(`input[name=${field}]`, value);
    };
    await set('rate_per_s', '99999999999');
    await p.click('#limits-form button');
    await p.waitForFunction(() => document.getElementById('limits-msg').textContent !== '');
    assert.match(await text(p, '#limits-msg'), /400 InvalidLimits/);
    await set('rate_per_s', '1');
    await set('burst', '1');
    await p.click('#limits-form button');
    await p.waitForFunction(() => /Saved/.test(document.getElementById('limits-msg').textContent));
    await shot(p, 'limits');
    const l = await hd.api('GET', '/v1/tenants/alpha/limits', hd.admin);
    assert.equal(l.json.rate_per_s, 1);
    assert.equal(l.json.burst, 1);
    // The tenant now hits it: two invocations at once, one is refused with 429.
    const inv = () => hd.api('POST', '/v1/functions/hello/invoke', a, { body: {} });
    const rs = await Promise.all([inv(), inv(), inv()]);
    const refused = rs.filter((r) => r.status === 429);
    assert.ok(refused.length >= 2, `statuses ${rs.map((r) => r.status)}`);
    assert.equal(refused[0].json.error.code, 'RateLimitExceeded');
    assert.ok(refused[0].headers.get('retry-after'));
    const metrics = await (await fetch(`${hd.base}/metrics`)).text();
    assert.match(metrics, new RegExp(`^hearth_throttles_by_reason_total\\{reason="RateLimitExceeded"\\} ${refused.length}$`, 'm'));
    // And the tenant's own console shows the limit, read-only.
    const t = await page(hd);
    await signIn(t, a);
    await goto(t, 'limits');
    assert.equal(await t.$('#limits-form'), null);
    assert.match(await text(t, '#page'), /invocations per second1/);
    onlyHearthd(p, hd);
    onlyHearthd(t, hd);
  },
};

const name = process.argv[2];
if (!cases[name]) {
  console.error(`usage: ui_test.mjs CASE (${Object.keys(cases).join(', ')})`);
  process.exit(2);
}
const hd = new Hearthd();
let failed = false;
try {
  if (name !== 'static_and_api') await openBrowser(); // first: a skip leaves nothing running
  await hd.start();
  await cases[name](hd);
  console.log(`PASS: ${name}`);
} catch (e) {
  failed = true;
  console.error(`FAIL: ${name}: ${e.stack || e}`);
  console.error(`--- hearthd log (end) ---\n${hd.log().split('\n').slice(-30).join('\n')}`);
} finally {
  if (browser) await browser.close().catch(() => {});
  try { await hd.stop(); } catch (e) { failed = true; console.error(`FAIL: ${e.message}`); }
}
process.exit(failed ? 1 : 0);
