// The mini-program side of this backend: login, the session token, requests that survive an
// expired session, codes as image files. One dependency-free ES module; copy it into the
// mini-program, or install it through the mini-program's npm build (package.json).
//
// What it takes care of (the failures every team meets otherwise):
// - one login at a time: requests that meet a 401 while a login runs wait for that login
//   (single flight), then each is sent again once;
// - no re-login loop: after `maxLoginFailures` failed logins in a row (3) it stops and rejects
//   with the last error, until the app calls `login()` itself;
// - at most `maxInFlight` (10) `wx.request` calls at once: WeChat silently drops the ones over 10;
// - `wx.checkSession` says nothing about this backend's token: the token's own `expires_at` is
//   what counts, and a 401 from the backend is the final word.

/** The one error type: the contract's error fields plus the HTTP status (0: no answer). */
export class WxmpError extends Error {
  constructor({ status = 0, code = 'unknown', message = '', request_id = null, wechat_errcode = null } = {}) {
    super(message || code);
    this.name = 'WxmpError';
    this.status = status;
    this.code = code;
    this.request_id = request_id;
    this.wechat_errcode = wechat_errcode;
  }

  /** Worth a "try again" in the UI: the backend or WeChat is busy, or there was no answer. */
  get retryable() {
    return this.status === 0 || this.status === 429 || this.status === 503;
  }
}

/** Bytes as UTF-8 text (mini-program runtimes do not all have TextDecoder). */
function utf8(bytes) {
  let escaped = '';
  for (let i = 0; i < bytes.length; i++) escaped += '%' + bytes[i].toString(16).padStart(2, '0');
  try {
    return decodeURIComponent(escaped);
  } catch (_) {
    return '';
  }
}

/** The body as JSON, whatever form `wx.request` gave it in (object, string or ArrayBuffer). */
function json(data) {
  if (data instanceof ArrayBuffer) data = utf8(new Uint8Array(data));
  if (typeof data === 'string') {
    try {
      return JSON.parse(data);
    } catch (_) {
      return null;
    }
  }
  return data;
}

function header(headers, name) {
  for (const key of Object.keys(headers || {})) {
    if (key.toLowerCase() === name) return headers[key];
  }
  return undefined;
}

/** The contract's error from an answer outside 2xx. */
function errorOf(res) {
  const body = json(res.data);
  const e = body && body.error;
  if (e && typeof e.code === 'string') {
    return new WxmpError({ status: res.statusCode, ...e });
  }
  return new WxmpError({
    status: res.statusCode,
    code: 'http_error',
    message: `HTTP ${res.statusCode}`,
    request_id: header(res.header, 'x-request-id') || null,
  });
}

/**
 * @param {{ baseUrl: string, storageKey?: string, maxInFlight?: number,
 *           maxLoginFailures?: number, wx?: object }} options
 */
export function createClient({
  baseUrl,
  storageKey = 'wxmp.session',
  maxInFlight = 10,
  maxLoginFailures = 3,
  wx: api = typeof wx !== 'undefined' ? wx : undefined, // eslint-disable-line no-undef
} = {}) {
  if (!baseUrl) throw new TypeError('createClient: baseUrl is required');
  if (!api) throw new TypeError('createClient: no wx API (pass { wx } outside a mini-program)');
  const base = baseUrl.replace(/\/+$/, '');

  // --- the request queue: never more than maxInFlight wx.request calls at once
  let active = 0;
  const waiting = [];
  const acquire = () =>
    active < maxInFlight ? (active++, Promise.resolve()) : new Promise((go) => waiting.push(go));
  const release = () => {
    const next = waiting.shift();
    if (next) next();
    else active--;
  };

  /** One wx.request, queued; resolves with { statusCode, data, header } whatever the status. */
  async function send(options) {
    await acquire();
    try {
      return await new Promise((resolve, reject) => {
        api.request({
          ...options,
          success: resolve,
          fail: (err) =>
            reject(new WxmpError({ status: 0, code: 'network', message: (err && err.errMsg) || 'request failed' })),
        });
      });
    } finally {
      release();
    }
  }

  // --- the session, kept in storage
  const stored = () => {
    try {
      const s = api.getStorageSync(storageKey);
      return s && typeof s.token === 'string' ? s : null;
    } catch (_) {
      return null;
    }
  };
  const forget = () => {
    try {
      api.removeStorageSync(storageKey);
    } catch (_) {
      /* nothing stored */
    }
  };
  // A token this close to its expiry is renewed before use rather than refused after.
  const usable = (s) => s && s.expires_at * 1000 > Date.now() + 30000;

  let running = null; // the login in flight, shared by everyone who needs it
  let failures = 0;
  let lastFailure = null;
  let epoch = 0; // moved on by logout(): a login still running then does not store its session

  const wxLogin = () =>
    new Promise((resolve, reject) =>
      api.login({
        success: (r) => resolve(r.code),
        fail: (err) => reject(new WxmpError({ code: 'wx_login', message: (err && err.errMsg) || 'wx.login failed' })),
      }),
    );

  function loginOnce() {
    if (running) return running;
    const started = epoch;
    running = (async () => {
      try {
        const code = await wxLogin();
        const res = await send({
          url: `${base}/login`,
          method: 'POST',
          data: { code },
          header: { 'content-type': 'application/json' },
        });
        if (res.statusCode !== 200) throw errorOf(res);
        const body = json(res.data);
        if (!body || typeof body.token !== 'string') {
          throw new WxmpError({ status: res.statusCode, code: 'bad_response', message: 'the login answer has no token' });
        }
        const session = {
          token: body.token,
          expires_at: body.expires_at,
          openid: body.openid,
          unionid: body.unionid == null ? null : body.unionid,
          new_user: body.new_user === true,
        };
        if (started === epoch) api.setStorageSync(storageKey, session);
        failures = 0;
        lastFailure = null;
        return session;
      } catch (e) {
        failures++;
        lastFailure = e;
        throw e;
      } finally {
        running = null;
      }
    })();
    return running;
  }

  /** A login the client starts itself: refused after too many failures in a row. */
  function autoLogin() {
    if (!running && failures >= maxLoginFailures) return Promise.reject(lastFailure);
    return loginOnce();
  }

  /** A session for a request: the stored one while usable, else a (shared) login. */
  async function session() {
    const s = stored();
    return usable(s) ? s : autoLogin();
  }

  /** After a 401 on `token`: a session newer than that token (another request's login), or a
   * login. */
  async function renewed(token) {
    if (running) return running;
    const s = stored();
    if (usable(s) && s.token !== token) return s;
    return autoLogin();
  }

  /** Sends with the session's token; on a 401 renews the session once and sends once more. */
  async function authorized(options) {
    const attempt = (s) =>
      send({ ...options, header: { ...(options.header || {}), authorization: `Bearer ${s.token}` } });
    let s = await session();
    let res = await attempt(s);
    if (res.statusCode === 401 && errorOf(res).code === 'unauthenticated') {
      s = await renewed(s.token);
      res = await attempt(s);
    }
    if (res.statusCode < 200 || res.statusCode >= 300) throw errorOf(res);
    return res;
  }

  /** A backend request with the session's token; resolves with the JSON body. A full URL
   * elsewhere than `baseUrl` is sent as it is: the token never leaves the backend. */
  async function request({ url, method = 'GET', data, header } = {}) {
    const options = {
      url: /^https?:/.test(url) ? url : `${base}${url.startsWith('/') ? '' : '/'}${url}`,
      method,
      data,
      header: { 'content-type': 'application/json', ...(header || {}) },
    };
    const ours = options.url === base || options.url.startsWith(`${base}/`);
    const res = ours ? await authorized(options) : await send(options);
    if (res.statusCode < 200 || res.statusCode >= 300) throw errorOf(res);
    return json(res.data);
  }

  /** One file name per set of parameters: a code made again overwrites its file, so files do
   * not pile up in the user's storage (10 MB a mini-program). */
  function fileOf(params, ext) {
    const text = JSON.stringify(params);
    let h = 5381;
    for (let i = 0; i < text.length; i++) h = ((h * 33) ^ text.charCodeAt(i)) >>> 0;
    return `${api.env.USER_DATA_PATH}/wxmp-code-${h.toString(16)}.${ext}`;
  }

  return {
    /** wx.login, then POST /login; keeps the token. An explicit call always tries (it resets
     * the count of failed logins). */
    login() {
      failures = 0;
      return loginOnce();
    },

    request,

    /** POST /qrcode; resolves with the path of a temporary image file for `<image src>`. */
    async qrcode(params = {}) {
      const res = await authorized({
        url: `${base}/qrcode`,
        method: 'POST',
        data: params,
        header: { 'content-type': 'application/json' },
        responseType: 'arraybuffer',
      });
      const type = header(res.header, 'content-type') || 'image/png';
      const ext = type.includes('jpeg') ? 'jpg' : 'png';
      const filePath = fileOf(params, ext);
      await new Promise((resolve, reject) =>
        api.getFileSystemManager().writeFile({
          filePath,
          data: res.data,
          encoding: 'binary',
          success: resolve,
          fail: (err) =>
            reject(new WxmpError({ code: 'file', message: (err && err.errMsg) || 'writeFile failed' })),
        }),
      );
      return filePath;
    },

    /** POST /phone with a getPhoneNumber code (the number is also bound to the user). */
    phone(code) {
      return request({ url: '/phone', method: 'POST', data: { code } });
    },

    /** GET /session: who the token belongs to, and until when. */
    session() {
      return request({ url: '/session' });
    },

    /** GET /me: the backend's record of the user (first seen, last login, phone, profile). */
    me() {
      return request({ url: '/me' });
    },

    /** PUT /me with `{ nickname?, avatar_url? }` (the avatar and nickname components). */
    updateProfile(profile) {
      return request({ url: '/me', method: 'PUT', data: profile });
    },

    /** GET /subscriptions: the subscribe-message grants the user holds (`{ grants: [...] }`). */
    subscriptions() {
      return request({ url: '/subscriptions' });
    },

    /** The template ids of `templateIds` the user holds no grant for: ask for these with
     * wx.requestSubscribeMessage before a message is due. */
    async templatesToAsk(templateIds) {
      const { grants } = await request({ url: '/subscriptions' });
      const held = new Set(grants.filter((g) => g.one_time > 0 || g.long_term).map((g) => g.template_id));
      return templateIds.filter((t) => !held.has(t));
    },

    /** POST /content/check: `{ suggest: 'pass' | 'review' | 'risky', label, trace_id }`. */
    checkContent(content, scene, extra = {}) {
      return request({ url: '/content/check', method: 'POST', data: { ...extra, content, scene } });
    },

    /** POST /media/check with `{ media_url, media_type, scene }`: `{ trace_id }`; the verdict
     * comes later from mediaCheck(trace_id). */
    checkMedia(params) {
      return request({ url: '/media/check', method: 'POST', data: params });
    },

    /** GET /media/check/{trace_id}: `{ status: 'pending' | 'done', suggest, label }`. */
    mediaCheck(traceId) {
      return request({ url: `/media/check/${encodeURIComponent(traceId)}` });
    },

    /** POST /links: `{ link, expires_at }`, a scheme, URL link or short link into the app. */
    link(params) {
      return request({ url: '/links', method: 'POST', data: params });
    },

    /** DELETE /session; the stored token is forgotten even if the network fails. */
    async logout() {
      const s = stored();
      epoch++;
      failures = 0;
      forget();
      if (!s) return;
      try {
        await send({ url: `${base}/session`, method: 'DELETE', header: { authorization: `Bearer ${s.token}` } });
      } catch (_) {
        /* logged out locally; the session expires on its own */
      }
    },
  };
}
