// Type declarations of wxmp.js.

/** The contract's error fields plus the HTTP status (0: no answer reached the backend). */
export declare class WxmpError extends Error {
  readonly name: 'WxmpError';
  /** HTTP status; 0 when there was no answer (network) or the failure was local. */
  readonly status: number;
  /** The contract's error code (`unauthenticated`, `invalid_request`, `wechat_unavailable`, ...),
   * or `network`, `wx_login`, `file`, `http_error` for failures outside the contract. */
  readonly code: string;
  readonly message: string;
  readonly request_id: string | null;
  /** WeChat's errcode when WeChat refused (40029, 45009, ...). */
  readonly wechat_errcode: number | null;
  /** True for 0, 429 and 503: worth a "try again". */
  readonly retryable: boolean;
}

export interface ClientOptions {
  /** The API's base URL (the stack's ApiUrl output, or http://127.0.0.1:3000 locally). */
  baseUrl: string;
  /** The storage key of the session (default `wxmp.session`). */
  storageKey?: string;
  /** Most wx.request calls at once (default 10, WeChat's own limit). */
  maxInFlight?: number;
  /** Failed logins in a row after which automatic re-login stops (default 3). */
  maxLoginFailures?: number;
  /** The wx API (default `globalThis.wx`; pass one outside a mini-program, e.g. in tests). */
  wx?: unknown;
}

export interface Session {
  token: string;
  /** Epoch seconds. */
  expires_at: number;
  openid: string;
  unionid: string | null;
  /** True at the user's first login ever. */
  new_user: boolean;
}

export interface Me {
  openid: string;
  unionid: string | null;
  first_seen: number | null;
  last_login: number | null;
  phone: string | null;
  nickname: string | null;
  avatar_url: string | null;
}

export interface RequestOptions {
  /** A path of the API (`/session`) or a full URL. */
  url: string;
  method?: 'GET' | 'POST' | 'PUT' | 'DELETE';
  data?: unknown;
  header?: Record<string, string>;
}

export interface Grant {
  template_id: string;
  one_time: number;
  long_term: boolean;
}

export type LinkParams =
  | {
      kind: 'scheme' | 'url_link';
      path?: string;
      query?: string;
      env_version?: 'release' | 'trial' | 'develop';
      expire?: { type: 'interval'; value: number } | { type: 'time'; value: number };
    }
  | { kind: 'short_link'; path: string; query?: string; page_title?: string; is_permanent?: boolean };

export interface CodeParams {
  scene: string;
  page?: string;
  check_path?: boolean;
  env_version?: 'release' | 'trial' | 'develop';
  width?: number;
  auto_color?: boolean;
  line_color?: { r: number; g: number; b: number };
  is_hyaline?: boolean;
  cache?: boolean;
}

export interface Client {
  login(): Promise<Session>;
  /** Resolves with the JSON body of a 2xx answer; rejects with a WxmpError otherwise. The
   * token goes only to `baseUrl`: a full URL elsewhere is sent without it. */
  request<T = unknown>(options: RequestOptions): Promise<T>;
  /** The path of a temporary image file (under wx.env.USER_DATA_PATH) for `<image src>`. */
  qrcode(params: CodeParams): Promise<string>;
  phone(code: string): Promise<{ phone_number: string; pure_phone_number: string; country_code: string }>;
  session(): Promise<{ openid: string; unionid: string | null; expires_at: number }>;
  me(): Promise<Me>;
  /** nickname: 1-64 characters; avatar_url: an https URL. */
  updateProfile(profile: { nickname?: string | null; avatar_url?: string | null }): Promise<Me>;
  subscriptions(): Promise<{ grants: Grant[] }>;
  /** The ids among `templateIds` the user holds no grant for (ask with wx.requestSubscribeMessage). */
  templatesToAsk(templateIds: string[]): Promise<string[]>;
  /** scene: 1 profile, 2 comment, 3 forum, 4 social log; content 1-2500 characters. */
  checkContent(
    content: string,
    scene: 1 | 2 | 3 | 4,
    extra?: { title?: string; nickname?: string; signature?: string },
  ): Promise<{ suggest: 'pass' | 'review' | 'risky'; label: number; trace_id: string | null }>;
  checkMedia(params: { media_url: string; media_type: 1 | 2; scene: 1 | 2 | 3 | 4 }): Promise<{ trace_id: string }>;
  mediaCheck(traceId: string): Promise<{ status: 'pending' | 'done'; suggest: 'pass' | 'review' | 'risky' | null; label: number | null }>;
  link(params: LinkParams): Promise<{ link: string; expires_at: number | null }>;
  /** Forgets the session locally (also a login still running) even if the network fails. */
  logout(): Promise<void>;
}

export declare function createClient(options: ClientOptions): Client;
