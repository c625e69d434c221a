/**
 * The HTTP API (docs/api.md): accounts, friends, chats and history. Every method resolves with
 * the answer's JSON body and rejects with an {@link ApiError} carrying the uniform error shape.
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

export class Api {
  /**
   * @param {string} baseUrl e.g. `http://127.0.0.1:8080` (empty: the page's own origin)
   * @param {{ token?: string, fetch?: typeof fetch }} [options]
   */
  constructor(baseUrl = '', options = {}) {
    this.baseUrl = baseUrl.replace(/\/$/, '');
    this.token = options.token ?? null;
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /**
   * @param {string} method
   * @param {string} path
   * @param {object} [body]
   */
  async request(method, path, body) {
    const headers = {};
    if (this.token) headers.authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['content-type'] = 'application/json';
    const res = await this.fetch(`${this.baseUrl}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    const json = text ? JSON.parse(text) : null;
    if (!res.ok) {
      const err = json?.error ?? { code: 'http_error', message: `HTTP ${res.status}` };
      const retry = res.headers.get('retry-after');
      throw new ApiError(res.status, err.code, err.message, retry === null ? null : Number(retry));
    }
    return json;
  }

  /** Signs up and keeps the token for later calls. */
  async signup(username, password, displayName) {
    const body = { username, password };
    if (displayName) body.display_name = displayName;
    const answer = await this.request('POST', '/api/auth/signup', body);
    this.token = answer.token;
    return answer;
  }

  /** Logs in and keeps the token for later calls. */
  async login(username, password) {
    const answer = await this.request('POST', '/api/auth/login', { username, password });
    this.token = answer.token;
    return answer;
  }

  me() {
    return this.request('GET', '/api/auth/me');
  }

  async logout() {
    await this.request('POST', '/api/auth/logout');
    this.token = null;
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

  /** Sends over HTTP; idempotent per `clientMsgId`. */
  sendMessage(chatId, body, clientMsgId = uuid()) {
    return this.request('PUT', `/api/chats/${chatId}/messages/${clientMsgId}`, { body });
  }

  markRead(chatId, seq) {
    return this.request('POST', `/api/chats/${chatId}/read`, { seq });
  }
}
