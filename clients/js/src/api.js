/**
 * The HTTP API (docs/api.md): accounts, friends, chats and history. Every method resolves with
 * the answer's JSON body and rejects with an {@link ApiError} carrying the uniform error shape.
 *
 * Sessions take care of themselves: access tokens live minutes, so the Api refreshes its token
 * with the session's refresh token shortly before it expires, and once more when a request is
 * refused with 401; concurrent callers share one refresh. `onTokens` hears every new pair (to
 * keep them, e.g. in localStorage) and `null` when the session ended.
 */
import { uuid } from './codec.js';

export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} code the API's error code, e.g. `not_found`
   * @param {string} message
   * @param {number | null} retryAfter seconds, from `Retry-After`
   */
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

/** Routes that take no access token, so never wait for or trigger a refresh. */
const OPEN_ROUTES = new Set(['/api/auth/signup', '/api/auth/login', '/api/auth/refresh']);

/** How long before its expiry a token is refreshed: 30 s, or a quarter of a shorter life. */
const REFRESH_AHEAD_MS = 30000;

/**
 * @typedef {{ token: string, refreshToken: string | null, expiresAt: number | null }} Tokens
 */

export class Api {
  /** @type {Promise<string> | null} the refresh under way, shared by every caller */
  #refreshing = null;
  #ahead = REFRESH_AHEAD_MS;

  /**
   * @param {string} baseUrl e.g. `http://127.0.0.1:8080` (empty: the page's own origin)
   * @param {{ token?: string, refreshToken?: string, expiresAt?: number,
   *   onTokens?: (tokens: Tokens | null) => void, fetch?: typeof fetch }} [options]
   */
  constructor(baseUrl = '', options = {}) {
    this.baseUrl = baseUrl.replace(/\/$/, '');
    this.token = options.token ?? null;
    this.refreshToken = options.refreshToken ?? null;
    /** @type {number | null} when the access token expires (ms since the epoch) */
    this.expiresAt = options.expiresAt ?? null;
    this.onTokens = options.onTokens ?? null;
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /**
   * @param {string} method
   * @param {string} path
   * @param {object} [body]
   * @param {{ raw?: any, contentType?: string, blob?: boolean }} [options] `raw`: a body sent as
   *   it is, of `contentType`; `blob`: answer the response's body as a Blob
   */
  async request(method, path, body, options = {}) {
    const open = OPEN_ROUTES.has(path);
    if (!open && this.refreshToken && this.expiresAt !== null && Date.now() > this.expiresAt - this.#ahead) {
      await this.refresh().catch(() => {});
    }
    try {
      return await this.#request(method, path, body, !open, options);
    } catch (err) {
      if (open || !(err instanceof ApiError) || err.status !== 401 || !this.refreshToken) throw err;
      // Expired or revoked early: one refresh, one more try.
      await this.refresh();
      return this.#request(method, path, body, true, options);
    }
  }

  async #request(method, path, body, authorized, options) {
    const headers = {};
    if (authorized && this.token) headers.authorization = `Bearer ${this.token}`;
    let payload;
    if (options.raw !== undefined) {
      headers['content-type'] = options.contentType ?? 'application/octet-stream';
      payload = options.raw;
    } else if (body !== undefined) {
      headers['content-type'] = 'application/json';
      payload = JSON.stringify(body);
    }
    const res = await this.fetch(`${this.baseUrl}${path}`, { method, headers, body: payload });
    if (res.ok && options.blob) return res.blob();
    const text = await res.text();
    const json = text ? JSON.parse(text) : null;
    if (!res.ok) {
      const err = json?.error ?? { code: 'http_error', message: `HTTP ${res.status}` };
      const retry = res.headers.get('retry-after');
      throw new ApiError(res.status, err.code, err.message, retry === null ? null : Number(retry));
    }
    return json;
  }

  /** Keeps the tokens of a signup, login or refresh answer. */
  #keep(answer) {
    this.token = answer.token;
    this.refreshToken = answer.refresh_token ?? this.refreshToken;
    this.expiresAt = answer.expires_in ? Date.now() + answer.expires_in * 1000 : null;
    if (answer.expires_in) this.#ahead = Math.min(REFRESH_AHEAD_MS, (answer.expires_in * 1000) / 4);
    this.onTokens?.({ token: this.token, refreshToken: this.refreshToken, expiresAt: this.expiresAt });
  }

  /** Forgets the session's tokens: it ended. */
  #forget() {
    this.token = null;
    this.refreshToken = null;
    this.expiresAt = null;
    this.onTokens?.(null);
  }

  /** Signs up and keeps the session's tokens for later calls. */
  async signup(username, password, displayName) {
    const body = { username, password };
    if (displayName) body.display_name = displayName;
    const answer = await this.request('POST', '/api/auth/signup', body);
    this.#keep(answer);
    return answer;
  }

  /** Logs in and keeps the session's tokens for later calls. */
  async login(username, password) {
    const answer = await this.request('POST', '/api/auth/login', { username, password });
    this.#keep(answer);
    return answer;
  }

  /**
   * A new access token from the refresh token (which rotates); resolves with it. One refresh
   * at a time: callers during one share it. A refused refresh token ends the session here.
   * @returns {Promise<string>}
   */
  refresh() {
    this.#refreshing ??= (async () => {
      try {
        if (!this.refreshToken) throw new ApiError(401, 'unauthorized', 'no refresh token');
        const answer = await this.request('POST', '/api/auth/refresh', { refresh_token: this.refreshToken });
        this.#keep(answer);
        return this.token;
      } catch (err) {
        if (err instanceof ApiError && err.status === 401) this.#forget();
        throw err;
      } finally {
        this.#refreshing = null;
      }
    })();
    return this.#refreshing;
  }

  /** A single-use ticket that opens one socket within 30 s (`/ws?ticket=`). */
  async wsTicket() {
    return (await this.request('POST', '/api/auth/ws-ticket')).ticket;
  }

  me() {
    return this.request('GET', '/api/auth/me');
  }

  /**
   * Shows or hides when you are online to your friends (hidden, you look offline, without a
   * last-seen time). Friends hear of changes as `presence` events.
   */
  showPresence(show) {
    return this.request('PATCH', '/api/auth/me', { show_presence: show });
  }

  /**
   * Searches the messages of your chats: `{results: [{message, rank, highlight}], next_offset}`,
   * best first; `highlight` is plain pieces `{text, match}`.
   * @param {string} q words, "a phrase", -excluded, or
   * @param {{ limit?: number, offset?: number }} [page]
   */
  search(q, page = {}) {
    const p = new URLSearchParams({ q });
    if (page.limit !== undefined) p.set('limit', String(page.limit));
    if (page.offset !== undefined) p.set('offset', String(page.offset));
    return this.request('GET', `/api/search?${p}`);
  }

  /** Ends this session. */
  async logout() {
    await this.request('POST', '/api/auth/logout');
    this.#forget();
  }

  /** Ends every session of the account, this one included. */
  async logoutAll() {
    await this.request('POST', '/api/auth/logout-all');
    this.#forget();
  }

  /** Changes the password; every other session ends. */
  changePassword(currentPassword, newPassword) {
    return this.request('POST', '/api/auth/password', {
      current_password: currentPassword,
      new_password: newPassword,
    });
  }

  /** Deletes the account (docs/api.md says what stays of it). */
  async deleteAccount(password) {
    await this.request('DELETE', '/api/auth/me', { password });
    this.#forget();
  }

  friends() {
    return this.request('GET', '/api/friends');
  }

  friendRequests() {
    return this.request('GET', '/api/friends/requests');
  }

  requestFriend(username) {
    return this.request('POST', '/api/friends/requests', { username });
  }

  /** @param {number} id @param {'accept' | 'decline' | 'cancel'} action */
  answerRequest(id, action) {
    return this.request('POST', `/api/friends/requests/${id}/${action}`);
  }

  removeFriend(userId) {
    return this.request('DELETE', `/api/friends/${userId}`);
  }

  block(userId) {
    return this.request('POST', `/api/users/${userId}/block`);
  }

  unblock(userId) {
    return this.request('DELETE', `/api/users/${userId}/block`);
  }

  chats() {
    return this.request('GET', '/api/chats');
  }

  chat(id) {
    return this.request('GET', `/api/chats/${id}`);
  }

  /** The direct chat with a friend, created when needed. */
  directChat(userId) {
    return this.request('PUT', `/api/chats/direct/${userId}`);
  }

  createGroup(title, memberIds) {
    return this.request('POST', '/api/chats', { title, member_ids: memberIds });
  }

  addMembers(chatId, userIds) {
    return this.request('POST', `/api/chats/${chatId}/members`, { user_ids: userIds });
  }

  leave(chatId) {
    return this.request('POST', `/api/chats/${chatId}/leave`);
  }

  removeMember(chatId, userId) {
    return this.request('DELETE', `/api/chats/${chatId}/members/${userId}`);
  }

  /**
   * A page of history, ascending: `{afterSeq}` pages forwards, `{beforeSeq}` backwards.
   * @param {number} chatId
   * @param {{ afterSeq?: number, beforeSeq?: number, limit?: number }} [page]
   * @returns {Promise<{messages: object[]}>}
   */
  history(chatId, page = {}) {
    const q = new URLSearchParams();
    if (page.afterSeq !== undefined) q.set('after_seq', String(page.afterSeq));
    if (page.beforeSeq !== undefined) q.set('before_seq', String(page.beforeSeq));
    if (page.limit !== undefined) q.set('limit', String(page.limit));
    const query = q.size ? `?${q}` : '';
    return this.request('GET', `/api/chats/${chatId}/messages${query}`);
  }

  /**
   * Sends over HTTP; idempotent per `clientMsgId`. `replyTo` is the seq of the message it answers.
   * @param {number} chatId
   * @param {string} body
   * @param {string} [clientMsgId]
   * @param {{ replyTo?: number }} [options]
   */
  sendMessage(chatId, body, clientMsgId = uuid(), options = {}) {
    const payload = { body };
    if (options.replyTo !== undefined) payload.reply_to = options.replyTo;
    if (options.attachments?.length) payload.attachments = options.attachments;
    return this.request('PUT', `/api/chats/${chatId}/messages/${clientMsgId}`, payload);
  }

  /**
   * Uploads a file (a Blob or File, or bytes) to a chat; resolves with `{attachment}` whose `id`
   * a send then names in `attachments`.
   * @param {number} chatId
   * @param {Blob | ArrayBuffer | Uint8Array} data
   * @param {{ contentType?: string, filename?: string }} [options]
   */
  uploadAttachment(chatId, data, options = {}) {
    const contentType = options.contentType || data.type || 'application/octet-stream';
    const name = options.filename ?? data.name;
    const query = name ? `?filename=${encodeURIComponent(name)}` : '';
    return this.request('POST', `/api/chats/${chatId}/attachments${query}`, undefined, { raw: data, contentType });
  }

  /** An attachment's bytes as a Blob (its `type` is the file's media type). */
  attachment(id) {
    return this.request('GET', `/api/attachments/${id}`, undefined, { blob: true });
  }

  /**
   * Edits one of your messages; resolves with `{entry}` (null when the text was the same).
   * Edits, deletes and reactions reach every member as `message` events: see `applyEntry`.
   */
  editMessage(chatId, seq, body) {
    return this.request('PATCH', `/api/chats/${chatId}/messages/${seq}`, { body });
  }

  /** Deletes a message for everyone: yours, or any in a group you created. */
  deleteMessage(chatId, seq) {
    return this.request('DELETE', `/api/chats/${chatId}/messages/${seq}`);
  }

  /** Reacts to a message with one emoji. */
  react(chatId, seq, emoji) {
    return this.request('PUT', `/api/chats/${chatId}/messages/${seq}/reactions/${encodeURIComponent(emoji)}`);
  }

  /** Takes a reaction back. */
  unreact(chatId, seq, emoji) {
    return this.request('DELETE', `/api/chats/${chatId}/messages/${seq}/reactions/${encodeURIComponent(emoji)}`);
  }

  markRead(chatId, seq) {
    return this.request('POST', `/api/chats/${chatId}/read`, { seq });
  }
}
