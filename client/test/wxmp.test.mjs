// wxmp.js against the real local server (its embedded store and WeChat sandbox), through a `wx`
// shim whose request performs real HTTP. Run: node --test client/test/ (scripts/test.sh does,
// after building target/debug/local-server; WXMP_LOCAL_SERVER names another binary).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import net from 'node:net';

import { createClient, WxmpError } from '../wxmp.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
const binary = process.env.WXMP_LOCAL_SERVER || join(root, 'target', 'debug', 'local-server');

let server;
let base;

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

before(async () => {
  assert.ok(existsSync(binary), `${binary} is missing: cargo build -p local-server`);
  const port = await freePort();
  base = `http://127.0.0.1:${port}`;
  const env = { ...process.env, PORT: String(port), REFRESH_INTERVAL_SECS: '3600', RUST_LOG: 'warn' };
  for (const k of ['WECHAT_APPID', 'WECHAT_SECRET', 'WECHAT_API_BASE', 'TABLE_NAME', 'CODE_BUCKET', 'WECHAT_SECRET_ARN', 'WECHAT_PUSH_TOKEN', 'WECHAT_PUSH_AES_KEY', 'EVENT_BUS_NAME']) {
    delete env[k];
  }
  server = spawn(binary, [], { env, stdio: ['ignore', 'ignore', 'inherit'] });
  for (let i = 0; i < 200; i++) {
    try {
      await fetch(`${base}/session`);
      return;
    } catch (_) {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error('local-server did not start');
});

after(() => server && server.kill());

let users = 0;

/**
 * A `wx` for Node: request is real HTTP (fetch), storage a Map, files go to a temporary folder.
 * `stats` counts requests by "METHOD /path" and the most ever in flight.
 */
function shim({ codes, delayMs = 0, afterLogin } = {}) {
  const user = `u${process.pid}x${users++}`;
  let n = 0;
  const nextCode = codes || (() => `${user}.${n++}`);
  const storage = new Map();
  const stats = { calls: {}, inFlight: 0, maxInFlight: 0 };
  const dir = mkdtempSync(join(tmpdir(), 'wxmp-'));
  const count = (key) => (stats.calls[key] = (stats.calls[key] || 0) + 1);
  const wx = {
    env: { USER_DATA_PATH: dir },
    login({ success }) {
      setTimeout(() => success({ code: nextCode(), errMsg: 'login:ok' }), 1);
    },
    request({ url, method = 'GET', data, header = {}, responseType, success, fail }) {
      stats.inFlight++;
      stats.maxInFlight = Math.max(stats.maxInFlight, stats.inFlight);
      count(`${method} ${new URL(url).pathname}`);
      stats.headers = stats.headers || [];
      stats.headers.push({ url, header });
      (async () => {
        try {
          if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
          const res = await fetch(url, {
            method,
            headers: header,
            body: data === undefined || method === 'GET' ? undefined : JSON.stringify(data),
          });
          const headers = Object.fromEntries(res.headers.entries());
          const bytes = await res.arrayBuffer();
          let body = bytes;
          if (responseType !== 'arraybuffer') {
            const text = new TextDecoder().decode(bytes);
            try {
              body = JSON.parse(text);
            } catch (_) {
              body = text;
            }
          }
          const reply = { statusCode: res.status, data: body, header: headers };
          if (afterLogin && method === 'POST' && url.endsWith('/login') && res.status === 200) {
            await afterLogin(body);
          }
          stats.inFlight--;
          success(reply);
        } catch (e) {
          stats.inFlight--;
          fail({ errMsg: `request:fail ${e.message}` });
        }
      })();
    },
    getStorageSync: (k) => storage.get(k) ?? '',
    setStorageSync: (k, v) => storage.set(k, v),
    removeStorageSync: (k) => storage.delete(k),
    getFileSystemManager: () => ({
      writeFile({ filePath, data, success, fail }) {
        writeFile(filePath, Buffer.from(data)).then(success, (e) => fail({ errMsg: e.message }));
      },
    }),
  };
  return { wx, stats, storage, dir };
}

test('login keeps the token; requests carry it', async () => {
  const { wx, stats, storage } = shim();
  const client = createClient({ baseUrl: base, wx });
  const s = await client.login();
  assert.equal(typeof s.token, 'string');
  assert.deepEqual(storage.get('wxmp.session'), s);
  const who = await client.session();
  assert.equal(who.openid, s.openid);
  assert.equal(stats.calls['POST /login'], 1);
});

test('the first request logs in by itself', async () => {
  const { wx, stats } = shim();
  const client = createClient({ baseUrl: base, wx });
  const who = await client.request({ url: '/session' });
  assert.equal(typeof who.openid, 'string');
  assert.equal(stats.calls['POST /login'], 1);
});

test('20 requests meeting an expired session share one login, and each is sent again once', async () => {
  const { wx, stats, storage } = shim({ delayMs: 5 });
  // A token the backend no longer knows (expired there, or logged out elsewhere).
  storage.set('wxmp.session', { token: 'gone-gone-gone-gone-gone-gone-gone-gone-gon', expires_at: 4102444800, openid: 'x' });
  const client = createClient({ baseUrl: base, wx });
  const answers = await Promise.all(Array.from({ length: 20 }, () => client.session()));
  assert.equal(new Set(answers.map((a) => a.openid)).size, 1);
  assert.equal(stats.calls['POST /login'], 1, 'exactly one login');
  assert.equal(stats.calls['GET /session'], 40, 'each request sent twice: refused, then accepted');
});

test('a request refused again after the new login is not retried in a loop', async () => {
  // Every new session is revoked as soon as it is made (as if logged out elsewhere at once).
  const { wx, stats, storage } = shim({
    afterLogin: async (body) => {
      await fetch(`${base}/session`, { method: 'DELETE', headers: { authorization: `Bearer ${body.token}` } });
    },
  });
  storage.set('wxmp.session', { token: 'gone-gone-gone-gone-gone-gone-gone-gone-gon', expires_at: 4102444800, openid: 'x' });
  const client = createClient({ baseUrl: base, wx });
  await assert.rejects(client.session(), (e) => e instanceof WxmpError && e.status === 401 && e.code === 'unauthenticated');
  assert.equal(stats.calls['POST /login'], 1);
  assert.equal(stats.calls['GET /session'], 2);
});

test('after 3 failed logins in a row the client stops logging in', async () => {
  // wx.login keeps returning a code WeChat has already taken.
  const used = `used${process.pid}.1`;
  await fetch(`${base}/login`, { method: 'POST', body: JSON.stringify({ code: used }) });
  const { wx, stats } = shim({ codes: () => used });
  const client = createClient({ baseUrl: base, wx });
  for (let i = 0; i < 3; i++) {
    await assert.rejects(client.session(), (e) => e.status === 401 && e.code === 'invalid_code' && e.wechat_errcode === 40163);
  }
  await assert.rejects(client.session(), (e) => e.code === 'invalid_code');
  await assert.rejects(client.request({ url: '/session' }), (e) => e.code === 'invalid_code');
  assert.equal(stats.calls['POST /login'], 3, 'no fourth login');
  // An explicit login (the user taps "log in") tries again.
  await assert.rejects(client.login());
  assert.equal(stats.calls['POST /login'], 4);
});

test('never more than 10 wx.request calls in flight', async () => {
  const { wx, stats } = shim({ delayMs: 30 });
  const client = createClient({ baseUrl: base, wx });
  await client.login();
  await Promise.all(Array.from({ length: 25 }, () => client.session()));
  assert.equal(stats.maxInFlight, 10);
  assert.equal(stats.calls['GET /session'], 25);
});

test('a code is written as an image file for <image src>', async () => {
  const { wx, dir } = shim();
  const client = createClient({ baseUrl: base, wx });
  const path = await client.qrcode({ scene: 'id=42', width: 280 });
  assert.ok(path.startsWith(dir), path);
  const bytes = readFileSync(path);
  assert.deepEqual([...bytes.subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
});

test('errors carry the contract fields and the status', async () => {
  const { wx } = shim();
  const client = createClient({ baseUrl: base, wx });
  const e = await client.qrcode({ scene: '' }).then(
    () => assert.fail('an empty scene is refused'),
    (e) => e,
  );
  assert.ok(e instanceof WxmpError);
  assert.equal(e.status, 400);
  assert.equal(e.code, 'invalid_request');
  assert.match(e.message, /scene/);
  assert.match(e.request_id, /\S+/);
  assert.equal(e.retryable, false);
  const p = await client.phone(`phone${process.pid}`);
  assert.match(p.phone_number, /\d+/);
  const again = await client.phone(`phone${process.pid}`).catch((e) => e);
  assert.equal(again.status, 400);
  assert.equal(typeof again.wechat_errcode, 'number');
});

test('logout forgets the session, on the server and even when the network fails', async () => {
  const { wx, storage } = shim();
  const client = createClient({ baseUrl: base, wx });
  const s = await client.login();
  await client.logout();
  assert.equal(storage.has('wxmp.session'), false);
  const r = await fetch(`${base}/session`, { headers: { authorization: `Bearer ${s.token}` } });
  assert.equal(r.status, 401, 'the server forgot it too');

  const offline = shim();
  offline.storage.set('wxmp.session', { token: s.token, expires_at: 4102444800, openid: 'x' });
  const unreachable = createClient({ baseUrl: 'http://127.0.0.1:9', wx: offline.wx });
  await unreachable.logout();
  assert.equal(offline.storage.has('wxmp.session'), false);
  const e = await unreachable.session().catch((e) => e);
  assert.equal(e.status, 0);
  assert.equal(e.code, 'network');
  assert.equal(e.retryable, true);
});

test('a token expired locally is renewed before the request, without a refused call', async () => {
  const { wx, stats, storage } = shim();
  const client = createClient({ baseUrl: base, wx });
  const s = await client.login();
  storage.set('wxmp.session', { ...s, expires_at: Math.floor(Date.now() / 1000) - 1 });
  await client.session();
  assert.equal(stats.calls['POST /login'], 2);
  assert.equal(stats.calls['GET /session'], 1, 'not sent with the expired token first');
});

test('the token is sent only to the backend', async () => {
  const { wx, stats } = shim();
  const client = createClient({ baseUrl: base, wx });
  await client.login();
  await client.request({ url: 'http://127.0.0.1:9/elsewhere' }).catch(() => {});
  const elsewhere = stats.headers.find((h) => h.url.includes(':9/'));
  assert.ok(elsewhere);
  assert.equal(Object.keys(elsewhere.header).some((k) => k.toLowerCase() === 'authorization'), false);
  await client.session();
  const ours = stats.headers.filter((h) => h.url.endsWith('/session')).pop();
  assert.match(ours.header.authorization, /^Bearer /);
});

test('a logout while a login runs is not undone by it', async () => {
  const { wx, storage } = shim({ delayMs: 30 });
  const client = createClient({ baseUrl: base, wx });
  const login = client.login();
  await client.logout();
  await login;
  assert.equal(storage.has('wxmp.session'), false);
});

test('the profile round trip: me() and updateProfile()', async () => {
  const { wx } = shim();
  const client = createClient({ baseUrl: base, wx });
  const s = await client.login();
  assert.equal(s.new_user, true);
  const me = await client.updateProfile({ nickname: '小明', avatar_url: 'https://cdn.example.com/a.png' });
  assert.equal(me.nickname, '小明');
  assert.equal((await client.me()).avatar_url, 'https://cdn.example.com/a.png');
  const e = await client.updateProfile({ avatar_url: 'http://insecure' }).catch((e) => e);
  assert.equal(e.status, 400);
  assert.match(e.message, /avatar_url/);
});

test('WeChat busy: the error says try again (503, retryable)', async () => {
  const faults = (body) =>
    fetch(`${base}/sandbox/_sandbox/faults`, { method: 'PUT', body: JSON.stringify(body) });
  const { wx } = shim();
  const client = createClient({ baseUrl: base, wx });
  await faults({ busy_rate: 1.0 });
  try {
    const e = await client.login().catch((e) => e);
    assert.ok(e instanceof WxmpError);
    assert.equal(e.status, 503);
    assert.equal(e.retryable, true);
    assert.match(e.request_id, /\S+/);
  } finally {
    await faults({});
  }
  const s = await client.login();
  assert.equal(typeof s.token, 'string');
});

test('subscriptions, content checks and links', async () => {
  const { wx } = shim();
  const client = createClient({ baseUrl: base, wx });
  const template = 'TPL_ORDER_SHIPPED_0000000000000000000000000';
  assert.deepEqual(await client.templatesToAsk([template]), [template]);
  // The user accepts the popup: WeChat (the sandbox) pushes it to the server.
  const { openid } = await client.session();
  const pushed = await fetch(`${base}/sandbox/_sandbox/push`, {
    method: 'POST',
    body: JSON.stringify({
      url: `${base}/push`, mode: 'safe', format: 'json',
      message: { ToUserName: 'gh_sandbox000001', FromUserName: openid, CreateTime: Math.floor(Date.now() / 1000),
        MsgType: 'event', Event: 'subscribe_msg_popup_event',
        List: [{ TemplateId: template, SubscribeStatusString: 'accept', PopupScene: 0 }] },
    }),
  }).then((r) => r.json());
  assert.deepEqual(pushed, { status: 200, body: 'success' });
  let toAsk = [template];
  for (let i = 0; i < 100 && toAsk.length; i++) {
    toAsk = await client.templatesToAsk([template]);
    if (toAsk.length) await new Promise((r) => setTimeout(r, 20));
  }
  assert.deepEqual(toAsk, []);
  assert.deepEqual((await client.subscriptions()).grants, [{ template_id: template, one_time: 1, long_term: false }]);

  assert.equal((await client.checkContent('hello', 2)).suggest, 'pass');
  assert.equal((await client.checkContent('so risky', 2)).suggest, 'risky');
  const e = await client.checkContent('', 2).catch((e) => e);
  assert.equal(e.status, 400);
  assert.match(e.message, /content/);

  const { trace_id } = await client.checkMedia({ media_url: 'https://media.invalid/a.jpg', media_type: 2, scene: 1 });
  let result;
  for (let i = 0; i < 100; i++) {
    result = await client.mediaCheck(trace_id);
    if (result.status === 'done') break;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.deepEqual(result, { status: 'done', suggest: 'pass', label: 100 });

  const link = await client.link({ kind: 'url_link', path: 'pages/index/index', query: 'id=1' });
  assert.match(link.link, /^https:\/\//);
  assert.deepEqual(await client.link({ kind: 'url_link', path: 'pages/index/index', query: 'id=1' }), link);
});
