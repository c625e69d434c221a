/**
 * The socket client (docs/protocol.md). It owns the hard parts of a chat connection:
 *
 * - an outbox: every send has a `client_msg_id` and stays in the outbox until its `ack`; after
 *   any reconnect the unacked sends go again with the same id, which the server recognises, so
 *   a message is never stored twice. Each chat has one send on the wire at a time, its oldest
 *   unacked one: a send the server refuses for now (RETRYABLE) is retried before the chat's
 *   later sends go, so every chat stores its sends in the order of the `send` calls, while
 *   other chats go on;
 * - positions: the last seq it has of each chat; every (re)connect starts with one `resume`
 *   from them, so the `message` events of a chat come once each, in seq order, without gaps;
 * - the history's epoch: positions belong to the epoch the server named in `hello`, and each
 *   `resume` names it. After a restore or a failover that lost the newest messages, the server
 *   sets positions back (`rewound`): the client moves its position back and emits `rewound`, so
 *   the app drops what it holds past it, and the messages that take those seqs again come;
 * - reconnects with exponential backoff and jitter, reset by a successful open, that honour
 *   the close codes: none after a logout (4002) or with a token the server refuses; after
 *   expiry (4001) only with a fresh token;
 * - with an `api` (the way browsers should use it), each socket opens with a single-use ticket
 *   from `api.wsTicket()`, so no token is written into a URL, and the Api refreshes the access
 *   token by itself. Without one, the socket opens with `?token=` and `refreshToken` supplies
 *   new tokens.
 */
import { jsonCodec, uuid } from './codec.js';
import { Emitter } from './emitter.js';

/** The server's close codes (docs/protocol.md, "Limits and close codes"). */
export const CLOSE = Object.freeze({
  GOING_AWAY: 1001,
  TOKEN_EXPIRED: 4001,
  TOKEN_REVOKED: 4002,
  HEARTBEAT: 4003,
  STALLED: 4004,
  HISTORY_REWOUND: 4005,
});

/** The most chats one `resume` frame may name. */
const RESUME_MAX_CHATS = 1000;

/** Send errors that mean "not stored, try again": the send stays in the outbox. */
const RETRYABLE = new Set(['overloaded', 'persist_failed', 'rate_limited']);

/** A send the server refused for good (e.g. `not_found`, `invalid_input`). */
export class SendError extends Error {
  constructor(code, message, clientMsgId) {
    super(message);
    this.name = 'SendError';
    this.code = code;
    this.clientMsgId = clientMsgId;
  }
}

/**
 * @typedef {object} Message
 * @property {number} id
 * @property {number} chat_id
 * @property {number} seq
 * @property {number} sender_id
 * @property {string} client_msg_id
 * @property {string} body
 * @property {string} created_at
 *
 * @typedef {'idle' | 'connecting' | 'open' | 'waiting' | 'offline' | 'closed'} State
 *
 * @typedef {object} Backoff
 * @property {number} [initialMs] first delay (500)
 * @property {number} [maxMs] largest delay (30000)
 * @property {number} [factor] growth per failed attempt (2)
 *
 * @typedef {object} ClientOptions
 * @property {string} [url] the server's base URL (http(s) or ws(s)); the page's origin in a browser
 * @property {import('./api.js').Api} [api] an Api holding the session: sockets open with its
 *   tickets, and it refreshes tokens (then `token` and `refreshToken` are not needed)
 * @property {string} [token] an access token from signup or login, without `api`
 * @property {() => Promise<string | null>} [refreshToken] a fresh token after expiry (4001) or a
 *   refused handshake; null stops the client
 * @property {() => Promise<boolean>} [tokenValid] asked after a connection fails before it
 *   opened: false means the token is refused (the default asks `GET /api/auth/me`)
 * @property {typeof WebSocket} [WebSocket] the WebSocket class (`ws` in Node)
 * @property {import('./codec.js').Codec} [codec] JSON by default
 * @property {Backoff} [backoff]
 * @property {{ intervalMs?: number, timeoutMs?: number }} [heartbeat] an app-level ping every
 *   intervalMs (15000); no frame within timeoutMs (10000) after it counts as a dropped socket
 * @property {Record<string, number> | Map<number, number>} [positions] where each chat stands
 * @property {string} [epoch] the epoch those positions belong to (from an earlier `hello`)
 * @property {boolean} [followNetwork] in browsers: drop the socket when the page goes offline and
 *   reconnect at once when it is back (true)
 */

export class Client extends Emitter {
  /** @type {State} */
  state = 'idle';
  /** @type {Map<number, number>} the last seq this client has of each chat */
  positions = new Map();
  /** @type {Map<string, {chat_id: number, body: string, resolve: Function, reject: Function, timer?: any, attempt?: number}>} */
  outbox = new Map();

  #ws = null;
  #attempt = 0;
  #timer = null;
  #beat = null;
  #heard = 0;
  #nextRef = 1;
  /** @type {Map<number, {resolve: Function, reject: Function}>} */
  #waiting = new Map();
  #unfollow = null;

  /** @param {ClientOptions} options */
  constructor(options) {
    super();
    const base = options.url ?? globalThis.location?.origin;
    if (!base) throw new Error('xfchat: a url is needed outside a browser');
    this.httpUrl = base.replace(/^ws/, 'http').replace(/\/$/, '');
    this.wsUrl = `${this.httpUrl.replace(/^http/, 'ws')}/ws`;
    this.api = options.api ?? null;
    this.token = options.token ?? this.api?.token ?? null;
    this.refreshToken = options.refreshToken ?? null;
    this.tokenValid = options.tokenValid ?? (() => this.#askTokenValid());
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (!this.WebSocket) throw new Error('xfchat: no WebSocket class; pass options.WebSocket');
    this.codec = options.codec ?? jsonCodec;
    this.backoff = { initialMs: 500, maxMs: 30000, factor: 2, ...options.backoff };
    this.heartbeat = { intervalMs: 15000, timeoutMs: 10000, ...options.heartbeat };
    const positions = options.positions ?? {};
    const entries = positions instanceof Map ? positions.entries() : Object.entries(positions);
    for (const [chat, seq] of entries) this.positions.set(Number(chat), seq);
    this.followNetwork = options.followNetwork ?? true;
    /** @type {string | null} the epoch of the history the positions belong to */
    this.epoch = options.epoch ?? null;
  }

  /** Opens the socket (again, after `close`). */
  connect() {
    if (this.state !== 'idle' && this.state !== 'closed') return;
    this.#follow();
    this.#attempt = 0;
    this.#open();
  }

  /** Closes for good: no reconnect. Unacked sends stay in the outbox for a later `connect`. */
  close() {
    this.#unfollow?.();
    this.#unfollow = null;
    this.#drop(1000, 'closed by the client');
    this.#setState('closed', { reason: 'closed' });
  }

  /**
   * Sends a message; resolves with the stored message once the server acked it. Survives
   * reconnects: an unacked send goes again, with the same id, on every new socket. A chat's
   * messages are stored in the order of the calls: each waits for the chat's earlier sends.
   * @param {number} chatId
   * @param {string} body
   * @param {{ clientMsgId?: string, replyTo?: number, attachments?: string[] }} [options]
   *   `replyTo`: the seq of the message this one answers; `attachments`: ids of uploads to the
   *   chat (`api.uploadAttachment`)
   * @returns {Promise<Message>}
   */
  send(chatId, body, options = {}) {
    const id = options.clientMsgId ?? uuid();
    const promise = new Promise((resolve, reject) => {
      this.outbox.set(id, { chat_id: chatId, body, reply_to: options.replyTo, attachments: options.attachments, resolve, reject });
    });
    promise.catch(() => {}); // the caller decides whether a refusal matters
    if (this.#headOf(chatId) === id) this.#sendFrame(this.#sendOf(id));
    return promise;
  }

  /**
   * Follows a chat from `afterSeq` (by default where this client stands, or 0): the stored
   * messages after it come as `message` events, then live ones.
   */
  track(chatId, afterSeq = this.positions.get(chatId) ?? 0) {
    this.positions.set(chatId, afterSeq);
    if (this.state === 'open') this.#request({ type: 'sync', chat_id: chatId, after_seq: afterSeq }).catch(() => {});
  }

  /** Stops following a chat (its position is forgotten). */
  untrack(chatId) {
    this.positions.delete(chatId);
  }

  /** Moves this user's read marker (never backwards); errors come as `error` events. */
  read(chatId, seq) {
    this.#sendFrame({ type: 'read', chat_id: chatId, seq, ref: this.#nextRef++ });
  }

  /** Tells the chat's other members that this user is typing. */
  typing(chatId) {
    this.#sendFrame({ type: 'typing', chat_id: chatId, ref: this.#nextRef++ });
  }

  /** Round trip to the server; resolves with the time it took in ms. */
  async ping() {
    const started = Date.now();
    await this.#request({ type: 'ping', nonce: started });
    return Date.now() - started;
  }

  /** The delay before reconnect attempt `attempt` (0 first): exponential, equal jitter. */
  delayFor(attempt) {
    const { initialMs, maxMs, factor } = this.backoff;
    const base = Math.min(maxMs, initialMs * factor ** attempt);
    return base / 2 + (Math.random() * base) / 2;
  }

  #setState(state, detail = {}) {
    if (this.state === state && state !== 'waiting') return;
    this.state = state;
    this.emit('state', { state, ...detail });
  }

  async #open() {
    clearTimeout(this.#timer);
    this.#timer = null;
    this.#setState('connecting');
    let url = `${this.wsUrl}?token=${encodeURIComponent(this.token)}`;
    if (this.api) {
      let ticket;
      try {
        ticket = await this.api.wsTicket();
      } catch (err) {
        if (this.state !== 'connecting') return;
        if (err?.status === 401) {
          // The Api tried a refresh already: the session is over.
          this.#setState('closed', { reason: 'unauthorized', code: 401 });
        } else {
          this.#lost({ code: 1006, reason: String(err?.message ?? err) }, false);
        }
        return;
      }
      // Closed, or opened again, while the ticket was on its way.
      if (this.state !== 'connecting' || this.#ws) return;
      this.token = this.api.token;
      url = `${this.wsUrl}?ticket=${encodeURIComponent(ticket)}`;
    }
    let ws;
    try {
      ws = new this.WebSocket(url, this.codec.protocol);
    } catch (err) {
      this.#lost({ code: 1006, reason: String(err) }, false);
      return;
    }
    ws.binaryType = 'arraybuffer';
    let opened = false;
    this.#ws = ws;
    ws.onopen = () => {
      if (ws !== this.#ws) return;
      opened = true;
      this.#attempt = 0;
      this.#heard = Date.now();
      // The first frames state every position (at most 1,000 chats a frame), so the stream of
      // each chat continues exactly.
      const positions = [...this.positions];
      for (let i = 0; i === 0 || i < positions.length; i += RESUME_MAX_CHATS) {
        const frame = { type: 'resume', positions: Object.fromEntries(positions.slice(i, i + RESUME_MAX_CHATS)) };
        if (this.epoch) frame.epoch = this.epoch;
        this.#raw(frame);
      }
      // Then each chat's oldest unacked send; each ack lets the chat's next one go.
      for (const id of this.#heads()) this.#raw(this.#sendOf(id));
      this.#startBeat();
      this.#setState('open');
    };
    ws.onmessage = (event) => {
      if (ws !== this.#ws) return;
      this.#heard = Date.now();
      let frame;
      try {
        frame = this.codec.decode(event.data);
      } catch {
        return;
      }
      this.#onFrame(frame);
    };
    ws.onerror = () => {};
    ws.onclose = (event) => {
      if (ws !== this.#ws) return;
      this.#lost(event, opened);
    };
  }

  /** The socket ended: decides, from its close code, whether and how to reconnect. */
  async #lost(event, opened) {
    this.#ws = null;
    this.#stopBeat();
    this.#failWaiting();
    const code = event.code;
    this.emit('disconnect', { code, reason: event.reason, opened });
    if (this.state === 'closed' || this.state === 'offline') return;
    if (code === CLOSE.TOKEN_REVOKED) {
      this.#setState('closed', { reason: 'revoked', code });
      return;
    }
    // With an Api, the next ticket refreshes the token when it has to.
    let refresh = code === CLOSE.TOKEN_EXPIRED && !this.api;
    if (!opened && !refresh && !this.api) {
      // The browser hides the handshake's status; ask whether the token is the reason.
      refresh = (await this.tokenValid().catch(() => true)) === false;
      if (this.#overtaken()) return;
    }
    if (refresh) {
      const token = this.refreshToken ? await this.refreshToken().catch(() => null) : null;
      if (this.#overtaken()) return;
      if (!token) {
        this.#setState('closed', { reason: code === CLOSE.TOKEN_EXPIRED ? 'expired' : 'unauthorized', code });
        return;
      }
      this.token = token;
    }
    this.#schedule();
  }

  /** Closed, offline or opened again while `#lost` waited: it must not schedule a reconnect. */
  #overtaken() {
    return this.state === 'closed' || this.state === 'offline' || this.#ws !== null;
  }

  #schedule() {
    const delay = this.delayFor(this.#attempt);
    this.#attempt += 1;
    this.#setState('waiting', { attempt: this.#attempt, delay });
    this.emit('reconnecting', { attempt: this.#attempt, delay });
    this.#timer = setTimeout(() => this.#open(), delay);
  }

  async #askTokenValid() {
    const res = await fetch(`${this.httpUrl}/api/auth/me`, {
      headers: { authorization: `Bearer ${this.token}` },
    });
    return res.status !== 401;
  }

  #onFrame(frame) {
    switch (frame.type) {
      case 'ack': {
        const entry = this.outbox.get(frame.client_msg_id);
        this.outbox.delete(frame.client_msg_id);
        clearTimeout(entry?.timer);
        if (entry) this.#sendHead(entry.chat_id);
        if (this.#advance(frame.message)) this.emit('message', frame.message);
        this.emit('ack', frame);
        entry?.resolve(frame.message);
        break;
      }
      case 'message':
        if (this.#advance(frame.message)) this.emit('message', frame.message);
        break;
      case 'hello':
        if (this.epoch && frame.epoch !== this.epoch) this.emit('epoch', { epoch: frame.epoch, previous: this.epoch });
        this.epoch = frame.epoch;
        break;
      case 'rewound':
        // The history holds nothing past `seq` that this client's position can be trusted for.
        if (this.positions.has(frame.chat_id)) this.positions.set(frame.chat_id, frame.seq);
        this.epoch = frame.epoch;
        this.emit('rewound', frame);
        break;
      case 'synced': {
        const at = this.positions.get(frame.chat_id) ?? 0;
        if (this.positions.has(frame.chat_id)) this.positions.set(frame.chat_id, Math.max(at, frame.last_seq));
        this.#answer(frame.ref, frame);
        this.emit('synced', frame);
        break;
      }
      case 'pong':
        this.#answer(frame.ref, frame);
        break;
      case 'chat':
        // A chat this client has no position for: follow it from its start.
        if (!this.positions.has(frame.chat.id)) this.track(frame.chat.id, 0);
        this.emit('chat', frame.chat);
        break;
      case 'chat_removed':
        this.positions.delete(frame.chat_id);
        this.emit('chat_removed', frame);
        break;
      case 'error':
        this.#onError(frame);
        break;
      default:
        this.emit(frame.type, frame);
    }
  }

  /** True when `message` is the chat's next: the stream is ordered, so anything else is old. */
  #advance(message) {
    const at = this.positions.get(message.chat_id);
    if (at !== undefined && message.seq <= at) return false;
    this.positions.set(message.chat_id, message.seq);
    return true;
  }

  #onError(frame) {
    const entry = typeof frame.ref === 'string' ? this.outbox.get(frame.ref) : undefined;
    if (entry && RETRYABLE.has(frame.code)) {
      // Not stored: the same send again after a pause (written by its timer, also after a
      // reconnect). It stays its chat's oldest send, so the chat's later sends wait for it.
      clearTimeout(entry.timer);
      entry.attempt = (entry.attempt ?? 0) + 1;
      entry.timer = setTimeout(() => {
        entry.timer = null;
        this.#sendFrame(this.#sendOf(frame.ref));
      }, this.#retryDelay(entry.attempt, frame.retry_after_ms));
      this.emit('retrying', frame);
      return;
    }
    if (entry) {
      this.outbox.delete(frame.ref);
      this.#sendHead(entry.chat_id);
      entry.reject(new SendError(frame.code, frame.message, frame.ref));
    }
    const waiting = this.#waiting.get(frame.ref);
    if (waiting) {
      this.#waiting.delete(frame.ref);
      waiting.reject(new SendError(frame.code, frame.message, null));
    }
    this.emit('error', frame);
  }

  /**
   * The pause before a refused send goes again: at least the server's `retry_after_ms` when it
   * names one (plus up to a tenth, so that sends refused together do not all come back
   * together), else the reconnect backoff for the send's `attempt`.
   */
  #retryDelay(attempt, retryAfterMs) {
    if (Number.isFinite(retryAfterMs) && retryAfterMs >= 0) return retryAfterMs * (1 + Math.random() / 10);
    return this.delayFor(attempt);
  }

  /**
   * The chat's oldest unacked send: the only one of the chat that may be on the wire. A later
   * one written beside it could be stored while it is refused, ahead of it.
   */
  #headOf(chatId) {
    for (const [id, entry] of this.outbox) if (entry.chat_id === chatId) return id;
    return undefined;
  }

  /** Each chat's oldest unacked send, except those pausing before a retry (their timer sends). */
  #heads() {
    const chats = new Set();
    const heads = [];
    for (const [id, entry] of this.outbox) {
      if (chats.has(entry.chat_id)) continue;
      chats.add(entry.chat_id);
      if (!entry.timer) heads.push(id);
    }
    return heads;
  }

  /** Writes the chat's oldest unacked send, once the one before it is answered. */
  #sendHead(chatId) {
    this.#sendFrame(this.#sendOf(this.#headOf(chatId)));
  }

  #sendOf(id) {
    const entry = this.outbox.get(id);
    if (!entry) return undefined;
    const frame = { type: 'send', chat_id: entry.chat_id, client_msg_id: id, body: entry.body };
    if (entry.reply_to !== undefined) frame.reply_to = entry.reply_to;
    if (entry.attachments?.length) frame.attachments = entry.attachments;
    return frame;
  }

  /** Writes a frame when the socket is open; otherwise the next open takes care of it. */
  #sendFrame(frame) {
    if (frame && this.state === 'open') this.#raw(frame);
  }

  #raw(frame) {
    try {
      this.#ws?.send(this.codec.encode(frame));
    } catch {
      // The socket is closing; its close event reconnects and resends.
    }
  }

  /** Sends a frame with a fresh `ref`; resolves with its answer, rejects on its error. */
  #request(frame) {
    if (this.state !== 'open') return Promise.reject(new Error('not connected'));
    const ref = this.#nextRef++;
    return new Promise((resolve, reject) => {
      this.#waiting.set(ref, { resolve, reject });
      this.#raw({ ...frame, ref });
    });
  }

  #answer(ref, frame) {
    const waiting = this.#waiting.get(ref);
    this.#waiting.delete(ref);
    waiting?.resolve(frame);
  }

  #failWaiting() {
    for (const waiting of this.#waiting.values()) waiting.reject(new Error('disconnected'));
    this.#waiting.clear();
  }

  /** An app-level ping: a socket that hears nothing after it is taken for dead. */
  #startBeat() {
    const { intervalMs, timeoutMs } = this.heartbeat;
    this.#beat = setInterval(() => {
      if (Date.now() - this.#heard > intervalMs + timeoutMs) {
        this.#drop(3000, 'heartbeat timeout');
        this.#lost({ code: 3000, reason: 'heartbeat timeout' }, true);
        return;
      }
      if (Date.now() - this.#heard >= intervalMs) this.#raw({ type: 'ping', nonce: Date.now() });
    }, Math.min(intervalMs, timeoutMs) / 2);
  }

  #stopBeat() {
    clearInterval(this.#beat);
    this.#beat = null;
  }

  /** Leaves the current socket without waiting for its close. */
  #drop(code, reason) {
    clearTimeout(this.#timer);
    this.#timer = null;
    this.#stopBeat();
    const ws = this.#ws;
    this.#ws = null;
    this.#failWaiting();
    try {
      ws?.close(code, reason);
    } catch {
      // already closed
    }
  }

  /** In a browser: offline drops the socket at once; online reconnects without waiting. */
  #follow() {
    const win = globalThis.window;
    if (!this.followNetwork || !win?.addEventListener || this.#unfollow) return;
    const offline = () => {
      this.#drop(1000, 'offline');
      this.#setState('offline');
    };
    const online = () => {
      if (this.state === 'closed') return;
      this.#attempt = 0;
      this.#open();
    };
    win.addEventListener('offline', offline);
    win.addEventListener('online', online);
    this.#unfollow = () => {
      win.removeEventListener('offline', offline);
      win.removeEventListener('online', online);
    };
  }
}
